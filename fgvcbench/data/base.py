"""The dataset contract: a spec that loads lists of images per split."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


@dataclass
class ImageList:
    """Images of one split. ``labels`` index ``class_names``. Boxes are ``(x, y, w, h)``
    in pixels of the stored image; ``coarse_labels`` index ``coarse_names``.
    ``trim_bottom`` pixels are always cut from the bottom of every image before anything
    else (FGVC-Aircraft's 20-px copyright banner, as its official protocol does).
    ``meta`` holds further per-image columns (one value per image, e.g. a coarse view's
    true ``fine_label`` or a noisy view's ``clean`` flag); ``info`` list-level facts
    (e.g. ``fine_names``). Both must stay JSON-like."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]
    boxes: list[tuple[float, float, float, float]] | None = None
    coarse_labels: list[int] | None = None
    coarse_names: list[str] | None = None
    trim_bottom: int = 0
    meta: dict[str, list] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if len(self.labels) != n:
            raise ValueError(f"{n} paths but {len(self.labels)} labels")
        for name, seq in (("boxes", self.boxes), ("coarse_labels", self.coarse_labels), *self.meta.items()):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{n} paths but {len(seq)} {name}")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> "ImageList":
        pick = lambda seq: None if seq is None else [seq[i] for i in indices]  # noqa: E731
        return ImageList([self.paths[i] for i in indices], [self.labels[i] for i in indices],
                         self.class_names, pick(self.boxes), pick(self.coarse_labels),
                         self.coarse_names, self.trim_bottom,
                         {k: pick(v) for k, v in self.meta.items()}, dict(self.info))


@dataclass
class DatasetSplits:
    """What a dataset loader returns. ``val`` only where the dataset has an official
    validation split; otherwise the core carves one from ``train`` deterministically.
    ``crop_to_boxes``: the dataset's ``crop: bbox`` option — decode each image cropped to
    its bounding box. ``extra``: further named lists no training or evaluation reads, which a
    method decodes on request (``RunContext.load_extra``) — e.g. a weak-shot view's base-class
    test images."""

    train: ImageList
    test: ImageList
    val: ImageList | None = None
    crop_to_boxes: bool = False
    extra: dict[str, ImageList] = field(default_factory=dict)

    def identity(self, roots: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What a run record keeps of the data it trained on (its ``data``): a ``fingerprint``
        of every list — each image's path, its label, box, coarse label and further columns,
        the size and first 4 KiB of its file; the class names — and the counts: ``classes``
        and ``images`` per split.

        A path is named below the first of ``roots`` (name → folder: the data root, the
        cache) that holds it, else below the folder the other paths share, so the same data
        at another place, or another cache, has the same fingerprint. Files under
        ``roots["cache"]`` were generated there (synthetic images, a view's out-of-distribution
        ones): their options define them and their bytes depend on the local encoder, so only
        their names count. An image added, removed, relabelled, moved to the other split or
        replaced by a file whose size or first 4 KiB differ changes the fingerprint; an edit
        past the first 4 KiB that keeps the size does not, and nor does another order of a
        split's images: ``unordered`` hashes the same with each split's images sorted, so a
        loader that lists them in another order (training sees them in another order: another
        result) is told apart from other data."""
        import hashlib
        import json
        import os
        lists = [("train", self.train), ("val", self.val), ("test", self.test), *sorted(self.extra.items())]
        lists = [(name, images) for name, images in lists if images is not None]
        named = [(key, os.path.abspath(folder)) for key, folder in (roots or {}).items() if folder is not None]
        generated = os.path.abspath(roots["cache"]) if roots and roots.get("cache") is not None else None

        def below(path: str, folder: str) -> bool:
            return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

        def root_of(path: str) -> tuple[str, str] | None:
            return next(((key, folder) for key, folder in named if below(path, folder)), None)
        located = {}   # each listed path -> (its absolute path, the root that holds it or None), found once
        for _, images in lists:
            for p in images.paths:
                if p not in located:
                    located[p] = (os.path.abspath(p), root_of(os.path.abspath(p)))
        others = {os.path.dirname(path) for path, root in located.values() if root is None}
        base = os.path.commonpath(sorted(others)) if others else ""
        h = hashlib.sha256(json.dumps({"crop_to_boxes": self.crop_to_boxes}).encode())
        unordered = h.copy()   # the same, each split's images in sorted order: tells "other order" apart
        for name, images in lists:
            header = json.dumps([name, images.class_names, images.coarse_names, images.trim_bottom,
                                 {k: v for k, v in sorted(images.meta.items())}], default=str).encode()
            h.update(header)
            unordered.update(header)
            entries = []
            for i, listed in enumerate(images.paths):
                path, found = located[listed]
                key, folder = found if found else ("", base)
                rel = key + ":" + os.path.relpath(path, folder).replace(os.sep, "/")
                size, head = -1, b""
                if generated is None or not below(path, generated):
                    try:
                        size = os.stat(path).st_size
                        with open(path, "rb") as fh:
                            head = fh.read(4096)
                    except OSError:   # a missing file: the run that reads it says so
                        pass
                box = images.boxes[i] if images.boxes is not None else None
                coarse = images.coarse_labels[i] if images.coarse_labels is not None else None
                entry = json.dumps([rel, images.labels[i], box, coarse, size], default=str).encode()
                digest = hashlib.sha256(head).digest()
                h.update(entry)
                h.update(digest)
                entries.append(entry + digest)
            for entry in sorted(entries):
                unordered.update(entry)
        return {"fingerprint": h.hexdigest()[:16], "unordered": unordered.hexdigest()[:16],
                "classes": len(self.train.class_names), "images": {name: len(images) for name, images in lists}}


@dataclass(frozen=True)
class DatasetRequest:
    """What a loader gets: the data root (``None`` for generated datasets), the
    options from the suite (defaults filled in) and a cache directory it may write."""

    root: Path | None
    options: Mapping[str, Any]
    cache_dir: Path
    # every registered dataset, so a view can load the dataset it is a view of
    datasets: Mapping[str, "DatasetSpec"] = field(default_factory=dict)

    def load_dataset(self, name: str, options: Mapping[str, Any] | None = None,
                     root: Path | None = None) -> DatasetSplits:
        """Load another registered dataset (what a dataset *view* builds on), its options
        checked against its declared ones and filled with their defaults."""
        from fgvcbench.errors import DataError
        datasets = self.datasets
        if not datasets:
            from fgvcbench.plugins import get_registry
            datasets = get_registry().datasets
        spec = datasets.get(name)
        if spec is None:
            from fgvcbench.plugins import unknown_dataset
            raise DataError(unknown_dataset(name, datasets))
        options = dict(options or {})
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            raise DataError(f"unknown option(s) {unknown} for dataset {name!r} — "
                            f"its options: {', '.join(spec.options) or 'none'}")
        if spec.needs_root and (root is None or not Path(root).is_dir()):
            raise DataError(f"data root for {name!r} not found: {root} — give the view a `root:`; "
                            f"expected layout: {spec.layout or 'see the docs'}")
        return spec.load_checked(DatasetRequest(root=Path(root) if root is not None else None,
                                                options={**spec.options, **options},
                                                cache_dir=self.cache_dir, datasets=datasets))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset adapter.

    ``options`` declares every option with its default (suites may set only these).
    ``layout`` documents the expected on-disk layout; it is shown when the root is
    missing or malformed. ``needs_root`` is false for generated datasets.
    ``default_root`` is the folder name looked up under the data root
    (``$FGVCBENCH_DATA`` or ``./data``) when a suite gives no ``root``.
    """

    name: str
    load: Callable[[DatasetRequest], DatasetSplits]
    description: str = ""
    layout: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_root: bool = True
    default_root: str | None = None
    # the values a string option may take, and a check of values no load can use (raises
    # DataError or ValueError): both run when a suite loads, before any run starts
    choices: Mapping[str, tuple] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], None] | None = None
    # where the splits are listed (e.g. "train_test_split.txt"), for `data verify`'s fixes:
    # None where a file's folder is its split (deleting a copy is the fix)
    split_lists: str | None = None
    # options added after records existed: a suite's run carries one (and its id hashes it)
    # only when set to another value than its default, so earlier runs keep their ids; the
    # loader reads such an option with ``request.options.get(name, default)``
    hash_if_set: tuple = ()

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            from fgvcbench.method import refuse_or_mark
            refuse_or_mark(self, problem)

    def _problem(self) -> str | None:
        """What is wrong with the declaration itself (not a suite's values), or None."""
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            return f"dataset {self.name!r} options must be a dict of option name (text) → default; got {self.options!r}"
        if not isinstance(self.choices, Mapping):
            return f"dataset {self.name!r} choices must be a dict of option name → tuple of values; got {self.choices!r}"
        for key, allowed in self.choices.items():
            if key not in self.options:
                return (f"dataset {self.name!r} choices names {key!r}, which is not among its options "
                        f"({', '.join(self.options) or 'none'}) — declare it in options with its default")
            if not isinstance(allowed, (tuple, list)) or self.options[key] not in allowed:
                return (f"dataset {self.name!r} choices[{key!r}] must be a tuple holding the default "
                        f"{self.options[key]!r}; got {allowed!r}")
        return None

    @property
    def folder_name(self) -> str:
        """The folder this adapter's data is looked up as under a data root."""
        return self.default_root or self.name

    @property
    def is_view(self) -> bool:
        """A view is built of another registered dataset: its options declare ``of`` (the
        base's name) and ``of_options`` (the base's options)."""
        return {"of", "of_options"} <= set(self.options)

    def folder_reader(self, options: Mapping[str, Any],
                      datasets: Mapping[str, "DatasetSpec"]) -> "DatasetSpec | None":
        """The adapter whose folder this dataset reads — itself when it needs a root, a
        view's base (through any views it is built of) when that one does — or None for
        generated data. Its ``default_root`` is the folder looked up under the data root."""
        if self.needs_root:
            return self
        if self.is_view and isinstance(options.get("of"), str) and options["of"] in datasets:
            of_options = options.get("of_options")
            return datasets[options["of"]].folder_reader(of_options if isinstance(of_options, Mapping) else {},
                                                         datasets)
        return None

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise DataError for option values this dataset cannot load with (``choices``,
        then ``check``); called by the suite loader and by ``load_checked``."""
        from fgvcbench.errors import DataError
        if self.is_view and not isinstance(options.get("of_options"), Mapping):
            # a view (``of``: its base dataset): the base's options come as one mapping
            raise DataError(f"{self.name} view: of_options must be a mapping of the base dataset's options")
        for name, allowed in self.choices.items():
            if name in options and options[name] not in allowed:
                from fgvcbench.plugins import suggest
                close = suggest(str(options[name]), [str(a) for a in allowed])
                raise DataError(f"dataset option {name}: {options[name]!r} is not one of "
                                f"{', '.join(map(str, allowed))}" + (f" — did you mean {close!r}?" if close else ""))
        if self.check is not None:
            try:
                self.check(options)
            except DataError:
                raise
            except ValueError as exc:
                raise DataError(f"{self.name} dataset options: {exc}") from None
            except Exception as exc:  # noqa: BLE001 — a plugin's own check failing: one line, not a traceback
                from fgvcbench.errors import first_line
                raise DataError(f"{self.name} dataset options: its check raised {first_line(exc)} — a check raises "
                                "ValueError (or DataError) for values it refuses; this is the plugin's bug") from None

    def load_checked(self, request: DatasetRequest) -> DatasetSplits:
        """``load``, with malformed metadata reported as one DataError: a KeyError,
        ValueError, IndexError or TypeError raised inside the adapter (a class id missing
        from its name list, a non-numeric box, a .mat file without an expected field) names
        the dataset, its root, the exception and the expected layout. Every caller (runs,
        ``bench``, ``data verify``, dataset views) loads through this."""
        from fgvcbench.errors import DataError
        self.check_options(request.options)
        try:
            splits = self.load(request)
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise DataError(f"{self.name}: malformed metadata under {request.root} "
                            f"({exc.__class__.__name__}: {exc}) — expected layout: "
                            f"{self.layout or 'see the docs'}") from exc
        except OSError as exc:   # a metadata file missing or unreadable
            where = f"under {request.root}" if request.root is not None else f"in the cache {request.cache_dir}"
            raise DataError(f"{self.name}: cannot read {where} ({exc.__class__.__name__}: {exc}) — "
                            f"expected layout: {self.layout or 'see the docs'}") from exc
        if not isinstance(splits, DatasetSplits):
            raise DataError(f"dataset {self.name!r}: its loader returned a {type(splits).__name__}, not a "
                            "DatasetSplits (from fgvcbench.api) — fix the plugin's load function")
        problem = _structure_problem(splits)
        if problem:
            raise DataError(f"dataset {self.name!r}: {problem}")
        for split in ("train", "test", "val"):
            images = getattr(splits, split)
            if images is None and split == "val":
                continue
            if not len(images.paths) and split != "val":
                raise DataError(f"{self.name}: the {split} split under {request.root} has no images — "
                                f"check the split files; expected layout: {self.layout or 'see the docs'}")
            n = len(images.class_names)
            # (ImageList checks one label per path)
            bad = _first_outside(images.labels, n)
            if bad is not None:
                raise DataError(f"{self.name}: the {split} split's labels must be integers in 0…{n - 1} (its {n} "
                                f"class names), found {bad!r} — fix the labels or the class names")
        return splits


def _first_outside(labels: Sequence, n: int) -> Any:
    """The first label that is not an integer in ``0 … n-1``, or None."""
    return next((y for y in labels if isinstance(y, bool) or not isinstance(y, Integral) or not 0 <= y < n), None)


def _structure_problem(splits: DatasetSplits) -> str | None:
    """What a loader got wrong in the lists it returned, as one line with the fix, or None:
    a split that is no ImageList, splits with other class-name lists (labels index one list,
    so test labels would be scored against train's classes), a name listed twice, coarse
    labels without their names or outside them, a box that is not four finite numbers."""
    import math
    lists = [(split, getattr(splits, split)) for split in ("train", "test", "val")
             if not (split == "val" and splits.val is None)]
    lists += [(f"extra[{name!r}]", images) for name, images in sorted(splits.extra.items())]
    for split, images in lists:
        if not isinstance(images, ImageList):
            return (f"its {split} is {type(images).__name__}, not an ImageList — build it with "
                    "ImageList(paths, labels, class_names) from fgvcbench.api")
    names = list(splits.train.class_names)
    for split, images in lists:
        odd = next((n for n in images.class_names if not isinstance(n, str)), None)
        if odd is not None:
            return f"the {split} split's class name {odd!r} is {type(odd).__name__}, not text — give names as strings"
        seen: set = set()
        twice = next((n for n in images.class_names if n in seen or seen.add(n)), None)   # add() is None
        if twice is not None:
            return f"the {split} split lists the class name {twice!r} twice — give each class one name"
        if split in ("test", "val") and list(images.class_names) != names:
            at = next((i for i, (a, b) in enumerate(zip(images.class_names, names)) if a != b),
                      min(len(names), len(images.class_names)))
            theirs = images.class_names[at] if at < len(images.class_names) else "nothing"
            ours = names[at] if at < len(names) else "nothing"
            return (f"the {split} split's class names differ from train's (class {at}: {theirs!r} vs {ours!r}) — "
                    "give every split the same class_names list: labels index it")
        if images.coarse_labels is not None:
            n = len(images.coarse_names or [])
            if not n:
                return f"the {split} split has coarse_labels but no coarse_names — give both, or neither"
            bad = _first_outside(images.coarse_labels, n)
            if bad is not None:
                return (f"the {split} split's coarse labels must be integers in 0…{n - 1} (its {n} coarse names), "
                        f"found {bad!r}")
        for i, box in enumerate(images.boxes or []):
            if box is None:
                continue
            try:
                fine = len(box) == 4 and all(not isinstance(v, bool) and math.isfinite(float(v)) for v in box)
            except (TypeError, ValueError):
                fine = False
            if not fine:
                return (f"the {split} split's box for {images.paths[i]} is {box!r} — give (x, y, w, h): four finite "
                        "numbers in pixels (or None for no box)")
    return None


def leaked_paths(splits: DatasetSplits) -> list[str]:
    """Test images listed in train too, by path (not by content: ``data verify`` hashes the
    files), leaving out images a view marks as injected noise (``meta["clean"]`` False)."""
    def listed(images: ImageList) -> set[str]:
        clean = images.meta.get("clean")
        return {p for i, p in enumerate(images.paths) if clean is None or clean[i] is not False}
    return sorted(listed(splits.train) & listed(splits.test))

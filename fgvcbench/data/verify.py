"""``fgvcbench data verify``: is a dataset on disk complete, readable and leak-free?

Loads the dataset through its adapter (so the check sees exactly what a run would), then
for every image: does the file exist, does it decode completely (a truncated JPEG passes
``Image.verify`` but fails ``load``), and is the same file (by SHA-256 of its bytes) in
two splits — train and test, train and val, or val and test: a leak that inflates the
score of the split that holds the copy.

A note, too, where training images (their boxes, when the dataset crops to them) are
longer than 3:1 (``MAX_ASPECT``): the fast pipeline's default cache keeps their middle 3:1.

Problems (exit 1): ``missing``, ``corrupt``, ``duplicate`` (across splits),
``empty_class``, ``one_class`` (fewer than two classes with training images), and ``duplicate_within`` when the two copies inside one split carry
*different* labels. Notes (reported, exit stays 0): ``duplicate_within`` with the same
label — a repeated image inside one split leaks nothing and the official CUB-200-2011
is reported to contain a few, so failing on it would fail the unmodified dataset (the
first-50-class subset in ../shared/data has none).

Limits: only *exact* byte copies are duplicates (a re-encoded or resized copy is not
found). A JPEG whose entropy-coded data has garbage in the middle can decode without an
error (libjpeg only warns and PIL returns the damaged pixels), so such corruption is not
caught; only a file that fails to open or to decode to the end is.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fgvcbench.data.base import DatasetRequest, DatasetSpec, DatasetSplits

DETAIL_CHARS = 80   # an exception's own text is shortened to this; paths in it are kept whole


@dataclass
class Problem:
    kind: str      # missing | corrupt | duplicate | duplicate_within | empty_class | one_class
    path: str
    detail: str
    fix: str

    def line(self) -> str:
        return f"{self.kind}: {self.path} — {self.detail}; fix: {self.fix}"


@dataclass
class VerifyReport:
    dataset: str
    root: str | None
    splits: dict[str, dict[str, int]] = field(default_factory=dict)   # split -> class -> images
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)                # informational: do not fail
    fingerprint: str | None = None   # DatasetSplits.identity's: what run records keep as data.fingerprint

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "root": self.root, "fingerprint": self.fingerprint, "splits": self.splits,
                "problems": [p.__dict__ for p in self.problems], "notes": [n.__dict__ for n in self.notes]}


def _shorten(text: str, path: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` with every piece around the path cut to ``limit`` characters — the path
    itself is never cut."""
    cut = lambda piece: piece if len(piece) <= limit else piece[:limit - 1] + "…"  # noqa: E731
    return path.join(cut(piece) for piece in text.split(path)) if path else cut(text)


def _check_file(path: str) -> tuple[str, str | None, str | None, tuple[int, int] | None]:
    """(path, sha256 or None, error or None, (width, height) or None)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return path, None, "missing", None
    except OSError as exc:
        return path, None, f"unreadable: {exc.strerror}", None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as img:
            img.load()   # decodes every byte: truncated files fail here
            size = img.size
    except Exception as exc:  # noqa: BLE001 — any decoder error is a corrupt image
        return path, digest, f"corrupt: {exc.__class__.__name__}: {_shorten(str(exc), path)}", None
    return path, digest, None, size


def _longer_than(size: tuple[int, int], images, i: int, boxed: bool, aspect: float) -> bool:
    """Whether image ``i`` (``size`` as stored), as a run trains on it — less the trimmed
    banner, cut to its box when the dataset crops to boxes (``region_size``) — is longer
    than ``aspect``:1."""
    from fgvcbench.data.pipeline import region_size
    box = images.boxes[i] if boxed and images.boxes is not None else None
    width, height = region_size(*size, box, images.trim_bottom)
    return max(width, height) > aspect * max(1, min(width, height))


def verify_splits(name: str, root: Path | None, splits: DatasetSplits, workers: int | None = None,
                  split_lists: str | None = None, cache_dir: Path | None = None) -> VerifyReport:
    from fgvcbench.data.pipeline import MAX_ASPECT
    report = VerifyReport(dataset=name, root=str(root) if root else None,
                          fingerprint=splits.identity({"data": root, "cache": cache_dir})["fingerprint"])
    named = {"train": splits.train, "test": splits.test}
    if splits.val is not None:
        named["val"] = splits.val
    digests: dict[str, dict[str, tuple[str, int, int]]] = {}   # split -> sha256 -> (first path, label, index)
    injected: dict[tuple[str, str, str], list] = {}   # a noisy view's copies: (split, path, first) -> labels
    long_images: list[str] = []   # training images past the full cache's 3:1 (tests see centre crops)
    workers = workers or min(8, os.cpu_count() or 1)
    for split, images in named.items():
        counts = Counter(images.labels)
        # a view that injects label noise (weak_shot) marks those images (clean: False):
        # their copies are by design (ImageList checks a meta column's length)
        clean = images.meta.get("clean") or [None] * len(images)
        report.splits[split] = {images.class_names[c]: counts.get(c, 0) for c in range(len(images.class_names))}
        digests[split] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            checked = pool.map(_check_file, images.paths)
            for i, ((path, digest, error, size), label) in enumerate(zip(checked, images.labels)):
                if split == "train" and size is not None and _longer_than(size, images, i, splits.crop_to_boxes,
                                                                          MAX_ASPECT):
                    long_images.append(path)
                if error == "missing":
                    report.problems.append(Problem("missing", path, f"listed in the {split} split but absent",
                                                   "restore the file from the original archive"))
                elif error:
                    report.problems.append(Problem("corrupt", path, error,
                                                   "replace it with the original file, or delete it" +
                                                   (f" and its entries in the lists that name it ({split_lists} among them)"
                                                    if split_lists else "")))
                if not digest:
                    continue
                if digest not in digests[split]:
                    digests[split][digest] = (path, label, i)
                    continue
                first, first_label, first_i = digests[split][digest]
                if clean[i] is False or clean[first_i] is False:
                    # one note per file, however often the view listed it (a small noise pool repeats)
                    injected.setdefault((split, path, first), [first_label]).append(label)
                elif first_label == label:
                    report.notes.append(Problem(
                        "duplicate_within", path, f"the same file as {split} image {first} (same class)",
                        "none needed (it leaks nothing); remove one copy to count each image once"))
                else:
                    names = images.class_names
                    report.problems.append(Problem(
                        "duplicate_within", path,
                        f"the same file as {split} image {first}, but labelled {names[label]} vs {names[first_label]}",
                        "keep the copy with the right label and remove the other"))
    for (split, path, first), labels in injected.items():
        names = named[split].class_names
        classes = " and ".join(sorted({names[label] for label in labels}))
        where = (f"listed {len(labels)} times" if path == first else f"the same file as {split} image {first}"
                 + (f" ({len(labels) - 1} copies)" if len(labels) > 2 else ""))
        report.notes.append(Problem("duplicate_within", path, f"{where}, as {classes}: injected label noise",
                                    "none needed (the view puts it there by design)"))
    if long_images:
        what = "boxes" if splits.crop_to_boxes else "images"
        report.notes.append(Problem(
            "long_images", long_images[0], f"{len(long_images)} of the {len(splits.train)} training {what} "
            f"{'is' if len(long_images) == 1 else 'are'} longer than {MAX_ASPECT:g}:1 (this one first)",
            f"none needed: the fast pipeline (crop_extent: full) draws training crops from their middle "
            f"{MAX_ASPECT:g}:1, pipeline: classic from the whole {what[:-2] if what == 'boxes' else 'image'}"))
    for c, n in report.splits["train"].items():
        if n == 0 and report.splits["test"].get(c, 0) > 0:
            report.problems.append(Problem("empty_class", c, "has test images but no training images",
                                           "add training images for it or remove its test images"))
    trained = [c for c, n in report.splits["train"].items() if n > 0]
    if len(trained) < 2:   # every prediction is that class: 100 % top-1 that measures nothing
        report.problems.append(Problem(
            "one_class", str(root or name), f"{len(trained)} class{'es' if len(trained) != 1 else ''} with training "
            f"images", "a classification benchmark needs at least 2 classes: check the layout (one folder per class)"))
    for earlier, later in (("train", "test"), ("train", "val"), ("val", "test")):
        if earlier not in digests or later not in digests:
            continue
        seen = digests[earlier]
        for digest, (path, _, _) in digests[later].items():
            if digest in seen:
                report.problems.append(Problem(
                    "duplicate", path, f"the same file as {earlier} image {seen[digest][0]}",
                    f"remove one of the two copies (a {earlier}/{later} leak)" if split_lists is None else
                    f"a {earlier}/{later} leak: restore one copy from the original archive, or drop its entry from "
                    f"the split lists ({split_lists}); deleting the file alone leaves it listed, and missing"))
    return report


def verify_dataset(spec: DatasetSpec, root: Path | None, options: dict, cache_dir: Path,
                   split_lists: str | None = None) -> VerifyReport:
    """Load through the adapter (a DataError propagates: the layout itself is wrong, or its
    metadata is malformed) and verify. ``split_lists``: where the folder's splits are listed
    (default: the spec's own; a view passes its base's)."""
    request = DatasetRequest(root=root, options={**spec.options, **options}, cache_dir=cache_dir)
    return verify_splits(spec.name, root, spec.load_checked(request), split_lists=split_lists or spec.split_lists,
                         cache_dir=cache_dir)

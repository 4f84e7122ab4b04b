"""The ``weak_shot`` dataset view: base classes with clean labels, novel classes with
noisy ("web") training data — simulated, seeded and documented, since web data cannot be
downloaded here.

- Base / novel classes: ``novel`` names one of the SimTrans code's splits (``splits.py``:
  ``xian_cub``, CUB's 50 novel classes of the zero-shot split of Xian et al.;
  ``simtrans_aircraft``, the code's 25 novel FGVC-Aircraft variants), a class-list file
  (one class name per line, e.g. ``splits/cub_weakshot/testclasses.txt``; a relative path
  is taken from the view's root), or a list of class names; without it,
  ``novel_fraction`` of the classes are drawn with ``split_seed``. Listed classes a copy
  of the dataset lacks (a subset) are skipped.
- Noise: in every novel class's training set, ``round(ρ·n)`` images (``noise_rate`` ρ) are
  replaced — ``ood_share`` of them by out-of-distribution images (``ood_source:
  synthetic``, the embedded generator at ``OOD_SIZE`` px, the size the pipeline decodes
  for a 224 crop, so no blur tells them apart; or a folder of images), the rest by images
  of *other* classes, all keeping the novel class's label. ``noise_pool: base_test``
  (default) draws those from the base classes' *test* images, which no stage trains on —
  as real web images are never in the code's base training set; ``noise_pool: train``
  draws them from the other classes' training images (base or novel: images SimNet also
  trains on, which makes them easier to tell apart). Which images are replaced, and by
  what, depends on ``noise_seed`` only.
- ``web_root``: users with real web data point the view at ``web_root/<class name>/*``;
  those images then are the novel classes' training sets (their clean flag is unknown).

Labels: novel classes first (0..K−1, in the base dataset's order), then base classes.
The test split holds the novel classes' test images only (the weak-shot protocol). The
base classes' test images that no noise took are ``extra["base_test"]`` (view labels), where
a method scores what it learnt on base classes (SimTrans: SimNet's pair F1, as the code
logs it on base test images).
Per-image meta: ``novel`` (bool), ``clean`` (bool, or None when unknown) and
``noise`` (``clean``, ``other_class``, ``ood`` or ``web``); ``info`` has ``num_novel``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList
from fgvcbench.api import SyntheticConfig, load_synthetic_split, materialize_synthetic

from .splits import NAMED_SPLITS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
NOISE_POOLS = ("base_test", "train")
OOD_SIZE = 256   # the synthetic OOD images' side: what the pipeline decodes for a 224 crop


def _novel_classes(names: list[str], o: dict, root: Path | None) -> list[str]:
    """The novel classes' names, in the dataset's order (``o`` passed ``check_weak_shot``)."""
    novel = o["novel"]
    if novel is None:
        frac = o["novel_fraction"]
        k = max(1, min(len(names) - 1, int(round(frac * len(names)))))
        pick = np.random.default_rng(o["split_seed"]).choice(len(names), size=k, replace=False)
        return [names[i] for i in sorted(pick)]
    if isinstance(novel, str) and novel in NAMED_SPLITS:
        listed = list(NAMED_SPLITS[novel])
    elif isinstance(novel, str):
        path = Path(novel).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError:
            raise DataError(f"weak_shot novel class list not found: {path} — give a file with one class name "
                            f"per line (a relative path is taken from the view's root) or a named split: "
                            f"{', '.join(NAMED_SPLITS)}") from None
    else:   # a list of class names
        listed = novel
    known = set(names)
    present = [n for n in listed if n in known]  # a split list may cover classes this copy lacks
    if not present:
        raise DataError(f"weak_shot: none of the {len(listed)} novel classes listed is in the dataset "
                        f"(e.g. {listed[:2]}; the dataset has e.g. {names[:2]})")
    if len(present) == len(names):
        raise DataError("weak_shot: every class is novel — at least one base class is needed")
    return [n for n in names if n in set(present)]


def _ood_paths(o: dict, count: int, cache_dir: Path, root: Path | None) -> list[str]:
    if count <= 0:
        return []
    source = o["ood_source"]
    if source == "synthetic":
        per_class = math.ceil(count / 16) + 1
        config = SyntheticConfig(coarse=4, fine=4, train_per_class=per_class, test_per_class=1,
                                 image_size=OOD_SIZE, seed=1000 + int(o["noise_seed"]))
        paths = load_synthetic_split(materialize_synthetic(config, cache_dir), "train")["paths"]
    else:
        folder = Path(source).expanduser()
        if not folder.is_absolute() and root is not None:
            folder = root / folder
        if not folder.is_dir():
            raise DataError(f"weak_shot ood_source: {folder} is not a folder — use synthetic or a folder of images")
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"weak_shot ood_source: no images under {folder}")
    rng = np.random.default_rng(int(o["noise_seed"]) + 17)
    return [paths[i] for i in rng.choice(len(paths), size=count, replace=len(paths) < count)]


def simulate_noise(train: ImageList, novel: list[int], rate: float, ood_share: float, seed: int,
                   ood_paths_for, pool: ImageList | None = None) -> tuple[list[str], list[int], list[str], list, set]:
    """The novel classes' noisy training lists: per novel class, ``round(rate·n)`` of its
    images are replaced (``round(ood_share·m)`` by OOD images, the rest by images of other
    classes: from ``pool`` — images of classes that are not novel — each once while it
    lasts, then drawn again at random (a pool smaller than the noise repeats images); with
    no pool, from ``train``'s other classes). Returns paths, labels (the novel
    class), noise kinds, boxes (an OOD image has none) and the pool rows it took."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(train.labels):
        by_class.setdefault(label, []).append(i)
    plan, ood_needed, other_needed = [], 0, 0
    for c in novel:
        rows = by_class.get(c, [])
        m = int(round(rate * len(rows)))
        replaced = set(rng.choice(len(rows), size=m, replace=False).tolist()) if m else set()
        n_ood = int(round(ood_share * m))
        kinds = {}
        for k, pos in enumerate(sorted(replaced)):
            kinds[pos] = "ood" if k < n_ood else "other_class"
        plan.append((c, rows, kinds))
        ood_needed += n_ood
        other_needed += m - n_ood
    ood = iter(ood_paths_for(ood_needed))
    if pool is not None and len(pool):   # drawn once for all classes: no pool image serves twice while it lasts
        taken = rng.permutation(len(pool))[:other_needed].tolist()
        taken += rng.integers(len(pool), size=other_needed - len(taken)).tolist()
        from_pool = iter(taken)
    else:
        taken, from_pool = [], None
    paths, labels, noise, boxes = [], [], [], []
    for c, rows, kinds in plan:
        others = [i for i, label in enumerate(train.labels) if label != c] if from_pool is None else []
        for pos, i in enumerate(rows):
            kind = kinds.get(pos, "clean")
            if kind == "clean":
                paths.append(train.paths[i])
                boxes.append(train.boxes[i] if train.boxes is not None else None)
            elif kind == "ood":
                paths.append(next(ood))
                boxes.append(None)
            elif from_pool is not None:
                j = next(from_pool)
                paths.append(pool.paths[j])
                boxes.append(pool.boxes[j] if pool.boxes is not None else None)
            else:
                j = others[int(rng.integers(len(others)))]
                paths.append(train.paths[j])
                boxes.append(train.boxes[j] if train.boxes is not None else None)
            labels.append(c)
            noise.append(kind)
    return paths, labels, noise, boxes, set(taken)


def _web_images(web_root: Path, novel_names: list[str]) -> tuple[list[str], list[int]]:
    if not web_root.is_dir():
        raise DataError(f"weak_shot web_root: {web_root} is {'a file' if web_root.exists() else 'not found'} — "
                        f"give the folder that holds <novel class>/*.jpg")
    paths, labels = [], []
    for k, name in enumerate(novel_names):
        folder = web_root / name
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise DataError(f"weak_shot web_root: no images in {folder} — expected {web_root}/<novel class>/*.jpg")
        paths += [str(p) for p in files]
        labels += [k] * len(files)
    return paths, labels


def check_weak_shot(o) -> None:
    for key, lo, hi in (("noise_rate", 0.0, 1.0), ("ood_share", 0.0, 1.0)):
        if isinstance(o[key], bool) or not isinstance(o[key], (int, float)) or not lo <= o[key] <= hi:
            raise DataError(f"weak_shot {key}: {o[key]!r} — use a number in [{lo}, {hi}]")
    for key in ("noise_seed", "split_seed"):
        if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 0:
            raise DataError(f"weak_shot {key}: {o[key]!r} — use a non-negative integer")
    if o["novel"] is None and (isinstance(o["novel_fraction"], bool) or not isinstance(o["novel_fraction"], (int, float))
                               or not 0 < o["novel_fraction"] < 1):
        raise DataError(f"weak_shot novel_fraction: {o['novel_fraction']!r} — use a number in (0, 1)")
    if o["novel"] is not None and not isinstance(o["novel"], str) and not (
            isinstance(o["novel"], list) and all(isinstance(n, str) for n in o["novel"])):
        raise DataError("weak_shot novel: give a named split, a class-list file path or a list of class names")


def load_weak_shot(request: DatasetRequest) -> DatasetSplits:
    o = dict(request.options)   # check_weak_shot ran before (DatasetSpec.load_checked, the suite)
    base = request.load_dataset(o["of"], o["of_options"], request.root)
    train, test = base.train, base.test
    if base.val is not None:  # an official validation split joins train; the core carves its own
        train = ImageList(train.paths + base.val.paths, train.labels + base.val.labels, train.class_names,
                          train.boxes + base.val.boxes if train.boxes and base.val.boxes else None,
                          trim_bottom=train.trim_bottom)
    names = list(train.class_names)
    novel_names = _novel_classes(names, o, request.root)
    novel_ids = [names.index(n) for n in novel_names]
    novel_set = set(novel_ids)
    base_ids = [i for i in range(len(names)) if i not in novel_set]
    base_set = set(base_ids)
    new_id = {old: k for k, old in enumerate(novel_ids + base_ids)}
    order = novel_names + [names[i] for i in base_ids]

    base_test_rows = [i for i, label in enumerate(test.labels) if label in base_set]
    taken: set = set()
    if o["web_root"]:
        web = Path(o["web_root"]).expanduser()
        web = web if web.is_absolute() or request.root is None else request.root / web
        n_paths, n_labels = _web_images(web, novel_names)
        n_noise, n_boxes = ["web"] * len(n_paths), [None] * len(n_paths)
        n_labels = [novel_ids[k] for k in n_labels]
    else:
        pool = test.subset(base_test_rows) if o["noise_pool"] == "base_test" else None
        n_paths, n_labels, n_noise, n_boxes, taken = simulate_noise(
            train, novel_ids, float(o["noise_rate"]), float(o["ood_share"]), o["noise_seed"],
            lambda count: _ood_paths(o, count, request.cache_dir, request.root), pool)
    base_rows = [i for i, label in enumerate(train.labels) if label in base_set]
    paths = n_paths + [train.paths[i] for i in base_rows]
    labels = [new_id[c] for c in n_labels] + [new_id[train.labels[i]] for i in base_rows]
    noise = n_noise + ["clean"] * len(base_rows)
    use_boxes = base.crop_to_boxes and train.boxes is not None
    boxes = None
    if use_boxes:  # replaced images have no box of their own: the whole image is its "box"
        boxes = [b if b is not None else (0.0, 0.0, 1e9, 1e9) for b in n_boxes] + [train.boxes[i] for i in base_rows]
    info = {"num_novel": len(novel_ids), "view_of": o["of"], "novel_classes": novel_names}
    train_view = ImageList(paths, labels, order, boxes=boxes, trim_bottom=train.trim_bottom,
                           meta={"novel": [lab < len(novel_ids) for lab in labels],
                                 "clean": [None if k == "web" else k == "clean" for k in noise], "noise": noise},
                           info=info)

    def test_part(rows: list[int]) -> ImageList:
        return ImageList([test.paths[i] for i in rows], [new_id[test.labels[i]] for i in rows], order,
                         boxes=[test.boxes[i] for i in rows] if use_boxes and test.boxes else None,
                         trim_bottom=test.trim_bottom, meta={"novel": [test.labels[i] in novel_set for i in rows],
                                                              "clean": [True] * len(rows),
                                                              "noise": ["clean"] * len(rows)}, info=info)

    test_view = test_part([i for i, label in enumerate(test.labels) if label in novel_set])
    # base test images no noise took: where a method may score what it learnt on base classes
    held_out = test_part([i for k, i in enumerate(base_test_rows) if k not in taken])
    return DatasetSplits(train=train_view, test=test_view, crop_to_boxes=use_boxes, extra={"base_test": held_out})


WEAK_SHOT = DatasetSpec(
    name="weak_shot", load=load_weak_shot, needs_root=False,
    description="view: clean base classes + novel classes with simulated (or real web) noisy training data",
    layout="the layout of the dataset named by `of`; give its folder as the view's `root:`",
    options={"of": "synthetic", "of_options": {}, "novel": None, "novel_fraction": 0.25, "split_seed": 0,
             "noise_rate": 0.3, "ood_share": 0.5, "ood_source": "synthetic", "noise_seed": 0,
             "noise_pool": "base_test", "web_root": None},
    choices={"noise_pool": NOISE_POOLS},
    check=check_weak_shot)

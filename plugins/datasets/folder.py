"""Plain class folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (the FineRNet
repository's layout, and what most custom datasets look like).

As torchvision's ``ImageFolder``: images in nested sub-folders of a class folder belong to
that class (found with ``os.walk``, following symlinks, in sorted order so the lists are
deterministic). Hidden entries — names starting with ``.`` (``.ipynb_checkpoints``,
``.DS_Store``, macOS ``._*.jpg`` resource forks) — are skipped, as classes and inside them.

``levels: 2`` reads a two-level hierarchy, ``ROOT/train/<coarse>/<fine>/*``: the classes are
the fine folders, named ``<coarse>/<fine>``, and each image's coarse label is its top folder —
so the ``coarse`` view (and fine-label discovery, scored against the fine folders) works on a
folder dataset."""

from __future__ import annotations

import os
from pathlib import Path

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

# torchvision's IMG_EXTENSIONS
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
LAYOUT = ("ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (the same class folders in both; "
          "images in sub-folders of a class folder count for that class)")


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[str]:
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:          # a symlink back up the tree: walk each real folder once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))   # pruned and walked in order
        found += [os.path.join(dirpath, f) for f in filenames
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


LAYOUT_2 = ("ROOT/train/<coarse>/<fine>/<image> and ROOT/test/<coarse>/<fine>/<image> (levels: 2; the same "
            "folders in both; images in sub-folders of a fine folder count for it)")


def _list_folder(split_dir: Path, class_names: list[str], coarse_names: list[str] | None = None) -> ImageList:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = split_dir / name
        files = _images_under(folder) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    if coarse_names is None:
        return ImageList(paths, labels, class_names)
    group = [coarse_names.index(name.split("/")[0]) for name in class_names]
    return ImageList(paths, labels, class_names, coarse_labels=[group[label] for label in labels],
                     coarse_names=coarse_names)


def _two_level_classes(split_dir: Path, layout: str, empty_ok: bool = False) -> list[str]:
    """``<coarse>/<fine>`` for every fine folder under ``split_dir``'s coarse folders; a
    DataError for a coarse folder with images of its own or (unless ``empty_ok``: the test
    split, where a class may have no image) without fine folders."""
    classes = []
    for coarse in _class_dirs(split_dir):
        folder = split_dir / coarse
        loose = sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_SUFFIXES)
        if loose:
            raise DataError(f"{folder} holds {len(loose)} image(s) outside fine-class folders (e.g. {loose[0]}) — "
                            f"move them into a <fine> folder, or read the folder with levels: 1; expected {layout}")
        fines = _class_dirs(folder)
        if not fines and not empty_ok:
            raise DataError(f"no fine-class folders in {folder} — with levels: 2 each coarse folder holds one folder "
                            f"per fine class; expected {layout}")
        classes += [f"{coarse}/{fine}" for fine in fines]
    return classes


def load_imagefolder(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    levels = request.options.get("levels", 1)   # hash_if_set: absent from runs made before it existed
    layout = LAYOUT_2 if levels == 2 else LAYOUT
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{d} not found — expected {layout}")
    classes = _two_level_classes(train_dir, layout) if levels == 2 else _class_dirs(train_dir)
    if not classes:
        raise DataError(f"no class folders in {train_dir} — expected {layout}")
    test_classes = _two_level_classes(test_dir, layout, empty_ok=True) if levels == 2 else _class_dirs(test_dir)
    extra = sorted(set(test_classes) - set(classes))
    if extra:
        raise DataError(f"test classes without training folders: {', '.join(extra[:5])} — "
                        f"add them under {train_dir} or remove them from {test_dir}")
    coarse = sorted({name.split("/")[0] for name in classes}) if levels == 2 else None
    train, test = _list_folder(train_dir, classes, coarse), _list_folder(test_dir, classes, coarse)
    for split, images, folder in (("train", train, train_dir), ("test", test, test_dir)):
        if not len(images):
            raise DataError(f"no {split} images found under {folder} (image files: "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}) — expected {layout}")
    return DatasetSplits(train=train, test=test)


SPEC = DatasetSpec(name="imagefolder", load=load_imagefolder, layout=LAYOUT,
                   description="plain train/ + test/ class folders (the FineRNet repo's layout); levels: 2 reads "
                               "<coarse>/<fine> folders, a hierarchy the coarse view uses",
                   options={"levels": 1}, choices={"levels": (1, 2)}, hash_if_set=("levels",))

"""Plain class folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (the FineRNet
repository's layout, and what most custom datasets look like).

As torchvision's ``ImageFolder``: images in nested sub-folders of a class folder belong to
that class (found with ``os.walk``, following symlinks, in sorted order so the lists are
deterministic). Hidden entries — names starting with ``.`` (``.ipynb_checkpoints``,
``.DS_Store``, macOS ``._*.jpg`` resource forks) — are skipped, as classes and inside them."""

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


def _list_folder(split_dir: Path, class_names: list[str]) -> ImageList:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = split_dir / name
        files = _images_under(folder) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    return ImageList(paths, labels, class_names)


def load_imagefolder(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{d} not found — expected {LAYOUT}")
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"no class folders in {train_dir} — expected {LAYOUT}")
    extra = sorted(set(_class_dirs(test_dir)) - set(classes))
    if extra:
        raise DataError(f"test classes without training folders: {', '.join(extra[:5])} — "
                        f"add them under {train_dir} or remove them from {test_dir}")
    train, test = _list_folder(train_dir, classes), _list_folder(test_dir, classes)
    for split, images, folder in (("train", train, train_dir), ("test", test, test_dir)):
        if not len(images):
            raise DataError(f"no {split} images found under {folder} (image files: "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}) — expected {LAYOUT}")
    return DatasetSplits(train=train, test=test)


SPEC = DatasetSpec(name="imagefolder", load=load_imagefolder, layout=LAYOUT,
                   description="plain train/ + test/ class folders (the FineRNet repo's layout)")

"""Plain class folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (the FineRNet
repository's layout, and what most custom datasets look like)."""

from __future__ import annotations

from pathlib import Path

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
LAYOUT = "ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (the same class folders in both)"


def _list_folder(split_dir: Path, class_names: list[str]) -> ImageList:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = split_dir / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return ImageList(paths, labels, class_names)


def load_imagefolder(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{d} not found — expected {LAYOUT}")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {train_dir} — expected {LAYOUT}")
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(f"test classes without training folders: {', '.join(extra[:5])} — "
                        f"add them under {train_dir} or remove them from {test_dir}")
    train, test = _list_folder(train_dir, classes), _list_folder(test_dir, classes)
    if not len(train) or not len(test):
        raise DataError(f"no images found under {root} — expected {LAYOUT}")
    return DatasetSplits(train=train, test=test)


SPEC = DatasetSpec(name="imagefolder", load=load_imagefolder, layout=LAYOUT,
                   description="plain train/ + test/ class folders (the FineRNet repo's layout)")

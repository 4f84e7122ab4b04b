"""Datasets: the embedded ``synthetic`` generator and plain ``imagefolder`` trees."""

from __future__ import annotations

from pathlib import Path

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList, hookimpl
from fgvcbench.api import SyntheticConfig, load_synthetic_split, materialize_synthetic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_synthetic(request: DatasetRequest) -> DatasetSplits:
    """Generate (once, cached) and list the synthetic fine-grained dataset."""
    try:
        config = SyntheticConfig(**dict(request.options))
    except (TypeError, ValueError) as exc:
        raise DataError(f"synthetic dataset options: {exc}") from None
    root = materialize_synthetic(config, request.cache_dir)
    splits = {}
    for split in ("train", "test"):
        d = load_synthetic_split(root, split)
        splits[split] = ImageList(d["paths"], d["labels"], d["class_names"], boxes=d["boxes"],
                                  coarse_labels=d["coarse_labels"], coarse_names=d["coarse_names"])
    return DatasetSplits(train=splits["train"], test=splits["test"])


IMAGEFOLDER_LAYOUT = "ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (the same class folders in both)"


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
            raise DataError(f"{d} not found — expected {IMAGEFOLDER_LAYOUT}")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {train_dir} — expected {IMAGEFOLDER_LAYOUT}")
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(f"test classes without training folders: {', '.join(extra[:5])} — "
                        f"add them under {train_dir} or remove them from {test_dir}")
    train, test = _list_folder(train_dir, classes), _list_folder(test_dir, classes)
    if not len(train) or not len(test):
        raise DataError(f"no images found under {root} — expected {IMAGEFOLDER_LAYOUT}")
    return DatasetSplits(train=train, test=test)


@hookimpl
def fgvcbench_datasets():
    defaults = SyntheticConfig()
    return [
        DatasetSpec(name="synthetic", load=load_synthetic, needs_root=False,
                    description="embedded generator: coarse groups × fine classes that differ in small parts",
                    layout="generated into the cache directory; no files needed",
                    options={k: getattr(defaults, k) for k in defaults.__dataclass_fields__}),
        DatasetSpec(name="imagefolder", load=load_imagefolder, layout=IMAGEFOLDER_LAYOUT,
                    description="plain train/ + test/ class folders (the FineRNet repo's layout)"),
    ]

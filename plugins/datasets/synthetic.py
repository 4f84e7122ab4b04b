"""The embedded ``synthetic`` dataset: generated once into the cache, no files needed."""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList
from fgvcbench.api import SyntheticConfig, load_synthetic_split, materialize_synthetic


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


def check_synthetic(options) -> None:
    SyntheticConfig(**dict(options))   # its own checks raise ValueError (TypeError: an unknown option)


_DEFAULTS = SyntheticConfig()
SPEC = DatasetSpec(name="synthetic", load=load_synthetic, needs_root=False,
                   description="embedded generator: coarse groups × fine classes that differ in small parts",
                   layout="generated into the cache directory; no files needed",
                   options={k: getattr(_DEFAULTS, k) for k in _DEFAULTS.__dataclass_fields__},
                   check=check_synthetic)

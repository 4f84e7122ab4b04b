"""Datasets larger than memory: the decoded cache as an on-disk memmap, train and val
as views of one file, batches read from it — same pixels as the in-memory cache."""

from __future__ import annotations

import pytest
import torch

from fgvcbench.data.pipeline import build_tensor_data, use_memmap
from fgvcbench.engine.recipe import Recipe
from fgvcbench.engine.train import fit
from fgvcbench.errors import DataError
from fgvcbench.plugins import get_registry
from fgvcbench.data.base import DatasetRequest


def _splits(tmp_path):
    spec = get_registry().datasets["synthetic"]
    options = {**spec.options, "coarse": 2, "fine": 2, "train_per_class": 6, "test_per_class": 2, "image_size": 40}
    return spec.load(DatasetRequest(root=None, options=options, cache_dir=tmp_path / "gen"))


def test_auto_streams_when_the_cache_would_take_over_half_the_memory(monkeypatch):
    assert use_memmap(60, "auto", available=100) and not use_memmap(40, "auto", available=100)
    assert use_memmap(1, "memmap") and not use_memmap(10**15, "memory")
    monkeypatch.setenv("FGVCBENCH_DECODE_CACHE", "disk")
    with pytest.raises(DataError, match="FGVCBENCH_DECODE_CACHE"):
        use_memmap(1)


def test_memmap_cache_matches_memory_and_trains(tmp_path, monkeypatch):
    splits = _splits(tmp_path)
    monkeypatch.setenv("FGVCBENCH_DECODE_CACHE", "memory")
    memory = build_tensor_data(splits, 32, tmp_path / "mem", val_fraction=0.25)
    monkeypatch.setenv("FGVCBENCH_DECODE_CACHE", "memmap")
    disk = build_tensor_data(splits, 32, tmp_path / "disk", val_fraction=0.25)
    assert disk.train.streamed and not memory.train.streamed
    assert len(list((tmp_path / "disk" / "decoded").glob("*.npy"))) == 2       # train+val in one file, test
    for name in ("train", "val", "test"):
        a, b = getattr(memory, name), getattr(disk, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.index == b.index
    row = disk.train.images[0].numel()
    assert disk.val.images.data_ptr() == disk.train.images.data_ptr() + len(disk.train) * row   # views of one file
    assert memory.val.images.data_ptr() != memory.train.images.data_ptr() + len(memory.train) * row
    again = build_tensor_data(splits, 32, tmp_path / "disk", val_fraction=0.25)  # reuses the file
    assert torch.equal(again.train.images, disk.train.images)
    import timm
    model = timm.create_model("test_resnet", num_classes=disk.num_classes)
    result = fit(model, disk, Recipe(epochs=1, image_size=32, batch_size=8), device=torch.device("cpu"), seed=0)
    assert 0 <= result.metrics["top1"] <= 100


@pytest.mark.parametrize("mode", ["memory", "memmap"])
def test_a_datasets_extra_list_decodes_like_its_splits(tmp_path, monkeypatch, mode):
    """RunContext.load_extra: weak_shot's base test images, decoded at the run's size, in
    memory or as a memmap as load_data would; a name the dataset lacks is None."""
    from fgvcbench.run import RunContext
    from fgvcbench.spec import RunSpec
    from fgvcbench.store import Store
    monkeypatch.setenv("FGVCBENCH_DECODE_CACHE", mode)
    options = {"of": "synthetic", "novel_fraction": 0.25, "of_options": {"coarse": 2, "fine": 2, "train_per_class": 4,
                                                                         "test_per_class": 2, "image_size": 40}}
    registry = get_registry()
    spec = RunSpec(suite="s", dataset={"name": "weak_shot", "options": {**registry.datasets["weak_shot"].options,
                                                                        **options}},
                   backbone={"name": "test_resnet", "pretrained": False}, method="simtrans", variant="default", seed=0,
                   scale="smoke", recipe={"image_size": 32})
    ctx = RunContext(spec, registry, Store(tmp_path), device=torch.device("cpu"), cache_dir=tmp_path)
    held = ctx.load_extra("base_test")
    listed = ctx.load_splits().extra["base_test"]
    assert held.images.shape == (len(listed), 3, 37, 37) and held.labels.tolist() == listed.labels
    assert held.streamed == (mode == "memmap") and ctx.load_extra("nothing") is None

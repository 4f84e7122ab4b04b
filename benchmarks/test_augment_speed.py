"""Speed of the fast pipeline's batched augmentation against torchvision's transforms
applied one image at a time (the classic pipeline's work, without the JPEG decode), on
every available device. pytest-benchmark; not part of `pytest` (testpaths = tests):

    pytest benchmarks --benchmark-only [--benchmark-json FILE]

FGVCBENCH_BENCH_BATCH (64) and FGVCBENCH_BENCH_RES (224) set the batch; the stored images
are res / 0.875 on a side, as the pipeline keeps them: square (``crop_extent: square``), or
on a ``full`` canvas of landscape and portrait images from 1:1 to 2:1 (the batched path only).
"""

from __future__ import annotations

import os

import pytest
import torch
from torchvision.transforms import v2

from fgvcbench.data.pipeline import canvas_row, load_size_for
from fgvcbench.engine.augment import BatchAugmenter
from fgvcbench.engine.recipe import Recipe

BATCH = int(os.environ.get("FGVCBENCH_BENCH_BATCH", "64"))
RES = int(os.environ.get("FGVCBENCH_BENCH_RES", "224"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(device: str) -> torch.Tensor:
    size = load_size_for(RES)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (BATCH, 3, size, size), generator=g, dtype=torch.uint8).to(device)


def _canvas(device: str) -> torch.Tensor:
    size = load_size_for(RES)
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(BATCH):
        extent = int(torch.randint(size, 2 * size + 1, (1,), generator=g))
        image = torch.randint(0, 256, (3, size, extent), generator=g, dtype=torch.uint8).numpy()
        rows.append(torch.from_numpy(canvas_row(image, extent, bool(i % 2), 2 * size + 2)))
    return torch.stack(rows).to(device)


def _timed(benchmark, fn, device: str):
    def step():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    return benchmark.pedantic(step, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", ["standard", "trivial_augment", "autoaugment"])
@pytest.mark.parametrize("layout", ["square", "full"])
def test_batched_on_the_device(benchmark, device, augment, layout):
    images = _images(device) if layout == "square" else _canvas(device)
    recipe = Recipe(augment=augment, image_size=RES, random_erasing=0.1)
    aug = BatchAugmenter(recipe, MEAN, STD, torch.device(device), torch.Generator().manual_seed(0))
    out = _timed(benchmark, lambda: aug.train(images), device)
    assert out.shape == (BATCH, 3, RES, RES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["square", "full"])
def test_trivial_augment_before_the_crop(benchmark, device, layout):
    """FineRNet's order: TrivialAugment on the whole stored images (p 0.5), then the crop."""
    images = _images(device) if layout == "square" else _canvas(device)
    recipe = Recipe(augment="trivial_augment", policy_p=0.5, policy_before_crop=True, image_size=RES,
                    crop_extent=layout)
    aug = BatchAugmenter(recipe, MEAN, STD, torch.device(device), torch.Generator().manual_seed(0))
    out = _timed(benchmark, lambda: aug.train(images), device)
    assert out.shape == (BATCH, 3, RES, RES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", ["standard", "trivial_augment", "autoaugment"])
def test_torchvision_one_image_at_a_time(benchmark, device, augment):
    images = _images(device)
    policy = {"trivial_augment": [v2.TrivialAugmentWide()], "autoaugment": [v2.AutoAugment()]}.get(augment, [])
    transform = v2.Compose([v2.RandomResizedCrop(RES, antialias=True), v2.RandomHorizontalFlip(), *policy,
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
                            v2.RandomErasing(p=0.1, value="random")])
    out = _timed(benchmark, lambda: torch.stack([transform(img) for img in images]), device)
    assert out.shape == (BATCH, 3, RES, RES)

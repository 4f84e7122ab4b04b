"""What only a CUDA device can show: a training step's data path never makes the host wait
for the GPU, host-held images reach it through pinned memory with the same result, and
every method's own loops run on it.
Skipped without a GPU; on the device machine: ``pytest tests/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch

from fgvcbench.engine.augment import BatchAugmenter, mix_batch
from fgvcbench.engine.recipe import Recipe
from fgvcbench.engine.transfer import gather_rows, to_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU machine)")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("augment", ["standard", "trivial_augment", "autoaugment"])
def test_the_augmented_batch_never_waits_for_the_gpu(augment):
    dev = torch.device("cuda")
    images = torch.randint(0, 256, (96, 3, 73, 73), dtype=torch.uint8).to(dev)
    recipe = Recipe(augment=augment, image_size=64, policy_p=0.5, random_erasing=0.5, mixup_alpha=0.2,
                    cutmix_alpha=1.0)
    aug = BatchAugmenter(recipe, MEAN, STD, dev, torch.Generator().manual_seed(0))
    labels = torch.randint(10, (96,)).to(dev)
    order = torch.randperm(96)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")   # any host wait raises
    try:
        for start in range(0, 96, 32):
            rows = to_device(order[start:start + 32], dev)
            x, soft = mix_batch(aug.train(images[rows]), labels[rows], 10, recipe, aug.generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == (32, 3, 64, 64) and torch.isfinite(x).all() and soft.shape == (32, 10)


def _canvas(n: int = 64, side: int = 37) -> torch.Tensor:
    """A ``crop_extent: full`` canvas of random images, landscape and portrait, 1:1 to 2:1."""
    import numpy as np
    from fgvcbench.data.pipeline import canvas_row
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        extent = int(rng.integers(side, 2 * side + 1))
        image = rng.integers(0, 256, (3, side, extent), dtype=np.uint8)
        rows.append(torch.from_numpy(canvas_row(image, extent, bool(i % 2), 2 * side + 2)))
    return torch.stack(rows)


@pytest.mark.parametrize("rotation, before", [(0.0, False), (30.0, False), (0.0, True)])
def test_a_full_canvas_batch_never_waits_for_the_gpu_and_crops_as_on_the_cpu(rotation, before):
    """The canvas's extents are read on the device: cropping from it, and TrivialAugment
    on its whole rows before the crop (FineRNet), make no host wait; the crop gives the
    CPU's batch (the same host draws)."""
    dev = torch.device("cuda")
    canvas = _canvas()
    recipe = Recipe(augment="trivial_augment", image_size=32, random_erasing=0.3, rotation_degrees=rotation,
                    policy_before_crop=before)
    aug = BatchAugmenter(recipe, MEAN, STD, dev, torch.Generator().manual_seed(0))
    on_gpu, order = canvas.to(dev), torch.randperm(64)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for start in range(0, 64, 32):
            x = aug.train(on_gpu[to_device(order[start:start + 32], dev)])
            y = aug.eval(on_gpu[to_device(order[start:start + 32], dev)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == y.shape == (32, 3, 32, 32) and torch.isfinite(x).all()
    plain = Recipe(augment="standard", image_size=32, rotation_degrees=rotation)
    cpu = BatchAugmenter(plain, MEAN, STD, torch.device("cpu"), torch.Generator().manual_seed(3)).train(canvas)
    gpu = BatchAugmenter(plain, MEAN, STD, dev, torch.Generator().manual_seed(3)).train(on_gpu)
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-2)


def test_host_images_gathered_through_pinned_memory_give_the_same_batch():
    dev = torch.device("cuda")
    host = torch.randint(0, 256, (40, 3, 37, 37), dtype=torch.uint8)
    rows = torch.randperm(40)[:16]
    gathered = gather_rows(host, rows, dev)
    assert gathered.is_pinned() and torch.equal(gathered, host[rows])
    recipe = Recipe(augment="trivial_augment", image_size=32, random_erasing=0.3)
    a = BatchAugmenter(recipe, MEAN, STD, dev, torch.Generator().manual_seed(1)).train(gathered)
    b = BatchAugmenter(recipe, MEAN, STD, dev, torch.Generator().manual_seed(1)).train(host.to(dev)[rows.to(dev)])
    assert torch.equal(a, b)


def test_same_seed_same_augmentation_parameters_on_cpu_and_gpu():
    """Parameters come from the host generator, so the geometry agrees across devices (up to
    float rounding of the resampling)."""
    images = torch.randint(0, 256, (8, 3, 37, 37), dtype=torch.uint8)
    recipe = Recipe(augment="standard", image_size=32)
    cpu = BatchAugmenter(recipe, MEAN, STD, torch.device("cpu"), torch.Generator().manual_seed(2)).train(images)
    gpu = BatchAugmenter(recipe, MEAN, STD, torch.device("cuda"), torch.Generator().manual_seed(2)).train(images)
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)


SYNTHETIC = "{name: synthetic, options: {coarse: 2, fine: 2, train_per_class: 12, test_per_class: 4, image_size: 40}}"
COARSE = ("{name: coarse, options: {of: synthetic, of_options: {coarse: 2, fine: 3, train_per_class: 20, "
          "test_per_class: 3, image_size: 40}}}")
WEAK_SHOT = ("{name: weak_shot, options: {of: synthetic, novel_fraction: 0.5, noise_rate: 0.3, of_options: "
             "{coarse: 2, fine: 4, train_per_class: 12, test_per_class: 3, image_size: 40}}}")


@pytest.mark.parametrize("dataset, methods", [
    (SYNTHETIC, "[finetune, {name: finernet, variants: all, params: {phase3_batch: 16}}]"),
    (SYNTHETIC, "[{name: metric_learning, variants: all, params: {tsne: false}}]"),
    (COARSE, "[{name: fine_labels, variants: all}]"),
    (WEAK_SHOT, "[{name: simtrans, variants: all, params: {simnet_hidden: [64, 32, 32], images_per_batch: 12, "
                "graph_batch_size: 48, pretrain_batch_size: 16}}]"),
], ids=["finetune+finernet", "metric_learning", "fine_labels", "simtrans"])
def test_every_method_and_variant_runs_end_to_end_on_cuda(tmp_path, runner, dataset, methods):
    """Every method's own loops (mining, Siamese phase, SimNet, alternating stages …) on the
    GPU, with bf16 autocast and device-resident images: each run must end ok, and a
    multi-stage method whose stages were computed in this run (the first variant) as well
    as one reading them from the cache."""
    import json

    from fgvcbench.cli import app
    from fgvcbench.plugins import get_registry

    from conftest import tiny_suite
    get_registry(refresh=True)
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, device="cuda", epochs=2, batch_size=16, datasets=f"[{dataset}]",
                       methods=methods)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    failed = {r["spec"]["method"] + "/" + r["spec"]["variant"]: r["error"] for r in records if r["status"] != "ok"}
    assert result.exit_code == 0 and not failed, (failed, result.output[-3000:])
    assert records and all(r["provenance"]["device"].startswith("cuda") for r in records)

"""The shared training engine: schedules, validation carving, augmentation, metrics,
early stopping and determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fgvcbench.data.base import ImageList
from fgvcbench.data.pipeline import TensorData, TensorSplit, carve_validation
from fgvcbench.engine.augment import (BatchAugmenter, center_crop, crop_boxes, erasing_boxes, mix_batch,
                                      random_erasing, random_resized_crop_flip)
from fgvcbench.engine.recipe import Recipe
from fgvcbench.engine.train import accuracy_metrics, fit, lr_multiplier


def test_warmup_then_cosine_and_step():
    r = Recipe(epochs=10, warmup_epochs=2, warmup_start_factor=0.01, scheduler="cosine")
    f = lr_multiplier(r, steps_per_epoch=5)
    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(10) == pytest.approx(1.0)                       # warmup ends at the peak
    assert f(10 + 20) == pytest.approx(0.5)                  # half-way through the cosine
    assert f(50) == pytest.approx(0.0, abs=1e-12)            # annealed to zero
    s = lr_multiplier(Recipe(epochs=90, scheduler="step", step_size=30, gamma=0.1), steps_per_epoch=4)
    assert [s(0), s(4 * 29), s(4 * 30), s(4 * 60)] == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_multiplier(Recipe(scheduler="none"), 3)(100) == 1.0


def test_carve_validation_is_stratified_disjoint_and_deterministic():
    labels = [c for c in range(5) for _ in range(10 + c)] + [5]  # class 5 has a single image
    images = ImageList([f"{i}.jpg" for i in range(len(labels))], labels, [str(c) for c in range(6)])
    train, val = carve_validation(images, 0.2)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(labels)))
    for c in range(5):
        n_val = sum(labels[i] == c for i in val)
        assert n_val == round(0.2 * (10 + c))
    assert all(labels[i] != 5 for i in val)                   # a singleton stays in train
    assert carve_validation(images, 0.2) == (train, val)
    assert carve_validation(images, 0.0) == (list(range(len(labels))), [])


def test_random_resized_crop_is_deterministic_per_generator():
    x = torch.rand(6, 3, 40, 40)
    a = random_resized_crop_flip(x, 32, 0.25, True, torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(x, 32, 0.25, True, torch.Generator().manual_seed(1))
    c = random_resized_crop_flip(x, 32, 0.25, True, torch.Generator().manual_seed(2))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    # a full-area crop of a constant image stays that constant
    const = torch.full((2, 3, 40, 40), 0.7)
    assert torch.allclose(random_resized_crop_flip(const, 32, 1.0, True, torch.Generator()), torch.tensor(0.7))
    assert center_crop(torch.arange(16.).view(1, 1, 4, 4), 2).flatten().tolist() == [5, 6, 9, 10]


def test_random_erasing_and_mixing():
    x = torch.ones(8, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_erasing(x, 0.0, g), x)
    erased = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != 1).flatten(1).any(1)
    assert changed.all()
    assert (erased[erased != 1] == 0).all()                          # torchvision's default fill: value 0
    frac = (erased != 1).float().mean((1, 2, 3))
    assert (frac >= 0.02 - 1e-6).all() and (frac <= 0.34).all()
    noisy = random_erasing(x, 1.0, torch.Generator().manual_seed(0), value="random")
    assert ((noisy != 1) == (erased != 1)).all()                     # same boxes from the same stream …
    assert noisy[noisy != 1].std() > 0.5                             # … filled with normal noise
    # p = 0.5: about half the samples get exactly one rectangle; the others are untouched
    x = torch.ones(400, 3, 12, 16)
    erased = random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    changed = (erased != 1).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    for sample in erased[changed]:
        rows, cols = (sample != 1).any(0).any(1).nonzero(), (sample != 1).any(0).any(0).nonzero()
        box = sample[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == 0).all()                                      # one filled rectangle
    assert torch.equal(erased, random_erasing(x, 0.5, torch.Generator().manual_seed(1)))
    y = torch.arange(8) % 4
    for recipe in (Recipe(mixup_alpha=0.2), Recipe(cutmix_alpha=1.0)):
        images = torch.rand(8, 3, 16, 16)
        mixed, soft = mix_batch(images, y, 4, recipe, torch.Generator().manual_seed(3))
        assert mixed.shape == (8, 3, 16, 16) and torch.allclose(soft.sum(1), torch.ones(8))
        # λ comes from the run's generator alone: the global one may be anywhere
        torch.manual_seed(123)
        again, soft_again = mix_batch(images, y, 4, recipe, torch.Generator().manual_seed(3))
        assert torch.equal(again, mixed) and torch.equal(soft_again, soft)


def test_crop_and_erasing_boxes_follow_torchvision_get_params():
    """The batched draws have the distributions of torchvision's own ``get_params``: area
    and aspect of RandomResizedCrop boxes (10 tries, whole-image fallback), and of
    RandomErasing boxes (10 tries, untouched when none fits)."""
    import numpy as np
    from torchvision.transforms import RandomErasing, RandomResizedCrop
    torch.manual_seed(0)
    n, side = 3000, 40
    ref = np.array([RandomResizedCrop.get_params(torch.empty(3, side, side), [0.08, 1.0], [3 / 4, 4 / 3])[2:]
                    for _ in range(n)], dtype=float)
    w, h = crop_boxes(n, side, 0.08, torch.Generator().manual_seed(0))
    ours = torch.stack([h, w], 1).numpy() * side
    assert abs((ours[:, 0] * ours[:, 1]).mean() - (ref[:, 0] * ref[:, 1]).mean()) < 0.03 * side * side
    assert abs(np.log(ours[:, 1] / ours[:, 0]).mean() - np.log(ref[:, 1] / ref[:, 0]).mean()) < 0.03
    assert ((ours >= 1) & (ours <= side)).all() and (ours == np.round(ours)).all()   # whole pixels, inside
    # a tiny image: RandomErasing often finds no box that fits, and then erases nothing
    hgt = wid = 4
    img = torch.empty(3, hgt, wid)
    ref_none = np.mean([RandomErasing.get_params(img, (0.02, 0.33), (0.3, 3.3), [0])[2] == hgt
                        for _ in range(n)])
    found, y0, x0, eh, ew = erasing_boxes(n, hgt, wid, torch.Generator().manual_seed(0))
    assert abs((~found).float().mean().item() - ref_none) < 0.03
    assert ((eh < hgt) & (ew < wid))[found].all() and (y0 + eh <= hgt).all() and (x0 + ew <= wid).all()


@pytest.mark.parametrize("augment", ["none", "flip", "standard", "trivial_augment", "autoaugment"])
def test_batch_augmenter_policies_are_deterministic_per_seed(augment):
    recipe = Recipe(augment=augment, image_size=32, policy_p=0.5, random_erasing=0.25)
    images = torch.randint(0, 256, (16, 3, 37, 37), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    run = lambda seed: BatchAugmenter(recipe, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"),  # noqa: E731
                                      torch.Generator().manual_seed(seed)).train(images)
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every sample its own draw: 16 copies of one image come out as 16 views where the policy
    # crops, as both flips where it only flips, and untouched where it does nothing
    copies = images[:1].expand(16, -1, -1, -1).clone()
    views = BatchAugmenter(recipe.replace(random_erasing=0.0), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"),
                           torch.Generator().manual_seed(0)).train(copies)
    distinct = len({tuple(x.flatten().tolist()) for x in views})
    if augment in ("none", "flip"):
        assert distinct == {"none": 1, "flip": 2}[augment]
    else:
        assert distinct > 12


@pytest.mark.parametrize("before", [False, True])
def test_the_policy_runs_after_the_crop_unless_asked_before(monkeypatch, before):
    import fgvcbench.engine.batch_policies as policies
    seen = []
    real = policies.trivial_augment_wide
    monkeypatch.setattr(policies, "trivial_augment_wide",
                        lambda x, g, **kw: seen.append(tuple(x.shape)) or real(x, g, **kw))
    recipe = Recipe(augment="trivial_augment", image_size=32, policy_before_crop=before)
    images = torch.randint(0, 256, (4, 3, 37, 37), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = BatchAugmenter(recipe, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), torch.Generator()).train(images)
    assert seen == [(4, 3, 37, 37) if before else (4, 3, 32, 32)] and out.shape == (4, 3, 32, 32)


def test_classic_pipeline_orders_the_policy_the_same_way():
    from torchvision import transforms as T

    from fgvcbench.data.classic import classic_transform
    for before in (False, True):
        names = [type(t).__name__ for t in classic_transform(
            Recipe(augment="trivial_augment", policy_before_crop=before), (0.5,) * 3, (0.25,) * 3, True).transforms]
        policy_at = names.index(T.TrivialAugmentWide.__name__)
        assert (policy_at < names.index("RandomResizedCrop")) == before


def test_augment_none_trains_on_the_test_view_and_erases_in_both_pipelines():
    """``augment: none`` with random erasing: the fast augmenter erases its test view, and so
    does the classic transform (it used to return the bare test view)."""
    from fgvcbench.data.classic import classic_transform
    recipe = Recipe(augment="none", image_size=16, random_erasing=1.0)
    names = [type(t).__name__ for t in classic_transform(recipe, (0.5,) * 3, (0.25,) * 3, True).transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize", "RandomErasing"]
    names = [type(t).__name__ for t in classic_transform(recipe, (0.5,) * 3, (0.25,) * 3, False).transforms]
    assert "RandomErasing" not in names
    images = torch.full((4, 3, 18, 18), 128, dtype=torch.uint8)
    aug = BatchAugmenter(recipe, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), torch.Generator().manual_seed(0))
    plain = aug.eval(images)
    erased = aug.train(images)
    assert erased.shape == plain.shape and not torch.equal(erased, plain)
    assert torch.equal(BatchAugmenter(recipe.replace(random_erasing=0.0), (0.5,) * 3, (0.25,) * 3,
                                      torch.device("cpu"), torch.Generator()).train(images), plain)


def test_the_history_records_the_lr_each_epoch_trained_at():
    """Not the next epoch's: a cosine schedule stepped per epoch over 3 epochs trains at
    factors 1, 0.75, 0.25, and the history says so (it used to say 0.75, 0.25, 0)."""
    data = toy_data()
    recipe = Recipe(epochs=3, image_size=16, batch_size=8, lr=0.1, scheduler="cosine", lr_step="epoch", augment="flip")
    history = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=0).history
    assert [round(h["lr"], 6) for h in history] == [0.1, 0.075, 0.025]


def test_accuracy_metrics_by_hand():
    logits = torch.tensor([[3., 1, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]])
    labels = torch.tensor([0, 2, 2, 1])
    m = accuracy_metrics(logits, labels, 3)
    assert m["top1"] == pytest.approx(50.0)
    # per class: class0 1/1, class1 0/1, class2 1/2 → mean 0.5
    assert m["mean_class_acc"] == pytest.approx(50.0)
    assert m["top5"] == pytest.approx(100.0)


def toy_data(n_per_class=12, classes=3, size=20) -> TensorData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    # each class is a colour: learnable in a few steps
    base = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=torch.float)[labels]
    images = (base[:, :, None, None] + 20 * torch.randn(len(labels), 3, size, size, generator=g)).clamp(0, 255)
    images = images.to(torch.uint8)
    split = lambda idx: TensorSplit(images[idx], labels[idx], idx.tolist())  # noqa: E731
    idx = torch.arange(len(labels))
    return TensorData(train=split(idx[idx % 3 != 0]), val=split(idx[idx % 6 == 0]), test=split(idx[idx % 6 == 3]),
                      class_names=[str(c) for c in range(classes)], image_size=16, source=None)


def small_model(classes=3):
    import timm
    return timm.create_model("test_resnet", num_classes=classes)


def test_fit_learns_is_deterministic_and_selects_on_validation():
    data = toy_data()
    recipe = Recipe(epochs=4, image_size=16, batch_size=8, lr=0.05, augment="flip")
    torch.manual_seed(0)
    a = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=3)
    torch.manual_seed(0)
    b = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=3)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.metrics == b.metrics
    assert a.metrics["top1"] > 100 / 3 + 20        # it learns the colours
    best = max(range(len(a.history)), key=lambda i: a.history[i]["val_top1"])
    assert a.metrics["best_epoch"] == a.history[best]["epoch"]   # first epoch with the best val top-1
    assert a.images_seen == 4 * len(data.train)


def test_grad_clip_bounds_the_gradient_norm_at_every_step(monkeypatch):
    """``grad_clip``: the optimizer only ever sees gradients of total norm ≤ the clip;
    without it the same run's gradients are larger (the clip is what bounds them)."""
    norms = []
    step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        grads = [p.grad.flatten() for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.cat(grads).norm()))
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    data, recipe = toy_data(), Recipe(epochs=1, image_size=16, batch_size=8, lr=0.05)
    torch.manual_seed(0)
    fit(small_model(), data, recipe, device=torch.device("cpu"), seed=0)
    free, norms[:] = list(norms), []
    torch.manual_seed(0)
    fit(small_model(), data, recipe.replace(grad_clip=0.05), device=torch.device("cpu"), seed=0)
    assert len(norms) == len(free) and max(free) > 0.05
    assert all(n <= 0.05 * (1 + 1e-4) for n in norms)


def test_label_smoothing_reaches_the_loss_of_every_batch(monkeypatch):
    import torch.nn.functional as F
    seen, real = [], F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: seen.append(k.get("label_smoothing")) or real(*a, **k))
    data = toy_data()
    fit(small_model(), data, Recipe(epochs=2, image_size=16, batch_size=8, label_smoothing=0.3),
        device=torch.device("cpu"), seed=0)
    steps = 2 * (len(data.train) // 8)
    # every training batch smoothed; the validation loss (stop_on: loss) stays the plain one
    assert seen.count(0.3) == steps and seen.count(None) == 2 and len(seen) == steps + 2


def test_adamw_takes_the_recipes_lr_and_weight_decay():
    from fgvcbench.engine.train import build_optimizer
    model = small_model()
    opt = build_optimizer(list(model.named_parameters()), Recipe(optimizer="adamw", lr=3e-4, weight_decay=0.05),
                          model)
    assert isinstance(opt, torch.optim.AdamW)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(3e-4, 0.05)]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_early_stopping_stops_after_patience():
    data = toy_data()
    recipe = Recipe(epochs=6, image_size=16, batch_size=8, lr=1e-12, patience=1, momentum=0.0)
    result = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=0)
    # with a vanishing lr validation accuracy never strictly improves after epoch 1
    assert result.metrics["best_epoch"] == 1 and result.metrics["epochs_run"] == 2


def _stop_epoch(history: list[dict], key: str, patience: int, min_epochs: int = 0) -> int:
    """Where early stopping on ``key`` must stop: the first epoch at least ``min_epochs`` that
    is ``patience`` past the epoch of the best value so far (top-1 up, loss down, strictly)."""
    best, best_epoch = None, 0
    for row in history:
        value = -row[key] if key == "val_top1" else row[key]
        if best is None or value < best:
            best, best_epoch = value, row["epoch"]
        if row["epoch"] - best_epoch >= patience and row["epoch"] >= min_epochs:
            return row["epoch"]
    return history[-1]["epoch"]


def test_early_stopping_on_the_validation_loss_and_min_epochs():
    """stop_on: loss (Lightning's EarlyStopping('val_loss')) keeps training while the loss
    falls although top-1 has plateaued; the epoch kept is still the best top-1; min_epochs
    holds the stop back."""
    data = toy_data()
    runs = {}
    for stop_on, min_epochs in (("top1", 0), ("loss", 0), ("top1", 5)):
        torch.manual_seed(0)
        recipe = Recipe(epochs=8, image_size=16, batch_size=8, lr=0.02, augment="flip", patience=1,
                        stop_on=stop_on, min_epochs=min_epochs)
        runs[stop_on, min_epochs] = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=3)
    for (stop_on, min_epochs), result in runs.items():
        key = "val_loss" if stop_on == "loss" else "val_top1"
        assert all("val_loss" in h for h in result.history)
        assert result.metrics["epochs_run"] == _stop_epoch(result.history, key, 1, min_epochs)
        best = max(result.history, key=lambda h: h["val_top1"])   # the first best top-1 is kept
        assert result.metrics["best_epoch"] == best["epoch"]
    assert runs["loss", 0].metrics["epochs_run"] > runs["top1", 0].metrics["epochs_run"]
    assert runs["top1", 5].metrics["epochs_run"] >= 5 > runs["top1", 0].metrics["epochs_run"]
    assert Recipe(stop_on="acc").validate() == [("stop_on", "must be one of top1, loss; got 'acc'")]


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_a_frozen_backbone_moves_only_the_head_and_bn_statistics_follow_freeze_bn(freeze_bn):
    """freeze_backbone: no backbone weight moves, the head does. freeze_bn=True (the linear
    probe's usual form) also keeps BatchNorm's running statistics; freeze_bn=False (FineRNet's
    phase 4 as its code does it: requires_grad off, the backbone left in train mode) lets them
    follow the new data."""
    data = toy_data()
    model = small_model()
    head = {"fc.weight", "fc.bias"}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    fit(model, data, Recipe(epochs=2, image_size=16, batch_size=8, lr=0.5), device=torch.device("cpu"),
        seed=0, freeze_backbone=True, freeze_bn=freeze_bn)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, weights[n])}
    assert moved == head
    buffers = dict(model.named_buffers())
    assert all(torch.equal(buffers[n], v) for n, v in stats.items()) == freeze_bn


def test_fit_records_what_the_ema_did():
    """The effective decay (torchvision's adjustment) and the number of EMA updates: with
    fewer steps per epoch than ema_steps the update fires once per epoch (batch index 0)."""
    from fgvcbench.engine.train import ema_decay_for
    data = toy_data()
    recipe = Recipe(epochs=3, image_size=16, batch_size=8, lr=0.05, augment="flip", ema_steps=32, ema_decay=0.99)
    result = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=0)
    assert result.metrics["ema_updates"] == 3
    assert result.metrics["ema_decay_effective"] == pytest.approx(ema_decay_for(recipe))
    assert "ema_updates" not in fit(small_model(), data, recipe.replace(ema_steps=0), device=torch.device("cpu"),
                                    seed=0).metrics


def test_fit_updates_the_ema_as_torchvisions_train_py(monkeypatch):
    """torchvision's reference loop: update the EMA at batch indices i % ema_steps == 0, and
    while epoch < warmup epochs reset it after each update, so it copies the weights; after
    the warmup it averages decay·ema + (1 − decay)·weights. The AveragedModel fit builds is
    watched: every update's weights and count are recorded, and the EMA's end state must
    be the average recomputed by hand from them."""
    from fgvcbench.engine import train as engine
    data = toy_data()                       # 24 training images: 3 batches of 8 per epoch
    recipe = Recipe(epochs=3, image_size=16, batch_size=8, lr=0.05, augment="flip", warmup_epochs=1,
                    ema_steps=2, ema_decay=0.5, ema_adjust=False)
    updates, made = [], []
    real = engine._ema_model

    def watched(model, recipe, world_size=1):
        ema = real(model, recipe, world_size)
        update = ema.update_parameters

        def record(m):
            before = int(ema.n_averaged)
            update(m)
            updates.append((before, {n: p.detach().clone() for n, p in m.named_parameters()}))
        ema.update_parameters = record
        made.append(ema)
        return ema
    monkeypatch.setattr(engine, "_ema_model", watched)
    result = fit(small_model(), data, recipe, device=torch.device("cpu"), seed=0)
    # batches 0 and 2 of each epoch; the warmup epoch's two updates are each reset to a copy
    assert [n for n, _ in updates] == [0, 0, 0, 1, 2, 3] and result.metrics["ema_updates"] == 6
    expected = None
    for n, weights in updates:
        expected = dict(weights) if n == 0 else {k: 0.5 * expected[k] + 0.5 * w for k, w in weights.items()}
    (ema,) = made
    for name, param in ema.module.named_parameters():
        assert torch.allclose(param, expected[name], atol=1e-6), name
    assert not all(torch.equal(expected[k], updates[-1][1][k]) for k in expected)   # an average, not a copy


def test_recipe_validation_lists_problems():
    problems = dict(Recipe(epochs=0, lr=-1, augment="magic", label_smoothing=2).validate())
    assert set(problems) == {"epochs", "lr", "augment", "label_smoothing"}
    assert "trivial_augment" in problems["augment"]
    assert math.isclose(Recipe().lr, 0.01)


def test_rotation_matches_torchvision_rotate_and_leaves_other_seeds_alone():
    """rotation_degrees: RandomRotation(±d) before the crop, as torchvision's rotate with the
    drawn angle (zero fill); 0 draws nothing, so earlier seeds' crops stay as they were."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, 8:24, 10:50] = 255.0
    img[:, :, 40:60, 40:48] = 128.0
    g = torch.Generator().manual_seed(3)
    replay = torch.Generator()
    replay.set_state(g.get_state())
    out = random_resized_crop_flip(img, 64, 1.0, False, g, rotation=40)   # the whole image, no flip
    for shape in ((1, 10), (1, 10), (1,), (1,)):                           # the crop's draws
        torch.rand(*shape, generator=replay)
    angle = float((torch.rand(1, generator=replay) * 2 - 1) * 40)
    assert abs(angle) > 5
    ref = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
    assert (out - ref).abs().max() < 0.01
    assert out[0, :, 0, 0].eq(0).all()                                     # an uncovered corner is black
    x = torch.rand(3, 3, 48, 48) * 255
    plain = random_resized_crop_flip(x, 32, 0.3, True, torch.Generator().manual_seed(1))
    assert torch.equal(plain, random_resized_crop_flip(x, 32, 0.3, True, torch.Generator().manual_seed(1),
                                                       rotation=0.0))


def test_rotation_in_both_pipelines_and_in_run_ids():
    from fgvcbench.data.classic import classic_transform
    from fgvcbench.spec import RunSpec
    names = [type(t).__name__ for t in classic_transform(Recipe(rotation_degrees=30), (0, 0, 0), (1, 1, 1),
                                                         train=True).transforms]
    assert names[:2] == ["RandomRotation", "RandomResizedCrop"]
    assert "RandomRotation" not in [type(t).__name__ for t in classic_transform(Recipe(), (0, 0, 0), (1, 1, 1),
                                                                                 train=True).transforms]
    aug = BatchAugmenter(Recipe(image_size=32, rotation_degrees=30), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"),
                         torch.Generator().manual_seed(0))
    assert aug.train(torch.full((4, 3, 40, 40), 255, dtype=torch.uint8)).shape == (4, 3, 32, 32)
    spec = dict(suite="s", dataset={"name": "cub"}, backbone={"name": "r"}, method="m", variant="default", seed=0,
                scale="smoke")
    plain = RunSpec(**spec, recipe=Recipe().to_dict())
    assert "rotation_degrees" not in plain.identity()["recipe"]            # a field added later: ids kept
    assert "stop_on" not in Recipe().to_dict() and Recipe(**Recipe().to_dict()) == Recipe()   # config keys too
    rotated = RunSpec(**spec, recipe=Recipe(rotation_degrees=30).to_dict())
    assert rotated.run_id != plain.run_id and rotated.identity()["recipe"]["rotation_degrees"] == 30
    assert Recipe(rotation_degrees=200).validate() == [("rotation_degrees", "must be in [0, 180], got 200")]


def test_flip_rate_and_mixup_cutmix_follow_torchvision_v2_definitions():
    """Horizontal flip with p = ½ per sample; MixUp: x̃ = λx + (1−λ)x′, λ ~ Beta(α, α);
    CutMix: a box of side √(1−λ)·(H, W) centred on a uniform pixel, clipped to the image,
    λ corrected to 1 − box area / image area (torchvision.transforms.v2.MixUp / CutMix);
    with both on, each batch one of the two with probability ½ (the article's setting)."""
    from scipy import stats

    from fgvcbench.engine.augment import random_resized_crop_flip
    half = torch.zeros(2000, 1, 8, 8)
    half[..., 4:] = 1.0                                           # left dark, right bright
    out = random_resized_crop_flip(half, 8, 1.0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = out[:, 0, :, :4].mean((1, 2)) > out[:, 0, :, 4:].mean((1, 2))
    assert abs(flipped.float().mean().item() - 0.5) < 0.04        # 2000 coins: ±0.011 std
    assert torch.equal(out[~flipped], half[~flipped]) and torch.equal(out[flipped], half[flipped].flip(-1))

    n, y = 4, torch.arange(4)
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 10, 12).contiguous()   # pixel = source
    g = torch.Generator().manual_seed(7)
    lams, kinds = [], []
    for _ in range(1500):
        mixed, soft = mix_batch(ids, y, n, Recipe(mixup_alpha=0.4), g)
        assert torch.allclose(mixed[:, 0].amax((1, 2)), mixed[:, 0].amin((1, 2)))   # a whole-image blend, no box
        paired = soft.max(1).values < 1                            # samples whose partner is another one
        if not paired.any():
            continue
        i = int(paired.nonzero()[0])
        lam = soft[i, i].item()
        j = int(soft[i].index_fill(0, torch.tensor([i]), -1).argmax())
        assert mixed[i, 0, 0, 0].item() == pytest.approx(lam * i + (1 - lam) * j, abs=1e-5)
        assert torch.allclose(soft[paired, y[paired]], torch.full((int(paired.sum()),), lam))   # one λ per batch
        lams.append(lam)
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3

    for _ in range(300):
        mixed, soft = mix_batch(ids, y, n, Recipe(cutmix_alpha=1.0), g)
        for i in range(n):
            pasted = mixed[i, 0] != i
            if pasted.any():                                       # one axis-aligned box from one partner
                rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
                box = pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
                assert box.all() and mixed[i, 0][pasted].unique().numel() == 1
            # the label weight is the area actually kept (torchvision's λ correction)
            assert soft[i, i].item() == pytest.approx(1 - pasted.float().mean().item(), abs=1e-6)

    both = Recipe(mixup_alpha=1.0, cutmix_alpha=1.0)
    for _ in range(400):
        mixed, _ = mix_batch(ids, y, n, both, g)
        blend = (mixed[:, 0] != mixed[:, 0].round()).any().item()   # a mixup pixel is between two ids
        kinds.append(blend)
    assert 0.42 < sum(kinds) / len(kinds) < 0.58


@pytest.mark.parametrize("pipeline_len, batch, steps", [(9, 8, 1), (10, 8, 2), (8, 8, 1), (17, 8, 2)])
def test_the_schedule_counts_the_batches_an_epoch_really_takes(pipeline_len, batch, steps):
    """A last batch of one image is skipped (BatchNorm): the schedule's steps per epoch are
    the batches trained, so `lr_step: epoch` moves the lr on the epochs' boundaries —
    torchvision's per-epoch warmup values, whatever the remainder."""
    data = toy_data()
    data = dataclasses.replace(data, train=TensorSplit(data.train.images[:pipeline_len],
                                                       data.train.labels[:pipeline_len],
                                                       data.train.index[:pipeline_len]))
    recipe = Recipe(epochs=4, image_size=16, batch_size=batch, lr=1.0, augment="none", warmup_epochs=2,
                    warmup_start_factor=0.01, lr_step="epoch")
    totals, lrs = [], []
    model = small_model()
    real_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", step)
        fit(model, data, recipe, device=torch.device("cpu"), seed=0, on_batch=lambda done, total: totals.append(total))
    assert set(totals) == {steps} and len(lrs) == 4 * steps
    per_epoch = [lrs[e * steps:(e + 1) * steps] for e in range(4)]
    assert [sorted(set(epoch)) for epoch in per_epoch] == [[pytest.approx(v)] for v in (0.01, 0.505, 1.0, 1.0)]


def test_accuracy_is_counted_exactly_so_top1_and_per_class_of_a_balanced_set_print_alike():
    from fgvcbench.report.stats import fixed
    labels = torch.arange(8).repeat_interleave(50)                     # 8 classes × 50 images
    logits = torch.zeros(400, 8)
    right = torch.zeros(400, dtype=torch.bool)
    right[torch.arange(0, 400, 8)[:49]] = True                         # 49 correct, spread over the classes
    logits[right, labels[right]] = 1.0
    logits[~right, (labels[~right] + 1) % 8] = 1.0
    m = accuracy_metrics(logits, labels, 8)
    assert m["top1"] == 12.25 and fixed(m["mean_class_acc"]) == fixed(m["top1"]) == "12.25"
    assert m["mean_class_acc"] == pytest.approx(12.25, abs=1e-12)    # float32 was 1e-7 off

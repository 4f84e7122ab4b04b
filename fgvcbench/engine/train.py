"""The training loop every method shares.

``fit`` trains a classifier on :class:`~fgvcbench.data.pipeline.TensorData` under a
:class:`~fgvcbench.engine.recipe.Recipe`: SGD/Nesterov or AdamW, step or cosine schedule
after a linear warmup (moved every iteration, or once per epoch with lr_step: epoch),
label smoothing, mixup/cutmix, EMA, bf16 autocast and channels_last on CUDA, and early
stopping on the validation split.
The reported ``top1`` is the test accuracy at the epoch selected on validation; the
last epoch's test accuracy is reported next to it (``top1_last``). Test images are
never used to select anything.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.data.pipeline import TensorData, TensorSplit
from fgvcbench.engine.augment import BatchAugmenter, mix_batch
from fgvcbench.engine.recipe import Recipe
from fgvcbench.engine.transfer import gather_rows, resident, to_device
from fgvcbench.errors import DivergedError, UserError, kind_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order/augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_multiplier(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-iteration lr factor: linear warmup from ``warmup_start_factor``, then the main
    schedule over the remaining epochs (as torchvision's reference SequentialLR). With
    ``lr_step: epoch`` the factor holds for a whole epoch at its value at the epoch's start,
    as torchvision's train.py steps its schedulers once per epoch."""
    warm = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch
    per_epoch = recipe.lr_step == "epoch" and steps_per_epoch > 0

    def factor(step: int) -> float:
        if per_epoch:
            step -= step % steps_per_epoch
        if step < warm:
            return recipe.warmup_start_factor + (1 - recipe.warmup_start_factor) * step / warm
        after = step - warm
        if recipe.scheduler == "cosine":
            span = max(total - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(after, span) / span))
        if recipe.scheduler == "step":
            return recipe.gamma ** ((after // steps_per_epoch) // recipe.step_size)
        return 1.0

    return factor


SCHEDULE_FIELDS = ("scheduler", "step_size", "gamma", "warmup_epochs", "warmup_start_factor", "lr_step")
INERT_CHECK_EPOCHS = 10_000   # inert_change compares lr schedules step by step up to this budget


def inert_change(before: Recipe, after: Recipe, world_size: int = 1) -> str | None:
    """Why ``after`` trains no differently from ``before`` in effect, or None: the fields
    that differ have no effect under the others' values (``Recipe.effective``), or one of
    two cases a recipe step meets at a small budget (the article tuned its steps for 600 epochs): the
    fields that differ are schedule fields and the lr factor is the same at every iteration
    (``cosine`` after 5 warmup epochs of 5); or an EMA whose decay ``ema_adjust`` brings to 0,
    which holds the weights of its last update rather than an average. Beyond
    ``INERT_CHECK_EPOCHS`` (a budget no step is idle at) nothing is said."""
    if before.validate() or after.validate() or after.epochs > INERT_CHECK_EPOCHS:
        return None   # a recipe no run can use says so itself, when it runs
    epochs = f"{after.epochs} epoch{'s' if after.epochs != 1 else ''}"
    changed = list(after.changes_from(before))
    if changed and before.effective() == after.effective():
        why = {**before.inert_fields(), **after.inert_fields()}
        reasons = "; ".join(dict.fromkeys(why[name] for name in changed if name in why))
        return (f"it changes {', '.join(changed)}, which {'has' if len(changed) == 1 else 'have'} no effect here "
                f"({reasons}), so both sides train alike")
    if changed and set(changed) <= set(SCHEDULE_FIELDS) and before.epochs == after.epochs:
        same = True
        for spe in (1, 3, 8):   # steps per epoch: the warmup and the step boundaries fall between them
            a, b = lr_multiplier(before, spe), lr_multiplier(after, spe)
            if any(a(i) != b(i) for i in range(before.epochs * spe)):
                same = False
                break
        if same:
            return (f"it changes {', '.join(changed)}, but over {epochs} (warmup {after.warmup_epochs}) the "
                    f"learning rate is the same at every step, so both sides train alike — give more epochs "
                    f"(a suite's train: epochs:)")
    if after.ema_steps > 0 and after.ema_adjust and ema_decay_for(after, world_size) == 0.0 and (
            before.ema_steps == 0 or ema_decay_for(before, world_size) != 0.0):
        return (f"its EMA decay adjusts to 0 (torchvision's rule: batch {after.batch_size} × every "
                f"{after.ema_steps} steps over {epochs}), so the EMA is the weights at its last "
                f"update, not an average — give more epochs, or a step that keeps the decay as given "
                f"(ema_adjust: false, e.g. ema_unadjusted)")
    return None


NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def norm_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters of normalisation layers (torchvision's
    ``split_normalization_params``: BatchNorm, LayerNorm, GroupNorm, InstanceNorm, LRN)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}


def build_optimizer(params: list[nn.Parameter] | list[tuple[str, nn.Parameter]], recipe: Recipe,
                    model: nn.Module | None = None):
    """SGD (Nesterov) or AdamW. With ``no_decay_norm`` and ``model`` given, the parameters of
    normalisation layers get no weight decay (torchvision's ``--norm-weight-decay 0``)."""
    named = [p for p in params]
    plain = [p[1] if isinstance(p, tuple) else p for p in named]
    if recipe.no_decay_norm and model is not None:
        norm = norm_parameters(model)
        groups = [{"params": [p for p in plain if id(p) not in norm], "weight_decay": recipe.weight_decay},
                  {"params": [p for p in plain if id(p) in norm], "weight_decay": 0.0}]
    else:
        groups = [{"params": plain, "weight_decay": recipe.weight_decay}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0)


def place_model(model: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in the layout the engine feeds it: channels_last on
    CUDA (``recipe.channels_last``). Idempotent, so every entry point can call it. A model
    with float64 weights is refused with one line (the engine feeds float32 images)."""
    double = next((name for name, p in model.named_parameters() if p.dtype == torch.float64), None)
    if double is not None:
        raise UserError(f"the model has float64 weights ({double!r}) and the engine feeds float32 images — build it "
                        "in float32: model.float(), or torch.from_numpy(array).float() where its weights come from NumPy")
    model.to(device)
    if device.type == "cuda" and recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def model_layout(x: torch.Tensor, recipe: Recipe, device: torch.device) -> torch.Tensor:
    """A batch in the memory layout the model was put in: channels_last on CUDA (``recipe.channels_last``)."""
    if device.type == "cuda" and recipe.channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def predict(model: nn.Module, split: TensorSplit, augmenter: BatchAugmenter, recipe: Recipe,
            device: torch.device, pre_logits: bool = False,
            output_fn: Callable[[Any], torch.Tensor] | None = None) -> torch.Tensor:
    """Logits (or pooled features with ``pre_logits``) of a split's test-time view.
    ``output_fn`` maps a model's raw output to the logits that count (a multi-head model).
    The model is moved to ``device`` first (a plugin may hand over a model it just built)."""
    place_model(model, recipe, device)
    model.eval()
    out = []
    autocast = device.type == "cuda" and recipe.amp
    for start in range(0, len(split), recipe.eval_batch_size):
        x = augmenter.eval(split.images[start:start + recipe.eval_batch_size])
        x = model_layout(x, recipe, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            if pre_logits:
                y = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                y = as_logits(model(x), output_fn)
        out.append(y.float())   # kept on the device: one copy to the host at the end, not one per batch
    if not out:
        return torch.empty(0)
    return torch.cat(out).cpu()


def as_logits(output: Any, output_fn: Callable[[Any], torch.Tensor] | None = None) -> torch.Tensor:
    """``output_fn(output)`` (or the output itself) where it is a tensor; else a UserError
    that says what the model or output_fn returned and how to give the logits."""
    if output_fn is not None:
        output = output_fn(output)
        if not isinstance(output, torch.Tensor):
            raise UserError(f"output_fn returned {kind_of(output)}, not a tensor of logits — return the logits "
                            "[images, classes] from the model's output it is given")
    elif not isinstance(output, torch.Tensor):
        raise UserError(f"the model's forward returned {kind_of(output)}, not a tensor of logits — return the logits "
                        "alone (as timm's models do), or pass ctx.fit output_fn= (and criterion=) to pick them")
    return output


def _loss_problem(loss: Any) -> str:
    """What is wrong with a criterion's return value for ``backward()``, or ``""``."""
    if not isinstance(loss, torch.Tensor):
        return (f"the criterion returned {type(loss).__name__} {loss!r:.40}, not a tensor — return the loss as a "
                "tensor computed from the model's output (e.g. F.cross_entropy(output, labels))")
    if loss.numel() != 1:
        return (f"the criterion returned a tensor of shape {list(loss.shape)}, not one number — reduce it "
                "(e.g. .mean()) to a scalar loss")
    if not loss.requires_grad:
        return ("the criterion's loss does not depend on the model's output (no gradient flows back) — compute it "
                "from the output it is given, without .item(), .detach() or torch.no_grad()")
    return ""


def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """top-1, top-5 and mean per-class accuracy, in percent."""
    if len(labels) == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class_acc": float("nan")}
    if logits.dim() != 2 or logits.shape != (len(labels), num_classes):
        raise UserError(f"scores of shape {list(logits.shape)} for {len(labels)} images of {num_classes} classes — "
                        f"the model (or output_fn) must give logits of shape [images, classes]")
    pred = logits.argmax(1)
    correct = pred.eq(labels)
    k = min(5, logits.shape[1])
    top5 = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(1)
    # from integer counts in float64: a float32 mean is off by ~1e-7 (12.250000238 for 49 of
    # 400), so top-1 and per-class accuracy of one balanced test set printed 10.88 and 10.87
    n = len(labels)
    hits = torch.bincount(labels[correct], minlength=num_classes)[:num_classes].tolist()
    totals = torch.bincount(labels, minlength=num_classes)[:num_classes].tolist()
    per_class = [h / t for h, t in zip(hits, totals) if t]
    return {"top1": 100.0 * int(correct.sum()) / n,
            "top5": 100.0 * int(top5.sum()) / n,
            "mean_class_acc": 100.0 * float(np.mean(per_class))}


@torch.no_grad()
def predict_loader(model: nn.Module, loader, recipe: Recipe, device: torch.device) -> torch.Tensor:
    """Logits over a classic DataLoader (the reference pipeline)."""
    place_model(model, recipe, device)
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        x = model_layout(x, recipe, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and recipe.amp):
            out.append(as_logits(model(x)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def _classic_loaders(data: TensorData, recipe: Recipe, mean, std, seed: int, world: int = 1, rank: int = 0) -> dict:
    """DataLoaders over the same train / val / test images the tensors hold; under
    torchrun the training loader reads this rank's shard (``DistributedSampler``), as the
    fast pipeline does, so an epoch is one pass over the data across the ranks."""
    from fgvcbench.data.classic import classic_loader
    src = data.source
    if src is None:
        raise ValueError("pipeline: classic needs the dataset's image lists (TensorData.source)")
    val_source = src.val if src.val is not None else src.train
    lists = {"train": src.train.subset(data.train.index), "val": val_source.subset(data.val.index),
             "test": src.test.subset(data.test.index)}
    return {name: classic_loader(images, recipe, mean, std, train=name == "train", seed=seed,
                                 crop_to_boxes=data.use_boxes or src.crop_to_boxes,   # as the tensors were cropped
                                 world=world if name == "train" else 1, rank=rank)
            for name, images in lists.items() if len(images)}


class RunningLoss:
    """A training loop's loss, summed on the device: reading it every step (``.item()``)
    would make the host wait for the GPU each time. ``add`` looks for NaN/inf every
    ``every`` steps (one wait) and ``mean`` reads the sum once, at the end of an epoch;
    either raises :class:`DivergedError` naming ``what`` and ``where``."""

    def __init__(self, device: torch.device, what: str = "training loss", where: str = "", every: int = 25):
        self.total = torch.zeros((), device=device)
        self.weight, self.steps, self.what, self.where, self.every = 0.0, 0, what, where, every

    def add(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        self.total += loss.detach().float() * weight
        self.weight += weight
        self.steps += 1
        if self.steps % self.every == 0 and not torch.isfinite(self.total):
            raise DivergedError(f"{self.what} is {self.total.item()} {self.where}, step {self.steps}".strip())

    def mean(self) -> float:
        value = (self.total / max(self.weight, 1.0)).item()
        if not math.isfinite(value):
            raise DivergedError(f"{self.what} is {value} {self.where}".strip())
        return value


@dataclass
class FitResult:
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    model: nn.Module | None = None
    test_predictions: torch.Tensor | None = None   # the selected model's test-set classes


def ema_decay_for(recipe: Recipe, world_size: int = 1) -> float:
    """The EMA decay actually used. With ``ema_adjust`` (torchvision's reference
    ``train.py``): alpha = (1 - decay) · world_size · batch_size · ema_steps / epochs,
    capped at 1, decay = 1 - alpha — so the averaging horizon follows the schedule."""
    if not recipe.ema_adjust:
        return recipe.ema_decay
    adjust = world_size * recipe.batch_size * recipe.ema_steps / recipe.epochs
    alpha = min(1.0, (1.0 - recipe.ema_decay) * adjust)
    return 1.0 - alpha


def _ema_model(model: nn.Module, recipe: Recipe, world_size: int = 1):
    if recipe.ema_steps <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay_for(recipe, world_size)),
                         use_buffers=True)


def epoch_order(n: int, repeats: int, generator: torch.Generator) -> torch.Tensor:
    """The sample order of one epoch. With ``repeats`` k > 1 (repeated augmentation, as
    torchvision's RASampler on one process): a random permutation with each index repeated
    k times in a row, cut to n samples — each drawn image is seen k times with different
    augmentations, and an epoch keeps its length."""
    order = torch.randperm(n, generator=generator)
    if repeats > 1:
        order = order.repeat_interleave(repeats)[:n]
    return order


def fit(model: nn.Module, data: TensorData, recipe: Recipe, *, device: torch.device, seed: int,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, freeze_backbone: bool = False, freeze_bn: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        criterion: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
        output_fn: Callable[[Any], torch.Tensor] | None = None) -> FitResult:
    """Train ``model`` on ``data.train``; select the epoch on ``data.val``; test on ``data.test``.

    A method with its own objective passes ``criterion(output, labels) -> loss`` (the
    training labels may then be any per-image tensor, e.g. ``[N, 2]`` coarse + fine) and
    ``output_fn(output) -> logits`` for what validation and test score. A criterion with a
    ``set_epoch(epoch)`` method is told each epoch's number (1-based) before it starts.

    ``freeze_backbone`` trains the classifier alone. With ``freeze_bn`` (default) the
    backbone also runs in eval mode, so its BatchNorm statistics stay as they are; with
    ``freeze_bn=False`` it stays in train mode, as a model whose weights are frozen only
    through ``requires_grad``: BatchNorm normalises with batch statistics and re-estimates
    its running statistics on the new data (FineRNet's released linear probe)."""
    if criterion is not None and (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0):
        raise ValueError("mixup/cutmix cannot be combined with a method's own criterion")
    if criterion is not None and recipe.pipeline == "classic":
        raise ValueError("pipeline: classic reads the dataset's own labels; a method's own criterion "
                         "needs pipeline: fast")
    from fgvcbench import distributed
    world, rank = distributed.world_size(), distributed.rank()
    generator = seed_everything(seed)   # the epoch order: the same on every rank
    # augmentation draws: the single-process stream, or one stream per rank under DDP
    aug_generator = generator if world == 1 else torch.Generator().manual_seed(seed * 7919 + rank + 1)
    place_model(model, recipe, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed shapes: let cuDNN pick its fastest kernels, as timm's train.py
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
        if head is None:
            raise ValueError("freeze_backbone needs a model with get_classifier()")
        for p in head.parameters():
            p.requires_grad_(True)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(named, recipe, model)
    # the batches an epoch really takes: a last batch of one image is skipped (BatchNorm), so
    # the schedule's epochs (lr_step: epoch above all) stay on the epochs' boundaries
    per_rank = math.ceil(len(data.train) / world)
    full, rest = divmod(per_rank, recipe.batch_size)
    steps_per_epoch = max(1, full + (1 if rest >= 2 or per_rank == 1 else 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(recipe, steps_per_epoch))
    train_model = torch.compile(model) if recipe.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = _ema_model(model, recipe, world)
    ema_updates = 0
    augmenter = BatchAugmenter(recipe, mean, std, device, aug_generator)
    autocast = device.type == "cuda" and recipe.amp
    use_soft = recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0

    loaders = _classic_loaders(data, recipe, mean, std, seed, world, rank) if recipe.pipeline == "classic" else None
    if loaders is None:
        # the fast pipeline's images on the GPU when they fit (else batches are gathered on the
        # host into pinned memory); validation runs every epoch, so its images too
        train_images, train_labels = resident(data.train.images, device), to_device(data.train.labels, device)
        eval_splits = {"val": TensorSplit(resident(data.val.images, device), data.val.labels, data.val.index),
                       "test": data.test}

    def train_batches(epoch_generator, epoch: int):
        if loaders is not None:  # the classic reference: per-sample transforms in workers
            sampler = loaders["train"].sampler
            if hasattr(sampler, "set_epoch"):   # under torchrun: this rank's shard, reshuffled each epoch
                sampler.set_epoch(epoch)
            for b, (x, y) in enumerate(loaders["train"]):
                if len(y) >= 2:
                    yield b, x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            return
        order = distributed.shard(epoch_order(len(data.train), recipe.repeated_augment, epoch_generator),
                                  rank, world)
        # one copy of the epoch's order per device, not one per batch
        rows_on_images, rows_on_device = to_device(order, train_images.device), to_device(order, device)
        for b, start in enumerate(range(0, len(order), recipe.batch_size)):
            end = min(start + recipe.batch_size, len(order))
            if end - start < 2 and len(order) > 1:
                continue  # a batch of one breaks BatchNorm; skip the remainder (the same on every rank)
            yield (b, augmenter.train(gather_rows(train_images, rows_on_images[start:end], device)),
                   train_labels[rows_on_device[start:end]])

    def logits_of(net: nn.Module, split: str) -> torch.Tensor:
        if loaders is not None:
            return predict_loader(net, loaders[split], recipe, device)
        return predict(net, eval_splits[split], augmenter, recipe, device, output_fn=output_fn)

    history: list[dict[str, Any]] = []
    best_val, best_epoch, best_state = -1.0, 0, None
    best_loss, best_loss_epoch = math.inf, 0   # for stop_on: loss (Lightning: strictly lower resets the wait)
    train_seconds, images_seen = 0.0, 0
    checked_loss = None   # a method's criterion: its first loss is checked, once
    eval_model = lambda: ema.module if ema is not None else model  # noqa: E731
    for epoch in range(1, recipe.epochs + 1):
        if criterion is not None and hasattr(criterion, "set_epoch"):
            criterion.set_epoch(epoch)  # an objective that changes by epoch (e.g. alternating terms)
        model.train()
        if freeze_backbone and freeze_bn:
            model.eval()  # frozen BN statistics; the linear head has no train/eval difference
        t0 = time.perf_counter()
        epoch_lr = optimizer.param_groups[0]["lr"]   # the history's lr: the epoch's first step's, not the next epoch's
        running = RunningLoss(device, "training loss", f"at epoch {epoch}")
        for b, x, y in train_batches(generator, epoch):
            x = model_layout(x, recipe, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                if use_soft:
                    x, soft = mix_batch(x, y, data.num_classes, recipe, aug_generator)
                    logits = as_logits(train_model(x))
                    loss = F.cross_entropy(logits.float(), soft, label_smoothing=recipe.label_smoothing)
                elif criterion is not None:
                    loss = criterion(train_model(x), y)
                    if checked_loss is None:   # once: what backward() needs, said plainly
                        checked_loss = _loss_problem(loss)
                        if checked_loss:
                            raise UserError(checked_loss)
                else:
                    logits = as_logits(train_model(x))
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for _, p in named], recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None and b % recipe.ema_steps == 0:  # torchvision: batch index i % steps == 0
                ema.update_parameters(model)
                ema_updates += 1
                if epoch <= recipe.warmup_epochs:
                    # torchvision resets the average during warmup: the EMA copies the weights
                    ema.n_averaged.fill_(0)
            running.add(loss)   # read back only every 25 steps and at the epoch's end
            images_seen += len(y) * world
            if on_batch is not None:
                on_batch(b + 1, steps_per_epoch)
        if world > 1:  # BN statistics: rank 0's for everyone (DDP syncs them only at each forward)
            import torch.distributed as dist
            for buffer in list(model.buffers()) + (list(ema.module.buffers()) if ema is not None else []):
                dist.broadcast(buffer, src=0)
        train_loss = running.mean()   # waits for the epoch's last step
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss,
                               "lr": epoch_lr, "seconds": epoch_seconds}
        if len(data.val):
            val_logits = logits_of(eval_model(), "val")
            val = accuracy_metrics(val_logits, data.val.labels, data.num_classes)
            val_loss = float(F.cross_entropy(val_logits.float(), data.val.labels.to(val_logits.device)))
            # rank 0 decides selection and stopping for every rank (one collective for both)
            val["top1"], val_loss = distributed.broadcast((val["top1"], val_loss))
            row["val_top1"], row["val_loss"] = val["top1"], val_loss
            if row["val_loss"] < best_loss:
                best_loss, best_loss_epoch = row["val_loss"], epoch
            if val["top1"] > best_val:
                best_val, best_epoch = val["top1"], epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in eval_model().state_dict().items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        watched = best_loss_epoch if recipe.stop_on == "loss" else best_epoch
        if (recipe.patience is not None and watched and epoch - watched >= recipe.patience
                and epoch >= recipe.min_epochs):
            break

    final = eval_model()
    test_logits = logits_of(final, "test")
    last = accuracy_metrics(test_logits, data.test.labels, data.num_classes)
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        final.load_state_dict(best_state)
        test_logits = logits_of(final, "test")
        selected = accuracy_metrics(test_logits, data.test.labels, data.num_classes)
    else:
        selected = last
        best_epoch = best_epoch or history[-1]["epoch"]
    metrics = {"top1": selected["top1"], "top5": selected["top5"],
               "mean_class_acc": selected["mean_class_acc"], "top1_last": last["top1"],
               "val_top1": best_val if best_val >= 0 else float("nan"),
               "best_epoch": best_epoch, "epochs_run": history[-1]["epoch"]}
    if ema is not None:   # what the EMA really did: its per-update decay and how often it ran
        metrics.update(ema_decay_effective=ema_decay_for(recipe, world), ema_updates=ema_updates)
    return FitResult(metrics=metrics, history=history, train_seconds=train_seconds,
                     images_seen=images_seen, model=final,
                     test_predictions=test_logits.argmax(1) if test_logits.numel() else None)

"""Metric learning with triplets and hard negatives, on pytorch-metric-learning.

Losses, miners, the P×K sampler and the retrieval metrics are the library's
(``TripletMarginLoss``, ``BatchHardMiner``, ``TripletMarginMiner``, ``MPerClassSampler``,
``AccuracyCalculator``); the batches it picks are augmented on the device by the engine.

Variants:
- ``batch_all``: no miner, every valid triplet, averaged over the non-zero losses
  (the loss's ``AvgNonZeroReducer``);
- ``batch_hard`` (default): ``BatchHardMiner``, the hardest positive and negative per anchor;
- ``semihard``: ``TripletMarginMiner(type_of_triplets="semihard")``;
- ``report``: the seed report's setting — margin 0.2, hard negatives, SGD lr 1e-4,
  weight decay 0.05, batch 16, 10 epochs, constant lr. The report states no momentum;
  we use 0.9 without Nesterov (plain ``torch.optim.SGD`` would be 0: our choice, stated);
- ``joint``: cross-entropy on the backbone's classifier + λ·triplet on the embedding.

Distances are Euclidean on the embeddings, L2-normalised first when ``normalize`` is true
(pytorch-metric-learning's ``LpDistance(normalize_embeddings=...)`` for the loss and the
miners). ``soft_margin: true`` is the soft-margin triplet loss of Hermans et al.,
softplus(d_ap − d_an), i.e. ``smooth_loss`` with the margin set to 0.

The training loop follows the suite's recipe: optimizer (SGD/Nesterov or AdamW, with
``no_decay_norm``), lr schedule with warmup (moved as the recipe's lr_step says, as the engine), label
smoothing of the joint variant's cross-entropy; recipe knobs a triplet loop cannot honour
(mixup/cutmix, EMA, repeated augmentation, the classic pipeline, ``compile``, ``stop_on:
loss``) are refused with a message.
The P×K sampler (pytorch-metric-learning's ``MPerClassSampler``, which draws from NumPy)
is driven by a NumPy generator seeded from the run's seed, so a seed gives the same batches.

``top1`` in the record is 1-NN classification accuracy of test embeddings against the
training embeddings; retrieval metrics (precision@1, R-precision, MAP@R) rank the test set
against itself. The epoch is selected on validation precision@1 (where no validation class
has two images: 1-NN accuracy of validation against training); ``patience`` and
``min_epochs`` stop the loop early as they stop the engine's. Neighbours and class means
are found with the distance the loss trained: cosine when ``normalize`` is true (the same
ranking as Euclidean on the unit vectors), Euclidean on the raw embeddings when it is
false; ``intra_cosine``/``inter_cosine`` are cosine either way.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import (Method, RunContext, RunningLoss, UserError, build_optimizer, gather_rows, hookimpl,
                           lr_multiplier, model_layout, place_model, resident, to_device)

from .evaluate import cosine_similarities, knn_accuracy, nearest_class_mean_accuracy, retrieval_metrics, tsne_plot

MINERS = ("none", "batch_hard", "all", "semihard", "hard")


class EmbeddingNet(nn.Module):
    """Backbone → pooled features → linear embedding (optionally L2-normalised); the
    backbone's own classifier stays for the joint variant."""

    def __init__(self, backbone: nn.Module, dim: int, normalize: bool):
        super().__init__()
        self.backbone, self.normalize = backbone, normalize
        self.embed = nn.Linear(backbone.num_features, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        e = self.embed(pooled)
        return (F.normalize(e, dim=1) if self.normalize else e), self.backbone.get_classifier()(pooled)


def build_loss_and_miner(params: dict):
    """The loss and miner of ``params["miner"]``. Batch-all (no miner) averages over the
    triplets with a non-zero loss (the library's ``AvgNonZeroReducer``, the issue's
    "non-zero average"); batch-hard averages over every anchor, as Hermans et al. define
    it (``MeanReducer``: an anchor whose hardest triplet is already satisfied counts as 0,
    so the loss does not grow as training succeeds)."""
    from pytorch_metric_learning import losses, miners, reducers
    from pytorch_metric_learning.distances import LpDistance
    distance = lambda: LpDistance(normalize_embeddings=params["normalize"])  # noqa: E731
    # soft margin (Hermans et al.): softplus(d_ap - d_an), no margin term
    margin = 0.0 if params["soft_margin"] else params["margin"]
    reducer = reducers.MeanReducer() if params["miner"] == "batch_hard" else reducers.AvgNonZeroReducer()
    loss = losses.TripletMarginLoss(margin=margin, smooth_loss=params["soft_margin"], distance=distance(),
                                    reducer=reducer)
    if params["miner"] == "none":
        return loss, None
    if params["miner"] == "batch_hard":
        return loss, miners.BatchHardMiner(distance=distance())
    return loss, miners.TripletMarginMiner(margin=params["margin"], type_of_triplets=params["miner"],
                                           distance=distance())


@contextlib.contextmanager
def numpy_stream(rng):
    """Run pytorch-metric-learning's NumPy draws (``MPerClassSampler``) from ``rng``, then
    put its module-level generator back."""
    from pytorch_metric_learning.utils import common_functions as c_f
    saved, c_f.NUMPY_RANDOM = c_f.NUMPY_RANDOM, rng
    try:
        yield
    finally:
        c_f.NUMPY_RANDOM = saved


UNSUPPORTED = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "ema_steps": 0, "repeated_augment": 1, "pipeline": "fast",
               "stop_on": "top1", "compile": False}


def check_recipe(recipe) -> None:
    idle = recipe.inert_fields()   # e.g. stop_on with patience: null, which stops nothing
    for name, plain in UNSUPPORTED.items():
        if getattr(recipe, name) != plain and name not in idle:
            raise UserError(f"metric_learning: recipe {name}: {json.dumps(getattr(recipe, name))} is not supported "
                            f"by the triplet loop — set {name}: {json.dumps(plain)} for this method (a per-method "
                            f"`train:` in the suite)")


@torch.no_grad()
def embed_split(ctx: RunContext, net: EmbeddingNet, images: torch.Tensor, recipe, batch: int = 256) -> torch.Tensor:
    """Embeddings of the test-time view of ``images`` as the loop's ``recipe`` (the run's
    with ``recipe_overrides``) sets it: size, crop, layout, amp."""
    net.eval()
    aug = ctx.augmenter(recipe)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ctx.device.type == "cuda" and recipe.amp):
        out = [net(model_layout(aug.eval(images[i:i + batch]), recipe, ctx.device))[0].float().cpu()
               for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.empty(0)


def loop_recipe(p: dict, recipe):
    """The recipe the triplet loop trains with: the run's, with ``recipe_overrides`` on top."""
    try:
        return recipe.override(p["recipe_overrides"])
    except ValueError as exc:
        raise UserError(f"metric_learning recipe_overrides: {exc}") from None


def check_params(p: dict, recipe) -> None:
    """Values no run can use (called by the suite loader before any run starts)."""
    for key, low in (("embedding_dim", 1), ("m_per_class", 1), ("knn_k", 1)):
        if p[key] < low:
            raise UserError(f"metric_learning {key}: {p[key]!r} — use an integer >= {low}")
    for key in ("margin", "ce_weight", "triplet_weight"):
        if p[key] < 0:
            raise UserError(f"metric_learning {key}: {p[key]!r} — use a number >= 0")
    check_recipe(loop_recipe(p, recipe))


def run_metric_learning(ctx: RunContext) -> dict:
    from pytorch_metric_learning import samplers
    p = ctx.params
    recipe = loop_recipe(p, ctx.recipe)
    data = ctx.load_data(image_size=recipe.data_size, val_fraction=recipe.val_fraction,
                         crop_extent=recipe.crop_extent)
    backbone = ctx.create_model(data.num_classes)
    net = place_model(EmbeddingNet(backbone, p["embedding_dim"], p["normalize"]), recipe, ctx.device)
    metric = "cosine" if p["normalize"] else "l2"   # neighbours by the distance the loss trained
    loss_fn, miner = build_loss_and_miner(p)
    before = embed_split(ctx, net, data.test.images, recipe)

    labels = data.train.labels
    k = p["m_per_class"]
    batch_size = max(k * 2, recipe.batch_size - recipe.batch_size % k)   # P×K: a multiple of K
    classes = len(set(labels.tolist()))
    if classes < 2:
        raise UserError("metric learning needs at least 2 training classes (a triplet's negative comes from "
                        "another class) — use a dataset with more classes")
    if batch_size > k * classes:   # P cannot exceed the classes there are: the sampler would refuse
        ctx.notes["batch_size"] = {"asked": recipe.batch_size, "used": k * classes,
                                   "why": f"{classes} classes × m_per_class {k}"}
        batch_size = k * classes
    sampler = samplers.MPerClassSampler(labels.tolist(), m=k, batch_size=batch_size,
                                        length_before_new_iter=max(len(labels), batch_size))
    opt = build_optimizer([(n, q) for n, q in net.named_parameters() if q.requires_grad], recipe, net)
    steps_per_epoch = max(1, len(sampler) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(recipe, steps_per_epoch))
    aug = ctx.augmenter(recipe, seed_offset=7)
    import numpy as np
    sampler_rng = np.random.RandomState(ctx.seed % 2**32)   # MPerClassSampler's draws, seeded per run
    autocast = ctx.device.type == "cuda" and recipe.amp
    train_images, train_labels = resident(data.train.images, ctx.device), to_device(labels, ctx.device)
    best, best_state, since_best = -1.0, None, 0
    for epoch in range(1, recipe.epochs + 1):
        net.train()
        started = time.perf_counter()
        epoch_lr = opt.param_groups[0]["lr"]   # the epoch's first step's lr, as the engine's history
        with numpy_stream(sampler_rng):
            order = torch.tensor(list(iter(sampler)))
        # the epoch's order copied once to each device; losses summed there (no per-step wait)
        rows_on_images, rows_on_device = to_device(order, train_images.device), to_device(order, ctx.device)
        running = RunningLoss(ctx.device, "metric-learning loss", f"at epoch {epoch}")
        for start in range(0, len(order) - batch_size + 1, batch_size):
            end = start + batch_size
            x = model_layout(aug.train(gather_rows(train_images, rows_on_images[start:end], ctx.device)), recipe,
                             ctx.device)
            y = train_labels[rows_on_device[start:end]]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                emb, logits = net(x)
            triplet = loss_fn(emb.float(), y, miner(emb.float(), y) if miner is not None else None)
            loss = p["triplet_weight"] * triplet
            if p["ce_weight"] > 0:
                loss = loss + p["ce_weight"] * F.cross_entropy(logits.float(), y,
                                                               label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
            opt.step()
            schedule.step()
            running.add(loss)
            ctx.images_seen += batch_size
        row = {"epoch": epoch, "train_loss": running.mean(),   # waits for the last step
               "lr": epoch_lr}
        ctx.train_seconds += time.perf_counter() - started
        stop = False
        if len(data.val) > 1:
            val_emb = embed_split(ctx, net, data.val.images, recipe)
            score = row["val_precision_at_1"] = retrieval_metrics(val_emb, data.val.labels, metric)["precision_at_1"]
            if score != score:   # no validation class has two images: 1-NN of validation against training
                score = row["val_knn1_accuracy"] = knn_accuracy(
                    val_emb, data.val.labels, embed_split(ctx, net, data.train.images, recipe), data.train.labels,
                    1, metric)["knn1_accuracy"]
            if score > best:
                best, best_state, since_best = score, copy.deepcopy(net.state_dict()), 0
                row["selected"] = True
            else:
                since_best += 1
            # early stopping as the engine's: `patience` epochs without a better selection score
            stop = recipe.patience is not None and since_best >= recipe.patience and epoch >= recipe.min_epochs
            if stop and epoch < recipe.epochs:
                row["early_stop"] = True
        ctx.history.append(row)
        if stop:
            break
    last_top1 = None
    if best_state is not None and not ctx.history[-1].get("selected"):   # the last epoch's 1-NN, then the best's
        last_top1 = knn_accuracy(embed_split(ctx, net, data.test.images, recipe), data.test.labels,
                                 embed_split(ctx, net, data.train.images, recipe), data.train.labels, 1,
                                 metric)["knn1_accuracy"]
        net.load_state_dict(best_state)

    test_emb = embed_split(ctx, net, data.test.images, recipe)
    train_emb = embed_split(ctx, net, data.train.images, recipe)
    metrics = {**retrieval_metrics(test_emb, data.test.labels, metric),
               **knn_accuracy(test_emb, data.test.labels, train_emb, data.train.labels, p["knn_k"], metric),
               "ncm_accuracy": nearest_class_mean_accuracy(test_emb, data.test.labels, train_emb, data.train.labels,
                                                           data.num_classes, metric),
               **cosine_similarities(test_emb, data.test.labels),
               "before_precision_at_1": retrieval_metrics(before, data.test.labels, metric)["precision_at_1"],
               "best_epoch": max((r["epoch"] for r in ctx.history if r.get("selected")), default=recipe.epochs)}
    metrics["top1"] = metrics["knn1_accuracy"]
    # the leaderboard's "last top-1" and "per-class" columns, as every classifier fills them
    metrics["top1_last"] = metrics["top1"] if last_top1 is None else last_top1
    metrics["mean_class_acc"] = metrics["knn1_mean_class_accuracy"]
    torch.save({"embeddings": test_emb, "labels": data.test.labels}, ctx.artifact_dir / "test_embeddings.pt")
    if p["tsne"]:
        tsne_plot(before, test_emb, data.test.labels, ctx.artifact_dir / "tsne.png", ctx.seed,
                  class_names=list(data.class_names))
    return metrics


METRIC_LEARNING = Method(
    name="metric_learning",
    run=run_metric_learning,
    description="triplet loss with hard-negative mining (pytorch-metric-learning); kNN / retrieval evaluation",
    params={"miner": "batch_hard", "margin": 0.2, "soft_margin": False, "embedding_dim": 128, "normalize": True,
            "m_per_class": 4, "ce_weight": 0.0, "triplet_weight": 1.0, "knn_k": 5, "tsne": True,
            "recipe_overrides": {}},
    param_choices={"miner": MINERS},
    check=check_params,
    variants={"default": {}, "batch_hard": {}, "batch_all": {"miner": "none"}, "semihard": {"miner": "semihard"},
              "report": {"miner": "batch_hard", "margin": 0.2,
                         "recipe_overrides": {"optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "nesterov": False,
                                              "weight_decay": 0.05, "batch_size": 16, "epochs": 10,
                                              "scheduler": "none", "warmup_epochs": 0}},
              "joint": {"ce_weight": 1.0, "triplet_weight": 1.0}},
)


@hookimpl
def fgvcbench_methods():
    return [METRIC_LEARNING]

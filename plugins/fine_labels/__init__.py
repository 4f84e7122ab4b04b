"""Fine-label discovery — does pre-training on fine labels found by clustering beat
training on the coarse labels directly? (seed: Jackpepito/Improving-classification-by-
fine-grained-labels; what its *code* does is the default.)

1. Train a classifier on the coarse labels (a cached stage: it is also the ``coarse_only``
   baseline, and every variant of a suite shares it).
2. Uncertainty filter: each training image passes 5 times through random flips
   (horizontal p 0.8, vertical p 0.3), softmaxes averaged; U = 1 − p̂max when the
   prediction is the coarse label, else 1 + p̂max; per coarse class keep the 90 % with the
   lowest U. Removed images take no fine label.
3. Per coarse class, on the coarse model's pooled features of the kept images:
   UMAP(n_neighbors 30, min_dist 0, 4 components, random_state 42) → HDBSCAN with soft
   membership; fine label = argmax membership (noise points get a cluster too); ids offset
   per coarse class into one fine label space. ``min_cluster_size: auto`` scales with the
   class: 100/2,250 ≈ 4.4 % of its kept images, at least 5 (the seed's 100 at a CIFAR-100
   superclass's 2,250 kept images); an integer fixes it.
4. ``two_stage`` (default, the code): a fresh ImageNet-initialised model trains on the fine
   pseudo-labels of the kept images — ``val_fraction`` of them (stratified by pseudo-label)
   held out with their pseudo-labels to select the epoch, as the code's sub-class phase
   keeps its best validation-accuracy checkpoint —,
   then its head is replaced by a coarse head and everything fine-tunes on the coarse
   labels of the full training set. ``stacked`` (the README's diagrams): a
   coarse linear layer is stacked on the fine head instead of replacing it.
   ``multi_head_0.1`` / ``multi_head_0.9``: one fresh trunk, a coarse and a fine head, loss
   α·CE_coarse + (1−α)·CE_fine on the pseudo-labelled (kept) images, as the code's
   pseudo-label loader; selected on coarse validation accuracy.

Every training phase stops as the code's Lightning trainers do: early stopping on the
validation *loss* with patience 4 (``stop_on: loss``), never before ``min_epochs`` (the
code: 30 of at most 50 epochs — the ``paper`` scale; ``short``: 18 of 30), while the epoch
kept is still the one with the best validation top-1 (the code's checkpoint on
``val_acc``). A suite's ``train: {stop_on: top1, patience: null}`` trains every epoch.

``coarse_only_2x`` is a control the seed lacks: the coarse classifier trained for twice
the recipe's epochs — as many as ``two_stage`` spends in its two phases — so a gain of
``two_stage`` over ``coarse_only`` can be told apart from a gain of simply training longer.

Beyond the seed, the record scores the clusters against the true fine classes of the
coarse view (NMI, ARI per coarse class — the recovery figure — and over all kept images,
which also credits the coarse split the clustering was given; clusters found vs true), the share of images the filter removed, and the coarse model's error rate among
removed and kept images; ``umap_<class>.png`` in the run's artifacts shows the embedding
of the coarse class with the most true fine classes, coloured by found cluster and by
true class — a 2-D UMAP of that class's kept features with the clustering's parameters
(the clustering itself runs on the 4-D one). Use it on a ``coarse`` dataset view (``plugins/datasets/views.py``); on a
dataset without true fine labels the recovery columns are left out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import DataError, Method, RunContext, TensorSplit, UserError, hookimpl, stratified_split

from .discovery import (SEED_KEPT, cluster_features, filter_purity, flip_passes_probs, global_fine_labels,
                        keep_most_certain, recovery_scores, uncertainty, umap_embedding)

STRATEGIES = ("coarse_only", "two_stage", "stacked", "multi_head")


class Stacked(nn.Module):
    """The fine model with a coarse linear layer on top of its fine logits."""

    def __init__(self, fine_model: nn.Module, n_fine: int, n_coarse: int):
        super().__init__()
        self.fine_model = fine_model
        self.coarse = nn.Linear(n_fine, n_coarse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.coarse(self.fine_model(x))

    def get_classifier(self) -> nn.Module:
        return self.coarse


class MultiHead(nn.Module):
    """One trunk, two heads: the backbone's own (coarse) classifier and a fine one."""

    def __init__(self, backbone: nn.Module, n_fine: int):
        super().__init__()
        self.backbone = backbone
        self.fine = nn.Linear(backbone.num_features, n_fine)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.backbone.get_classifier()(pooled), self.fine(pooled)

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()


class MultiHeadLoss:
    """The multi-head objective: α·CE(coarse) + (1−α)·CE(fine), labels ``y[:, 0]`` coarse and
    ``y[:, 1]`` fine; an image without a fine label (``-1``: removed by the filter, under
    ``multi_head_images: all``) trains the coarse term only."""

    def __init__(self, alpha: float, label_smoothing: float = 0.0):
        self.alpha, self.label_smoothing = alpha, label_smoothing

    def __call__(self, out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        coarse_logits, fine_logits = out
        coarse = F.cross_entropy(coarse_logits.float(), y[:, 0], label_smoothing=self.label_smoothing)
        labelled = y[:, 1] >= 0
        # summed over the labelled rows, divided by at least one: a batch of removed images only
        # (possible at the end of an epoch) adds nothing instead of cross_entropy's NaN
        fine = F.cross_entropy(fine_logits.float()[labelled], y[labelled, 1], reduction="sum",
                               label_smoothing=self.label_smoothing) / labelled.sum().clamp_min(1)
        return self.alpha * coarse + (1 - self.alpha) * fine


def _state(model: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _with_train(data, images: torch.Tensor, labels: torch.Tensor, index: list[int], keep_eval: bool):
    """``data`` with another training set; without ``keep_eval`` no validation or test
    (a pseudo-label phase has nothing to be scored against)."""
    empty = TensorSplit(images[:0], labels[:0] if labels.ndim == 1 else labels[:0, 0], [])
    return dataclasses.replace(data, train=TensorSplit(images, labels, index),
                               val=data.val if keep_eval else empty, test=data.test if keep_eval else empty)


def _pseudo_label_data(data, images: torch.Tensor, fine: torch.Tensor, index: list[int], n_fine: int,
                       val_fraction: float):
    """The fine phase's data: the kept images with their pseudo-labels, ``val_fraction``
    of them (per pseudo-class, fixed seed) held out for selecting the epoch; no test set;
    ``n_fine`` classes."""
    keep, val = stratified_split(fine.tolist(), val_fraction)
    split = lambda rows: TensorSplit(images[rows], fine[rows], [index[i] for i in rows])  # noqa: E731
    empty = TensorSplit(images[:0], fine[:0], [])
    return dataclasses.replace(data, train=split(keep), val=split(val) if val else empty, test=empty,
                               class_names=[f"pseudo_{k}" for k in range(n_fine)])


@torch.no_grad()
def _filter_probs(ctx: RunContext, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    p = ctx.params
    model.to(ctx.device).eval()
    augment = ctx.augmenter(seed_offset=7)
    generator = torch.Generator().manual_seed(ctx.seed * 1000 + 7)
    autocast = ctx.device.type == "cuda" and ctx.recipe.amp
    out = []
    for start in range(0, len(images), ctx.recipe.eval_batch_size):
        x = augment.eval(images[start:start + ctx.recipe.eval_batch_size])

        def forward(batch):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                return model(batch)
        out.append(flip_passes_probs(forward, x, p["n_aug"], p["flip_h"], p["flip_v"], generator).cpu())
    return torch.cat(out) if out else torch.empty(0)


def check_params(p: dict, recipe) -> None:
    """Values no run can use (called by the suite loader before any run starts)."""
    mcs = p["min_cluster_size"]
    if mcs != "auto" and not (isinstance(mcs, int) and not isinstance(mcs, bool) and mcs >= 2):
        raise UserError(f"fine_labels min_cluster_size: {mcs!r} — use auto or an integer >= 2")
    if p["epochs_factor"] <= 0:
        raise UserError(f"fine_labels epochs_factor: {p['epochs_factor']!r} — use a positive number")
    if not 0 < p["keep_percent"] <= 100:
        raise UserError(f"fine_labels keep_percent: {p['keep_percent']!r} — use a percentage in (0, 100]")
    for key in ("alpha", "flip_h", "flip_v"):
        if not 0 <= p[key] <= 1:
            raise UserError(f"fine_labels {key}: {p[key]!r} — use a number in [0, 1]")
    for key, low in (("n_aug", 1), ("umap_neighbors", 2), ("umap_components", 1)):
        if p[key] < low:
            raise UserError(f"fine_labels {key}: {p[key]!r} — use an integer >= {low}")


def run_fine_labels(ctx: RunContext) -> dict:
    p = ctx.params
    strategy = p["strategy"]
    data = ctx.load_data()
    base = {"dataset": ctx.spec.dataset, "backbone": ctx.identity["backbone"], "recipe": ctx.recipe.to_dict(),
            "seed": ctx.seed}

    # 1. the coarse classifier (= the coarse-only baseline)
    def coarse_stage():
        model = ctx.create_model(data.num_classes)
        result = ctx.fit(model, data, phase="coarse")
        return {"state_dict": _state(result.model), "metrics": result.metrics}
    if strategy == "coarse_only" and p["epochs_factor"] != 1:
        # the compute-matched control: two_stage trains two phases of the recipe's epochs
        longer = ctx.recipe.replace(epochs=max(1, int(round(ctx.recipe.epochs * p["epochs_factor"]))))
        return dict(ctx.fit(ctx.create_model(data.num_classes), data, longer, phase="coarse").metrics)
    coarse = ctx.stage("fine_labels_coarse", coarse_stage, base)
    metrics = {"coarse_only_top1": coarse["metrics"]["top1"]}
    if strategy == "coarse_only":
        return {**coarse["metrics"], **metrics}
    coarse_model = ctx.create_model(data.num_classes)
    coarse_model.load_state_dict(coarse["state_dict"])

    # 2–3. filter, cluster, map
    discovery_inputs = {**base, **{k: p[k] for k in ("n_aug", "flip_h", "flip_v", "keep_percent", "umap_neighbors",
                                                     "umap_min_dist", "umap_components", "umap_seed",
                                                     "min_cluster_size", "cluster_backend")}}
    if p["min_cluster_size"] == "auto":   # the rule itself: a cache made under another rule is not reused
        discovery_inputs["min_cluster_size"] = f"auto:100/{SEED_KEPT}"

    def discover():
        train = data.train
        coarse_labels = train.labels
        probs = _filter_probs(ctx, coarse_model, train.images)
        u = uncertainty(probs, coarse_labels)
        keep = keep_most_certain(u, coarse_labels, p["keep_percent"])
        feats = ctx.features(coarse_model, data, "train").numpy()
        per_class, embeddings, sizes, backends = {}, {}, {}, set()
        for c in range(data.num_classes):
            rows = torch.nonzero((coarse_labels == c) & keep).flatten().numpy()
            if not len(rows):
                continue
            out = cluster_features(feats[rows], n_neighbors=p["umap_neighbors"], min_dist=p["umap_min_dist"],
                                   n_components=p["umap_components"], random_state=p["umap_seed"],
                                   min_cluster_size=p["min_cluster_size"], backend=p["cluster_backend"])
            per_class[c] = out["labels"]
            sizes[c] = out["min_cluster_size"]
            backends.add(out["backend"])
            if out["embedding"] is not None:
                embeddings[c] = torch.from_numpy(out["embedding"])
        fine = global_fine_labels(coarse_labels.numpy(), keep.numpy(), per_class)
        return {"fine": torch.from_numpy(fine), "keep": keep, "uncertainty": u,
                "correct": probs.argmax(1) == coarse_labels, "embeddings": embeddings,
                "min_cluster_size": sizes, "backends": sorted(backends)}
    found = ctx.stage("fine_labels_discovery", discover, discovery_inputs)
    fine, keep = found["fine"], found["keep"]
    n_fine = int(fine.max()) + 1 if len(fine) and int(fine.max()) >= 0 else 0
    if n_fine < 1:
        raise DataError("fine_labels: no image kept after the uncertainty filter — raise keep_percent")
    metrics.update({"fine_pseudo_classes": n_fine, **filter_purity(keep.numpy(), found["correct"].numpy())})
    ctx.notes.update({"min_cluster_size": {str(k): v for k, v in found["min_cluster_size"].items()},
                      "cluster_backends": found["backends"]})
    truth = _true_fine(data)
    if truth is not None:
        by_class: dict = {}
        metrics.update(recovery_scores(data.train.labels.numpy(), keep.numpy(), fine.numpy(), truth, by_class))
        names = list(data.class_names)
        # which groups were recovered, merged or split: the means above cannot say
        ctx.notes["recovery_by_class"] = {names[c] if c < len(names) else str(c): {
            **row, "min_cluster_size": found["min_cluster_size"].get(c, found["min_cluster_size"].get(str(c)))}
            for c, row in by_class.items()}
        _plot(ctx, data, found, truth, coarse_model)
    else:
        metrics["filtered_share"] = 100 * float(1 - keep.float().mean())

    kept = torch.nonzero(keep).flatten()
    kept_images, kept_index = data.train.images[kept], [data.train.index[i] for i in kept.tolist()]

    # 4. train with the pseudo-labels
    if strategy in ("two_stage", "stacked"):
        def fine_stage():
            model = ctx.create_model(n_fine)
            result = ctx.fit(model, _pseudo_label_data(data, kept_images, fine[kept], kept_index, n_fine,
                                                       ctx.recipe.val_fraction), phase="fine")
            return {"state_dict": _state(result.model)}
        fine_model = ctx.create_model(n_fine)
        fine_model.load_state_dict(ctx.stage("fine_labels_fine", fine_stage,
                                             {**discovery_inputs, "n_fine": n_fine})["state_dict"])
        if strategy == "two_stage":
            torch.manual_seed(ctx.seed)   # the new head's draw: the same whether the fine stage ran or was cached
            fine_model.reset_classifier(data.num_classes)  # the code: replace the head
            model = fine_model
        else:
            torch.manual_seed(ctx.seed)
            model = Stacked(fine_model, n_fine, data.num_classes)
        result = ctx.fit(model, data, phase="coarse_finetune")
    else:
        torch.manual_seed(ctx.seed)
        model = MultiHead(ctx.create_model(data.num_classes), n_fine)
        criterion = MultiHeadLoss(p["alpha"], ctx.recipe.label_smoothing)
        if p["multi_head_images"] == "kept":
            train = _with_train(data, kept_images, torch.stack([data.train.labels[kept], fine[kept]], 1),
                                kept_index, keep_eval=True)
        else:  # "all" (check_params): removed images train the coarse loss only
            train = _with_train(data, data.train.images, torch.stack([data.train.labels, fine], 1),
                                data.train.index, keep_eval=True)
        result = ctx.fit(model, train, criterion=criterion, output_fn=lambda out: out[0], phase="multi_head")
    metrics.update(result.metrics)
    metrics["delta_vs_coarse_only"] = result.metrics["top1"] - coarse["metrics"]["top1"]
    return metrics


def _true_fine(data) -> np.ndarray | None:
    meta = data.source.train.meta if data.source is not None else {}
    if "fine_label" not in meta:
        return None
    return np.asarray([meta["fine_label"][i] for i in data.train.index])


def _plot(ctx: RunContext, data, found: dict, truth: np.ndarray, coarse_model: nn.Module) -> None:
    """A 2-D UMAP (the clustering's parameters otherwise) of the kept features of the coarse
    class with the most true fine classes, coloured by found cluster and by true class."""
    keep, fine = found["keep"].numpy(), found["fine"].numpy()
    coarse = data.train.labels.numpy()
    best, best_k = None, 0
    for c, emb in found["embeddings"].items():
        k = len(np.unique(truth[(coarse == c) & keep]))
        if k > best_k:
            best, best_k = c, k
    if best is None:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = (coarse == best) & keep
    p = ctx.params
    picked = torch.from_numpy(np.nonzero(rows)[0])
    feats = ctx.features(coarse_model, TensorSplit(data.train.images[picked], data.train.labels[picked],
                                                   picked.tolist())).numpy()
    emb = umap_embedding(feats, n_neighbors=p["umap_neighbors"], min_dist=p["umap_min_dist"], n_components=2,
                         random_state=p["umap_seed"])
    names = data.source.train.info.get("fine_names")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, colour, title, named in ((axes[0], fine[rows], "found cluster", False),
                                     (axes[1], truth[rows], "true fine class", True)):
        cmap = plt.get_cmap("tab10" if len(np.unique(colour)) <= 10 else "tab20")
        for k, value in enumerate(np.unique(colour)):
            pick = colour == value
            label = (names[value] if names else str(value)) if named else f"cluster {value}"
            ax.scatter(emb[pick, 0], emb[pick, 1], color=cmap(k % cmap.N), s=12, alpha=0.85, linewidths=0,
                       label=label)
        ax.set_title(f"{data.class_names[best]}: coloured by {title} ({len(np.unique(colour))})", fontsize=10)
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, markerscale=1.5)
    fig.tight_layout()
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data.class_names[best])
    fig.savefig(ctx.artifact_dir / f"umap_{safe}.png", dpi=110)
    plt.close(fig)


FINE_LABELS = Method(
    name="fine_labels",
    run=run_fine_labels,
    description="fine labels discovered by UMAP+HDBSCAN on a coarse task: two-stage / stacked / multi-head",
    params={"strategy": "two_stage", "alpha": 0.5, "n_aug": 5, "flip_h": 0.8, "flip_v": 0.3, "keep_percent": 90,
            "umap_neighbors": 30, "umap_min_dist": 0.0, "umap_components": 4, "umap_seed": 42,
            "min_cluster_size": "auto", "cluster_backend": "auto", "multi_head_images": "kept",
            "epochs_factor": 1},
    param_types={"min_cluster_size": (str, int), "keep_percent": (float,), "epochs_factor": (float,)},
    # the code's Lightning trainers: EarlyStopping('val_loss', patience=4), min_epochs 30,
    # max_epochs 50, the best val_acc checkpoint kept (selection stays on validation top-1)
    recipe={"stop_on": "loss", "patience": 4},
    scales={"short": {"min_epochs": 18}, "paper": {"epochs": 50, "min_epochs": 30}},
    param_choices={"strategy": STRATEGIES, "cluster_backend": ("auto", "hdbscan", "sklearn"),
                   "multi_head_images": ("kept", "all")},
    check=check_params,
    variants={"default": {}, "two_stage": {}, "stacked": {"strategy": "stacked"},
              "multi_head_0.1": {"strategy": "multi_head", "alpha": 0.1},
              "multi_head_0.9": {"strategy": "multi_head", "alpha": 0.9},
              "coarse_only": {"strategy": "coarse_only"},
              "coarse_only_2x": {"strategy": "coarse_only", "epochs_factor": 2}},
)


@hookimpl
def fgvcbench_methods():
    return [FINE_LABELS]

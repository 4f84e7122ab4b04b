"""SimTrans — "Weak-shot Fine-grained Classification via Similarity Transfer" (NeurIPS
2021, repo bcmi/SimTrans-Weak-Shot-Classification), as its *code* (``_scripts/CUB/0–3``)
does it, on a ``weak_shot`` dataset view (``data.py``: clean base classes, noisy novel
classes). Four trainings, each a cached stage shared by the variants that need it:

0. **Pretrain** (``0_pretrain.sh``, ``naive/train.py --exp_type NoisyNovel``): plain CE on
   the noisy novel data, lr 1e-4, batch 64, 30 epochs. This is the ``ce_noisy`` row, and
   the code's SimNet starts from its best checkpoint (``train_GAN_similarity.py`` defaults
   ``--similarity_pretrained`` to ``pretrained/CUB/step0/…``, which ``1_simnet.sh`` does
   not override): ``simnet_init: pretrain`` (default; ``backbone``: the suite's backbone
   weights instead).
1. **SimNet** (``simnet.py``, ``train_GAN_similarity.py``): a batch of 50 base images
   from 20 classes (the code's ``RandPairSet``: every image once per epoch), every ordered
   pair (B², self-pairs included), [f_i, f_j] → FC 2n–BN–ReLU → FC n–BN–ReLU (relation
   r_ij) → FC n–BN–ReLU → FC 2, 2-way CE (n the backbone's feature size: 4096/2048/2048 for
   ResNet-50). The code always zips a web batch (50 novel images from 2 classes) into
   every step: one backbone pass over both batches, one head pass over both pair sets (so
   BatchNorm statistics mix base and web), an epoch as long as the shorter batch list
   (steps whose two batches differ in length skipped), and a discriminator (FC n–LayerNorm–
   ReLU–FC 2 on r_ij, base 0 / web 1) trained on detached features; SimNet minimises
   CE − β·CE_D. SGD lr 5e-3 (discriminator 5e-3), momentum 0.9, wd 1e-4, lr halved every
   half of the epochs, rounded up (the code: 25 of 50); both optimisers are rebuilt every epoch
   (momentum restarts), as the code does. The code keeps the first epoch with the best
   pair F1 on its novel *test* batches (10 batches of 10 classes × 10 images drawn once,
   every ordered pair, self-pairs included: ``simnet.code_f1_batches``) — ``selection:
   test`` does exactly that; by default (``selection: val``) the same F1 protocol — 10
   batches of 10 classes, so about 10 % of the pairs are same-class, as in the code's F1 —
   picks the epoch on the base classes' validation split (a class with fewer than 10
   images there gives each once; pair AUROC over all pairs i ≠ j breaks ties), so the
   40 % save floor reads the number it was set for.

   *Web epoch* (``web_epoch``): the code's web set (WebFG's CUB images, about 90 per class)
   is about as large as its base training set, so its zip follows the base list. The
   simulated web set is the novel classes' training set — a third of the base images in
   CUB's 150/50 split, 2 classes of about 27 images rarely filling a batch of 50 — so the
   zip would give the joint SimNet (``full``, ``beta0``) about a fifth of the steps of the
   base-only one (``weights``, ``weights_graph``) and confound the ablation. By default
   (``follow_base``) every base batch is paired with the next web batch of its length,
   further passes over the web images drawn as needed; ``web_epoch: zip`` is the code's
   literal loop. Every run records ``simnet_steps``.
2. **Weighted CE** (``3_train.sh`` line 1, ``GCN_reg/train_main.py``): a fresh
   pretrained backbone on the noisy novel data, loss mean_i w_i·CE_i with the ``savg1``
   weights w_i = ½(mean_j S_ij + mean_j S_ji) / class mean, S_ij = SimNet's same-class
   probability for [x_i, x_j] over all pairs of a novel class's training images (test
   view); lr 1e-4, batch 8, 60 epochs, lr halved every 20.
3. **Alternating graph stage** (``3_train.sh`` line 2, ``GCN_reg/alternate_with_GCN.py``):
   from stage 2's selected checkpoint, 100 epochs, lr 1e-4 halved every 20, the row-only
   ``avg1`` weights w_i = mean_j S_ij / class mean. With 0-based epochs, epoch e trains
   weighted CE alone with batch 8 when e % 2 == 1 (the code's ``c0g1 = 1``) and weighted
   CE + α·mean_ij g(A_ij)·‖z_i − z_j‖² with batch 128 when e is even — the graph term
   runs on the first epoch. A = SimNet (eval mode, no gradient) on the same augmented
   batch, g(a) = (e^{μa} − 1)/(e^{μ} − 1), μ = −4, α = 0.1, z the pooled features.

The classifier stages (0, 2, 3) run this plugin's own loop (``classifier.py``), not the
engine's ``fit``: stage 3 changes its batch size from epoch to epoch, and the code rebuilds its SGD
optimiser every epoch (momentum restarts) and schedules lr · 0.5^(epoch // 20) — the loop
does the same. It reads the recipe's lr, batch_size (stages 2 and 3), momentum, nesterov,
weight_decay, optimizer, scheduler/step_size/gamma, label_smoothing, grad_clip, amp,
channels_last and everything the augmenter and the test view read; it ignores warmup,
EMA, mixup/cutmix (rejected), repeated_augment, patience, compile and the classic pipeline.

Epochs: the recipe's ``epochs`` is stage 2's (60 at the ``paper`` scale); the other
stages keep the code's proportions — pretrain 30/60, SimNet 50/60, stage 3 100/60 of it
(rounded, at least 1) unless ``pretrain_epochs`` / ``simnet_epochs`` / ``graph_epochs``
say; ``step_size`` (the lr-halving interval of stages 0, 2 and 3) is 20 at ``paper``, 10 at
``short`` (30 epochs), 1 at ``smoke``. Batch sizes and learning rates stay the code's at
every scale (the ``smoke`` preset's batch 16 replaces 8 there).

Variants: ``full`` (default: β = 0.1 + weights + graph), ``ce_noisy`` (stage 0 alone),
``weights`` (stages 0–2), ``weights_graph`` (stages 0–3), ``beta0`` (stages 0–3 with β = 0).
The released script sets β = 0 although the paper (and the released weights' name
``h4f2_b0.1``) uses β = 0.1: 0.1 is the default, ``beta0`` is the script's setting — web
batches still in every step, so BatchNorm statistics mix base and web images and its
SimNet differs from that of ``weights`` / ``weights_graph``. Our choice for those two
ablation rows ("without the adversarial part"): SimNet trained on base batches alone
(``simnet_web: false``), the paper's SimNet "trained on clean base data".

Selection: the code picks every checkpoint on the novel *test* set; here ``selection:
val`` (default) picks classifiers on a validation split carved from the (noisy) novel
training data and SimNet on base validation pairs; ``selection: test`` reproduces the
code's protocol for every stage, for comparison only: no validation split is carved and
every stage trains on all its images, as the code's do.

Augmentation: the code's ``RandomRotation(30)`` → ``RandomResizedCrop(224, scale 0.5–1)``
→ flip (``data/helper.py``) is the recipe's ``rotation_degrees: 30``, ``crop_scale_min:
0.5``; the engine folds rotation, crop and flip into one bilinear resample of the stored
square image (torchvision rotates the full photo with nearest, then crops).

Other deviations: bf16 autocast on CUDA in every stage, SimNet and the graph term's
adjacency included (the code runs fp32; ``amp: false`` gives it).

Test view: the code's resize 255 → centre crop 224 (``eval_crop_pct`` 224/255, so
round(crop · 255/224) at any image size), the default of every stage and of the test
view the sample weights are computed on; ``eval_crop_pct: null`` (a suite's ``train:``)
gives the usual resize 256, and the run ids SimTrans runs had before. The stored images
are decoded at 256 for a 224 crop, so the 255 view is one more resample of them (the code
resizes the photo once).

Early stop and save floor (``utils/project_kits.early_stop``, ``utils/saver.py``): the
classifier stages (0, 2, 3) stop once ``stop_th`` (default 10, the code's ``--stop_th``)
selection scores in a row each fall strictly below the one before; the lr schedule still
spans the stage's full epochs, as the code's does; ``stop_th: 0`` trains every epoch.
SimNet never stops early (the code does not call it there). The code saves no checkpoint
whose selection score (top-1, SimNet's pair F1) is below 40 %, so a stage that never
reaches it leaves the next stage nothing to load; here the best epoch is kept anyway, the
run records ``save_floor_misses`` (how many stages stayed below ``save_floor``, default
40) and names them and their scores under ``notes.save_floor`` in the run's record. Both read
the selection split: the novel test set under ``selection: test`` (the code's); otherwise
the noisy novel validation split for the classifiers and base validation images for SimNet.

Recorded beyond the seed (the view knows which images are noise): ``weight_auroc`` —
AUROC of the stage-2 (``savg1``) weights for telling clean from noisy novel training
images — (``weight_auroc_avg1``: stage 3's), mean weight of clean and noisy images, and
SimNet's pair F1 (at S > 0.5) and pair AUROC over all ordered pairs i ≠ j of held-out base
images (the validation split) and of the novel test images (``simnet_pair_f1_base`` /
``_novel``, up to ``f1_max_images`` images each). That F1 counts far fewer same-class pairs
than the code's (≈ 10 % in its 10 × 10 batches, self-pairs included), so it is not the
number the code logs: ``simnet_pair_f1_code_novel`` and ``simnet_pair_f1_code_base`` are —
the code's protocol on the novel test images and on the base classes' test images (the
view's ``base_test`` list: those no simulated noise took), under either selection; with
fewer than 10 classes, all of them per batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from fgvcbench.api import Method, Recipe, RunContext, TensorData, TensorSplit, UserError, hookimpl, place_model

from .classifier import SimTransLoss, WithPooled, state_of, train_classifier
from .data import WEAK_SHOT
from .simnet import (WEB_EPOCHS, SimNet, code_f1_batches, code_pair_f1, pair_auroc, pair_f1, same_probability,
                     sample_weights, train_simnet)

# The code's epochs per training (``_scripts/CUB``); the recipe's epochs stand for the
# weighted-CE stage's 60 and the others keep these proportions.
CODE_EPOCHS = {"weighted": 60, "pretrain": 30, "simnet": 50, "graph": 100}
# Recipe fields only the classifier loop reads (SimNet has its own optimiser params and
# schedule); stage 0 reads them too, but its own epochs and batch size.
CLASSIFIER_ONLY = ("epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "no_decay_norm",
                   "scheduler", "step_size", "gamma", "warmup_epochs", "warmup_start_factor", "label_smoothing",
                   "ema_steps", "ema_decay", "ema_adjust", "patience", "stop_on", "min_epochs", "grad_clip")
SIMNET_KEYS = ("simnet_lr", "simnet_domain_lr", "simnet_momentum", "simnet_weight_decay", "beta", "simnet_web",
               "classes_per_batch", "images_per_batch", "web_classes_per_batch", "simnet_hidden", "f1_max_images",
               "simnet_init", "web_epoch")



def scaled_epochs(epochs: int, stage: str) -> int:
    """A stage's epochs when the weighted-CE stage trains ``epochs``: the code's proportion,
    rounded half up, at least 1."""
    return max(1, math.floor(epochs * CODE_EPOCHS[stage] / CODE_EPOCHS["weighted"] + 0.5))



def stage_inputs(p: dict, recipe: Recipe, *, dataset: dict, backbone: dict, seed: int) -> dict[str, dict]:
    """What each cached stage's result depends on — the recipe fields the stage reads
    (augmentation, amp, val_fraction, …: the SimNet loop and the classifier loop read them)
    and every param it reads, with the stages it starts from nested: ``pretrain`` (stage 0),
    ``simnet`` (stage 1), ``weighted`` (stage 2). Stage 0 trains with its own epochs and
    batch size, SimNet with its own optimiser, so a sweep of stage 2's batch size or of
    the classifier's lr (with ``simnet_init: backbone``) reuses them."""
    # lr_step: no stage reads it (SimNet has its own schedule, the classifier loop moves the lr per epoch)
    whole = {k: v for k, v in recipe.to_dict().items() if k != "lr_step"}
    common = {"dataset": dataset, "backbone": backbone, "seed": seed, "selection": p["selection"]}
    pretrain = {**common, "recipe": {k: v for k, v in whole.items() if k not in ("epochs", "batch_size")},
                "epochs": p["pretrain_epochs"] or scaled_epochs(recipe.epochs, "pretrain"),
                "batch_size": p["pretrain_batch_size"], "stop_th": p["stop_th"]}
    simnet = {**common, "recipe": {k: v for k, v in whole.items() if k not in CLASSIFIER_ONLY},
              **{key: p[key] for key in SIMNET_KEYS},
              # which pair F1 picks the epoch: the code's batches of novel test or of base validation images
              "select_f1": "code_batches" if p["selection"] == "test" else "code_batches_base_val",
              "epochs": p["simnet_epochs"] or scaled_epochs(recipe.epochs, "simnet"),
              "init": pretrain if p["simnet_init"] == "pretrain" else "backbone"}
    if not p["simnet_web"]:
        simnet.pop("web_classes_per_batch")   # unused without web batches
        simnet.pop("web_epoch")
    if p["selection"] == "test":
        simnet.pop("f1_max_images")           # the code's batches pick the epoch, over the whole test set
    weighted = {**common, "recipe": whole, "simnet": simnet, "use_weights": p["use_weights"], "weights": "savg1",
                "epochs": recipe.epochs, "stop_th": p["stop_th"]}
    return {"pretrain": pretrain, "simnet": simnet, "weighted": weighted}


def _split(split: TensorSplit, rows: torch.Tensor, labels: torch.Tensor | None = None) -> TensorSplit:
    return TensorSplit(split.images[rows], split.labels[rows] if labels is None else labels,
                       [split.index[i] for i in rows.tolist()])



def _remember_predictions(ctx: RunContext, data: TensorData, pred: list[int]) -> None:
    """What ``ctx.fit`` would leave for reports (``predictions.json``)."""
    if not pred:
        return
    src = data.source
    paths = ([str(src.test.paths[i]) for i in data.test.index]
             if src is not None and data.test.index and len(src.test) >= len(data.test) else None)
    ctx.last_predictions = {"pred": pred, "label": data.test.labels.tolist(), "class_names": list(data.class_names),
                            "paths": paths}


def _weight_metrics(weights: torch.Tensor, clean: list, suffix: str = "") -> dict:
    known = [c for c in clean if c is not None]
    if not known or len(known) != len(clean):
        return {}
    flags = torch.tensor(clean)
    out = {f"weight_clean_mean{suffix}": float(weights[flags].mean()) if flags.any() else float("nan"),
           f"weight_noisy_mean{suffix}": float(weights[~flags].mean()) if (~flags).any() else float("nan")}
    if flags.any() and (~flags).any():
        from sklearn.metrics import roc_auc_score
        out[f"weight_auroc{suffix}"] = 100 * float(roc_auc_score(flags.numpy(), weights.numpy()))
    return out


def check_params(p: dict, recipe: Recipe) -> None:
    """Values no run can use (called by the suite loader before any run starts)."""
    if p["beta"] < 0 or p["alpha"] < 0:
        raise UserError(f"simtrans beta {p['beta']!r}, alpha {p['alpha']!r}: loss weights must be >= 0")
    if p["beta"] and not p["simnet_web"]:
        raise UserError("simtrans beta > 0 needs simnet_web: true (the adversarial part trains on web batches)")
    for key in ("pretrain_epochs", "graph_epochs", "simnet_epochs"):
        if p[key] is not None and p[key] < 1:
            raise UserError(f"simtrans {key}: {p[key]!r} — use a positive integer, or null for the scaled default")
    for key in ("pretrain_batch_size", "graph_batch_size", "classes_per_batch", "images_per_batch",
                "web_classes_per_batch", "f1_max_images"):
        if p[key] < 1:
            raise UserError(f"simtrans {key}: {p[key]!r} — use a positive integer")
    if p["stop_th"] < 0:
        raise UserError(f"simtrans stop_th: {p['stop_th']!r} — use 0 (never stop early) or a positive number of "
                        f"epochs (the code's 10)")
    if not 0 <= p["save_floor"] <= 100:
        raise UserError(f"simtrans save_floor: {p['save_floor']!r} — use a percentage from 0 to 100 (the code's 40)")
    for key in ("simnet_lr", "simnet_domain_lr"):
        if p[key] <= 0:
            raise UserError(f"simtrans {key}: {p[key]!r} — use a positive number")
    hidden = p["simnet_hidden"]
    if hidden is not None and not (len(hidden) == 3 and all(isinstance(h, int) and not isinstance(h, bool)
                                                            and h >= 1 for h in hidden)):
        raise UserError(f"simtrans simnet_hidden: {hidden!r} — use three positive layer widths, e.g. [1024, 512, "
                        f"512], or null for the code's 2n/n/n")
    if recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0:
        raise UserError("simtrans: mixup/cutmix cannot be combined with its weighted loss — set them to 0")


def run_simtrans(ctx: RunContext) -> dict:
    p = ctx.params
    # selection: test is the released code's protocol: every stage trains on all its images
    data = ctx.load_data(val_fraction=0.0 if p["selection"] == "test" else None)
    src = data.source
    if "novel" not in src.train.meta or "num_novel" not in src.train.info:
        raise UserError("simtrans needs a weak_shot dataset view — in the suite: "
                        "datasets: [{name: weak_shot, root: ..., options: {of: cub, novel: ...}}]")
    k = int(src.train.info["num_novel"])
    novel_rows = torch.nonzero(data.train.labels < k).flatten()
    base_rows = torch.nonzero(data.train.labels >= k).flatten()
    novel_val = torch.nonzero(data.val.labels < k).flatten()
    base_val = torch.nonzero(data.val.labels >= k).flatten()
    train = _split(data.train, novel_rows)
    clean = [src.train.meta["clean"][i] for i in train.index]
    novel = TensorData(train=train, val=_split(data.val, novel_val), test=data.test,
                       class_names=list(data.class_names[:k]), image_size=data.image_size, source=src,
                       use_boxes=data.use_boxes)
    if p["selection"] == "test":  # the released code's protocol, for comparison only
        novel = dataclasses.replace(novel, val=novel.test)
    known = [c for c in clean if c is not None]
    metrics: dict = {"novel_classes": k, "noisy_share": 100 * (1 - sum(known) / len(known)) if known else float("nan")}
    recipe = ctx.recipe
    inputs = stage_inputs(p, recipe, dataset=ctx.spec.dataset, backbone=ctx.identity["backbone"], seed=ctx.seed)

    # -- stage 0: CE on the noisy novel data (naive/train.py; the ce_noisy row, SimNet's start)
    pretrain_inputs = inputs["pretrain"]

    def pretrain():
        model = WithPooled(ctx.create_model(k))
        loss = SimTransLoss(train.labels, torch.ones(len(train)), alpha=0.0, mu=p["mu"],
                            smoothing=recipe.label_smoothing, device=ctx.device)
        return train_classifier(ctx, model, novel, loss, epochs=pretrain_inputs["epochs"],
                                batch_size=p["pretrain_batch_size"], phase="pretrain", seed_offset=21,
                                stop_th=p["stop_th"])

    # each stage's selection score (top-1, or SimNet's pair F1): the code saves no
    # checkpoint below its floor (utils/saver.save_model_if_best), so that run would stop there
    selected: dict[str, float] = {}

    def finish(out: dict, **extra) -> dict:
        _remember_predictions(ctx, novel, out["test_pred"])
        below = {stage: score for stage, score in selected.items() if score == score and score < p["save_floor"]}
        if below:
            ctx.notes["save_floor"] = {"floor": p["save_floor"], "below": below,
                                       "meaning": "the released code saves no checkpoint below this selection score"}
        return {**out["metrics"], **extra, **metrics, "save_floor_misses": len(below)}

    if not p["use_weights"] and not p["use_graph"]:  # ce_noisy
        out = ctx.stage("simtrans_pretrain", pretrain, pretrain_inputs)
        selected["pretrain"] = out["metrics"]["val_top1"]
        return finish(out)

    # -- stage 1: SimNet on base pairs (train_GAN_similarity.py)
    hidden = tuple(int(h) for h in p["simnet_hidden"]) if p["simnet_hidden"] else None
    simnet_inputs = inputs["simnet"]
    simnet_epochs = simnet_inputs["epochs"]
    cap = p["f1_max_images"]
    # the code's test batches of novel images, drawn once (selection: test scores SimNet on them)
    code_batches = code_f1_batches(data.test.labels, torch.Generator().manual_seed(ctx.seed * 1000 + 51))
    select_part = _split(data.val, base_val[:cap]) if p["selection"] == "val" else data.test

    def new_simnet() -> SimNet:
        return SimNet(ctx.create_model(k), hidden)

    # selection: val scores base validation images in the code's batches (its class balance)
    select_batches = code_batches if p["selection"] == "test" else code_f1_batches(
        select_part.labels, torch.Generator().manual_seed(ctx.seed * 1000 + 53), repeat_short=False)

    def evaluate(net: SimNet) -> dict[str, float]:
        f = ctx.features(net.backbone, select_part).to(ctx.device)
        f1 = code_pair_f1(net.head, f, select_part.labels, select_batches)
        if p["selection"] == "test":   # the code's F1; the first best epoch is kept, as np.argmax does
            return {"f1": f1, "auroc": float("nan")}
        return {"f1": f1, "auroc": pair_auroc(same_probability(net.head, f, f), select_part.labels)}

    def train_stage():
        simnet, start_score = new_simnet(), float("nan")
        if p["simnet_init"] == "pretrain":
            start = ctx.stage("simtrans_pretrain", pretrain, pretrain_inputs)
            simnet.backbone.load_state_dict(start["state_dict"])
            start_score = start["metrics"]["val_top1"]
        web = p["simnet_web"]
        history, best_epoch = train_simnet(
            simnet, data.train.images[base_rows], data.train.labels[base_rows] - k,
            train.images if web else None, train.labels if web else None, ctx.augmenter(seed_offset=11),
            epochs=simnet_epochs, lr=p["simnet_lr"], domain_lr=p["simnet_domain_lr"], momentum=p["simnet_momentum"],
            weight_decay=p["simnet_weight_decay"], beta=p["beta"], classes_per_batch=p["classes_per_batch"],
            images_per_batch=p["images_per_batch"], web_classes_per_batch=p["web_classes_per_batch"],
            device=ctx.device, seed=ctx.seed, amp=recipe.amp, web_epoch=p["web_epoch"],
            evaluate=evaluate if len(select_part) >= 2 else None)
        if not any(row["steps"] for row in history):
            raise UserError(f"simtrans: SimNet never took a step — images_per_batch {p['images_per_batch']} is more "
                            f"than the base (or web) training images allow")
        ctx.train_seconds += sum(row["seconds"] for row in history)
        ctx.history.extend(history)
        best_f1 = history[best_epoch - 1].get("select_f1", float("nan"))
        return {"state_dict": state_of(simnet), "best_epoch": best_epoch, "best_f1": best_f1,
                "pretrain_score": start_score, "steps": sum(row["steps"] for row in history)}
    simnet = new_simnet()
    stage1 = ctx.stage("simtrans_simnet", train_stage, simnet_inputs)
    simnet.load_state_dict(stage1["state_dict"])
    place_model(simnet, recipe, ctx.device).eval()
    metrics["simnet_best_epoch"] = stage1["best_epoch"]
    metrics["simnet_steps"] = stage1["steps"]
    selected.update(pretrain=stage1.get("pretrain_score", float("nan")), simnet=stage1.get("best_f1", float("nan")))

    feats = ctx.features(simnet.backbone, train).to(ctx.device)   # each novel image's test view
    full = torch.zeros(len(train), len(train))
    for c in torch.unique(train.labels).tolist():
        rows = torch.nonzero(train.labels == c).flatten()
        full[rows[:, None], rows[None, :]] = same_probability(simnet.head, feats[rows], feats[rows])
    weights = {kind: sample_weights(full, train.labels, kind) if p["use_weights"] else torch.ones(len(train))
               for kind in ("savg1", "avg1")}
    if p["use_weights"]:
        metrics.update(_weight_metrics(weights["savg1"], clean))
        if p["use_graph"]:
            metrics.update(_weight_metrics(weights["avg1"], clean, "_avg1"))
    def score_pairs(name: str, f: torch.Tensor, labels: torch.Tensor) -> None:
        if len(labels) >= 2:
            probability = same_probability(simnet.head, f, f)
            metrics[f"simnet_pair_f1_{name}"] = pair_f1(probability, labels)["f1"]
            metrics[f"simnet_pair_auroc_{name}"] = pair_auroc(probability, labels)

    base_part = _split(data.val, base_val[:cap])
    if len(base_part) >= 2:
        score_pairs("base", ctx.features(simnet.backbone, base_part).to(ctx.device), base_part.labels)
    if len(data.test):   # the novel test images' features, once: the first `cap` for the all-pairs F1
        test_f = ctx.features(simnet.backbone, data.test).to(ctx.device)
        score_pairs("novel", test_f[:cap], data.test.labels[:cap])
        # the number the code logs as SimNet's test F1
        metrics["simnet_pair_f1_code_novel"] = code_pair_f1(simnet.head, test_f, data.test.labels, code_batches)
    base_test = ctx.load_extra("base_test")
    if base_test is not None and len(base_test) >= 2:   # the code's "Val" F1: its batches of base test images
        batches = code_f1_batches(base_test.labels, torch.Generator().manual_seed(ctx.seed * 1000 + 57))
        metrics["simnet_pair_f1_code_base"] = code_pair_f1(
            simnet.head, ctx.features(simnet.backbone, base_test).to(ctx.device), base_test.labels, batches)

    # -- stage 2: weighted CE from the backbone's own weights (train_main.py, savg1)
    def loss_with(kind: str) -> SimTransLoss:
        return SimTransLoss(train.labels, weights[kind], alpha=p["alpha"], mu=p["mu"],
                            smoothing=recipe.label_smoothing, device=ctx.device)

    def weighted():
        return train_classifier(ctx, WithPooled(ctx.create_model(k)), novel, loss_with("savg1"),
                                epochs=recipe.epochs, batch_size=recipe.batch_size, phase="weighted", seed_offset=31,
                                stop_th=p["stop_th"])
    stage2 = ctx.stage("simtrans_weighted", weighted, inputs["weighted"])
    selected["weighted"] = stage2["metrics"]["val_top1"]
    if not p["use_graph"]:
        return finish(stage2)

    # -- stage 3: alternating epochs from stage 2's checkpoint (alternate_with_GCN.py, avg1)
    model = WithPooled(ctx.create_model(k))
    model.model.load_state_dict(stage2["state_dict"])
    out = train_classifier(ctx, model, novel, loss_with("avg1"),
                           epochs=p["graph_epochs"] or scaled_epochs(recipe.epochs, "graph"),
                           batch_size=recipe.batch_size, graph_batch_size=p["graph_batch_size"], phase="graph",
                           seed_offset=41, simnet=simnet, stop_th=p["stop_th"])
    selected["graph"] = out["metrics"]["val_top1"]
    return finish(out, weighted_top1=stage2["metrics"]["top1"])


SIMTRANS = Method(
    name="simtrans",
    run=run_simtrans,
    description="SimTrans weak-shot: SimNet from clean base classes weights (and regularises) noisy novel data",
    params={"use_weights": True, "use_graph": True, "beta": 0.1, "simnet_web": True, "alpha": 0.1, "mu": -4.0,
            "selection": "val", "simnet_init": "pretrain",
            "pretrain_epochs": None, "pretrain_batch_size": 64, "graph_epochs": None, "graph_batch_size": 128,
            "simnet_epochs": None, "simnet_lr": 5e-3, "simnet_domain_lr": 5e-3, "simnet_momentum": 0.9,
            "simnet_weight_decay": 1e-4, "classes_per_batch": 20, "images_per_batch": 50, "web_classes_per_batch": 2,
            "simnet_hidden": None, "f1_max_images": 2000, "stop_th": 10, "save_floor": 40.0,
            "web_epoch": "follow_base"},
    param_types={"pretrain_epochs": (int, None), "graph_epochs": (int, None), "simnet_epochs": (int, None),
                 "simnet_hidden": (list, None)},
    # simnet_init pretrain: the code's (SimNet starts from the CE model trained on the noisy novel data)
    param_choices={"selection": ("val", "test"), "simnet_init": ("pretrain", "backbone"), "web_epoch": WEB_EPOCHS},
    check=check_params,
    variants={"default": {}, "full": {},
              "ce_noisy": {"use_weights": False, "use_graph": False},
              "weights": {"use_graph": False, "beta": 0.0, "simnet_web": False},
              "weights_graph": {"beta": 0.0, "simnet_web": False},
              "beta0": {"beta": 0.0}},
    # the code's classifier stages (train_main.py, alternate_with_GCN.py): SGD lr 1e-4, batch 8,
    # momentum 0.9, wd 1e-4, lr halved every 20 of 60 epochs
    # data/helper.py: RandomRotation(30) → RandomResizedCrop(224, scale 0.5–1) → flip, for every stage
    recipe={"optimizer": "sgd", "nesterov": False, "momentum": 0.9, "weight_decay": 1e-4, "lr": 1e-4,
            "batch_size": 8, "scheduler": "step", "gamma": 0.5, "step_size": 20, "crop_scale_min": 0.5,
            "rotation_degrees": 30.0, "eval_crop_pct": 224 / 255},
    scales={"smoke": {"step_size": 1}, "short": {"step_size": 10},
            "paper": {"epochs": 60, "step_size": 20, "image_size": 224}},
)


@hookimpl
def fgvcbench_methods():
    return [SIMTRANS]


@hookimpl
def fgvcbench_datasets():
    return [WEAK_SHOT]

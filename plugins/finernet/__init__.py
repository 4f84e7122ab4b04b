"""FineRNet — "Enhancing Multi-Class Fine-Grained Classification through Hard Sample
Discrimination" (repo danhugo/finernet), as its *code* does it:

1. fine-tune with cross-entropy (the single-step baseline; cached stage, shared by every
   FineRNet variant of a suite): SGD lr 1e-3 (``configs.py``'s ``CLASS.LR``), momentum
   0.9, wd 1e-3, no schedule, batch 128, TrivialAugmentWide (p 0.5) → RandomResizedCrop
   (scale 0.08–1, torchvision's default, which the code uses) → flip;
2. mine ≈13 pairs per training image from the phase-1 classifier's top-k classes and
   within-class neighbours of its pooled features (``pairs.py``); k = 7, 5 on Flowers.
   Index and queries are embedded with the *training* augmentation, two independent
   draws, model in eval mode (``mining_view: train``, the code's
   ``data/binary_data_finernet.py``); ``mining_view: test`` (variant
   ``mining_test_view``) uses the centre-crop test view for both;
3. train a Siamese same-class network on them, backbone included, two backbone passes
   per pair, head input [0, f_q, 0, f_n] with scalar zero separators (``siamese.py``); the
   checkpoint kept is the epoch with the best training pair F1, as
   ``src/model_training.py`` keeps it (no held-out data);
4. backbone = α·W₁ + (1−α)·W₃ (BN buffers too), weights frozen through
   ``requires_grad`` while the model stays in train mode, so BatchNorm normalises with
   batch statistics and re-estimates its running statistics on the mixed backbone
   (``src/linear_probe.py``); a new linear head is trained. Variant ``frozen_bn`` keeps
   the backbone in eval mode instead (BN statistics as interpolated). Where the code's
   config fine-tunes the whole network in phase 4 (ResNet Flowers-102: the phase-3
   backbone, no interpolation; ViT DTD: α-mixed) we do the same.

Per-dataset and per-backbone-family settings (``settings_for``: tables ``RESNET``,
``VIT_224``, ``VIT_384``, from the code's ``experiments/*.yaml`` with ``configs.py``'s
defaults where a file is silent) — the ResNet table, used for every non-ViT backbone:

=========== ====== ========== =========== ========== ========= ========= ===
dataset     α      phase-4 lr phase 4     p3 epochs  p3 lr     p3 batch  k
=========== ====== ========== =========== ========== ========= ========= ===
cub         0.2    1e-3       frozen      100        4e-4      128       7
cars        0.2    1e-2       frozen      40         4e-4      128       7
dogs        0.6    1e-3       frozen      30         4e-4      128       7
flowers102  —      1e-3       full (W₃)   30         4e-4      128       5
dtd         1.0    5e-4       frozen      20         4e-4      128       7
other       0.2    1e-3       frozen      recipe     4e-4      128       7
=========== ====== ========== =========== ========== ========= ========= ===

ViT (``'vit' in`` the backbone name, the code's own test), from
``vit_base_patch16_224_{cub,dtd}.yaml``: CUB phase 3 = 40 epochs, lr 1e-6, batch 128
(its phase-4 block is an ImageNet linear probe, not FineRNet's, so phase 4 keeps the
ResNet CUB values); DTD phase 3 = 20 epochs, lr 4e-4, batch 64, phase 4 = full
fine-tune of the α = 1.0 mix at lr 5e-4. ViT at 384 px (``384`` in the name), from
``vit_base_patch16_384_{cub,car,dog,dtd,flower}.yaml``: CUB α 0.7, lr 1e-3, phase-4
batch 64, phase 3 = 5 epochs, batch 64; Cars α 0.2, lr 2e-3, phase-4 batch 64, phase 3 =
20 epochs, batch 64; Dogs α 0.8, lr 2e-4, phase-4 batch 64, phase 3 = 20 epochs, batch
64; DTD and Flowers phase 3 = 20 epochs, batch 64 (their phase-4 blocks train from
ImageNet features, not FineRNet's: phase 4 falls back to the 224 table, then the ResNet
one). A ViT at 384 px trains and tests at 384 px at every scale (the code's
``RandomResizedCrop(384)``; timm's 384 models take no other size), recorded under
``notes.image_size``. Every ViT dataset without a config (Cars/Dogs/Flowers at 224)
takes the ResNet values. Phase-3 epochs apply at
``paper`` scale (otherwise the recipe's epochs); every other setting at every scale;
a suite's params override any of them. Phase 1 is the same recipe for every backbone,
except that a ViT at 384 px trains and tests at 384.
Inputs are normalised with ImageNet statistics, as the code's ``datasets.py`` does for
every model it runs — for its ViTs (``vit_base_patch16_224`` / ``_384``) too, whose timm
config says 0.5 (``input_norm: code``, default; ``timm``: the backbone's pretrained
config; any other backbone, another ViT family included, keeps its config either way). The test view is the recipe's (resize 256 → crop 224, the code's ``T.Resize(256)``),
except ViT at 384 px: resize 512 → crop 384 as the code's ``datasets.py``
(``eval_crop_pct`` 0.75, recorded under ``notes.eval_crop_pct``; a suite's
``eval_resize_size`` or ``eval_crop_pct`` wins).

Variants: ``code`` (default, the above); ``readme`` (phase 4 as the paper's README puts
it: re-train the whole multi-class model from the phase-3 weights, at the recipe's lr);
``single_step`` (phase 1 alone: the baseline); ``frozen_bn``; ``mining_test_view``;
``alpha_0.0`` … ``alpha_1.0`` (an α sweep of ``code``: a given α always interpolates,
so on Flowers-102 — whose code fine-tunes the unmixed phase-3 backbone — the sweep
trains a head on the frozen mix at the table's lr 1e-3; on ViT DTD it keeps the full
fine-tune). ``selection: val`` (default) selects every phase-1/4 epoch on the validation
split carved from train; ``selection: test`` (variant ``selection_test``) selects on the
test set and trains on the whole training set (no validation split carved), as the
released code does — for comparison with the paper only.

Our choices where the code differs or is silent: the fast pipeline stores each image
once, shorter side resized (to 256 for 224 px) and whole up to 3:1 (``crop_extent: full``),
so TrivialAugment runs on the whole image — each op as torchvision applies it to that
image alone, translations in the photo's own pixels as the code's (the cache records each
photo's size), Sharpness's smoothing at the stored size; ``crop_extent: square`` gives
the cache of earlier versions (each image's centre square, translated in stored pixels,
as is a dataset whose images are all square); ``pipeline:
classic`` would give the code's per-image transforms in phases 1 and 4 only, so it is
refused for the variants that mine and train pairs (``single_step`` takes it); bf16
autocast instead of fp16 + GradScaler; the code's phase-3 checkpoint rule (strict ``>`` on F1 from 0) saves nothing
if the F1 stays 0 — we then keep epoch 1; with fewer pairs than one batch we train on
that one partial batch (the code would train on none); integer BN buffers
(``num_batches_tracked``) come from the side with the larger α weight; the CNN head is
used for every non-ViT backbone.
"""

from __future__ import annotations

import dataclasses
import time

from fgvcbench.api import KNN_BACKENDS as BACKENDS
from fgvcbench.api import IMAGENET_MEAN, IMAGENET_STD, Method, RunContext, UserError, engine_seconds, hookimpl

from .pairs import mine_hard_pairs, train_view_embeddings
from .siamese import Siamese, head_config, interpolate_backbones, train_siamese

# The code's settings. phase4_full: the whole network trains in phase 4 (else the
# backbone is frozen); alpha None: no interpolation, the phase-3 backbone as it is.
BASE = {"alpha": 0.2, "phase4_lr": 1e-3, "phase4_full": False, "phase4_batch": None,
        "phase3_epochs": None, "phase3_lr": 4e-4, "phase3_batch": 128, "k": 7}
RESNET = {"cub": {"alpha": 0.2, "phase4_lr": 1e-3, "phase3_epochs": 100},
          "cars": {"alpha": 0.2, "phase4_lr": 1e-2, "phase3_epochs": 40},
          "dogs": {"alpha": 0.6, "phase4_lr": 1e-3, "phase3_epochs": 30},
          "flowers102": {"alpha": None, "phase4_lr": 1e-3, "phase4_full": True, "phase3_epochs": 30, "k": 5},
          "dtd": {"alpha": 1.0, "phase4_lr": 5e-4, "phase3_epochs": 20}}
VIT_224 = {"cub": {"phase3_epochs": 40, "phase3_lr": 1e-6, "phase3_batch": 128},
           "dtd": {"alpha": 1.0, "phase4_lr": 5e-4, "phase4_full": True,
                   "phase3_epochs": 20, "phase3_lr": 4e-4, "phase3_batch": 64}}
VIT_384 = {"cub": {"alpha": 0.7, "phase4_lr": 1e-3, "phase4_full": False, "phase4_batch": 64,
                   "phase3_epochs": 5, "phase3_lr": 4e-4, "phase3_batch": 64},
           "cars": {"alpha": 0.2, "phase4_lr": 2e-3, "phase4_full": False, "phase4_batch": 64,
                    "phase3_epochs": 20, "phase3_lr": 4e-4, "phase3_batch": 64},
           "dogs": {"alpha": 0.8, "phase4_lr": 2e-4, "phase4_full": False, "phase4_batch": 64,
                    "phase3_epochs": 20, "phase3_lr": 4e-4, "phase3_batch": 64},
           # their CLASS blocks train from ImageNet features (not FineRNet's phase 4): phase 3 only
           "dtd": {"phase3_epochs": 20, "phase3_lr": 4e-4, "phase3_batch": 64},
           "flowers102": {"phase3_epochs": 20, "phase3_lr": 4e-4, "phase3_batch": 64}}
# the settings a suite's params may set (α is the ``alpha`` param, read by phase4_plan)
PARAM_KEYS = ("phase4_lr", "phase4_batch", "phase3_epochs", "phase3_lr", "phase3_batch", "k")


def is_vit_384(backbone: str) -> bool:
    """A ViT at 384 px, by the code's own test (``'vit' in`` the name, ``384`` in it)."""
    return "vit" in backbone.lower() and "384" in backbone


def settings_for(backbone: str, dataset: str) -> dict:
    """The code's settings for a backbone and dataset: the ResNet table, then the ViT
    224 table and the ViT 384 table on top where they have the dataset. ``source``
    names the tables that contributed."""
    out, source = dict(BASE), ["default"]
    layers = [("resnet", RESNET)]
    if "vit" in backbone.lower():
        layers.append(("vit_224", VIT_224))
        if is_vit_384(backbone):
            layers.append(("vit_384", VIT_384))
    for name, table in layers:
        if dataset in table:
            out.update(table[dataset])
            source.append(name)
    out["source"] = "+".join(source)
    return out


def resolve_settings(params: dict, backbone: str, dataset: str) -> dict:
    """The table's settings with the suite's explicit (non-null) params on top."""
    out = settings_for(backbone, dataset)
    for key in PARAM_KEYS:
        if key in params and params[key] is not None:
            out[key] = params[key]
    return out


def phase4_plan(pipeline: str, alpha_param, s: dict, recipe_lr: float) -> dict:
    """How phase 4 starts and trains: ``alpha`` (α of W₁ in the mix; 0.0 = the phase-3
    backbone), ``full`` (the whole network trains; else the backbone is frozen), ``lr``."""
    if pipeline == "readme":   # the README: re-train the multi-class model from phase-3 weights
        return {"alpha": 0.0, "full": True, "lr": recipe_lr, "mode": "readme"}
    if alpha_param is None and s["alpha"] is None:   # the code's Flowers-102: phase-3 backbone, full fine-tune
        return {"alpha": 0.0, "full": True, "lr": s["phase4_lr"], "mode": "finetune_phase3"}
    alpha = alpha_param if alpha_param is not None else s["alpha"]
    # a given α on a dataset whose code does not interpolate: the code's generic mixed probe
    full = bool(s["phase4_full"]) and s["alpha"] is not None
    return {"alpha": float(alpha), "full": full, "lr": s["phase4_lr"], "mode": "mix_finetune" if full else "mix_probe"}


def _with_selection(data, selection: str):
    if selection == "test":  # the released code's protocol: select on the test set
        return dataclasses.replace(data, val=data.test)
    return data


def _phase1(ctx: RunContext, data):
    """Fine-tune with cross-entropy: the single-step baseline (a cached stage)."""
    inputs = {"dataset": ctx.spec.dataset, "backbone": ctx.identity["backbone"], "recipe": ctx.recipe.to_dict(),
              "seed": ctx.seed, "selection": ctx.params["selection"]}
    if ctx.fixed_norm is not None:   # inputs normalised otherwise than the backbone's config (input_norm: code)
        inputs["input_norm"] = [list(ctx.fixed_norm[0]), list(ctx.fixed_norm[1])]

    def train():
        model = ctx.create_model(data.num_classes)
        result = ctx.fit(model, _with_selection(data, ctx.params["selection"]), phase="1")
        return {"state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                "metrics": result.metrics}
    before = len(ctx.history)
    out = ctx.stage("finernet_phase1", train, inputs)
    ctx.notes["phase1_cached"] = len(ctx.history) == before
    model = ctx.create_model(data.num_classes)
    model.load_state_dict(out["state_dict"])
    return model, out["metrics"], inputs


# seed offsets of the augmentation streams (run seed · 1000 + offset)
INDEX_VIEW_OFFSET, QUERY_VIEW_OFFSET, PHASE3_OFFSET = 21, 22, 3


def _mining_inputs(ctx: RunContext, model1, data, view: str):
    """(index features, query features or None, query logits), on the run's device."""
    if view == "train":
        return train_view_embeddings(model1, data.train.images, ctx.augmenter(seed_offset=INDEX_VIEW_OFFSET),
                                     ctx.augmenter(seed_offset=QUERY_VIEW_OFFSET), ctx.recipe, ctx.device)
    feats = ctx.features(model1, data, "train").to(ctx.device)   # the torch kNN searches on the device
    return feats, None, ctx.predict(model1, data, "train")


def _fit_phase4(ctx: RunContext, model, data, recipe, *, full: bool, frozen_bn: bool):
    """Phase 4's training (a module-level hook, so a test can watch the backbone)."""
    if full:
        return ctx.fit(model, data, recipe, phase="4")
    return ctx.fit(model, data, recipe, freeze_backbone=True, freeze_bn=frozen_bn, phase="4")


def check_params(p: dict, recipe) -> None:
    """Values no run can use (called by the suite loader before any run starts)."""
    if p["alpha"] is not None and not 0 <= p["alpha"] <= 1:
        raise UserError(f"finernet alpha: {p['alpha']!r} — use a number in [0, 1] (the weight of W₁ in the mix)")
    for key in ("k", "phase3_epochs", "phase3_batch", "phase4_batch"):
        if p[key] is not None and p[key] < 1:
            raise UserError(f"finernet {key}: {p[key]!r} — use a positive integer, or null for the code's value")
    for key in ("phase3_lr", "phase4_lr"):
        if p[key] is not None and not 0 < p[key] < float("inf"):
            raise UserError(f"finernet {key}: {p[key]!r} — use a positive number, or null for the code's value")
    if not 0 <= p["phase3_momentum"] <= 1:
        raise UserError(f"finernet phase3_momentum: {p['phase3_momentum']!r} — use a number in [0, 1] (the code's 0.95)")
    if recipe.pipeline == "classic" and p["pipeline"] != "single_step":
        raise UserError("finernet: pipeline: classic (from a train: block) reaches phases 1 and 4 only — mining "
                        "and the Siamese phase run on the fast pipeline, so one run would mix two views; give this "
                        "methods entry its own train: {pipeline: fast} (the single_step variant may keep classic)")
    if not 0 <= p["phase3_weight_decay"] < float("inf"):
        raise UserError(f"finernet phase3_weight_decay: {p['phase3_weight_decay']!r} — use a number >= 0 "
                        f"(the code's 5e-4)")


# the ViTs the code runs (timm names, any pretrained tag): it normalises them with ImageNet statistics
CODE_VITS = ("vit_base_patch16_224", "vit_base_patch16_384")
# the code's ViT-384 test view (datasets.py, vit_base_patch16_384): Resize(512) → CenterCrop(384)
VIT_384_CROP_PCT = 384 / 512


def code_test_view(recipe, backbone: str):
    """The recipe with the code's views for ``backbone``: ViT at 384 px trains and tests at
    384 (timm's 384 models take no other size) and resizes to 512 for the test crop
    (``eval_crop_pct`` 0.75); every other backbone keeps the recipe's (256 → 224, the
    code's too). A test view the suite set (``eval_resize_size`` / ``eval_crop_pct``) wins."""
    if not is_vit_384(backbone):
        return recipe
    if recipe.image_size != 384:
        recipe = recipe.replace(image_size=384, eval_image_size=None)
    if recipe.eval_resize_size is None and recipe.eval_crop_pct is None:
        recipe = recipe.replace(eval_crop_pct=VIT_384_CROP_PCT)
    return recipe


def run_finernet(ctx: RunContext) -> dict:
    p = ctx.params
    view = code_test_view(ctx.recipe, ctx.spec.backbone["name"])
    if view != ctx.recipe:
        if view.image_size != ctx.recipe.image_size:
            ctx.notes["image_size"] = view.image_size
        ctx.recipe = view
        ctx.notes["eval_crop_pct"] = view.eval_crop_pct
    if p["input_norm"] == "code" and ctx.spec.backbone["name"].split(".")[0] in CODE_VITS:
        ctx.normalize_with(IMAGENET_MEAN, IMAGENET_STD)   # datasets.py: ImageNet statistics for every model
        ctx.notes["input_norm"] = "imagenet (the code's)"
    # selection: test is the released code's protocol: it trains on the whole training set
    data = ctx.load_data(val_fraction=0.0 if p["selection"] == "test" else None)
    model1, m1, inputs1 = _phase1(ctx, data)
    metrics = {"phase1_top1": m1["top1"]}
    if p["pipeline"] == "single_step":
        return {**m1, **metrics}
    backbone, dataset = ctx.spec.backbone["name"], ctx.spec.dataset["name"]
    s = resolve_settings(p, backbone, dataset)
    ctx.notes["settings"] = s
    k = int(s["k"])

    mining_inputs = {**inputs1, "k": k, "mining_view": p["mining_view"], "knn_backend": p["knn_backend"],
                     "view_offsets": [INDEX_VIEW_OFFSET, QUERY_VIEW_OFFSET]}

    def mine():
        index, queries, logits = _mining_inputs(ctx, model1, data, p["mining_view"])
        started = time.perf_counter()
        pairs, stats = mine_hard_pairs(index, data.train.labels, logits, k=k, backend=p["knn_backend"],
                                       queries=queries)
        stats["mining_seconds"] = time.perf_counter() - started   # search + pair rules, the chosen engine
        # the neighbour search alone, per kNN engine, on the whole training set's features
        for engine, seconds in engine_seconds(index, data.train.labels, k + 1).items():
            stats[f"knn_seconds_{engine}"] = seconds
        return {"pairs": pairs, "stats": stats}
    mined = ctx.stage("finernet_pairs", mine, mining_inputs)
    ctx.notes["pairs"] = mined["stats"]
    ctx.notes["mining_view"] = p["mining_view"]
    metrics.update({f"pairs_{name}": v for name, v in mined["stats"].items()})

    phase3_epochs = s["phase3_epochs"] if p["phase3_epochs"] is not None or ctx.spec.scale == "paper" else None
    phase3_epochs = int(phase3_epochs or ctx.recipe.epochs)
    head = head_config(backbone)
    phase3_inputs = {**mining_inputs, "epochs": phase3_epochs, "lr": s["phase3_lr"], "momentum": p["phase3_momentum"],
                     "wd": p["phase3_weight_decay"], "batch": int(s["phase3_batch"]), "head": head,
                     "checkpoint": "best_train_pair_f1", "aug_offset": PHASE3_OFFSET}

    def phase3():
        siamese = Siamese(ctx.create_model(data.num_classes), **head)
        siamese.backbone.load_state_dict(model1.state_dict())
        started = time.perf_counter()
        history, best = train_siamese(siamese, data.train.images, mined["pairs"],
                                      ctx.augmenter(seed_offset=PHASE3_OFFSET), epochs=phase3_epochs,
                                      lr=s["phase3_lr"], momentum=p["phase3_momentum"],
                                      weight_decay=p["phase3_weight_decay"], batch_size=int(s["phase3_batch"]),
                                      device=ctx.device, seed=ctx.seed, amp=ctx.recipe.amp)
        ctx.train_seconds += time.perf_counter() - started
        ctx.images_seen += 2 * sum(row["pairs_seen"] for row in history)
        ctx.history.extend(history)
        return {"state_dict": best["state_dict"], "pair_accuracy": best["pair_accuracy"],
                "pair_f1": best["pair_f1"], "best_epoch": best["epoch"]}
    w3 = ctx.stage("finernet_phase3", phase3, phase3_inputs)
    metrics.update(phase3_pair_accuracy=w3["pair_accuracy"], phase3_pair_f1=w3["pair_f1"],
                   phase3_best_epoch=w3["best_epoch"])

    plan = phase4_plan(p["pipeline"], p["alpha"], s, ctx.recipe.lr)
    model = ctx.create_model(data.num_classes)
    classifier = _classifier_prefix(model)
    mixed = interpolate_backbones(model1.state_dict(), w3["state_dict"], plan["alpha"], classifier)
    missing, _ = model.load_state_dict(mixed, strict=False)
    if any(not name.startswith(classifier) for name in missing):
        raise UserError(f"finernet: backbone tensors missing after interpolation: {missing[:3]}")
    recipe4 = ctx.recipe.replace(lr=plan["lr"], batch_size=int(s["phase4_batch"] or ctx.recipe.batch_size))
    ctx.notes.update(alpha=plan["alpha"], phase4_lr=plan["lr"], phase4_mode=plan["mode"],
                     phase4_batch=recipe4.batch_size,
                     phase4_bn="all trained" if plan["full"] else ("frozen" if p["frozen_bn"] else "train mode"))
    result = _fit_phase4(ctx, model, _with_selection(data, p["selection"]), recipe4,
                         full=plan["full"], frozen_bn=bool(p["frozen_bn"]))
    metrics.update(result.metrics)
    metrics["delta_vs_single_step"] = result.metrics["top1"] - m1["top1"]
    return metrics


def _classifier_prefix(model) -> str:
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name + "."
    raise UserError("finernet needs a backbone with a classifier (get_classifier)")


ALPHAS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
FINERNET = Method(
    name="finernet",
    run=run_finernet,
    description="FineRNet: hard-pair Siamese phase, then α-interpolated backbone and a new head",
    # null: the code's value for the backbone family and dataset (settings_for)
    params={"pipeline": "code", "alpha": None, "phase4_lr": None, "phase4_batch": None, "k": None,
            "selection": "val", "mining_view": "train", "frozen_bn": False, "knn_backend": "auto",
            "phase3_epochs": None, "phase3_lr": None, "phase3_momentum": 0.95, "phase3_weight_decay": 5e-4,
            "phase3_batch": None, "input_norm": "code"},
    param_types={"alpha": (float, None), "phase4_lr": (float, None), "phase4_batch": (int, None),
                 "k": (int, None), "phase3_epochs": (int, None), "phase3_lr": (float, None),
                 "phase3_batch": (int, None)},
    param_choices={"pipeline": ("code", "readme", "single_step"), "selection": ("val", "test"),
                   "mining_view": ("train", "test"), "knn_backend": BACKENDS, "input_norm": ("code", "timm")},
    check=check_params,
    variants={"default": {}, "code": {}, "readme": {"pipeline": "readme"}, "single_step": {"pipeline": "single_step"},
              "selection_test": {"selection": "test"}, "frozen_bn": {"frozen_bn": True},
              "mining_test_view": {"mining_view": "test"},
              **{f"alpha_{a:.1f}": {"alpha": a} for a in ALPHAS}},
    # phase 1 as the code trains it (configs.py CLASS defaults, datasets.py transforms):
    # SGD lr 1e-3, momentum 0.9, wd 1e-3, no schedule, batch 128; TrivialAugmentWide with
    # p 0.5 on the whole image → RandomResizedCrop(scale 0.08–1) → flip. Phases 2–4 use
    # the same augmentation.
    recipe={"optimizer": "sgd", "nesterov": False, "momentum": 0.9, "weight_decay": 1e-3, "scheduler": "none",
            "batch_size": 128, "augment": "trivial_augment", "policy_p": 0.5,
            "policy_before_crop": True, "crop_scale_min": 0.08, "lr": 1e-3},
    scales={"paper": {"epochs": 100, "image_size": 224}},
)


@hookimpl
def fgvcbench_methods():
    return [FINERNET]

"""The refined training recipe, one named step at a time.

Source: "A Refined Training Recipe for Fine-Grained Visual Classification" (ResNet-50,
Stanford Cars cropped to boxes). Each step is a pure ``Recipe -> Recipe`` function
registered through the recipe-step hook; the order is data (the ``steps`` parameter of
the ``recipe`` method, a YAML list in a suite). The ``recipe`` method applies its steps,
in order, to the suite's resolved recipe (scale preset + ``train:``) and fine-tunes.

Article steps (adopted, in the article's order): ``base``, ``large_batch_warmup``,
``trivial_augment``, ``cosine``, ``label_smoothing``, ``random_erasing``, ``ema``.
Tried and not adopted there: ``weight_decay``, ``mixup_cutmix``, ``autoaugment``,
``adamw``. From torchvision's "How to train state-of-the-art models" recipe:
``long_training``, ``repeated_augmentation``, ``fixres``, ``no_decay_norm``,
``ema_torchvision``.

Where the article is silent we follow torchvision's reference ``train.py``, on which the
recipe is built: TrivialAugmentWide / AutoAugment resample bilinearly (its ``presets.py``
passes ``--interpolation``, bilinear by default; torchvision's own default is nearest); warmup and schedule move the lr once per epoch (``lr_step: epoch``, set
by ``base``: torchvision steps its schedulers per epoch, so the first warmup epoch runs at
0.01·lr throughout); EMA decay is adjusted by batch size, EMA steps and epochs
(``ema_adjust``; ``ema_unadjusted`` is the article's 0.994 read literally, for a
comparison row); mixup α 0.2 / cutmix α 1.0, one of the two per batch with equal
probability. Steps never touch ``epochs`` or ``image_size`` except ``long_training``
(×4 epochs) and ``fixres`` (train at 176/224 of the size; test: resize 232/224, crop the
size), so a scale
preset keeps its budget.
"""

from __future__ import annotations

from fgvcbench.api import Method, Recipe, RecipeStep, RunContext, hookimpl

ARTICLE_STEPS = ["base", "large_batch_warmup", "trivial_augment", "cosine", "label_smoothing",
                 "random_erasing", "ema"]
REJECTED_STEPS = ["weight_decay", "mixup_cutmix", "autoaugment", "adamw"]
TORCHVISION_STEPS = ["long_training", "repeated_augmentation", "fixres", "no_decay_norm", "ema_torchvision"]


def base(r: Recipe) -> Recipe:
    """NAG, lr 0.01, momentum 0.9, batch 32, plain cross-entropy, standard augmentation; the
    lr schedule (from large_batch_warmup on) moves once per epoch, as torchvision's train.py."""
    return r.replace(optimizer="sgd", nesterov=True, lr=0.01, momentum=0.9, batch_size=32, weight_decay=0.0,
                     lr_step="epoch",
                     scheduler="none", warmup_epochs=0, label_smoothing=0.0, augment="standard",
                     random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, ema_steps=0, ema_decay=0.0,
                     repeated_augment=1, eval_image_size=None, eval_resize_size=None, eval_crop_pct=None,
                     no_decay_norm=False)


def large_batch_warmup(r: Recipe) -> Recipe:
    """Batch 128 with lr 0.1 (the article's value, not a linear scaling of 0.01), StepLR(30, 0.1),
    5 warmup epochs from 0.01·lr."""
    return r.replace(batch_size=128, lr=0.1, scheduler="step", step_size=30, gamma=0.1, warmup_epochs=5,
                     warmup_start_factor=0.01)


def trivial_augment(r: Recipe) -> Recipe:
    """TrivialAugmentWide replaces the standard policy (crop + flip stay); its geometric ops
    resample bilinearly, as torchvision's reference scripts pass."""
    return r.replace(augment="trivial_augment", policy_interpolation="bilinear")


def cosine(r: Recipe) -> Recipe:
    """Cosine annealing to 0 replaces StepLR (after the warmup)."""
    return r.replace(scheduler="cosine")


def label_smoothing(r: Recipe) -> Recipe:
    """ε = 0.1, and the learning rate raised to 0.4."""
    return r.replace(label_smoothing=0.1, lr=0.4)


def random_erasing(r: Recipe) -> Recipe:
    """RandomErasing with p = 0.1."""
    return r.replace(random_erasing=0.1)


def ema(r: Recipe) -> Recipe:
    """EMA of the weights, updated every 32 steps, decay 0.994 (adjusted as torchvision's
    reference does; evaluation uses the EMA weights)."""
    return r.replace(ema_steps=32, ema_decay=0.994, ema_adjust=True)


def weight_decay(r: Recipe) -> Recipe:
    """Weight decay 2e-5 on every parameter (tried, not adopted by the article)."""
    return r.replace(weight_decay=2e-5)


def mixup_cutmix(r: Recipe) -> Recipe:
    """Mixup (α 0.2) or CutMix (α 1.0), chosen at random with equal probability per batch."""
    return r.replace(mixup_alpha=0.2, cutmix_alpha=1.0)


def autoaugment(r: Recipe) -> Recipe:
    """AutoAugment's ImageNet policy replaces the augmentation policy (bilinear resampling,
    as torchvision's reference scripts pass)."""
    return r.replace(augment="autoaugment", policy_interpolation="bilinear")


def adamw(r: Recipe) -> Recipe:
    """AdamW (lr 1e-3, weight decay 0.05) replaces SGD — the 'other optimizers' row."""
    return r.replace(optimizer="adamw", lr=1e-3, weight_decay=0.05)


def long_training(r: Recipe) -> Recipe:
    """Four times the epochs (our factor: the torchvision blog went from 90 to 600, ≈ 6.7×,
    at ImageNet scale; ×4 keeps a scale preset's budget within reach)."""
    return r.replace(epochs=r.epochs * 4)


def repeated_augmentation(r: Recipe) -> Recipe:
    """Repeated augmentation with 4 repetitions (torchvision's --ra-reps 4)."""
    return r.replace(repeated_augment=4)


def fixres(r: Recipe) -> Recipe:
    """FixRes mitigation as torchvision's recipe runs it (``--train-crop-size 176
    --val-resize-size 232``, val crop 224): train at 176/224 of the size; test by resizing
    to 232/224 of it and centre-cropping the size itself."""
    size = r.image_size
    return r.replace(image_size=max(16, round(size * 176 / 224)), eval_image_size=size,
                     eval_resize_size=round(size * 232 / 224))


def no_decay_norm(r: Recipe) -> Recipe:
    """Weight decay 2e-5 (or the decay an earlier step set) with none on normalisation
    layers (the blog's tuning: ``--wd 2e-5 --norm-weight-decay 0``; other biases keep
    their decay, as there)."""
    return r.replace(weight_decay=r.weight_decay or 2e-5, no_decay_norm=True)


def ema_unadjusted(r: Recipe) -> Recipe:
    """The article's EMA read literally: every 32 steps, decay 0.994 with no adjustment
    (``ema`` adjusts it as torchvision's train.py does)."""
    return r.replace(ema_steps=32, ema_decay=0.994, ema_adjust=False)


def ema_torchvision(r: Recipe) -> Recipe:
    """torchvision's EMA: every 32 steps, decay 0.99998 adjusted by batch size, steps, epochs."""
    return r.replace(ema_steps=32, ema_decay=0.99998, ema_adjust=True)


def _summary(doc: str | None) -> str:
    """A step's description: its docstring's first paragraph as one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


STEPS = [RecipeStep(name=f.__name__, apply=f, description=_summary(f.__doc__))
         for f in (base, large_batch_warmup, trivial_augment, cosine, label_smoothing, random_erasing, ema,
                   weight_decay, mixup_cutmix, autoaugment, adamw, long_training, repeated_augmentation, fixres,
                   no_decay_norm, ema_torchvision, ema_unadjusted)]


def run_recipe(ctx: RunContext) -> dict:
    """Apply the steps in order to the suite's recipe, then fine-tune the backbone."""
    recipe = ctx.apply_steps(ctx.recipe, ctx.params["steps"])
    ctx.notes["applied_recipe"] = recipe.to_dict()
    data = ctx.load_data(image_size=recipe.data_size, crop_extent=recipe.crop_extent)
    model = ctx.create_model(data.num_classes)
    return ctx.fit(model, data, recipe).metrics


RECIPE = Method(
    name="recipe",
    run=run_recipe,
    description="fine-tuning under an ordered list of recipe steps (the refined-recipe article)",
    params={"steps": list(ARTICLE_STEPS)},
    variants={"default": {}, "base": {"steps": ["base"]}},
    # the article's budget: 600 epochs, early stopping patience 200, 224 px
    scales={"paper": {"epochs": 600, "patience": 200, "image_size": 224}},
)


@hookimpl
def fgvcbench_recipe_steps():
    return STEPS


@hookimpl
def fgvcbench_methods():
    return [RECIPE]

"""The training recipe: one frozen dataclass holding every knob, and named steps on it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from fgvcbench.errors import yaml_number_hint

AUGMENT_POLICIES = ("none", "flip", "standard", "trivial_augment", "autoaugment")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("none", "step", "cosine")
INTERPOLATIONS = ("nearest", "bilinear")
LR_STEPS = ("iteration", "epoch")
PIPELINES = ("fast", "classic")
CROP_EXTENTS = ("full", "square")   # the fast pipeline's cache: fgvcbench.data.pipeline
ERASING_VALUES = ("zero", "random")
STOP_ON = ("top1", "loss")


@dataclass(frozen=True)
class Recipe:
    """Every training knob, with the defaults of the refined-recipe article's *base*
    (NAG, lr 0.01, momentum 0.9, batch 32, cross-entropy, standard augmentation) — except
    ``lr_step``, ``iteration`` here, which the ``base`` step sets to ``epoch``.

    ``patience`` is early stopping on the validation split, in epochs (``None``: train
    all epochs, still selecting the best validation epoch). ``val_fraction`` is the part
    of each training class carved off for validation when a dataset has no official
    validation split.
    """

    epochs: int = 10
    image_size: int = 224
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    no_decay_norm: bool = False       # torchvision recipe: no weight decay on norm/bias
    scheduler: str = "none"
    step_size: int = 30               # StepLR step, epochs
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.01  # linear warmup from factor·lr to lr
    label_smoothing: float = 0.0
    augment: str = "standard"
    policy_p: float = 1.0             # probability a sample gets the augment policy (FineRNet: 0.5)
    # how the policy's geometric ops resample: nearest (torchvision's TrivialAugmentWide /
    # AutoAugment default, FineRNet's code) or bilinear (what torchvision's reference scripts
    # pass). In to_dict (run ids) only when set.
    policy_interpolation: str = dataclasses.field(default="nearest", metadata={"hash_if_set": True})
    policy_before_crop: bool = False  # policy on the whole image, then crop (FineRNet's code); else after
                                      # RandomResizedCrop + flip, as torchvision's reference recipe
    crop_scale_min: float = 0.08      # RandomResizedCrop lower scale bound (torchvision's default)
    # RandomRotation(±d°) of the whole image before the crop, corners filled with 0 (SimTrans's
    # code: 30). In to_dict (and so run ids) only when set: adding it kept every earlier run id.
    rotation_degrees: float = dataclasses.field(default=0.0, metadata={"hash_if_set": True})
    random_erasing: float = 0.0       # probability
    random_erasing_value: str = "zero"  # zero: torchvision's RandomErasing(value=0), as its reference recipe;
                                        # random: per-pixel normal noise (value='random', timm's re_mode='pixel')
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_steps: int = 0                # update EMA every N optimizer steps (0 = off)
    ema_decay: float = 0.0
    ema_adjust: bool = True           # torchvision reference: scale (1 - decay) by batch·steps/epochs
    repeated_augment: int = 1         # RASampler repeats: each drawn image k times per epoch
    eval_image_size: int | None = None  # test centre-crop size (None = image_size); FixRes tests larger
    eval_resize_size: int | None = None  # resize before that crop (None = crop / eval_crop_pct)
    # the test crop's share of the resized image (timm's crop_pct): resize to round(crop / pct),
    # e.g. SimTrans's code 224/255; None = 0.875 (256 for 224). eval_resize_size, when set, wins.
    # In to_dict (run ids) only when set.
    eval_crop_pct: float | None = dataclasses.field(default=None, metadata={"hash_if_set": True})
    patience: int | None = None
    # when warmup and schedule move the lr: every iteration, or once per epoch as torchvision's
    # reference train.py steps its schedulers (its first warmup epoch all at the start factor).
    # In to_dict (run ids) only when set.
    lr_step: str = dataclasses.field(default="iteration", metadata={"hash_if_set": True})
    # what early stopping watches: validation top-1 (also what selects the epoch), or the
    # validation loss (Lightning's EarlyStopping('val_loss'), the fine-label seed's); no stop
    # before min_epochs (Lightning's Trainer(min_epochs)). In to_dict (run ids) only when set.
    stop_on: str = dataclasses.field(default="top1", metadata={"hash_if_set": True})
    min_epochs: int = dataclasses.field(default=0, metadata={"hash_if_set": True})
    val_fraction: float = 0.1
    pipeline: str = "fast"            # fast: decode once, augment batches on the device; classic: DataLoader
    # what of each image the fast pipeline's cache keeps for RandomResizedCrop to draw from:
    # full (the whole image, up to 3:1, as torchvision's transforms see it) or square (its
    # centre square, the cache before full existed). The engine's classic loop reads whole
    # images whatever it says; a method's own loop on the tensors (SimTrans's) still follows
    # it. In to_dict (run ids) under pipeline: classic only when set to square.
    crop_extent: str = dataclasses.field(default="full", metadata={"fast_only": True})
    amp: bool = True                  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True        # on CUDA
    compile: bool = False             # torch.compile the model
    grad_clip: float | None = None
    eval_batch_size: int = 256

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def changes_from(self, before: "Recipe") -> dict[str, Any]:
        """The fields whose value here differs from ``before``'s, with this recipe's values
        (in field order): what a step that turned ``before`` into this one set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(before, f.name)}

    def override(self, changes: Mapping[str, Any]) -> "Recipe":
        """This recipe with ``changes`` from data (a suite, a method's params): names and
        types are checked and the result validated; ValueError says which field is wrong."""
        unknown = [k for k in changes if k not in RECIPE_FIELDS]
        if unknown:
            raise ValueError(f"no recipe field {unknown[0]!r} (fields: {', '.join(RECIPE_FIELDS)})")
        coerced = {}
        for key, value in changes.items():
            try:
                coerced[key] = coerce_recipe_value(key, value)
            except TypeError as exc:
                raise ValueError(f"recipe {key}: {exc}") from None
        out = self.replace(**coerced)
        problems = out.validate()
        if problems:
            raise ValueError(f"recipe {problems[0][0]} {problems[0][1]}")
        return out

    def inert_fields(self) -> dict[str, str]:
        """The fields set away from their defaults that this recipe's other values leave
        without effect in the engine (:data:`INERT_WHEN`) — a step size without a step
        schedule, a policy's settings without a policy, … —, each with why."""
        values = {f: getattr(self, f) for f in RECIPE_FIELDS}
        return {name: why.format(**values) for applies, names, why in INERT_WHEN if applies(self) for name in names
                if values[name] != RECIPE_FIELDS[name].default}

    def effective(self) -> "Recipe":
        """This recipe with every field it leaves without effect back at its default: two
        recipes that train alike in the engine have the same ``effective()``. Only for a
        recipe as it trains — after a method's steps and overrides, which can give such a
        field its effect back (``policy_p`` before a step that sets a policy) — so run ids,
        which hash a suite's recipe before those, keep every field as given."""
        inert = self.inert_fields()
        return self.replace(**{name: RECIPE_FIELDS[name].default for name in inert}) if inert else self

    def to_dict(self) -> dict[str, Any]:
        """Every field, except one added after records existed (``hash_if_set`` in its
        metadata) while it holds its default: run ids, the leaderboard's configuration key
        and cached-stage keys all hash this dict, so adding such a field keeps every earlier
        record and cache valid — and except a fast pipeline's field (``fast_only``) at its
        default under ``pipeline: classic``, whose runs kept their ids. ``Recipe(**d)`` gives
        the recipe back."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not (f.metadata.get("hash_if_set") and getattr(self, f.name) == f.default)
                and not (f.metadata.get("fast_only") and self.pipeline == "classic"
                         and getattr(self, f.name) == f.default)}

    @property
    def data_size(self) -> int:
        """The crop size the stored images must serve: training crops and the test view's
        resize (``load_size_for`` of this is the cached image size)."""
        from fgvcbench.data.pipeline import CROP_RATIO
        eval_crop = self.eval_image_size or self.image_size
        resize = self.eval_resize or 0
        return max(self.image_size, eval_crop, int(round(resize * CROP_RATIO)))

    @property
    def eval_resize(self) -> int | None:
        """The test view's resize before its centre crop: ``eval_resize_size``, else
        round(crop / ``eval_crop_pct``), else None (the crop / 0.875 default)."""
        if self.eval_resize_size is not None:
            return self.eval_resize_size
        if self.eval_crop_pct is not None:
            return int(round((self.eval_image_size or self.image_size) / self.eval_crop_pct))
        return None

    def validate(self) -> list[tuple[str, str]]:
        """Return ``(field, problem)`` pairs; empty when the recipe is usable."""
        problems = []
        positive_ints = ("epochs", "image_size", "batch_size", "step_size", "eval_batch_size")
        for name in positive_ints:
            if getattr(self, name) < 1:
                problems.append((name, f"must be >= 1, got {getattr(self, name)}"))
        if self.image_size < 16:
            problems.append(("image_size", f"must be >= 16 pixels, got {self.image_size}"))
        for name in ("image_size", "eval_image_size", "eval_resize_size"):   # a typo's extra digits
            if (getattr(self, name) or 0) > MAX_IMAGE_SIZE:
                problems.append((name, f"must be <= {MAX_IMAGE_SIZE} pixels, got {getattr(self, name)}"))
        for f in dataclasses.fields(self):   # .nan / .inf in YAML: a number that trains nothing
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append((f.name, f"must be a finite number, got {value}"))
        if self.lr <= 0:
            problems.append(("lr", f"must be > 0, got {self.lr}"))
        if not self.gamma > 0:
            problems.append(("gamma", f"must be > 0 (the lr factor per step), got {self.gamma}"))
        if self.grad_clip is not None and not self.grad_clip >= 0:
            problems.append(("grad_clip", f"must be the largest gradient norm (0 or null: no clipping), got "
                                          f"{self.grad_clip}"))
        for name in ("momentum", "label_smoothing", "random_erasing", "warmup_start_factor",
                     "ema_decay", "policy_p"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append((name, f"must be in [0, 1], got {getattr(self, name)}"))
        if not 0 <= self.val_fraction < 1:
            problems.append(("val_fraction", f"must be in [0, 1), got {self.val_fraction}"))
        if self.pipeline == "classic" and self.repeated_augment > 1:
            problems.append(("repeated_augment", f"{self.repeated_augment} needs the fast pipeline (its sampler "
                                                 f"repeats images; the classic DataLoader has none) — set "
                                                 f"repeated_augment: 1 or pipeline: fast"))
        if not 0 < self.crop_scale_min <= 1:
            problems.append(("crop_scale_min", f"must be in (0, 1], got {self.crop_scale_min}"))
        if not 0 <= self.rotation_degrees <= 180:
            problems.append(("rotation_degrees", f"must be in [0, 180], got {self.rotation_degrees}"))
        for name in ("weight_decay", "mixup_alpha", "cutmix_alpha", "warmup_epochs", "ema_steps"):
            if getattr(self, name) < 0:
                problems.append((name, f"must be >= 0, got {getattr(self, name)}"))
        if self.repeated_augment < 1:
            problems.append(("repeated_augment", f"must be >= 1, got {self.repeated_augment}"))
        for name, most in LIMITS.items():   # a typo's extra digits: would run for ever or fill the memory
            value = getattr(self, name)
            if value is not None and value > most:
                problems.append((name, f"must be <= {most:,}, got {value:,}" if isinstance(value, int)
                                 else f"must be <= {most:,}, got {value}"))
        for name in ("eval_image_size", "eval_resize_size"):
            if getattr(self, name) is not None and getattr(self, name) < 16:
                problems.append((name, f"must be >= 16 pixels or null, got {getattr(self, name)}"))
        if (self.eval_resize_size is not None
                and self.eval_resize_size < (self.eval_image_size or self.image_size)):
            problems.append(("eval_resize_size", f"must be >= the test crop {self.eval_image_size or self.image_size}, "
                                                 f"got {self.eval_resize_size}"))
        if self.eval_crop_pct is not None and not 0 < self.eval_crop_pct <= 1:
            problems.append(("eval_crop_pct", f"must be in (0, 1] or null (0.875: resize 256 for a 224 crop), "
                                              f"got {self.eval_crop_pct}"))
        elif self.eval_crop_pct is not None and self.eval_resize_size is None and self.eval_resize > MAX_IMAGE_SIZE:
            problems.append(("eval_crop_pct", f"resizes the test view to {self.eval_resize} pixels, over "
                                              f"{MAX_IMAGE_SIZE}: use a larger share (0.875 is usual)"))
        if self.patience is not None and self.patience < 1:
            problems.append(("patience", f"must be >= 1 or null, got {self.patience}"))
        if self.min_epochs < 0:
            problems.append(("min_epochs", f"must be >= 0, got {self.min_epochs}"))
        for name, allowed in (("augment", AUGMENT_POLICIES), ("optimizer", OPTIMIZERS),
                              ("scheduler", SCHEDULERS), ("pipeline", PIPELINES),
                              ("random_erasing_value", ERASING_VALUES), ("stop_on", STOP_ON),
                              ("lr_step", LR_STEPS), ("policy_interpolation", INTERPOLATIONS),
                              ("crop_extent", CROP_EXTENTS)):
            if getattr(self, name) not in allowed:
                problems.append((name, f"must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"))
        return problems


RECIPE_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Recipe)}
# a problem ``validate`` names by one field that other fields' values cause too: where a
# suite set one of these and not the named field, its error points at that one
RELATED_FIELDS = {"repeated_augment": ("pipeline",),
                  "eval_resize_size": ("eval_image_size", "image_size"),
                  "eval_crop_pct": ("eval_image_size", "image_size")}


POLICIES = ("trivial_augment", "autoaugment")
# (when, fields, why): while ``when(recipe)`` holds, nothing the engine (fast or classic
# pipeline, training loop, optimiser) reads depends on ``fields`` (Recipe.effective puts
# them back at their defaults; an ablation row whose step changes only such fields says so).
# tests/test_recipe.py trains such pairs and compares the weights.
INERT_WHEN: tuple[tuple[Callable[["Recipe"], bool], tuple[str, ...], str], ...] = (
    (lambda r: r.augment not in POLICIES, ("policy_p", "policy_interpolation", "policy_before_crop"),
     "augment: {augment} runs no policy"),
    (lambda r: r.augment in ("none", "flip"), ("crop_scale_min",), "augment: {augment} crops no smaller share"),
    (lambda r: r.augment == "none", ("rotation_degrees",), "augment: none trains on the test view"),
    (lambda r: r.scheduler != "step", ("step_size", "gamma"), "scheduler: {scheduler} takes no steps"),
    (lambda r: r.warmup_epochs == 0, ("warmup_start_factor",), "warmup_epochs is 0"),
    (lambda r: r.scheduler == "none" and r.warmup_epochs == 0, ("lr_step",),
     "the lr never moves (scheduler: none, no warmup)"),
    (lambda r: r.ema_steps == 0, ("ema_decay", "ema_adjust"), "ema_steps is 0 (no EMA)"),
    (lambda r: r.random_erasing == 0, ("random_erasing_value",), "random_erasing is 0"),
    (lambda r: r.optimizer == "adamw", ("momentum", "nesterov"), "optimizer: adamw takes no momentum"),
    (lambda r: r.optimizer == "sgd" and r.momentum == 0, ("nesterov",), "momentum is 0"),
    (lambda r: r.weight_decay == 0, ("no_decay_norm",), "weight_decay is 0"),
    (lambda r: r.patience is None, ("stop_on", "min_epochs"), "patience is null (no early stopping)"),
    (lambda r: r.eval_resize_size is not None, ("eval_crop_pct",), "eval_resize_size sets the test resize"),
)


# larger than any FGVC protocol trains (448–600 px): 100000 is a typo, caught before a decode
# cache of that size is attempted
MAX_IMAGE_SIZE = 4096
# upper bounds no real recipe reaches (the article's 600 epochs; torchvision's repeated
# augmentation 4): larger values are typos that would train for ever or fill the memory
LIMITS = {"epochs": 100_000, "min_epochs": 100_000, "warmup_epochs": 100_000, "step_size": 100_000,
          "patience": 100_000, "batch_size": 1_000_000, "eval_batch_size": 1_000_000, "repeated_augment": 64,
          "ema_steps": 10_000_000}


def coerce_recipe_value(name: str, value: Any) -> Any:
    """Check a YAML value's type against the field; ints are accepted for floats."""
    field = RECIPE_FIELDS[name]
    default = field.default
    if default is None and value is None:   # an optional field (``int | None``, ``float | None``)
        return None
    expected = type(default) if default is not None else (float if str(field.type).startswith("float") else int)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        hint = yaml_number_hint(value, expected is int)
        raise TypeError(f"expected {expected.__name__}, got {type(value).__name__} {value!r}{hint}")
    return value


def recipe_from_mapping(base: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    return base.replace(**{k: coerce_recipe_value(k, v) for k, v in overrides.items()})


@dataclass(frozen=True)
class RecipeStep:
    """A named change to a recipe, e.g. ``label_smoothing``: ε = 0.1 and lr 0.4.
    ``apply`` must be pure: Recipe in, new Recipe out."""

    name: str
    apply: Callable[[Recipe], Recipe]
    description: str = ""

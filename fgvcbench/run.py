"""Executing one :class:`RunSpec`: the services a method gets (:class:`RunContext`) and
the record that comes out (metrics, history, cost, provenance)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import platform
import re
import resource
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

import fgvcbench
from fgvcbench.data.base import DatasetRequest, DatasetSplits, leaked_paths
from fgvcbench.data.pipeline import TensorData, TensorSplit, build_tensor_data
from fgvcbench.engine.recipe import MAX_IMAGE_SIZE, RELATED_FIELDS, Recipe
from fgvcbench.engine.train import IMAGENET_MEAN, IMAGENET_STD, FitResult, accuracy_metrics, fit, predict
from fgvcbench.errors import DataError, DivergedError, PluginError, UserError, first_line, kind_of, yaml_text
from fgvcbench.plugins import Registry
from fgvcbench.spec import RunSpec, canonical_json
from fgvcbench.store import SCHEMA, Store, temp_suffix


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} — use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError(f"device {name!r} asked for but Apple's MPS is not available here — use device: auto or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but CUDA is not available — use device: auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s) — use "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}, cuda or auto")
    return device


def apply_steps(registry, recipe: Recipe, steps: list[str]) -> Recipe:
    """``recipe`` after the named recipe steps (the recipe-step hook's), in order; a
    UserError for an unknown step, a step that raises or returns something other than a
    Recipe (naming the step and its plugin), or a recipe no run can use."""
    import dataclasses
    trail = [("", recipe)]   # (step, the recipe after it)
    for name in steps:
        step = registry.recipe_steps.get(name)
        if step is None:
            raise UserError(f"unknown recipe step {name!r} — `fgvcbench plugins` lists the steps")
        plugin = registry.origin.get(("recipe_steps", name))
        of = f" (plugin {plugin!r})" if plugin else ""
        try:
            changed = step.apply(recipe)
        except UserError:
            raise
        except dataclasses.FrozenInstanceError as exc:
            raise UserError(f"recipe step {name!r}{of} assigns to the recipe it is given ({first_line(exc)}) — a "
                            "Recipe is frozen: return a new one, recipe.replace(field=value)") from exc
        except Exception as exc:  # noqa: BLE001 — a plugin's step: one line that names it, not a traceback
            raise UserError(f"recipe step {name!r}{of} raised {first_line(exc)} — fix the "
                            "step, or drop it from the steps") from exc
        if not isinstance(changed, Recipe):
            raise UserError(f"recipe step {name!r}{of} returned {kind_of(changed)}, not a Recipe — return a new one: "
                            "recipe.replace(field=value)")
        trail.append((name, changed))
        recipe = changed
    problems = recipe.validate()
    if problems:
        key, problem = problems[0]
        # the step that set the field at fault (or one its value depends on, e.g. pipeline)
        fields = (key,) + RELATED_FIELDS.get(key, ())
        by = [(name, field) for (name, after), (_, before) in zip(trail[1:], trail)
              for field in fields if getattr(after, field) != getattr(before, field)]
        if not by:
            raise UserError(f"recipe after steps {steps}: {key} {problem}")
        name, field = by[-1]
        other = [f for f in fields if f != field]
        fix = f"drop {name} from the steps" + (f", or change {' or '.join(other)} under train:" if other else "")
        raise UserError(f"recipe step {name!r} sets {field} to {yaml_text(getattr(recipe, field))}, and then {key} "
                        f"{problem.split(' — ')[0]} — {fix}")
    return recipe


def load_splits(spec: RunSpec, registry: Registry, cache_dir: Path) -> DatasetSplits:
    """The image lists of ``spec``'s dataset, read from its data root (a DataError where it
    is missing or malformed)."""
    dataset = registry.datasets[spec.dataset["name"]]
    root = Path(spec.data_root) if spec.data_root else None
    if dataset.needs_root and (root is None or not root.exists()):
        raise DataError(f"data root for {dataset.name!r} not found: {root} — set `root:` in the suite, "
                        f"--data-root or FGVCBENCH_DATA. Expected layout: {dataset.layout or 'see the docs'}")
    request = DatasetRequest(root=root, options=dict(spec.dataset["options"]), cache_dir=Path(cache_dir) / "datasets",
                             datasets=registry.datasets)
    splits = dataset.load_checked(request)
    leaked = leaked_paths(splits)
    if leaked:   # a test image the model trained on inflates the score: no run reports it
        raise DataError(f"dataset {dataset.name!r}: {len(leaked)} test image{'s are' if len(leaked) > 1 else ' is'} "
                        f"listed in train too (e.g. {leaked[0]}), a train/test leak — fix the split lists; "
                        f"`fgvcbench data verify {dataset.name}` lists them")
    return splits


def data_identity(spec: RunSpec, splits: DatasetSplits, cache_dir: Path) -> dict[str, Any]:
    """``splits.identity`` (fingerprint, classes, images per split), paths named below the
    data root and the dataset cache (where :func:`load_splits` lets adapters generate)."""
    return splits.identity({"data": spec.data_root, "cache": Path(cache_dir) / "datasets"})


class RunContext:
    """What a method's ``run(ctx)`` may use. Everything is scoped to one run."""

    def __init__(self, spec: RunSpec, registry: Registry, store: Store, *, device: torch.device,
                 cache_dir: Path, on_epoch: Callable[[dict], None] | None = None,
                 on_batch: Callable[[int, int], None] | None = None):
        self.spec = spec
        self.params: dict[str, Any] = dict(spec.params)
        self.recipe = Recipe(**spec.recipe)
        self.seed = spec.seed
        self.device = device
        self.cache_dir = cache_dir
        self.history: list[dict[str, Any]] = []
        # JSON-serialisable facts a method wants in its record (e.g. the recipe it applied)
        self.notes: dict[str, Any] = {}
        self.train_seconds = 0.0
        self.cached_train_seconds = 0.0   # training time of cached stages this run reused
        self.stages: list[str] = []       # the stage files it used (cached or computed): `run --rerun`
        self.images_seen = 0
        # the last fit's test predictions: saved as artifacts/<run>/predictions.json (reports)
        self.last_predictions: dict[str, Any] | None = None
        self._registry, self._store = registry, store
        self._on_epoch, self._on_batch = on_epoch, on_batch
        self._splits: DatasetSplits | None = None
        self._data_identity: dict[str, Any] | None = None
        self._data: dict[tuple, TensorData] = {}
        self._mean, self._std = IMAGENET_MEAN, IMAGENET_STD
        self._fixed_norm: tuple | None = None   # normalize_with: kept across create_model

    @property
    def identity(self) -> dict[str, Any]:
        """The run's spec without this machine's paths (``spec.portable``: a checkpoint by its
        content hash): what stage ``inputs`` should take from the spec, so a cached phase is
        shared wherever the same data and weights sit."""
        from fgvcbench.spec import portable
        return portable(self.spec.to_dict())

    @property
    def artifact_dir(self) -> Path:
        path = self._store.artifact_dir(self.spec.run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- data ----------------------------------------------------------------------------
    def load_splits(self) -> DatasetSplits:
        """The dataset's image lists (paths, labels, boxes, coarse labels)."""
        if self._splits is None:
            self._splits = load_splits(self.spec, self._registry, self.cache_dir)
        return self._splits

    def data_identity(self) -> dict[str, Any]:
        """The loaded data's fingerprint and counts (:func:`data_identity`): the record's
        ``data``, and part of every stage's key."""
        if self._data_identity is None:
            self._data_identity = data_identity(self.spec, self.load_splits(), self.cache_dir)
        return self._data_identity

    def load_data(self, image_size: int | None = None, use_boxes: bool = False,
                  val_fraction: float | None = None, crop_extent: str | None = None) -> TensorData:
        """Decoded tensors (cached) for train / val (carved from train: ``val_fraction``, by
        default the recipe's) / test; ``crop_extent`` (by default the recipe's): what of
        each image the cache keeps (``full`` or ``square``, :mod:`fgvcbench.data.pipeline`)."""
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                       or not 16 <= image_size <= MAX_IMAGE_SIZE):
            raise UserError(f"ctx.load_data(image_size={image_size!r}): give a whole number of pixels from 16 to "
                            f"{MAX_IMAGE_SIZE}, or None for the recipe's size")
        # decode for the larger of the train and test views (FixRes tests above train)
        size = image_size or self.recipe.data_size
        fraction = self.recipe.val_fraction if val_fraction is None else val_fraction
        extent = crop_extent or self.recipe.crop_extent
        key = (size, use_boxes, fraction, extent)
        if key not in self._data:
            self._data[key] = build_tensor_data(self.load_splits(), size, self.cache_dir, fraction, use_boxes,
                                                crop_extent=extent)
        return self._data[key]

    def load_extra(self, name: str, image_size: int | None = None, use_boxes: bool = False) -> TensorSplit | None:
        """The dataset's extra list ``name`` (``DatasetSplits.extra``) decoded as ``load_data``
        decodes its splits (same size, boxes, cache); None where the dataset has no such list."""
        from fgvcbench.data.pipeline import decode_images, load_size_for, streams
        splits = self.load_splits()
        images = splits.extra.get(name)
        if images is None:
            return None
        size = load_size_for(image_size or self.recipe.data_size)
        extent = self.recipe.crop_extent
        # as load_data: an on-disk memmap when RAM is short
        streamed = streams(len(images), size, self.cache_dir, extent)
        pixels = decode_images(images, size, self.cache_dir, use_boxes or splits.crop_to_boxes, streamed=streamed,
                               crop_extent=extent)
        return TensorSplit(pixels, torch.tensor(images.labels, dtype=torch.int64), list(range(len(images))), streamed)

    # -- models --------------------------------------------------------------------------
    def create_model(self, num_classes: int, name: str | None = None, pretrained: Any = None) -> torch.nn.Module:
        """The suite's backbone (or ``name``) with a fresh ``num_classes`` head."""
        name = name or self.spec.backbone["name"]
        pretrained = self.spec.backbone["pretrained"] if pretrained is None else pretrained
        spec = self._registry.find_backbone(name)
        if spec is None:
            raise UserError(f"unknown backbone {name!r} — run `fgvcbench plugins` to list them")
        torch.manual_seed(self.seed)  # the head's initialisation depends on the seed only
        plugin = self._registry.origin.get(("backbones", spec.name))
        of = f" (plugin {plugin!r})" if plugin else ""
        with _plugin_code(f"backbone {name!r}{of}: create({name!r}, num_classes={num_classes}, "
                          f"pretrained={pretrained!r})"):
            model = spec.create(name, num_classes, pretrained)
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"backbone {name!r}{of}: create() returned {kind_of(model)}, not a torch.nn.Module — "
                            "return the model")
        outputs = _classifier_outputs(model)
        if outputs is not None and outputs != num_classes:
            raise UserError(f"backbone {name!r}{of}: create() returned a model with {outputs} outputs for "
                            f"{num_classes} classes — build its classifier with the num_classes it is given")
        with _plugin_code(f"backbone {name!r}{of}: data_config({name!r})"):
            config = (spec.data_config(name) if spec.data_config else None) or {}
        problem = _norm_problem(config)
        if problem:
            raise UserError(f"backbone {name!r}{of}: data_config({name!r}) {problem} — return {{'mean': (r, g, b), "
                            "'std': (r, g, b)}} with each std above 0, or leave a key out for ImageNet's")
        if self._fixed_norm is None:
            self._mean = tuple(config.get("mean", IMAGENET_MEAN))
            self._std = tuple(config.get("std", IMAGENET_STD))
        return model

    @property
    def fixed_norm(self) -> tuple | None:
        """``(mean, std)`` set by :meth:`normalize_with`, or None (the backbone's config):
        what a stage's cache key needs where a method sets it."""
        return self._fixed_norm

    def normalize_with(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        """Normalise every input of this run (training, features, predictions) with ``mean``
        and ``std`` instead of the backbone's pretrained config — a seed code's own statistics."""
        self._fixed_norm = (tuple(mean), tuple(std))
        self._mean, self._std = self._fixed_norm

    # -- training ------------------------------------------------------------------------
    def apply_steps(self, recipe: Recipe, steps: list[str]) -> Recipe:
        """Apply named recipe steps (from the recipe-step hook) in order."""
        return apply_steps(self._registry, recipe, steps)

    def fit(self, model: torch.nn.Module, data: TensorData, recipe: Recipe | None = None, *,
            freeze_backbone: bool = False, freeze_bn: bool = True, phase: str | None = None,
            criterion=None, output_fn=None) -> FitResult:
        """Train with the shared engine; the epochs are added to this run's history.
        ``criterion(output, labels)`` and ``output_fn(output) -> logits`` replace the
        cross-entropy and the scored output (see :func:`fgvcbench.engine.train.fit`)."""
        from fgvcbench.faults import checkpoint   # once per fit, not once per step
        if recipe is not None and not isinstance(recipe, Recipe):
            raise UserError(f"ctx.fit(recipe=...) got {kind_of(recipe)}, not a Recipe — pass one made from the run's: "
                            "ctx.recipe.replace(lr=0.1)")
        outputs = _classifier_outputs(model)
        if criterion is None and output_fn is None and outputs is not None and outputs != data.num_classes:
            raise UserError(f"ctx.fit: the model's classifier has {outputs} outputs for the data's {data.num_classes} "
                            "classes — ctx.create_model(data.num_classes), or pass criterion=/output_fn= for "
                            "another objective")

        def on_epoch(row: dict) -> None:
            checkpoint("epoch")
            row = dict(row, phase=phase) if phase else row
            self.history.append(row)
            if self._on_epoch:
                self._on_epoch(row)

        def on_batch(done: int, total: int) -> None:
            checkpoint("step")   # inside an epoch, after an optimizer step
            if self._on_batch:
                self._on_batch(done, total)
        result = fit(model, data, recipe or self.recipe, device=self.device, seed=self.seed,
                     mean=self._mean, std=self._std, freeze_backbone=freeze_backbone,
                     freeze_bn=freeze_bn, on_epoch=on_epoch, on_batch=on_batch, criterion=criterion, output_fn=output_fn)
        self.train_seconds += result.train_seconds
        self.images_seen += result.images_seen
        if result.test_predictions is not None and len(data.test):
            self.last_predictions = {"pred": result.test_predictions.tolist(), "label": data.test.labels.tolist(),
                                     "class_names": list(data.class_names), "paths": _test_paths(data)}
        return result

    def evaluate(self, model: torch.nn.Module, data: TensorData, split: str = "test") -> dict[str, float]:
        return accuracy_metrics(self.predict(model, data, split), _split(data, split).labels, data.num_classes)

    def augmenter(self, recipe: Recipe | None = None, seed_offset: int = 0):
        """The engine's batched augmentation for a custom training loop (uint8 batch in,
        normalised float batch on the run's device out), seeded from the run's seed."""
        from fgvcbench.engine.augment import BatchAugmenter
        generator = torch.Generator().manual_seed(self.seed * 1000 + seed_offset)
        return BatchAugmenter(recipe or self.recipe, self._mean, self._std, self.device, generator)

    def predict(self, model: torch.nn.Module, data: TensorData | TensorSplit, split: str = "test",
                output_fn=None) -> torch.Tensor:
        """Logits of a split's test-time view (``data`` may also be one TensorSplit)."""
        part = data if isinstance(data, TensorSplit) else _split(data, split)
        return predict(model, part, self.augmenter(), self.recipe, self.device, output_fn=output_fn)

    def features(self, model: torch.nn.Module, data: TensorData | TensorSplit, split: str = "test") -> torch.Tensor:
        """Pooled backbone features (timm ``pre_logits``) of a split's test-time view
        (``data`` may also be one TensorSplit)."""
        part = data if isinstance(data, TensorSplit) else _split(data, split)
        return predict(model, part, self.augmenter(), self.recipe, self.device, pre_logits=True)

    def stage(self, name: str, fn: Callable[[], Any], inputs: Mapping[str, Any] | None = None) -> Any:
        """Run ``fn`` once per (name, inputs): its result is cached in the output directory
        (``torch.save``, loaded with ``weights_only=True``), so a multi-phase method shares
        phases between variants and an interrupted suite resumes mid-pipeline. ``inputs``
        must be JSON-serialisable and hold everything the stage's result depends on."""
        from fgvcbench import distributed
        problem = _stage_key_problem(name, inputs)
        if problem:
            raise UserError(problem)
        # the data's fingerprint: a stage trained on a folder that changed since is not reused
        identity = {"stage": name, "inputs": inputs or {}, "data": self.data_identity()["fingerprint"]}
        if distributed.world_size() > 1:   # ctx.fit's global batch (and its steps) scale with the ranks
            identity["world_size"] = distributed.world_size()
        key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]
        path = self._store.stage_dir() / f"{name}-{key}.pt"
        if path.name not in self.stages:
            self.stages.append(path.name)
            if distributed.is_main():   # for `run --rerun` of a run that never finishes
                from fgvcbench.store import locked_append
                try:
                    locked_append(self._store.stage_uses(self.spec.run_id), path.name + "\n")
                except OSError:   # a convenience, not worth failing the run over
                    pass
        cached = None
        if path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if not (isinstance(cached, dict) and "result" in cached and "train_seconds" in cached):
                    cached = None  # an older cache layout: recompute
            except Exception:  # noqa: BLE001 — a damaged cache entry is recomputed
                cached = None
        # under torchrun every rank must take the same branch (the stage may train with DDP)
        if distributed.broadcast(cached is not None):
            # the phase's training time counts in this run's total cost, not in its own compute
            self.cached_train_seconds += float(cached["train_seconds"])
            return cached["result"]
        before = self.train_seconds
        result = fn()
        problem = None
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(temp_suffix())
            torch.save({"result": result, "train_seconds": self.train_seconds - before}, tmp)
            problem = _unloadable(tmp, name, result)
            if problem:   # a cache no later run could read would be recomputed every time, in silence
                tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, path)
        problem = distributed.broadcast(problem)
        if problem:
            raise UserError(problem)
        distributed.barrier()
        from fgvcbench.faults import checkpoint
        checkpoint("stage")
        return result


@contextlib.contextmanager
def _plugin_code(call: str) -> Iterator[None]:
    """Around a call into a plugin's code: anything it raises but a UserError becomes a
    PluginError, "<call> raised <the exception>", whose cause (and traceback) the record keeps."""
    try:
        yield
    except (UserError, PluginError):
        raise
    except Exception as exc:  # noqa: BLE001 — say whose code it was
        raise PluginError(f"{call} raised {first_line(exc)}") from exc


def _split(data: Any, split: Any) -> TensorSplit:
    """``data``'s split by name, or a UserError that says what to pass."""
    if split not in ("train", "val", "test"):
        raise UserError(f"split {split!r}: use 'train', 'val' or 'test'")
    part = getattr(data, split, None)
    if not isinstance(part, TensorSplit):
        raise UserError(f"expected the data ctx.load_data() returns, or one of its splits; got {kind_of(data)}")
    if split == "val" and not len(part):
        raise UserError("there is no 'val' split: its val_fraction is 0 — ctx.load_data(val_fraction=0.1) carves one "
                        "from train")
    return part


_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _stage_key_problem(name: Any, inputs: Any) -> str | None:
    """Why a stage's name or inputs cannot key its cache, or None. The name becomes a file
    name (no folders, nothing outside the stage folder); the inputs are hashed as JSON, so
    they must be JSON: a tensor or a set would be keyed by its printed text, which rounds,
    shortens and reorders — two different inputs would share one cached result."""
    if not isinstance(name, str) or not _STAGE_NAME.fullmatch(name):
        return (f"ctx.stage name {name!r}: use letters, digits, '_', '-' and '.' only, beginning with a letter or "
                "digit (it names the cache file), e.g. 'mymethod_phase1'")
    if inputs is None:
        return None
    if not isinstance(inputs, Mapping):
        return f"ctx.stage({name!r}) inputs: {type(inputs).__name__}, not a dict — pass a dict such as {{'lr': 0.1}}"

    def first(obj: Any, where: str) -> tuple[str, Any] | None:
        if obj is None or type(obj) in (bool, int, float, str):   # exactly these: np.int64 prints as text
            return None
        if isinstance(obj, (list, tuple)):
            return next((found for i, item in enumerate(obj) if (found := first(item, f"{where}[{i}]"))), None)
        if isinstance(obj, dict):
            for key, item in obj.items():
                if not isinstance(key, str):
                    return f"{where} key {key!r}", key
                found = first(item, f"{where}[{key!r}]")
                if found:
                    return found
            return None
        return where, obj

    found = first(dict(inputs), "inputs")
    if found is None:
        return None
    where, obj = found
    return (f"ctx.stage({name!r}) {where} is {kind_of(obj)}, not JSON (numbers, strings, lists, dicts with string "
            "keys) — key the stage by what produced it (the settings, ctx.identity, a stage's name), or by "
            "a hash of the values (hashlib.sha256(t.numpy().tobytes()).hexdigest())")


_STAGE_SCALARS = (int, float, str, bytes, bool, type(None))   # exactly these: np.float64 is a float subclass
_STAGE_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def _first_foreign(obj: Any, depth: int = 0) -> Any:
    """The first object inside ``obj`` (through dicts, lists and tuples) that is none of
    the plain types ``torch.load(weights_only=True)`` reads back; None when all are."""
    if type(obj) in _STAGE_SCALARS or isinstance(obj, _STAGE_LEAVES) or depth > 50:
        return None
    if isinstance(obj, dict):
        items = [x for kv in obj.items() for x in kv]
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    else:
        return obj
    for item in items:
        found = _first_foreign(item, depth + 1)
        if found is not None:
            return found
    return None


def _unloadable(path: Path, name: str, result: Any) -> str | None:
    """Why the stage file just written cannot be read back as every later run reads it
    (``weights_only=True``): one line with the fix; None when it can."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return None
    except Exception as exc:  # noqa: BLE001 — whatever the unpickler refuses
        foreign = _first_foreign(result)
        what = (f"a {type(foreign).__module__}.{type(foreign).__qualname__}" if foreign is not None
                else first_line(exc, 200))
        return (f"ctx.stage({name!r}) returned what its cache cannot hold ({what}): stages load with "
                f"torch.load(weights_only=True), so return tensors, numbers, strings, or dicts/lists/tuples of "
                f"them — e.g. model.state_dict() instead of the model, result.metrics instead of a FitResult")


def _test_paths(data: TensorData) -> list[str] | None:
    source = getattr(data, "source", None)
    if source is None or len(source.test) < len(data.test) or not data.test.index:
        return None
    return [str(source.test.paths[i]) for i in data.test.index]


def _world_size() -> int:
    from fgvcbench import distributed
    return distributed.world_size()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(fgvcbench.__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def provenance(device: torch.device) -> dict[str, Any]:
    import timm
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"fgvcbench": fgvcbench.__version__, "git_sha": _git_sha(), "torch": torch.__version__,
            "timm": timm.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": name, "host": platform.node(), "cpu_count": os.cpu_count(),
            "world_size": _world_size(),
            "torch_threads": torch.get_num_threads()}


def _numerics(device: torch.device, recipe: Mapping[str, Any]) -> dict[str, str]:
    """What the engine did with the recipe's ``amp`` and ``channels_last``, which it applies
    on CUDA only: a CPU record says fp32 and contiguous whatever its spec.recipe holds."""
    cuda = device.type == "cuda"
    return {"precision": "bf16-autocast" if cuda and recipe.get("amp", True) else "fp32",
            "memory_format": "channels_last" if cuda and recipe.get("channels_last", True) else "contiguous"}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak RSS


def _scalar(value: Any) -> Any:
    """A one-element tensor or array as its number; anything else as it is."""
    count = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)   # torch, numpy
    return value.item() if hasattr(value, "item") and count == 1 else value


def execute_run(spec: RunSpec, registry: Registry, store: Store, *, device: torch.device, cache_dir: Path,
                on_epoch=None, on_batch=None, shared_by: int = 1) -> dict[str, Any]:
    """Run one spec and return its record (status ok / failed / diverged). Never raises
    for a method's own error; KeyboardInterrupt propagates (nothing is recorded).
    ``shared_by``: how many runs share the device at once (``--workers N``); above 1 the
    record's cost says so, since its times are then not those of a run alone."""
    started = _now()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = RunContext(spec, registry, store, device=device, cache_dir=cache_dir, on_epoch=on_epoch, on_batch=on_batch)
    status, error, metrics = "ok", None, {}
    t0 = time.perf_counter()
    try:
        method = registry.methods[spec.method]
        method.check_params(spec.params, ctx.recipe)  # API callers skip the suite loader's check
        # one-element tensors and arrays (a `.mean()` left as a tensor) are plain numbers
        state = _global_state()
        try:
            returned = method.run(ctx)
        finally:   # a method that leaves grad off, float64 or one thread must not change the next run
            _restore_global_state(state)
        if not isinstance(returned, Mapping):
            hint = " (ctx.fit(...).metrics is its dict)" if isinstance(returned, FitResult) else ""
            raise UserError(f"method {spec.method!r}: run() returned {kind_of(returned)}, not a dict of metrics"
                            f"{hint} — return e.g. {{'top1': 81.5}} (top-1 accuracy in percent) and any others")
        metrics = {str(k): _scalar(v) for k, v in dict(returned).items()}   # as JSON writes keys
        if "top1" not in metrics:
            keys = ", ".join(map(str, list(metrics)[:8])) or "none"
            raise UserError(f"method {spec.method!r}: run() returned no 'top1' metric (its keys: {keys}) — "
                            f"add 'top1', the top-1 accuracy in percent, which tables rank by")
        top1 = metrics["top1"]
        if isinstance(top1, bool) or not isinstance(top1, (int, float)):
            raise UserError(f"method {spec.method!r} returned top1 = {top1!r}; it must be a number (percent)")
        metrics["top1"] = float(top1)
        nan = [k for k, v in metrics.items() if k.startswith("top1") and isinstance(v, float) and v != v]
        if nan:   # what a method evaluating a diverged model reports; a NaN loss stops ctx.fit before this
            raise DivergedError(f"method {spec.method!r} returned {nan[0]} = nan (its model diverged, or the "
                                f"method computed the accuracy wrongly)")
        if not 0.0 <= metrics["top1"] <= 100.0:   # inf, or not a percent: tables would rank it
            raise UserError(f"method {spec.method!r} returned top1 = {metrics['top1']!r}, outside 0–100 — "
                            f"top1 is the top-1 accuracy in percent (0.82 → 82.0)")
    except DivergedError as exc:
        status, error = "diverged", str(exc)
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:   # the suite stops (a scheduler's preemption exits this way too): say why
        import sys
        print(f"stopped: run {spec.run_id} ({spec.label}) raised SystemExit({exc.code!r}); it is not recorded and "
              "the finished runs are kept — if its method calls sys.exit(), make it return its metrics instead",
              file=sys.stderr)
        raise
    except UserError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 — one broken run must not stop the suite
        status = "failed"
        said = str(exc) if isinstance(exc, PluginError) else f"{exc.__class__.__name__}: {exc}"
        error = f"{said}\n" + "".join(traceback.format_exc(limit=8))
    wall = time.perf_counter() - t0
    from fgvcbench import distributed
    if status == "ok" and ctx.last_predictions is not None and distributed.is_main():   # one writer, as the record
        try:  # what reports show (most-confused classes); never worth failing a run over
            from fgvcbench.store import atomic_write_text, json_text
            atomic_write_text(store.artifact_dir(spec.run_id) / "predictions.json", json_text(ctx.last_predictions))
        except (OSError, TypeError, ValueError):
            pass
    cost = {"train_seconds": round(ctx.train_seconds, 3), "wall_seconds": round(wall, 3),
            # the whole run (data, training, every evaluation) times the devices it held: GPU-seconds on CUDA
            "device_seconds": round(wall * _world_size(), 3),
            # what the run's result cost in all, cached phases included (reports plot this)
            "train_seconds_total": round(ctx.train_seconds + ctx.cached_train_seconds, 3),
            "images_per_second": round(ctx.images_seen / ctx.train_seconds, 2) if ctx.train_seconds else None,
            "peak_memory_mb": round(_peak_memory_mb(device), 1)}
    if shared_by > 1:
        cost["device_shared_by"] = shared_by
    try:   # what data the run read (resume and the tables check it); none where it could not be read
        data = ctx.data_identity()
    except Exception:  # noqa: BLE001 — the run's own error (if any) is in the record already
        data = None
    record = {"schema": SCHEMA, "run_id": spec.run_id, "status": status, "spec": spec.to_dict(), "data": data,
              "metrics": metrics, "history": ctx.history, "notes": ctx.notes, "cost": cost, "stages": ctx.stages,
              "provenance": {**provenance(device), **_numerics(device, spec.recipe),
                             "method_plugin": _plugin_of(registry, spec.method),
                             "plugins": _plugins_used(registry, spec),
                             "started": started, "finished": _now()}, "error": error}
    return record


def _norm_problem(config: Any) -> str | None:
    """What is wrong with a backbone's ``data_config`` result for normalising, or None."""
    import math
    if not isinstance(config, Mapping):
        return f"returned {kind_of(config)}, not a dict"
    for key in ("mean", "std"):
        if key not in config:
            continue
        value = config[key]
        try:
            numbers = [float(v) for v in value] if not isinstance(value, (str, bytes)) else None
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
            return f"gives {key} {value!r}, not three finite numbers (one per RGB channel)"
        if key == "std" and min(numbers) <= 0:
            return f"gives std {value!r}: each must be above 0 (the inputs are divided by it)"
    return None


def _global_state() -> tuple:
    return (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision())


def _restore_global_state(state: tuple) -> None:
    grad, dtype, threads, deterministic, precision = state
    torch.set_grad_enabled(grad)
    torch.set_default_dtype(dtype)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic)
    torch.set_float32_matmul_precision(precision)


def _classifier_outputs(model: torch.nn.Module) -> int | None:
    """How many classes a model's classifier predicts, where it says (timm's ``num_classes``,
    else a linear ``get_classifier()``), or None."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    get = getattr(model, "get_classifier", None)
    try:
        head = get() if callable(get) else None
    except Exception:  # noqa: BLE001 — a model that cannot say: the run goes on
        return None
    return head.out_features if isinstance(head, torch.nn.Linear) else None


def _plugin_of(registry: Registry, method: str, kind: str = "methods") -> dict[str, Any]:
    """Which plugin (entry point, distribution, version) provided the method (or another
    ``kind`` of item): a change of a plugin's code keeps its run ids, so a record says what
    produced it."""
    name = registry.origin.get((kind, method))
    info = registry.plugins.get(name) if name else None
    return {"name": name, "distribution": info.distribution if info else None,
            "version": info.version if info else None}


def _plugins_used(registry: Registry, spec: RunSpec) -> dict[str, dict]:
    """The plugin of everything else the run used, keyed ``"dataset cub"``, ``"backbone
    resnet50"``, ``"recipe step cosine"``: the dataset (and a view's base), the backbone (by
    the spec that serves its name, a family's for a timm name) and the recipe steps of a
    ``steps`` param."""
    used = [("dataset", "datasets", spec.dataset.get("name"), spec.dataset.get("name"))]
    base = (spec.dataset.get("options") or {}).get("of") if isinstance(spec.dataset.get("options"), dict) else None
    if isinstance(base, str):
        used.append(("dataset", "datasets", base, base))
    backbone = registry.find_backbone(spec.backbone["name"])
    if backbone is not None:
        used.append(("backbone", "backbones", spec.backbone["name"], backbone.name))
    steps = spec.params.get("steps")
    if isinstance(steps, list):
        used += [("recipe step", "recipe_steps", step, step) for step in steps if isinstance(step, str)]
    return {f"{what} {name}": _plugin_of(registry, item, kind) for what, kind, name, item in used
            if registry.origin.get((kind, item))}

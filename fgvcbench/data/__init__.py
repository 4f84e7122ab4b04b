"""Datasets: adapter contract (``base``), decoding cache and tensor augmentation (``pipeline``),
and the embedded synthetic generator (``synthetic``)."""

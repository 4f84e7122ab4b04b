"""Decode once, augment on the device.

Images are decoded a single time into a uint8 tensor ``[N, 3, S, S]`` (shorter side
resized to ``S``, centre-cropped, optionally cropped to the bounding box first) and the
tensor is cached on disk, keyed by the files' paths, sizes and mtimes and the decode
settings. Training batches are then cut from that tensor and augmented in batch on the
training device (random-resized-crop + flip as one ``grid_sample``), so no per-image
Python work sits between the model and its data.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fgvcbench.data.base import DatasetSplits, ImageList
from fgvcbench.errors import DataError

# Test-time protocol of most FGVC papers: resize to S/0.875 (256 for 224), centre crop S.
CROP_RATIO = 0.875


def load_size_for(image_size: int) -> int:
    return int(round(image_size / CROP_RATIO))


@dataclass
class TensorSplit:
    """One split as tensors: ``images`` uint8 ``[N, 3, S, S]``, ``labels`` int64 ``[N]``;
    ``index`` maps each row back to the split's :class:`ImageList`."""

    images: torch.Tensor
    labels: torch.Tensor
    index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class TensorData:
    """Decoded train/val/test tensors plus the source lists (paths, boxes, coarse labels)."""

    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    class_names: list[str]
    image_size: int
    source: DatasetSplits

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def carve_validation(train: ImageList, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split ``train`` into (train, val) indices, stratified per class, deterministically.

    The seed is fixed (not the run's seed) so every method and seed of a suite selects
    epochs on the same validation images. A class with a single image keeps it in train.
    Test images are never used for selection.
    """
    if fraction <= 0:
        return list(range(len(train))), []
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(train.labels):
        by_class.setdefault(label, []).append(i)
    keep, val = [], []
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        rng.shuffle(idx)
        n_val = int(round(fraction * len(idx)))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) > 1 else 0
        val.extend(idx[:n_val].tolist())
        keep.extend(idx[n_val:].tolist())
    return sorted(keep), sorted(val)


def _decode_one(path: str, size: int, box, trim_bottom: int = 0) -> np.ndarray:
    try:
        with Image.open(path) as img:
            full_width = img.width
            if box is None and not trim_bottom:  # JPEG: decode at a reduced scale when still >= size
                img.draft("RGB", (size, size))
            img = img.convert("RGB")
            if trim_bottom:
                img = img.crop((0, 0, img.width, max(1, img.height - trim_bottom)))
            if box is not None:
                x, y, w, h = box  # pixels of the stored image
                sx = img.width / full_width
                left, top = max(0.0, x * sx), max(0.0, y * sx)
                right, bottom = min(img.width, (x + w) * sx), min(img.height, (y + h) * sx)
                if right - left >= 1 and bottom - top >= 1:  # a degenerate box keeps the whole image
                    img = img.crop((left, top, right, bottom))
            scale = size / min(img.size)
            new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
            img = img.resize(new, Image.BILINEAR, reducing_gap=2.0)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path} — check the dataset root or run "
                        f"`fgvcbench data verify`") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot decode image {path} ({exc.__class__.__name__}: {exc}) — "
                        f"replace or remove the file") from exc


def _fingerprint(paths: Sequence[str], size: int, boxes, trim_bottom: int = 0) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"size": size, "boxes": boxes is not None, "trim": trim_bottom, "v": 1}).encode())
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
        if boxes is not None:
            h.update(repr(tuple(boxes[i])).encode())
    return h.hexdigest()[:20]


def decode_images(images: ImageList, size: int, cache_dir: Path | None,
                  use_boxes: bool = False, workers: int | None = None) -> torch.Tensor:
    """Decode every image of ``images`` to uint8 ``[N, 3, size, size]``, with a disk cache."""
    boxes = images.boxes if use_boxes else None
    if use_boxes and boxes is None:
        raise DataError("crop to bounding boxes was asked for, but this dataset has no boxes")
    cache_file = None
    if cache_dir is not None:
        key = _fingerprint(images.paths, size, boxes, images.trim_bottom)
        cache_file = Path(cache_dir) / "decoded" / f"{key}.pt"
        if cache_file.exists():
            try:
                cached = torch.load(cache_file, map_location="cpu", weights_only=True)
                if cached.shape == (len(images), 3, size, size):
                    return cached
            except Exception:  # a corrupt cache file is rebuilt, never trusted
                pass
    workers = workers or min(8, os.cpu_count() or 1)
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = pool.map(lambda i: _decode_one(images.paths[i], size,
                                                boxes[i] if boxes is not None else None,
                                                images.trim_bottom),
                          range(len(images)))
        for i, arr in enumerate(arrays):
            out[i] = torch.from_numpy(arr)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        torch.save(out, tmp)
        os.replace(tmp, cache_file)
    return out


def build_tensor_data(splits: DatasetSplits, image_size: int, cache_dir: Path | None,
                      val_fraction: float = 0.1, use_boxes: bool = False) -> TensorData:
    """Decode a dataset's splits; carve a validation split from train if it has none."""
    load = load_size_for(image_size)
    use_boxes = use_boxes or splits.crop_to_boxes
    train_list = splits.train
    if splits.val is not None:
        train_idx, val_source, val_idx = list(range(len(train_list))), splits.val, list(range(len(splits.val)))
    else:
        train_idx, val_idx = carve_validation(train_list, val_fraction)
        val_source = train_list
    train_all = decode_images(train_list, load, cache_dir, use_boxes)
    val_images = train_all[val_idx] if splits.val is None else decode_images(val_source, load, cache_dir, use_boxes)
    test_images = decode_images(splits.test, load, cache_dir, use_boxes)

    def labels(lst: ImageList, idx: list[int]) -> torch.Tensor:
        return torch.tensor([lst.labels[i] for i in idx], dtype=torch.int64)

    return TensorData(
        train=TensorSplit(train_all[train_idx], labels(train_list, train_idx), train_idx),
        val=TensorSplit(val_images, labels(val_source, val_idx), val_idx),
        test=TensorSplit(test_images, torch.tensor(splits.test.labels, dtype=torch.int64),
                         list(range(len(splits.test)))),
        class_names=list(train_list.class_names),
        image_size=image_size,
        source=splits,
    )

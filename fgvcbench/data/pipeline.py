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
    # images are a view of an on-disk memmap (datasets larger than memory): batches are
    # read from the page cache, and the split is never copied whole into RAM
    streamed: bool = False

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
    use_boxes: bool = False   # the images are cropped to their boxes (a method's ask, or the dataset's crop: bbox)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def carve_validation(train: ImageList, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split ``train`` into (train, val) indices, stratified per class, deterministically.

    The seed is fixed (not the run's seed) so every method and seed of a suite selects
    epochs on the same validation images. A class with a single image keeps it in train.
    Test images are never used for selection.
    """
    return stratified_split(train.labels, fraction, seed)


def stratified_split(labels, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(keep, held-out) positions of ``labels``: ``fraction`` of each class held out (at
    least one, never a class's only image), the same for the same labels and seed."""
    labels = [int(v) for v in labels]
    if fraction <= 0:
        return list(range(len(labels))), []
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
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


MEMMAP_SHARE = 0.5   # auto: stream from disk when the decoded split needs over half the free memory


def available_memory() -> int | None:
    """Bytes of memory available to this process (Linux: MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def decode_cache_mode(mode: str | None = None) -> str:
    """``mode``, else ``FGVCBENCH_DECODE_CACHE`` (default ``auto``), checked (the suite
    loader calls this, so a bad value stops the command before any run)."""
    mode = (mode or os.environ.get("FGVCBENCH_DECODE_CACHE", "auto")).lower()
    if mode not in ("auto", "memory", "memmap"):
        raise DataError(f"FGVCBENCH_DECODE_CACHE={mode!r} — use auto, memory or memmap, or unset it")
    return mode


def use_memmap(nbytes: int, mode: str | None = None, available: int | None = None) -> bool:
    """Whether to decode into an on-disk memmap: ``FGVCBENCH_DECODE_CACHE`` = ``memory``,
    ``memmap`` or ``auto`` (default: memmap when ``nbytes`` exceeds half the available memory)."""
    mode = decode_cache_mode(mode)
    if mode != "auto":
        return mode == "memmap"
    available = available if available is not None else available_memory()
    return available is not None and nbytes > MEMMAP_SHARE * available


def _decode_memmap(images: ImageList, size: int, cache_dir: Path, boxes, workers: int) -> torch.Tensor:
    """Decode into ``<cache>/decoded/<key>.npy`` row by row (never all in memory) and
    return a read-only tensor view of the memory-mapped file."""
    import warnings
    key = _fingerprint(images.paths, size, boxes, images.trim_bottom)
    path = Path(cache_dir) / "decoded" / f"{key}.npy"
    shape = (len(images), 3, size, size)
    array = None
    if path.exists():
        try:
            array = np.load(path, mmap_mode="r")
            if array.shape != shape or array.dtype != np.uint8:
                array = None
        except (OSError, ValueError):
            array = None
    if array is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rows = pool.map(lambda i: _decode_one(images.paths[i], size, boxes[i] if boxes is not None else None,
                                                  images.trim_bottom), range(len(images)))
            for i, row in enumerate(rows):
                out[i] = row
        out.flush()
        del out
        os.replace(tmp, path)
        array = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch notes the memmap is read-only: it is never written
        return torch.from_numpy(array)


def decode_images(images: ImageList, size: int, cache_dir: Path | None,
                  use_boxes: bool = False, workers: int | None = None, streamed: bool = False) -> torch.Tensor:
    """Decode every image of ``images`` to uint8 ``[N, 3, size, size]``, with a disk cache
    (with ``streamed``, an on-disk memmap the tensor views instead of a copy in memory)."""
    boxes = images.boxes if use_boxes else None
    if use_boxes and boxes is None:
        raise DataError("crop to bounding boxes was asked for, but this dataset has no boxes")
    if streamed and cache_dir is not None:
        return _decode_memmap(images, size, Path(cache_dir), boxes, workers or min(8, os.cpu_count() or 1))
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
        from fgvcbench.store import sweep_dead_temporaries, temp_suffix
        sweep_dead_temporaries(cache_file.parent, f"{cache_file.stem}.*.tmp")   # a killed decode's leftovers
        tmp = cache_file.with_suffix(temp_suffix())
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
    def labels(lst: ImageList, idx: list[int]) -> torch.Tensor:
        return torch.tensor([lst.labels[i] for i in idx], dtype=torch.int64)

    total = (len(train_list) + len(splits.test) + (len(splits.val) if splits.val is not None else 0)) * 3 * load * load
    streamed = cache_dir is not None and use_memmap(total)
    if streamed:
        # one file in split order, so train and val are views of it (slices copy nothing)
        if splits.val is None:
            both = decode_images(train_list.subset(train_idx + val_idx), load, cache_dir, use_boxes, streamed=True)
            train_images, val_images = both[:len(train_idx)], both[len(train_idx):]
        else:
            train_images = decode_images(train_list, load, cache_dir, use_boxes, streamed=True)
            val_images = decode_images(val_source, load, cache_dir, use_boxes, streamed=True)
    else:
        train_all = decode_images(train_list, load, cache_dir, use_boxes)
        train_images = train_all[train_idx]
        val_images = train_all[val_idx] if splits.val is None else decode_images(val_source, load, cache_dir, use_boxes)
    test_images = decode_images(splits.test, load, cache_dir, use_boxes, streamed=streamed)

    return TensorData(
        train=TensorSplit(train_images, labels(train_list, train_idx), train_idx, streamed),
        val=TensorSplit(val_images, labels(val_source, val_idx), val_idx, streamed),
        test=TensorSplit(test_images, torch.tensor(splits.test.labels, dtype=torch.int64),
                         list(range(len(splits.test))), streamed),
        class_names=list(train_list.class_names),
        image_size=image_size,
        source=splits,
        use_boxes=use_boxes,
    )

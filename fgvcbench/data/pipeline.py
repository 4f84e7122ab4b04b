"""Decode once, augment on the device.

Images are decoded a single time into a uint8 tensor (optionally cropped to the bounding
box first, shorter side resized to ``S``) and the tensor is cached on disk, keyed by the
files' paths, sizes and mtimes and the decode settings. Training batches are then cut
from that tensor and augmented in batch on the training device (random-resized-crop +
flip as one ``grid_sample``), so no per-image Python work sits between the model and its
data.

Two layouts (``crop_extent``):

- ``square``: ``[N, 3, S, S]``, each image's centre square — RandomResizedCrop draws
  within it, so the strips past it on a long image are never seen in training.
- ``full`` (default): each image whole, as torchvision's RandomResizedCrop sees it, up to
  ``MAX_ASPECT`` : 1 (a longer image loses its ends beyond that, centrally). A split whose
  images are all square keeps the square layout. Otherwise it is a canvas
  ``[N, 3, S, W + 2]``: image ``i`` lies left-aligned in columns ``[0, extent_i)`` with its
  longer side along the width (a portrait image is stored transposed), its last column
  is repeated to column ``W`` (so a bilinear sample at the edge reads the edge), and the
  last column carries the image's layout — ``extent_i`` in two bytes (channels 0, 1 of
  row 0), whether it is transposed (channel 2), and the shorter side of the photo it was
  resized from, in the photo's own pixels (two bytes, channels 0, 1 of row 1; 0:
  unknown). The layout travels with every row that is sliced or gathered, so any batch
  of the canvas knows its images' extents on the device, and the augmenter never reads
  them back to the host. :func:`canvas_layout` and :func:`canvas_photo_side` read it; a
  non-square stored tensor is a canvas.
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


# crop_extent (what of each image the cache keeps, see the module's docstring): the Recipe's
# CROP_EXTENTS, "full" and "square"
# the longest side a ``full`` cache keeps, as a multiple of the shorter side: CUB's and
# Aircraft's photos (4:3, 3:2) and Stanford Cars' boxes (about 2:1) fit whole, and all but
# 8 of the 1,500 training boxes of CUB's first 50 classes (212 are longer than 2:1)
MAX_ASPECT = 3.0


def is_canvas(images: torch.Tensor) -> bool:
    """Whether stored images are a ``full`` canvas (non-square) rather than centre squares."""
    return images.shape[-1] != images.shape[-2]


def canvas_layout(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(extent, transposed)`` of each row of a canvas batch, on the batch's device (no
    copy to the host): the stored longer side in pixels (int64) and whether the image is
    stored transposed (bool)."""
    meta = images[:, :, 0, -1].long()
    return meta[:, 0] * 256 + meta[:, 1], meta[:, 2] > 0


def canvas_photo_side(images: torch.Tensor) -> torch.Tensor:
    """The shorter side, in the photo's own pixels, of the photo (its box, less a trimmed
    banner) each row of a canvas batch was resized from: int64 on the batch's device, 0
    where the row does not say (a canvas built without it)."""
    meta = images[:, :2, 1, -1].long()
    return meta[:, 0] * 256 + meta[:, 1]


def image_sizes(extent: torch.Tensor, transposed: torch.Tensor, side: int,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The width and height of each canvas row's image in its own orientation (``dtype``,
    on the layout's device), from :func:`canvas_layout` and the canvas's height."""
    extent = extent.to(dtype)
    side = torch.full_like(extent, float(side))
    return torch.where(transposed, side, extent), torch.where(transposed, extent, side)


@dataclass
class TensorSplit:
    """One split as tensors: ``images`` uint8 ``[N, 3, S, S]`` (or a ``full`` canvas
    ``[N, 3, S, W + 2]``: the module's docstring), ``labels`` int64 ``[N]``; ``index`` maps
    each row back to the split's :class:`ImageList`."""

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


def _region(path: str, size: int, box, trim_bottom: int = 0) -> Image.Image:
    """The RGB pixels a run trains on: the image less a trimmed banner, cut to its box
    (a degenerate box keeps the whole image), decoded at a reduced JPEG scale where that
    still gives at least ``size`` (no box, no trim)."""
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
        if right - left >= 1 and bottom - top >= 1:
            img = img.crop((left, top, right, bottom))
    return img


def _decode_one(path: str, size: int, box, trim_bottom: int = 0) -> np.ndarray:
    try:
        img = _region(path, size, box, trim_bottom)
        scale = size / min(img.size)
        new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
        img = img.resize(new, Image.BILINEAR, reducing_gap=2.0)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError) as exc:   # FileNotFoundError among them
        raise _decode_error(path, exc) from exc


def _decode_error(path: str, exc: Exception) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"image not found: {path} — check the dataset root or run `fgvcbench data verify`")
    return DataError(f"cannot decode image {path} ({exc.__class__.__name__}: {exc}) — replace or remove the file")


def region_size(width: int, height: int, box, trim_bottom: int = 0) -> tuple[int, int]:
    """The width and height of what a run trains on in an image of ``width`` × ``height``:
    less the trimmed banner, cut to ``box`` (clipped to the image, corners rounded as PIL's
    crop rounds them; a degenerate box keeps the whole image) — as :func:`_region` cuts it."""
    height = max(1, height - trim_bottom) if trim_bottom else height
    if box is not None:
        x, y, w, h = box
        left, top, right, bottom = max(0.0, x), max(0.0, y), min(width, x + w), min(height, y + h)
        if right - left >= 1 and bottom - top >= 1:
            width, height = round(right) - round(left), round(bottom) - round(top)
    return width, height


def _full_plan(path: str, size: int, box, trim_bottom: int = 0) -> tuple[tuple[int, int], int, bool, int]:
    """From the file's header alone (no pixel decoded): the size an image (its box, less a trimmed banner) is
    resized to (shorter side ``size``), the longer side a ``full`` cache keeps of it (at
    most ``MAX_ASPECT`` × ``size``), whether it is stored transposed (portrait), and the
    shorter side of that region in the photo's own pixels (before any reduced-scale decode)."""
    try:
        with Image.open(path) as img:
            photo = region_size(*img.size, box, trim_bottom)
            if box is None and not trim_bottom:   # the size the decode will draft (JPEG), so the
                img.draft("RGB", (size, size))    # resize, and the centre square, are _decode_one's
            width, height = img.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise _decode_error(path, exc) from exc
    width, height = region_size(width, height, box, trim_bottom)
    scale = size / max(1, min(width, height))
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    return new, min(max(new), int(MAX_ASPECT * size)), new[1] > new[0], max(1, min(photo))


def _decode_full(path: str, size: int, box, trim_bottom: int, plan) -> np.ndarray:
    """One image for a ``full`` cache: resized to the plan's size, transposed when
    portrait, the longer side cut centrally to the plan's extent: uint8 ``[3, size, extent]``."""
    new, extent, transposed, _ = plan
    try:
        img = _region(path, size, box, trim_bottom).resize(new, Image.BILINEAR, reducing_gap=2.0)
        array = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)   # [3, H, W]
    except (UnidentifiedImageError, OSError) as exc:   # FileNotFoundError among them
        raise _decode_error(path, exc) from exc
    if transposed:
        array = array.transpose(0, 2, 1)
    # cut so that the kept part's own centre square, at (extent - size) // 2, is the square
    # cache's, at (longer side - size) // 2 (plain centring can miss it by a pixel)
    off = (array.shape[2] - size) // 2 - (extent - size) // 2
    return np.ascontiguousarray(array[:, :, off:off + extent])


def canvas_row(array: np.ndarray, extent: int, transposed: bool, width: int, photo_side: int = 0) -> np.ndarray:
    """A ``[3, S, width]`` canvas row: the image, its last column repeated up to the
    layout column, which carries ``extent``, ``transposed`` and ``photo_side`` (the
    shorter side of the photo it was resized from, up to 65535; 0: unknown)."""
    row = np.empty((3, array.shape[1], width), dtype=np.uint8)
    row[:, :, :extent] = array
    row[:, :, extent:width - 1] = array[:, :, extent - 1:extent]
    row[:, :, width - 1] = array[:, :, extent - 1]
    row[0, 0, width - 1], row[1, 0, width - 1], row[2, 0, width - 1] = extent >> 8, extent & 255, int(transposed)
    photo_side = min(int(photo_side), 65535)
    row[0, 1, width - 1], row[1, 1, width - 1] = photo_side >> 8, photo_side & 255
    return row


def _fingerprint(paths: Sequence[str], size: int, boxes, trim_bottom: int = 0, crop_extent: str = "square") -> str:
    h = hashlib.sha256()
    settings = {"size": size, "boxes": boxes is not None, "trim": trim_bottom, "v": 1}
    if crop_extent != "square":   # a square cache keeps the key it had before full ones existed
        settings.update(extent=crop_extent, max_aspect=MAX_ASPECT, layout=2)   # 2: the photo's side in it
    h.update(json.dumps(settings).encode())
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


def streams(count: int, size: int, cache_dir: Path | None, crop_extent: str) -> bool:
    """Whether ``count`` images decoded at ``size`` go to an on-disk memmap (a cache folder,
    and :func:`use_memmap`), counted at the most a ``crop_extent`` cache takes per image
    (before the images' sizes are read: 3:1 for ``full``)."""
    factor = MAX_ASPECT if crop_extent == "full" else 1.0
    return cache_dir is not None and use_memmap(count * 3 * size * size * factor)


def use_memmap(nbytes: int, mode: str | None = None, available: int | None = None) -> bool:
    """Whether to decode into an on-disk memmap: ``FGVCBENCH_DECODE_CACHE`` = ``memory``,
    ``memmap`` or ``auto`` (default: memmap when ``nbytes`` exceeds half the available memory)."""
    mode = decode_cache_mode(mode)
    if mode != "auto":
        return mode == "memmap"
    available = available if available is not None else available_memory()
    return available is not None and nbytes > MEMMAP_SHARE * available


class _Rows:
    """How a list's images become rows of its cache: the rows' shape, and row ``i``."""

    def __init__(self, images: ImageList, size: int, boxes, crop_extent: str, workers: int):
        self.images, self.size, self.boxes, self.workers = images, size, boxes, workers
        self.plans = None
        self.shape = (len(images), 3, size, size)
        if crop_extent == "full":
            with ThreadPoolExecutor(max_workers=workers) as pool:   # the headers only: no pixel is decoded
                self.plans = list(pool.map(lambda i: _full_plan(images.paths[i], size, self._box(i),
                                                                images.trim_bottom), range(len(images))))
            widest = max((plan[1] for plan in self.plans), default=size)
            if widest > size:   # else every image is square: the square layout, with no layout column
                self.shape = (len(images), 3, size, widest + 2)

    def _box(self, i: int):
        return self.boxes[i] if self.boxes is not None else None

    def row(self, i: int) -> np.ndarray:
        if self.plans is None:
            return _decode_one(self.images.paths[i], self.size, self._box(i), self.images.trim_bottom)
        array = _decode_full(self.images.paths[i], self.size, self._box(i), self.images.trim_bottom, self.plans[i])
        if self.shape[-1] == self.size:
            return array
        _, extent, transposed, photo_side = self.plans[i]
        return canvas_row(array, extent, transposed, self.shape[-1], photo_side)

    def each(self):
        """Every row, in order, decoded by a pool of threads."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from pool.map(self.row, range(len(self.images)))


def _cached_shape_fits(shape, images: ImageList, size: int, crop_extent: str) -> bool:
    """Whether a cached tensor has the rows a decode would give (a ``full`` cache's width
    depends on the images, which the key already pins)."""
    shape = tuple(shape)
    if crop_extent == "square":
        return shape == (len(images), 3, size, size)
    return len(shape) == 4 and shape[:3] == (len(images), 3, size) and shape[3] >= size


def _decode_memmap(images: ImageList, size: int, cache_dir: Path, boxes, workers: int,
                   crop_extent: str) -> torch.Tensor:
    """Decode into ``<cache>/decoded/<key>.npy`` row by row (never all in memory) and
    return a read-only tensor view of the memory-mapped file."""
    import warnings
    key = _fingerprint(images.paths, size, boxes, images.trim_bottom, crop_extent)
    path = Path(cache_dir) / "decoded" / f"{key}.npy"
    array = None
    if path.exists():
        try:
            array = np.load(path, mmap_mode="r")
            if not _cached_shape_fits(array.shape, images, size, crop_extent) or array.dtype != np.uint8:
                array = None
        except (OSError, ValueError):
            array = None
    if array is None:
        rows = _Rows(images, size, boxes, crop_extent, workers)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=rows.shape)
        for i, row in enumerate(rows.each()):
            out[i] = row
        out.flush()
        del out
        os.replace(tmp, path)
        array = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch notes the memmap is read-only: it is never written
        return torch.from_numpy(array)


def decode_images(images: ImageList, size: int, cache_dir: Path | None,
                  use_boxes: bool = False, workers: int | None = None, streamed: bool = False,
                  crop_extent: str = "full") -> torch.Tensor:
    """Decode every image of ``images`` to uint8 — ``[N, 3, size, size]`` centre squares
    (``crop_extent: square``, or a ``full`` list whose images are all square), else a
    ``full`` canvas (the module's docstring) — with a disk cache (with ``streamed``, an
    on-disk memmap the tensor views instead of a copy in memory)."""
    if crop_extent not in ("full", "square"):
        raise ValueError(f"crop_extent must be full or square; got {crop_extent!r}")
    boxes = images.boxes if use_boxes else None
    if use_boxes and boxes is None:
        raise DataError("crop to bounding boxes was asked for, but this dataset has no boxes")
    workers = workers or min(8, os.cpu_count() or 1)
    if streamed and cache_dir is not None:
        return _decode_memmap(images, size, Path(cache_dir), boxes, workers, crop_extent)
    cache_file = None
    if cache_dir is not None:
        key = _fingerprint(images.paths, size, boxes, images.trim_bottom, crop_extent)
        cache_file = Path(cache_dir) / "decoded" / f"{key}.pt"
        if cache_file.exists():
            try:
                cached = torch.load(cache_file, map_location="cpu", weights_only=True)
                if _cached_shape_fits(cached.shape, images, size, crop_extent):
                    return cached
            except Exception:  # a corrupt cache file is rebuilt, never trusted
                pass
    rows = _Rows(images, size, boxes, crop_extent, workers)
    out = torch.empty(rows.shape, dtype=torch.uint8)
    for i, array in enumerate(rows.each()):
        out[i] = torch.from_numpy(array)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        from fgvcbench.store import sweep_dead_temporaries, temp_suffix
        sweep_dead_temporaries(cache_file.parent, f"{cache_file.stem}.*.tmp")   # a killed decode's leftovers
        tmp = cache_file.with_suffix(temp_suffix())
        torch.save(out, tmp)
        os.replace(tmp, cache_file)
    return out


def build_tensor_data(splits: DatasetSplits, image_size: int, cache_dir: Path | None,
                      val_fraction: float = 0.1, use_boxes: bool = False, crop_extent: str = "full") -> TensorData:
    """Decode a dataset's splits (``crop_extent``: :func:`decode_images`); carve a
    validation split from train if it has none."""
    load = load_size_for(image_size)
    use_boxes = use_boxes or splits.crop_to_boxes
    train_list = splits.train
    if use_boxes:   # every split is cropped alike, or test would be scored on other views than train's
        lists = [(name, lst) for name, lst in (("train", train_list), ("val", splits.val), ("test", splits.test))
                 if lst is not None]
        lacking = [name for name, lst in lists if lst.boxes is None]
        why = "its dataset option crop: bbox" if splits.crop_to_boxes else "the method asked for use_boxes"
        if len(lacking) == len(lists):
            raise DataError(f"cropping to bounding boxes ({why}), but this dataset has no boxes — leave crop: bbox "
                            "out (or use a dataset with boxes)")
        if lacking:
            have = [name for name, lst in lists if lst.boxes is not None]
            raise DataError(f"cropping to bounding boxes ({why}), but the {' and '.join(lacking)} split"
                            f"{'s have' if len(lacking) > 1 else ' has'} no boxes while {' and '.join(have)} "
                            f"{'have' if len(have) > 1 else 'has'} — the dataset's loader must give every split its "
                            "boxes (a missing box file?), or leave crop: bbox out")
    if splits.val is not None:
        train_idx, val_source, val_idx = list(range(len(train_list))), splits.val, list(range(len(splits.val)))
    else:
        train_idx, val_idx = carve_validation(train_list, val_fraction)
        val_source = train_list
    def labels(lst: ImageList, idx: list[int]) -> torch.Tensor:
        return torch.tensor([lst.labels[i] for i in idx], dtype=torch.int64)

    def decode(images: ImageList, streamed: bool = False) -> torch.Tensor:
        return decode_images(images, load, cache_dir, use_boxes, streamed=streamed, crop_extent=crop_extent)

    count = len(train_list) + len(splits.test) + (len(splits.val) if splits.val is not None else 0)
    streamed = streams(count, load, cache_dir, crop_extent)
    if streamed:
        # one file in split order, so train and val are views of it (slices copy nothing)
        if splits.val is None:
            both = decode(train_list.subset(train_idx + val_idx), streamed=True)
            train_images, val_images = both[:len(train_idx)], both[len(train_idx):]
        else:
            train_images, val_images = decode(train_list, streamed=True), decode(val_source, streamed=True)
    else:
        train_all = decode(train_list)
        train_images = train_all[train_idx]
        val_images = train_all[val_idx] if splits.val is None else decode(val_source)
    test_images = decode(splits.test, streamed=streamed)

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

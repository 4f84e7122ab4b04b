"""The embedded synthetic fine-grained dataset: a deterministic image generator.

Why synthetic: the benchmark must run end to end on any machine with no download, and
the task must still be *fine-grained* — classes of one group look alike overall and
differ only in small parts, while images of one class vary a lot. So:

- ``coarse`` groups each have their own body shape and palette;
- the ``fine`` classes of a group share both and differ only in part attributes (a
  stripe, a spot, a long tail, a long beak, the colour of a small head patch), coded as
  the bits of the class index within its group;
- every image varies in pose (rotation, flip), scale, position, background clutter
  (shapes in colours that include the group palettes), lighting and occlusion;
- ``difficulty`` ∈ [0, 1] shrinks the parts and blends their colours into the body.

Every image is a pure function of (config, split, index): its RNG is seeded from those.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

GENERATOR_VERSION = 1
PARTS = ("stripe", "spot", "longtail", "longbeak", "warmpatch")   # bit i of the class index
SHAPES = ("ellipse", "capsule", "diamond", "kite")


# a generated dataset lives in the cache and in memory: beyond these it is a typo, not a benchmark
LIMITS = {"coarse": 1000, "train_per_class": 10_000, "test_per_class": 10_000, "seed": 2**32 - 1}
MAX_IMAGES = 500_000


@dataclass(frozen=True)
class SyntheticConfig:
    coarse: int = 4
    fine: int = 4                  # fine classes per coarse group
    train_per_class: int = 30
    test_per_class: int = 20
    image_size: int = 64
    difficulty: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        # types first, so a wrong type (e.g. a quoted YAML value) is a ValueError naming the field, not a TypeError
        for field in ("coarse", "fine", "train_per_class", "test_per_class", "image_size", "seed"):
            if isinstance(getattr(self, field), bool) or not isinstance(getattr(self, field), int):
                raise ValueError(f"synthetic option {field} must be an integer, got {getattr(self, field)!r}")
        if isinstance(self.difficulty, bool) or not isinstance(self.difficulty, (int, float)):
            raise ValueError(f"synthetic option difficulty must be a number in [0, 1], got {self.difficulty!r}")
        checks = [("coarse", self.coarse >= 1, ">= 1"), ("fine", 2 <= self.fine <= 2 ** len(PARTS), "in [2, 32]"),
                  ("train_per_class", self.train_per_class >= 1, ">= 1"),
                  ("test_per_class", self.test_per_class >= 1, ">= 1"),
                  ("image_size", 16 <= self.image_size <= 512, "in [16, 512]"),
                  ("difficulty", 0.0 <= self.difficulty <= 1.0, "in [0, 1]"),
                  ("seed", self.seed >= 0, ">= 0 (numpy seeds are non-negative)")]
        checks = [(f, ok and (f not in LIMITS or getattr(self, f) <= LIMITS[f]),
                   allowed if f not in LIMITS else f"{allowed} and <= {LIMITS[f]:,}") for f, ok, allowed in checks]
        for field, ok, allowed in checks:
            if not ok:
                raise ValueError(f"synthetic option {field} must be {allowed}, got {getattr(self, field)!r}")
        total = self.coarse * self.fine * (self.train_per_class + self.test_per_class)
        if total > MAX_IMAGES:   # it is generated as JPEGs into the cache, then decoded into memory
            raise ValueError(f"synthetic options make {total:,} images, more than {MAX_IMAGES:,}: lower coarse, fine "
                             f"or the images per class")

    def fingerprint(self) -> str:
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def part_bits(config: SyntheticConfig, fine_label: int) -> dict[str, bool]:
    k = fine_label % config.fine
    return {part: bool(k >> i & 1) for i, part in enumerate(PARTS)}


def class_names(config: SyntheticConfig) -> list[str]:
    names = []
    for label in range(config.coarse * config.fine):
        bits = part_bits(config, label)
        parts = [p for p in PARTS if bits[p]] or ["plain"]
        names.append(f"g{label // config.fine}_" + "_".join(parts))
    return names


def coarse_names(config: SyntheticConfig) -> list[str]:
    return [f"group{g}_{SHAPES[g % len(SHAPES)]}" for g in range(config.coarse)]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _group_palette(config: SyntheticConfig, group: int):
    hue = (group * 0.618034 + config.seed * 0.137) % 1.0        # well-spread hues per group
    return _rgb(hue, 0.65, 0.85), _rgb(hue + 0.08, 0.5, 0.45)   # body, secondary


def _draw_object(config: SyntheticConfig, fine_label: int, canvas: int, rng: np.random.Generator) -> Image.Image:
    """The object on a transparent layer, centred, before pose and placement."""
    group = fine_label // config.fine
    bits = part_bits(config, fine_label)
    body, secondary = _group_palette(config, group)
    size = 1.0 - 0.6 * config.difficulty       # part size factor
    contrast = 1.0 - 0.65 * config.difficulty  # how far part colours stand out from the body
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    c = canvas / 2
    L = canvas * 0.30 * (1 + 0.08 * rng.standard_normal())     # half length, with individual variation
    H = L * (0.45 + 0.1 * (group % 3)) * (1 + 0.05 * rng.standard_normal())
    shape = SHAPES[group % len(SHAPES)]
    tail_len = L * (0.25 + (0.55 * size if bits["longtail"] else 0.0))
    d.polygon([(c - L * 0.8, c), (c - L * 0.8 - tail_len, c - H * 0.7), (c - L * 0.8 - tail_len, c + H * 0.7)],
              fill=secondary)
    box = (c - L, c - H, c + L, c + H)
    if shape == "ellipse":
        d.ellipse(box, fill=body)
    elif shape == "capsule":
        d.rounded_rectangle(box, radius=H, fill=body)
    elif shape == "diamond":
        d.polygon([(c - L, c), (c, c - H), (c + L, c), (c, c + H)], fill=body)
    else:
        d.polygon([(c - L, c), (c - L * 0.2, c - H), (c + L, c), (c - L * 0.2, c + H)], fill=body)
    head_r = H * 0.55
    hx, hy = c + L * 0.95, c - H * 0.35
    d.ellipse((hx - head_r, hy - head_r, hx + head_r, hy + head_r), fill=_mix(body, secondary, 0.3))
    beak = head_r * (0.6 + (1.3 * size if bits["longbeak"] else 0.0))
    d.polygon([(hx + head_r * 0.8, hy - head_r * 0.25), (hx + head_r * 0.8 + beak, hy),
               (hx + head_r * 0.8, hy + head_r * 0.25)], fill=(235, 190, 60))
    d.ellipse((hx + head_r * 0.2, hy - head_r * 0.45, hx + head_r * 0.45, hy - head_r * 0.2), fill=(15, 15, 15))
    patch_colour = (230, 60, 40) if bits["warmpatch"] else (40, 110, 230)
    pr = head_r * 0.45 * (0.5 + 0.5 * size)
    d.ellipse((hx - pr * 1.6, hy - pr * 0.2, hx - pr * 0.2, hy + pr * 1.2), fill=_mix(body, patch_colour, contrast))
    if bits["stripe"]:
        w = L * 0.22 * size
        d.rectangle((c - w, c - H * 0.9, c + w, c + H * 0.9), fill=_mix(body, (250, 250, 245), contrast))
    if bits["spot"]:
        sr = H * 0.35 * size
        sx = c - L * 0.45
        d.ellipse((sx - sr, c - sr, sx + sr, c + sr), fill=_mix(body, (20, 20, 30), contrast))
    return layer


def _background(canvas: int, config: SyntheticConfig, rng: np.random.Generator) -> Image.Image:
    base = tuple(int(v) for v in rng.integers(40, 220, 3))
    img = Image.new("RGB", (canvas, canvas), base)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):                # clutter, some in group colours
        if rng.random() < 0.3:
            colour = _group_palette(config, int(rng.integers(config.coarse)))[int(rng.integers(2))]
        else:
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * canvas
        w, h = rng.uniform(0.05, 0.35, 2) * canvas
        kind = rng.integers(3)
        if kind == 0:
            d.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        elif kind == 1:
            d.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            d.line((x0, y0, x0 + w * 2, y0 + h * 2), fill=colour, width=int(rng.integers(1, 4)))
    noise = rng.normal(0, 10, (canvas, canvas, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def render_image(config: SyntheticConfig, fine_label: int, rng: np.random.Generator):
    """One image and its object box ``(x, y, w, h)`` in pixels of the returned image."""
    canvas = max(2 * config.image_size, 96)
    img = _background(canvas, config, rng)
    obj = _draw_object(config, fine_label, canvas, rng)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
    obj = obj.rotate(float(rng.uniform(-45, 45)), resample=Image.BILINEAR)
    scale = float(rng.uniform(0.55, 1.0))
    side = max(8, int(canvas * scale))
    obj = obj.resize((side, side), Image.BILINEAR)
    bbox = obj.getchannel("A").getbbox() or (0, 0, side, side)
    bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    # place so the object's box stays inside the canvas
    ox = int(rng.uniform(-bbox[0], max(canvas - bbox[2], -bbox[0]) + 1e-6))
    oy = int(rng.uniform(-bbox[1], max(canvas - bbox[3], -bbox[1]) + 1e-6))
    img.paste(obj, (ox, oy), obj)
    x0, y0 = ox + bbox[0], oy + bbox[1]
    if rng.random() < 0.5:                                    # occlusion: at most ~30 % of the box
        d = ImageDraw.Draw(img)
        ow, oh = bw * rng.uniform(0.15, 0.55), bh * rng.uniform(0.15, 0.55)
        px, py = x0 + rng.uniform(0, bw - ow), y0 + rng.uniform(0, bh - oh)
        d.rectangle((px, py, px + ow, py + oh), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.65, 1.35)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.7, 1.3)))
    cast = rng.uniform(0.85, 1.15, 3)
    arr = np.clip(np.asarray(img, dtype=np.float32) * cast, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr).resize((config.image_size, config.image_size), Image.LANCZOS)
    f = config.image_size / canvas
    x, y = max(0.0, x0 * f), max(0.0, y0 * f)
    w, h = min(bw * f, config.image_size - x), min(bh * f, config.image_size - y)
    return img, (round(x, 2), round(y, 2), round(w, 2), round(h, 2))


def _image_rng(config: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, {"train": 0, "test": 1}[split], index, GENERATOR_VERSION])


def materialize(config: SyntheticConfig, cache_dir: str | os.PathLike) -> Path:
    """Write the dataset once into ``cache_dir/synthetic-<fingerprint>`` and return it.

    Built in a temporary sibling and renamed into place, with a ``COMPLETE`` marker, so
    an interrupted generation never leaves a half dataset that looks whole."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"synthetic-{config.fingerprint()}"
    if (target / "COMPLETE").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    import socket
    from fgvcbench.store import pid_alive
    host = socket.gethostname()
    tmp = cache_dir / f".{target.name}.tmp-{host}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for stale in cache_dir.glob(".synthetic-*.tmp-*"):   # a killed generation's half-written folder
        owner, _, pid = stale.name.split(".tmp-", 1)[-1].rpartition("-")
        # only this host's: a cache shared between machines holds other hosts' live generations
        if owner == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    names, groups = class_names(config), coarse_names(config)
    rows = []
    for split, per_class in (("train", config.train_per_class), ("test", config.test_per_class)):
        index = 0
        for label, name in enumerate(names):
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img, (x, y, w, h) = render_image(config, label, _image_rng(config, split, index))
                rel = f"{split}/{name}/{i:05d}.jpg"
                img.save(tmp / rel, quality=90)
                rows.append([rel, split, label, label // config.fine, x, y, w, h])
                index += 1
    with open(tmp / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "split", "fine_label", "coarse_label", "x", "y", "w", "h"])
        writer.writerows(rows)
    (tmp / "classes.txt").write_text("\n".join(names) + "\n")
    (tmp / "coarse_classes.txt").write_text("\n".join(groups) + "\n")
    (tmp / "config.json").write_text(json.dumps({**asdict(config), "version": GENERATOR_VERSION}, indent=2))
    (tmp / "COMPLETE").write_text("ok\n")
    if target.exists() and not (target / "COMPLETE").exists():
        shutil.rmtree(target, ignore_errors=True)             # a leftover from an older crash
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)                # another process finished first
        if not (target / "COMPLETE").exists():
            raise
    return target


def load_split(root: str | os.PathLike, split: str) -> dict:
    """The rows of ``metadata.csv`` for one split, with absolute paths."""
    if split not in ("train", "test"):     # an unknown split would otherwise read as an empty one
        raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found — regenerate the synthetic dataset (delete {root})")
    out = {"paths": [], "labels": [], "coarse_labels": [], "boxes": [],
           "class_names": (root / "classes.txt").read_text().split(),
           "coarse_names": (root / "coarse_classes.txt").read_text().split()}
    with open(meta, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split:
                continue
            out["paths"].append(str(root / row["path"]))
            out["labels"].append(int(row["fine_label"]))
            out["coarse_labels"].append(int(row["coarse_label"]))
            out["boxes"].append(tuple(float(row[k]) for k in ("x", "y", "w", "h")))
    return out

"""TrivialAugmentWide for a whole batch at once, each sample with its own operation and
magnitude, on whatever device the batch lives on.

torchvision's ``TrivialAugmentWide`` draws one operation and one magnitude per *call*, so
applied to a batch every image gets the same augmentation; calling it once per image is
correct but launches a few kernels per image. This module fills that gap: it draws an
(op, magnitude bin, sign) triple per sample exactly as torchvision defines them
(``torchvision/transforms/v2/_auto_augment.py``: 14 ops, 31 magnitude bins) and applies
each op to the samples that drew it — all geometric ops together as one batched
``grid_sample`` (nearest, zero fill, torchvision's affine-grid convention), each colour op
as one batched kernel with per-sample factors. Every op reproduces
``torchvision.transforms.v2.functional`` on uint8 images (tests compare them op by op).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
NUM_BINS = 31
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _bins(op: str) -> torch.Tensor | None:
    """torchvision TrivialAugmentWide's magnitude space for one op (None: no magnitude)."""
    if op in ("ShearX", "ShearY", "Brightness", "Color", "Contrast", "Sharpness"):
        return torch.linspace(0.0, 0.99, NUM_BINS)
    if op in ("TranslateX", "TranslateY"):
        return torch.linspace(0.0, 32.0, NUM_BINS)
    if op == "Rotate":
        return torch.linspace(0.0, 135.0, NUM_BINS)
    if op == "Posterize":
        return (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 6)).round().int()).float()
    if op == "Solarize":
        return torch.linspace(1.0, 0.0, NUM_BINS)
    return None


SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
_TABLE = torch.stack([_bins(op) if _bins(op) is not None else torch.zeros(NUM_BINS) for op in OPS])


def sample_params(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample op index and signed magnitude, with torchvision's distribution: op
    uniform, magnitude bin uniform, sign ± with probability ½ for signed ops."""
    op = torch.randint(len(OPS), (batch,), generator=generator)
    level = torch.randint(NUM_BINS, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) <= 0.5
    magnitude = _TABLE[op, level]
    signed = torch.tensor([OPS[i] in SIGNED for i in range(len(OPS))])[op]
    return op, torch.where(signed & flip, -magnitude, magnitude)


def _inverse_affine(cx, cy, angle, tx, ty, shear_x, shear_y) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1), vectorised: [B, 2, 3]."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([torch.stack([m0, m1, m2], -1), torch.stack([m3, m4, m5], -1)], -2)


def _geometric(images: torch.Tensor, ops: list[str], magnitude: torch.Tensor) -> torch.Tensor:
    b, _, h, w = images.shape
    dev = images.device
    zero = torch.zeros(b, device=dev)
    m = magnitude.to(dev)
    kind = {name: torch.tensor([o == name for o in ops], device=dev) for name in GEOMETRIC}
    shear_deg = torch.rad2deg(torch.atan(m))
    # shears turn around the top-left corner (center=[0, 0] → -w/2, -h/2 in centred coordinates)
    corner = kind["ShearX"] | kind["ShearY"]
    cx, cy = torch.where(corner, -w * 0.5, zero), torch.where(corner, -h * 0.5, zero)
    angle = torch.where(kind["Rotate"], -(m % 360), zero)            # rotate uses -angle in affine terms
    tx = torch.where(kind["TranslateX"], torch.trunc(m), zero)        # int(magnitude)
    ty = torch.where(kind["TranslateY"], torch.trunc(m), zero)
    theta = _inverse_affine(cx, cy, angle, tx, ty, torch.where(kind["ShearX"], shear_deg, zero),
                            torch.where(kind["ShearY"], shear_deg, zero))
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=dev)], -1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    out = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = out.round_().to(torch.uint8)
    # torchvision's exact fast paths for right angles (and 0) when rotating square images
    if h == w:
        for k, deg in ((1, 90.0), (2, 180.0), (3, 270.0)):
            pick = kind["Rotate"] & ((m % 360) == deg)
            if pick.any():
                out[pick] = torch.rot90(images[pick], k=k, dims=(-2, -1))
    pick = kind["Rotate"] & ((m % 360) == 0)
    out[pick] = images[pick]
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * 0.2989 + x[:, 1] * 0.587 + x[:, 2] * 0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = ratio.view(-1, 1, 1, 1)
    return (x * r + other * (1.0 - r)).clamp_(0, 255).to(torch.uint8)   # .to() truncates, as torchvision


def _colour(images: torch.Tensor, op: str, magnitude: torch.Tensor) -> torch.Tensor:
    x = images.float()
    factor = (1.0 + magnitude).to(images.device)
    if op == "Brightness":
        return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 255).to(torch.uint8)
    if op == "Color":
        return _blend(x, _gray(x), factor)
    if op == "Contrast":
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), factor)
    if op == "Sharpness":
        if x.shape[-1] <= 2 or x.shape[-2] <= 2:
            return images
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
        blurred = F.conv2d(x, kernel.expand(3, 1, 3, 3), groups=3).round_()
        out = x.clone()
        view = out[..., 1:-1, 1:-1]
        view.add_((blurred - view) * (1.0 - factor).view(-1, 1, 1, 1))
        return out.clamp_(0, 255).to(torch.uint8)
    if op == "Posterize":
        bits = magnitude.to(torch.int64)
        mask = (((1 << bits) - 1) << (8 - bits)).clamp(max=255).to(torch.uint8).to(images.device)
        return images & mask.view(-1, 1, 1, 1)
    if op == "Solarize":
        threshold = (255.0 * magnitude).to(images.device).view(-1, 1, 1, 1)
        return torch.where(x >= threshold, images.bitwise_not(), images)
    from torchvision.transforms.v2 import functional as TF
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    return images


def apply_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply op ``OPS[op[i]]`` with ``magnitude[i]`` to sample ``i`` of a uint8 batch."""
    out = images.clone()
    names = [OPS[i] for i in op.tolist()]
    geo = torch.tensor([n in GEOMETRIC for n in names])
    if geo.any():
        idx = geo.nonzero().squeeze(1)
        out[idx.to(images.device)] = _geometric(images[idx.to(images.device)], [names[i] for i in idx.tolist()],
                                                magnitude[idx])
    for name in OPS:
        if name == "Identity" or name in GEOMETRIC:
            continue
        idx = torch.tensor([i for i, n in enumerate(names) if n == name], dtype=torch.long)
        if len(idx):
            dev_idx = idx.to(images.device)
            out[dev_idx] = _colour(images[dev_idx], name, magnitude[idx])
    return out


def trivial_augment_wide(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugmentWide on a uint8 batch ``[B, 3, H, W]`` with per-sample parameters."""
    op, magnitude = sample_params(images.shape[0], generator)
    return apply_ops(images, op, magnitude)

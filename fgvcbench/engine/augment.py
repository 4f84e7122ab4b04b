"""Batched augmentation on the training device.

The geometric part (RandomResizedCrop + horizontal flip) is one affine ``grid_sample``
for the whole batch: each sample gets its own crop box and flip — torchvision's v2
RandomResizedCrop draws one box per call, kornia is not a dependency, so this fills the
gap. TrivialAugmentWide and AutoAugment run batched with per-sample ops
(``batch_policies``) on the crops, in torchvision's reference order (crop, flip, policy),
or on the whole stored image before the crop (``policy_before_crop``, FineRNet's code).
Random erasing and mixup/cutmix are vectorised.

Random parameters are drawn on the host from the run's CPU generator, so a seed gives the
same crops, flips and ops on every device, and reach the device in one asynchronous copy
(``transfer.to_device``); only random erasing's noise is drawn on the device, from a
generator seeded by the host stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fgvcbench.engine.recipe import POLICIES, Recipe
from fgvcbench.engine.transfer import to_device


def test_view(images: torch.Tensor, size: int, resize: int | None = None) -> torch.Tensor:
    """The evaluation view: resize to ``resize`` (default ``size / 0.875``, e.g. 256 for
    224), centre-crop ``size``. Stored images already at that size are only cropped;
    otherwise (FixRes: torchvision's val resize 232 → crop 224 after training at 176)
    they are resized first. A ``full`` canvas gives each image's centre square first
    (Resize(256) + CenterCrop(224) never reaches past it)."""
    from fgvcbench.data.pipeline import is_canvas, load_size_for
    target = resize or load_size_for(size)
    if is_canvas(images):   # a full cache: the test view sees each image's centre square, as torchvision's
        images = centre_squares(images)
    x = images.float()
    if x.shape[-1] != target:
        x = F.interpolate(x, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
    return center_crop(x, size)


def centre_squares(images: torch.Tensor) -> torch.Tensor:
    """Each row's centre square of a ``full`` canvas (``fgvcbench.data.pipeline``), turned
    back to the image's own orientation: ``[B, C, S, S]``, cut on the batch's device."""
    from fgvcbench.data.pipeline import canvas_layout
    b, c, side, _ = images.shape
    extent, transposed = canvas_layout(images)
    columns = ((extent - side) // 2).view(b, 1) + torch.arange(side, device=images.device)
    square = images.gather(3, columns.view(b, 1, 1, side).expand(b, c, side, side))
    return torch.where(transposed.view(b, 1, 1, 1), square.transpose(2, 3), square)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` crop of square uint8 images stored at the load size."""
    s = images.shape[-1]
    if s == size:
        return images
    off = (s - size) // 2
    return images[..., off:off + size, off:off + size]


def crop_boxes(b: int, side: int, scale_min: float, generator: torch.Generator,
               attempts: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomResizedCrop's box sizes as torchvision's ``get_params`` draws them, for a batch
    of square ``side`` images: up to 10 tries of area ~ U(scale_min, 1), log-ratio ~
    U(log 3/4, log 4/3), rounded to pixels, keeping the first that fits; a sample with no
    fit takes the whole image (torchvision's fallback for a square image). Returns widths
    and heights as fractions of the side."""
    area_u = torch.rand(b, attempts, generator=generator)
    ratio_u = torch.rand(b, attempts, generator=generator)
    sides = torch.full((b,), float(side))
    w, h, _ = sized_crop_boxes(sides, sides, scale_min, area_u, ratio_u)
    return w / side, h / side


def sized_crop_boxes(width: torch.Tensor, height: torch.Tensor, scale_min: float, area_u: torch.Tensor,
                     ratio_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RandomResizedCrop's box as torchvision's ``get_params`` draws it, for images of
    per-sample ``width`` × ``height`` (float tensors ``[B]``, pixels), from uniforms drawn
    beforehand (``[B, tries]`` each), on whatever device they are: the first try that fits
    (area ~ U(scale_min, 1)·W·H, log-ratio ~ U(log 3/4, log 4/3), rounded to pixels), else
    torchvision's fallback — the whole image, its ratio clamped to [3/4, 4/3] (a wider
    image keeps its height and 4/3 of it as width). Returns ``(w, h, found)``."""
    area = (scale_min + (1 - scale_min) * area_u) * width.unsqueeze(1) * height.unsqueeze(1)
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * ratio_u)
    w = torch.sqrt(area * ratio).round()
    h = torch.sqrt(area / ratio).round()
    fits = (w > 0) & (w <= width.unsqueeze(1)) & (h > 0) & (h <= height.unsqueeze(1))
    first = fits.float().argmax(1, keepdim=True)   # the first try that fits (0 when none does)
    found = fits.any(1)
    in_ratio = width / height
    fallback_w = torch.where(in_ratio > 4 / 3, (height * 4 / 3).round(), width)
    fallback_h = torch.where(in_ratio < 3 / 4, (width / (3 / 4)).round(), height)
    return (torch.where(found, w.gather(1, first).squeeze(1), fallback_w),
            torch.where(found, h.gather(1, first).squeeze(1), fallback_h), found)


def canvas_crop_flip(images: torch.Tensor, size: int, scale_min: float, flip: bool,
                     generator: torch.Generator, rotation: float = 0.0) -> torch.Tensor:
    """:func:`random_resized_crop_flip` on a ``full`` canvas (float): each image's crop is
    drawn within its own extent and orientation. The uniforms are drawn on the host in the
    square path's order and reach the device in one copy; the boxes are worked out there
    from each row's layout, so the host never waits for the device."""
    from fgvcbench.data.pipeline import canvas_layout, image_sizes
    b, _, side, canvas_width = images.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area_u, ratio_u = rand(b, 10), rand(b, 10)
    drawn = [rand(b), rand(b)]                                    # the crop's position
    drawn.append(rand(b) if flip else torch.ones(b))              # ≥ 0.5: not flipped
    drawn.append(rand(b) * 2 - 1 if rotation > 0 else torch.zeros(b))
    u = to_device(torch.cat([area_u, ratio_u, torch.stack(drawn, 1)], 1), images.device)
    area_u, ratio_u, ux, uy, uf, ur = u[:, :10], u[:, 10:20], u[:, 20], u[:, 21], u[:, 22], u[:, 23]
    extent, transposed = canvas_layout(images)
    width, height = image_sizes(extent, transposed, side, images.dtype)
    extent = extent.to(images.dtype)
    w, h, found = sized_crop_boxes(width, height, scale_min, area_u, ratio_u)
    # the fallback is centred as torchvision centres it: at whole pixels, (W - w) // 2
    cx = torch.where(found, w / 2 + ux * (width - w), torch.div(width - w, 2, rounding_mode="floor") + w / 2)
    cy = torch.where(found, h / 2 + uy * (height - h), torch.div(height - h, 2, rounding_mode="floor") + h / 2)
    sign = torch.where(uf < 0.5, -1.0, 1.0).to(images.dtype)
    # an output point (a, b) in [-1, 1]² shows the image's pixel point A·(a, b) + t
    zero = torch.zeros_like(w)
    a = torch.stack([torch.stack([sign * w / 2, zero], 1), torch.stack([zero, h / 2], 1)], 1)   # [B, 2, 2]
    t = torch.stack([cx, cy], 1)
    if rotation > 0:   # RandomRotation about the image's centre, as the square path (pixels are square)
        angle = torch.deg2rad(ur * rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        middle = torch.stack([width / 2, height / 2], 1)
        a = rot @ a
        t = (rot @ (t - middle).unsqueeze(2)).squeeze(2) + middle
    theta = torch.cat([a, t.unsqueeze(2)], 2)
    theta = torch.where(transposed.view(b, 1, 1), theta.flip(1), theta)   # stored transposed: swap x and y
    theta = torch.stack([theta[:, 0] * (2 / canvas_width), theta[:, 1] * (2 / side)], 1)   # pixels → [-1, 1]
    theta[:, :, 2] -= 1                                                   # (align_corners=False)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros" if rotation > 0 else "reflection",
                        align_corners=False)
    if rotation > 0:   # what the rotation uncovers past the image's extent is black, as past its other
        # sides, where bilinear sampling fades to the zero padding over the pixel across the edge
        column = (grid[..., 0] + 1) * (canvas_width / 2)
        out = out * (extent.view(b, 1, 1) + 0.5 - column).clamp(0, 1).unsqueeze(1)
    return out


def random_resized_crop_flip(images: torch.Tensor, size: int, scale_min: float,
                             flip: bool, generator: torch.Generator, rotation: float = 0.0) -> torch.Tensor:
    """Per-sample RandomResizedCrop(scale=(scale_min, 1), ratio=(3/4, 4/3)) and flip,
    as a single batched bilinear resample. ``images`` float ``[B, C, S, S]`` (a ``full``
    canvas goes to :func:`canvas_crop_flip`).

    ``rotation`` > 0: first RandomRotation(±rotation°) of the whole image about its centre,
    corners filled with 0 (torchvision's ``RandomRotation(d)`` before the crop, SimTrans's
    code), folded into the same affine map, so the batch is still resampled once
    (bilinearly; torchvision rotates with nearest, then crops bilinearly). The angles are
    drawn after the crop's numbers, so ``rotation`` 0 leaves a seed's crops as they were."""
    from fgvcbench.data.pipeline import is_canvas
    if is_canvas(images):
        return canvas_crop_flip(images, size, scale_min, flip, generator, rotation)
    b = images.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    w, h = crop_boxes(b, images.shape[-1], scale_min, generator)   # fractions of the source side
    cx = (rand(b) * 2 - 1) * (1 - w)               # centre in [-1, 1] keeping the box inside
    cy = (rand(b) * 2 - 1) * (1 - h)
    sign = torch.ones(b)
    if flip:
        sign = torch.where(rand(b) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    padding = "reflection"
    if rotation > 0:
        # torchvision's rotate(img, a) (a > 0 counter-clockwise on screen, y pointing down): a
        # pixel p of the rotated image shows source pixel M(a)·p, M = [[cos, −sin], [sin, cos]]
        # in normalised coordinates (square images: they rotate like pixels); the crop's map
        # is composed after it
        angle = torch.deg2rad((rand(b) * 2 - 1) * rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        theta = rot @ theta
        padding = "zeros"                        # the corners the rotation uncovers are black
    grid = F.affine_grid(to_device(theta, images.device), [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def erasing_boxes(b: int, hgt: int, wid: int, generator: torch.Generator,
                  attempts: int = 10) -> tuple[torch.Tensor, ...]:
    """RandomErasing's rectangles as torchvision's ``get_params`` draws them: up to 10
    tries of area ~ U(0.02, 0.33)·H·W and log-ratio ~ U(log 0.3, log 3.3), rounded to
    pixels, keeping the first with h < H and w < W; then the corner uniformly where the
    box fits. Returns ``(found, y0, x0, eh, ew)``; a sample with no fit is left as is."""
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area = (0.02 + (0.33 - 0.02) * rand(b, attempts)) * hgt * wid
    ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * rand(b, attempts))
    eh = torch.sqrt(area * ratio).round().long()
    ew = torch.sqrt(area / ratio).round().long()
    fits = (eh < hgt) & (ew < wid) & (eh > 0) & (ew > 0)
    first = fits.float().argmax(1)
    rows = torch.arange(b)
    found, eh, ew = fits.any(1), eh[rows, first], ew[rows, first]
    y0 = (rand(b) * (hgt - eh + 1)).long()
    x0 = (rand(b) * (wid - ew + 1)).long()
    return found, y0, x0, eh, ew


def random_erasing(images: torch.Tensor, p: float, generator: torch.Generator,
                   value: str = "zero") -> torch.Tensor:
    """Erase one random rectangle (area 2–33 %, ratio 0.3–3.3; :func:`erasing_boxes`) per
    sample with probability p, on the normalised batch, as torchvision's RandomErasing:
    ``value`` "zero" fills 0 (its default and its reference recipe's), "random" normal
    noise (``value='random'``). Boxes are drawn on the host; noise, for the erased samples
    only, on the images' device."""
    b, _, hgt, wid = images.shape
    device = images.device
    apply = torch.rand(b, generator=generator) < p
    found, y0, x0, eh, ew = erasing_boxes(b, hgt, wid, generator)
    erased = (apply & found).nonzero().squeeze(1)
    noise_seed = int(torch.randint(2**62, (1,), generator=generator))
    if not len(erased):
        return images
    rows = to_device(erased, device)
    y0, y1, x0, x1 = to_device(torch.stack([y0, y0 + eh, x0, x0 + ew])[:, erased], device).view(4, -1, 1, 1)
    ys = torch.arange(hgt, device=device).view(1, hgt, 1)
    xs = torch.arange(wid, device=device).view(1, 1, wid)
    mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    if value == "random":
        noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
        fill = torch.randn((len(erased),) + tuple(images.shape[1:]), generator=noise_generator, device=device,
                           dtype=images.dtype)
    else:
        fill = torch.zeros((), device=device, dtype=images.dtype)
    out = images.clone()
    out[rows] = torch.where(mask.unsqueeze(1), fill, images[rows])
    return out


def mix_batch(images: torch.Tensor, targets: torch.Tensor, num_classes: int, recipe: Recipe,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix, one chosen at random with equal probability when both are on
    (the refined-recipe article's setting). Returns images and soft targets."""
    soft = F.one_hot(targets, num_classes).to(images.dtype)
    choices = [n for n, a in (("mixup", recipe.mixup_alpha), ("cutmix", recipe.cutmix_alpha)) if a > 0]
    if not choices:
        return images, soft
    kind = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    alpha = recipe.mixup_alpha if kind == "mixup" else recipe.cutmix_alpha
    # λ ~ Beta(α, α) from the run's generator (torch's Beta sampler takes none: it would
    # draw from the global one), through a NumPy generator seeded by it
    lam = float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator))).beta(alpha, alpha))
    perm = to_device(torch.randperm(images.shape[0], generator=generator), images.device)
    if kind == "mixup":
        mixed = lam * images + (1 - lam) * images[perm]
    else:
        hgt, wid = images.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(hgt * cut), int(wid * cut)
        cy, cx = int(torch.randint(hgt, (1,), generator=generator)), int(torch.randint(wid, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, hgt)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, wid)
        mixed = images.clone()
        mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (hgt * wid)
    return mixed, lam * soft + (1 - lam) * soft[perm]


class BatchAugmenter:
    """Turns a uint8 batch at the load size into a normalised float training batch."""

    def __init__(self, recipe: Recipe, mean, std, device: torch.device, generator: torch.Generator):
        self.recipe, self.device, self.generator = recipe, device, generator
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def train(self, images_u8: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        images_u8 = images_u8.to(self.device, non_blocking=True)
        has_policy = r.augment in POLICIES
        if has_policy and r.policy_before_crop:   # FineRNet's code: the policy sees the whole image
            images_u8 = self._policy(images_u8)   # each canvas row as the image it holds
        if r.augment == "none":  # the test-time view
            x = test_view(images_u8, r.image_size)
        else:
            scale_min = r.crop_scale_min if r.augment != "flip" else 1.0
            x = random_resized_crop_flip(images_u8.float(), r.image_size, scale_min, flip=True,
                                         generator=self.generator, rotation=r.rotation_degrees)
            if has_policy and not r.policy_before_crop:   # torchvision's order: crop, flip, then the policy
                x = self._policy(x.round_().clamp_(0, 255).to(torch.uint8)).float()
        x = (x - self.mean) / self.std
        if r.random_erasing > 0:
            x = random_erasing(x, r.random_erasing, self.generator, r.random_erasing_value)
        return x

    def _policy(self, images_u8: torch.Tensor) -> torch.Tensor:
        """TrivialAugmentWide or AutoAugment, batched with per-sample ops on the device;
        with ``policy_p`` < 1 each sample gets it on its own coin (RandomApply)."""
        from fgvcbench.engine.batch_policies import auto_augment, trivial_augment_wide
        from fgvcbench.data.pipeline import is_canvas
        if self.recipe.augment == "trivial_augment":   # a stored batch that is not square is a full canvas
            augmented = trivial_augment_wide(images_u8, self.generator, interpolation=self.recipe.policy_interpolation,
                                             canvas=is_canvas(images_u8))
        else:
            augmented = auto_augment(images_u8, self.generator, interpolation=self.recipe.policy_interpolation,
                                     canvas=is_canvas(images_u8))
        if self.recipe.policy_p < 1.0:
            keep = to_device(torch.rand(len(images_u8), generator=self.generator) < self.recipe.policy_p, self.device)
            augmented = torch.where(keep.view(-1, 1, 1, 1), augmented, images_u8)
        return augmented

    def eval(self, images_u8: torch.Tensor) -> torch.Tensor:
        size = self.recipe.eval_image_size or self.recipe.image_size
        x = test_view(images_u8.to(self.device, non_blocking=True), size, self.recipe.eval_resize)
        return (x - self.mean) / self.std

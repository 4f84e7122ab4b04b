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

import torch
import torch.nn.functional as F

from fgvcbench.engine.recipe import Recipe
from fgvcbench.engine.transfer import to_device


def test_view(images: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation view: resize to ``size / 0.875`` (e.g. 256 for 224), centre-crop
    ``size``. Stored images already at that size are only cropped; otherwise (FixRes:
    testing at another resolution than training) they are resized first."""
    from fgvcbench.data.pipeline import load_size_for
    target = load_size_for(size)
    x = images.float()
    if x.shape[-1] != target:
        x = F.interpolate(x, size=(target, target), mode="bilinear", antialias=True, align_corners=False)
    return center_crop(x, size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` crop of square uint8 images stored at the load size."""
    s = images.shape[-1]
    if s == size:
        return images
    off = (s - size) // 2
    return images[..., off:off + size, off:off + size]


def random_resized_crop_flip(images: torch.Tensor, size: int, scale_min: float,
                             flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample RandomResizedCrop(scale=(scale_min, 1), ratio=(3/4, 4/3)) and flip,
    as a single batched bilinear resample. ``images`` float ``[B, C, S, S]``."""
    b = images.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area = scale_min + (1 - scale_min) * rand(b)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)   # fraction of the source width
    h = torch.sqrt(area / ratio).clamp(max=1.0)
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
    grid = F.affine_grid(to_device(theta, images.device), [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erasing(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Erase one random rectangle (area 2–33 %, ratio 0.3–3.3) per sample with prob. p,
    filled with normal noise, as torchvision's RandomErasing(value='random'). Boxes are
    drawn on the host; the noise, for the erased samples only, on the images' device."""
    b, _, hgt, wid = images.shape
    device = images.device
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    apply = rand(b) < p
    area = (0.02 + (0.33 - 0.02) * rand(b)) * hgt * wid
    ratio = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * rand(b))
    eh = torch.sqrt(area * ratio).clamp(1, hgt).long()
    ew = torch.sqrt(area / ratio).clamp(1, wid).long()
    y0 = (rand(b) * (hgt - eh + 1)).long()
    x0 = (rand(b) * (wid - ew + 1)).long()
    erased = apply.nonzero().squeeze(1)
    if not len(erased):
        return images
    noise_seed = int(torch.randint(2**62, (1,), generator=generator))
    rows = to_device(erased, device)
    y0, y1, x0, x1 = to_device(torch.stack([y0, y0 + eh, x0, x0 + ew])[:, erased], device).view(4, -1, 1, 1)
    ys = torch.arange(hgt, device=device).view(1, hgt, 1)
    xs = torch.arange(wid, device=device).view(1, 1, wid)
    mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
    noise = torch.randn((len(erased),) + tuple(images.shape[1:]), generator=noise_generator, device=device,
                        dtype=images.dtype)
    out = images.clone()
    out[rows] = torch.where(mask.unsqueeze(1), noise, images[rows])
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
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
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
        has_policy = r.augment in ("trivial_augment", "autoaugment")
        if has_policy and r.policy_before_crop:   # FineRNet's code: the policy sees the whole image
            images_u8 = self._policy(images_u8)
        if r.augment == "none":  # the test-time view
            x = test_view(images_u8, r.image_size)
        else:
            scale_min = r.crop_scale_min if r.augment != "flip" else 1.0
            x = random_resized_crop_flip(images_u8.float(), r.image_size, scale_min, flip=True,
                                         generator=self.generator)
            if has_policy and not r.policy_before_crop:   # torchvision's order: crop, flip, then the policy
                x = self._policy(x.round_().clamp_(0, 255).to(torch.uint8)).float()
        x = (x - self.mean) / self.std
        if r.random_erasing > 0:
            x = random_erasing(x, r.random_erasing, self.generator)
        return x

    def _policy(self, images_u8: torch.Tensor) -> torch.Tensor:
        """TrivialAugmentWide or AutoAugment, batched with per-sample ops on the device;
        with ``policy_p`` < 1 each sample gets it on its own coin (RandomApply)."""
        from fgvcbench.engine.batch_policies import auto_augment, trivial_augment_wide
        policy = trivial_augment_wide if self.recipe.augment == "trivial_augment" else auto_augment
        augmented = policy(images_u8, self.generator)
        if self.recipe.policy_p < 1.0:
            keep = to_device(torch.rand(len(images_u8), generator=self.generator) < self.recipe.policy_p, self.device)
            augmented = torch.where(keep.view(-1, 1, 1, 1), augmented, images_u8)
        return augmented

    def eval(self, images_u8: torch.Tensor) -> torch.Tensor:
        size = self.recipe.eval_image_size or self.recipe.image_size
        x = test_view(images_u8.to(self.device, non_blocking=True), size)
        return (x - self.mean) / self.std

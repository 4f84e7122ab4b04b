"""The classic per-sample pipeline, kept as the reference (``pipeline: classic``).

torchvision transforms in DataLoader workers, one image at a time: decode JPEG (crop to
the box when asked) → [RandomRotation] → RandomResizedCrop → flip → TrivialAugmentWide / AutoAugment (or the
policy first, with ``policy_before_crop``) → to tensor, normalise → RandomErasing; test:
resize to size/0.875 → centre crop. This is
what most FGVC repositories do, and what the fast pipeline is measured against.
"""

from __future__ import annotations

import os

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fgvcbench.data.base import ImageList
from fgvcbench.data.pipeline import load_size_for
from fgvcbench.engine.recipe import Recipe


def classic_transform(recipe: Recipe, mean, std, train: bool):
    from torchvision import transforms as T
    if not train or recipe.augment == "none":
        size = recipe.image_size if train else (recipe.eval_image_size or recipe.image_size)
        resize = (None if train else recipe.eval_resize) or load_size_for(size)
        steps = [T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]
        if train and recipe.random_erasing > 0:   # augment: none trains on the test view, erased as the fast one
            steps.append(T.RandomErasing(p=recipe.random_erasing,
                                         value="random" if recipe.random_erasing_value == "random" else 0))
        return T.Compose(steps)
    steps = [T.RandomResizedCrop(recipe.image_size,
                                 scale=(recipe.crop_scale_min if recipe.augment != "flip" else 1.0, 1.0)),
             T.RandomHorizontalFlip()]
    if recipe.rotation_degrees > 0:   # SimTrans's code: RandomRotation(30), then the crop
        steps.insert(0, T.RandomRotation(recipe.rotation_degrees))
    policy = {"trivial_augment": T.TrivialAugmentWide, "autoaugment": T.AutoAugment}.get(recipe.augment)
    if policy is not None:
        mode = T.InterpolationMode(recipe.policy_interpolation)
        policy = T.RandomApply([policy(interpolation=mode)], p=recipe.policy_p) if recipe.policy_p < 1 \
            else policy(interpolation=mode)
        steps = [policy] + steps if recipe.policy_before_crop else steps + [policy]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if recipe.random_erasing > 0:
        steps.append(T.RandomErasing(p=recipe.random_erasing,
                                     value="random" if recipe.random_erasing_value == "random" else 0))
    return T.Compose(steps)


class ClassicDataset(Dataset):
    def __init__(self, images: ImageList, transform, crop_to_boxes: bool = False):
        self.images, self.transform, self.crop = images, transform, crop_to_boxes and images.boxes is not None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        with Image.open(self.images.paths[i]) as img:
            img = img.convert("RGB")
        if self.images.trim_bottom:
            img = img.crop((0, 0, img.width, max(1, img.height - self.images.trim_bottom)))
        if self.crop:
            x, y, w, h = self.images.boxes[i]
            left, top, right, bottom = max(0, x), max(0, y), min(img.width, x + w), min(img.height, y + h)
            if right - left >= 1 and bottom - top >= 1:   # a degenerate box keeps the whole image, as decode does
                img = img.crop((left, top, right, bottom))
        return self.transform(img), self.images.labels[i]


def classic_loader(images: ImageList, recipe: Recipe, mean, std, *, train: bool, seed: int = 0,
                   workers: int | None = None, crop_to_boxes: bool = False,
                   batch_size: int | None = None, world: int = 1, rank: int = 0,
                   drop_last: bool = False) -> DataLoader:
    """``world`` > 1 (training under torchrun): this rank's shard of a seeded shuffle, which
    the caller reshuffles each epoch with ``loader.sampler.set_epoch``."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    dataset = ClassicDataset(images, classic_transform(recipe, mean, std, train), crop_to_boxes)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=train, seed=seed)
    return DataLoader(dataset, sampler=sampler,
                      batch_size=batch_size or (recipe.batch_size if train else recipe.eval_batch_size),
                      shuffle=train and sampler is None, drop_last=drop_last, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))

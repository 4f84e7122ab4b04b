"""Phase 3 of FineRNet: a Siamese network that learns whether two images share a class,
trained end to end (backbone included) on the mined pairs."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import RunningLoss, gather_rows, resident, to_device


class PairHead(nn.Module):
    """The code's head: input [0, f_query, 0, f_neighbour] (two zero blocks, as the released
    code builds it), Linear → BN → GELU → 192 → 32 → BN → GELU → 2 → 1 logit."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 192), nn.BatchNorm1d(192), nn.GELU(),
                                 nn.Linear(192, 32), nn.BatchNorm1d(32), nn.GELU(),
                                 nn.Linear(32, 2), nn.Linear(2, 1))

    def forward(self, query: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(query)
        return self.mlp(torch.cat([zeros, query, zeros, neighbour], dim=1)).squeeze(1)


class Siamese(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = PairHead(backbone.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, query: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        f = self.embed(torch.cat([query, neighbour]))
        return self.head(*f.split(len(query)))


def train_siamese(siamese: Siamese, images: torch.Tensor, pairs: torch.Tensor, augmenter, *, epochs: int,
                  lr: float, momentum: float, weight_decay: float, batch_size: int, device: torch.device,
                  seed: int, on_epoch=None) -> list[dict]:
    """SGD on BCE-with-logits of 'same class', whole network; returns the history."""
    siamese.to(device).train()
    opt = torch.optim.SGD(siamese.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    autocast = device.type == "cuda"
    images = resident(images, device)
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(pairs), generator=generator)
        running = RunningLoss(device, "Siamese loss", f"at epoch {epoch}")
        correct, seen = torch.zeros((), device=device), 0   # summed on the device: no per-step wait
        for start in range(0, len(order), batch_size):
            batch = pairs[order[start:start + batch_size]]
            if len(batch) < 2:
                continue  # BatchNorm needs two samples
            rows = to_device(batch[:, :2].T.contiguous(), images.device)
            xq = augmenter.train(gather_rows(images, rows[0], device))
            xn = augmenter.train(gather_rows(images, rows[1], device))
            target = to_device(batch[:, 2].float(), device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = siamese(xq, xn).float()
            loss = F.binary_cross_entropy_with_logits(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running.add(loss, len(batch))
            correct += ((logits > 0).float() == target).sum()
            seen += len(batch)
        train_loss = running.mean()
        row = {"phase": "3", "epoch": epoch, "train_loss": train_loss,
               "pair_accuracy": 100.0 * correct.item() / max(seen, 1), "lr": lr}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return history


def interpolate_backbones(phase1: dict, phase3: dict, alpha: float, skip_prefix: str) -> dict:
    """α·W_phase1 + (1−α)·W_phase3 for every backbone tensor, BatchNorm buffers included;
    integer buffers (num_batches_tracked) come from the side with the larger weight."""
    out = {}
    for key, w1 in phase1.items():
        if key.startswith(skip_prefix):
            continue  # the classifier: phase 4 trains a new one
        w3 = phase3[key]
        if w1.is_floating_point():
            out[key] = alpha * w1 + (1.0 - alpha) * w3.to(w1.dtype)
        else:
            out[key] = w1 if alpha >= 0.5 else w3
    return out

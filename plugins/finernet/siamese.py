"""Phase 3 of FineRNet: a Siamese network that learns whether two images share a class,
trained end to end (backbone included) on the mined pairs.

As the released code (``models.py``, ``src/model_training.py``) builds and trains it:

- the query and its neighbour go through the backbone in two separate forward passes
  (each with its own BatchNorm batch statistics), giving pooled features f_q, f_n (the
  CLS token for a ViT);
- the head reads ``[0, f_q, 0, f_n]`` where each 0 is one scalar zero column (the code's
  ``sep_token`` of shape [B, 1]), so its input is 2d + 2 wide:
  Linear(2d+2 → 192) → BN → GELU → Linear(192 → h) → BN → GELU → Linear(h → 2) →
  Linear(2 → 1) logit, with h = 32 for a CNN and 192 for a ViT; the CNN network
  initialises every Linear weight with ``xavier_normal_`` (the ViT network has that
  loop commented out, so its Linears keep PyTorch's default init). The code's dropout
  layers have p = 0 and are left out;
- BCE-with-logits on "same class", SGD (momentum 0.95, wd 5e-4), no schedule, full
  batches only (``drop_last=True``), and the checkpoint kept is the epoch with the best
  *training* pair F1 (no held-out data is involved).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import RunningLoss, gather_rows, resident, to_device

PROJECT_DIM = 192   # the code's BinaryMLP project_dim


class PairHead(nn.Module):
    """[0, f_q, 0, f_n] (scalar zero separators) → 192 → BN → GELU → h → BN → GELU → 2 → 1 logit."""

    def __init__(self, dim: int, hidden: int = 32, xavier: bool = True):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim + 2, PROJECT_DIM), nn.BatchNorm1d(PROJECT_DIM), nn.GELU(),
                                 nn.Linear(PROJECT_DIM, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                 nn.Linear(hidden, 2), nn.Linear(2, 1))
        if xavier:
            for module in self.mlp:
                if isinstance(module, nn.Linear):
                    nn.init.xavier_normal_(module.weight, gain=1.0)

    def forward(self, query: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        sep = query.new_zeros(len(query), 1)
        return self.mlp(torch.cat([sep, query, sep, neighbour.to(query.dtype)], dim=1)).squeeze(1)


def head_config(backbone_name: str) -> dict:
    """The code's head per backbone family: a ViT (``'vit' in name``, the code's own test)
    gets hidden 192 and default init; every other backbone the CNN head (32, Xavier)."""
    if "vit" in backbone_name.lower():
        return {"hidden": 192, "xavier": False}
    return {"hidden": 32, "xavier": True}


class Siamese(nn.Module):
    def __init__(self, backbone: nn.Module, hidden: int = 32, xavier: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = PairHead(backbone.num_features, hidden, xavier)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, query: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        # two passes, as the code: query and neighbour batches get their own BN statistics
        return self.head(self.embed(query), self.embed(neighbour))


def binary_f1(tp: float, fp: float, fn: float) -> float:
    """F1 of the positive class (torchmetrics' binary F1: 0 when undefined)."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator > 0 else 0.0


def train_siamese(siamese: Siamese, images: torch.Tensor, pairs: torch.Tensor, augmenter, *, epochs: int,
                  lr: float, momentum: float, weight_decay: float, batch_size: int, device: torch.device,
                  seed: int, amp: bool = True, on_epoch=None) -> tuple[list[dict], dict]:
    """SGD on BCE-with-logits of 'same class', whole network. Returns the history and the
    kept checkpoint: ``{"epoch", "pair_f1", "pair_accuracy", "state_dict"}`` (the
    backbone's state at the epoch with the best training pair F1; the first such epoch
    on ties, as the code's strict ``>``). ``amp``: bf16 autocast on CUDA (the recipe's)."""
    siamese.to(device).train()
    opt = torch.optim.SGD(siamese.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    autocast = device.type == "cuda" and amp
    images = resident(images, device)
    # the code's DataLoader drops the last incomplete batch; with fewer pairs than one batch
    # we keep that one batch rather than train nothing
    full = len(pairs) // batch_size
    steps = full if full > 0 else (1 if len(pairs) >= 2 else 0)
    history: list[dict] = []
    best = {"epoch": 0, "pair_f1": -1.0, "pair_accuracy": float("nan"), "state_dict": None}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(pairs), generator=generator)
        running = RunningLoss(device, "Siamese loss", f"at epoch {epoch}")
        # confusion counts summed on the device: no per-step wait
        counts = torch.zeros(4, device=device)   # correct, tp, fp, fn
        seen = 0
        for step in range(steps):
            batch = pairs[order[step * batch_size:(step + 1) * batch_size]]
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
            pred = (logits.detach() >= 0).float()   # sigmoid ≥ 0.5, as the code
            counts += torch.stack([(pred == target).sum(), (pred * target).sum(),
                                   (pred * (1 - target)).sum(), ((1 - pred) * target).sum()])
            seen += len(batch)
        train_loss = running.mean()
        correct, tp, fp, fn = counts.tolist()
        f1 = binary_f1(tp, fp, fn)
        row = {"phase": "3", "epoch": epoch, "train_loss": train_loss, "pair_accuracy": 100.0 * correct / max(seen, 1),
               "pair_f1": f1, "lr": lr, "pairs_seen": seen}
        history.append(row)
        if f1 > best["pair_f1"]:
            best = {"epoch": epoch, "pair_f1": f1, "pair_accuracy": row["pair_accuracy"],
                    "state_dict": {k: v.detach().cpu().clone() for k, v in siamese.backbone.state_dict().items()}}
        if on_epoch:
            on_epoch(row)
    if best["state_dict"] is None:   # no epoch ran: the starting weights
        best["state_dict"] = {k: v.detach().cpu().clone() for k, v in siamese.backbone.state_dict().items()}
    return history, best


def interpolate_backbones(phase1: dict, phase3: dict, alpha: float, skip_prefix: str) -> dict:
    """α·W_phase1 + (1−α)·W_phase3 for every backbone tensor, BatchNorm buffers included;
    integer buffers (num_batches_tracked) come from the side with the larger weight."""
    out = {}
    for key, w1 in phase1.items():
        if key.startswith(skip_prefix):
            continue  # the classifier: phase 4 trains a new one
        w3 = phase3[key]
        if w1.is_floating_point():
            # phase 1's model may sit on the GPU (mining placed it there), phase 3's copy on the CPU
            out[key] = alpha * w1 + (1.0 - alpha) * w3.to(device=w1.device, dtype=w1.dtype)
        else:
            out[key] = w1 if alpha >= 0.5 else w3
    return out

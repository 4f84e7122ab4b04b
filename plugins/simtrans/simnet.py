"""SimNet and the pieces SimTrans builds on it: ordered pair construction, the relation
MLP, the adversarial discriminator, sample weights and the graph term's g(a)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fgvcbench.api import RunningLoss, gather_rows, resident, to_device


def all_pairs(features: torch.Tensor) -> torch.Tensor:
    """Every ordered pair of a batch, self-pairs included: row ``i·B + j`` is
    ``[f_i, f_j]`` (``[B², 2d]``)."""
    b = features.shape[0]
    left = features.unsqueeze(1).expand(b, b, -1)
    right = features.unsqueeze(0).expand(b, b, -1)
    return torch.cat([left, right], dim=2).reshape(b * b, -1)


def pair_targets(labels: torch.Tensor) -> torch.Tensor:
    """1 where the two images of a pair (in ``all_pairs`` order) share a class."""
    return (labels[:, None] == labels[None, :]).reshape(-1).long()


def _block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True))


class RelationHead(nn.Module):
    """[f_i, f_j] → FC 4096–BN–ReLU → FC 2048–BN–ReLU (relation feature r_ij) →
    FC 2048–BN–ReLU → FC 2 (different / same)."""

    def __init__(self, dim: int, hidden: tuple[int, int, int] = (4096, 2048, 2048)):
        super().__init__()
        self.relation = nn.Sequential(_block(2 * dim, hidden[0]), _block(hidden[0], hidden[1]))
        self.classify = nn.Sequential(_block(hidden[1], hidden[2]), nn.Linear(hidden[2], 2))

    def forward(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.relation(pairs)
        return self.classify(r), r


class Discriminator(nn.Module):
    """r_ij → FC 2048–LayerNorm–ReLU → FC 2 (base pair = 0, web pair = 1)."""

    def __init__(self, dim: int = 2048, hidden: int = 2048):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


class SimNet(nn.Module):
    """A backbone's pooled features → every ordered pair → the relation head."""

    def __init__(self, backbone: nn.Module, hidden: tuple[int, int, int] = (4096, 2048, 2048)):
        super().__init__()
        self.backbone = backbone
        self.head = RelationHead(backbone.num_features, hidden)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(all_pairs(self.embed(x)))


@torch.no_grad()
def same_probability(head: RelationHead, feats_a: torch.Tensor, feats_b: torch.Tensor,
                     chunk: int = 4096, device: torch.device | str = "cpu") -> torch.Tensor:
    """S[i, j] = softmax(head([a_i, b_j]))[same] for every i, j (``head`` in eval mode),
    returned on ``device`` (the features' device keeps a training step free of copies)."""
    head.eval()
    na, nb = feats_a.shape[0], feats_b.shape[0]
    out = torch.empty(na, nb, device=device)
    rows = max(1, chunk // max(nb, 1))
    for start in range(0, na, rows):
        a = feats_a[start:start + rows]
        pairs = torch.cat([a.unsqueeze(1).expand(-1, nb, -1), feats_b.unsqueeze(0).expand(a.shape[0], -1, -1)], 2)
        logits, _ = head(pairs.reshape(-1, pairs.shape[-1]))
        out[start:start + rows] = torch.softmax(logits.float(), 1)[:, 1].reshape(a.shape[0], nb).to(out.device)
    return out


def sample_weights(similarity: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SimTrans's weights: within each class c, w_i = ½(mean_j S_ij + mean_j S_ji) over the
    class's images j (i included), divided by the class mean of w. ``similarity`` is the
    full S over the images, ``labels`` their class."""
    w = torch.empty(len(labels))
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        s = similarity[rows][:, rows]
        wc = 0.5 * (s.mean(dim=1) + s.mean(dim=0))
        w[rows] = wc / wc.mean().clamp_min(1e-12)
    return w


def g(a: torch.Tensor, mu: float = -4.0) -> torch.Tensor:
    """The graph term's edge weight g(a) = (e^{μa} − 1) / (e^{μ} − 1): g(0) = 0, g(1) = 1."""
    return torch.expm1(mu * a) / math.expm1(mu)


def graph_loss(z: torch.Tensor, adjacency: torch.Tensor, mu: float = -4.0) -> torch.Tensor:
    """mean over all ordered pairs (i, j) of g(A_ij)·‖z_i − z_j‖²."""
    d = torch.cdist(z.float(), z.float()).pow(2)
    return (g(adjacency.to(d.dtype), mu) * d).mean()


def pair_f1(probability: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """F1 (in percent) of "same class" predictions (S > 0.5) over all ordered pairs i ≠ j."""
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    pred, truth = (probability > 0.5)[off], same[off]
    tp = (pred & truth).sum().item()
    fp = (pred & ~truth).sum().item()
    fn = (~pred & truth).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": 100 * f1, "precision": 100 * precision, "recall": 100 * recall}


def pair_auroc(probability: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC (in percent) of S for telling same-class from different-class pairs, over all
    ordered pairs i ≠ j; NaN when only one kind of pair exists."""
    from sklearn.metrics import roc_auc_score
    same = (labels[:, None] == labels[None, :])
    off = ~torch.eye(len(labels), dtype=torch.bool)
    truth, score = same[off].numpy(), probability[off].float().numpy()
    if truth.all() or not truth.any():
        return float("nan")
    return 100 * float(roc_auc_score(truth, score))


def class_batch(labels: torch.Tensor, n_classes: int, n_images: int, generator: torch.Generator) -> torch.Tensor:
    """A SimTrans batch: ``n_images`` images from ``n_classes`` random classes, spread as
    evenly as the classes allow (rows of ``labels``)."""
    classes = torch.unique(labels)
    pick = classes[torch.randperm(len(classes), generator=generator)[:n_classes]]
    pools = [torch.nonzero(labels == c).flatten() for c in pick.tolist()]
    pools = [p[torch.randperm(len(p), generator=generator)] for p in pools]
    chosen, taken = [], [0] * len(pools)
    while len(chosen) < n_images and any(t < len(p) for t, p in zip(taken, pools)):
        for k, pool in enumerate(pools):
            if len(chosen) < n_images and taken[k] < len(pool):
                chosen.append(int(pool[taken[k]]))
                taken[k] += 1
    return torch.tensor(chosen, dtype=torch.long)


def train_simnet(simnet: SimNet, base_images: torch.Tensor, base_labels: torch.Tensor,
                 web_images: torch.Tensor | None, web_labels: torch.Tensor | None, augment, *,
                 epochs: int, lr: float, momentum: float, weight_decay: float, beta: float,
                 classes_per_batch: int, images_per_batch: int, web_classes_per_batch: int,
                 web_images_per_batch: int, device: torch.device, seed: int, amp: bool = True) -> list[dict]:
    """SimNet on base pairs (2-way CE over all B² ordered pairs); with β > 0 also the
    adversarial part: a discriminator tells base pairs' relation features from web pairs'
    (trained on detached features) and SimNet minimises CE_sim − β·CE_D. SGD, lr halved
    every half of the epochs (the code: every 25 of 50)."""
    generator = torch.Generator().manual_seed(seed)
    simnet.to(device)
    adversarial = beta > 0 and web_images is not None and len(web_images) > 0
    disc = Discriminator(simnet.head.relation[-1][0].out_features).to(device) if adversarial else None
    opt = torch.optim.SGD(simnet.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    opt_d = torch.optim.SGD(disc.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay) if disc else None
    step_size = max(1, epochs // 2)
    steps = max(1, len(base_labels) // images_per_batch)
    autocast = device.type == "cuda" and amp
    base_images = resident(base_images, device)
    web_images = resident(web_images, device) if adversarial else web_images

    def batch_of(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return augment.train(gather_rows(images, to_device(rows, images.device), device))

    history = []
    for epoch in range(1, epochs + 1):
        factor = 0.5 ** ((epoch - 1) // step_size)
        for group in opt.param_groups + (opt_d.param_groups if opt_d else []):
            group["lr"] = lr * factor
        simnet.train()
        # summed on the device and read once per epoch (no per-step wait for the GPU)
        sim_loss = RunningLoss(device, "SimNet loss", f"at epoch {epoch}")
        d_loss_sum = RunningLoss(device, "discriminator loss", f"at epoch {epoch}")
        correct = torch.zeros((), device=device)
        for _ in range(steps):
            rows = class_batch(base_labels, classes_per_batch, images_per_batch, generator)
            x = batch_of(base_images, rows)
            y = to_device(pair_targets(base_labels[rows]), device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits, r = simnet(x)
                loss = F.cross_entropy(logits.float(), y)
                if disc is not None:
                    web_rows = class_batch(web_labels, web_classes_per_batch, web_images_per_batch, generator)
                    _, r_web = simnet(batch_of(web_images, web_rows))
                    r_all = torch.cat([r, r_web])
                    domain = to_device(torch.cat([torch.zeros(len(r)), torch.ones(len(r_web))]).long(), device)
                    loss = loss - beta * F.cross_entropy(disc(r_all).float(), domain)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if disc is not None:  # the discriminator learns on detached relation features
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    d_loss = F.cross_entropy(disc(r_all.detach()).float(), domain)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_loss_sum.add(d_loss)
            sim_loss.add(loss)
            correct += (logits.argmax(1) == y).float().mean()
        row = {"epoch": epoch, "phase": "simnet", "lr": lr * factor, "sim_loss": sim_loss.mean(),
               "pair_accuracy": correct.item() / steps}
        if disc is not None:
            row["d_loss"] = d_loss_sum.mean()
        history.append(row)
    return history

"""SimNet and the pieces SimTrans builds on it: ordered pair construction, the relation
MLP, the adversarial discriminator, the code's per-epoch class batches, sample weights
and the graph term's g(a)."""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

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


def head_widths(dim: int) -> tuple[int, int, int]:
    """The code's head for n-dimensional features (``GANSimilarityHead4``): 2n, n, n —
    4096, 2048, 2048 for ResNet-50's 2048."""
    return 2 * dim, dim, dim


class RelationHead(nn.Module):
    """[f_i, f_j] → FC 2n–BN–ReLU → FC n–BN–ReLU (relation feature r_ij) → FC n–BN–ReLU →
    FC 2 (different / same); n the backbone's feature size unless ``hidden`` says."""

    def __init__(self, dim: int, hidden: tuple[int, int, int] | None = None):
        super().__init__()
        hidden = tuple(hidden) if hidden else head_widths(dim)
        self.relation = nn.Sequential(_block(2 * dim, hidden[0]), _block(hidden[0], hidden[1]))
        self.classify = nn.Sequential(_block(hidden[1], hidden[2]), nn.Linear(hidden[2], 2))

    @property
    def relation_dim(self) -> int:
        return self.relation[-1][0].out_features

    def forward(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.relation(pairs)
        return self.classify(r), r


class Discriminator(nn.Module):
    """r_ij → FC d–LayerNorm–ReLU → FC 2 (base pair = 0, web pair = 1), d the relation
    feature's width (the code's ``DomainClassifier``)."""

    def __init__(self, dim: int = 2048):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, 2))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


class SimNet(nn.Module):
    """A backbone's pooled features → every ordered pair → the relation head."""

    def __init__(self, backbone: nn.Module, hidden: tuple[int, int, int] | None = None):
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


WEIGHT_TYPES = ("savg1", "avg1")


def sample_weights(similarity: torch.Tensor, labels: torch.Tensor, kind: str = "savg1") -> torch.Tensor:
    """SimTrans's weights, within each class c over the class's images j (i included), then
    divided by the class mean: ``savg1`` (the weighted-CE stage, ``train_main.py``)
    w_i = ½(mean_j S_ij + mean_j S_ji); ``avg1`` (the alternating stage,
    ``alternate_with_GCN.py``) w_i = mean_j S_ij, the row alone. S_ij is SimNet's
    probability for the pair [x_i, x_j]. ``similarity`` is the full S over the images,
    ``labels`` their class."""
    if kind not in WEIGHT_TYPES:
        raise ValueError(f"weight type {kind!r}: use one of {', '.join(WEIGHT_TYPES)}")
    w = torch.empty(len(labels))
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        s = similarity[rows][:, rows]
        wc = s.mean(dim=1) if kind == "avg1" else 0.5 * (s.mean(dim=1) + s.mean(dim=0))
        w[rows] = wc / wc.mean().clamp_min(1e-12)
    return w


def g(a: torch.Tensor, mu: float = -4.0) -> torch.Tensor:
    """The graph term's edge weight g(a) = (e^{μa} − 1) / (e^{μ} − 1): g(0) = 0, g(1) = 1.
    At μ = 0 (0/0 there) its limit, g(a) = a: the code's ``relax`` leaves A as it is."""
    if mu == 0:
        return a.clone()
    return torch.expm1(mu * a) / math.expm1(mu)


def graph_loss(z: torch.Tensor, adjacency: torch.Tensor, mu: float = -4.0) -> torch.Tensor:
    """mean over all ordered pairs (i, j) of g(A_ij)·‖z_i − z_j‖²."""
    d = torch.cdist(z.float(), z.float()).pow(2)
    return (g(adjacency.to(d.dtype), mu) * d).mean()


def _f1(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """F1, precision and recall (in percent) of boolean predictions of "same class"."""
    tp = (pred & truth).sum().item()
    fp = (pred & ~truth).sum().item()
    fn = (~pred & truth).sum().item()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": 100 * f1, "precision": 100 * precision, "recall": 100 * recall}


def pair_f1(probability: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """F1 (in percent) of "same class" predictions (S > 0.5) over all ordered pairs i ≠ j
    of the given images (not the code's protocol: see ``code_f1_batches``)."""
    same = labels[:, None] == labels[None, :]
    off = ~torch.eye(len(labels), dtype=torch.bool)
    return _f1((probability > 0.5)[off], same[off])


def code_f1_batches(labels: torch.Tensor, generator: torch.Generator, *, batches: int = 10, classes: int = 10,
                    per_class: int = 10, repeat_short: bool = True) -> list[torch.Tensor]:
    """The code's SimNet test batches (``ad_modules.SequentialBalancedSampler2``, drawn once
    before training, so every epoch scores the same ones): ``batches`` batches, each of
    ``classes`` distinct classes × ``per_class`` images of each, drawn without replacement
    (with replacement from a class that has fewer; with ``repeat_short=False`` such a class
    gives the images it has, once each — a small validation split, where repeats would be
    pairs of one image). With fewer than ``classes`` classes (where the code would fail)
    every class is taken. Either way about 1/``classes`` of the pairs are same-class, the
    balance the code's F1 is measured at. Returns row indices per batch."""
    by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]
    out = []
    for _ in range(batches if by_class else 0):
        chosen = torch.randperm(len(by_class), generator=generator)[:classes].tolist()
        rows = []
        for c in chosen:
            images = by_class[c]
            pick = (torch.randperm(len(images), generator=generator)[:per_class]
                    if len(images) >= per_class or not repeat_short
                    else torch.randint(len(images), (per_class,), generator=generator))
            rows.append(images[pick])
        out.append(torch.cat(rows))
    return out


def code_pair_f1(head: RelationHead, feats: torch.Tensor, labels: torch.Tensor,
                 batches: list[torch.Tensor]) -> float:
    """SimNet's pair F1 (in percent) as ``train_GAN_similarity.evaluation`` scores it: every
    ordered pair of each batch, self-pairs included (≈ 10 % same-class pairs at 10 × 10),
    predictions argmax (S > 0.5), counts pooled over the batches. ``feats`` and ``labels``
    are indexed by the batches' rows."""
    if not batches:
        return float("nan")
    pred, truth = [], []
    for rows in batches:
        f, y = feats[rows.to(feats.device)], labels[rows]
        pred.append((same_probability(head, f, f) > 0.5).flatten())
        truth.append((y[:, None] == y[None, :]).flatten())
    return _f1(torch.cat(pred), torch.cat(truth))["f1"]


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


def epoch_batches(labels: torch.Tensor, n_classes: int, n_images: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of SimNet batches as the code's ``RandPairSet`` draws them: ``len // n_images``
    batches; each picks ``n_classes`` classes among those with images left, then draws
    ``n_images`` times a random one of them and pops a random image of it (a class that
    runs out leaves the batch, which may end short). Every image is drawn at most once per
    epoch. The batches come in random order (the code's shuffled loader)."""
    pools: dict[int, list[int]] = {}
    for i, c in enumerate(labels.tolist()):
        pools.setdefault(c, []).append(i)
    randint = lambda n: int(torch.randint(n, (1,), generator=generator))  # noqa: E731
    batches = []
    for _ in range(len(labels) // max(n_images, 1)):
        left = [c for c, pool in pools.items() if pool]
        if not left:
            break
        selected = [left[i] for i in torch.randperm(len(left), generator=generator)[:n_classes].tolist()]
        batch: list[int] = []
        while selected and len(batch) < n_images:
            s = randint(len(selected))
            pool = pools[selected[s]]
            batch.append(pool.pop(randint(len(pool))))
            if not pool:
                selected.pop(s)
        batches.append(torch.tensor(batch, dtype=torch.long))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


WEB_EPOCHS = ("follow_base", "zip")


def follow_base(a_batches: list[torch.Tensor], draw_pass: Callable[[], list[torch.Tensor]],
                max_passes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair every base batch with a web batch of its length, drawing further passes over
    the web images (``draw_pass``: one epoch's web batches) as needed, so an epoch follows
    the base list. A base batch that no web batch of ``max_passes`` fresh passes matches is
    paired with an empty one (skipped, as the code skips unequal pairs)."""
    pending: list[torch.Tensor] = []
    steps = []
    for a in a_batches:
        def matching() -> int | None:
            return next((i for i, b in enumerate(pending) if len(b) == len(a)), None)
        match, passes = matching(), 0
        while match is None and passes < max_passes:
            drawn, passes = draw_pass(), passes + 1
            if not drawn:
                break
            pending.extend(drawn)
            match = matching()
        steps.append((a, pending.pop(match) if match is not None else torch.empty(0, dtype=torch.long)))
    return steps


def step_factor(epoch: int, interval: int, gamma: float = 0.5) -> float:
    """The code's schedule: lr · gamma^(epoch // interval), 0-based epochs."""
    return gamma ** (epoch // max(1, interval))


def halving_interval(epochs: int) -> int:
    """Epochs between SimNet's lr halvings: half of them, rounded up (the code's 25 of 50),
    so an odd count halves once too."""
    return max(1, -(-epochs // 2))


def train_simnet(simnet: SimNet, base_images: torch.Tensor, base_labels: torch.Tensor,
                 web_images: torch.Tensor | None, web_labels: torch.Tensor | None, augment, *,
                 epochs: int, lr: float, domain_lr: float, momentum: float, weight_decay: float, beta: float,
                 classes_per_batch: int, images_per_batch: int, web_classes_per_batch: int,
                 device: torch.device, seed: int, amp: bool = True, web_epoch: str = "follow_base",
                 evaluate: Callable[[SimNet], dict[str, float]] | None = None) -> tuple[list[dict], int]:
    """SimNet as ``train_GAN_similarity.py`` trains it. Without web images: base batches
    alone, 2-way CE over their B² ordered pairs. With web images (``web_images`` given,
    the code's setting whatever β): each step pairs a base batch with a web batch of the
    same length — ``web_epoch: zip`` as the code does (an epoch as long as the shorter
    batch list, a pair of unequal length skipped), ``follow_base`` (default) every base
    batch with the next web batch of its length, further passes over the web images drawn
    as needed (:func:`follow_base`). The backbone runs on both at once and the head on both pair sets
    at once (BatchNorm statistics mix base and web), the CE counts base pairs only and
    SimNet minimises CE − β·CE_D, CE_D the discriminator's loss on the relation features
    (base 0, web 1); the discriminator then learns on the detached features (also at
    β = 0). SGD optimisers are rebuilt every epoch (momentum restarts), lr halved every
    half of the epochs, rounded up (the code: every 25 of 50). ``evaluate(simnet)`` after each epoch
    returns ``{"f1", "auroc"}``; the epoch with the best F1 (AUROC breaks ties) is kept
    (without ``evaluate``: the last). Returns the history and the kept epoch (1-based)."""
    generator = torch.Generator().manual_seed(seed)
    simnet.to(device)
    joint = web_images is not None and web_labels is not None and len(web_images) > 0
    disc = Discriminator(simnet.head.relation_dim).to(device) if joint else None
    interval = halving_interval(epochs)
    autocast = device.type == "cuda" and amp
    base_images = resident(base_images, device)
    web_images = resident(web_images, device) if joint else web_images

    def batch_of(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return augment.train(gather_rows(images, to_device(rows, images.device), device))

    history, best, best_epoch, best_state = [], None, epochs, None
    for epoch in range(epochs):
        factor = step_factor(epoch, interval)
        # the code builds its optimisers anew every epoch
        opt = torch.optim.SGD(simnet.parameters(), lr=lr * factor, momentum=momentum, weight_decay=weight_decay)
        opt_d = torch.optim.SGD(disc.parameters(), lr=domain_lr * factor, momentum=momentum,
                                weight_decay=weight_decay) if disc else None
        a_batches = epoch_batches(base_labels, classes_per_batch, images_per_batch, generator)
        def web_pass() -> list[torch.Tensor]:
            return epoch_batches(web_labels, web_classes_per_batch, images_per_batch, generator)
        if not joint:
            steps = [(a, None) for a in a_batches]
        elif web_epoch == "zip":
            steps = list(zip(a_batches, web_pass()))
        else:
            steps = follow_base(a_batches, web_pass)
        simnet.train()
        t0 = time.perf_counter()
        # summed on the device and read once per epoch (no per-step wait for the GPU)
        sim_loss = RunningLoss(device, "SimNet loss", f"at epoch {epoch + 1}")
        d_loss_sum = RunningLoss(device, "discriminator loss", f"at epoch {epoch + 1}")
        correct = torch.zeros((), device=device)
        done = 0
        for a_rows, b_rows in steps:
            if b_rows is not None and len(a_rows) != len(b_rows):
                continue  # the code skips a step whose two batches differ in length
            y = to_device(pair_targets(base_labels[a_rows]), device)
            x = batch_of(base_images, a_rows)
            if b_rows is not None:
                x = torch.cat([x, batch_of(web_images, b_rows)])
            n_a = len(a_rows) ** 2
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                f = simnet.embed(x)
                pairs = all_pairs(f) if b_rows is None else torch.cat([all_pairs(f[:len(a_rows)]),
                                                                       all_pairs(f[len(a_rows):])])
                logits, r = simnet.head(pairs)
                loss = F.cross_entropy(logits[:n_a].float(), y)
                if disc is not None:
                    domain = to_device(torch.cat([torch.zeros(n_a), torch.ones(len(r) - n_a)]).long(), device)
                    if beta:
                        loss = loss - beta * F.cross_entropy(disc(r).float(), domain)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if disc is not None:  # the discriminator learns on detached relation features
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    d_loss = F.cross_entropy(disc(r.detach()).float(), domain)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_loss_sum.add(d_loss)
            sim_loss.add(loss)
            correct += (logits[:n_a].argmax(1) == y).float().mean()
            done += 1
        row = {"epoch": epoch + 1, "phase": "simnet", "lr": lr * factor, "steps": done,
               "skipped_steps": len(steps) - done, "sim_loss": sim_loss.mean() if done else float("nan"),
               "pair_accuracy": correct.item() / done if done else float("nan"),
               "seconds": time.perf_counter() - t0}
        if disc is not None and done:
            row["d_loss"] = d_loss_sum.mean()
        if evaluate is not None:
            scores = evaluate(simnet)
            row.update({f"select_{k}": v for k, v in scores.items()})
            key = (scores["f1"], -1.0 if scores["auroc"] != scores["auroc"] else scores["auroc"])
            if best is None or key > best:
                best, best_epoch = key, epoch + 1
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in simnet.state_dict().items()})
        history.append(row)
    if best_state is not None and best_epoch != epochs:
        simnet.load_state_dict(best_state)
    return history, best_epoch

"""Phase 2 of FineRNet: mining hard pairs from the phase-1 classifier's mistakes.

Rules (danhugo/finernet's code, as the issue records them), for training image i with
true class y and the phase-1 classifier's top-k classes c1..ck (k = the code's
``NEG_PRED``: 7, or 5 on Flowers-102 — set per dataset in the plugin's settings table):

- c1 == y: k positive pairs with i's same-class neighbours at ranks 1..k (rank 0 is
  normally i);
- c1 != y: k negative pairs with class c1's neighbours at ranks 0..k-1;
- each of c2..ck: one pair with that class's nearest neighbour (label 0), or, when that
  class is y, with y's 2nd nearest (label 1; the nearest is normally i itself);
- a pair of an image with itself is dropped.

Neighbours are by inner product of the phase-1 pooled features, not L2-normalised,
searched within each class (FAISS or torch, ``fgvcbench.api.knn_within_classes``). The code
(``data/binary_data_finernet.py``) embeds the index and the queries with its *training*
transforms — two independent augmented draws of the training set, the model in eval
mode — and takes the top-k classes from the query draw's logits
(:func:`train_view_embeddings`); the test view (one centre crop for both) is the
``mining_view: test`` option. Under the train view an image need not be its own rank-0
neighbour; the rules go by rank as the code does, and self pairs are dropped either way.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from fgvcbench.api import knn_within_classes, model_layout, place_model


def pair_rules(i: int, y: int, top: Sequence[int], neighbours: Callable[[int], Sequence[int]],
               k: int = 7) -> list[tuple[int, int, int]]:
    """The pairs (i, j, same_class) for one image; ``neighbours(c)`` lists class c's
    training images nearest to i first."""
    pairs: list[tuple[int, int, int]] = []
    if top[0] == y:
        pairs += [(i, j, 1) for j in list(neighbours(y))[1:k + 1]]
    else:
        pairs += [(i, j, 0) for j in list(neighbours(top[0]))[:k]]
    for c in top[1:k]:
        near = list(neighbours(c))
        if c == y:
            if len(near) > 1:
                pairs.append((i, near[1], 1))
        elif near:
            pairs.append((i, near[0], 0))
    return [p for p in pairs if p[0] != p[1]]


def mine_hard_pairs(features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, k: int = 7,
                    backend: str = "auto", queries: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """All pairs ``[P, 3]`` (i, j, same_class) and their statistics. ``features`` are the
    index's, ``queries`` (default: the same) the query view's; ``logits`` belong to the
    query view. Tensors may live on the GPU: the torch kNN engine then searches there."""
    num_classes = logits.shape[1]
    top = logits.topk(min(k, num_classes), dim=1).indices.cpu()
    query_feats = None if queries is None else queries.float()
    table = knn_within_classes(features.float(), labels, k + 1, num_classes, backend=backend,
                               queries=query_feats)
    pairs = []
    for i in range(len(labels)):
        y = int(labels[i])
        pairs += pair_rules(i, y, top[i].tolist(), lambda c, i=i: table[c][i].tolist(), k)
    tensor = torch.tensor(pairs, dtype=torch.long).view(-1, 3)
    return tensor, pair_statistics(tensor, features.cpu(), None if queries is None else queries.cpu())


@torch.no_grad()
def train_view_embeddings(model, images: torch.Tensor, index_augmenter, query_augmenter, recipe,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The code's mining inputs: pooled features of one augmented draw of ``images`` (the
    index), and pooled features + logits of a second, independent draw (the queries),
    model in eval mode. Returns ``(index, queries, logits)`` on ``device``."""
    place_model(model, recipe, device)
    model.eval()
    autocast = device.type == "cuda" and recipe.amp
    index, queries, logits = [], [], []
    for start in range(0, len(images), recipe.eval_batch_size):
        batch = images[start:start + recipe.eval_batch_size]
        for augmenter, with_logits in ((index_augmenter, False), (query_augmenter, True)):
            x = model_layout(augmenter.train(batch), recipe, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                pooled = model.forward_features(x)
                feats = model.forward_head(pooled, pre_logits=True).float()
                if with_logits:
                    logits.append(model.forward_head(pooled).float())
            (queries if with_logits else index).append(feats)
    if not index:
        empty = torch.empty(0, device=device)
        return empty, empty, empty
    return torch.cat(index), torch.cat(queries), torch.cat(logits)


def pair_statistics(pairs: torch.Tensor, features: torch.Tensor, queries: torch.Tensor | None = None) -> dict:
    """Count, positive share and hardness: the mean cosine similarity of the negative pairs
    (higher = harder negatives) next to that of the positive ones — query i's view against
    neighbour j's index view."""
    if len(pairs) == 0:
        return {"pairs": 0, "positive_share": float("nan"), "negative_cosine": float("nan"),
                "positive_cosine": float("nan")}
    f = torch.nn.functional.normalize(features.float(), dim=1)
    q = f if queries is None else torch.nn.functional.normalize(queries.float(), dim=1)
    cos = (q[pairs[:, 0]] * f[pairs[:, 1]]).sum(1)
    pos = pairs[:, 2] == 1
    mean = lambda t: float(t.mean()) if len(t) else float("nan")  # noqa: E731
    return {"pairs": int(len(pairs)), "pairs_per_image": float(len(pairs) / max(1, len(pairs[:, 0].unique()))),
            "positive_share": float(pos.float().mean()), "negative_cosine": mean(cos[~pos]),
            "positive_cosine": mean(cos[pos])}

"""The pure parts of fine-label discovery: the uncertainty filter, the clustering behind
one function, the label mapping and the recovery scores. No model, no files."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch


def uncertainty(mean_probs: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """The seed's score from the averaged softmax of the flip passes: ``1 − p̂max`` when
    the prediction equals the coarse label, ``1 + p̂max`` when it does not (a confident
    mistake is the most uncertain of all)."""
    pmax, pred = mean_probs.max(dim=1)
    return torch.where(pred == coarse, 1.0 - pmax, 1.0 + pmax)


def keep_most_certain(u: torch.Tensor, coarse: torch.Tensor, keep_percent: float) -> torch.Tensor:
    """Within each coarse class keep the ``int(n · keep_percent / 100)`` images of lowest
    uncertainty (a percentile, as the code's ``head(int(len · threshold / 100))``; ties
    keep the earlier image). Returns a boolean mask."""
    if not 0 < keep_percent <= 100:
        raise ValueError(f"keep_percent must be in (0, 100], got {keep_percent}")
    keep = torch.zeros(len(u), dtype=torch.bool)
    for c in torch.unique(coarse).tolist():
        rows = torch.nonzero(coarse == c).flatten()
        order = torch.sort(u[rows], stable=True).indices
        keep[rows[order[: int(len(rows) * keep_percent / 100)]]] = True
    return keep


def flip_passes_probs(forward, images: torch.Tensor, n_aug: int, p_h: float, p_v: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Average of ``n_aug`` softmaxes, each pass flipping every image horizontally with
    probability ``p_h`` and vertically with ``p_v`` (independent per image and pass).
    ``forward`` maps a normalised float batch to logits; ``images`` is that batch."""
    total = None
    for _ in range(n_aug):
        b = images.shape[0]
        h = (torch.rand(b, generator=generator) < p_h).to(images.device).view(-1, 1, 1, 1)
        v = (torch.rand(b, generator=generator) < p_v).to(images.device).view(-1, 1, 1, 1)
        x = torch.where(h, images.flip(-1), images)
        x = torch.where(v, x.flip(-2), x)
        probs = torch.softmax(forward(x).float(), dim=1)
        total = probs if total is None else total + probs
    return total / n_aug


SEED_KEPT = 2250   # a CIFAR-100 superclass's 2,500 training images, 90 % kept: where the seed set 100


def auto_min_cluster_size(n: int) -> int:
    """HDBSCAN's ``min_cluster_size`` for a coarse class of ``n`` kept images. The seed's
    100 was set for CIFAR-100 superclasses (2,500 training images of 5 fine classes, 2,250
    kept by its 90 % filter), i.e. 100/2,250 ≈ 4.4 % of the kept images; we keep that
    share (100 at 2,250), and never go below 5."""
    return max(5, int(round(100 * n / SEED_KEPT)))


def _hdbscan_soft(embedding: np.ndarray, min_cluster_size: int, backend: str) -> tuple[np.ndarray, str]:
    """Each point's cluster: argmax of its soft membership (the ``hdbscan`` package), so
    noise points get a cluster too. With scikit-learn's HDBSCAN (no soft membership), a
    noise point takes the cluster of its nearest clustered point."""
    if backend in ("auto", "hdbscan"):
        try:
            import hdbscan
        except ImportError:
            if backend == "hdbscan":
                raise
        else:
            clusterer = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, prediction_data=True).fit(embedding)
            if clusterer.labels_.max() < 0:
                return np.zeros(len(embedding), dtype=np.int64), "hdbscan"
            soft = hdbscan.all_points_membership_vectors(clusterer)
            soft = soft.reshape(len(embedding), -1)
            return soft.argmax(axis=1).astype(np.int64), "hdbscan"
    from sklearn.cluster import HDBSCAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9's note on its `copy` default
        labels = HDBSCAN(min_cluster_size=min_cluster_size).fit(embedding).labels_.astype(np.int64)
    if labels.max() < 0:
        return np.zeros(len(embedding), dtype=np.int64), "sklearn"
    noise = labels < 0
    if noise.any():
        clustered = np.nonzero(~noise)[0]
        d = ((embedding[noise][:, None, :] - embedding[clustered][None, :, :]) ** 2).sum(-1)
        labels[noise] = labels[clustered[d.argmin(axis=1)]]
    return labels, "sklearn"


def umap_embedding(features: np.ndarray, *, n_neighbors: int = 30, min_dist: float = 0.0, n_components: int = 4,
                   random_state: int = 42) -> np.ndarray:
    """umap-learn's UMAP of ``features`` (``n_neighbors`` capped at n − 1)."""
    import umap
    x = np.asarray(features, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; spectral-init notes
        return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), min_dist=min_dist, n_components=n_components,
                         random_state=random_state).fit_transform(x)


def cluster_features(features: np.ndarray, *, n_neighbors: int = 30, min_dist: float = 0.0,
                     n_components: int = 4, random_state: int = 42, min_cluster_size: int | str = "auto",
                     backend: str = "auto") -> dict[str, Any]:
    """UMAP → HDBSCAN (soft membership argmax) on one coarse class's features.

    Returns ``labels`` (contiguous cluster ids 0..k−1 for every point), ``embedding``
    (the UMAP output, or ``None`` when the class is too small to cluster: it then stays
    one cluster), ``min_cluster_size`` used and the ``backend``."""
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    mcs = auto_min_cluster_size(n) if min_cluster_size == "auto" else int(min_cluster_size)
    if n < max(2 * mcs, n_components + 3):  # cannot hold two clusters of the minimum size
        return {"labels": np.zeros(n, dtype=np.int64), "embedding": None, "min_cluster_size": mcs,
                "backend": "too_small"}
    embedding = umap_embedding(x, n_neighbors=n_neighbors, min_dist=min_dist, n_components=n_components,
                               random_state=random_state)
    labels, used = _hdbscan_soft(np.asarray(embedding, dtype=np.float64), mcs, backend)
    _, labels = np.unique(labels, return_inverse=True)  # contiguous ids
    return {"labels": labels.astype(np.int64), "embedding": np.asarray(embedding, dtype=np.float32),
            "min_cluster_size": mcs, "backend": used}


def global_fine_labels(coarse: Sequence[int], keep: Sequence[bool], per_class: dict[int, np.ndarray]) -> np.ndarray:
    """One fine label space: class c's cluster ids are offset by the clusters of the
    classes before it (in coarse-id order); filtered-out images get −1."""
    coarse = np.asarray(coarse)
    keep = np.asarray(keep, dtype=bool)
    out = np.full(len(coarse), -1, dtype=np.int64)
    offset = 0
    for c in sorted(per_class):
        rows = np.nonzero((coarse == c) & keep)[0]
        labels = np.asarray(per_class[c])
        if len(labels) != len(rows):
            raise ValueError(f"coarse class {c}: {len(rows)} kept images but {len(labels)} cluster labels")
        out[rows] = labels + offset
        offset += int(labels.max()) + 1 if len(labels) else 0
    return out


def recovery_scores(coarse: Sequence[int], keep: Sequence[bool], found: Sequence[int],
                    true_fine: Sequence[int], by_class: dict | None = None) -> dict[str, float]:
    """How well the found clusters recover the true fine classes: NMI and ARI per coarse
    class (averaged over classes with two or more true fine classes among the kept
    images), over all kept images at once, and clusters found vs true classes.
    ``by_class`` (a dict) receives each coarse class's own numbers: kept images,
    clusters found, true fine classes, NMI and ARI (NaN below two true classes)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    coarse, keep = np.asarray(coarse), np.asarray(keep, dtype=bool)
    found, true_fine = np.asarray(found), np.asarray(true_fine)
    nmi, ari = [], []
    n_found = n_true = 0
    for c in np.unique(coarse):
        rows = np.nonzero((coarse == c) & keep)[0]
        if not len(rows):
            continue
        k_true, k_found = len(np.unique(true_fine[rows])), len(np.unique(found[rows]))
        n_found += k_found
        n_true += k_true
        if k_true >= 2:
            nmi.append(normalized_mutual_info_score(true_fine[rows], found[rows]))
            ari.append(adjusted_rand_score(true_fine[rows], found[rows]))
        if by_class is not None:
            by_class[int(c)] = {"kept": len(rows), "found": k_found, "true": k_true,
                                "nmi": 100 * float(nmi[-1]) if k_true >= 2 else float("nan"),
                                "ari": 100 * float(ari[-1]) if k_true >= 2 else float("nan")}
    rows = np.nonzero(keep)[0]
    nan = float("nan")
    return {"nmi": 100 * float(np.mean(nmi)) if nmi else nan, "ari": 100 * float(np.mean(ari)) if ari else nan,
            "nmi_all": 100 * normalized_mutual_info_score(true_fine[rows], found[rows]) if len(rows) else nan,
            "ari_all": 100 * adjusted_rand_score(true_fine[rows], found[rows]) if len(rows) else nan,
            "clusters_found": n_found, "fine_true": n_true,
            "filtered_share": 100 * float(1 - keep.mean()) if len(keep) else nan,
            "groups_scored": len(nmi)}


def filter_purity(keep: Sequence[bool], correct: Sequence[bool]) -> dict[str, float]:
    """Share of the coarse classifier's training mistakes among removed vs kept images."""
    keep, correct = np.asarray(keep, dtype=bool), np.asarray(correct, dtype=bool)
    nan = float("nan")
    return {"removed_error_rate": 100 * float((~correct[~keep]).mean()) if (~keep).any() else nan,
            "kept_error_rate": 100 * float((~correct[keep]).mean()) if keep.any() else nan}


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

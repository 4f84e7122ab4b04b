"""Embedding evaluation: retrieval metrics from pytorch-metric-learning's
AccuracyCalculator (precision@1, R-precision, MAP@R; test set against itself, the query
left out), kNN classification against the training embeddings (k = 1 and a majority vote
over k), nearest-class-mean accuracy, and mean intra-/inter-class cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgvcbench.api import knn_search


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, metric: str = "cosine") -> dict[str, float]:
    """``metric``: ``cosine`` (the embeddings the loss saw were L2-normalised) or ``l2``
    (Euclidean on the raw embeddings, as a ``normalize: false`` model was trained)."""
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    if not bool(torch.unique(labels.cpu(), return_counts=True)[1].ge(2).any()):   # no same-class neighbour at all
        nan = float("nan")
        return {"precision_at_1": nan, "r_precision": nan, "map_at_r": nan}
    # the training distance, stated (the calculator's default would be FAISS L2 on the raw
    # embeddings when faiss is installed, and something else when it is not)
    distance = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              device=torch.device("cpu"), knn_func=CustomKNN(distance))
    acc = calc.get_accuracy(embeddings.float().cpu(), labels.cpu(), ref_includes_query=True)
    return {"precision_at_1": 100 * acc["precision_at_1"], "r_precision": 100 * acc["r_precision"],
            "map_at_r": 100 * acc["mean_average_precision_at_r"]}


def knn_accuracy(query: torch.Tensor, query_labels: torch.Tensor, reference: torch.Tensor,
                 reference_labels: torch.Tensor, k: int, metric: str = "cosine") -> dict[str, float]:
    """k = 1 accuracy, its mean over classes (``knn1_mean_class_accuracy``: each query class's
    own 1-NN accuracy, averaged) and a majority vote over the k nearest (ties: the nearer
    class wins)."""
    _, idx = knn_search(query, reference, k, metric=metric)
    neighbour_labels = reference_labels.cpu()[idx.cpu()]
    hits = neighbour_labels[:, 0] == query_labels.cpu()
    top1 = hits.float().mean().item()
    per_class = [hits[query_labels.cpu() == c].float().mean().item() for c in torch.unique(query_labels.cpu())]
    votes = []
    for row in neighbour_labels.tolist():
        counts: dict[int, int] = {}
        for label in row:
            counts[label] = counts.get(label, 0) + 1
        best = max(counts.values())
        votes.append(next(label for label in row if counts[label] == best))   # nearest among the tied
    majority = (torch.tensor(votes) == query_labels.cpu()).float().mean().item()
    return {"knn1_accuracy": 100 * top1, f"knn{k}_accuracy": 100 * majority,
            "knn1_mean_class_accuracy": 100 * sum(per_class) / len(per_class) if per_class else float("nan")}


def nearest_class_mean_accuracy(query, query_labels, reference, reference_labels, num_classes: int,
                                metric: str = "cosine") -> float:
    """Each query's class is the nearest class mean of the reference embeddings: by cosine
    (means of the normalised embeddings), or by Euclidean distance (``l2``, raw ones)."""
    ref = F.normalize(reference.float(), dim=1) if metric == "cosine" else reference.float()
    means = torch.stack([ref[reference_labels == c].mean(0) if (reference_labels == c).any()
                         else torch.full((ref.shape[1],), float("nan")) for c in range(num_classes)])
    if metric == "cosine":
        scores = F.normalize(query.float(), dim=1) @ F.normalize(means.nan_to_num(0.0), dim=1).T
    else:   # nearer is higher
        scores = -torch.cdist(query.float(), means.nan_to_num(0.0))
    scores = scores.masked_fill(means.isnan().any(1), -float("inf"))   # a class with no reference image: never
    return 100 * (scores.argmax(1) == query_labels).float().mean().item()


def cosine_similarities(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean cosine similarity over pairs of distinct images of the same class (intra) and
    of different classes (inter)."""
    e = F.normalize(embeddings.float(), dim=1)
    sim = e @ e.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    intra, inter = sim[same & off_diagonal], sim[~same]
    return {"intra_cosine": float(intra.mean()) if len(intra) else float("nan"),
            "inter_cosine": float(inter.mean()) if len(inter) else float("nan")}


def tsne_plot(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, path, seed: int,
              class_names: list[str] | None = None) -> bool:
    """Two t-SNE panels (scikit-learn) of the test embeddings before and after training, a
    colour per class: named in a legend up to 12 classes, else counted in the caption (the
    palette repeats after 20)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.manifold import TSNE
    except ImportError:
        return False
    y = labels.numpy()
    present = sorted(set(y.tolist()))
    palette = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 2, figsize=(9 + (1.6 if len(present) <= 12 else 0), 4.4))
    for ax, emb, title in ((axes[0], before, "before training"), (axes[1], after, "after training")):
        perplexity = max(2.0, min(30.0, (len(emb) - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb.numpy())
        ax.set_title(f"test embeddings, {title}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for k, label in enumerate(present):
            mask = y == label
            name = class_names[label] if class_names and label < len(class_names) else str(label)
            ax.scatter(xy[mask, 0], xy[mask, 1], color=palette(k % 20), s=8,
                       label=(name if len(name) <= 24 else name[:23] + "…"))
    if len(present) <= 12:
        axes[1].legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{len(present)} test classes, one colour each" + (" (colours repeat after 20)" if len(present) > 20
                                                                    else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""Nearest neighbours for methods that mine pairs or evaluate embeddings.

One function, two engines: FAISS (``faiss-cpu``; a GPU index when a FAISS GPU build is
installed and the data is on CUDA) and a pure-torch path (chunked matmul + ``topk`` on
the data's device). Both return the same neighbours (a test checks it); ``auto`` picks
FAISS when it is importable. Scores are inner products (``ip``), cosine similarities
(``cosine``: rows L2-normalised first) or negative squared L2 distances (``l2``), so a
larger score is always nearer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("ip", "cosine", "l2")
BACKENDS = ("auto", "faiss", "torch")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _prepare(x: torch.Tensor, metric: str) -> torch.Tensor:
    x = x.float()
    return F.normalize(x, dim=1) if metric == "cosine" else x


def _torch_search(queries: torch.Tensor, database: torch.Tensor, k: int, metric: str,
                  chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    scores, indices = [], []
    db_sq = (database * database).sum(1) if metric == "l2" else None
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        sim = q @ database.T
        if metric == "l2":  # −‖q − d‖² = 2 q·d − ‖d‖² − ‖q‖²
            sim = 2 * sim - db_sq[None, :] - (q * q).sum(1, keepdim=True)
        s, i = sim.topk(k, dim=1)
        scores.append(s)
        indices.append(i)
    return torch.cat(scores), torch.cat(indices)


_GPU_RESOURCES: dict[int, object] = {}   # one faiss.StandardGpuResources per device, made once


def _gpu_resources(faiss, device: int):
    """FAISS's GPU resources (cuBLAS handles, streams, a scratch pool) for ``device``, made on
    first use and kept: FineRNet searches once per class, and creating them each time costs
    more than a small class's search. The scratch pool (FAISS's default: up to 1.5 GiB of
    GPU memory, outside torch's allocator) stays held by the process until it exits."""
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device]


def _faiss_search(queries: torch.Tensor, database: torch.Tensor, k: int, metric: str):
    import faiss
    d = database.shape[1]
    index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    if database.is_cuda and hasattr(faiss, "StandardGpuResources"):
        device = database.device.index or 0
        index = faiss.index_cpu_to_gpu(_gpu_resources(faiss, device), device, index)
    index.add(database.detach().cpu().contiguous().numpy())
    scores, indices = index.search(queries.detach().cpu().contiguous().numpy(), k)
    scores = torch.from_numpy(scores)
    if metric == "l2":
        scores = -scores   # FAISS returns squared distances; nearer must score higher
    return scores.to(queries.device), torch.from_numpy(indices).long().to(queries.device)


def knn_search(queries: torch.Tensor, database: torch.Tensor, k: int, metric: str = "ip",
               backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``database`` for each row of ``queries``: (scores,
    indices), both ``[len(queries), k]``, nearest first."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and database {tuple(database.shape)} must be [n, d] "
                         f"with the same d")
    k = min(k, len(database))
    if k <= 0 or len(queries) == 0:
        empty = torch.empty((len(queries), 0))
        return empty, empty.long()
    q, db = _prepare(queries, metric), _prepare(database, metric)
    if backend == "faiss" or (backend == "auto" and faiss_available()):
        return _faiss_search(q, db, k, metric)
    return _torch_search(q, db.to(q.device), k, metric)


def knn_within_classes(features: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int | None = None,
                       metric: str = "ip", backend: str = "auto",
                       queries: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """For each class c: ``[N, ≤k]`` global indices of c's rows of ``features`` nearest to
    every query row, nearest first (FineRNet's phase-2 search; the torch engine runs on the
    features' device). ``queries`` (default: ``features`` themselves) may be another view of
    the same N images. A class with no rows maps to an ``[N, 0]`` tensor."""
    labels = labels.cpu()
    queries = features if queries is None else queries
    classes = range(num_classes) if num_classes is not None else sorted(set(labels.tolist()))
    out = {}
    for c in classes:
        members = (labels == c).nonzero().squeeze(1)
        if len(members) == 0:
            out[c] = torch.empty((len(queries), 0), dtype=torch.long)
            continue
        _, local = knn_search(queries, features[members.to(features.device)], min(k, len(members)),
                              metric=metric, backend=backend)
        out[c] = members[local.cpu()]
    return out


def engine_seconds(features: torch.Tensor, labels: torch.Tensor, k: int, repeats: int = 2,
                   backends: tuple[str, ...] = ("torch", "faiss")) -> dict[str, float]:
    """Wall seconds of :func:`knn_within_classes` per engine (best of ``repeats``; NaN for
    an engine that is not installed). Each search ends with its indices on the host, so
    the GPU's work is inside the time."""
    import time
    out = {}
    for backend in backends:
        if backend == "faiss" and not faiss_available():
            out[backend] = float("nan")
            continue
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            knn_within_classes(features, labels, k, backend=backend)
            best = min(best, time.perf_counter() - started)
        out[backend] = best
    return out

"""kNN: the FAISS and torch engines return the same neighbours, and both equal brute force."""

from __future__ import annotations

import pytest
import torch

from fgvcbench.knn import faiss_available, knn_search


def brute_force(q, db, k, metric):
    if metric == "cosine":
        q, db = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(db, dim=1)
    if metric == "l2":
        scores = -torch.cdist(q.double(), db.double()) ** 2
    else:
        scores = q.double() @ db.double().T
    return scores.topk(k, dim=1)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_torch_engine_equals_brute_force(metric):
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g)
    scores, idx = knn_search(q, db, 7, metric, backend="torch")
    ref_scores, ref_idx = brute_force(q, db, 7, metric)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(scores.double(), ref_scores, atol=1e-3)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed (pip install faiss-cpu)")
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_faiss_and_torch_agree(metric):
    g = torch.Generator().manual_seed(1)
    q, db = torch.randn(200, 32, generator=g), torch.randn(1000, 32, generator=g)
    f_scores, f_idx = knn_search(q, db, 10, metric, backend="faiss")
    t_scores, t_idx = knn_search(q, db, 10, metric, backend="torch")
    assert (f_idx == t_idx).float().mean() > 0.999            # float summation order may swap near-ties
    assert torch.allclose(f_scores, t_scores, atol=1e-3)


def test_shapes_and_errors():
    s, i = knn_search(torch.randn(3, 4), torch.randn(2, 4), k=5, backend="torch")
    assert s.shape == i.shape == (3, 2)                       # k capped at the database size
    with pytest.raises(ValueError, match="same d"):
        knn_search(torch.randn(3, 4), torch.randn(2, 5), k=1)
    with pytest.raises(ValueError, match="metric"):
        knn_search(torch.randn(3, 4), torch.randn(2, 4), k=1, metric="hamming")

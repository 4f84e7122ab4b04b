"""kNN: the FAISS and torch engines return the same neighbours, and both equal brute force;
the per-class search FineRNet mines with; `fgvcbench bench knn`."""

from __future__ import annotations

import math

import pytest
import torch

import csv

import fgvcbench.knn as knn_mod
from fgvcbench.cli import app
from fgvcbench.knn import engine_seconds, faiss_available, knn_search, knn_within_classes


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


def test_within_classes_equals_brute_force_per_class():
    g = torch.Generator().manual_seed(2)
    feats, labels = torch.randn(60, 8, generator=g), torch.arange(60) % 4
    labels[labels == 3] = 5                                   # class 3 absent, class 5 present
    table = knn_within_classes(feats, labels, 3, num_classes=6, backend="torch")
    assert table[3].shape == (60, 0) and table[4].shape == (60, 0)
    for c in (0, 1, 2, 5):
        members = (labels == c).nonzero().squeeze(1)
        expected = members[(feats @ feats[members].T).topk(3, dim=1).indices]
        assert torch.equal(table[c], expected)
        assert (labels[table[c]] == c).all()
    assert set(knn_within_classes(feats, labels, 2, backend="torch")) == {0, 1, 2, 5}


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed (pip install faiss-cpu)")
def test_within_classes_is_the_same_with_faiss_and_torch():
    """The search FineRNet's mining runs, per class, from another view of the same images:
    the two engines give the same neighbours (near-ties aside)."""
    g = torch.Generator().manual_seed(3)
    feats, labels = torch.randn(300, 32, generator=g), torch.arange(300) % 7
    queries = feats + 0.1 * torch.randn(300, 32, generator=g)
    by_faiss = knn_within_classes(feats, labels, 8, num_classes=8, backend="faiss", queries=queries)
    by_torch = knn_within_classes(feats, labels, 8, num_classes=8, backend="torch", queries=queries)
    assert set(by_faiss) == set(by_torch) == set(range(8)) and by_faiss[7].shape == (300, 0)
    same = torch.cat([(by_faiss[c] == by_torch[c]).flatten().float() for c in range(7)])
    assert same.mean() > 0.999


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed (pip install faiss-cpu)")
def test_faiss_gpu_resources_are_made_once_per_device(monkeypatch):
    """FineRNet searches once per class: FAISS's GPU resources are made on first use and
    reused, not made again for every search. A GPU build is stood in for: faiss-cpu with
    a counting ``StandardGpuResources`` and an ``index_cpu_to_gpu`` that keeps the CPU
    index, and a database that says it is on CUDA."""
    import faiss

    import fgvcbench.knn as knn
    made, moved = [], []
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: made.append(object()) or made[-1], raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, device, index: moved.append((res, device)) or index,
                        raising=False)
    monkeypatch.setattr(knn, "_GPU_RESOURCES", {})

    class OnCuda:   # the attributes _faiss_search reads of a CUDA tensor
        def __init__(self, t, index):
            self.t, self.shape, self.is_cuda, self.device = t, t.shape, True, torch.device("cuda", index)

        def detach(self):
            return self.t
    g = torch.Generator().manual_seed(4)
    q, db = torch.randn(20, 8, generator=g), torch.randn(50, 8, generator=g)
    for _ in range(4):
        _, idx = knn._faiss_search(q, OnCuda(db, 0), 3, "ip")
        assert torch.equal(idx, knn_search(q, db, 3, backend="torch")[1])
    assert len(made) == 1 and [r for r, _ in moved] == made * 4 and {d for _, d in moved} == {0}
    knn._faiss_search(q, OnCuda(db, 1), 3, "ip")
    assert len(made) == 2 and moved[-1] == (made[1], 1)   # another device, its own resources


def test_engine_seconds_and_the_bench(tmp_path, runner, monkeypatch):
    feats, labels = torch.randn(80, 16), torch.arange(80) % 5
    seconds = engine_seconds(feats, labels, 4, repeats=1)
    assert set(seconds) == {"torch", "faiss"} and seconds["torch"] > 0
    monkeypatch.setattr(knn_mod, "faiss_available", lambda: False)
    assert math.isnan(engine_seconds(feats, labels, 4, repeats=1)["faiss"])     # not installed: NaN, not 0
    result = runner.invoke(app, ["bench", "knn", "--n", "300", "--dim", "32", "--classes", "10", "--repeats", "1",
                                 "--device", "cpu", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "knn.csv")))
    assert [r["backend"] for r in rows] == ["torch", "faiss"] and float(rows[0]["seconds"]) > 0
    assert rows[1]["seconds"] == "nan" and "not installed" in result.output
    bad = runner.invoke(app, ["bench", "knn", "--classes", "0"])
    assert bad.exit_code == 2 and "classes" in bad.output and "Traceback" not in bad.output

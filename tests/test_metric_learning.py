"""Metric learning: our retrieval numbers equal pytorch-metric-learning's calculator and a
brute-force reference; the variants run end to end; embeddings and t-SNE are saved."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fgvcbench.cli import app
from fgvcbench.plugins import get_registry
from fgvcbench_plugins.metric_learning.evaluate import (cosine_similarities, knn_accuracy,
                                                        nearest_class_mean_accuracy, retrieval_metrics)

from conftest import write_suite


def brute_force_retrieval(emb: torch.Tensor, labels: torch.Tensor, metric: str = "cosine") -> dict[str, float]:
    """Precision@1, R-precision and MAP@R (Musgrave et al., 2020) by their definitions."""
    sim = (F.normalize(emb.double(), dim=1) @ F.normalize(emb.double(), dim=1).T if metric == "cosine"
           else -torch.cdist(emb.double(), emb.double()))
    sim.fill_diagonal_(-float("inf"))
    p1, rp, mapr = [], [], []
    for i in range(len(labels)):
        order = sim[i].argsort(descending=True)[:-1]                  # everything but the query itself
        rel = (labels[order] == labels[i]).double()
        r = int(rel.sum())
        p1.append(rel[0].item())
        rp.append(rel[:r].mean().item())
        precision_at = rel[:r].cumsum(0) / torch.arange(1, r + 1)
        mapr.append((precision_at * rel[:r]).sum().item() / r)
    mean = lambda v: 100 * sum(v) / len(v)  # noqa: E731
    return {"precision_at_1": mean(p1), "r_precision": mean(rp), "map_at_r": mean(mapr)}


@pytest.fixture
def embeddings():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(8)
    emb = torch.randn(40, 6, generator=g) + 1.5 * torch.randn(5, 6, generator=g)[labels]
    return emb, labels


def test_retrieval_metrics_match_pml_and_brute_force(embeddings):
    emb, labels = embeddings
    ours, reference = retrieval_metrics(emb, labels), brute_force_retrieval(emb, labels)
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-4), key
    assert 0 < ours["map_at_r"] <= ours["r_precision"] <= 100


def test_knn_ncm_and_cosines_by_hand(embeddings):
    emb, labels = embeddings
    query, q_labels, ref, r_labels = emb[::2], labels[::2], emb[1::2], labels[1::2]
    sim = F.normalize(query, dim=1) @ F.normalize(ref, dim=1).T
    expected1 = (r_labels[sim.argmax(1)] == q_labels).float().mean().item() * 100
    got = knn_accuracy(query, q_labels, ref, r_labels, k=3)
    assert got["knn1_accuracy"] == pytest.approx(expected1)
    means = torch.stack([F.normalize(ref[r_labels == c], dim=1).mean(0) for c in range(5)])
    ncm = ((F.normalize(query, dim=1) @ F.normalize(means, dim=1).T).argmax(1) == q_labels).float().mean() * 100
    assert nearest_class_mean_accuracy(query, q_labels, ref, r_labels, 5) == pytest.approx(ncm.item())
    cos = cosine_similarities(emb, labels)
    e = F.normalize(emb, dim=1)
    same = [float(e[i] @ e[j]) for i in range(40) for j in range(40) if i != j and labels[i] == labels[j]]
    assert cos["intra_cosine"] == pytest.approx(sum(same) / len(same), abs=1e-5)
    assert cos["intra_cosine"] > cos["inter_cosine"]


def test_an_unnormalised_embedding_is_scored_by_the_euclidean_distance_it_trained(embeddings):
    """normalize: false trains on raw Euclidean distances: neighbours and class means are
    then Euclidean too. Rows scaled by random norms make the two rankings differ."""
    emb, labels = embeddings
    g = torch.Generator().manual_seed(5)
    emb = emb * torch.empty(40, 1).uniform_(0.2, 5.0, generator=g)
    l2, cosine = retrieval_metrics(emb, labels, "l2"), retrieval_metrics(emb, labels)
    reference = brute_force_retrieval(emb, labels, "l2")
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert l2[key] == pytest.approx(reference[key], abs=1e-4), key
    assert l2 != cosine                                         # the scaled rows rank otherwise
    query, q_labels, ref, r_labels = emb[::2], labels[::2], emb[1::2], labels[1::2]
    nearest = torch.cdist(query, ref).argmin(1)
    assert knn_accuracy(query, q_labels, ref, r_labels, k=3, metric="l2")["knn1_accuracy"] == pytest.approx(
        (r_labels[nearest] == q_labels).float().mean().item() * 100)
    means = torch.stack([ref[r_labels == c].mean(0) for c in range(5)])
    ncm = (torch.cdist(query, means).argmin(1) == q_labels).float().mean().item() * 100
    assert nearest_class_mean_accuracy(query, q_labels, ref, r_labels, 5, "l2") == pytest.approx(ncm)
    # a class without reference images is never the nearest mean
    assert nearest_class_mean_accuracy(query, q_labels, ref, r_labels, 6, "l2") == pytest.approx(ncm)


def test_retrieval_without_any_same_class_pair_is_nan_without_the_librarys_warning(caplog):
    emb, labels = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    got = retrieval_metrics(emb, labels)
    assert all(v != v for v in got.values()) and "reference set" not in caplog.text


def test_the_refusal_speaks_yaml():
    from fgvcbench.api import Recipe
    from fgvcbench_plugins.metric_learning import check_recipe
    with pytest.raises(Exception, match="recipe compile: true is not supported .* set compile: false"):
        check_recipe(Recipe(compile=True))
    check_recipe(Recipe(stop_on="loss"))   # without patience it stops nothing: the loop's run, accepted
    with pytest.raises(Exception, match='recipe stop_on: "loss" is not supported'):
        check_recipe(Recipe(stop_on="loss", patience=3))


def test_knn_majority_vote_by_hand():
    """k = 3 over hand-placed references: a clear majority wins over the nearest; a tie
    goes to the class of the nearer neighbour."""
    ref = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])                        # neighbours in order: 0, 1, 2
    got = knn_accuracy(query, torch.tensor([1]), ref, torch.tensor([0, 1, 1, 2, 3]), k=3)
    assert got["knn1_accuracy"] == 0.0 and got["knn3_accuracy"] == 100.0   # nearest is 0, the vote 1 (two of three)
    got = knn_accuracy(query, torch.tensor([0]), ref, torch.tensor([0, 1, 2, 2, 3]), k=2)
    assert got["knn1_accuracy"] == 100.0 and got["knn2_accuracy"] == 100.0  # 0 vs 1, one each: the nearer, 0


def test_knn_mean_class_accuracy_weighs_every_class_alike():
    ref, ref_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    query = torch.tensor([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.1, 1.0]])   # three of class 0 right, class 1 wrong
    got = knn_accuracy(query, torch.tensor([0, 0, 0, 0]), ref, ref_labels, k=1)
    assert got["knn1_accuracy"] == 75.0 and got["knn1_mean_class_accuracy"] == 75.0
    got = knn_accuracy(query, torch.tensor([0, 0, 0, 1]), ref, ref_labels, k=1)
    assert got["knn1_mean_class_accuracy"] == 100.0
    got = knn_accuracy(query, torch.tensor([0, 0, 1, 1]), ref, ref_labels, k=1)
    assert got["knn1_accuracy"] == 75.0 and got["knn1_mean_class_accuracy"] == pytest.approx(75.0)   # (100 + 50) / 2


def test_nearest_class_mean_by_cosine_never_picks_a_class_without_references():
    ref, ref_labels = torch.tensor([[-1.0, -0.2], [-0.2, -1.0]]), torch.tensor([0, 1])
    query = torch.tensor([[-1.0, -0.1], [-0.1, -1.0]])        # negative sums: a NaN mean filled with -2 would win
    assert nearest_class_mean_accuracy(query, torch.tensor([0, 1]), ref, ref_labels, 2) == 100.0
    assert nearest_class_mean_accuracy(query, torch.tensor([0, 1]), ref, ref_labels, 3) == 100.0


def test_batch_hard_averages_over_every_anchor_as_hermans_et_al():
    from fgvcbench_plugins.metric_learning import METRIC_LEARNING, build_loss_and_miner
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    emb = 0.3 * torch.randn(16, 8, generator=g) + torch.randn(4, 8, generator=g)[labels]
    loss, miner = build_loss_and_miner(dict(METRIC_LEARNING.params, miner="batch_hard"))
    d = torch.cdist(F.normalize(emb), F.normalize(emb))
    same = labels[:, None] == labels[None, :]
    hardest_pos = d.masked_fill(~same | torch.eye(16, dtype=torch.bool), -1).max(1).values
    hardest_neg = d.masked_fill(same, float("inf")).min(1).values
    per_anchor = F.relu(hardest_pos - hardest_neg + 0.2)
    assert 0 < (per_anchor > 0).sum() < 16                                   # some anchors already satisfied
    assert loss(emb, labels, miner(emb, labels)).item() == pytest.approx(per_anchor.mean().item(), rel=1e-4)


def test_losses_use_the_normalize_and_soft_margin_settings():
    from fgvcbench_plugins.metric_learning import METRIC_LEARNING, build_loss_and_miner
    g = torch.Generator().manual_seed(0)
    emb, labels = torch.randn(16, 8, generator=g), torch.arange(4).repeat_interleave(4)
    params = dict(METRIC_LEARNING.params, miner="none")
    normalized, _ = build_loss_and_miner(dict(params, normalize=True))
    raw, _ = build_loss_and_miner(dict(params, normalize=False))
    assert normalized(emb, labels) == pytest.approx(normalized(10 * emb, labels).item(), rel=1e-5)  # scale-free
    assert raw(10 * emb, labels) > 2 * raw(emb, labels)                                            # distances scale
    soft, _ = build_loss_and_miner(dict(params, soft_margin=True))
    d = torch.cdist(F.normalize(emb), F.normalize(emb))
    same = labels[:, None] == labels[None, :]
    expected = [F.softplus(d[a, p] - d[a, n]) for a in range(16) for p in range(16) for n in range(16)
                if same[a, p] and a != p and not same[a, n]]
    assert soft(emb, labels).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)   # no margin


def test_same_seed_same_batches_and_the_schedule_is_followed(tmp_path, runner):
    """MPerClassSampler draws from NumPy: seeded per run, two runs of a seed agree even when
    the global NumPy stream was used in between; the cosine schedule moves the lr."""
    import numpy as np
    get_registry(refresh=True)
    histories = []
    for attempt in range(2):
        np.random.seed(attempt)   # whatever ran before must not matter
        (tmp_path / str(attempt)).mkdir()
        suite = write_suite(tmp_path / str(attempt), f"""
            output: {tmp_path / str(attempt) / 'out'}
            seeds: [0]
            device: cpu
            train: {{epochs: 2, image_size: 32, batch_size: 16, scheduler: cosine}}
            datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}}}]
            backbones: [test_resnet]
            methods: [{{name: metric_learning, params: {{tsne: false}}}}]
            """)
        result = runner.invoke(app, ["run", str(suite), "--no-progress"])
        assert result.exit_code == 0, result.output
        record = json.loads(next((tmp_path / str(attempt) / "out" / "runs").glob("*.json")).read_text())
        histories.append(record["history"])
    assert [h["train_loss"] for h in histories[0]] == [h["train_loss"] for h in histories[1]]
    # each epoch's lr is the one it trained at: cosine's start, then its half-way value
    first, second = histories[0][0]["lr"], histories[0][1]["lr"]
    assert first == pytest.approx(0.01) and second == pytest.approx(first * 0.5, rel=1e-9)


def _run_one_epoch(tmp_path, runner, method: str, image_size: int = 40) -> list[dict]:
    """Runs ``method`` (a suite's methods entry) for one epoch at 32 px on a tiny synthetic
    set stored at ``image_size``; returns the records."""
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        seeds: [0]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 16}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4,
                                                 image_size: {image_size}}}}}]
        backbones: [test_resnet]
        methods: [{method}]
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    return [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]


def test_all_variants_run_end_to_end(tmp_path, runner):
    records = _run_one_epoch(tmp_path, runner, "{name: metric_learning, variants: [batch_all, batch_hard, semihard, "
                                               "report, joint], params: {tsne: true}}")
    assert sorted(r["spec"]["variant"] for r in records) == ["batch_all", "batch_hard", "joint", "report", "semihard"]
    for r in records:
        m = r["metrics"]
        assert r["status"] == "ok" and m["top1"] == m["knn1_accuracy"]
        assert 0 <= m["top1_last"] <= 100 and m["mean_class_acc"] == m["knn1_mean_class_accuracy"]
        # one validation image per class: the epoch is picked on validation-vs-training 1-NN, never on NaN
        scores = [h.get("val_knn1_accuracy", h.get("val_precision_at_1")) for h in r["history"]]
        assert all(x == x for x in scores) and any(h.get("selected") for h in r["history"])
        assert {"precision_at_1", "r_precision", "map_at_r", "ncm_accuracy", "intra_cosine", "knn5_accuracy"} <= set(m)
        assert r["cost"]["train_seconds"] > 0
        artifacts = tmp_path / "out" / "artifacts" / r["run_id"]
        saved = torch.load(artifacts / "test_embeddings.pt", weights_only=True)
        assert saved["embeddings"].shape == (16, 128)
        assert (artifacts / "tsne.png").stat().st_size > 1000
    report = next(r for r in records if r["spec"]["variant"] == "report")
    assert len(report["history"]) == 10                     # the report's 10 epochs


def test_patience_stops_the_triplet_loop_as_it_stops_the_engine(tmp_path, runner, monkeypatch):
    import fgvcbench_plugins.metric_learning as ml
    monkeypatch.setattr(ml, "retrieval_metrics", lambda *a, **k: {"precision_at_1": 50.0, "r_precision": 0.0,
                                                                   "map_at_r": 0.0})   # never better after epoch 1
    (record,) = _run_one_epoch(tmp_path, runner, "{name: metric_learning, variants: [batch_hard], params: {tsne: false},"
                                                 " train: {epochs: 5, patience: 2}}")
    assert record["status"] == "ok", record.get("error")
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3] and record["history"][-1]["early_stop"] is True


def test_a_batch_larger_than_the_classes_allow_uses_every_class_once(tmp_path, runner):
    """P×K batches: with 4 classes and K = 4 a batch holds at most 16 images (the sampler
    would refuse more); the run says what it used instead of failing."""
    (record,) = _run_one_epoch(tmp_path, runner, "{name: metric_learning, variants: [batch_hard], "
                                                 "params: {m_per_class: 4}, train: {batch_size: 64}}")
    assert record["status"] == "ok", record.get("error")
    assert record["notes"]["batch_size"] == {"asked": 64, "used": 16, "why": "4 classes × m_per_class 4"}


def test_a_run_without_normalisation_reports_euclidean_retrieval(tmp_path, runner):
    (record,) = _run_one_epoch(tmp_path, runner, "{name: metric_learning, variants: [batch_hard], "
                                                 "params: {normalize: false}}")
    assert record["status"] == "ok", record.get("error")
    saved = torch.load(tmp_path / "out" / "artifacts" / record["run_id"] / "test_embeddings.pt", weights_only=True)
    assert not torch.allclose(saved["embeddings"].norm(dim=1), torch.ones(len(saved["labels"])))   # raw
    expected = retrieval_metrics(saved["embeddings"], saved["labels"], "l2")
    assert record["metrics"]["map_at_r"] == pytest.approx(expected["map_at_r"], abs=1e-6)


def test_unknown_miner_is_refused_when_the_suite_loads(tmp_path, runner):
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 16}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 4, test_per_class: 2, image_size: 40}}}}]
        backbones: [test_resnet]
        methods: [{{name: metric_learning, params: {{miner: hardest}}}}]
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 2 and "miner: 'hardest'" in result.output and "batch_hard" in result.output
    assert not (tmp_path / "out" / "runs").exists()     # refused before any run started


def test_recipe_knobs_the_triplet_loop_cannot_honour_are_refused(tmp_path, runner):
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 16, mixup_alpha: 0.2}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 4, test_per_class: 2, image_size: 40}}}}]
        backbones: [test_resnet]
        methods: [{{name: metric_learning, params: {{tsne: false}}}}]
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 2 and "mixup_alpha" in result.output and "not supported" in result.output
    assert not (tmp_path / "out" / "runs").exists()


def test_recipe_overrides_reach_the_validation_split_and_the_test_view(tmp_path, runner, monkeypatch):
    """recipe_overrides set the loop's recipe: its val_fraction carves the validation split,
    and its image size is the one embeddings are taken at (train and test views agree)."""
    import fgvcbench_plugins.metric_learning as ml
    sizes = []
    real = ml.embed_split

    def spy(ctx, net, images, recipe, batch=256):
        out = real(ctx, net, images, recipe, batch)
        sizes.append(ctx.augmenter(recipe).eval(images[:1]).shape[-1])
        return out
    monkeypatch.setattr(ml, "embed_split", spy)
    [record] = _run_one_epoch(tmp_path, runner, "{name: metric_learning, params: {tsne: false, recipe_overrides: "
                                                "{val_fraction: 0.0, image_size: 48}}}", image_size=56)
    assert record["status"] == "ok", record["error"]
    assert all("val_precision_at_1" not in row for row in record["history"])   # val_fraction 0: no split
    assert sizes and set(sizes) == {48}

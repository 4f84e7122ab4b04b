"""Fine-label discovery: the uncertainty filter, the flip passes, clustering on planted
blobs, the global label mapping, the recovery scores, the coarse dataset view, and every
variant end to end at smoke scale."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from fgvcbench.api import DataError, DatasetRequest, DatasetSplits, ImageList
from fgvcbench.cli import app
from fgvcbench.plugins import get_registry
from fgvcbench_plugins.datasets.views import coarse_view
from fgvcbench_plugins.fine_labels.discovery import (auto_min_cluster_size, cluster_features, flip_passes_probs,
                                                     global_fine_labels, keep_most_certain, recovery_scores,
                                                     uncertainty)

from conftest import SHARED_DATA, records_by_variant, tiny_suite


def test_uncertainty_is_one_minus_pmax_when_right_and_one_plus_pmax_when_wrong():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    u = uncertainty(probs, torch.tensor([0, 0, 1]))
    assert torch.allclose(u, torch.tensor([0.1, 0.4, 1.7]))
    assert u[2] > u[1] > u[0]          # a confident mistake ranks as the most uncertain


def test_filter_keeps_a_percentile_within_each_coarse_class():
    coarse = torch.tensor([0] * 10 + [1] * 20)
    u = torch.cat([torch.arange(10, 0, -1).float(), torch.arange(20).float()])
    keep = keep_most_certain(u, coarse, 90)
    assert int(keep[:10].sum()) == 9 and int(keep[10:].sum()) == 18     # int(n · 0.9) per class
    assert not keep[0] and keep[1:10].all()                              # class 0: its highest U goes
    assert not keep[28] and not keep[29] and keep[10:28].all()           # class 1: the two highest go
    ties = keep_most_certain(torch.zeros(4), torch.zeros(4, dtype=torch.long), 50)
    assert ties.tolist() == [True, True, False, False]                   # stable: earlier images first
    with pytest.raises(ValueError):
        keep_most_certain(u, coarse, 0)


def test_flip_passes_flip_with_their_probabilities_and_average_softmaxes():
    images = torch.zeros(64, 1, 2, 2)
    images[:, :, 0, 0] = 1.0          # a bright top-left pixel: where it lands tells the flips

    def forward(x):                    # one-hot logits of the pixel's position (4 positions)
        return x.flatten(1) * 50.0
    g = torch.Generator().manual_seed(0)
    none = flip_passes_probs(forward, images, 5, 0.0, 0.0, g)
    assert torch.allclose(none[:, 0], torch.ones(64), atol=1e-6)
    always_h = flip_passes_probs(forward, images, 5, 1.0, 0.0, g)
    assert torch.allclose(always_h[:, 1], torch.ones(64), atol=1e-6)   # top-right
    both = flip_passes_probs(forward, images, 5, 1.0, 1.0, g)
    assert torch.allclose(both[:, 3], torch.ones(64), atol=1e-6)       # bottom-right
    mixed = flip_passes_probs(forward, images, 200, 0.8, 0.3, torch.Generator().manual_seed(1))
    share = mixed.mean(0)      # expected positions: h only .8·.7, v only .2·.3, both .8·.3
    assert torch.allclose(share, torch.tensor([0.2 * 0.7, 0.8 * 0.7, 0.2 * 0.3, 0.8 * 0.3]), atol=0.02)


def _blobs(n_per: int, k: int, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("backend", ["hdbscan", "sklearn"])
def test_clustering_recovers_well_separated_blobs(backend):
    from sklearn.metrics import adjusted_rand_score
    x, truth = _blobs(60, 3)
    out = cluster_features(x, backend=backend)
    assert out["backend"] == backend and out["embedding"].shape == (180, 4)
    assert out["min_cluster_size"] == auto_min_cluster_size(180) == 8
    assert auto_min_cluster_size(2250) == 100 and auto_min_cluster_size(20) == 5   # the seed's 100; at least 5
    assert len(np.unique(out["labels"])) == 3 and out["labels"].min() == 0      # every point labelled
    assert adjusted_rand_score(truth, out["labels"]) > 0.95


def test_a_class_too_small_to_split_stays_one_cluster():
    x, _ = _blobs(4, 2)
    out = cluster_features(x, min_cluster_size=5)
    assert out["backend"] == "too_small" and out["embedding"] is None
    assert out["labels"].tolist() == [0] * 8


def test_global_labels_offset_per_coarse_class_and_filtered_images_get_minus_one():
    coarse = [0, 0, 0, 1, 1, 1, 2]
    keep = [True, False, True, True, True, True, True]
    per_class = {0: np.array([1, 0]), 1: np.array([0, 1, 2]), 2: np.array([0])}
    assert global_fine_labels(coarse, keep, per_class).tolist() == [1, -1, 0, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        global_fine_labels(coarse, keep, {0: np.array([0])})


def test_recovery_scores_ignore_cluster_names_and_count_clusters():
    coarse = np.array([0] * 6 + [1] * 4)
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    keep = np.array([True] * 9 + [False])
    perfect = recovery_scores(coarse, keep, np.array([5, 5, 5, 4, 4, 4, 7, 7, 6, -1]), truth)
    assert perfect["nmi"] == pytest.approx(100) and perfect["ari"] == pytest.approx(100)
    assert perfect["nmi_all"] == pytest.approx(100)
    assert perfect["clusters_found"] == 4 and perfect["fine_true"] == 4 and perfect["groups_scored"] == 2
    assert perfect["filtered_share"] == pytest.approx(10)
    by_class: dict = {}
    merged = recovery_scores(coarse, keep, np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, -1]), truth, by_class)
    assert merged["nmi"] < 60 and merged["clusters_found"] == 3
    # per coarse class: group 0's two species merged into one cluster, group 1's recovered
    assert {c: (r["kept"], r["found"], r["true"]) for c, r in by_class.items()} == {0: (6, 1, 2), 1: (3, 2, 2)}
    assert by_class[0]["nmi"] == pytest.approx(0) and by_class[1]["nmi"] == pytest.approx(100)


def _splits(coarse_of_fine: dict[int, int]) -> DatasetSplits:
    fine = [f for f in coarse_of_fine for _ in range(3)]
    lst = lambda: ImageList([f"/x/{i}.jpg" for i in range(len(fine))], fine,  # noqa: E731
                            [f"f{f}" for f in range(len(coarse_of_fine))],
                            coarse_labels=[coarse_of_fine[f] for f in fine], coarse_names=["A", "B", "C"])
    return DatasetSplits(train=lst(), test=lst())


def test_coarse_view_relabels_keeps_true_fine_labels_and_drops_small_groups():
    view = coarse_view(_splits({0: 0, 1: 0, 2: 1, 3: 2, 4: 2}), "toy", min_fine=2)
    assert view.train.class_names == ["A", "C"]
    assert view.train.labels == [0] * 6 + [1] * 6
    assert view.train.meta["fine_label"] == [0, 0, 0, 1, 1, 1, 3, 3, 3, 4, 4, 4]
    assert view.train.info["fine_names"][3] == "f3" and view.train.coarse_labels is None
    sub = view.test.subset([0, 7])
    assert sub.meta["fine_label"] == [0, 3]                        # meta follows subsets
    plain = DatasetSplits(train=ImageList(["/a.jpg"], [0], ["a"]), test=ImageList(["/a.jpg"], [0], ["a"]))
    with pytest.raises(DataError, match="no coarse level"):
        coarse_view(plain, "plain")


def test_coarse_view_loads_its_base_through_the_registry(tmp_path):
    registry = get_registry()
    spec = registry.datasets["coarse"]
    options = {"of": "synthetic", "of_options": {"coarse": 2, "fine": 3, "train_per_class": 2,
                                                 "test_per_class": 1, "image_size": 32}, "min_fine": 1}
    splits = spec.load(DatasetRequest(root=None, options=options, cache_dir=tmp_path, datasets=registry.datasets))
    assert len(splits.train) == 12 and len(splits.train.class_names) == 2
    assert splits.train.labels == [splits.train.meta["fine_label"][i] // 3 for i in range(12)]
    assert set(splits.train.meta["fine_label"]) == set(range(6))
    bad = DatasetRequest(root=None, options={**options, "of_options": {"colour": 1}}, cache_dir=tmp_path,
                         datasets=registry.datasets)
    with pytest.raises(DataError, match="unknown option"):
        spec.load(bad)
    missing = DatasetRequest(root=tmp_path / "nope", options={**options, "of": "cub", "of_options": {}},
                             cache_dir=tmp_path, datasets=registry.datasets)
    with pytest.raises(DataError, match="not found"):
        spec.load(missing)


CUB = SHARED_DATA / "CUB_200_2011_first50"


@pytest.mark.skipif(not CUB.is_dir(), reason=f"real CUB images not present at {CUB}")
def test_coarse_view_of_real_cub_groups_species_by_name():
    registry = get_registry()
    splits = registry.datasets["coarse"].load(DatasetRequest(
        root=CUB, options={"of": "cub", "of_options": {}, "min_fine": 2}, cache_dir=Path("/tmp"),
        datasets=registry.datasets))
    species = defaultdict(set)
    for c, f in zip(splits.train.labels, splits.train.meta["fine_label"]):
        species[splits.train.class_names[c]].add(splits.train.info["fine_names"][f])
    members, counts = _groups_from_the_files()
    assert {g: len(names) for g, names in species.items()} == {g: len(c) for g, c in members.items() if len(c) >= 2}
    assert "Flycatcher" in species and len(species) > 5   # the first 50 classes hold several groups
    assert all(name.endswith(group) for group, names in species.items() for name in names)
    assert (len(splits.train), len(splits.test)) == counts


def _groups_from_the_files() -> tuple[dict, tuple[int, int]]:
    """The coarse grouping read from CUB's own files, independently of the adapter: a
    class's group is the last word of its name (Black-footed Albatross → Albatross); groups
    of 2 or more species are kept with every image of theirs. (group → class ids, (train
    images, test images) kept)."""
    def rows(name):
        return [line.split() for line in (CUB / name).read_text().splitlines() if line.strip()]
    group_of = {cid: name.split(".", 1)[1].replace("-", "_").split("_")[-1] for cid, name in rows("classes.txt")}
    members = defaultdict(set)
    for cid, group in group_of.items():
        members[group].add(cid)
    kept = {cid for group, cids in members.items() if len(cids) >= 2 for cid in cids}
    train_flag = dict(rows("train_test_split.txt"))
    in_kept = [img for img, cid in rows("image_class_labels.txt") if cid in kept]
    return members, (sum(train_flag[img] == "1" for img in in_kept), sum(train_flag[img] == "0" for img in in_kept))


def test_every_variant_end_to_end_shares_the_coarse_and_discovery_stages(tmp_path, runner):
    get_registry(refresh=True)
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, epochs=2, batch_size=16, datasets="""
          [{name: coarse, options: {of: synthetic, of_options: {coarse: 2, fine: 3, train_per_class: 20,
                                                                test_per_class: 3, image_size: 40}}}]""",
                       methods="[{name: fine_labels, variants: [coarse_only, coarse_only_2x, two_stage, stacked, "
                               "multi_head_0.1, multi_head_0.9]}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = records_by_variant(out)
    assert set(records) == {"coarse_only", "coarse_only_2x", "two_stage", "stacked", "multi_head_0.1",
                            "multi_head_0.9"}
    assert records["coarse_only_2x"]["metrics"]["epochs_run"] == 4                # twice the recipe's 2 epochs
    assert all(r["status"] == "ok" for r in records.values()), [r["error"] for r in records.values()]
    base = records["coarse_only"]["metrics"]["top1"]
    for name in ("two_stage", "stacked", "multi_head_0.1", "multi_head_0.9"):
        m = records[name]["metrics"]
        assert m["coarse_only_top1"] == base and m["delta_vs_coarse_only"] == pytest.approx(m["top1"] - base)
        assert m["fine_true"] == 6 and m["clusters_found"] >= 2 and 0 <= m["nmi"] <= 100
        assert m["filtered_share"] == pytest.approx(100 * 6 / 54)          # 10 % of 54 per class, floored
        assert list((out / "artifacts" / records[name]["run_id"]).glob("umap_*.png"))
    for stage, count in (("fine_labels_coarse", 1), ("fine_labels_discovery", 1), ("fine_labels_fine", 1)):
        assert len(list((out / "stages").glob(f"{stage}-*.pt"))) == count, stage
    assert "coarse_finetune" in {h.get("phase") for h in records["stacked"]["history"]}
    cost = records["stacked"]["cost"]      # it reused the coarse, discovery and fine stages …
    assert cost["train_seconds_total"] > cost["train_seconds"] > 0   # … whose training time still counts
    assert "multi_head" in {h.get("phase") for h in records["multi_head_0.1"]["history"]}
    recovery = records["two_stage"]["notes"]["recovery_by_class"]
    assert len(recovery) == 2 and all(r["true"] == 3 and r["min_cluster_size"] >= 5 for r in recovery.values())
    # the same run with its fine stage cached gives the same result (the new head's draw is seeded)
    again = tmp_path / "again"
    again.mkdir()
    import shutil
    shutil.copytree(out / "stages", again / "out" / "stages")
    suite2 = tiny_suite(again, scale=None, epochs=2, batch_size=16, datasets="""
          [{name: coarse, options: {of: synthetic, of_options: {coarse: 2, fine: 3, train_per_class: 20,
                                                                test_per_class: 3, image_size: 40}}}]""",
                        methods="[{name: fine_labels, variants: [two_stage]}]")
    assert runner.invoke(app, ["run", str(suite2), "--no-progress"]).exit_code == 0
    cached = records_by_variant(again / "out")["two_stage"]
    assert cached["run_id"] == records["two_stage"]["run_id"]
    assert cached["metrics"]["top1"] == records["two_stage"]["metrics"]["top1"]
    assert [h.get("train_loss") for h in cached["history"] if h.get("phase") == "coarse_finetune"] == \
        [h.get("train_loss") for h in records["two_stage"]["history"] if h.get("phase") == "coarse_finetune"]


def test_fine_phase_holds_out_pseudo_labelled_validation_with_the_fine_class_count():
    """The code's sub-class phase selects its checkpoint on held-out pseudo-labelled images;
    its data has as many classes as clusters were found (mixup's one-hot needs it)."""
    from fgvcbench.api import TensorData, TensorSplit, Recipe
    from fgvcbench.engine.augment import mix_batch
    from fgvcbench_plugins.fine_labels import _pseudo_label_data
    images = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
    coarse = TensorSplit(images, torch.zeros(40, dtype=torch.long), list(range(40)))
    data = TensorData(train=coarse, val=coarse, test=coarse, class_names=["a", "b"], image_size=8, source=None)
    fine = torch.arange(5).repeat_interleave(8)
    out = _pseudo_label_data(data, images, fine, list(range(100, 140)), 5, 0.25)
    assert out.num_classes == 5 and len(out.test) == 0
    assert len(out.val) == 10 and sorted(out.val.labels.tolist()) == sorted(list(range(5)) * 2)   # 2 per class
    assert not set(out.val.index) & set(out.train.index) and len(out.train) + len(out.val) == 40
    _, soft = mix_batch(torch.zeros(4, 3, 8, 8), out.train.labels[:4], out.num_classes, Recipe(mixup_alpha=0.2),
                        torch.Generator())
    assert soft.shape == (4, 5)


def test_multi_head_loss_ignores_images_without_a_fine_label():
    """The plugin's own objective: α·CE(coarse) + (1−α)·CE(fine over the labelled rows);
    what the fine head says about an image the filter removed (-1) changes nothing."""
    import torch.nn.functional as F
    from fgvcbench_plugins.fine_labels import MultiHeadLoss
    g = torch.Generator().manual_seed(0)
    coarse_logits, fine_logits = torch.randn(8, 2, generator=g), torch.randn(8, 4, generator=g)
    y = torch.stack([torch.arange(2).repeat(4), torch.tensor([0, 2, -1, 3, -1, 1, -1, 2])], 1)
    loss = MultiHeadLoss(alpha=0.3)
    labelled = y[:, 1] >= 0
    expected = 0.3 * F.cross_entropy(coarse_logits, y[:, 0]) \
        + 0.7 * F.cross_entropy(fine_logits[labelled], y[labelled, 1])
    assert loss((coarse_logits, fine_logits), y).item() == pytest.approx(expected.item(), rel=1e-6)
    perturbed = fine_logits.clone()
    perturbed[~labelled] += 100 * torch.randn(int((~labelled).sum()), 4, generator=g)
    assert loss((coarse_logits, perturbed), y).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = fine_logits.clone()
    changed[0, 0] -= 5.0                                   # a labelled row's fine logit does count
    assert loss((coarse_logits, changed), y).item() > expected.item()
    smoothed = MultiHeadLoss(alpha=0.3, label_smoothing=0.1)((coarse_logits, fine_logits), y)
    assert smoothed.item() != pytest.approx(expected.item())
    # a batch of removed images only (an epoch's last): the coarse term alone, not NaN
    none = torch.stack([y[:, 0], torch.full((8,), -1)], 1)
    assert loss((coarse_logits, fine_logits), none).item() == pytest.approx(
        0.3 * F.cross_entropy(coarse_logits, y[:, 0]).item(), rel=1e-6)


def test_multi_head_trains_with_unlabelled_rows_in_the_batches():
    import timm
    from fgvcbench.data.pipeline import TensorData, TensorSplit
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.engine.train import fit
    from fgvcbench_plugins.fine_labels import MultiHead, MultiHeadLoss
    torch.manual_seed(0)
    model = MultiHead(timm.create_model("test_resnet", num_classes=2), n_fine=4)
    head = model.fine.weight.detach().clone()
    images = torch.randint(0, 255, (16, 3, 20, 20), dtype=torch.uint8)
    coarse = torch.arange(2).repeat(8)
    fine = torch.where(torch.arange(16) < 8, coarse * 2, torch.full((16,), -1))   # half unlabelled
    seen, loss = [], MultiHeadLoss(alpha=0.5)

    def criterion(out, y):
        seen.append(y.clone())
        return loss(out, y)
    split = TensorSplit(images, torch.stack([coarse, fine], 1), list(range(16)))
    evals = TensorSplit(images, coarse, list(range(16)))
    data = TensorData(split, evals, evals, ["a", "b"], 16, None)
    result = fit(model, data, Recipe(epochs=2, image_size=16, batch_size=8), device=torch.device("cpu"), seed=0,
                 criterion=criterion, output_fn=lambda out: out[0])
    assert seen and all(y.shape[1] == 2 for y in seen) and any((y[:, 1] == -1).any() for y in seen)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert not torch.equal(model.fine.weight.detach(), head)   # the fine head learned from the labelled rows


@pytest.mark.skipif(not CUB.is_dir(), reason=f"real CUB images not present at {CUB}")
def test_data_verify_checks_a_view_through_its_base_root(runner):
    result = runner.invoke(app, ["data", "verify", "coarse", "--root", str(CUB), "-o", "of=cub", "-o", "min_fine=2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    train, test = _groups_from_the_files()[1]
    assert sum(report["splits"]["train"].values()) == train and sum(report["splits"]["test"].values()) == test

"""FineRNet: the pair rules on hand-made neighbour lists, α-interpolation, the frozen
phase-4 backbone, and the whole pipeline end to end at smoke scale."""

from __future__ import annotations


import torch

from fgvcbench.cli import app
from fgvcbench.plugins import get_registry
from fgvcbench_plugins.finernet.pairs import mine_hard_pairs, pair_rules
from fgvcbench_plugins.finernet.siamese import PairHead, interpolate_backbones

from conftest import records_by_variant, write_suite

# image 0 of class 0; each class's training images, nearest to image 0 first
NEIGHBOURS = {0: [0, 11, 12, 13, 14, 15, 16, 17, 18], 1: [21, 22, 23, 24, 25, 26, 27, 28],
              2: [31, 32, 33, 34, 35, 36, 37, 38], 3: [41, 42], 4: [51], 5: [61], 6: [71], 7: [81]}


def test_correct_top1_gives_seven_positives_and_one_negative_per_other_class():
    pairs = pair_rules(0, 0, [0, 1, 2, 3, 4, 5, 6], NEIGHBOURS.__getitem__)
    assert pairs[:7] == [(0, j, 1) for j in (11, 12, 13, 14, 15, 16, 17)]   # ranks 1–7, never itself
    assert pairs[7:] == [(0, 21, 0), (0, 31, 0), (0, 41, 0), (0, 51, 0), (0, 61, 0), (0, 71, 0)]
    assert len(pairs) == 13 and sum(p[2] for p in pairs) == 7               # ≈13 pairs, 7:6


def test_wrong_top1_gives_seven_hard_negatives_and_the_true_class_second_nearest():
    pairs = pair_rules(0, 0, [2, 1, 0, 3, 4, 5, 6], NEIGHBOURS.__getitem__)
    assert pairs[:7] == [(0, j, 0) for j in (31, 32, 33, 34, 35, 36, 37)]   # the wrong class, ranks 0–6
    assert (0, 21, 0) in pairs and (0, 11, 1) in pairs                      # true class: 2nd nearest, label 1
    assert all(i != j for i, j, _ in pairs)


def test_self_pairs_are_dropped():
    odd = {**NEIGHBOURS, 0: [11, 0, 12, 13, 14, 15, 16, 17]}                 # a duplicate ranks above itself
    pairs = pair_rules(0, 0, [0, 1, 2, 3, 4, 5, 6], odd.__getitem__)
    assert (0, 0, 1) not in pairs and len([p for p in pairs if p[2] == 1]) == 6


def test_mining_on_features_uses_within_class_inner_product_neighbours():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(10)
    # unit-norm features, so every image is its own nearest neighbour (rank 0) by inner product
    feats = torch.nn.functional.normalize(torch.randn(40, 8) + 3 * torch.nn.functional.one_hot(labels, 8).float())
    logits = torch.nn.functional.one_hot(labels, 4).float() * 5 + torch.randn(40, 4) * 0.1   # all correct
    pairs, stats = mine_hard_pairs(feats, labels, logits, k=3, backend="torch")
    positives = pairs[pairs[:, 2] == 1]
    assert (labels[positives[:, 0]] == labels[positives[:, 1]]).all()
    negatives = pairs[pairs[:, 2] == 0]
    assert (labels[negatives[:, 0]] != labels[negatives[:, 1]]).all()
    assert stats["pairs"] == len(pairs) == 40 * (3 + 2) and abs(stats["positive_share"] - 0.6) < 1e-6
    assert stats["positive_cosine"] > stats["negative_cosine"]


def test_alpha_interpolation_includes_bn_buffers_and_skips_the_head():
    w1 = {"conv.weight": torch.ones(2), "bn.running_mean": torch.full((2,), 4.0),
          "bn.num_batches_tracked": torch.tensor(10), "fc.weight": torch.zeros(3)}
    w3 = {"conv.weight": torch.zeros(2), "bn.running_mean": torch.zeros(2),
          "bn.num_batches_tracked": torch.tensor(99), "fc.weight": torch.ones(3)}
    mixed = interpolate_backbones(w1, w3, 0.25, "fc.")
    assert set(mixed) == {"conv.weight", "bn.running_mean", "bn.num_batches_tracked"}
    assert torch.allclose(mixed["conv.weight"], torch.full((2,), 0.25))
    assert torch.allclose(mixed["bn.running_mean"], torch.full((2,), 1.0))
    assert int(mixed["bn.num_batches_tracked"]) == 99
    assert torch.equal(interpolate_backbones(w1, w3, 1.0, "fc.")["conv.weight"], w1["conv.weight"])


def test_pair_head_shape_and_zero_blocks():
    head = PairHead(5).eval()
    q, n = torch.randn(4, 5), torch.randn(4, 5)
    assert head(q, n).shape == (4,)
    first = head.mlp[0]
    assert first.in_features == 20   # [0, f_q, 0, f_n]


def test_finernet_end_to_end_shares_phase1_and_freezes_the_phase4_backbone(tmp_path, runner):
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        seeds: [0]
        device: cpu
        train: {{epochs: 2, image_size: 32, batch_size: 16}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}}}]
        backbones: [test_resnet]
        methods:
          - name: finernet
            variants: [single_step, code, readme, alpha_0.0]
            params: {{phase3_batch: 16}}
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = records_by_variant(tmp_path / "out")
    assert set(records) == {"single_step", "code", "readme", "alpha_0.0"}
    assert all(r["status"] == "ok" for r in records.values())
    phase1 = records["single_step"]["metrics"]["top1"]
    for variant in ("code", "readme", "alpha_0.0"):
        m = records[variant]["metrics"]
        assert m["phase1_top1"] == phase1                     # one phase 1 for all variants
        assert m["pairs_pairs"] > 0 and 0 <= m["pairs_positive_share"] <= 1
        assert m["pairs_mining_seconds"] > 0 and m["pairs_knn_seconds_torch"] > 0   # mining timed per engine
        assert m["delta_vs_single_step"] == m["top1"] - phase1
    assert len(list((tmp_path / "out" / "stages").glob("finernet_phase1-*.pt"))) == 1
    assert len(list((tmp_path / "out" / "stages").glob("finernet_phase3-*.pt"))) == 1
    phases = {h.get("phase") for h in records["code"]["history"]}
    assert "4" in phases
    assert records["code"]["notes"]["alpha"] == 0.2 and records["alpha_0.0"]["notes"]["alpha"] == 0.0


def test_phase4_backbone_is_frozen():
    from fgvcbench.data.pipeline import TensorData, TensorSplit
    from fgvcbench.engine.recipe import Recipe
    from fgvcbench.engine.train import fit
    import timm
    model = timm.create_model("test_resnet", num_classes=3)
    images = torch.randint(0, 255, (12, 3, 20, 20), dtype=torch.uint8)
    labels = torch.arange(3).repeat(4)
    split = TensorSplit(images, labels, list(range(12)))
    data = TensorData(split, split, split, ["a", "b", "c"], 16, None)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    fit(model, data, Recipe(epochs=2, image_size=16, batch_size=6, lr=0.5), device=torch.device("cpu"), seed=0,
        freeze_backbone=True)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())   # weights and BN statistics

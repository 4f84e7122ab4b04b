"""FineRNet: the pair rules on hand-made neighbour lists, the mining views, the code's
settings per backbone family and dataset, the Siamese head and its checkpoint rule,
α-interpolation, the phase-4 backbone (weights frozen, BN in train mode unless
``frozen_bn``), and the whole pipeline end to end at smoke scale."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import fgvcbench_plugins.finernet as finernet
from fgvcbench.cli import app
from fgvcbench.plugins import get_registry
from fgvcbench_plugins.finernet import FINERNET, phase4_plan, resolve_settings, settings_for
from fgvcbench.api import UserError, knn_within_classes
from fgvcbench_plugins.finernet.pairs import mine_hard_pairs, pair_rules
from fgvcbench_plugins.finernet.siamese import PairHead, Siamese, head_config, interpolate_backbones, train_siamese

from conftest import records_by_variant, tiny_suite, write_suite

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
    # phase 1's weights on the device that mining used, phase 3's cached copy on the CPU (the
    # meta device stands in for a GPU: mixing it with CPU tensors fails as CUDA's does)
    on_device = interpolate_backbones({k: v.to("meta") for k, v in w1.items()}, w3, 0.25, "fc.")
    assert on_device["conv.weight"].device.type == "meta"


def test_mining_with_a_separate_query_view_ranks_index_rows_by_query_inner_product():
    torch.manual_seed(1)
    labels = torch.arange(3).repeat_interleave(6)
    index, queries = torch.randn(18, 5), torch.randn(18, 5)
    table = knn_within_classes(index, labels, 4, 3, backend="torch", queries=queries)
    for c in range(3):
        members = (labels == c).nonzero().squeeze(1)
        expected = members[(queries @ index[members].T).argsort(dim=1, descending=True)[:, :4]]
        assert torch.equal(table[c], expected)
    same = knn_within_classes(index, labels, 4, 3, backend="torch")             # one view for both
    assert torch.equal(same[0], knn_within_classes(index, labels, 4, 3, backend="torch", queries=index)[0])


def test_the_codes_settings_per_dataset_and_backbone_family():
    cub = settings_for("resnet50", "cub")
    assert (cub["alpha"], cub["phase4_lr"], cub["phase4_full"], cub["phase3_epochs"], cub["k"]) == \
        (0.2, 1e-3, False, 100, 7)
    flowers = settings_for("resnet50", "flowers102")
    assert flowers["alpha"] is None and flowers["phase4_full"] and flowers["phase4_lr"] == 1e-3 and flowers["k"] == 5
    assert settings_for("resnet50", "cars")["phase4_lr"] == 1e-2 and settings_for("resnet50", "dogs")["alpha"] == 0.6
    vit_cub = settings_for("vit_base_patch16_224", "cub")
    assert vit_cub["phase3_lr"] == 1e-6 and vit_cub["phase3_epochs"] == 40 and vit_cub["alpha"] == 0.2  # ResNet phase 4
    vit_dtd = settings_for("vit_base_patch16_224", "dtd")
    assert (vit_dtd["alpha"], vit_dtd["phase4_lr"], vit_dtd["phase4_full"], vit_dtd["phase3_batch"]) == \
        (1.0, 5e-4, True, 64)
    vit384 = settings_for("vit_base_patch16_384", "cub")
    assert (vit384["alpha"], vit384["phase3_epochs"], vit384["phase3_batch"], vit384["phase4_batch"]) == \
        (0.7, 5, 64, 64)
    assert settings_for("vit_base_patch16_224", "dogs")["source"] == "default+resnet"    # no ViT config: ResNet's
    dogs384 = settings_for("vit_base_patch16_384", "dogs")                # vit_base_patch16_384_dog.yaml
    assert (dogs384["alpha"], dogs384["phase4_lr"], dogs384["phase4_batch"], dogs384["phase3_epochs"],
            dogs384["phase3_batch"]) == (0.8, 2e-4, 64, 20, 64)
    dtd384 = settings_for("vit_base_patch16_384", "dtd")                  # phase 3 from the 384 file, phase 4 the 224 one
    assert (dtd384["phase3_epochs"], dtd384["phase3_batch"], dtd384["alpha"], dtd384["phase4_full"]) == (20, 64, 1.0, True)
    assert settings_for("vit_base_patch16_384", "flowers102")["phase3_batch"] == 64
    other = settings_for("test_resnet", "synthetic")
    assert (other["alpha"], other["phase3_epochs"], other["phase3_lr"], other["k"]) == (0.2, None, 4e-4, 7)
    assert resolve_settings({"k": 3, "phase3_lr": None}, "resnet50", "flowers102")["k"] == 3
    assert FINERNET.recipe["lr"] == 1e-3 and FINERNET.recipe["crop_scale_min"] == 0.08


def test_phase4_plan_sweeps_alpha_on_flowers_and_keeps_the_codes_modes():
    flowers = settings_for("resnet50", "flowers102")
    assert phase4_plan("code", None, flowers, 1e-3) == \
        {"alpha": 0.0, "full": True, "lr": 1e-3, "mode": "finetune_phase3"}
    swept = phase4_plan("code", 0.4, flowers, 1e-3)                          # the α sweep really mixes
    assert swept["alpha"] == 0.4 and not swept["full"] and swept["mode"] == "mix_probe"
    cub = phase4_plan("code", None, settings_for("resnet50", "cub"), 1e-3)
    assert (cub["alpha"], cub["full"], cub["lr"]) == (0.2, False, 1e-3)
    vit_dtd = phase4_plan("code", 0.6, settings_for("vit_base_patch16_224", "dtd"), 1e-3)
    assert (vit_dtd["alpha"], vit_dtd["full"], vit_dtd["lr"]) == (0.6, True, 5e-4)
    readme = phase4_plan("readme", None, settings_for("resnet50", "cars"), 1e-3)
    assert (readme["alpha"], readme["full"], readme["lr"]) == (0.0, True, 1e-3)


def test_pair_head_matches_the_code():
    head = PairHead(5).eval()                                                # CNN: hidden 32, Xavier
    q, n = torch.randn(4, 5), torch.randn(4, 5)
    assert head(q, n).shape == (4,)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 192), (192, 32), (32, 2), (2, 1)]  # 2d + 2
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU",
                                                    "Linear", "Linear"]
    zero = torch.zeros(4, 1)
    assert torch.allclose(head(q, n), head.mlp(torch.cat([zero, q, zero, n], 1)).squeeze(1))   # scalar separators
    assert head_config("vit_base_patch16_224") == {"hidden": 192, "xavier": False}
    assert head_config("resnet50") == {"hidden": 32, "xavier": True}
    torch.manual_seed(0)
    wide = PairHead(2000)                                  # Xavier normal: std √(2/(fan_in+fan_out))
    std = wide.mlp[0].weight.std().item()
    assert abs(std - (2 / (4002 + 192)) ** 0.5) < 0.05 * std


def test_siamese_runs_query_and_neighbour_in_separate_backbone_passes():
    torch.manual_seed(0)
    siamese = Siamese(timm.create_model("test_resnet", num_classes=3)).train()
    sizes = []
    handle = siamese.backbone.conv1.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    q, n = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16) * 3 + 1
    out = siamese(q, n)
    handle.remove()
    assert sizes == [3, 3] and out.shape == (3,)
    # train-mode BN: each pass normalises with its own batch statistics, unlike one 2B batch
    assert torch.allclose(out, siamese.head(siamese.embed(q), siamese.embed(n)))
    joint = siamese.head(*siamese.embed(torch.cat([q, n])).split(3))
    assert not torch.allclose(out, joint)


def test_phase3_keeps_the_epoch_with_the_best_training_pair_f1():
    from fgvcbench.engine.augment import BatchAugmenter
    from fgvcbench.engine.recipe import Recipe
    torch.manual_seed(0)
    images = torch.randint(0, 255, (12, 3, 20, 20), dtype=torch.uint8)
    pairs = torch.tensor([[i, (i + 1) % 12, i % 2] for i in range(12)] * 2)
    siamese = Siamese(timm.create_model("test_resnet", num_classes=3))
    recipe = Recipe(image_size=16, augment="flip")
    augmenter = BatchAugmenter(recipe, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"),
                               torch.Generator().manual_seed(0))
    states = {}
    history, best = train_siamese(siamese, images, pairs, augmenter, epochs=4, lr=0.05, momentum=0.9,
                                  weight_decay=0.0, batch_size=8, device=torch.device("cpu"), seed=0,
                                  on_epoch=lambda row: states.setdefault(row["epoch"], {
                                      k: v.clone() for k, v in siamese.backbone.state_dict().items()}))
    f1 = [row["pair_f1"] for row in history]
    assert best["epoch"] == 1 + f1.index(max(f1)) and best["pair_f1"] == max(f1)
    assert all(torch.equal(best["state_dict"][k], v) for k, v in states[best["epoch"]].items())
    assert all(row["pairs_seen"] == 24 for row in history)                  # full batches only (drop_last)


def test_finernet_end_to_end_shares_phase1_and_mixes_the_phase4_backbone(tmp_path, runner, monkeypatch):
    get_registry(refresh=True)
    seen = {}
    real = finernet._fit_phase4

    def watch(ctx, model, data, recipe, *, full, frozen_bn):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers() if "running" in n}
        result = real(ctx, model, data, recipe, full=full, frozen_bn=frozen_bn)
        seen[ctx.spec.variant] = {"alpha": ctx.notes["alpha"], "full": full, "before": before, "buffers": buffers,
                                  "after": dict(result.model.named_parameters()),
                                  "after_buffers": dict(result.model.named_buffers())}
        return result
    monkeypatch.setattr(finernet, "_fit_phase4", watch)
    suite = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        seeds: [0]
        device: cpu
        train: {{epochs: 2, image_size: 32, batch_size: 16}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}}}]
        backbones: [test_resnet]
        methods:
          - name: finernet
            variants: [single_step, code, readme, alpha_0.0, frozen_bn, mining_test_view]
            params: {{phase3_batch: 16}}
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = records_by_variant(tmp_path / "out")
    assert set(records) == {"single_step", "code", "readme", "alpha_0.0", "frozen_bn", "mining_test_view"}
    assert all(r["status"] == "ok" for r in records.values()), [r.get("error") for r in records.values()]
    phase1 = records["single_step"]["metrics"]["top1"]
    for variant in ("code", "readme", "alpha_0.0", "frozen_bn", "mining_test_view"):
        m = records[variant]["metrics"]
        assert m["phase1_top1"] == phase1                     # one phase 1 for all variants
        assert m["pairs_pairs"] > 0 and 0 <= m["pairs_positive_share"] <= 1
        assert m["pairs_mining_seconds"] > 0 and m["pairs_knn_seconds_torch"] > 0   # mining timed per engine
        assert m["delta_vs_single_step"] == m["top1"] - phase1
        assert 1 <= m["phase3_best_epoch"] <= 2 and 0 <= m["phase3_pair_f1"] <= 1
    stages = tmp_path / "out" / "stages"
    assert len(list(stages.glob("finernet_phase1-*.pt"))) == 1
    assert len(list(stages.glob("finernet_pairs-*.pt"))) == 2       # train view (default) and test view
    assert len(list(stages.glob("finernet_phase3-*.pt"))) == 2
    assert records["code"]["notes"]["mining_view"] == "train"
    assert records["mining_test_view"]["notes"]["mining_view"] == "test"
    phases = {h.get("phase") for h in records["code"]["history"]}
    assert "4" in phases
    assert "pair_f1" in next(h for h in records["code"]["history"] if h.get("phase") == "3")
    assert records["code"]["notes"]["alpha"] == 0.2 and records["alpha_0.0"]["notes"]["alpha"] == 0.0
    assert records["code"]["notes"]["phase4_bn"] == "train mode"
    assert records["frozen_bn"]["notes"]["phase4_bn"] == "frozen"

    # the plugin's phase-4 backbone: α·W1 + (1−α)·W3 (parameters), unchanged by phase 4
    load = lambda path: torch.load(path, weights_only=True)["result"]["state_dict"]  # noqa: E731
    w1 = load(next(stages.glob("finernet_phase1-*.pt")))
    w3s = [load(path) for path in stages.glob("finernet_phase3-*.pt")]
    assert all(any(not torch.equal(w1[n], w3[n]) for n in w1 if n.endswith("weight")) for w3 in w3s)  # phase 3 moved it
    for variant in ("code", "alpha_0.0", "frozen_bn"):
        run = seen[variant]
        assert not run["full"]
        backbone = [n for n in run["before"] if not n.startswith("fc.")]

        def mixed(w3, a=run["alpha"]):
            return all(torch.allclose(run["before"][n], a * w1[n] + (1 - a) * w3[n], rtol=0, atol=1e-6)
                       for n in backbone)
        assert any(mixed(w3) for w3 in w3s), variant
        assert all(torch.equal(run["after"][n], run["before"][n]) for n in backbone), variant   # weights frozen
        assert not torch.equal(run["after"]["fc.weight"], run["before"]["fc.weight"])           # the head trained
        moved = any(not torch.equal(run["after_buffers"][n], v) for n, v in run["buffers"].items())
        assert moved == (variant != "frozen_bn"), variant    # BN re-estimated in train mode; frozen_bn keeps it
    assert seen["readme"]["full"]


def test_selection_on_test_trains_on_the_whole_training_set_as_the_code(tmp_path, runner, monkeypatch):
    """The released code trains on every training image and selects on the test set:
    ``selection: test`` carves no validation split; the default holds one out."""
    from fgvcbench.run import RunContext
    real, fits = RunContext.fit, []

    def watch(self, model, data, *args, **kwargs):
        fits.append((self.params["selection"], len(data.train), len(data.val), data.val is data.test))
        return real(self, model, data, *args, **kwargs)
    monkeypatch.setattr(RunContext, "fit", watch)
    get_registry(refresh=True)
    suite = tiny_suite(tmp_path, methods="[{name: finernet, variants: [single_step]}, "
                                         "{name: finernet, variants: [single_step], params: {selection: test}}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    # 4 classes × 8 training images (one per class held out by default), 4 × 4 test images
    assert sorted(fits) == [("test", 32, 16, True), ("val", 28, 4, False)]


def test_the_test_view_is_the_codes_for_each_backbone():
    """The code's datasets.py: Resize(256) → CenterCrop(224), and for vit_base_patch16_384
    Resize(512) → CenterCrop(384). A test view the suite set is kept."""
    from fgvcbench.api import Recipe
    from fgvcbench_plugins.finernet import code_test_view
    r = Recipe(image_size=384)
    assert code_test_view(r, "vit_base_patch16_384").eval_resize == 512
    assert code_test_view(Recipe(image_size=224), "resnet50").eval_resize is None          # 256, the default
    assert code_test_view(Recipe(image_size=224), "vit_base_patch16_224") == Recipe(image_size=224)
    assert code_test_view(r.replace(eval_resize_size=400), "vit_base_patch16_384").eval_resize == 400
    assert code_test_view(r.replace(eval_crop_pct=0.875), "vit_base_patch16_384").eval_resize == 439
    # at any scale a 384 ViT trains and tests at 384 (the paper scale's 224 would not fit the model)
    at224 = code_test_view(Recipe(image_size=224), "vit_base_patch16_384")
    assert at224.image_size == 384 and at224.eval_resize == 512


def test_classic_pipeline_is_refused_where_mining_and_pairs_would_ignore_it():
    from fgvcbench.api import Recipe
    from fgvcbench_plugins.finernet import check_params
    params = dict(FINERNET.params)
    with pytest.raises(UserError, match=r"pipeline: classic \(from a train: block\) reaches phases 1 and 4 only"):
        check_params(params, Recipe(pipeline="classic"))
    check_params(dict(params, pipeline="single_step"), Recipe(pipeline="classic"))   # phase 1 alone: fine
    check_params(params, Recipe())


def test_a_vit_is_normalised_with_imagenet_statistics_as_the_code(tmp_path):
    """datasets.py normalises every model with ImageNet mean/std; timm's ViT config says 0.5.
    The choice reaches the models phase 1 builds and its stage's cache key."""
    import fgvcbench_plugins.finernet as finernet
    from fgvcbench.api import IMAGENET_MEAN
    from fgvcbench.plugins import get_registry
    from fgvcbench.run import RunContext
    from fgvcbench.spec import RunSpec
    from fgvcbench.store import Store
    seen = {}
    for norm, expected in (("code", IMAGENET_MEAN), ("timm", (0.5, 0.5, 0.5))):
        spec = RunSpec(suite="s", dataset={"name": "synthetic", "options": {"coarse": 1, "fine": 2, "train_per_class": 2,
                                                                            "test_per_class": 1, "image_size": 32}},
                       backbone={"name": "vit_base_patch16_224", "pretrained": False}, method="finernet",
                       variant="code", seed=0, scale="smoke", params=dict(FINERNET.params, input_norm=norm),
                       recipe={"image_size": 32})
        ctx = RunContext(spec, get_registry(), Store(tmp_path), device=torch.device("cpu"), cache_dir=tmp_path)

        def stop(name, fn, inputs, _ctx=ctx):   # phase 1's stage: its key, and the model it would build
            _ctx.create_model(2)
            seen.update(inputs=inputs, mean=_ctx.augmenter().mean.flatten().tolist())
            raise KeyboardInterrupt
        ctx.stage = stop
        with pytest.raises(KeyboardInterrupt):
            finernet.run_finernet(ctx)
        assert seen["mean"] == pytest.approx([255 * m for m in expected]), norm
        # a stage cached under the other normalisation is another stage
        assert ("input_norm" in seen["inputs"]) == (norm == "code"), norm


def test_a_killed_run_resumes_at_the_phase_after_the_last_finished_one(tmp_path):
    """kill -9 right after phase 2 (the pairs) is saved: the next `run` trains phases 3 and 4
    only — phase 1's weights and the mined pairs load from their cached stages, untouched."""
    import os
    import subprocess
    import sys
    suite = tiny_suite(tmp_path, epochs=2, batch_size=16,
                       methods="[{name: finernet, variants: [code], params: {phase3_batch: 16}}]")
    env = dict(os.environ, OMP_NUM_THREADS="1", FGVCBENCH_FAULT="stage:2")
    killed = subprocess.run([sys.executable, "-m", "fgvcbench.cli", "run", str(suite), "--no-progress"], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    stages = tmp_path / "out" / "stages"
    saved = {p.name.split("-")[0]: p.stat().st_mtime_ns for p in stages.glob("*.pt")}
    assert set(saved) == {"finernet_phase1", "finernet_pairs"} and not list((tmp_path / "out" / "runs").glob("*.json"))
    env.pop("FGVCBENCH_FAULT")
    resumed = subprocess.run([sys.executable, "-m", "fgvcbench.cli", "run", str(suite), "--no-progress"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert record["status"] == "ok" and record["notes"]["phase1_cached"] is True
    assert {p.name.split("-")[0]: p.stat().st_mtime_ns for p in stages.glob("*.pt")
            if p.name.split("-")[0] in saved} == saved                     # neither phase was trained again
    assert {row.get("phase") for row in record["history"]} == {"3", "4"}   # phase 1's epochs: not in this attempt
    assert record["cost"]["train_seconds_total"] > record["cost"]["train_seconds"]   # its cached time counts

"""The recipe plugin: every step's effect on a Recipe, EMA and warmup against torchvision's
definitions, the ablation plan, and `fgvcbench ablate` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR, StepLR

from fgvcbench.api import Recipe
from fgvcbench.cli import app
from fgvcbench.engine.train import ema_decay_for, epoch_order, lr_multiplier
from fgvcbench.plugins import get_registry
from fgvcbench.suite import AblationPlan

from conftest import tiny_suite, write_suite

R0 = Recipe(epochs=90, image_size=224, lr=0.05, batch_size=64, augment="flip", scheduler="cosine",
            weight_decay=1e-3, label_smoothing=0.2, ema_steps=5, ema_decay=0.5)


@pytest.fixture(scope="module")
def steps():
    return get_registry(refresh=True).recipe_steps


EXPECTED = {
    "base": dict(optimizer="sgd", nesterov=True, lr=0.01, momentum=0.9, batch_size=32, weight_decay=0.0,
                 scheduler="none", label_smoothing=0.0, augment="standard", ema_steps=0, ema_decay=0.0,
                 lr_step="epoch"),
    "large_batch_warmup": dict(batch_size=128, lr=0.1, scheduler="step", step_size=30, gamma=0.1, warmup_epochs=5,
                               warmup_start_factor=0.01),
    "trivial_augment": dict(augment="trivial_augment", policy_interpolation="bilinear"),
    "cosine": dict(scheduler="cosine"),
    "label_smoothing": dict(label_smoothing=0.1, lr=0.4),
    "random_erasing": dict(random_erasing=0.1),
    "ema": dict(ema_steps=32, ema_decay=0.994, ema_adjust=True),
    "weight_decay": dict(weight_decay=2e-5),
    "mixup_cutmix": dict(mixup_alpha=0.2, cutmix_alpha=1.0),
    "autoaugment": dict(augment="autoaugment", policy_interpolation="bilinear"),
    "adamw": dict(optimizer="adamw", lr=1e-3, weight_decay=0.05),
    "long_training": dict(epochs=360),
    "repeated_augmentation": dict(repeated_augment=4),
    "fixres": dict(image_size=176, eval_image_size=224, eval_resize_size=232),
    "no_decay_norm": dict(weight_decay=1e-3, no_decay_norm=True),
    "ema_torchvision": dict(ema_steps=32, ema_decay=0.99998, ema_adjust=True),
    "ema_unadjusted": dict(ema_steps=32, ema_decay=0.994, ema_adjust=False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_step_changes_exactly_what_it_says(steps, name):
    import dataclasses
    after = steps[name].apply(R0)
    fields, before = dataclasses.asdict(after), dataclasses.asdict(R0)   # every field, set or not
    changed = {k: v for k, v in fields.items() if before[k] != v}
    expected = {k: v for k, v in EXPECTED[name].items() if before[k] != v}
    assert changed == expected
    # and it sets every value it names, also those R0 happens to hold (cosine's scheduler, …)
    assert {k: fields[k] for k in EXPECTED[name]} == EXPECTED[name]
    stepped = steps[name].apply(R0.replace(scheduler="step", optimizer="adamw", momentum=0.5, ema_adjust=False))
    assert {k: dataclasses.asdict(stepped)[k] for k in EXPECTED[name]} == EXPECTED[name]
    assert steps[name].apply(R0) == after and not after.validate()   # pure and valid
    assert after.epochs == R0.epochs or name == "long_training"
    assert after.image_size == R0.image_size or name == "fixres"


def test_all_article_rejected_and_torchvision_steps_are_registered(steps):
    assert set(EXPECTED) == set(steps)
    recipe = get_registry().methods["recipe"]
    assert recipe.params["steps"] == ["base", "large_batch_warmup", "trivial_augment", "cosine", "label_smoothing",
                                      "random_erasing", "ema"]


def test_ema_decay_adjustment_is_torchvisions():
    # references/classification/train.py: adjust = world·batch·ema_steps/epochs; alpha = min(1, (1-decay)·adjust)
    r = Recipe(epochs=600, batch_size=128, ema_steps=32, ema_decay=0.99998)
    adjust = 1 * 128 * 32 / 600
    assert ema_decay_for(r) == pytest.approx(1 - min(1.0, (1 - 0.99998) * adjust))
    assert ema_decay_for(r, world_size=8) == pytest.approx(1 - min(1.0, (1 - 0.99998) * 8 * adjust))
    assert ema_decay_for(r.replace(ema_adjust=False)) == 0.99998
    assert ema_decay_for(Recipe(epochs=1, batch_size=512, ema_steps=32, ema_decay=0.9)) == 0.0  # alpha capped at 1


def test_ema_average_matches_torchvisions_update_rule():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    model = torch.nn.Linear(3, 2)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    expected = None
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update_parameters(model)
        # torchvision's ExponentialMovingAverage (an AveragedModel too): the first update
        # copies the weights, later ones average decay·ema + (1 − decay)·weights
        w = model.weight.detach().clone()
        expected = w if expected is None else 0.9 * expected + 0.1 * w
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    ema.n_averaged.fill_(0)              # what the warmup reset does: the next update copies again
    ema.update_parameters(model)
    assert torch.equal(ema.module.weight, model.weight)


@pytest.mark.parametrize("scheduler", ["cosine", "step"])
def test_warmup_and_schedule_match_torchvision_at_every_epoch(scheduler):
    """Our lr is stepped per iteration; at each epoch boundary it equals torchvision's
    reference SequentialLR(LinearLR warmup, main) stepped per epoch."""
    r = Recipe(epochs=12, warmup_epochs=3, warmup_start_factor=0.01, scheduler=scheduler, step_size=4, gamma=0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warm = LinearLR(opt, start_factor=0.01, total_iters=3)
    main = CosineAnnealingLR(opt, T_max=12 - 3) if scheduler == "cosine" else StepLR(opt, step_size=4, gamma=0.1)
    ref = SequentialLR(opt, [warm, main], milestones=[3])
    factor = lr_multiplier(r, steps_per_epoch=7)
    per_epoch = lr_multiplier(r.replace(lr_step="epoch"), steps_per_epoch=7)
    for epoch in range(12):
        assert factor(epoch * 7) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), epoch
        # lr_step: epoch holds torchvision's value through every iteration of the epoch
        for step in range(epoch * 7, epoch * 7 + 7):
            assert per_epoch(step) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), (epoch, step)
        opt.step()
        ref.step()
    assert factor(3) > 10 * per_epoch(3) and per_epoch(3) == pytest.approx(0.01)   # mid first epoch: ramping vs held
    from fgvcbench_plugins.recipe import base
    assert base(Recipe()).lr_step == "epoch" and "lr_step" not in Recipe().to_dict()   # old run ids kept


def test_repeated_augmentation_order():
    order = epoch_order(12, 4, torch.Generator().manual_seed(0))
    assert len(order) == 12 and len(set(order.tolist())) == 3
    assert all(len(set(order[i:i + 4].tolist())) == 1 for i in range(0, 12, 4))


def test_ablation_plan_rows_and_comparisons():
    plan = AblationPlan(method="recipe", order=["base", "cosine", "label_smoothing"], extra=["mixup_cutmix"])
    assert plan.rows() == [("base", ["base"]), ("cosine", ["base", "cosine"]),
                           ("label_smoothing", ["base", "cosine", "label_smoothing"]),
                           ("+mixup_cutmix", ["base", "cosine", "label_smoothing", "mixup_cutmix"])]
    assert plan.compare("cosine", "cumulative") == (["base"], ["base", "cosine"])
    assert plan.compare("cosine", "leave-one-out") == (["base", "label_smoothing"], ["base", "cosine", "label_smoothing"])
    assert plan.compare("autoaugment", "cumulative") == (plan.order, plan.order + ["autoaugment"])
    assert plan.label(["base", "cosine"]) == "steps:cosine"
    assert plan.label(["base", "label_smoothing"]) == "steps:-cosine"
    assert plan.label(plan.order + ["ema"]) == "steps:+ema"


def test_ablation_table_pairs_seeds_and_marks_times_of_a_shared_device():
    from fgvcbench.report.ablation import ablation_table, render_ablation

    def run(steps, seed, top1, shared=None):
        cost = {"device_seconds": 50.0, "train_seconds": 40.0, **({"device_shared_by": shared} if shared else {})}
        return {"status": "ok", "metrics": {"top1": top1}, "cost": cost, "provenance": {"device": "cuda:0"},
                "spec": {"method": "recipe", "dataset": {"name": "cub"}, "backbone": {"name": "r"}, "seed": seed,
                         "params": {"steps": steps}}}
    plan = AblationPlan(method="recipe", order=["base", "cosine"], extra=[])
    records = [run(["base"], 0, 60.0), run(["base"], 1, 62.0),
               run(["base", "cosine"], 0, 61.0, shared=2), run(["base", "cosine"], 1, 64.0)]
    df = ablation_table(records, plan, "cub", "r")
    assert df["incremental"].tolist()[1] == pytest.approx(1.5) and df["shared_by"].tolist() == [1, 2]
    base, cosine = render_ablation(df).splitlines()[2:4]
    assert "GPU s / run" in render_ablation(df) and "| 50 " in base and "50 (shared by 2)" in cosine
    # a seed another command added to one row, and a run of another scale: a suite's table leaves them out
    extra = run(["base", "cosine"], 2, 90.0)
    other = run(["base"], 0, 10.0)
    for r in records + [extra]:
        r["spec"]["scale"] = "short"
    other["spec"]["scale"] = "smoke"
    with pytest.raises(ValueError, match="2 setups"):                     # never two scales in one row
        ablation_table(records + [extra, other], plan, "cub", "r")
    suite = ablation_table(records + [extra, other], plan, "cub", "r", scale="short", seeds=[0, 1])
    assert suite["n"].tolist() == [2, 2] and suite["top1_mean"].tolist() == pytest.approx([61.0, 62.5])
    # seed 2 finished one row only: every row keeps to the seeds all rows finished, and says so
    short = ablation_table(records + [extra], plan, "cub", "r")
    assert short["n"].tolist() == [2, 2] and short.attrs == {"seeds": [0, 1], "left_out": [2], "not_yet": [],
                                                           "short": []}
    assert "Left out: seed 2" in render_ablation(short)
    # only the first row has finished (an interrupted pass): the line does not claim the others share its seeds
    first = ablation_table([r for r in records if r["spec"]["params"]["steps"] == ["base"]], plan, "cub", "r")
    assert first["n"].tolist() == [2, 0] and first.attrs["not_yet"] == ["cosine"]
    assert render_ablation(first).splitlines()[-1] == \
        "Seeds: 0, 1 (every row with a successful run, paired by seed). No successful run yet: cosine."
    # rows of two setups (another lr in the second row's recipe): never paired into a gain
    other_lr = [run(["base", "cosine"], s, 70.0 + s) for s in (0, 1)]
    for r in other_lr:
        r["spec"]["recipe"] = {"lr": 0.5}
    with pytest.raises(ValueError, match="rows of the recipe ablation on cub · r come from 2 setups"):
        ablation_table(records[:2] + other_lr, plan, "cub", "r")


def test_ablation_rows_share_their_seeds_and_count_failures():
    # a diverged seed in one row: the rows' means and the gains beside them are over the same
    # seeds (before, the row's mean had two seeds and its gain three), and the row says it failed
    from fgvcbench.report.ablation import ablation_table, render_ablation

    def run(steps, seed, top1, status="ok"):
        return {"status": status, "metrics": {"top1": top1}, "cost": {}, "provenance": {"device": "cpu"},
                "spec": {"method": "recipe", "dataset": {"name": "d"}, "backbone": {"name": "r"}, "seed": seed,
                         "params": {"steps": steps}}}
    plan = AblationPlan(method="recipe", order=["base", "a", "b"], extra=[])
    records = [run(["base"], s, v) for s, v in enumerate([68.0, 69.0, 70.0])] + \
              [run(["base", "a"], 0, 71.0), run(["base", "a"], 1, 70.0), run(["base", "a"], 2, 0.0, "diverged")] + \
              [run(["base", "a", "b"], s, v) for s, v in enumerate([72.0, 73.0, 60.0])]
    df = ablation_table(records, plan, "d", "r")
    assert df["n"].tolist() == [2, 2, 2] and df["failed"].tolist() == [0, 1, 0]
    assert df["top1_mean"].tolist() == pytest.approx([68.5, 70.5, 72.5])
    # each gain is the difference of the means printed beside it
    assert df["incremental"].tolist()[1:] == pytest.approx([2.0, 2.0]) and df["absolute"].tolist()[2] == 4.0
    text = render_ablation(df)
    assert "70.50 ± 0.71 (2), 1 failed" in text and "Left out: seed 2" in text
    # an extra row that failed a shared seed: its mean and gains are over fewer seeds, and the line says so
    plan = AblationPlan(method="recipe", order=["base", "a"], extra=["mix", "never"])
    records = [run(["base"], s, v) for s, v in enumerate([68.0, 69.0, 70.0])] + \
              [run(["base", "a"], s, v) for s, v in enumerate([71.0, 70.0, 72.0])] + \
              [run(["base", "a", "mix"], 0, 73.0), run(["base", "a", "mix"], 1, 0.0, "failed"),
               run(["base", "a", "mix"], 2, 75.0), run(["base", "a", "never"], 1, 0.0, "failed")]
    df = ablation_table(records, plan, "d", "r")
    assert df["n"].tolist() == [3, 3, 2, 0] and df["incremental"].tolist()[2] == pytest.approx(2.5)
    assert df.attrs["short"] == [("+mix", [0, 2])] and df.attrs["not_yet"] == ["+never"]
    assert render_ablation(df).splitlines()[-1] == (
        "Seeds: 0, 1, 2 (paired by seed; +mix over seeds 0, 2 only, its gains too). No successful run yet: +never.")


def test_the_run_ablation_tables_name_a_dataset_under_two_options_apart(tmp_path, runner):
    # one dataset twice, under other options: two tables, two charts, CSV rows told apart, with their seeds
    get_registry(refresh=True)
    one = "{name: synthetic, options: {coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40%s}}"
    suite = write_suite(tmp_path, f"""
        name: two_views
        output: {tmp_path / 'out'}
        scale: smoke
        seeds: [3]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 8}}
        datasets: [{one % ''}, {one % ', difficulty: 0.9'}]
        backbones: [test_resnet]
        ablation:
          steps: [base, cosine]
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    for difficulty in ("0.5", "0.9"):   # only the option that differs
        assert f"recipe ablation · synthetic (difficulty={difficulty}) · test_resnet" in result.output
    charts = sorted(p.name for p in (tmp_path / "out").glob("ablation-*.png"))
    assert charts == ["ablation-synthetic_difficulty_0.5-test_resnet.png",
                      "ablation-synthetic_difficulty_0.9-test_resnet.png"], charts
    import csv
    rows = list(csv.DictReader((tmp_path / "out" / "ablation.csv").open()))
    assert len(rows) == 4 and len({r["dataset"] for r in rows}) == 2
    assert {r["seeds"] for r in rows} == {"3"} and {r["scale"] for r in rows} == {"smoke"}
    assert len({(r["dataset"], r["config"]) for r in rows}) == 4 and all(r["config"] for r in rows)


def test_ablate_then_run_reuses_runs_and_prints_the_table(tmp_path, runner):
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        name: tiny_ablation
        output: {tmp_path / 'out'}
        seeds: [0, 1]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 8}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}}}]
        backbones: [test_resnet]
        ablation:
          steps: [base, cosine, label_smoothing]
          extra: [mixup_cutmix]
        """)
    result = runner.invoke(app, ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Δ top-1 (label_smoothing)" in result.output and "n = 2 paired seeds" in result.output
    assert f"records in {tmp_path / 'out'}/runs" in result.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert sorted(r["spec"]["variant"] for r in records) == ["steps:cosine"] * 2 + ["steps:label_smoothing"] * 2
    applied = next(r for r in records if r["spec"]["variant"] == "steps:label_smoothing")["notes"]["applied_recipe"]
    assert applied["label_smoothing"] == 0.1 and applied["scheduler"] == "cosine" and applied["epochs"] == 1
    full = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert full.exit_code == 0, full.output
    assert "4 ran, 4 resumed" in full.output                    # ablate's runs were reused
    assert "| +mixup_cutmix" in full.output and "incremental" in full.output
    csv = (tmp_path / "out" / "ablation.csv").read_text().splitlines()
    assert csv[0].startswith("step,n,failed,top1_mean") and len(csv) == 5
    assert (tmp_path / "out" / "ablation-synthetic-test_resnet.png").stat().st_size > 1000
    loo = runner.invoke(app, ["ablate", "--step", "cosine", "--mode", "leave-one-out", "--suite", str(suite),
                              "--no-progress"])
    assert loo.exit_code == 0 and "base → label_smoothing" in loo.output
    # a record of the same names but another configuration (here: other weights) in the same
    # folder must not stand in for the suite's own runs
    runs = tmp_path / "out" / "runs"
    before = runner.invoke(app, ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress"])
    for path in list(runs.glob("*.json")):
        foreign = json.loads(path.read_text())
        foreign.update(run_id="f" + foreign["run_id"], metrics={**foreign["metrics"], "top1": 99.0})
        foreign["spec"]["backbone"] = {**foreign["spec"]["backbone"], "pretrained": "/elsewhere/weights.pth"}
        foreign["provenance"]["finished"] = "2999-01-01T00:00:00+00:00"
        (runs / f"{foreign['run_id']}.json").write_text(json.dumps(foreign))
    after = runner.invoke(app, ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress"])
    delta = lambda out: next(line for line in out.splitlines() if line.startswith("Δ top-1"))  # noqa: E731
    assert after.exit_code == 0 and delta(after.output) == delta(before.output) and "99.00" not in after.output
    table = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert "99.00" not in table.output.split("recipe ablation")[1]
    # a seed that diverged on one side is not paired, and ablate names it rather than dropping it quietly
    diverged = next(p for p in runs.glob("*.json") if not p.name.startswith("f")
                    and json.loads(p.read_text())["spec"]["variant"] == "steps:label_smoothing"
                    and json.loads(p.read_text())["spec"]["seed"] == 1)
    record = json.loads(diverged.read_text())
    record.update(status="diverged", metrics={**record["metrics"], "top1": None})
    diverged.write_text(json.dumps(record))
    one = runner.invoke(app, ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress"])
    assert one.exit_code == 0, one.output
    assert "Left out: seed 1 (no successful run with the step)" in one.output and "n = 1 paired seed)" in one.output


def test_ablate_reuses_the_suites_own_recipe_runs_and_alternates_the_sides(tmp_path, runner, monkeypatch):
    """`methods: [recipe]` runs the full recipe under the variant `default`; `ablate` on the
    same suite finds that computation instead of training it again under another label,
    and queues the two sides seed by seed."""
    import fgvcbench.executors as executors
    get_registry(refresh=True)
    suite = write_suite(tmp_path, f"""
        name: tiny_recipe
        output: {tmp_path / 'out'}
        seeds: [0, 1]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 8}}
        datasets: [{{name: synthetic, options: {{coarse: 2, fine: 2, train_per_class: 6, test_per_class: 2, image_size: 40}}}}]
        backbones: [test_resnet]
        methods: [{{name: recipe, params: {{steps: [base, cosine]}}}}]
        """)
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    real, order = executors.run_suite, []

    def watch(s, *args, **kwargs):
        order.extend((spec.seed, spec.params["steps"][-1], spec.variant) for spec in s.runs)
        return real(s, *args, **kwargs)
    monkeypatch.setattr(executors, "run_suite", watch)
    result = runner.invoke(app, ["ablate", "--step", "cosine", "--suite", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    variants = sorted(json.loads(r.read_text())["spec"]["variant"] for r in (tmp_path / "out" / "runs").glob("*.json"))
    assert variants == ["default", "default", "steps:base", "steps:base"]   # the `with` side: the suite's runs
    assert order == [(0, "base", "steps:base"), (0, "cosine", "default"), (1, "base", "steps:base"),
                     (1, "cosine", "default")]


def test_ablate_bad_input(runner):
    get_registry(refresh=True)
    bad = runner.invoke(app, ["ablate", "--step", "label_smothing"])
    assert bad.exit_code == 2 and "did you mean 'label_smoothing'" in bad.output
    mode = runner.invoke(app, ["ablate", "--step", "cosine", "--mode", "sideways"])
    assert mode.exit_code == 2 and "--mode 'sideways' — use cumulative or leave-one-out" in mode.output


def test_ablate_without_a_suite_runs_the_embedded_default_with_the_options_given(tmp_path, runner, monkeypatch):
    """No --suite: the embedded synthetic × EfficientNet-Lite0 suite, with --seeds (`4,` is
    seed 4), --output and --device applied; the runs themselves are not trained here."""
    import fgvcbench.executors as executors
    seen = []
    monkeypatch.setattr(executors, "run_suite", lambda suite, registry, **kw: seen.append(suite)
                        or executors.SuiteOutcome())
    get_registry(refresh=True)
    result = runner.invoke(app, ["ablate", "--step", "cosine", "--seeds", "4,", "--output", str(tmp_path / "abl"),
                                 "--device", "cpu", "--no-progress"], terminal_width=200)
    assert result.exit_code == 0, result.output
    (suite,) = seen
    assert suite.name == "ablation_default" and str(suite.output) == str(tmp_path / "abl") and suite.device == "cpu"
    runs = sorted(suite.runs, key=lambda r: len(r.params["steps"]))
    assert [r.seed for r in runs] == [4, 4]
    assert {(r.dataset["name"], r.backbone["name"], r.backbone["pretrained"]) for r in runs} == \
        {("synthetic", "tf_efficientnet_lite0", True)}
    assert [r.params["steps"] for r in runs] == [["base", "large_batch_warmup", "trivial_augment"],
                                                 ["base", "large_batch_warmup", "trivial_augment", "cosine"]]
    assert "ablate cosine (cumulative) · synthetic · tf_efficientnet_lite0 · seeds" in result.output
    # its 5 epochs under the article's 5 warmup epochs: said before anything trains
    assert "both sides warm up for 5 epochs of 5" in " ".join(result.output.split())
    for option, value, needle in (("--dataset", "cub", "dataset 'cub' is not in the suite — it has synthetic"),
                                  ("--backbone", "resnet50", "backbone 'resnet50' is not in the suite")):
        bad = runner.invoke(app, ["ablate", "--step", "cosine", option, value], terminal_width=200)
        assert bad.exit_code == 2 and needle in bad.output and "Traceback" not in bad.output


def test_unknown_step_in_a_suite_is_a_suite_error(tmp_path, runner):
    get_registry(refresh=True)
    suite = write_suite(tmp_path, """
        datasets: [synthetic]
        backbones: [test_resnet]
        methods: [{name: recipe, params: {steps: [base, cosin]}}]
        """)
    result = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert result.exit_code == 2 and ":3:" in result.output and "did you mean 'cosine'" in result.output


def test_no_decay_norm_exempts_only_normalisation_layers_as_torchvision():
    """torchvision's ``--norm-weight-decay 0`` (split_normalization_params): BatchNorm /
    LayerNorm / GroupNorm weights and biases get no decay; conv and linear biases keep it."""
    import torch.nn as nn

    from fgvcbench.engine.train import build_optimizer
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4 * 4 * 4),
                          nn.Linear(64, 2))
    opt = build_optimizer(list(model.named_parameters()), Recipe(weight_decay=1e-3, no_decay_norm=True), model)
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
    norm = {id(p) for m in (model[1], model[3]) for p in m.parameters()}
    assert no_decay == norm
    assert {id(model[0].bias), id(model[4].bias), id(model[0].weight), id(model[4].weight)} == decay
    plain = build_optimizer(list(model.named_parameters()), Recipe(weight_decay=1e-3), model)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 1e-3


def test_fixres_tests_at_the_size_after_torchvisions_val_resize():
    """FixRes as torchvision runs it: train crops at 176/224 of the size; the test view
    resizes to 232/224 of it and centre-crops the size; the stored images serve both."""
    from fgvcbench.data.pipeline import load_size_for
    from fgvcbench.engine.augment import BatchAugmenter
    r = get_registry().recipe_steps["fixres"].apply(Recipe(image_size=224))
    assert (r.image_size, r.eval_image_size, r.eval_resize_size) == (176, 224, 232)
    assert load_size_for(r.data_size) >= 232
    seen = []
    import fgvcbench.engine.augment as augment
    real = augment.F.interpolate
    try:
        augment.F.interpolate = lambda x, size, **kw: seen.append(size) or real(x, size=size, **kw)
        out = BatchAugmenter(r, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), torch.Generator()).eval(
            torch.zeros(2, 3, 256, 256, dtype=torch.uint8))
    finally:
        augment.F.interpolate = real
    assert seen == [(232, 232)] and out.shape == (2, 3, 224, 224)


def test_a_step_that_trains_alike_at_this_budget_is_named():
    """The article tuned its steps for 600 epochs: at 5 epochs with 5 warmup epochs
    ``cosine`` never acts, and the adjusted EMA decay comes to 0. A step that changes the
    recipe but not the training is named, so nobody reads seed noise as its effect."""
    from fgvcbench.engine.train import inert_change
    steps = get_registry(refresh=True).recipe_steps
    def after(names, epochs):
        r = Recipe(epochs=epochs)
        for name in names:
            r = steps[name].apply(r)
        return r
    warm = ["base", "large_batch_warmup", "trivial_augment"]
    short = inert_change(after(warm, 5), after(warm + ["cosine"], 5))
    assert short is not None and "it changes scheduler, but over 5 epochs (warmup 5)" in short
    assert inert_change(after(warm, 30), after(warm + ["cosine"], 30)) is None   # 25 epochs of cosine
    # the lr moves once per epoch (base's lr_step: epoch, torchvision's): cosine's first epoch is at
    # factor 1, as StepLR's, so one epoch after the warmup is still alike; two are not
    assert inert_change(after(warm, 6), after(warm + ["cosine"], 6)) is not None
    assert inert_change(after(warm, 7), after(warm + ["cosine"], 7)) is None
    full = ["base", "large_batch_warmup", "trivial_augment", "cosine", "label_smoothing", "random_erasing"]
    ema = inert_change(after(full, 5), after(full + ["ema"], 5))
    assert ema is not None and "EMA decay adjusts to 0" in ema
    assert inert_change(after(full, 30), after(full + ["ema"], 30)) is None      # decay 0.18 there
    assert inert_change(after(full, 5), after(full + ["ema_unadjusted"], 5)) is None
    # a step that changes anything beyond the schedule is never called inert
    assert inert_change(after(warm, 5), after(warm + ["label_smoothing"], 5)) is None
    assert inert_change(Recipe(epochs=5), Recipe(epochs=5, scheduler="step", step_size=10)) is not None
    # moving a constant lr per epoch instead of per iteration changes nothing either
    assert inert_change(Recipe(epochs=5), Recipe(epochs=5, lr_step="epoch")) is not None
    assert inert_change(Recipe(epochs=5, scheduler="cosine"), Recipe(epochs=5, scheduler="cosine",
                                                                      lr_step="epoch")) is None
    assert inert_change(Recipe(epochs=5), Recipe(epochs=5, scheduler="step", step_size=2)) is None
    # an EMA kept at decay 0 on purpose (ema_adjust: false) is not "adjusted to 0"
    assert inert_change(Recipe(epochs=5), Recipe(epochs=5, ema_steps=4, ema_decay=0.0, ema_adjust=False)) is None
    # a recipe no run can use is left to the run's own error; a budget no step idles at is not searched
    assert inert_change(Recipe(epochs=5), Recipe(epochs=5, scheduler="step", step_size=0)) is None
    assert inert_change(Recipe(epochs=10**6), Recipe(epochs=10**6, scheduler="step", step_size=10**7)) is None


# (a recipe where the fields have no effect, those fields set away from their defaults):
# one pair per rule of INERT_WHEN
WITHOUT_EFFECT = [
    (dict(augment="standard"), dict(policy_p=0.5, policy_interpolation="bilinear", policy_before_crop=True)),
    (dict(augment="flip"), dict(crop_scale_min=0.3)),
    (dict(augment="none"), dict(rotation_degrees=30.0, crop_scale_min=0.3)),
    (dict(scheduler="cosine"), dict(step_size=1, gamma=0.5)),
    (dict(scheduler="step", step_size=1, gamma=0.5), dict(warmup_start_factor=0.2)),
    (dict(), dict(lr_step="epoch")),
    (dict(), dict(ema_decay=0.5, ema_adjust=False)),
    (dict(random_erasing=0.0), dict(random_erasing_value="random")),
    (dict(optimizer="adamw", lr=1e-3), dict(momentum=0.2, nesterov=False)),
    (dict(momentum=0.0), dict(nesterov=False)),
    (dict(weight_decay=0.0), dict(no_decay_norm=True)),
    (dict(), dict(stop_on="loss", min_epochs=2)),
    (dict(eval_resize_size=20), dict(eval_crop_pct=0.5)),
]


def _weights_after(recipe):
    from test_engine import small_model, toy_data

    from fgvcbench.engine.train import fit
    torch.manual_seed(0)
    result = fit(small_model(), toy_data(), recipe, device=torch.device("cpu"), seed=5)
    return result.model.state_dict(), result.metrics


def test_the_rules_for_fields_without_effect_cover_every_one_of_them():
    from fgvcbench.engine.recipe import INERT_WHEN
    ruled = {name for _, names, _ in INERT_WHEN for name in names}
    assert ruled == {name for _, twin in WITHOUT_EFFECT for name in twin}
    assert len(WITHOUT_EFFECT) == len(INERT_WHEN)


@pytest.mark.parametrize("base, twin", WITHOUT_EFFECT, ids=lambda d: ",".join(d) or "defaults")
def test_fields_a_recipe_leaves_without_effect_train_bit_for_bit_alike(base, twin):
    """What ``Recipe.effective`` (and so the ablation note) calls without effect is: the
    engine trains the twin to the same weights and metrics, in the fast pipeline, and the
    classic pipeline's transforms give the same pixels."""
    plain = Recipe(epochs=2, image_size=16, batch_size=8, lr=0.05).replace(**base)
    other = plain.replace(**twin)
    assert not plain.validate() and not other.validate()
    assert set(other.inert_fields()) == set(twin) and other.effective() == plain
    (weights, metrics), (weights2, metrics2) = _weights_after(plain), _weights_after(other)
    assert metrics == metrics2
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)
    from PIL import Image

    from fgvcbench.data.classic import classic_transform
    image = Image.fromarray(torch.randint(0, 256, (30, 40, 3), generator=torch.Generator().manual_seed(1),
                                          dtype=torch.uint8).numpy())
    for train in (True, False):
        views = []
        for r in (plain, other):
            torch.manual_seed(3)
            views.append(classic_transform(r, (0.5,) * 3, (0.25,) * 3, train)(image))
        assert torch.equal(*views)


def test_the_same_fields_do_change_training_where_the_rule_does_not_hold():
    """The comparison above can fail: lift each rule's condition and the twin trains apart."""
    lifted = [(dict(augment="trivial_augment"), dict(policy_p=0.5)), (dict(augment="standard"), dict(crop_scale_min=0.3)),
              (dict(scheduler="step", step_size=5), dict(step_size=1, gamma=0.5)),
              (dict(random_erasing=0.5), dict(random_erasing_value="random")), (dict(), dict(nesterov=False))]
    for base, twin in lifted:
        plain = Recipe(epochs=2, image_size=16, batch_size=8, lr=0.05).replace(**base)
        other = plain.replace(**twin)
        assert not other.inert_fields() and other.effective() != plain.effective()
        weights, weights2 = _weights_after(plain)[0], _weights_after(other)[0]
        assert not all(torch.equal(weights[k], weights2[k]) for k in weights), twin


def test_a_step_that_changes_only_fields_without_effect_is_named():
    """A third party's step that only keeps the EMA decay as given, ordered before any EMA;
    one that sets an erasing value and a policy probability before erasing or a policy: the
    step's row would measure seed noise, and the note says what it needs."""
    from fgvcbench.engine.train import inert_change
    steps = get_registry(refresh=True).recipe_steps
    before = steps["base"].apply(Recipe(epochs=30))
    why = inert_change(before, before.replace(ema_adjust=False))
    assert why is not None and "it changes ema_adjust, which has no effect here (ema_steps is 0 (no EMA))" in why
    why = inert_change(before, before.replace(random_erasing_value="random", policy_p=0.5))
    assert "policy_p, random_erasing_value, which have no effect here" in why
    assert "augment: standard runs no policy; random_erasing is 0" in why
    after_ema = steps["ema"].apply(before)
    assert inert_change(after_ema, after_ema.replace(ema_adjust=False)) is None
    ta = steps["trivial_augment"].apply(before)
    assert inert_change(ta, ta.replace(policy_p=0.5)) is None


def test_a_third_party_step_is_ablated_and_an_inert_one_is_named(tmp_path, runner, registry_with):
    """A step from another distribution (the recipe-step hook) works in ``ablate`` as the
    built-in ones do; a step that leaves the training alike gets a note before it trains."""
    import types

    from fgvcbench.api import RecipeStep, hookimpl
    mod = types.ModuleType("my_steps")
    mod.fgvcbench_recipe_steps = hookimpl(lambda: [
        RecipeStep(name="my_smoothing", apply=lambda r: r.replace(label_smoothing=0.2)),
        RecipeStep(name="my_long_step", apply=lambda r: r.replace(scheduler="step", step_size=2))])
    registry_with(mod)
    suite = tiny_suite(tmp_path, scale=None, extra="ablation: {steps: [base, my_smoothing], extra: [my_long_step]}",
                       methods="[{name: recipe, variants: [base], train: {epochs: 3}}]")   # its own budget
    result = runner.invoke(app, ["ablate", "--step", "my_smoothing", "--suite", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Δ top-1 (my_smoothing)" in result.output and "base → my_smoothing" in result.output
    assert "note: 'my_smoothing'" not in result.output   # not inert (batch_size 8 → 32 by base: its own note)
    assert "note: ablate: its recipe steps replace 1 train: setting — batch_size: 8 → 32 (step 'base')" in " ".join(result.output.split())
    inert = runner.invoke(app, ["ablate", "--step", "my_long_step", "--suite", str(suite), "--no-progress"])
    assert inert.exit_code == 0, inert.output
    text = " ".join(inert.output.split())
    assert "note: 'my_long_step' at this budget: it changes scheduler, step_size, but over 1 epoch (warmup 0)" in text
    assert "Δ top-1 (my_long_step)" in text
    table = runner.invoke(app, ["run", str(suite), "--no-progress"])   # the ablation's runs are done
    assert table.exit_code == 0 and "1 ran, 3 resumed" in table.output, table.output
    # a record names the plugin of each step it applied, and of its backbone (the timm family's spec)
    record = next(json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")
                  if json.loads(p.read_text())["spec"]["variant"] == "steps:my_smoothing")
    used = record["provenance"]["plugins"]
    assert used["recipe step my_smoothing"]["name"] == "my_steps" and used["recipe step base"]["name"] == "recipe"
    assert used["backbone test_resnet"]["name"] == "backbones"
    assert used["backbone test_resnet"]["distribution"] == "fgvcbench"
    notes = [line for line in table.output.splitlines() if line.startswith("note: row")]
    assert len(notes) == 1 and notes[0].startswith("note: row +my_long_step: it changes scheduler, step_size")


def _forgot_return(r):
    r.replace(weight_decay=5e-4)


def _assigns(r):
    r.weight_decay = 5e-4
    return r


def _raises(r):
    raise KeyError("weight_decay")


@pytest.mark.parametrize("apply, said", [
    (_forgot_return, "recipe step 'bad_step' (plugin 'my_bad_steps') returned None, not a Recipe — return a new "
                     "one: recipe.replace(field=value)"),
    (_assigns, "recipe step 'bad_step' (plugin 'my_bad_steps') assigns to the recipe it is given "
               "(FrozenInstanceError: cannot assign to field 'weight_decay') — a Recipe is frozen: return a new one, "
               "recipe.replace(field=value)"),
    (_raises, "recipe step 'bad_step' (plugin 'my_bad_steps') raised KeyError: 'weight_decay' — fix the step, or "
              "drop it from the steps"),
])
def test_a_step_that_cannot_apply_stops_the_suite_at_its_line_before_any_run(tmp_path, runner, registry_with,
                                                                              apply, said):
    import types

    from fgvcbench.api import RecipeStep, hookimpl
    mod = types.ModuleType("my_bad_steps")
    mod.fgvcbench_recipe_steps = hookimpl(lambda: [RecipeStep(name="bad_step", apply=apply)])
    registry_with(mod)
    for extra, methods, where in (
            ("ablation: {steps: [base], extra: [bad_step]}", "[]", "ablation.extra[0]:"),
            ("", "[{name: recipe, params: {steps: [base, bad_step]}}]", "methods[0].params.steps:")):
        suite = tiny_suite(tmp_path, extra=extra, methods=methods)
        result = runner.invoke(app, ["run", str(suite), "--no-progress"])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert where in result.output and said in " ".join(result.output.split())
        assert not (tmp_path / "out" / "runs").exists()
    # ablate --step with a step outside the suite's order: the same line, before it trains
    suite = tiny_suite(tmp_path, extra="ablation: {steps: [base]}", methods="[]")
    result = runner.invoke(app, ["ablate", "--step", "bad_step", "--suite", str(suite), "--no-progress"])
    assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out" / "runs").exists()


def test_a_recipe_a_step_makes_unusable_names_the_step_and_what_to_change(tmp_path):
    from fgvcbench.errors import SuiteError
    from fgvcbench.suite import load_suite
    suite = write_suite(tmp_path, "datasets: [synthetic]\nbackbones: [test_resnet]\ntrain: {pipeline: classic}\n"
                                  "methods: [{name: recipe, params: {steps: [base, repeated_augmentation]}}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(suite, get_registry(refresh=True))
    assert info.value.key == "methods[0].params.steps"
    assert ("recipe step 'repeated_augmentation' sets repeated_augment to 4, and then repeated_augment 4 needs the "
            "fast pipeline") in str(info.value)
    assert str(info.value).endswith("— drop repeated_augmentation from the steps, or change pipeline under train:")


def test_every_step_describes_itself_in_full_sentences():
    """`fgvcbench plugins STEP` is how users find steps: a description is the docstring's
    first paragraph, not its first line cut mid-sentence."""
    from fgvcbench_plugins.recipe import STEPS
    for step in STEPS:
        assert step.description.endswith((".", ")")) and "\n" not in step.description, step.name
    described = {step.name: step.description for step in STEPS}
    assert "warmup" in described["large_batch_warmup"] and "torchvision" in described["ema"]


def test_the_warmup_note_gives_each_sides_own_epochs():
    from fgvcbench._cli_output import warmup_fills_run
    registry = get_registry(refresh=True)
    warm = ["base", "large_batch_warmup"]
    same = warmup_fills_run(registry, {"epochs": 3}, (warm, warm + ["cosine"]))
    assert same.startswith("both sides warm up for 5 epochs of 3")
    longer = warmup_fills_run(registry, {"epochs": 1}, (warm, warm + ["long_training"]))
    assert "the without side warms up for 5 epochs of 1; the with side warms up for 5 epochs of 4" in longer
    assert warmup_fills_run(registry, {"epochs": 30}, (warm, warm + ["cosine"])) is None


def test_repeated_augmentation_needs_the_fast_pipeline():
    from fgvcbench.api import Recipe
    problems = dict(Recipe(pipeline="classic", repeated_augment=4).validate())
    assert "needs the fast pipeline" in problems["repeated_augment"]
    assert "repeated_augment" not in dict(Recipe(repeated_augment=4).validate())


def test_a_note_names_the_train_settings_recipe_steps_overwrite(runner, tmp_path):
    from fgvcbench.suite import load_suite
    registry = get_registry()
    suite = tiny_suite(tmp_path, methods="[{name: recipe, params: {steps: [base, label_smoothing]}}, finetune]",
                       backbones="[pixels]", extra="")
    text = suite.read_text().replace("batch_size: 8}", "batch_size: 32, lr: 0.05, label_smoothing: 0.2}")
    suite.write_text(text)
    ((note, ids),) = load_suite(suite, registry).notes   # one note: finetune has no steps
    assert note.startswith("methods[0] (recipe, line ")
    # batch_size 32 is base's own value; lr: base sets 0.01, then label_smoothing 0.4
    assert "replace 2 train: settings — lr: 0.05 → 0.4 (step 'label_smoothing'); label_smoothing: 0.2 → 0.1 " \
           "(step 'label_smoothing')" in note
    assert "move lr, label_smoothing from the suite's train: to the train: of the methods entries" in note
    result = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert result.exit_code == 0 and "note: methods[0] (recipe, line" in " ".join(result.output.split())
    only = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "finetune"])   # not about its runs
    assert only.exit_code == 0 and "note:" not in only.output

    # the entry's own train: and the suite's, each with its fix; epochs and image_size scaled
    # by long_training and fixres are derived from train:, not replaced
    suite.write_text(text.replace(
        "methods: [{name: recipe, params: {steps: [base, label_smoothing]}}, finetune]",
        "methods: [{name: recipe, params: {steps: [base, long_training, fixres]}, train: {lr: 0.3}}]").replace(
        "lr: 0.05, label_smoothing: 0.2", "label_smoothing: 0.2"))
    ((note, _),) = load_suite(suite, registry).notes
    assert "replace 2 train: settings — label_smoothing: 0.2 → 0.0 (step 'base'); lr: 0.3 → 0.01 (step 'base')" \
        in note and "epochs" not in note and "image_size" not in note
    assert "remove lr from this entry's train: and move label_smoothing from the suite's train:" in note

    # a value a later step sets back to train:'s: nothing replaced
    suite.write_text(text.replace("lr: 0.05, label_smoothing: 0.2", "lr: 0.01").replace(
        "[base, label_smoothing]", "[large_batch_warmup, base, cosine]"))
    assert load_suite(suite, registry).notes == []


def test_ablate_names_the_train_settings_its_steps_overwrite(runner, tmp_path):
    suite = tiny_suite(tmp_path, methods="[recipe]", backbones="[pixels]")
    suite.write_text(suite.read_text().replace("batch_size: 8}", "batch_size: 8, label_smoothing: 0.3}"))
    result = runner.invoke(app, ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress",
                                 "--seeds", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "note: ablate: its recipe steps replace 2 train: settings — batch_size: 8 → 128 (step 'large_batch_warmup'); " \
           "label_smoothing: 0.3 → 0.1 (step 'label_smoothing')" in text


def test_a_one_seed_row_of_the_ablation_chart_is_marked_not_drawn_as_a_zero_spread(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure
    from fgvcbench.report.ablation import write_ablation_chart
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    import pandas as pd
    df = pd.DataFrame({"step": ["base", "cosine"], "n": [3, 1], "top1_mean": [60.0, 62.0],
                       "top1_std": [1.0, float("nan")], "incremental": [float("nan"), 2.0]})
    assert write_ablation_chart(df, tmp_path / "chart.png", "t")
    ax = saved[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "cosine (1 seed)"]
    assert [bar.get_hatch() for bar in ax.patches] == [None, "//"]

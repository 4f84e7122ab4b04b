"""`fgvcbench report`: the Markdown report, its figures, the ablation found from records
alone, and the most-confused pairs computed from the runs' saved test predictions."""

from __future__ import annotations

import json

from PIL import Image

from fgvcbench.cli import app
from fgvcbench.report.report import confused_pairs, find_ablations

from conftest import TINY_DATASET, write_suite


def _record(variant, steps, seed=0, dataset="synthetic", scale="short"):
    return {"status": "ok", "run_id": f"{variant}{seed}{scale}", "metrics": {"top1": 50.0},
            "spec": {"method": "recipe", "variant": variant, "seed": seed, "params": {"steps": steps},
                     "dataset": {"name": dataset, "options": {}}, "backbone": {"name": "b"}, "scale": scale}}


def test_ablation_plan_is_recovered_from_records():
    records = [_record("steps:base", ["base"]), _record("steps:cosine", ["base", "cosine"]),
               _record("steps:ema", ["base", "cosine", "ema"]), _record("steps:+mixup", ["base", "cosine", "ema", "mixup"]),
               _record("steps:+wd", ["base", "cosine", "ema", "wd"])]
    [(name, label, backbone, scale, _, plan)] = find_ablations(records)
    assert (name, label, backbone, scale) == ("synthetic", "synthetic", "b", "short")
    assert plan.order == ["base", "cosine", "ema"] and plan.extra == ["mixup", "wd"]
    assert find_ablations([_record("steps:base", ["base"])]) == []       # one row is not an ablation
    smoke = [_record(r["spec"]["variant"], r["spec"]["params"]["steps"], scale="smoke") for r in records]
    assert [a[3] for a in find_ablations(records + smoke)] == ["short", "smoke"]   # a table per scale


def test_an_ablation_of_another_setup_is_its_own_table(tmp_path):
    # the same steps and seeds from pretrained and from random weights: two tables, never one
    # whose base row averages two pretrained seeds with a scratch one
    from fgvcbench.report.report import write_report

    def rec(steps, seed, top1, pretrained):
        r = _record(f"steps:{steps[-1]}", steps, seed=seed)
        r["run_id"] += str(pretrained)
        r["metrics"]["top1"] = top1
        r["spec"]["backbone"]["pretrained"] = pretrained
        return r
    pre = [rec(["base"], s, v, True) for s, v in enumerate([80, 81, 79])] + \
          [rec(["base", "a"], s, v, True) for s, v in enumerate([82, 83, 81.5])]
    scratch = [rec(["base"], s, v, False) for s, v in enumerate([30, 32, 28])] + \
              [rec(["base", "a"], s, v, False) for s, v in enumerate([25, 26, 24])]
    found = find_ablations(pre + scratch)
    assert len(found) == 2 and len({f[4] for f in found}) == 2
    text = write_report(pre + scratch, [tmp_path], tmp_path / "rep").read_text()
    assert "80.00 ± 1.00 (3)" in text and "30.00 ± 2.00 (3)" in text           # each base row one setup
    assert "+2.17" in text and "-5.00" in text and "weights: random init" in text


def test_confused_pairs_count_both_directions():
    preds = [{"label": [0, 0, 1, 1, 2], "pred": [1, 0, 0, 2, 2]}, {"label": [0, 2], "pred": [1, 1]}]
    assert confused_pairs(preds) == [(0, 1, 3), (1, 2, 2)]


def test_report_from_a_suite_with_an_ablation(tmp_path, runner):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, f"""
        output: {out}
        seeds: [0, 1]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 16}}
        datasets: [{TINY_DATASET}]
        backbones: [test_resnet]
        methods: [finetune]
        ablation: {{method: recipe, steps: [base, cosine], extra: [label_smoothing]}}
        """)
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    predictions = sorted(out.glob("artifacts/*/predictions.json"))
    assert len(predictions) == 8                                   # every run keeps its test predictions
    saved = [json.loads(p.read_text()) for p in predictions]
    assert all(len(p["pred"]) == len(p["label"]) == len(p["paths"]) == 16 for p in saved)

    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    for heading in ("## Leaderboard", "## Recipe ablations", "| +label_smoothing", "## Accuracy against CPU-seconds",
                    "## synthetic", "Most-confused class pairs"):
        assert heading in text, heading
    a, b, n = confused_pairs(saved)[0]
    names = saved[0]["class_names"]
    assert f"| {names[a]} | {names[b]} | {n} |" in text
    assert "### synthetic · test_resnet · scale smoke\n\nSetup: weights: random init · epochs 1" in text
    assert "Seeds: 0, 1 (every row, paired by seed)." in text
    for figure in ("ablation-synthetic-test_resnet-smoke.png", "accuracy_vs_time-synthetic.png", "spread-synthetic.png",
                   "confusions-synthetic.png"):
        assert f"]({figure})" in text
        with Image.open(tmp_path / "rep" / figure) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200


    # a hand-edited predictions file is passed over: the report still builds from the others
    predictions[0].write_text("[1, 2]")
    predictions[1].write_text(json.dumps({**saved[1], "pred": saved[1]["pred"][:-1]}))
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep2"), "--baseline", "finetune",
                                 "--baseline", "recipe:steps:base", "--title", "Recipe study"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep2" / "report.md").read_text()
    assert text.startswith("# Recipe study\n") and "Most-confused class pairs" in text
    # the method-vs-baseline tables, one per --baseline: every other row against it, two seeds paired
    against = text.split("## Against finetune")[1].split("## Against recipe:steps:base")[0]
    assert against.count("· Δ ") == 3 and "| finetune " in against and "paired by seed" in against
    against_base = text.split("## Against recipe:steps:base")[1].split("## Recipe ablations")[0]
    assert against_base.count("· Δ ") == 3 and "paired by seed" in against_base


def test_report_on_a_missing_folder_says_what_to_pass(tmp_path, runner):
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 2 and "results directory not found" in result.output
    assert "Traceback" not in result.output


def test_two_entries_of_one_dataset_get_their_own_sections_and_charts_and_images_are_found_elsewhere(tmp_path, runner):
    from fgvcbench.report.report import locate
    out = tmp_path / "out"
    one = "{name: synthetic, options: {coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40%s}}"
    suite = write_suite(tmp_path, f"""
        output: {out}
        seeds: [0]
        device: cpu
        train: {{epochs: 1, image_size: 32, batch_size: 16}}
        datasets: [{one % ''}, {one % ', difficulty: 0.9'}]
        backbones: [test_resnet]
        methods: [finetune]
        """)
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## synthetic (difficulty=0.5)" in text and "## synthetic (difficulty=0.9)" in text
    charts = sorted(p.name for p in (tmp_path / "rep").glob("accuracy_vs_time-*.png"))
    assert charts == ["accuracy_vs_time-synthetic_difficulty_0.5.png", "accuracy_vs_time-synthetic_difficulty_0.9.png"]
    # records written on another machine: the image's path there, found by its tail under --data-root
    image = json.loads(next(out.glob("artifacts/*/predictions.json")).read_text())["paths"][0]
    elsewhere = "/elsewhere/home" + image
    assert locate(elsewhere) == elsewhere and locate(elsewhere, (str(tmp_path / "nope"),)) == elsewhere
    assert locate(elsewhere, ("/",)) == image
    here, tail = image.split("/datasets/", 1)
    assert locate("/home/someone/.cache/fgvcbench/datasets/" + tail, (here,)) == f"{here}/datasets/{tail}"
    bad = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep2"), "--data-root", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--data-root" in bad.output and "no such folder" in bad.output


def test_class_names_cut_in_figures_say_so():
    from fgvcbench.report.report import _short
    assert _short("Black_footed_Albatross") == "Black_footed_Alba…" and len(_short("x" * 40)) == 18
    assert _short("Laysan_Albatross") == "Laysan_Albatross"   # what fits stays whole


def test_the_report_says_what_tells_rows_named_alike_apart(tmp_path):
    from fgvcbench.report.report import write_report
    one, two = _record("default", ["base"]), _record("default", ["base", "cosine"])
    two["run_id"] += "-two"
    text = write_report([one, two], [tmp_path], tmp_path / "rep").read_text()
    assert "- config " in text and "(recipe:default on " in text
    assert ": params.steps=[base, cosine]" in text and ": params.steps=[base]" in text

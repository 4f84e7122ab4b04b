"""Leaderboards: aggregation over seeds, failures, de-duplication, formats."""

from __future__ import annotations

import io
import json
import statistics

import pandas as pd
import pytest
from scipy import stats

from fgvcbench.cli import app
from fgvcbench.report.leaderboard import (build_leaderboard, config_key, latex_symbols, load_records, render,
                                          render_rich_table, write_leaderboard_csv)


def record(method, seed, top1, status="ok", variant="default", finished="2026-01-01T00:00:00", lr=0.01):
    spec = {"suite": "s", "dataset": {"name": "cub", "options": {}}, "backbone": {"name": "resnet50", "pretrained": True},
            "method": method, "variant": variant, "seed": seed, "scale": "short", "params": {}, "recipe": {"lr": lr},
            "data_root": "/data"}
    return {"schema": 1, "run_id": f"{method}-{variant}-{seed}-{lr}", "status": status, "spec": spec,
            "metrics": {"top1": top1, "top1_last": top1 - 1, "mean_class_acc": top1 - 0.5} if status == "ok" else {},
            "cost": {"train_seconds": 10.0 * (seed + 1), "images_per_second": 100.0},
            "provenance": {"finished": finished}, "error": None if status == "ok" else "boom"}


def write(dirpath, records):
    runs = dirpath / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for r in records:
        (runs / f"{r['run_id']}.json").write_text(json.dumps(r))


@pytest.fixture
def results(tmp_path):
    a = [record("finetune", s, v) for s, v in enumerate([88.0, 89.0, 87.5])]
    b = [record("finernet", s, v) for s, v in enumerate([89.5, 90.0, 88.9])] + [record("finernet", 3, 0, "failed")]
    write(tmp_path / "one", a + b)
    (tmp_path / "one" / "runs" / "broken.json").write_text("{")
    (tmp_path / "one" / "runs" / ".x.json.123.tmp").write_text("{")
    # the same run on a second machine, finished later, with another number: the later one wins
    write(tmp_path / "two", [record("finetune", 0, 88.3, finished="2026-02-01T00:00:00")])
    return tmp_path


def test_aggregates_over_seeds_with_failures_and_dedup(results):
    records, warnings = load_records(results / "one", results / "two")
    assert len(records) == 7 and len(warnings) == 1 and "broken.json" in warnings[0]
    df = build_leaderboard(records)
    assert list(df["method"]) == ["finernet", "finetune"]               # sorted by top-1
    fr = df.set_index("method").loc["finernet"]
    assert fr["n"] == 3 and fr["failed"] == 1 and fr["seeds"] == "0,1,2"
    assert fr["top1_by_seed"] == "0:89.5000;1:90.0000;2:88.9000"           # each seed's, for pairing from the CSV
    assert fr["top1_mean"] == pytest.approx(statistics.mean([89.5, 90.0, 88.9]))
    assert fr["top1_std"] == pytest.approx(statistics.stdev([89.5, 90.0, 88.9]))
    half = stats.t.ppf(0.975, 2) * statistics.stdev([89.5, 90.0, 88.9]) / 3 ** 0.5
    assert fr["top1_ci95"] == pytest.approx(half)
    ft = df.set_index("method").loc["finetune"]
    assert ft["top1_mean"] == pytest.approx(statistics.mean([88.3, 89.0, 87.5]))   # deduplicated: 88.3 won
    assert ft["train_seconds_mean"] == pytest.approx(20.0)


def test_different_configurations_are_not_averaged_together_and_say_what_differs(tmp_path, runner):
    steps = record("recipe", 0, 70.0)
    steps["spec"]["params"], steps["run_id"] = {"steps": ["base", "cosine"]}, "recipe-two-steps"
    write(tmp_path, [record("finetune", 0, 80.0), record("finetune", 0, 90.0, lr=0.1), steps,
                     record("recipe", 0, 75.0)])
    df = build_leaderboard(load_records(tmp_path)[0])
    assert len(df) == 4 and df["config"].nunique() == 4
    assert "config" in render(df, "md")
    differs = dict(zip(zip(df["method"], df["top1_mean"]), df["config_differs"]))
    assert differs == {("finetune", 90.0): "recipe.lr=0.1", ("finetune", 80.0): "recipe.lr=0.01",
                       ("recipe", 75.0): "params.steps=–", ("recipe", 70.0): "params.steps=[base, cosine]"}
    one = build_leaderboard([record("finetune", 0, 80.0)])   # nothing to tell apart
    assert list(one["config_differs"]) == [""]
    alike = build_leaderboard([record("finetune", 0, 80.0, lr=1), record("finetune", 0, 81.0, lr="1")])
    assert sorted(alike["config_differs"]) == ['recipe.lr="1"', "recipe.lr=1"]   # read alike: shown as JSON
    config = df.set_index("top1_mean").loc[70.0, "config"]
    for fmt, prefix in (("table", ""), ("md", ""), ("latex", "% ")):
        out = runner.invoke(app, ["leaderboard", str(tmp_path), "--format", fmt, "--no-write"],
                            env={"COLUMNS": "300"})
        assert out.exit_code == 0, out.output
        assert (f"{prefix}config {config} (recipe:default on cub · resnet50): params.steps=[base, cosine]"
                in out.stdout.splitlines()), (fmt, out.stdout)
    out = runner.invoke(app, ["leaderboard", str(tmp_path), "--format", "csv", "--no-write"])
    assert "params.steps=[base, cosine]" in out.stdout and "(recipe:default" not in out.stdout


def test_times_of_runs_that_shared_their_device_are_marked(tmp_path):
    shared = [record("finetune", s, 80.0 + s) for s in range(2)]
    shared[1]["cost"]["device_shared_by"] = 3          # fgvcbench run --workers 3 on one device
    write(tmp_path, shared + [record("finernet", s, 85.0) for s in range(2)])
    df = build_leaderboard(load_records(tmp_path)[0]).set_index("method")
    assert df.loc["finetune", "device_shared_by"] == 3 and df.loc["finernet", "device_shared_by"] == 1
    rows = {line.split("|")[4].strip(): line for line in render(df.reset_index(), "md").splitlines()[2:]}
    assert "15.0 (shared by 3)" in rows["finetune"] and "100 (shared by 3)" in rows["finetune"]
    assert "shared" not in rows["finernet"]
    for r in shared:
        r["metrics"].update(mining_seconds=2.0, recall=0.5)   # a method's own timing is marked too
    write(tmp_path, shared)
    md = render(build_leaderboard(load_records(tmp_path)[0], ["mining_seconds", "recall"]), "md")
    finetune = next(line for line in md.splitlines() if "finetune" in line)
    assert "2.00 ± 0.00 (shared by 3)" in finetune and "0.50 ± 0.00 |" in finetune


def test_only_failures_gives_a_row_with_n_zero(tmp_path):
    write(tmp_path, [record("broken", 0, 0, "failed")])
    df = build_leaderboard(load_records(tmp_path)[0])
    assert df.loc[0, "n"] == 0 and df.loc[0, "failed"] == 1 and pd.isna(df.loc[0, "top1_mean"])
    assert "–" in render(df, "github")


def test_formats_and_csv(results):
    df = build_leaderboard(load_records(results / "one")[0])
    path = write_leaderboard_csv(df, results / "one")
    back = pd.read_csv(path)
    assert list(back["method"]) == list(df["method"]) and back["n"].tolist() == df["n"].tolist()
    md = render(df, "md")
    assert "| finernet" in md and "89.47 ± 0.55" in md
    assert "\\toprule" in render(df, "latex")
    github = render(df, "github").splitlines()
    assert set(github[1]) <= set("|-: ") and len({line.count("|") for line in github}) == 1   # a pipe table
    assert len(github) == 2 + len(df) and "89.47 ± 0.55" in next(line for line in github if "finernet" in line)
    assert render(df, "csv").splitlines()[0].startswith("dataset,backbone")
    with pytest.raises(ValueError, match="md"):
        render(df, "html")


def test_leaderboard_command_merges_machines_by_run_id(results, runner, tmp_path):
    # two machines' folders through the CLI: one row per configuration, a run present in both counted once
    import csv
    import shutil
    shutil.copytree(results / "one", tmp_path / "copy")                 # a third machine holding the same runs
    out = runner.invoke(app, ["leaderboard", str(results / "one"), str(results / "two"), str(tmp_path / "copy"),
                              "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["method"]: r for r in csv.DictReader((results / "one" / "leaderboard.csv").open())}
    assert rows["finetune"]["n"] == "3" and float(rows["finetune"]["top1_mean"]) == pytest.approx(88.2667, abs=1e-3)
    assert rows["finernet"]["n"] == "3" and rows["finernet"]["failed"] == "1"


def test_leaderboard_command(results, runner):
    out = runner.invoke(app, ["leaderboard", str(results / "one"), "--format", "md"])
    assert out.exit_code == 0, out.output
    assert "89.47 ± 0.55" in out.stdout and (results / "one" / "leaderboard.csv").exists()
    bad = runner.invoke(app, ["leaderboard", str(results / "one"), "--format", "html"])
    assert bad.exit_code == 2 and "unknown format" in bad.output
    empty = results / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["leaderboard", str(empty)])
    assert none.exit_code == 2 and "no run records" in none.output


def test_records_that_cannot_be_read_are_named_not_taken_for_an_empty_folder(tmp_path, runner):
    weird, future = record("finetune", 0, 80.0), record("finetune", 1, 81.0)
    weird["status"] = "weird"
    future["schema"] = 999
    write(tmp_path, [weird, future])
    (tmp_path / "runs" / "cut.json").write_text('{"run_id": ')
    result = runner.invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 2 and "run a suite first" not in result.output
    assert "none of the 3 record files" in result.output and "fix or move them" in result.output
    assert "unknown status 'weird'" in result.output and "schema 999 is newer" in result.output


def test_a_record_the_disk_will_not_give_stops_the_run_instead_of_redoing_it(tmp_path, runner, monkeypatch):
    from pathlib import Path

    from conftest import tiny_suite
    suite = tiny_suite(tmp_path)
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    (path,) = (tmp_path / "out" / "runs").glob("*.json")
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", denied)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 2 and f"cannot read the record {path} (Permission denied)" in result.output
    assert "fix its permissions" in result.output and "Traceback" not in result.output
    assert [p.name for p in path.parent.iterdir()] == [path.name]        # not moved aside, not redone


def test_pivot_has_the_papers_shape(tmp_path, runner):
    recs = [record("finetune", s, v) for s, v in enumerate([88.0, 89.0])]
    other = record("finernet", 0, 90.0)
    other["spec"]["dataset"] = {"name": "cars", "options": {}}
    write(tmp_path, recs + [other])
    out = runner.invoke(app, ["leaderboard", str(tmp_path), "--pivot", "--no-write"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "resnet50" and "| pipeline" in lines[1] and "cub" in lines[1] and "cars" in lines[1]
    finetune = next(line for line in lines if line.startswith("| finetune"))
    assert "88.50 ± 0.71 (2)" in finetune and "–" in finetune          # no cars run for finetune
    assert not (tmp_path / "leaderboard.csv").exists()


def test_pivot_cells_of_two_setups_never_overwrite_each_other(tmp_path):
    from fgvcbench.report.leaderboard import pivot_tables
    pre = [record("finetune", s, v) for s, v in enumerate([80.0, 81.0])]
    scratch = [record("finetune", s, v) for s, v in enumerate([60.0, 62.0])] + [record("finetune", 2, 0, "diverged")]
    for r in scratch:
        r["spec"]["backbone"]["pretrained"] = False
        r["run_id"] += "-scratch"
    other_lr = [record("finetune", s, v, lr=0.1) for s, v in enumerate([70.0, 71.0])]
    [table] = pivot_tables(build_leaderboard(pre + scratch + other_lr)).values()
    cells = dict(zip(table["pipeline"], table["cub"]))
    assert len(cells) == 3 and cells["finetune · pretrained no"] == "61.00 ± 1.41 (2; 1 failed)"
    # the same weights, another recipe: told apart by the config hash
    assert sorted(v for k, v in cells.items() if k.startswith("finetune · pretrained yes · config")) == \
        ["70.50 ± 0.71 (2)", "80.50 ± 0.71 (2)"]


def test_rows_of_several_scales_and_test_selection_say_so(tmp_path):
    short = [record("finetune", s, v) for s, v in enumerate([70.0, 71.0])]
    smoke = [record("finetune", s, v) for s, v in enumerate([40.0, 41.0])]
    selected = [record("simtrans", s, v, variant="full") for s, v in enumerate([50.0, 52.0])]
    for r in smoke:
        r["spec"]["scale"], r["run_id"] = "smoke", r["run_id"] + "-smoke"
    for r in selected:
        r["spec"]["params"] = {"selection": "test"}
    df = build_leaderboard(short + smoke + selected)
    assert df["test_selected"].tolist() == [False, True, False]
    text = render(df, "md")
    header = text.splitlines()[0]
    assert "| scale" in header and "config" not in header and "| full (test-selected) |" in text
    assert "| short " in text and "| smoke " in text
    assert "scale" not in render(build_leaderboard(short), "md").splitlines()[0]


def test_extra_metric_columns(tmp_path, runner):
    recs = [record("metric_learning", s, v) for s, v in enumerate([70.0, 72.0])]
    for r, p in zip(recs, (60.0, 64.0)):
        r["metrics"]["precision_at_1"] = p
    write(tmp_path, recs)
    out = runner.invoke(app, ["leaderboard", str(tmp_path), "--metrics", "precision_at_1", "-f", "md", "--no-write"])
    assert out.exit_code == 0, out.output
    assert "precision_at_1" in out.stdout.splitlines()[0] and "62.00 ± 2.83" in out.stdout
    df = build_leaderboard(load_records(tmp_path)[0], ["precision_at_1"])
    assert df.loc[0, "precision_at_1_mean"] == pytest.approx(62.0)


def test_a_metric_only_some_seeds_recorded_says_over_how_many(tmp_path, runner):
    recs = [record("metric_learning", s, v) for s, v in enumerate([70.0, 72.0, 74.0])]
    del recs[2]["metrics"]["mean_class_acc"]             # an older record without it
    recs[0]["metrics"]["precision_at_1"] = 60.0          # recorded by one seed of three
    write(tmp_path, recs)
    df = build_leaderboard(load_records(tmp_path)[0], ["precision_at_1"])
    assert df.loc[0, "n"] == 3 and df.loc[0, "metrics_partial"] == "mean_class_acc:2/3;precision_at_1:1/3"
    assert df.loc[0, "mean_class_acc_mean"] == pytest.approx(70.5)   # the mean over the two that have it
    out = runner.invoke(app, ["leaderboard", str(tmp_path), "--metrics", "precision_at_1", "-f", "md", "--no-write"])
    assert out.exit_code == 0, out.output
    row = out.stdout.splitlines()[2]
    assert "70.50 (2/3 seeds)" in row and "60.00 ± 0.00 (1/3 seeds)" not in row and "(1/3 seeds)" in row
    assert "71.00 (" not in row                            # top-1 last: all three recorded it
    full = build_leaderboard([r for r in load_records(tmp_path)[0] if r["spec"]["seed"] != 2])
    assert full.loc[0, "metrics_partial"] == ""          # every ok seed recorded every column


def test_an_extra_metric_no_run_recorded_exits_2_with_the_names(tmp_path, runner):
    recs = [record("metric_learning", s, v) for s, v in enumerate([70.0, 72.0])]
    recs[0]["metrics"]["precision_at_1"] = 60.0
    write(tmp_path, recs)
    for command in (["leaderboard", str(tmp_path), "--no-write"], ["report", str(tmp_path), "-o", str(tmp_path / "r")]):
        out = runner.invoke(app, command + ["--metrics", "precison_at_1"])
        assert out.exit_code == 2 and "Traceback" not in out.output, out.output
        assert "'precison_at_1'" in out.output and "did you mean 'precision_at_1'?" in out.output
        assert "mean_class_acc, precision_at_1, top1" in out.output    # what it can ask for
    assert not (tmp_path / "leaderboard.csv").exists() and not (tmp_path / "r").exists()


def test_an_extra_metric_recorded_as_no_number_or_among_many_odd_names_is_named_in_one_short_line(tmp_path, runner):
    recs = [record("metric_learning", s, v) for s, v in enumerate([70.0, 72.0])]
    recs[0]["metrics"]["nested"] = {"a": 1.0}
    for i in range(20):
        recs[1]["metrics"][f"m{i:02d}"] = float(i)
    recs[1]["metrics"]["a" + "x" * 5000] = 1.0   # sorted first: shown, cut short
    recs[1]["metrics"]["aa\nb"] = 1.0
    write(tmp_path, recs)
    out = runner.invoke(app, ["leaderboard", str(tmp_path), "--no-write", "--metrics", "nested"])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    said = " ".join(out.output.split())
    assert "--metrics nested: the runs recorded it as dict, not a number, and only numbers become columns" in said
    assert " and 13 more" in said and "'a" + "x" * 39 + "'…" in said and "x" * 41 not in said
    assert "'aa\\nb'" in said and "aa\nb" not in out.output
    assert len(out.output) < 800


def expected_cells(values):
    """The human cells for a group of top-1 values, computed here from the inputs."""
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = stats.t.ppf(0.975, len(values) - 1) * sd / len(values) ** 0.5
    return f"{mean:.2f} ± {sd:.2f}", f"±{half:.2f}", f"{mean - 1:.2f}", f"{mean - 0.5:.2f}"


@pytest.mark.parametrize("fmt", ["md", "github", "latex"])
def test_every_human_format_shows_the_numbers(results, fmt):
    df = build_leaderboard(load_records(results / "one")[0])
    text = render(df, fmt)
    for values in ([89.5, 90.0, 88.9], [88.0, 89.0, 87.5]):
        for cell in expected_cells(values):
            assert (latex_symbols(cell) if fmt == "latex" else cell) in text, (fmt, cell)
    assert "20.0" in text and "100" in text                       # train s (10, 20, 30) and img/s, rounded
    assert "20.0000" not in text and "nan" not in text.lower()
    lines = [line for line in text.splitlines() if "finernet" in line]
    assert len(lines) == 1
    last_cell = lines[0].replace("\\\\", "").replace("&", "|").strip(" |").split("|")[-1].strip()
    assert last_cell == "1"                                         # the failed record, counted, not averaged


def test_csv_round_trips_and_leaves_no_temp_file(results):
    df = build_leaderboard(load_records(results / "one")[0])
    back = pd.read_csv(io.StringIO(render(df, "csv")))
    assert back["top1_mean"].tolist() == pytest.approx(df["top1_mean"].tolist(), abs=1e-4)
    assert back["failed"].tolist() == [1, 0] and back["seeds"].astype(str).tolist() == ["0,1,2", "0,1,2"]
    write_leaderboard_csv(df, results / "one")
    assert not list((results / "one").glob("*.tmp")) and not list((results / "one").glob(".leaderboard*"))


def test_rich_table_has_the_md_columns_and_cells(results):
    df = build_leaderboard(load_records(results / "one")[0])
    table = render_rich_table(df)
    headers = [c.header for c in table.columns]
    assert headers == [h.strip() for h in render(df, "md").splitlines()[0].strip("|").split("|")]
    top1 = list(table.columns[headers.index("top-1 %")].cells)
    assert top1 == [expected_cells([89.5, 90.0, 88.9])[0], expected_cells([88.0, 89.0, 87.5])[0]]


def test_nested_runs_folders_and_sorting_by_dataset_first(tmp_path):
    low = record("finetune", 0, 50.0)
    low["spec"]["dataset"] = {"name": "aircraft", "options": {}}
    low["run_id"] = "aircraft-0"
    write(tmp_path / "suite_a" / "cub" / "deep", [record("finetune", 0, 80.0), record("finernet", 0, 85.0)])
    write(tmp_path / "suite_b", [low])
    records, warnings = load_records(tmp_path)
    assert len(records) == 3 and warnings == []
    df = build_leaderboard(records)
    assert list(zip(df["dataset"], df["method"])) == [("aircraft", "finetune"), ("cub", "finernet"), ("cub", "finetune")]


def test_malformed_records_are_warnings_not_crashes(tmp_path):
    no_dataset = record("finetune", 1, 70.0)
    del no_dataset["spec"]["dataset"]
    worded = record("finetune", 2, 70.0)
    worded["metrics"]["top1"] = "high"      # an ok run's top-1 must be a number: n counts what the mean reads
    write(tmp_path, [record("finetune", 0, 80.0), no_dataset, worded])
    (tmp_path / "runs" / "list.json").write_text("[1, 2]")
    records, warnings = load_records(tmp_path)
    assert len(records) == 1 and len(warnings) == 3
    assert any("spec.dataset.name" in w for w in warnings) and any("list.json" in w for w in warnings)
    assert any("numeric metrics.top1" in w for w in warnings)
    assert build_leaderboard(records).loc[0, "n"] == 1
    # a NaN top-1 (hand-edited, or merged from elsewhere) is no result either: n = what the mean reads
    nan = record("finetune", 3, float("nan"))
    write(tmp_path, [nan])
    records, warnings = load_records(tmp_path)
    assert len(records) == 1 and any("finite numeric metrics.top1" in w for w in warnings)


def test_a_failed_retry_does_not_erase_a_finished_run(tmp_path):
    # folder B retried seed 2 later and crashed: A's finished seed 2 still counts
    write(tmp_path / "a", [record("finetune", s, v) for s, v in enumerate([70.0, 72.0, 74.0])])
    write(tmp_path / "b", [record("finetune", 2, 0, "failed", finished="2026-03-01T00:00:00")])
    for order in ((tmp_path / "a", tmp_path / "b"), (tmp_path / "b", tmp_path / "a")):
        row = build_leaderboard(load_records(*order)[0]).iloc[0]
        assert (row["n"], row["failed"], row["top1_mean"]) == (3, 0, pytest.approx(72.0))
    # between two results, the later one wins as before
    write(tmp_path / "c", [record("finetune", 2, 80.0, finished="2026-03-01T00:00:00")])
    row = build_leaderboard(load_records(tmp_path / "a", tmp_path / "c")[0]).iloc[0]
    assert row["top1_mean"] == pytest.approx(74.0)


def test_the_records_folder_itself_reads_as_its_results_folder(tmp_path):
    """`run` ends with "records in DIR/runs": that folder is a fine argument too."""
    write(tmp_path, [record("finetune", 0, 80.0), record("finetune", 1, 70.0)])
    by_parent, by_runs = load_records(tmp_path)[0], load_records(tmp_path / "runs")[0]
    assert len(by_runs) == 2 and sorted(r["run_id"] for r in by_runs) == sorted(r["run_id"] for r in by_parent)


def test_dedup_compares_finish_times_as_instants(tmp_path):
    # 12:00+02:00 is 10:00 UTC, earlier than 11:00Z, though it sorts later as a string
    write(tmp_path / "a", [record("finetune", 0, 80.0, finished="2026-01-01T12:00:00+02:00")])
    write(tmp_path / "b", [record("finetune", 0, 70.0, finished="2026-01-01T11:00:00Z")])
    for order in ((tmp_path / "a", tmp_path / "b"), (tmp_path / "b", tmp_path / "a")):
        records, _ = load_records(*order)
        assert [r["metrics"]["top1"] for r in records] == [70.0]


def test_scratch_and_pretrained_backbones_are_separate_rows(tmp_path):
    scratch = [record("finetune", s, v) for s, v in enumerate([60.0, 62.0])]
    for r in scratch:
        r["spec"]["backbone"]["pretrained"] = False
        r["run_id"] += "-scratch"
    write(tmp_path, scratch + [record("finetune", s, v) for s, v in enumerate([88.0, 89.0])])
    df = build_leaderboard(load_records(tmp_path)[0])
    assert df[["pretrained", "n"]].values.tolist() == [["yes", 2], ["no", 2]]
    assert df["top1_mean"].tolist() == pytest.approx([88.5, 61.0])
    assert "| no " in render(df, "md")


def test_the_baseline_note_tells_rows_without_pairs_from_rows_without_a_baseline():
    from fgvcbench.report.compare import add_baseline, baseline_note
    # cub: finetune seeds 0-1, finernet seed 2 only (no pair); air: finernet, and no finetune at all
    records = [record("finetune", s, 80.0 + s) for s in (0, 1)] + [record("finernet", 2, 85.0)]
    air = record("finernet", 0, 70.0)
    air["spec"]["dataset"] = {"name": "air", "options": {}}
    air["run_id"] += "-air"
    records.append(air)
    df = add_baseline(build_leaderboard(records), records, "finetune")
    note = baseline_note(df)
    assert "1 row had no seed that it and finetune both finished." in note
    assert "1 row had no finetune run on its setup to compare with." in note


def test_a_delta_across_protocols_says_which_and_the_note_warns():
    from fgvcbench.report.compare import add_baseline, baseline_note, protocol
    from fgvcbench.report.leaderboard import pivot_tables, render
    base = [record("finetune", s, 80.0 + s) for s in (0, 1, 2)]
    for r in base:
        r["spec"]["recipe"] = {"image_size": 224}
    large = [record("finernet", s, 83.0 + s) for s in (0, 1, 2)]          # trained and tested at 448
    for r in large:
        r["spec"]["recipe"] = {"image_size": 448}
    same = [record("finernet", s, 81.0 + s, lr=0.5) for s in (0, 1, 2)]    # the baseline's protocol
    for r in same:
        r["spec"]["recipe"] = {"image_size": 224, "lr": 0.5}
    picked = [record("simtrans", s, 82.0 + s) for s in (0, 1, 2)]          # selected on the test split
    for r in picked:
        r["spec"]["recipe"] = {"image_size": 224, "eval_crop_pct": 224 / 255}
        r["spec"]["params"] = {"selection": "test"}
    records = base + large + same + picked
    assert protocol(base[0]) == {"train crop": "224 px", "crops from": "centre square", "test view": "256 → 224 px",
                                 "selected on": "validation"}   # a fast run from before crop_extent
    assert protocol({"spec": {"recipe": {"image_size": 224, "crop_extent": "full"}}})["crops from"] == "whole image"
    assert protocol({"spec": {"recipe": {"image_size": 224, "pipeline": "classic"}}})["crops from"] == "whole image"
    assert protocol(picked[0])["test view"] == "255 → 224 px"
    df = add_baseline(build_leaderboard(records), records, "finetune")
    by = {(r.method, r.n, r.config): r.delta_protocol for r in df.itertuples()}
    assert sorted(by.values()) == [
        "", "",   # the baseline itself, and finernet at the baseline's protocol
        "test view 255 → 224 px (baseline 256 → 224 px); selected on test (baseline validation)",
        "train crop 448 px (baseline 224 px); test view 512 → 448 px (baseline 256 → 224 px)"]
    note = baseline_note(df)
    assert "2 rows did not share finetune's protocol" in note and "gains the optimism" in note
    assert "protocol vs baseline" in render(df, "md") and "same" in render(df, "md")
    cells = " ".join(pivot_tables(df)["resnet50"]["cub"])
    assert "train crop 448 px (baseline 224 px)" in cells
    # a suite with one protocol: no column, no warning
    plain = add_baseline(build_leaderboard(base + same), base + same, "finetune")
    assert "protocol vs baseline" not in render(plain, "md") and "protocol" not in baseline_note(plain)


def test_baseline_deltas_are_paired_by_seed_within_one_setup(tmp_path, runner):
    from fgvcbench.report.compare import add_baseline
    from fgvcbench.errors import UserError
    base = [record("finetune", s, v) for s, v in enumerate([88.0, 89.0, 87.5, 86.0])]
    # seed 3 did not finish for finernet, seed 4 exists only for finernet: 3 pairs
    ours = [record("finernet", s, v) for s, v in enumerate([89.5, 90.0, 88.9])] + \
        [record("finernet", 3, 0, "failed"), record("finernet", 4, 91.0)]
    # the same methods on another dataset option: a setup of their own, never mixed in
    other = []
    for r in [record("finetune", 0, 50.0), record("finernet", 0, 10.0)]:
        r["spec"]["dataset"]["options"] = {"crop": "bbox"}
        r["run_id"] += "-bbox"
        other.append(r)
    records = base + ours + other
    df = add_baseline(build_leaderboard(records), records, "finetune")
    row = df[(df["method"] == "finernet") & (df["n"] == 4)].iloc[0]
    deltas = [89.5 - 88.0, 90.0 - 89.0, 88.9 - 87.5]
    t = stats.ttest_rel([89.5, 90.0, 88.9], [88.0, 89.0, 87.5])
    assert row["delta_n"] == 3 and row["baseline"] == "finetune"
    assert row["delta_mean"] == pytest.approx(statistics.mean(deltas))
    assert row["delta_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * statistics.stdev(deltas) / 3 ** 0.5)
    assert row["delta_p"] == pytest.approx(t.pvalue)
    bbox = df[(df["method"] == "finernet") & (df["n"] == 1)].iloc[0]
    assert bbox["delta_n"] == 1 and bbox["delta_mean"] == pytest.approx(-40.0)   # against its own setup's baseline
    own = df[df["method"] == "finetune"]
    assert all(own["is_baseline"]) and all(own["delta_n"] == 0)                # the baseline is not compared to itself
    # two variants of the baseline on one setup: which one must be said
    records.append(record("finetune", 0, 70.0, variant="linear_probe"))
    with pytest.raises(UserError, match="'finetune' names 2 variants on .* name one: finetune:default, "
                                        "finetune:linear_probe"):
        add_baseline(build_leaderboard(records), records, "finetune")
    assert add_baseline(build_leaderboard(records), records, "finetune:default")["delta_n"].max() == 3
    # one variant in two configurations (other params): the config hash the table shows picks one
    records.append(record("finetune", 0, 60.0, lr=0.5))
    with pytest.raises(UserError, match="has 2 configurations on .* name one as finetune:default@CONFIG"):
        add_baseline(build_leaderboard(records), records, "finetune:default")
    first = config_key(base[0]["spec"])
    picked = add_baseline(build_leaderboard(records), records, f"finetune:default@{first}")
    assert picked.attrs["baseline"] == f"finetune:default@{first}" and picked["delta_n"].max() == 3
    # other weights in the same file (retrained in place): another setup, no delta
    moved = [dict(r, spec={**r["spec"], "backbone": {**r["spec"]["backbone"], "weights_sha256": "new"}},
                  run_id=r["run_id"] + "-new") for r in ours]
    only = base + moved
    assert add_baseline(build_leaderboard(only), only, "finetune")["delta_n"].max() == 0
    with pytest.raises(UserError, match="did you mean 'finetune"):
        add_baseline(build_leaderboard(records), records, "finetun")

    write(tmp_path / "r", base + ours)
    md = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "-f", "md", "--no-write", "--baseline", "finetune"])
    assert md.exit_code == 0, md.output
    assert "Δ vs finetune (95% CI)" in md.stdout and f"+{statistics.mean(deltas):.2f} ±" in md.stdout
    assert "paired by seed" in md.stdout
    pivot = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "--pivot", "--no-write", "--baseline", "finetune"])
    assert f"· Δ +{statistics.mean(deltas):.2f} ±" in pivot.stdout and "over 3 pairs" in pivot.stdout
    csv = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "-f", "csv", "--no-write", "--baseline", "finetune"])
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert frame.loc[frame["method"] == "finernet", "delta_n"].item() == 3
    bad = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "--no-write", "--baseline", "nothing"])
    assert bad.exit_code == 2 and "matches no run" in bad.output and "Traceback" not in bad.output
    for name in (":x", "finetune@"):   # malformed: the error names the value it refuses
        bad = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "--no-write", "--baseline", name])
        text = " ".join(bad.output.split())
        assert bad.exit_code == 2 and f"--baseline '{name}' is no baseline name — name a method" in text, text


def test_latex_tables_paste_into_a_paper(results, runner):
    """tabulate escapes _ and %; the symbols the cells use (±, Δ, ·, –) become math, and
    the backbone heading and the baseline note become comments."""
    args = ["leaderboard", str(results / "one"), "--no-write", "-f", "latex"]
    flat = runner.invoke(app, args)
    assert flat.exit_code == 0 and r"89.47 $\pm$ 0.55" in flat.stdout
    pivot = runner.invoke(app, args + ["--pivot", "--baseline", "finetune"])
    assert pivot.exit_code == 0, pivot.output
    assert pivot.stdout.startswith("% resnet50\n\\begin{tabular}") and r"$\cdot$ $\Delta$ +" in pivot.stdout
    table = [line for line in pivot.stdout.splitlines() if line and not line.startswith("%")]
    assert table and not any(symbol in line for line in table for symbol in "±Δ·–")
    assert any(line.startswith("% Δ: top-1 minus finetune") for line in pivot.stdout.splitlines())
    # a negative number's sign is a minus; a hyphen inside a name (an Aircraft variant) stays
    assert latex_symbols("Δ -1.50 ±0.20 · 707-320") == r"$\Delta$ $-$1.50 $\pm$0.20 $\cdot$ 707-320"
    assert latex_symbols("weak\\_shot(cub, ρ=0.2)") == r"weak\_shot(cub, $\rho$=0.2)"   # SimTrans' dataset label
    assert r"\begin{tabular}{lllllrrrrrrrrrrr}" in runner.invoke(app, args + ["--baseline", "finetune"]).stdout


def test_one_configuration_and_seed_counts_once_even_under_two_run_ids(tmp_path):
    """Records of one run written under an older id scheme: the seed is not counted twice."""
    old = record("finetune", 0, 80.0, finished="2026-01-01T00:00:00")
    new = dict(record("finetune", 0, 81.0, finished="2026-02-01T00:00:00"), run_id="new-id")
    write(tmp_path, [old, new, record("finetune", 1, 83.0)])
    records, _ = load_records(tmp_path)
    row = build_leaderboard(records).iloc[0]
    assert row["n"] == 2 and row["top1_mean"] == pytest.approx(82.0)   # seeds 0 (the later, 81) and 1


def test_device_seconds_count_every_device_a_run_trained_on():
    # the report plots accuracy against GPU-seconds: a torchrun run on 4 GPUs cost 4x its wall-clock training
    one, four = record("finetune", 0, 80.0), record("finetune", 0, 81.0, lr=0.1)
    one["cost"]["train_seconds_total"] = four["cost"]["train_seconds_total"] = 30.0
    four["spec"]["world_size"] = 4
    df = build_leaderboard([one, four]).sort_values("top1_mean")
    assert df["train_seconds_total_mean"].tolist() == [30.0, 30.0]
    assert df["device_seconds_total_mean"].tolist() == [30.0, 120.0]


def test_a_record_older_than_train_seconds_total_counts_its_train_seconds():
    # one seed written before cached phases were counted: it still adds its own seconds to the mean
    old, new = record("finetune", 0, 80.0), record("finetune", 1, 81.0)
    old["cost"] = {"train_seconds": 10.0}
    new["cost"] = {"train_seconds": 20.0, "train_seconds_total": 40.0}
    row = build_leaderboard([old, new]).iloc[0]
    assert row["train_seconds_total_mean"] == row["device_seconds_total_mean"] == pytest.approx(25.0)


def test_a_folder_that_is_not_a_results_tree_is_refused_in_one_line(tmp_path, runner, monkeypatch):
    # `leaderboard /` walked the whole disk, merged every runs/ it met and wrote /leaderboard.csv
    import fgvcbench.report.leaderboard as lb
    write(tmp_path / "machine" / "suite", [record("finetune", 0, 80.0)])
    write(tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "g", [record("finetune", 1, 70.0)])   # deeper than any results tree
    records, _ = load_records(tmp_path)
    assert [r["spec"]["seed"] for r in records] == [0]
    monkeypatch.setattr(lb, "MAX_FOLDERS", 5)
    result = runner.invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 2 and "holds more than 5 folders — pass a results folder" in result.output
    assert not (tmp_path / "leaderboard.csv").exists()


def test_two_configurations_whose_hashes_share_six_digits_stay_two_rows():
    """A config hash of 6 hex digits (2^24 values) met another among a few thousand
    configurations, and their runs were averaged as one row; found here by search."""
    from fgvcbench.spec import config_key
    seen = {}
    for i in range(1, 200_000):
        lr = round(0.0001 * i, 6)
        key = config_key(record("finernet", 0, 1.0, lr=lr)["spec"])[:6]
        if key in seen:
            break
        seen[key] = lr
    a, b = seen[key], lr
    runs = [record("finernet", s, v, lr=a) for s, v in ((0, 80.0), (1, 81.0))] + \
           [record("finernet", s, v, lr=b) for s, v in ((0, 60.0), (1, 61.0))]
    df = build_leaderboard(runs).sort_values("top1_mean")
    assert list(df["n"]) == [2, 2] and list(df["top1_mean"]) == [60.5, 80.5]
    assert df["config"].nunique() == 2 and all(len(c) == 10 for c in df["config"])

"""More bad input, as a fuzzing pass met it: each case exits 2 with one line that says
what to do, before anything runs or moves; a table that can be shown is shown."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from fgvcbench.cli import app

from conftest import tiny_suite, write_suite


def _exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with two finished runs (finetune, two variants)."""
    from typer.testing import CliRunner
    tmp = tmp_path_factory.mktemp("finished")
    suite = tiny_suite(tmp, methods="[{name: finetune, variants: [default, linear_probe]}]")
    result = CliRunner().invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    return suite, tmp / "out"


def _copy(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    return out


def test_metrics_that_are_columns_already_or_repeated(finished, runner, tmp_path):
    out = _copy(finished, tmp_path)
    said = _exit_2(runner.invoke(app, ["leaderboard", str(out), "--no-write", "--metrics", "top1"]))
    assert "--metrics top1: the table has that column already (top1_mean)" in said
    said = _exit_2(runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep"), "--metrics", "top1_last"]))
    assert "top1_last" in said and "column already" in said
    twice = runner.invoke(app, ["leaderboard", str(out), "--no-write", "--metrics", "top5,top5", "-f", "csv"])
    assert twice.exit_code == 0, twice.output
    assert twice.stdout.splitlines()[0].count("top5_mean") == 1


def test_a_results_folder_it_cannot_write_still_prints_the_table(finished, runner, tmp_path, monkeypatch):
    import fgvcbench.report.leaderboard as leaderboard
    out = _copy(finished, tmp_path)

    def read_only(df, folder):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(leaderboard, "write_leaderboard_csv", read_only)
    result = runner.invoke(app, ["leaderboard", str(out)])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "could not write the table's CSV" in result.output and "--no-write" in result.output
    assert "finetune" in result.stdout


def test_records_with_wrongly_typed_fields_are_skipped_with_a_warning(finished, runner, tmp_path):
    out = _copy(finished, tmp_path)
    (good,) = [p for p in (out / "runs").glob("*.json")][:1]
    base = json.loads(good.read_text())
    for run_id, change in (("a" * 12, {"metrics": {**base["metrics"], "top1": 10 ** 400}}),
                           ("b" * 12, {"spec": {**base["spec"], "variant": 5, "seed": 7}}),
                           ("c" * 12, {"spec": {**base["spec"], "scale": ["smoke"], "seed": 8}}),
                           # another method on seed [0]: pairing it by seed against the baseline hashed a list
                           ("d" * 12, {"spec": {**base["spec"], "method": "other", "seed": [0]}})):
        (out / "runs" / f"{run_id}.json").write_text(json.dumps({**base, "run_id": run_id, **change}))
    baseline = f"{base['spec']['method']}:{base['spec'].get('variant', 'default')}"
    result = runner.invoke(app, ["leaderboard", str(out), "--no-write", "--baseline", baseline])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    said = " ".join(result.output.split())
    assert "status ok without a finite numeric metrics.top1" in said
    assert "spec.variant is not a string" in said and "spec.scale is not a string" in said
    assert "spec.seed is not an integer" in said


def test_records_a_third_fuzzing_pass_met(finished, runner, tmp_path):
    out = _copy(finished, tmp_path)
    (good,) = [p for p in (out / "runs").glob("*.json")][:1]
    base = json.loads(good.read_text())
    for run_id, change in (("a" * 12, {"metrics": {**base["metrics"], "top1": 1e6}}),
                           ("b" * 12, {"metrics": {**base["metrics"], "top1": -5}}),
                           ("c" * 12, {"spec": {**base["spec"], "seed": None}}),
                           ("d" * 12, {"schema": "1"})):
        (out / "runs" / f"{run_id}.json").write_text(json.dumps({**base, "run_id": run_id, **change}))
    # nested past Python's stack: json raises RecursionError, not ValueError
    (out / "runs" / f"{'e' * 12}.json").write_text("[" * 100000 + "]" * 100000)
    for command in (["leaderboard", str(out), "--no-write"], ["report", str(out), "--out", str(tmp_path / "rep")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        said = " ".join(result.output.split())
        assert "metrics.top1 1000000.0 is not a percentage (0 to 100)" in said and "metrics.top1 -5 is not" in said
        assert f"{'c' * 12}.json: spec.seed is not an integer" in said
        assert "schema '1' is not an integer (this fgvcbench writes 1)" in said and "newer" not in said
        assert f"skipped unreadable record {out / 'runs' / ('e' * 12)}.json: RecursionError" in said
    suite = write_suite(tmp_path, finished[0].read_text().replace(str(finished[1]), str(out)))
    again = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert again.exit_code == 0 and "0 ran, 2 resumed" in again.output, again.output


def test_a_record_of_a_newer_fgvcbench_is_neither_redone_nor_moved(finished, runner, tmp_path):
    out = _copy(finished, tmp_path)
    record = sorted((out / "runs").glob("*.json"))[0]
    text = json.dumps({**json.loads(record.read_text()), "schema": 99})
    record.write_text(text)
    suite = write_suite(tmp_path, finished[0].read_text().replace(str(finished[1]), str(out)))
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert f"1 record in {out / 'runs'} ({record.stem}.json) was written by a newer fgvcbench (schema 99; " \
           "this one reads 1) — upgrade fgvcbench, or run into another --output" in said
    assert record.read_text() == text and not list((out / "runs").glob("*.corrupt-*"))
    dry = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert dry.exit_code == 0 and "a real run here would stop" in dry.output and "newer fgvcbench" in dry.output
    assert record.read_text() == text


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan"])
def test_a_bad_claim_stale_setting_stops_the_command_before_any_run(tmp_path, runner, monkeypatch, value):
    monkeypatch.setenv("FGVCBENCH_CLAIM_STALE_SECONDS", value)
    said = _exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path)), "--no-progress"]))
    assert f"FGVCBENCH_CLAIM_STALE_SECONDS={value!r} — use a number of seconds > 0" in said
    assert not (tmp_path / "out" / "runs").exists()


def test_an_empty_cache_setting_means_the_default(monkeypatch):
    from pathlib import Path

    from fgvcbench.store import default_cache_dir
    monkeypatch.setenv("FGVCBENCH_CACHE", "  ")
    assert default_cache_dir() == Path("~/.cache/fgvcbench").expanduser()
    monkeypatch.setenv("FGVCBENCH_CACHE", "~/elsewhere")
    assert default_cache_dir() == Path("~/elsewhere").expanduser()


@pytest.mark.parametrize("yaml_text, needle", [
    ('name: ""', "name: '' is no suite name"),
    ("name: ../../escape", "name: '../../escape' is no suite name"),
    ("name: a\nmethods_x: 1", "unknown key"),
])
def test_a_suite_name_that_is_not_a_plain_name_exits_2(tmp_path, runner, yaml_text, needle):
    suite = write_suite(tmp_path, yaml_text + "\ndatasets: [synthetic]\nbackbones: [test_resnet]\nmethods: [finetune]\n")
    assert needle in _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))


def test_yaml_nested_too_deeply_and_an_empty_variant_list_exit_2(tmp_path, runner):
    deep = "[" * 2000 + "1" + "]" * 2000
    suite = write_suite(tmp_path, f"datasets: [synthetic]\nbackbones: [test_resnet]\nmethods: [{{name: finetune, "
                                  f"params: {{x: {deep}}}}}]\n")
    assert "invalid YAML: nested too deeply" in _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    suite = write_suite(tmp_path, "datasets: [synthetic]\nbackbones: [test_resnet]\n"
                                  "methods: [{name: finetune, variants: []}]\n")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    assert "methods[0].variants: no variants — list at least one (default, linear_probe)" in said
    assert "exclude" not in said


def test_selectors_with_a_half_typed_variant_or_outside_only(finished, runner, tmp_path):
    suite, _ = finished
    out = _copy(finished, tmp_path)
    for option in ("--only", "--rerun"):
        said = _exit_2(runner.invoke(app, ["run", str(suite), "--output", str(out), "--dry-run", option, "finetune:"]))
        assert f"{option} 'finetune:': no variant after ':'" in said
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--output", str(out), "--no-progress",
                                       "--only", "finetune:default", "--rerun", "finetune:linear_probe"]))
    assert "names no run that --only keeps (those: finetune:default) — widen --only, or drop it" in said
    assert not (out / "replaced").exists()
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--output", str(out), "--dry-run", "--only", "seed=x"]))
    assert "a seed is an integer" in said
    dry = runner.invoke(app, ["run", str(suite), "--output", str(out), "--dry-run", "--only", "seed=00"])
    assert dry.exit_code == 0 and "2 runs: 2 already done" in dry.stdout


def test_cluster_and_gpus_options_are_checked_by_a_dry_run_and_before_a_rerun_moves(finished, runner, tmp_path):
    suite, _ = finished
    out = _copy(finished, tmp_path)
    run = ["run", str(suite), "--output", str(out)]
    said = _exit_2(runner.invoke(app, run + ["--dry-run", "--executor", "submitit", "--cluster", "gpus=abc"]))
    assert "gpus must be an integer" in said
    said = _exit_2(runner.invoke(app, run + ["--no-progress", "--rerun", "all", "--cluster", "gpus=1"]))
    assert "--cluster sets the resources of submitit jobs — add --executor submitit" in said
    assert not (out / "replaced").exists()
    for gpus in ("abc", "", "-1"):
        said = _exit_2(runner.invoke(app, run + ["--dry-run", "--gpus", gpus]))
        assert "use all or GPU indices such as 0,1" in said


def test_a_file_where_a_results_subfolder_belongs_stops_the_run_before_training(tmp_path, runner):
    suite = tiny_suite(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs").write_text("")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "out/runs is a file where fgvcbench keeps a folder — move it away" in said
    assert not (tmp_path / "out" / "artifacts").exists()   # nothing trained


def test_a_folder_where_a_claim_file_belongs_is_named(finished, runner, tmp_path):
    suite, _ = finished
    out = _copy(finished, tmp_path)
    (record,) = [p for p in (out / "runs").glob("*.json")][:1]
    record.unlink()
    (out / "claims" / f"{record.stem}.claim").mkdir(parents=True)
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--output", str(out), "--no-progress"]))
    assert f"{record.stem}.claim is a folder where a claim file belongs — remove it" in said
    assert len(list((out / "runs").glob("*.json"))) == 1   # the other finished run is kept


def test_paths_of_the_wrong_kind_say_so(tmp_path, runner):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    folder = tmp_path / "weights"
    folder.mkdir()
    suite = tiny_suite(tmp_path, backbones=f"[{{name: test_resnet, pretrained: {folder}}}]")
    assert "checkpoint is a folder, not a checkpoint file" in _exit_2(runner.invoke(app, ["run", str(suite),
                                                                                          "--no-progress"]))
    suite = tiny_suite(tmp_path, datasets=f"[{{name: imagefolder, root: {a_file}}}]")
    assert "is a file, not a folder" in _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    said = _exit_2(runner.invoke(app, ["leaderboard", str(a_file)]))
    assert f"results directory {a_file} is a file, not a folder" in said
    # an absolute root: --data-root and FGVCBENCH_DATA would not move it, so the hint does not offer them
    suite = tiny_suite(tmp_path, datasets=f"[{{name: imagefolder, root: {tmp_path / 'gone'}}}]")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "fix this entry's root: (an absolute path" in said and "pass --data-root" not in said
    dry = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert dry.exit_code == 0 and "a real run here would stop: " in dry.output and "fix this entry's root:" in dry.output
    # a dry run reads the results folder: a file there is named as a real run names it, not as a record
    suite = tiny_suite(tmp_path)
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--output", str(a_file)]))
    assert f"cannot read results from {a_file}: it is a file — pass --output DIR with a folder" in said
    # an absolute root under the data root is still the entry's own: --data-root does not move it
    data = tmp_path / "dr"
    data.mkdir()
    suite = tiny_suite(tmp_path, datasets=f"[{{name: imagefolder, root: {data / 'gone'}}}]",
                       extra=f"data_root: {data}")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "fix this entry's root: (an absolute path" in said and "check --data-root" not in said


def test_data_verify_says_where_a_missing_root_came_from_and_how_to_point_elsewhere(tmp_path, runner, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    monkeypatch.delenv("FGVCBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)   # ./data, the default, is not there
    said = _exit_2(runner.invoke(app, ["data", "verify", "cub"]))
    assert "dataset root not found: data/CUB_200_2011 — pass --root DIR" in said
    assert "--data-root DIR (the folder above it) or set FGVCBENCH_DATA; expected layout: ROOT/images.txt" in said
    said = _exit_2(runner.invoke(app, ["data", "verify", "cub", "--root", str(a_file)]))
    assert f"{a_file} is a file, not the dataset's folder — check --root; expected layout:" in said
    said = _exit_2(runner.invoke(app, ["data", "verify", "cub", "--data-root", str(tmp_path / "nowhere")]))
    assert "— check --data-root (the folder above the dataset's), or pass --root DIR" in said
    monkeypatch.setenv("FGVCBENCH_DATA", str(tmp_path / "elsewhere"))
    said = _exit_2(runner.invoke(app, ["data", "verify", "cub"]))
    assert "— check FGVCBENCH_DATA (the folder above the dataset's), or pass --root DIR or --data-root DIR" in said
    suite = write_suite(tmp_path, f"datasets: [{{name: cub, root: {tmp_path / 'gone'}}}]\nbackbones: [test_resnet]\n"
                                  "methods: [finetune]\n")
    said = _exit_2(runner.invoke(app, ["data", "verify", "cub", "--suite", str(suite)]))
    assert "suite.yaml:1: datasets[0].root: data root for 'cub' not found" in said   # the suite's own error
    assert "fix this entry's root: (an absolute path" in said and "check --data-root" not in said

def test_a_text_file_given_as_a_checkpoint_says_what_it_is_not(tmp_path):
    from fgvcbench.models.pretrained import PretrainedWeightsError, _read_checkpoint
    text = tmp_path / "weights.pth"
    text.write_text("hello")
    with pytest.raises(PretrainedWeightsError, match=r"it is no torch.save file of plain tensors"):
        _read_checkpoint(text)
    # bytes the weights-only unpickler refuses: its own words, not torch's paragraph on the 2.6 default
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(128, 256)) * 3)
    import warnings
    with pytest.raises(PretrainedWeightsError) as info, warnings.catch_warnings():
        warnings.simplefilter("error")                        # torch's own warning about the bytes stays unsaid
        _read_checkpoint(garbage)
    said = str(info.value)
    assert "weights-only unpickler: Unsupported operand" in said and "PyTorch 2.6" not in said, said


def test_pivot_csv_is_plain_csv_with_the_backbone_as_a_column(finished, runner, tmp_path):
    import csv
    import io
    out = _copy(finished, tmp_path)
    result = runner.invoke(app, ["leaderboard", str(out), "--no-write", "--pivot", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][:2] == ["backbone", "pipeline"] and not any(r and r[0].startswith("#") for r in rows)
    assert {r[0] for r in rows[1:]} == {"test_resnet"} and len(rows) == 3
    noted = runner.invoke(app, ["leaderboard", str(out), "--no-write", "--pivot", "--metrics", "top5"])
    assert "--pivot cells hold top-1 only" in noted.output


def test_bench_refuses_negative_warmup(runner):
    assert "--warmup -1" in _exit_2(runner.invoke(app, ["bench", "throughput", "--warmup", "-1", "--device", "cpu"]))


@pytest.mark.parametrize("train, needle", [
    ("{epochs: 1e9}", "train.epochs: expected int, got str '1e9' (YAML reads 1e9 as text: write 1000000000)"),
    ("{lr: 1e-4}", "train.lr: expected float, got str '1e-4' (YAML reads 1e-4 as text: write 0.0001)"),
    ("{image_size: 100000}", "image_size must be <= 4096 pixels, got 100000"),
])
def test_numbers_yaml_reads_as_text_and_typo_sized_images_exit_2(tmp_path, runner, train, needle):
    suite = write_suite(tmp_path, f"train: {train}\ndatasets: [synthetic]\nbackbones: [test_resnet]\n"
                                  f"methods: [finetune]\n")
    assert needle in _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))


def test_a_method_param_in_exponent_form_says_how_yaml_read_it(tmp_path, runner):
    suite = write_suite(tmp_path, "datasets: [synthetic]\nbackbones: [test_resnet]\n"
                                  "methods: [{name: metric_learning, params: {margin: 1e-1}}]\n")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    assert "margin: expected a number, got str '1e-1' (YAML reads 1e-1 as text: write 0.1)" in said


def test_data_verify_fails_a_dataset_with_one_class(tmp_path, runner):
    from PIL import Image
    for split in ("train", "test"):
        (tmp_path / "one" / split / "only").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 90, 0, 0)).save(tmp_path / "one" / split / "only" / f"{i}.jpg")
    result = runner.invoke(app, ["data", "verify", "imagefolder", "--root", str(tmp_path / "one")])
    assert result.exit_code == 1 and "one_class" in result.output and "at least 2 classes" in result.output


def test_only_needs_the_data_of_the_runs_it_keeps_not_of_the_whole_grid(tmp_path, runner):
    from conftest import TINY_DATASET
    suite = tiny_suite(tmp_path, datasets=f"[{{name: imagefolder, root: {tmp_path / 'absent'}}}, {TINY_DATASET}]")
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "data root for 'imagefolder' not found" in said
    # the part of the grid whose data is here runs, in one process and in worker processes
    for extra in ([], ["--workers", "2"]):
        result = runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "dataset=synthetic", *extra])
        assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert [r["spec"]["dataset"]["name"] for r in records] == ["synthetic"]
    said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "dataset=imagefolder"]))
    assert "data root for 'imagefolder' not found" in said and "suite.yaml:" in said
    dry = runner.invoke(app, ["run", str(suite), "--dry-run", "--only", "dataset=synthetic"])
    assert dry.exit_code == 0 and "a real run here would stop" not in dry.output   # no note about data it will not read


def test_a_suite_name_with_a_slash_is_fine_where_output_is_set(tmp_path, runner):
    suite = write_suite(tmp_path, f"name: group/suite\noutput: {tmp_path / 'out'}\ndatasets: [synthetic]\n"
                                  f"backbones: [test_resnet]\nmethods: [finetune]\n")
    assert runner.invoke(app, ["run", str(suite), "--dry-run"]).exit_code == 0


def test_text_in_square_brackets_is_printed_not_read_as_terminal_markup(tmp_path, runner, finished):
    # rich reads "[synthetic]" as a style tag and drops it: the fix an error gives, a path or a
    # name in a table must reach the terminal as written
    bad = write_suite(tmp_path, "datasets: synthetic\nbackbones: [test_resnet]\nmethods: [finetune]\n")
    assert "write it as a list: [synthetic]" in _exit_2(runner.invoke(app, ["run", str(bad)]))
    _, out = finished
    copy = tmp_path / "[old] results"
    shutil.copytree(out, copy)
    for path in (copy / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        record["spec"]["backbone"]["name"] = "net[v2]"
        path.write_text(json.dumps(record))
    shown = runner.invoke(app, ["leaderboard", str(copy)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "net[v2]" in shown.output and "[old] results" in shown.output


def test_option_values_a_second_fuzzing_pass_met(tmp_path, runner, monkeypatch):
    """Each was a traceback, a run without end, or a silent choice: now one line, exit 2."""
    suite = tiny_suite(tmp_path)
    cases = [
        (["run", str(suite), "--dry-run", "--workers", "999999999999999999999"], "use a count from 1 to 256"),
        (["run", str(suite), "--dry-run", "--seeds", "0,,1"], "empty item between commas"),
        (["run", str(suite), "--dry-run", "--gpus", "0,,1"], "use all or GPU indices"),
        (["run", str(suite), "--dry-run", "--executor", ""], "--executor '': use local or submitit"),
        (["run", "/dev/zero", "--dry-run"], "this is not a regular file"),
        (["data", "verify", "synthetic", "-o", "crop=[1"], "the value is not plain YAML"),
        (["data", "verify", "synthetic", "-o", "coarse=2", "-o", "coarse=3"], "--option coarse is given twice"),
        (["data", "verify", "synthetic", "-o", "coarse=99999999999999999999999"], "coarse must be >= 1 and <= 1,000"),
        (["bench", "throughput", "--batch", "99999999999999999999999", "--device", "cpu"], "batch from 2 to 8,192"),
        (["bench", "throughput", "--res", "100000", "--device", "cpu"], "--res: must be <= 4096"),
        (["bench", "knn", "--n", "64", "--classes", "4", "--k", "65", "--device", "cpu"], "1 <= k <= n"),
        (["bench", "knn", "--n", "100000000", "--dim", "100000", "--device", "cpu"], "n × dim <= 1,000,000,000"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 2, (args, result.output[-300:])
        assert needle in _exit_2(result), args
    (tmp_path / "afile.txt").write_text("")
    ablate = ["ablate", "--step", "cosine", "--seeds", "1", "--no-progress", "--output", str(tmp_path / "afile.txt")]
    assert "cannot write results to" in _exit_2(runner.invoke(app, ablate))   # as `run`: before anything trains
    from fgvcbench.plugins import get_registry
    monkeypatch.setenv("FGVCBENCH_PLUGINS", "datasets")
    get_registry(refresh=True)
    try:
        unloaded = _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    finally:
        monkeypatch.delenv("FGVCBENCH_PLUGINS")
        get_registry(refresh=True)
    assert "FGVCBENCH_PLUGINS='datasets' loads only those plugins" in unloaded and "did you mean 'test_resnet'" not in unloaded


def test_report_refuses_a_repeated_baseline_and_a_title_of_two_lines(finished, runner, tmp_path):
    _, out = finished
    twice = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r"), "--baseline", "finetune:default",
                                "--baseline", "finetune:default"])
    assert "is given twice" in _exit_2(twice)
    assert "one line, please" in _exit_2(runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r"),
                                                            "--title", "a\nb"]))


def test_an_empty_path_is_refused_not_read_as_the_current_folder(finished, runner, tmp_path, monkeypatch):
    """``Path('')`` is ``.``: a typo or an unset shell variable (``--out "$OUT"``) wrote the report,
    the benchmark rows or a plugin into the folder the user stood in, or ran with the suite's
    output as if the option had not been given. Every path option now refuses it."""
    suite, out = finished
    monkeypatch.chdir(tmp_path)
    cases = [
        ["report", str(out), "--out", ""],
        ["report", "", "--out", "r"],
        ["leaderboard", ""],
        ["run", ""],
        ["run", str(suite), "--dry-run", "--output", ""],
        ["run", str(suite), "--dry-run", "--data-root", " "],
        ["ablate", "--step", "cosine", "--output", ""],
        ["ablate", "--step", "cosine", "--suite", ""],
        ["data", "verify", "cub", "--root", ""],
        ["data", "verify", "cub", "--suite", ""],
        ["data", "verify", "cub", "--data-root", ""],
        ["bench", "knn", "--n", "16", "--dim", "4", "--classes", "2", "--k", "2", "--device", "cpu", "--output", ""],
        ["bench", "throughput", "--root", "", "--device", "cpu"],
        ["new-plugin", "my-method", "--dir", ""],
    ]
    for args in cases:
        result = runner.invoke(app, args, env={"COLUMNS": "300"})
        assert "an empty path" in _exit_2(result), args
    assert list(tmp_path.iterdir()) == []   # nothing was written where the user stood


def test_data_verify_refuses_a_root_for_generated_data(runner, tmp_path):
    """The synthetic dataset reads no folder: a --root given for it was silently unused."""
    result = runner.invoke(app, ["data", "verify", "synthetic", "--root", str(tmp_path)], env={"COLUMNS": "300"})
    assert "'synthetic' is generated: it reads no folder — drop --root" in _exit_2(result)
    assert runner.invoke(app, ["data", "verify", "synthetic", "-o", "coarse=2"]).exit_code == 0
    # a view reads its base's folder: a root is taken; a view of a base that does not exist says so
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                colour = (40 * i, 90 if cls == "a" else 200, 30 if split == "train" else 160)
                Image.new("RGB", (24, 24), colour).save(tmp_path / split / cls / f"{i}.jpg")
    view = runner.invoke(app, ["data", "verify", "weak_shot", "--root", str(tmp_path), "-o", "of=imagefolder",
                               "-o", "novel=[b]", "-o", "noise_rate=0.0"])
    assert view.exit_code == 0, view.output
    typo = runner.invoke(app, ["data", "verify", "weak_shot", "--root", str(tmp_path), "-o", "of=folder"],
                         env={"COLUMNS": "300"})
    assert "unknown dataset 'folder' — did you mean 'imagefolder'?" in _exit_2(typo)


def test_a_coarse_view_of_a_dataset_without_a_hierarchy_is_refused_when_the_suite_loads(tmp_path, runner):
    """It used to load, pass a dry run, and fail every run with 'has no coarse level'."""
    (tmp_path / "data" / "mine" / "train").mkdir(parents=True)
    suite = tiny_suite(tmp_path, datasets="[{name: coarse, root: mine, options: {of: imagefolder}}]",
                       extra=f"data_root: {tmp_path / 'data'}")
    for extra in ([], ["--dry-run"]):
        said = _exit_2(runner.invoke(app, ["run", str(suite), "--no-progress", *extra]))
        assert "of: 'imagefolder' has no coarse level — name a dataset with a hierarchy (synthetic, cub" in said
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize("methods, extra, needle", [
    ("[finetune]", "exclude: [{seed: '0'}]",
     "exclude[0].seed: seed '0' is not in this suite's grid, so the rule excludes nothing — write it unquoted, seed: 0"),
    ("[{name: recipe, params: {steps: [base, cosine, base]}}]", "",
     "methods[0].params.steps[2]: step 'base' is listed twice — list each step once"),
    ("[recipe]", "ablation: {steps: [base, cosine], extra: [ema, cosine]}",
     "ablation.extra[1]: extra step 'cosine' is in steps: already, so its row would train the full recipe again"),
    # hints spell values as YAML does, not as Python prints them
    ("[{name: finetune, train: {amp: 3}}]", "", "expected bool, got int 3 — write it like the default, amp: true"),
    ("[{name: finernet, params: {k: true}}]", "", "finernet k: expected an integer or null, got bool true"),
])
def test_repeats_and_hints_a_third_fuzzing_pass_met(tmp_path, runner, methods, extra, needle):
    said = _exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path, methods=methods, extra=extra)), "--dry-run"]))
    assert needle in said and "True" not in said


def test_data_verify_of_generated_data_names_a_cache_that_is_a_file(tmp_path, runner, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("FGVCBENCH_CACHE", str(afile))
    said = _exit_2(runner.invoke(app, ["data", "verify", "synthetic"]))
    assert said == (f"error: cannot write the dataset cache to {afile / 'datasets'}: Not a directory — pass "
                    "FGVCBENCH_CACHE=DIR with a writable folder")


def test_a_checkpoint_that_is_not_the_backbone_s_weights_stops_the_suite_at_its_line(tmp_path, runner):
    import timm
    import torch
    other = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path, needle in ((other, "does not fit the model"), (text, "is no torch.save file of plain tensors")):
        suite = tiny_suite(tmp_path, backbones=f"[{{name: test_resnet, pretrained: {path}}}]")
        said = _exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
        assert "backbones[0].pretrained:" in said and needle in said and str(path) in said
        assert not (tmp_path / "out" / "runs").exists()
    fits = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", num_classes=7).state_dict(), fits)   # another head: fine
    suite = tiny_suite(tmp_path, backbones=f"[{{name: test_resnet, pretrained: {fits}}}]")
    assert runner.invoke(app, ["run", str(suite), "--dry-run"]).exit_code == 0

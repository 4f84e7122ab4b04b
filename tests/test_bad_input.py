"""Bad input met as a new user meets it: each case exits 2 with one line that says what
to do (no traceback), or, where it is one run's fault, fails that run and lets the suite go on."""

from __future__ import annotations

import json

import pytest
import torch

from PIL import Image

from fgvcbench.api import Method, hookimpl
from fgvcbench.cli import app

from conftest import tiny_suite


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_an_output_folder_that_cannot_be_written_exits_2(tmp_path, runner):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    suite = tiny_suite(tmp_path)
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--output", str(blocker / "out"), "--no-progress"]))
    assert "cannot write results to" in out and "--output" in out


def test_a_non_numeric_top1_fails_that_run_and_the_suite_goes_on(tmp_path, runner, registry_with):
    class BadMethod:
        @hookimpl
        def fgvcbench_methods(self):
            return [Method(name="bad_top1", run=lambda ctx: {"top1": "high"})]
    registry_with(BadMethod())
    suite = tiny_suite(tmp_path, methods="[bad_top1, finetune]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    records = {json.loads(p.read_text())["spec"]["method"]: json.loads(p.read_text())
               for p in (tmp_path / "out" / "runs").glob("*.json")}
    assert records["bad_top1"]["status"] == "failed" and "must be a number" in records["bad_top1"]["error"]
    assert records["finetune"]["status"] == "ok"


def test_bench_rejects_negative_workers_before_measuring(runner):
    out = _one_line_exit_2(runner.invoke(app, ["bench", "throughput", "--workers", "-1", "--device", "cpu"]))
    assert "--workers -1" in out


def test_bench_checks_its_output_folder_before_measuring(tmp_path, runner, monkeypatch):
    import fgvcbench.bench as bench
    measured = []
    monkeypatch.setattr(bench, "measure_knn", lambda *a, **k: measured.append(1) or [])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for command in (["knn", "--device", "cpu"], ["throughput", "--device", "cpu"]):
        out = _one_line_exit_2(runner.invoke(app, ["bench", *command, "--output", str(blocker / "bench")]))
        assert "cannot write benchmark rows to" in out and "--output DIR" in out
    assert measured == []


def test_a_dataset_with_an_empty_split_exits_2(tmp_path, runner):
    """CUB metadata whose every image is in train: the test split is empty."""
    root = tmp_path / "CUB_200_2011"
    (root / "images" / "001.A").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "001.A" / "x.jpg")
    for name, text in {"images.txt": "1 001.A/x.jpg", "image_class_labels.txt": "1 1", "classes.txt": "1 001.A",
                       "train_test_split.txt": "1 1", "bounding_boxes.txt": "1 0 0 8 8"}.items():
        (root / name).write_text(text + "\n")
    out = _one_line_exit_2(runner.invoke(app, ["data", "verify", "cub", "--root", str(root)]))
    assert "test split" in out and "no images" in out


def _main_exit(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    """Run the installed entry point (``fgvcbench.cli:main``), as a shell runs it."""
    import pytest
    from fgvcbench.cli import main
    monkeypatch.setattr("sys.argv", ["fgvcbench", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_usage_errors_are_one_line_naming_the_help(monkeypatch, capsys):
    cases = {("run",): "Missing argument", ("run", "--bogus", "x.yaml"): "No such option: --bogus",
             ("frob",): "No such command 'frob'",
             ("bench", "throughput", "--workers", "abc"): "Invalid value for '--workers'"}
    for argv, expected in cases.items():
        code, out, err = _main_exit(monkeypatch, capsys, *argv)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "--help" in lines[0], (argv, err)
        assert "╭" not in err and "Traceback" not in err
    code, out, err = _main_exit(monkeypatch, capsys, "run", "--bogus", "x.yaml")
    assert "'fgvcbench run --help'" in err                 # points at the sub-command's help


def test_the_entry_point_keeps_exit_codes_and_help(monkeypatch, capsys, tmp_path):
    code, out, _ = _main_exit(monkeypatch, capsys, "--version")
    assert code == 0 and out.startswith("fgvcbench ")
    code, out, _ = _main_exit(monkeypatch, capsys, "run", "--help")
    assert code == 0 and "SUITE_FILE" in out.upper()
    assert "<bool>" not in out and "list[str]" not in out and "KEY=VALUE" in out   # a flag reads as a flag
    for group in ((), ("data",), ("bench",)):                 # no command: the help once, exit 2 as click does
        code, out, _ = _main_exit(monkeypatch, capsys, *group)
        assert code == 2 and "Commands" in out and out.count("Usage:") == 1, group
    code, _, err = _main_exit(monkeypatch, capsys, "leaderboard", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error: results directory not found")
    assert "run the suite first" in err


def test_a_ctrl_c_anywhere_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    # typer turns a Ctrl-C inside a command into exit 130 without a word: main says it
    import fgvcbench.cli as cli
    import fgvcbench.report.leaderboard as lb

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(lb, "load_records", interrupt)
    monkeypatch.setattr(cli, "_interrupt_told", False)
    code, out, err = _main_exit(monkeypatch, capsys, "leaderboard", str(tmp_path))
    assert code == 130 and err.strip() == "interrupted — nothing finished is lost; run the same command to resume."
    # …and one while the CLI itself is imported (the console script's first moments)
    import importlib.abc
    import sys

    class Interrupts(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fgvcbench.cli":
                raise KeyboardInterrupt
    monkeypatch.delitem(sys.modules, "fgvcbench.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupts(), *sys.meta_path])
    from fgvcbench._entry import main
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130 and "interrupted — nothing was changed" in capsys.readouterr().err


def test_output_to_a_full_disk_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    import errno
    import io
    import sys

    from conftest import tiny_suite

    class Full(io.TextIOBase):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    suite = tiny_suite(tmp_path)
    monkeypatch.setattr("sys.argv", ["fgvcbench", "run", str(suite), "--dry-run"])
    monkeypatch.setattr(sys, "stdout", Full())
    from fgvcbench.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.strip() == ("error: cannot write the output: No space left on device — free space where it goes, "
                           "or send it elsewhere; nothing finished is lost")
    # an OSError of something else (here: listing plugins) is not worded as the output's failure
    import fgvcbench.plugins as plugins_module

    def broken(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(plugins_module, "get_registry", broken)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr("sys.argv", ["fgvcbench", "plugins"])
    with pytest.raises(OSError, match="Cannot allocate memory"):
        main()


def test_a_reader_that_goes_away_neither_stops_a_suite_nor_fails_the_command(tmp_path):
    """``fgvcbench run SUITE | head -1``: the pipe closes after the first line, and the suite
    still finishes every run and exits 0; a listing into a closed pipe exits 0 without a
    word (click would exit 1, and stop a suite half-way)."""
    import shutil
    import subprocess
    import sys

    from conftest import tiny_suite
    suite = tiny_suite(tmp_path, seeds="[0, 1, 2]")

    def piped(*args, both=False):   # both: stderr into the same pipe, as `2>&1 | head -1`
        proc = subprocess.Popen([sys.executable, "-m", "fgvcbench.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if both else subprocess.PIPE, cwd=tmp_path)
        proc.stdout.readline()
        proc.stdout.close()   # the reader goes away, as `head -1` does
        err = "" if both else proc.stderr.read().decode()
        return proc.wait(timeout=600), err
    code, err = piped("run", str(suite), "--no-progress")
    assert code == 0 and "Traceback" not in err and "Broken pipe" not in err, err
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 3
    code, err = piped("plugins")
    assert code == 0 and err == "", err
    shutil.rmtree(tmp_path / "out")
    assert piped("run", str(suite), both=True)[0] == 0
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 3
    # a stream the shell closed (`>&-`, `2>&-`) is None in Python: no traceback at import
    for close in (">&-", "2>&-"):
        done = subprocess.run(["sh", "-c", f'"$0" -m fgvcbench.cli plugins {close}', sys.executable],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr + done.stdout, (close, done.stderr)
    import copy
    import io

    from fgvcbench._cli_output import GuardedStdout
    copied = copy.copy(GuardedStdout(io.StringIO()))     # no endless __getattr__ while it has no stream yet
    assert copied.write("x") == 1


def test_the_command_listing_flows_each_docstring_as_one_paragraph(monkeypatch, capsys):
    code, out, _ = _main_exit(monkeypatch, capsys, "--help")
    listing = " ".join(line.strip("│ ").strip() for line in out.splitlines())
    assert code == 0 and "accuracy vs training time, per-seed spread" in " ".join(listing.split())
    code, out, _ = _main_exit(monkeypatch, capsys, "data", "--help")
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert code == 0 and not any(row.strip("│ ").startswith("1: problems") for row in rows)   # joined, not broken
    code, out, _ = _main_exit(monkeypatch, capsys, "leaderboard", "--help")
    assert "RESULTS_DIR}..." in out and "RESULTS_DIRS..." not in out


def test_a_method_param_of_the_wrong_type_exits_2_before_any_run(tmp_path, runner):
    suite = tiny_suite(tmp_path, methods="[finetune, {name: finernet, params: {k: 2.5}}]")
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "methods[1].params.k" in out and "expected an integer or null, got float 2.5" in out
    assert str(suite.name) in out and not (tmp_path / "out" / "runs").exists()


def test_a_method_param_outside_its_choices_names_the_variant(tmp_path, runner):
    suite = tiny_suite(tmp_path, methods="[{name: finernet, variants: [default, readme], params: {knn_backend: gpu}}]")
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    assert "finernet knn_backend: 'gpu'" in out and "auto, faiss, torch" in out
    suite = tiny_suite(tmp_path, methods="[{name: fine_labels, variants: [stacked, multi_head_0.1], "
                                         "params: {alpha: 1.5}}]")
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    assert "variant 'multi_head_0.1'" not in out and "fine_labels alpha: 1.5" in out   # the first variant fails


def test_param_types_follow_defaults_and_declarations():
    import pytest
    method = Method(name="m", run=lambda ctx: {"top1": 0.0},
                    params={"rate": 0.5, "steps": 3, "flag": False, "name": "a", "k": None, "size": None},
                    param_types={"k": (int, None)})
    assert method.param_problem("rate", 1) is None                 # an int is a number …
    resolved = method.resolve_params("default", {"rate": 1, "steps": 4, "flag": True})
    assert resolved["rate"] == 1.0 and isinstance(resolved["rate"], float)   # … and one run with 1.0
    assert isinstance(resolved["steps"], int) and resolved["flag"] is True
    assert "expected a number" in method.param_problem("rate", "high")
    assert "expected an integer" in method.param_problem("steps", 3.0)
    assert "expected true or false" in method.param_problem("flag", 1)
    assert "expected an integer" in method.param_problem("steps", True)   # bool is not a number
    assert method.param_problem("k", None) is None and method.param_problem("k", 4) is None
    assert "expected an integer or null" in method.param_problem("k", "4")
    assert method.param_problem("size", [1, 2]) is None           # a null default without a declaration
    with pytest.raises(ValueError, match="variant 'bad'"):
        Method(name="m", run=lambda ctx: {}, params={"rate": 0.5}, variants={"bad": {"rate": "x"}})
    with pytest.raises(ValueError, match="tuple of types"):
        Method(name="m", run=lambda ctx: {}, params={"k": None}, param_types={"k": "int"})


def test_a_run_started_through_the_api_checks_its_params(tmp_path):
    """Callers that skip the suite loader (execute_run directly) get a failed record, not a crash."""
    import torch
    from fgvcbench.plugins import get_registry
    from fgvcbench.run import execute_run
    from fgvcbench.store import Store
    from fgvcbench.suite import load_suite
    registry = get_registry(refresh=True)
    spec = load_suite(tiny_suite(tmp_path, methods="[finernet]"), registry).runs[0]
    bad = spec.__class__(**{**spec.__dict__, "params": {**spec.params, "selection": "latest"}})
    record = execute_run(bad, registry, Store(tmp_path / "store"), device=torch.device("cpu"),
                         cache_dir=tmp_path / "cache")
    assert record["status"] == "failed" and "finernet selection: 'latest'" in record["error"]


def test_a_dry_run_notes_a_missing_data_root_without_failing(tmp_path, runner):
    suite = tiny_suite(tmp_path, extra=f"data_root: {tmp_path / 'nowhere'}").read_text()
    suite = suite.replace("datasets: [", "datasets: [{name: cub}, ")
    (tmp_path / "s.yaml").write_text(suite)
    dry = runner.invoke(app, ["run", str(tmp_path / "s.yaml"), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "note: a real run here would stop: " in dry.output
    assert f"data root for 'cub' not found: {tmp_path / 'nowhere' / 'CUB_200_2011'}" in dry.output
    assert "synthetic" not in dry.output.split("note:")[1]                # only the missing one is named
    real = _one_line_exit_2(runner.invoke(app, ["run", str(tmp_path / "s.yaml"), "--no-progress"]))
    assert "data root for 'cub' not found" in real                        # a real run refuses it


def test_a_plugin_check_that_crashes_is_one_line_not_a_traceback(tmp_path, runner, registry_with):
    def check(params, recipe):
        return params["width"] / 0

    class Fragile:
        @hookimpl
        def fgvcbench_methods(self):
            return [Method(name="fragile", run=lambda ctx: {"top1": 1.0}, params={"width": 2}, check=check)]
    registry_with(Fragile())
    out = _one_line_exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path, methods="[fragile]")), "--dry-run"]))
    assert "fragile's parameter check raised ZeroDivisionError" in out


def test_an_unknown_device_exits_2_from_the_suite_or_the_command_line_even_in_a_dry_run(tmp_path, runner):
    suite = tiny_suite(tmp_path)
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--device", "tpu"]))
    assert "--device 'tpu': unknown device — use auto, cpu, cuda, cuda:N or mps" in out
    (tmp_path / "gpu.yaml").write_text(suite.read_text().replace("device: cpu", "device: gpu"))
    out = _one_line_exit_2(runner.invoke(app, ["run", str(tmp_path / "gpu.yaml"), "--dry-run"]))
    assert "gpu.yaml" in out and "unknown device 'gpu'" in out
    assert runner.invoke(app, ["run", str(suite), "--dry-run", "--device", "cuda:1"]).exit_code == 0   # a preview


def test_a_missing_data_root_suggests_what_would_count(tmp_path, runner):
    base = "methods: [finetune]\ndatasets: [cub]\nbackbones: [test_resnet]\n"
    (tmp_path / "free.yaml").write_text(base)
    (tmp_path / "fixed.yaml").write_text(base + f"data_root: {tmp_path / 'nowhere'}\n")
    free = _one_line_exit_2(runner.invoke(app, ["run", str(tmp_path / "free.yaml")]))
    assert "pass --data-root DIR or set FGVCBENCH_DATA (the folder that holds CUB_200_2011)" in free
    fixed = _one_line_exit_2(runner.invoke(app, ["run", str(tmp_path / "fixed.yaml")]))
    assert "pass --data-root DIR (the folder" in fixed and "FGVCBENCH_DATA" not in fixed   # the suite's outranks it
    given = _one_line_exit_2(runner.invoke(app, ["run", str(tmp_path / "free.yaml"), "--data-root", str(tmp_path)]))
    assert "check --data-root" in given


def test_a_bad_decode_cache_setting_stops_the_command_before_any_run(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("FGVCBENCH_DECODE_CACHE", "bogus")
    out = _one_line_exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path)), "--no-progress"]))
    assert "FGVCBENCH_DECODE_CACHE='bogus' — use auto, memory or memmap, or unset it" in out
    assert not (tmp_path / "out" / "runs").exists()                      # no run started, none failed


@pytest.mark.parametrize("train, needle", [
    ("lr: .nan", "train.lr: training setting lr must be a finite number"),
    ("lr: .inf", "train.lr: training setting lr must be a finite number"),
    ("gamma: -1", "train.gamma: training setting gamma must be > 0"),        # a negative lr every other step
    ("grad_clip: -1", "train.grad_clip: training setting grad_clip must be the largest gradient norm"),  # flips
])
def test_training_values_that_would_train_wrongly_exit_2_before_any_run(tmp_path, runner, train, needle):
    suite = tiny_suite(tmp_path)
    text = suite.read_text()
    assert "train: {" in text
    suite.write_text(text.replace("train: {", f"train: {{{train}, ", 1))
    assert needle in _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))


def test_seed_counts_and_values_beyond_what_a_generator_takes_exit_2(tmp_path, runner):
    suite = tiny_suite(tmp_path)
    for seeds in ("99999999999999999999", "4294967296"):   # a count: never a list of billions
        out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--seeds", seeds]))
        assert "at most 10,000 seeds" in out
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--seeds", "99999999999999999999,"]))
    assert "seeds from 0 to 2147483647" in out
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--seeds", "0,1,1"]))
    assert "seed 1 is listed twice — list each seed once" in out
    suite.write_text(suite.read_text().replace("seeds: [0]", "seeds: [99999999999999999999]"))
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))
    assert "seeds[0]: a seed must be an integer from 0 to 2147483647" in out


def test_what_a_run_would_refuse_a_dry_run_refuses_too(tmp_path, runner):
    suite = tiny_suite(tmp_path)
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--workers", "0"]))
    assert "--workers 0: use a count from 1 to 256" in out
    out = _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run", "--executor", "slurm"]))
    assert "--executor 'slurm'" in out


def test_an_unwritable_cache_stops_the_suite_before_any_run(tmp_path, runner, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("FGVCBENCH_CACHE", str(blocker / "cache"))
    out = _one_line_exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path)), "--no-progress"]))
    assert "cannot write the cache to" in out and "FGVCBENCH_CACHE" in out
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_there_is_none_exits_2(tmp_path, runner):
    out = _one_line_exit_2(runner.invoke(app, ["run", str(tiny_suite(tmp_path)), "--device", "mps", "--no-progress"]))
    assert "MPS is not available here" in out


@pytest.mark.parametrize("params, needle", [
    ("{phase3_momentum: -5}", "finernet phase3_momentum: -5.0 — use a number in [0, 1]"),
    ("{phase3_weight_decay: -1}", "finernet phase3_weight_decay: -1.0 — use a number >= 0"),
    ("{phase3_lr: .inf}", "finernet phase3_lr: inf — use a positive number"),
])
def test_finernet_phase3_values_no_optimiser_takes_exit_2_before_phase1_trains(tmp_path, runner, params, needle):
    suite = tiny_suite(tmp_path, methods=f"[{{name: finernet, params: {params}}}]")
    assert needle in _one_line_exit_2(runner.invoke(app, ["run", str(suite), "--dry-run"]))

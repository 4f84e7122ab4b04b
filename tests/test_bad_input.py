"""Bad input met as a new user meets it: each case exits 2 with one line that says what
to do (no traceback), or, where it is one run's fault, fails that run and lets the suite go on."""

from __future__ import annotations

import json

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

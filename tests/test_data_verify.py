"""`fgvcbench data verify` catches planted corruption and train/test duplicates."""

from __future__ import annotations

import json
import shutil

from fgvcbench.cli import app
from fgvcbench.plugins import get_registry

from conftest import SHARED_DATA
from test_dataset_formats import make_cub


def test_clean_dataset_passes_and_reports_counts(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert report["splits"]["train"] == {"003.Sooty_Albatross": 2, "007.Parakeet_Auklet": 2, "009.Brewer_Blackbird": 2}
    assert sum(report["splits"]["test"].values()) == 3


def test_planted_corruption_duplicate_and_missing_file_are_each_reported(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    images = sorted((root / "images").rglob("*.jpg"))
    train_img, test_img = images[0], images[2]           # _0, _1 train; _2 test (per class)
    data = train_img.read_bytes()
    images[1].write_bytes(data[: len(data) // 2])        # truncated JPEG
    shutil.copyfile(train_img, test_img)                 # the same file in train and test
    images[3].unlink()                                   # listed but gone
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if "fix:" in line]
    kinds = sorted(line.split(":")[0] for line in lines)
    assert kinds == ["corrupt", "duplicate", "missing"], result.stdout
    assert any(str(images[1]) in line for line in lines if line.startswith("corrupt"))
    assert any(str(test_img) in line and str(train_img) in line for line in lines if line.startswith("duplicate"))
    assert "3 problems found" in result.stdout


def test_bad_input_exits_2(tmp_path, runner):
    get_registry(refresh=True)
    assert "did you mean 'cub'" in runner.invoke(app, ["data", "verify", "cubb", "--root", str(tmp_path)]).output
    missing = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "images.txt" in missing.output and "Traceback" not in missing.output
    bad_opt = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path), "-o", "crop"])
    assert bad_opt.exit_code == 2 and "KEY=VALUE" in bad_opt.output


def test_real_cub_subset_verifies(runner):
    import pytest
    root = SHARED_DATA / "CUB_200_2011_first50"
    if not root.is_dir():
        pytest.skip(f"real CUB subset not found at {root}")
    get_registry(refresh=True)
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"])
    report = json.loads(result.stdout)
    assert sum(report["splits"]["train"].values()) == 1500 and sum(report["splits"]["test"].values()) == 1389
    assert result.exit_code == (1 if report["problems"] else 0)

"""The README's quickstart, as a new user runs it (one seed, to keep CI short)."""

from __future__ import annotations

import pandas as pd
import pytest

from fgvcbench.cli import app
from fgvcbench.plugins import get_registry

from conftest import ROOT


@pytest.mark.slow
def test_quickstart_pretrained_finetuning_beats_raw_pixels(runner, tmp_path):
    get_registry(refresh=True)
    args = ["run", str(ROOT / "suites" / "quickstart.yaml"), "--seeds", "1", "--output", str(tmp_path),
            "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index(["backbone", "variant"])
    finetuned = board.loc[("tf_efficientnet_lite0", "default"), "top1_mean"]
    probe = board.loc[("tf_efficientnet_lite0", "linear_probe"), "top1_mean"]
    pixels = board.loc[("pixels", "default"), "top1_mean"]
    # 16 classes: chance is 6.25 %. Fine-tuning must clearly beat a linear model on pixels.
    assert finetuned > pixels + 15 and finetuned > probe
    assert "recipe ablation · synthetic · tf_efficientnet_lite0" in result.output   # the short ablation table
    assert (tmp_path / "ablation.csv").exists()
    assert "against finetune:default" in result.output and (tmp_path / "baseline.csv").exists()   # its baseline:
    n_records = len(list((tmp_path / "runs").glob("*.json")))
    again = runner.invoke(app, args)
    assert f"0 ran, {n_records} resumed" in again.output

"""A third party's plugin, installed as its own distribution, runs through a suite; a
plugin that raises at import is reported and skipped while the CLI keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_DATASET

MAJORITY = '''
"""Predicts the most frequent training class: a floor any method must beat."""
from collections import Counter
from fgvcbench.api import Method, hookimpl

def run(ctx):
    splits = ctx.load_splits()
    majority = Counter(splits.train.labels).most_common(1)[0][0]
    hits = sum(label == majority for label in splits.test.labels)
    return {"top1": 100.0 * hits / len(splits.test.labels), "majority_class": majority}

@hookimpl
def fgvcbench_methods():
    return [Method(name="majority_class", run=run, description="predict the most frequent class")]
'''


def make_distribution(root: Path, dist: str, module: str, source: str, version: str) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"

        [project.entry-points.fgvcbench]
        {module} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
        """))
    (root / f"{module}.py").write_text(source)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("thirdparty")
    good = make_distribution(tmp / "good", "fgvcbench-majority", "fgvcbench_majority", MAJORITY, "0.3.1")
    broken = make_distribution(tmp / "broken", "fgvcbench-broken", "fgvcbench_broken",
                               "raise ImportError('this plugin is broken on purpose')\n", "9.9")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(good), str(broken)], check=True)
    return target


def cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "fgvcbench.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_third_party_method_runs_through_a_suite(site, tmp_path):
    suite = tmp_path / "third.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: third
        output: {tmp_path / 'out'}
        device: cpu
        datasets: [{TINY_DATASET}]
        backbones: [pixels]
        methods: [majority_class, finetune]
        """))
    result = cli(site, "run", str(suite), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "fgvcbench_broken" in result.stderr and "broken on purpose" in result.stderr  # reported, skipped
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    majority = [r for r in records if r["spec"]["method"] == "majority_class"]
    assert len(majority) == 1 and majority[0]["status"] == "ok"
    # the synthetic test split is balanced over 4 classes: majority voting gets 1/4 right
    assert majority[0]["metrics"]["top1"] == pytest.approx(25.0)
    assert "majority_class" in (tmp_path / "out" / "leaderboard.csv").read_text()


def test_plugins_lists_third_party_and_broken(site, tmp_path):
    result = cli(site, "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["fgvcbench_majority"]["distribution"] == "fgvcbench-majority"
    assert plugins["fgvcbench_majority"]["version"] == "0.3.1"
    assert plugins["fgvcbench_majority"]["provides"] == {"methods": ["majority_class"]}
    assert "broken on purpose" in plugins["fgvcbench_broken"]["error"]
    assert plugins["baseline"]["error"] is None

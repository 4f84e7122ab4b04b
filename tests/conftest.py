"""Shared fixtures: an isolated cache, tiny suites, a registry with test plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fgvcbench.plugins as plugins_mod
from fgvcbench.plugins import Registry, get_registry

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches into one session-wide temp dir, never ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "fgvcbench-cache"
    monkeypatch.setenv("FGVCBENCH_CACHE", str(cache))
    monkeypatch.delenv("FGVCBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("FGVCBENCH_DATA", raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def registry_with(monkeypatch):
    """Install a registry made of the entry-point plugins plus test plugin objects, as
    the one the CLI uses."""
    def make(*extra) -> Registry:
        registry = Registry()
        registry.load_entry_points()
        for obj in extra:
            registry.register(obj)
        monkeypatch.setattr(plugins_mod, "_REGISTRY", registry)
        return registry
    yield make
    get_registry(refresh=True)


TINY_DATASET = "{name: synthetic, options: {coarse: 2, fine: 2, train_per_class: 8, test_per_class: 4, image_size: 40}}"


def records_by_variant(out: Path) -> dict[str, dict]:
    """The run records under ``out/runs``, keyed by variant (suites with one run per variant)."""
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    return {r["spec"]["variant"]: r for r in records}


def write_suite(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def tiny_suite(tmp_path: Path, *, methods: str = "[finetune]", backbones: str = "[test_resnet]",
               seeds: str = "[0]", extra: str = "", epochs: int = 1, batch_size: int = 8,
               datasets: str = f"[{TINY_DATASET}]", device: str = "cpu", scale: str | None = "smoke") -> Path:
    """A suite in ``tmp_path`` writing to ``tmp_path/out``: tiny synthetic data, 32 px,
    ``test_resnet``; ``extra`` is more top-level YAML (one line, or lines indented by 8)."""
    return write_suite(tmp_path, f"""
        name: tiny
        output: {tmp_path / 'out'}
        {f"scale: {scale}" if scale else ""}
        seeds: {seeds}
        device: {device}
        train: {{epochs: {epochs}, image_size: 32, batch_size: {batch_size}}}
        datasets: {datasets}
        backbones: {backbones}
        methods: {methods}
        {extra}
        """)

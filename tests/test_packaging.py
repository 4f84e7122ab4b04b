"""The packaging list in pyproject.toml matches the package folders on disk: ``plugins/``
installs as ``fgvcbench_plugins``, so its packages are listed by hand, and a folder left
out would be missing from a non-editable install."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = config["package-dir"]                      # import name → folder
    on_disk = set()
    for name, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *parts)))
    listed = set(config["packages"])
    assert on_disk - listed == set(), "package folders missing from pyproject.toml's packages"
    assert listed - on_disk == set(), "packages listed in pyproject.toml without a folder"
    assert {"fgvcbench_plugins.simtrans", "fgvcbench.report"} <= listed


def test_builtin_plugins_are_entry_points():
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["fgvcbench"]
    packages = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
    assert {v.split(".")[1] for v in eps.values()} == packages

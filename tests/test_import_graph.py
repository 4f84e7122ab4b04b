"""The core never imports the built-in plugins; plugins import only fgvcbench.api."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_plugins():
    offenders = []
    for path in (ROOT / "fgvcbench").rglob("*.py"):
        for name in imported_modules(path):
            if name.split(".")[0] in ("fgvcbench_plugins", "plugins"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_plugins_import_only_the_public_api():
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        for name in imported_modules(path):
            if name.startswith("fgvcbench") and name != "fgvcbench.api" and not name.startswith("fgvcbench_plugins"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders
    assert any((ROOT / "plugins").rglob("*.py"))

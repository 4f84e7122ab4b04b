"""`fgvcbench new-plugin`: the scaffolded distribution installs, is found through its
entry point, and passes its own test out of the box; bad names and existing folders
are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fgvcbench.cli import app
from fgvcbench.errors import UserError
from fgvcbench.scaffold import scaffold


def test_scaffolded_plugin_installs_and_passes_its_own_test(tmp_path, runner):
    result = runner.invoke(app, ["new-plugin", "head-warmup", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "fgvcbench-head-warmup"
    assert (root / "pyproject.toml").read_text().count('fgvcbench_head_warmup = "fgvcbench_head_warmup"') == 1
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(root)], check=True)
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    listed = subprocess.run([sys.executable, "-m", "fgvcbench.cli", "plugins", "--json"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert '"head_warmup"' in listed.stdout and "fgvcbench-head-warmup" in listed.stdout
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "3 passed" in test.stdout


def test_bad_name_and_existing_folder_are_one_line_errors(tmp_path, runner):
    bad = runner.invoke(app, ["new-plugin", "Bad Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "lowercase" in bad.output and "Traceback" not in bad.output
    assert runner.invoke(app, ["new-plugin", "twice", "--dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["new-plugin", "twice", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output
    source = tmp_path / "fgvcbench-twice" / "src" / "fgvcbench_twice" / "__init__.py"
    first = source.read_text()
    source.write_text("broken by hand\n")
    (tmp_path / "fgvcbench-twice" / "notes.txt").write_text("mine")
    assert runner.invoke(app, ["new-plugin", "twice", "--dir", str(tmp_path), "--force"]).exit_code == 0
    assert source.read_text() == first                                     # written again
    assert (tmp_path / "fgvcbench-twice" / "notes.txt").read_text() == "mine"   # other files stay


def test_a_name_that_clashes_with_a_registered_method_is_refused(tmp_path, runner):
    """The registry keeps the first of two methods with one name: a second `finetune` would be ignored."""
    clash = runner.invoke(app, ["new-plugin", "finetune", "--dir", str(tmp_path)])
    assert clash.exit_code == 2 and "Traceback" not in clash.output
    assert "'finetune' is already registered (plugin 'baseline')" in clash.output and "my-finetune" in clash.output
    assert not (tmp_path / "fgvcbench-finetune").exists()
    assert runner.invoke(app, ["new-plugin", "my-finetune", "--dir", str(tmp_path)]).exit_code == 0
    # an installed scaffold (its entry point is its module) may be regenerated in place with --force
    own = {"my_method": "fgvcbench_my_method"}
    assert scaffold("my-method", tmp_path, force=True, taken=own).name == "fgvcbench-my-method"
    with pytest.raises(UserError, match="registered by the installed fgvcbench_my_method .this plugin. — pass --force"):
        scaffold("my-method", tmp_path, force=False, taken=own)
    with pytest.raises(UserError, match="already registered"):
        scaffold("my-method", tmp_path, force=True, taken={"my_method": "someone_else"})


def test_a_name_yaml_reads_as_a_boolean_stays_a_string_in_the_generated_suites(tmp_path):
    """`off`, `no`, `null` are words YAML turns into false/None: the templates quote the name."""
    import re

    import yaml
    root = scaffold("off", tmp_path)
    test_text = (root / "tests" / "test_off.py").read_text()
    suites = re.findall(r"methods: (\[.*\])", test_text)
    assert len(suites) == 2
    for line in suites:   # the f-strings' doubled braces are single in the written suite
        methods = yaml.safe_load(line.replace("{{", "{").replace("}}", "}"))
        assert methods[0]["name"] == "off"
    readme_yaml = re.search(r"```yaml\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    assert yaml.safe_load(readme_yaml)["methods"][0]["name"] == "off"

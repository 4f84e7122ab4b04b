"""The plugin manager: entry points, listing, broken plugins, subsets."""

from __future__ import annotations

import json
import types

import pytest

from fgvcbench.api import Method, hookimpl
from fgvcbench.cli import app
from fgvcbench.plugins import Registry, get_registry


def test_builtins_come_from_entry_points():
    registry = get_registry(refresh=True)
    assert {"baseline", "datasets", "backbones"} <= set(registry.plugins)
    assert registry.origin[("methods", "finetune")] == "baseline"
    info = registry.plugins["baseline"]
    assert info.distribution == "fgvcbench" and info.version and "fgvcbench_methods" in info.hooks
    assert "synthetic" in registry.datasets and registry.find_backbone("test_resnet") is not None
    assert registry.find_backbone("pixels").name == "pixels"
    assert registry.find_backbone("no_such_model_xyz") is None
    assert registry.list("methods", "fine*") == ["fine_labels", "finernet", "finetune"]
    assert registry.list("recipe_steps", "*aug*") == ["autoaugment", "repeated_augmentation", "trivial_augment"]


def test_subset_via_env(monkeypatch):
    monkeypatch.setenv("FGVCBENCH_PLUGINS", "datasets")
    registry = get_registry(refresh=True)
    assert set(registry.plugins) == {"datasets"} and not registry.methods
    monkeypatch.setenv("FGVCBENCH_PLUGINS", "")
    empty = get_registry(refresh=True)
    assert empty.plugins == {} and "FGVCBENCH_PLUGINS is set but empty" in empty.warnings[0]
    monkeypatch.setenv("FGVCBENCH_PLUGINS", "finernt,datasets")   # a typo is said, not silently nothing
    registry = get_registry(refresh=True)
    assert set(registry.plugins) == {"datasets"}
    assert registry.warnings == ["FGVCBENCH_PLUGINS names 'finernt', which is not installed — did you mean "
                                 "'finernet'?"]
    monkeypatch.delenv("FGVCBENCH_PLUGINS")
    get_registry(refresh=True)


def test_hook_that_raises_is_reported_and_the_rest_still_loads():
    bad = types.ModuleType("bad_plugin")

    @hookimpl
    def fgvcbench_methods():
        raise RuntimeError("boom")
    bad.fgvcbench_methods = fgvcbench_methods

    good = types.ModuleType("good_plugin")

    @hookimpl
    def fgvcbench_methods():  # noqa: F811
        return [Method(name="noop", run=lambda ctx: {"top1": 1.0})]
    good.fgvcbench_methods = fgvcbench_methods

    registry = Registry()
    registry.register(bad)
    registry.register(good)
    assert "boom" in registry.plugins["bad_plugin"].error
    assert "noop" in registry.methods


def test_name_clash_keeps_first_and_warns():
    def plugin(name):
        mod = types.ModuleType(name)
        mod.fgvcbench_methods = hookimpl(lambda: [Method(name="same", run=lambda ctx: {"top1": 0.0},
                                                         description=name)])
        return mod
    registry = Registry()
    registry.register(plugin("first"))
    registry.register(plugin("second"))
    assert registry.methods["same"].description == "first"
    assert any("clashes" in w for w in registry.warnings)


def test_plugins_command_table_and_json(runner):
    get_registry(refresh=True)
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["baseline"]["provides"]["methods"] == ["finetune"]
    assert by_name["baseline"]["distribution"] == "fgvcbench"
    assert "fgvcbench_backbones" in by_name["backbones"]["hooks"]
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0 and "finetune" in result.stdout and "synthetic" in result.stdout


def test_plugins_name_shows_what_a_suite_can_set(runner):
    get_registry(refresh=True)
    out = runner.invoke(app, ["plugins", "finernet", "--json"])
    assert out.exit_code == 0, out.output
    described = json.loads(out.stdout)
    assert described["kind"] == "method" and described["plugin"] == "finernet" and described["checks_values"]
    accepts = {row["param"]: row["accepts"] for row in described["params"]}
    assert accepts["k"] == "an integer or null" and accepts["frozen_bn"] == "true or false"
    assert accepts["pipeline"] == "one of code, readme, single_step"
    assert described["variants"]["readme"] == {"pipeline": "readme"} and described["recipe"]["lr"] == 1e-3
    table = runner.invoke(app, ["plugins", "finernet"])
    assert table.exit_code == 0 and "alpha_0.4" in table.stdout and "scale paper" in table.stdout
    cub = json.loads(runner.invoke(app, ["plugins", "cub", "--json"]).stdout)
    assert cub["kind"] == "dataset" and cub["default_root"] == "CUB_200_2011" and "images.txt" in cub["layout"]
    assert cub["choices"]["crop"] == ["none", "bbox"]
    view = runner.invoke(app, ["plugins", "weak_shot"], terminal_width=300)
    assert 'noise_pool="base_test" (one of base_test | train)' in " ".join(view.stdout.split())
    step = json.loads(runner.invoke(app, ["plugins", "label_smoothing", "--json"]).stdout)
    assert step["kind"] == "recipe step" and step["plugin"] == "recipe"
    assert step["sets"] == {"lr": 0.4, "label_smoothing": 0.1}   # what it changes on the default recipe
    cosine = runner.invoke(app, ["plugins", "cosine"])
    assert 'on the default recipe it sets: scheduler="cosine"' in cosine.stdout
    timm_name = json.loads(runner.invoke(app, ["plugins", "test_resnet", "--json"]).stdout)
    assert timm_name["kind"] == "backbone" and timm_name["served_by"] == "timm"
    typo = runner.invoke(app, ["plugins", "finrnet"])
    assert typo.exit_code == 2 and "did you mean 'finernet'?" in typo.output and "Traceback" not in typo.output


def test_plugins_json_is_strict_json_when_a_default_is_not_finite(runner, registry_with):
    mod = types.ModuleType("endless")
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="endless", run=lambda ctx: {"top1": 1.0},
                                                     params={"max_loss": float("inf"), "margin": 0.2})])
    registry_with(mod)
    out = runner.invoke(app, ["plugins", "endless", "--json"])
    assert out.exit_code == 0, out.output
    described = json.loads(out.stdout, parse_constant=lambda token: pytest.fail(f"--json printed {token}"))
    defaults = {row["param"]: row["default"] for row in described["params"]}
    assert defaults == {"max_loss": None, "margin": 0.2}


def test_param_choices_are_checked_and_must_hold_the_default():
    import pytest
    from fgvcbench.api import Recipe, UserError
    method = Method(name="m", run=lambda ctx: {"top1": 0.0}, params={"mode": "a"}, param_choices={"mode": ("a", "b")})
    method.check_params({"mode": "b"}, Recipe())
    with pytest.raises(UserError, match=r"m mode: 'c' — use one of a, b"):
        method.check_params({"mode": "c"}, Recipe())
    with pytest.raises(ValueError, match="holding the default"):
        Method(name="m", run=lambda ctx: {}, params={"mode": "z"}, param_choices={"mode": ("a", "b")})


def test_misspelt_unmarked_and_wrongly_typed_hooks_are_said():
    from fgvcbench.api import RecipeStep
    typo = types.ModuleType("typo_plugin")

    @hookimpl
    def fgvcbench_method():                 # singular: no such hook
        return []
    typo.fgvcbench_method = fgvcbench_method

    def fgvcbench_datasets():               # a real hook, but not marked @hookimpl
        return []
    typo.fgvcbench_datasets = fgvcbench_datasets

    wrong = types.ModuleType("wrong_plugin")

    @hookimpl
    def fgvcbench_methods():                # a recipe step where a Method belongs
        return [RecipeStep(name="oops", apply=lambda r: r)]
    wrong.fgvcbench_methods = fgvcbench_methods

    registry = Registry()
    registry.register(typo)
    registry.register(wrong)
    assert any("defines fgvcbench_method, which is no fgvcbench hook — did you mean fgvcbench_methods?" in w
               for w in registry.warnings)
    assert any("fgvcbench_datasets is not marked @hookimpl" in w for w in registry.warnings)
    assert "oops" not in registry.methods
    assert registry.plugins["wrong_plugin"].error.startswith("fgvcbench_methods returned a RecipeStep, not a Method")


def test_a_plugins_own_line_is_named_when_the_core_refuses_its_method():
    bad = types.ModuleType("bad_params")

    @hookimpl
    def fgvcbench_methods():
        return [Method(name="m", run=lambda ctx: {}, params={"a": 1}, variants={"v": {"b": 2}})]
    bad.fgvcbench_methods = fgvcbench_methods
    registry = Registry()
    registry.register(bad)
    (warning,) = registry.warnings
    assert "test_plugins.py:" in warning and "method.py" not in warning, warning
    assert "method 'm' skipped" in warning and "sets unknown params ['b']" in warning


def test_one_invalid_method_does_not_hide_the_plugins_other_methods():
    import pytest

    mod = types.ModuleType("mixed_plugin")

    @hookimpl
    def fgvcbench_methods():
        return [Method(name="fine", run=lambda ctx: {"top1": 1.0}),
                Method(name="broken", run=lambda ctx: {}, params={"k": 1}, param_choices={"k": [1, 2]}),
                Method(name="also_fine", run=lambda ctx: {"top1": 2.0})]
    mod.fgvcbench_methods = fgvcbench_methods
    registry = Registry()
    registry.register(mod)
    assert registry.list("methods") == ["also_fine", "fine"] and registry.plugins["mixed_plugin"].error is None
    assert registry.plugins["mixed_plugin"].provides == {"methods": ["fine", "also_fine"]}
    (warning,) = registry.warnings
    assert warning.startswith("plugin 'mixed_plugin': method 'broken' skipped — ") and "must be a tuple" in warning
    assert "test_plugins.py:" in warning
    # outside a plugin's hook, the same mistake is an error at once
    with pytest.raises(ValueError, match="must be a tuple"):
        Method(name="broken", run=lambda ctx: {}, params={"k": 1}, param_choices={"k": [1, 2]})


def test_a_plugin_datasets_mistakes_are_one_data_error(tmp_path):
    import pytest

    from fgvcbench.api import DatasetRequest, DatasetSplits, DatasetSpec, ImageList
    from fgvcbench.errors import DataError

    def images(labels):
        return ImageList([str(tmp_path / f"{i}.jpg") for i in range(len(labels))], labels, ["a", "b"])

    def spec(load):
        return DatasetSpec(name="mine", load=load, needs_root=False)
    request = DatasetRequest(root=None, options={}, cache_dir=tmp_path)
    cases = {
        "returned a tuple, not a DatasetSplits": lambda r: (images([0]), images([1])),
        "cannot read": lambda r: open(tmp_path / "nowhere.txt").read(),
        "found 7": lambda r: DatasetSplits(train=images([0, 7]), test=images([1])),
        "1 paths but 2 labels": lambda r: DatasetSplits(train=images([0]), test=ImageList(["x"], [0, 1], ["a", "b"])),
    }
    for needle, load in cases.items():
        with pytest.raises(DataError, match=needle):
            spec(load).load_checked(request)
    ok = spec(lambda r: DatasetSplits(train=images([0, 1]), test=images([1])))
    assert len(ok.load_checked(request).train) == 2


def test_a_hooks_wrong_return_and_every_problem_of_a_plugin_are_named_and_its_good_hooks_still_load(
        runner, tmp_path, registry_with):
    from fgvcbench.api import RecipeStep
    from fgvcbench.cli import app

    mod = types.ModuleType("sloppy_plugin")
    mod.fgvcbench_methods = hookimpl(lambda: Method(name="bare", run=lambda ctx: {"top1": 1.0}))   # not a list
    mod.fgvcbench_datasets = hookimpl(lambda: [{"name": "dict_dataset"}])
    mod.fgvcbench_recipe_steps = hookimpl(lambda: [RecipeStep(name="sloppy_step", apply=lambda r: r)])
    registry = registry_with(mod)
    error = registry.plugins["sloppy_plugin"].error
    assert "fgvcbench_methods returned a Method, not a list — return [Method(...), …]" in error
    assert "fgvcbench_datasets returned a dict, not a DatasetSpec" in error   # both kept, not the last only
    assert registry.list("recipe_steps", "sloppy*") == ["sloppy_step"]

    suite = tmp_path / "s.yaml"
    suite.write_text("datasets: [synthetic]\nbackbones: [test_resnet]\nmethods: [bare]\n")
    result = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert "plugin 'sloppy_plugin': fgvcbench_methods returned a Method" in result.output
    assert "(the rest of what it provides loaded)" in result.output and "skipped:" not in result.output


def test_a_method_skipped_as_invalid_is_named_with_its_reason_not_a_did_you_mean(runner, tmp_path, registry_with):
    from fgvcbench.cli import app

    mod = types.ModuleType("half_plugin")
    mod.fgvcbench_methods = hookimpl(lambda: [
        Method(name="half_good", run=lambda ctx: {"top1": 1.0}),
        Method(name="half_bad", run=lambda ctx: {}, variants={"v": {"nope": 1}})])
    registry_with(mod)
    suite = tmp_path / "s.yaml"
    suite.write_text("datasets: [synthetic]\nbackbones: [test_resnet]\nmethods: [half_bad]\n")
    result = runner.invoke(app, ["run", str(suite), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "method 'half_bad' was skipped when plugins loaded" in result.output
    assert "sets unknown params ['nope']" in result.output and "did you mean" not in result.output
    described = runner.invoke(app, ["plugins", "half_bad"])
    assert described.exit_code == 2 and "was skipped when plugins loaded" in described.output


def test_plugins_name_warns_when_another_plugin_s_item_of_that_name_was_refused(runner, registry_with):
    from fgvcbench.cli import app

    mods = []
    for plugin in ("first_plugin", "second_plugin"):
        mod = types.ModuleType(plugin)
        mod.fgvcbench_methods = hookimpl(lambda: [Method(name="twin", run=lambda ctx: {"top1": 1.0})])
        mods.append(mod)
    registry_with(*mods)
    result = runner.invoke(app, ["plugins", "twin"])
    assert result.exit_code == 0
    assert "rename the one in 'second_plugin'" in result.output
    assert ("method 'twin' from plugin 'second_plugin' clashes with the one from 'first_plugin', which is kept "
            "(it loaded first") in " ".join(result.output.split())


def test_an_entry_point_in_a_misspelt_group_is_warned_about():
    from importlib import metadata
    every = metadata.EntryPoints([metadata.EntryPoint("mine", "fgvcbench_mine", "fgvc_bench"),
                                  metadata.EntryPoint("other", "x", "console_scripts"),
                                  metadata.EntryPoint("fine", "y", "fgvcbench")])
    registry = Registry()
    registry._check_group_names(every)
    (warning,) = registry.warnings
    assert "entry point 'mine' in group 'fgvc_bench', which fgvcbench does not read" in warning
    assert "[project.entry-points.fgvcbench]" in warning


def test_a_generator_hook_that_raises_or_yields_an_invalid_method_is_that_plugin_s_error_only():
    mod = types.ModuleType("generator_plugin")

    @hookimpl
    def fgvcbench_methods():
        yield Method(name="from_generator", run=lambda ctx: {"top1": 1.0})
        yield Method(name="gen_bad", run=lambda ctx: {}, variants={"v": {"nope": 1}})
        raise RuntimeError("boom in generator")
    mod.fgvcbench_methods = fgvcbench_methods
    registry = Registry()
    registry.register(mod)   # must not raise: a broken plugin never takes the CLI down
    assert "RuntimeError: boom in generator" in registry.plugins["generator_plugin"].error
    assert "test_plugins.py:" in registry.plugins["generator_plugin"].error


def test_a_plugin_package_named_like_the_core_is_not_taken_for_the_core(tmp_path):
    """fgvcbench_<name> installed beside fgvcbench: its own line is still the one named."""
    import os

    from fgvcbench import plugins as plugins_module
    sibling = plugins_module._CORE + "_demo"   # .../site-packages/fgvcbench_demo
    frame = types.SimpleNamespace(filename=os.path.join(sibling, "__init__.py"), lineno=13)
    core = types.SimpleNamespace(filename=os.path.join(plugins_module._CORE, "method.py"), lineno=99)
    assert plugins_module._where([frame, core]) == " (__init__.py:13)"


def test_the_readme_s_step_backbone_and_dataset_plugin_runs_as_printed(tmp_path, runner, registry_with, monkeypatch):
    """The README's second plugin module, exactly as printed: its step, backbone family and
    generated dataset run through a suite, and the step is ablated."""
    import re

    from conftest import ROOT, write_suite
    block = next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                 if b.startswith("# src/my_fgvc/more.py"))
    mod = types.ModuleType("my_fgvc_more")
    exec(compile(block, "README.md", "exec"), mod.__dict__)   # noqa: S102 — the project's own README
    registry_with(mod)
    monkeypatch.setenv("FGVCBENCH_CACHE", str(tmp_path / "cache"))
    suite = write_suite(tmp_path, f"""
        scale: smoke
        device: cpu
        output: {tmp_path / 'out'}
        seeds: [0]
        train: {{epochs: 1, image_size: 32, batch_size: 8}}
        datasets: [{{name: myblobs, options: {{classes: 3}}}}]
        backbones: [tinynet_8]
        ablation: {{steps: [base, my_wd]}}
        """)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert sorted(r["spec"]["variant"] for r in records) == ["steps:base", "steps:my_wd"]
    assert all(r["status"] == "ok" for r in records)
    with_wd = next(r for r in records if r["spec"]["variant"] == "steps:my_wd")
    assert with_wd["notes"]["applied_recipe"]["weight_decay"] == 5e-4
    assert with_wd["data"]["classes"] == 3 and with_wd["data"]["images"] == {"train": 24, "test": 12}
    assert with_wd["provenance"]["plugins"]["backbone tinynet_8"]["name"] == "my_fgvc_more"
    ablated = runner.invoke(app, ["ablate", "--step", "my_wd", "--suite", str(suite), "--no-progress"])
    assert ablated.exit_code == 0 and "Δ top-1 (my_wd)" in ablated.output, ablated.output
    import pytest

    from fgvcbench.api import UserError
    for name, pretrained in (("tinynet", False), ("tinynet_8", True)):   # what the family cannot build
        with pytest.raises(UserError, match="write tinynet_<width>"):
            mod.create_tinynet(name, 3, pretrained)

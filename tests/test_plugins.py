"""The plugin manager: entry points, listing, broken plugins, subsets."""

from __future__ import annotations

import json
import types

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
    assert get_registry(refresh=True).plugins == {}
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
    step = json.loads(runner.invoke(app, ["plugins", "label_smoothing", "--json"]).stdout)
    assert step["kind"] == "recipe step" and step["plugin"] == "recipe"
    timm_name = json.loads(runner.invoke(app, ["plugins", "test_resnet", "--json"]).stdout)
    assert timm_name["kind"] == "backbone" and timm_name["served_by"] == "timm"
    typo = runner.invoke(app, ["plugins", "finrnet"])
    assert typo.exit_code == 2 and "did you mean 'finernet'?" in typo.output and "Traceback" not in typo.output


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

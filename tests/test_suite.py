"""Suites: validation errors name file, line and key; grids expand as documented."""

from __future__ import annotations

import pytest

from fgvcbench.errors import SuiteError, UserError
from fgvcbench.plugins import get_registry
from fgvcbench.spec import canonical_json
from fgvcbench.suite import SCALES, load_suite

from conftest import ROOT, TINY_DATASET, tiny_suite, write_suite


@pytest.fixture(scope="module")
def registry():
    return get_registry(refresh=True)


def error_of(path, registry, **kw) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        load_suite(path, registry, **kw)
    return info.value


def test_grid_expansion_exclude_and_ids(tmp_path, registry):
    path = tiny_suite(tmp_path, methods="[{name: finetune, variants: all}]",
                      backbones="[test_resnet, pixels]", seeds="[0, 1]",
                      extra="exclude: [{backbone: pixels, variant: linear_probe}]")
    suite = load_suite(path, registry)
    combos = sorted((r.backbone["name"], r.variant, r.seed) for r in suite.runs)
    assert combos == [("pixels", "default", 0), ("pixels", "default", 1),
                      ("test_resnet", "default", 0), ("test_resnet", "default", 1),
                      ("test_resnet", "linear_probe", 0), ("test_resnet", "linear_probe", 1)]
    assert len({r.run_id for r in suite.runs}) == 6
    probe = next(r for r in suite.runs if r.variant == "linear_probe")
    assert probe.params["freeze_backbone"] is True
    # the id ignores the suite's name and the data root, and is stable across loads
    again = load_suite(path, registry, output=str(tmp_path / "elsewhere"))
    assert sorted(r.run_id for r in again.runs) == sorted(r.run_id for r in suite.runs)


def test_merge_order_scale_then_suite_then_method(tmp_path, registry):
    path = write_suite(tmp_path, f"""
        scale: short
        train: {{lr: 0.05, epochs: 3}}
        datasets: [{TINY_DATASET}]
        backbones: [test_resnet]
        methods:
          - {{name: finetune, train: {{lr: 0.2}}}}
        """)
    run = load_suite(path, registry).runs[0]
    assert run.recipe["image_size"] == SCALES["short"]["recipe"]["image_size"]  # from the scale
    assert run.recipe["epochs"] == 3        # suite train overrides the scale
    assert run.recipe["lr"] == 0.2          # method entry overrides the suite
    assert [r.seed for r in load_suite(path, registry).runs] == SCALES["short"]["seeds"]
    cli = load_suite(path, registry, scale="smoke", seeds=[7])
    assert [r.seed for r in cli.runs] == [7] and cli.runs[0].recipe["image_size"] == 32


def test_run_scale_and_the_data_folder_from_the_command_line(tmp_path, runner, monkeypatch):
    """`run --scale` sets epochs, image size and seeds as the file's scale: would; a dataset
    without root: is read from $FGVCBENCH_DATA, and --data-root outranks it."""
    import json
    from fgvcbench.cli import app
    from test_dataset_formats import make_cub
    make_cub(tmp_path / "data" / "CUB_200_2011")
    path = write_suite(tmp_path, f"output: {tmp_path / 'out'}\ndatasets: [cub]\nbackbones: [test_resnet]\n"
                                 "methods: [finetune]\n")
    monkeypatch.setenv("FGVCBENCH_DATA", str(tmp_path / "data"))
    short = runner.invoke(app, ["run", str(path), "--dry-run", "--scale", "short"])
    assert short.exit_code == 0, short.output
    assert f"{len(SCALES['short']['seeds'])} runs" in short.output and "not found" not in short.output
    monkeypatch.setenv("FGVCBENCH_DATA", str(tmp_path / "elsewhere"))
    assert "a real run here would stop" in runner.invoke(app, ["run", str(path), "--dry-run"]).output
    monkeypatch.setenv("FGVCBENCH_DATA", "")            # empty counts as unset: ./data, not the working folder
    monkeypatch.chdir(tmp_path)
    assert "a real run here would stop" not in runner.invoke(app, ["run", str(path), "--dry-run"]).output
    result = runner.invoke(app, ["run", str(path), "--scale", "smoke", "--data-root", str(tmp_path / "data"),
                                 "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert record["status"] == "ok" and record["spec"]["scale"] == "smoke"
    assert record["spec"]["recipe"]["image_size"] == SCALES["smoke"]["recipe"]["image_size"]


@pytest.mark.parametrize("body, line, key, needle", [
    ("methods: [finetun]", 4, "methods[0].name", "did you mean 'finetune'"),
    ("methods: [finetune]\nbogus: 1", 5, "bogus", "unknown key"),
    ("methods: [{name: finetune, variants: [linear_prob]}]", 4, "methods[0].variants[0]", "linear_probe"),
    ("methods: [{name: finetune, params: {freeze: true}}]", 4, "methods[0].params.freeze", "freeze_backbone"),
    ("methods: [finetune]\ntrain: {epochs: -1}", 5, "train.epochs", "must be >= 1"),
    ("methods: [finetune]\ntrain: {lr: fast}", 5, "train.lr", "expected float"),
    ("methods: [finetune]\ntrain: {learning_rate: 0.1}", 5, "train.learning_rate", "unknown training setting"),
    ("methods: [finetune]\nscale: huge", 5, "scale", "unknown scale"),
    ("methods: [finetune]\nseeds: [0, -1]", 5, "seeds[1]", "an integer from 0 to"),
    ("methods: []", 4, "methods", "no methods"),
    # a repeat would run nothing twice: more likely a typo than a wish, so it is named, not merged
    ("methods: [finetune]\nseeds: [0, 1, 1]", 5, "seeds[2]", "seed 1 is listed twice"),
    ("methods: [{name: finetune, variants: [[linear_probe]]}]", 4, "methods[0].variants[0]",
     "a variant is a name, got list ['linear_probe']"),
    ("methods: [{name: finetune, variants: [1]}]", 4, "methods[0].variants[0]", "quote it ('1') if it is a name"),
    # a list where a name belongs, or as a key: named at its line, not an unhashable-type traceback
    ("methods: [{name: recipe, params: {steps: [[base]]}}]", 4, "methods[0].params.steps[0]",
     "unknown recipe step \"['base']\" — did you mean 'base'?"),
    ("methods: [finetune]\nablation: {steps: [base], extra: [[cosine]]}", 5, "ablation.extra[0]",
     "did you mean 'cosine'?"),
    ("methods: [{name: finetune, params: {[a]: 1}}]", 4, "methods[0].params", "a key must be a name, got a list"),
    ("methods: [{name: finetune, variants: [default, linear_probe, default]}]", 4, "methods[0].variants[2]",
     "variant 'default' is listed twice"),
    ("methods:\n  - finetune\n  - {name: finetune, params: {}}", 6, "methods[1]",
     "repeats methods[0] (line 5): variant 'default' resolves to the same params and recipe"),
])
def test_errors_name_file_line_and_key(tmp_path, registry, body, line, key, needle):
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n\n" + body + "\n")
    err = error_of(path, registry)
    assert err.file == str(path)
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert needle in str(err)
    assert str(err).startswith(f"{path}:{line}: {key}: ")


def test_a_backbone_listed_twice_is_named_and_other_weights_are_not_a_repeat(tmp_path, registry):
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet, pixels, test_resnet]\n"
                                 "methods: [finetune]\n")
    err = error_of(path, registry)
    assert err.key == "backbones[2]" and "'test_resnet' is listed twice" in str(err) and err.line == 2
    weights = tmp_path / "w.pth"
    import timm
    import torch
    torch.save(timm.create_model("test_resnet").state_dict(), weights)   # loaded once, to check it fits
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\n"
                                 f"backbones: [test_resnet, {{name: test_resnet, pretrained: {weights}}}]\n"
                                 "methods: [finetune]\n")
    assert len(load_suite(path, registry).runs) == 2


@pytest.mark.parametrize("methods, key, needle", [
    # FineRNet's default is its code variant: the same params under two labels, run twice
    ("[{name: finernet, variants: [default, code]}]", "methods[0].variants",
     "variants 'default' and 'code' of 'finernet' have the same params"),
    ("[finernet, {name: finernet, variants: [code]}]", "methods[1]",
     "method 'finernet' repeats methods[0] (line 4): variant 'code' (as its 'default') resolves to the same"),
])
def test_a_variant_alias_next_to_its_twin_is_named(tmp_path, registry, methods, key, needle):
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n\nmethods: {methods}\n")
    err = error_of(path, registry)
    assert err.key == key and needle in str(err), str(err)


def test_variants_all_collapses_what_the_entrys_params_make_equal(tmp_path, registry):
    """`variants: all` runs each distinct computation once: with `miner: semihard` set for
    every variant, batch_hard, batch_all and semihard differ in nothing the run reads."""
    ml = registry.methods["metric_learning"]
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n"
                                 "methods: [{name: metric_learning, variants: all}]\n")
    plain = sorted(r.variant for r in load_suite(path, registry).runs)
    assert "default" in plain and "batch_hard" not in plain and len(plain) == len(
        {canonical_json(ml.resolve_params(v)) for v in ml.variants})
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n"
                                 "methods: [{name: metric_learning, variants: all, params: {miner: semihard}}]\n")
    runs = load_suite(path, registry).runs
    params = [canonical_json(r.params) for r in runs]
    assert len(set(params)) == len(params) < len(plain)   # fewer, and no two alike


def test_a_backbone_checkpoint_copied_to_another_path_is_the_same_weights(tmp_path, registry):
    import timm
    import torch
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "a.pth")
    (tmp_path / "b.pth").write_bytes((tmp_path / "a.pth").read_bytes())
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [{{name: test_resnet, pretrained: "
                                 f"{tmp_path / 'a.pth'}}}, {{name: test_resnet, pretrained: {tmp_path / 'b.pth'}}}]\n"
                                 "methods: [finetune]\n")
    err = error_of(path, registry)
    assert err.key == "backbones[1]" and "listed twice with the same weights" in str(err)


def test_workers_and_cluster_jobs_do_not_load_the_checkpoint_again(tmp_path, registry, monkeypatch):
    import timm
    import torch

    import fgvcbench.suite as suite_module
    from fgvcbench import cluster, executors
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")   # not test_resnet's weights
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [{{name: test_resnet, pretrained: "
                                 f"{tmp_path / 'vit.pth'}}}]\nmethods: [finetune]\n")
    assert error_of(path, registry).key == "backbones[0].pretrained"   # the command that starts them checks
    assert len(load_suite(path, registry, check_weights=False).runs) == 1
    seen = []

    def record(**kwargs):
        seen.append(kwargs["check_weights"])
        raise KeyboardInterrupt   # the worker's own way out; the job's propagates

    monkeypatch.setattr(suite_module, "load_suite", record)
    executors._worker({"path": str(path)}, "cpu")
    with pytest.raises(KeyboardInterrupt):
        cluster.run_one({"path": str(path)}, "some-run")
    assert seen == [False, False]


def test_a_methods_entry_that_runs_an_ablation_row_again_is_named(tmp_path, registry):
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n"
                                 "methods: [{name: recipe, params: {steps: [base, cosine]}}]\n"
                                 "ablation: {steps: [base, cosine]}\n")
    err = error_of(path, registry)
    assert err.key == "methods[0]" and "runs the ablation's row 'cosine' (line 4) again" in str(err)
    other = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\n"
                                  "methods: [{name: recipe, params: {steps: [base, cosine]}, train: {lr: 0.5}}]\n"
                                  "ablation: {steps: [base, cosine]}\n")
    assert len(load_suite(other, registry).runs) == 3   # another lr: another computation, and it runs


def test_an_ablation_step_listed_twice_is_named_at_its_line(tmp_path, registry):
    for section, key in (("{steps: [base, cosine], extra: [ema, weight_decay, ema]}", "ablation.extra[2]"),
                         ("{steps: [base, long_training, long_training]}", "ablation.steps[2]")):
        path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\nablation: {section}\n")
        err = error_of(path, registry)
        step = "ema" if "extra" in key else "long_training"
        assert err.key == key and f"step {step!r} is listed twice" in str(err) and err.line == 3


def test_a_method_listed_twice_with_other_params_is_two_configurations(tmp_path, registry):
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [test_resnet]\nmethods:\n"
                                 "  - finetune\n  - {name: finetune, params: {freeze_backbone: true}}\n")
    assert len({r.run_id for r in load_suite(path, registry).runs}) == 2


def test_unknown_backbone_and_dataset_suggest(tmp_path, registry):
    path = write_suite(tmp_path, "datasets: [synthetik]\nbackbones: [test_resnet]\nmethods: [finetune]\n")
    assert "did you mean 'synthetic'" in str(error_of(path, registry))
    path = write_suite(tmp_path, f"datasets: [{TINY_DATASET}]\nbackbones: [resnet5O]\nmethods: [finetune]\n")
    err = error_of(path, registry)
    assert err.key == "backbones[0].name" and "unknown backbone 'resnet5O'" in str(err)


def test_bad_yaml_duplicate_keys_unsafe_tags_and_missing_file(tmp_path, registry):
    path = write_suite(tmp_path, "datasets: [synthetic\nmethods: [finetune]\n")
    err = error_of(path, registry)
    assert "invalid YAML" in str(err) and err.line is not None
    path = write_suite(tmp_path, "methods: [finetune]\nmethods: [finetune]\n")
    err = error_of(path, registry)
    assert "duplicate key" in str(err) and err.line == 2
    path = write_suite(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\n")
    assert "invalid YAML" in str(error_of(path, registry))
    assert "not found" in str(error_of(tmp_path / "nope.yaml", registry))
    path = write_suite(tmp_path, "# only a comment\n")
    assert "empty" in str(error_of(path, registry))
    # an alias inside the node it names would recurse forever; nested aliases explode
    path = write_suite(tmp_path, "methods: &a [finetune, *a]\n")
    err = error_of(path, registry)
    assert "refers to a node that contains it" in str(err) and err.key == "methods[1]"
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = write_suite(tmp_path, "\n".join(laughs) + "\n")
    assert "aliases are expanded" in str(error_of(path, registry))
    assert "a folder, not a suite file" in str(error_of(tmp_path, registry))
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in str(error_of(tmp_path / "binary.yaml", registry))


def test_explicit_tags_give_one_line_at_their_key_and_merge_keys_work(tmp_path, registry):
    # `!!int abc` raised ValueError from the YAML constructor, a custom tag printed pyyaml's mark
    for value, needle in (("!!int abc", "'abc' is no int"), ("!!timestamp x", "'x' is no timestamp"),
                          ("!foo 1", "tag !foo is not allowed"),
                          ("!!python/name:os.system x", "python/name:os.system is not allowed")):
        path = write_suite(tmp_path, f"""
            name: t
            datasets: [synthetic]
            backbones: [test_resnet]
            methods: [finetune]
            train: {{epochs: {value}}}
            """)
        err = error_of(path, registry)
        assert needle in str(err) and err.line == 5 and err.key == "train.epochs", (value, str(err))
        assert "\n" not in str(err)
    # a merge key (standard YAML, as safe_load reads it): keys written beside it win
    suite = load_suite(write_suite(tmp_path, f"""
        name: t
        output: {tmp_path / 'out'}
        datasets: [{TINY_DATASET}]
        backbones: [test_resnet]
        train: &base {{epochs: 1, image_size: 32, batch_size: 8}}
        methods:
          - finetune
          - {{name: recipe, train: {{<<: *base, epochs: 2}}}}
        """), registry)
    recipes = {spec.method: spec.recipe for spec in suite.runs}
    assert recipes["recipe"]["epochs"] == 2 and recipes["recipe"]["image_size"] == 32
    assert recipes["finetune"]["epochs"] == 1
    err = error_of(write_suite(tmp_path, "name: t\nx: &a [1]\ntrain: {<<: *a}\n"), registry)
    assert "merges a mapping" in str(err) and err.line == 3


def test_exclude_everything_is_an_error(tmp_path, registry):
    path = tiny_suite(tmp_path, extra="exclude: [{method: finetune}]")
    assert "grid is empty" in str(error_of(path, registry))


def test_an_exclude_value_outside_the_grid_is_a_typo_not_a_silent_no_op(tmp_path, registry):
    methods = "[{name: finetune, variants: [default, linear_probe]}]"
    err = error_of(tiny_suite(tmp_path, methods=methods, extra="exclude: [{variant: linear_prob}]"), registry)
    assert err.key == "exclude[0].variant" and "excludes nothing" in str(err) and "'linear_probe'" in str(err)
    err = error_of(tiny_suite(tmp_path, methods=methods, extra="exclude: [{seed: 7}]"), registry)
    assert err.key == "exclude[0].seed" and "its seeds: 0" in str(err)
    suite = load_suite(tiny_suite(tmp_path, methods=methods, extra="exclude: [{variant: linear_probe}]"), registry)
    assert [r.variant for r in suite.runs] == ["default"]


def test_an_exclude_rule_tells_two_folders_of_one_adapter_apart_by_their_label(tmp_path, registry):
    from PIL import Image
    for root in ("birds", "cars"):
        for split in ("train", "test"):
            for cls in ("a", "b"):
                (tmp_path / root / split / cls).mkdir(parents=True)
                Image.new("RGB", (8, 8)).save(tmp_path / root / split / cls / "0.jpg")
    datasets = f"[{{name: imagefolder, root: {tmp_path / 'birds'}}}, {{name: imagefolder, root: {tmp_path / 'cars'}}}]"
    suite = load_suite(tiny_suite(tmp_path, datasets=datasets, backbones="[test_resnet, pixels]",
                                  extra="exclude: [{dataset: imagefolder@cars, backbone: pixels}]"), registry)
    assert sorted((r.dataset["root_name"], r.backbone["name"]) for r in suite.runs) == [
        ("birds", "pixels"), ("birds", "test_resnet"), ("cars", "test_resnet")]
    by_name = load_suite(tiny_suite(tmp_path, datasets=datasets, backbones="[test_resnet, pixels]",
                                    extra="exclude: [{dataset: imagefolder, backbone: pixels}]"), registry)
    assert sorted(r.dataset["root_name"] for r in by_name.runs) == ["birds", "cars"]   # the name: both folders
    err = error_of(tiny_suite(tmp_path, datasets=datasets, extra="exclude: [{dataset: imagefolder@carz}]"), registry)
    assert err.key == "exclude[0].dataset" and "did you mean 'imagefolder@cars'?" in str(err)
    # a label that is also the adapter's name (its default folder) names that entry only, and two
    # entries of one label are named as tables title them, by the options that tell them apart
    twins = f"[{TINY_DATASET}, {TINY_DATASET.replace('fine: 2', 'fine: 3')}, {{name: imagefolder, root: {tmp_path / 'cars'}}}]"
    suite = load_suite(tiny_suite(tmp_path, datasets=twins, extra="exclude: [{dataset: synthetic (fine=3)}]"), registry)
    assert sorted((r.dataset["name"], r.dataset["options"].get("fine")) for r in suite.runs) == [
        ("imagefolder", None), ("synthetic", 2)]
    suite = load_suite(tiny_suite(tmp_path, datasets=twins, extra="exclude: [{dataset: synthetic}]"), registry)
    assert [r.dataset["name"] for r in suite.runs] == ["imagefolder"]   # the label both share names both
    import shutil
    shutil.copytree(tmp_path / "birds", tmp_path / "imagefolder")   # the adapter's own folder name: label imagefolder
    three = datasets[:-1] + f", {{name: imagefolder, root: {tmp_path / 'imagefolder'}}}]"
    suite = load_suite(tiny_suite(tmp_path, datasets=three, extra="exclude: [{dataset: imagefolder}]"), registry)
    assert sorted(r.dataset.get("root_name") for r in suite.runs) == ["birds", "cars"]


def test_an_exclude_seed_of_true_is_refused_rather_than_read_as_seed_1(tmp_path, registry):
    err = error_of(tiny_suite(tmp_path, seeds="[0, 1]", extra="exclude: [{seed: true}]"), registry)
    assert err.key == "exclude[0].seed" and "seed true is not a seed" in str(err) and "seed: 1" in str(err)


def test_checkpoint_path_must_exist(tmp_path, registry):
    path = tiny_suite(tmp_path, backbones="[{name: test_resnet, pretrained: /nonexistent/w.pth}]")
    err = error_of(path, registry)
    assert err.key == "backbones[0].pretrained" and "checkpoint not found" in str(err)


def test_shipped_suites_validate(registry):
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(path, registry, check_data=False)  # data may live elsewhere here
        assert suite.runs, path
    # like for like with timm's train.py: every training image, the last epoch's top-1
    bar = load_suite(ROOT / "suites" / "recipe_vs_timm_bar.yaml", registry, check_data=False)
    assert {run.recipe["val_fraction"] for run in bar.runs} == {0}
    # the FineRNet paper suite starts ResNet-50 from the code's torchvision weights
    finernet = load_suite(ROOT / "suites" / "paper_tables_finernet.yaml", registry, check_data=False)
    assert "resnet50.tv_in1k" in {run.backbone["name"] for run in finernet.runs}


def test_missing_data_root_is_caught_before_running(tmp_path, registry):
    path = write_suite(tmp_path, f"""
        datasets: [{{name: imagefolder, root: {tmp_path / 'nowhere'}}}]
        backbones: [test_resnet]
        methods: [finetune]
        """)
    err = error_of(path, registry)
    assert err.key == "datasets[0].root" and err.line == 1 and "nowhere" in str(err)
    assert "train/<class>" in str(err)                      # the expected layout is shown
    assert load_suite(path, registry, check_data=False).runs  # --dry-run still shows the grid


def test_an_empty_value_is_null_and_a_bad_scale_option_blames_the_option(tmp_path, registry):
    path = tiny_suite(tmp_path, extra="")
    text = path.read_text().replace("train: {epochs: 1, image_size: 32, batch_size: 8}",
                                    "train:\n  epochs: 1\n  image_size: 32\n  patience:")
    path.write_text(text)
    assert load_suite(path, registry).runs[0].recipe["patience"] is None      # `patience:` = null = off
    with pytest.raises(UserError) as info:
        load_suite(path, registry, scale="nonsense")
    assert str(info.value).startswith("--scale 'nonsense'") and not isinstance(info.value, SuiteError)


def test_two_roots_of_one_adapter_are_two_datasets(tmp_path, registry):
    for name in ("CUB_A", "CUB_B"):
        (tmp_path / name).mkdir()
    path = write_suite(tmp_path, f"""
        output: {tmp_path / 'out'}
        data_root: {tmp_path}
        datasets: [{{name: cub, root: CUB_A}}, {{name: cub, root: CUB_B}}]
        backbones: [test_resnet]
        methods: [finetune]
        """)
    suite = load_suite(path, registry)
    assert len({r.run_id for r in suite.runs}) == 2
    from fgvcbench.spec import dataset_label
    assert sorted(dataset_label(r.dataset) for r in suite.runs) == ["cub@CUB_A", "cub@CUB_B"]


@pytest.mark.parametrize("datasets, key, needle", [
    ("[{name: synthetic, options: {coarse: two}}]", "datasets[0].options.coarse", "expected int"),
    # a view's base options are checked before any run starts, not when its data loads
    ("[{name: coarse, options: {of: synthetic, of_options: {train_per_clas: 4}}}]",
     "datasets[0].options.of_options.train_per_clas", "did you mean 'train_per_class'"),
    ("[{name: coarse, options: {of: synthetic, of_options: {fine: many}}}]",
     "datasets[0].options.of_options.fine", "expected int"),
    ("[{name: weak_shot, options: {of: synthetc}}]", "datasets[0].options.of", "did you mean 'synthetic'"),
    ("[{name: coarse, options: {of: synthetic, of_options: [fine]}}]", "datasets[0].options.of_options",
     "expected mapping like the default {}, got list"),
    # values no load can use fail when the suite loads, not in every run
    ("[{name: synthetic, options: {coarse: -2}}]", "datasets[0].options", "coarse must be >= 1"),
    ("[{name: cub, options: {crop: box}}]", "datasets[0].options",
     "crop: 'box' is not one of none, bbox — did you mean 'bbox'?"),
    ("[{name: dtd, options: {split: 11}}]", "datasets[0].options", "split number 1 to 10"),
    ("[{name: weak_shot, options: {noise_rate: 1.5}}]", "datasets[0].options", "noise_rate: 1.5"),
    ("[{name: coarse, options: {min_fine: 0}}]", "datasets[0].options", "min_fine: 0"),
    ("[{name: coarse, options: {of: aircraft, of_options: {level: famly}}}]", "datasets[0].options.of_options",
     "level: 'famly' is not one of variant, family, manufacturer — did you mean 'family'?"),
    (f"[{TINY_DATASET}, {TINY_DATASET}]", "datasets[1]", "listed twice"),
])
def test_dataset_option_types_and_repeated_datasets(tmp_path, registry, datasets, key, needle):
    path = write_suite(tmp_path, f"datasets: {datasets}\nbackbones: [test_resnet]\nmethods: [finetune]\n")
    err = error_of(path, registry)
    assert err.key == key and needle in str(err) and err.line == 1


def test_a_views_base_options_are_filled_with_their_defaults(tmp_path, registry):
    """Writing a base option at its default value names the same dataset: one run id."""
    defaults = registry.datasets["synthetic"].options
    ids = []
    for of_options in ("{}", f"{{fine: {defaults['fine']}, seed: {defaults['seed']}}}"):
        path = write_suite(tmp_path, f"""
            datasets: [{{name: coarse, options: {{of: synthetic, of_options: {of_options}}}}}]
            backbones: [test_resnet]
            methods: [finetune]
            """)
        (run,) = load_suite(path, registry).runs
        assert run.dataset["options"]["of_options"] == defaults
        ids.append(run.run_id)
    assert ids[0] == ids[1]


def test_a_view_without_root_reads_its_bases_folder_and_a_generated_dataset_refuses_one(tmp_path, registry):
    from test_dataset_formats import make_cub
    make_cub(tmp_path / "CUB_200_2011")
    path = write_suite(tmp_path, f"""
        data_root: {tmp_path}
        datasets: [{{name: coarse, options: {{of: cub}}}}, {{name: weak_shot, options: {{of: coarse,
                     of_options: {{of: cub}}}}}}]
        backbones: [test_resnet]
        methods: [finetune]
        """)
    suite = load_suite(path, registry)
    assert {root for _, root in suite.datasets} == {str(tmp_path / "CUB_200_2011")}   # through two views
    # where that folder is missing, the suite says so before any run, naming the base
    err = error_of(path, registry, data_root=str(tmp_path / "nowhere"))
    assert err.key == "datasets[0]" and "its base 'cub'" in str(err) and "CUB_200_2011" in str(err)
    generated = write_suite(tmp_path, """
        datasets: [{name: synthetic, root: somewhere}]
        backbones: [test_resnet]
        methods: [finetune]
        """, "generated.yaml")
    err = error_of(generated, registry)
    assert err.key == "datasets[0].root" and "reads no folder" in str(err)


@pytest.mark.parametrize("setting, needle", [
    ("epochs: 99999999999999999999999", "epochs must be <= 100,000, got 99,999,999,999,999,999,999,999"),
    ("repeated_augment: 99999999999", "repeated_augment must be <= 64"),
    ("warmup_epochs: 100000000000000000000", "warmup_epochs must be <= 100,000"),
    ("ema_steps: 100000000000", "ema_steps must be <= 10,000,000"),
    ("momentum: 1e400", "beyond any float: write a smaller number"),
])
def test_a_typos_extra_digits_are_refused_at_load(tmp_path, registry, setting, needle):
    # before, 1e23 epochs started training, repeated_augment 1e11 failed the run allocating 22 TB
    err = error_of(write_suite(tmp_path, f"""
        name: t
        datasets: [synthetic]
        backbones: [test_resnet]
        methods: [finetune]
        train: {{{setting}}}
        """), registry)
    assert needle in str(err) and err.line == 5 and "write inf" not in str(err)


def test_a_name_with_a_line_break_or_an_empty_output_is_refused(tmp_path, registry):
    err = error_of(write_suite(tmp_path, 'name: "a\\nb"\ndatasets: [synthetic]\nbackbones: [test_resnet]\n'
                                         'methods: [finetune]\n'), registry)
    assert "holds a control character" in str(err) and err.key == "name"
    err = error_of(write_suite(tmp_path, 'output: ""\ndatasets: [synthetic]\nbackbones: [test_resnet]\n'
                                         'methods: [finetune]\n'), registry)
    assert "an empty output folder" in str(err) and err.key == "output"


def test_rerun_when_the_folder_for_old_results_is_a_file(tmp_path, runner):
    from fgvcbench.cli import app
    suite = tiny_suite(tmp_path)
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    (tmp_path / "out" / "replaced").write_text("not a folder")
    result = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "all"])
    assert result.exit_code == 2 and "replaced is a file" in result.output and "move the file away" in result.output
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 1      # the finished record stays


def test_a_dataset_check_without_a_fix_gets_one(tmp_path, registry):
    err = error_of(write_suite(tmp_path, "name: t\ndatasets: [{name: synthetic, options: {coarse: 0}}]\n"
                                         "backbones: [test_resnet]\nmethods: [finetune]\n"), registry)
    assert "coarse must be >= 1" in str(err) and "`fgvcbench plugins synthetic` lists its options" in str(err)


def test_an_option_added_later_enters_run_ids_only_when_set(tmp_path, registry):
    # aircraft's `coarse` came after aircraft records existed: at its default a run keeps its id
    def ids(options):
        path = write_suite(tmp_path, f"""
            name: t
            datasets: [{{name: aircraft, root: {tmp_path}, options: {options}}}]
            backbones: [test_resnet]
            methods: [finetune]
            """)
        suite = load_suite(path, registry, check_data=False)
        return [spec.run_id for spec in suite.runs], suite.runs[0].dataset["options"]
    plain, options = ids("{}")
    assert "coarse" not in options and options["level"] == "variant"
    assert ids("{coarse: auto}")[0] == plain
    assert ids("{coarse: manufacturer}")[0] != plain and ids("{coarse: manufacturer}")[1]["coarse"] == "manufacturer"


@pytest.mark.parametrize("value, spelt", [(".nan", ".nan"), (".inf", ".inf"), ("-.Inf", "-.inf")])
def test_a_value_that_is_not_finite_is_refused_where_no_check_of_its_own_did(tmp_path, registry_with, value, spelt):
    import types
    from fgvcbench.api import Method, hookimpl
    mod = types.ModuleType("unchecked")
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="unchecked", run=lambda ctx: {"top1": 1.0},
                                                     params={"margin": 0.2})])
    registry = registry_with(mod)
    suite = tiny_suite(tmp_path, methods=f"[{{name: unchecked, params: {{margin: {value}}}}}]")
    with pytest.raises(SuiteError) as err:
        load_suite(suite, registry)
    text = str(err.value)
    assert "methods[0].params.margin" in text and f"{spelt} is not a number" in text and "give a finite number" in text
    assert load_suite(tiny_suite(tmp_path, methods="[{name: unchecked, params: {margin: 1.0e+30}}]"), registry).runs


def test_a_dataset_option_whose_default_is_a_list_or_mapping_takes_only_that(tmp_path, registry_with):
    import types
    from fgvcbench.api import DatasetSpec, hookimpl
    mod = types.ModuleType("listy")
    mod.fgvcbench_datasets = hookimpl(lambda: [DatasetSpec(name="listy", load=lambda request: None, needs_root=False,
                                                           options={"classes": [0, 1], "extra": {}})])
    registry = registry_with(mod)
    for given, needle in (("{classes: '0,1'}", "expected list like the default [0, 1], got str '0,1'"),
                          ("{extra: [a]}", "expected mapping like the default {}, got list")):
        with pytest.raises(SuiteError) as err:
            load_suite(tiny_suite(tmp_path, datasets=f"[{{name: listy, options: {given}}}]"), registry, check_data=False)
        assert needle in str(err.value) and "fix the value's type" in str(err.value)
    suite = load_suite(tiny_suite(tmp_path, datasets="[{name: listy, options: {classes: [2, 3], extra: {a: 1}}}]"),
                       registry, check_data=False)
    assert suite.runs[0].dataset["options"] == {"classes": [2, 3], "extra": {"a": 1}}

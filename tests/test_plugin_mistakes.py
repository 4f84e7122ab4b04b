"""A third party's dataset or backbone plugin written wrongly: each mistake ends in one
line that names the dataset or backbone and what to fix — a failed run, or exit 2 where
the suite loader can know — never a traceback or a silently wrong score."""

from __future__ import annotations

import json
import types

from PIL import Image

from fgvcbench.api import BackboneSpec, DatasetSpec, DatasetSplits, ImageList, hookimpl
from fgvcbench.cli import app

from conftest import tiny_suite


def _images(folder, n_classes=2, per_class=4):
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for label in range(n_classes):
        for i in range(per_class):
            path = folder / f"{label}_{i}.png"
            Image.new("RGB", (32, 32), (100 * label, 20 * i, 50)).save(path)
            paths.append(str(path))
            labels.append(label)
    return paths, labels


def _dataset(name, change):
    """A generated two-class dataset whose lists ``change(train, test)`` makes wrong."""
    def load(request):
        train = ImageList(*_images(request.cache_dir / name / "train"), ["a", "b"])
        test = ImageList(*_images(request.cache_dir / name / "test"), ["a", "b"])
        return change(train, test)
    return DatasetSpec(name=name, load=load, needs_root=False)


WRONG_LISTS = {
    "names_differ": (lambda tr, te: DatasetSplits(tr, ImageList(te.paths, te.labels, ["b", "a"])),
                     "the test split's class names differ from train's (class 0: 'b' vs 'a')"),
    "name_twice": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, ["a", "a"]),
                                                ImageList(te.paths, te.labels, ["a", "a"])),
                   "the train split lists the class name 'a' twice"),
    "number_names": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, [0, 1]),
                                                  ImageList(te.paths, te.labels, [0, 1])),
                     "the train split's class name 0 is int, not text"),
    "coarse_without_names": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, ["a", "b"],
                                                                    coarse_labels=[0] * len(tr)), te),
                             "the train split has coarse_labels but no coarse_names"),
    "coarse_outside": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, ["a", "b"],
                                                              coarse_labels=[5] * len(tr), coarse_names=["x"]), te),
                       "the train split's coarse labels must be integers in 0…0 (its 1 coarse names), found 5"),
    "three_number_box": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, ["a", "b"],
                                                                boxes=[(0, 0, 8)] * len(tr)), te),
                         "the train split's box for"),
    "train_a_list": (lambda tr, te: DatasetSplits(list(tr.paths), te), "its train is list, not an ImageList"),
    "leak": (lambda tr, te: DatasetSplits(tr, ImageList(tr.paths[:3] + te.paths[3:], te.labels, ["a", "b"])),
             "3 test images are listed in train too"),
    "boxes_on_train_only": (lambda tr, te: DatasetSplits(ImageList(tr.paths, tr.labels, ["a", "b"],
                                                                   boxes=[(0, 0, 16, 16)] * len(tr)), te,
                                                         crop_to_boxes=True),
                            "cropping to bounding boxes (its dataset option crop: bbox), but the test split has no "
                            "boxes while train has — the dataset's loader must give every split its boxes"),
    "crop_without_boxes": (lambda tr, te: DatasetSplits(tr, te, crop_to_boxes=True),
                           "cropping to bounding boxes (its dataset option crop: bbox), but this dataset has no "
                           "boxes — leave crop: bbox out"),
}


def test_a_dataset_plugin_s_wrong_lists_fail_its_runs_with_one_line_and_no_score(tmp_path, runner, registry_with):
    mod = types.ModuleType("wrong_lists")
    mod.fgvcbench_datasets = hookimpl(lambda: [_dataset(n, change) for n, (change, _) in WRONG_LISTS.items()])
    registry_with(mod)
    suite = tiny_suite(tmp_path, datasets=f"[{', '.join(WRONG_LISTS)}]", backbones="[pixels]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    got = {r["spec"]["dataset"]["name"]: r for r in
           (json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json"))}
    for name, (_, needle) in WRONG_LISTS.items():
        assert got[name]["status"] == "failed" and "top1" not in got[name]["metrics"], name
        assert needle in got[name]["error"] and "\n" not in got[name]["error"], (name, got[name]["error"])


def test_a_dataset_check_that_raises_anything_is_one_line_at_load(tmp_path, runner, registry_with):
    mod = types.ModuleType("raising_check")

    def check(options):
        raise RuntimeError("boom")
    mod.fgvcbench_datasets = hookimpl(lambda: [DatasetSpec(name="checked", load=lambda request: None,
                                                           needs_root=False, check=check)])
    registry_with(mod)
    for command in (["run", str(tiny_suite(tmp_path, datasets="[checked]")), "--dry-run"],
                    ["data", "verify", "checked"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "checked dataset options: its check raised RuntimeError: boom" in " ".join(result.output.split())


def test_a_backbone_family_whose_matches_raises_hides_no_other_backbone(tmp_path, runner, registry_with):
    mod = types.ModuleType("broken_family")

    def matches(name):
        raise KeyError(name)
    mod.fgvcbench_backbones = hookimpl(lambda: [BackboneSpec(name="broken", matches=matches,
                                                             create=lambda name, n, pretrained: None)])
    registry_with(mod)
    fine = runner.invoke(app, ["run", str(tiny_suite(tmp_path, backbones="[test_resnet]")), "--dry-run"])
    assert fine.exit_code == 0, fine.output   # a timm name another family serves
    unknown = runner.invoke(app, ["run", str(tiny_suite(tmp_path, backbones="[brokennet_3]")), "--dry-run"])
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output, unknown.output
    said = " ".join(unknown.output.split())
    assert "unknown backbone 'brokennet_3'; backbone family 'broken' (plugin 'broken_family'): matches('brokennet_3') " \
           "raised KeyError" in said and "fix that plugin's matches()" in said


def test_a_backbone_s_data_config_that_cannot_normalise_fails_its_run_with_one_line(tmp_path, runner, registry_with):
    from fgvcbench_plugins.backbones import PixelBackbone
    configs = {"two_means": {"mean": (0.5, 0.5)}, "text_std": {"std": "0.2"}, "zero_std": {"std": (0.2, 0.0, 0.2)},
               "none_config": None}
    mod = types.ModuleType("odd_configs")
    mod.fgvcbench_backbones = hookimpl(lambda: [
        BackboneSpec(name=n, create=lambda name, num_classes, pretrained: PixelBackbone(num_classes),
                     data_config=(lambda c: lambda name: c)(c)) for n, c in configs.items()])
    registry_with(mod)
    result = runner.invoke(app, ["run", str(tiny_suite(tmp_path, backbones=f"[{', '.join(configs)}]")), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    got = {r["spec"]["backbone"]["name"]: r for r in
           (json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json"))}
    assert "gives mean (0.5, 0.5), not three finite numbers" in got["two_means"]["error"]
    assert "gives std '0.2', not three finite numbers" in got["text_std"]["error"]
    assert "gives std (0.2, 0.0, 0.2): each must be above 0" in got["zero_std"]["error"]
    assert got["none_config"]["status"] == "ok"   # None: ImageNet's statistics, as documented


def test_a_backbone_s_create_that_raises_a_tuple_output_or_float64_weights_fail_with_a_line_that_says_so(
        tmp_path, runner, registry_with):
    from fgvcbench.api import Method
    from fgvcbench_plugins.backbones import PixelBackbone

    class TwoOutputs(PixelBackbone):   # logits and features, as some research code returns
        def forward(self, x):
            features = self.forward_features(x).flatten(1)
            return self.head(features), features

    def boom(name, num_classes, pretrained):
        raise RuntimeError("weights file missing")

    def picked(ctx):   # what the message says to do with a model of several outputs
        data = ctx.load_data()
        model = ctx.create_model(data.num_classes)
        import torch.nn.functional as F
        return ctx.fit(model, data, criterion=lambda out, y: F.cross_entropy(out[0], y),
                       output_fn=lambda out: out[0]).metrics
    mod = types.ModuleType("odd_models")
    mod.fgvcbench_backbones = hookimpl(lambda: [
        BackboneSpec(name="two_outputs", create=lambda name, num_classes, pretrained: TwoOutputs(num_classes)),
        BackboneSpec(name="doubles", create=lambda name, num_classes, pretrained: PixelBackbone(num_classes).double()),
        BackboneSpec(name="boom", matches=lambda name: name.startswith("boom_"), create=boom)])
    mod.fgvcbench_methods = hookimpl(lambda: [Method(name="picked", run=picked)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, backbones="[two_outputs, doubles, boom_1]", methods="[finetune, picked]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    got = {(r["spec"]["method"], r["spec"]["backbone"]["name"]): r for r in
           (json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json"))}
    first = {key: r["error"].splitlines()[0] if r["error"] else None for key, r in got.items()}
    assert first[("finetune", "two_outputs")] == (
        "the model's forward returned a tuple, not a tensor of logits — return the logits alone (as timm's models "
        "do), or pass ctx.fit output_fn= (and criterion=) to pick them")
    assert got[("picked", "two_outputs")]["status"] == "ok"
    for method in ("finetune", "picked"):
        assert first[(method, "doubles")].startswith("the model has float64 weights ('head.weight') and the engine "
                                                     "feeds float32 images — build it in float32: model.float()")
        assert first[(method, "boom_1")] == ("backbone 'boom_1' (plugin 'odd_models'): create('boom_1', num_classes=4, "
                                             "pretrained=False) raised RuntimeError: weights file missing")
        assert 'raise RuntimeError("weights file missing")' in got[(method, "boom_1")]["error"]   # the traceback kept
    assert "failed" in result.output and "raised RuntimeError: weights file missing" in result.output


def test_a_dataset_whose_choices_miss_its_default_is_skipped_and_the_suite_says_why(tmp_path, runner, registry_with):
    import pytest

    def load(request):
        raise AssertionError("never loaded")
    with pytest.raises(ValueError, match=r"choices\['size'\] must be a tuple holding the default 32; got \('32', '64'\)"):
        DatasetSpec(name="sizes", load=load, options={"size": 32}, choices={"size": ("32", "64")})
    mod = types.ModuleType("sized")
    mod.fgvcbench_datasets = hookimpl(lambda: [
        DatasetSpec(name="sizes", load=load, needs_root=False, options={"size": 32}, choices={"size": ("32", "64")}),
        DatasetSpec(name="stray", load=load, needs_root=False, options={}, choices={"crop": ("none", "bbox")}),
        _dataset("fine_one", lambda train, test: (train, test))])
    registry = registry_with(mod)
    assert "fine_one" in registry.datasets and "sizes" not in registry.datasets and "stray" not in registry.datasets
    assert any("plugin 'sized': dataset 'stray' skipped — dataset 'stray' choices names 'crop', which is not among "
               "its options (none)" in w for w in registry.warnings)
    result = runner.invoke(app, ["run", str(tiny_suite(tmp_path, datasets="[sizes]")), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "dataset 'sizes' was skipped when plugins loaded" in said and "plugin 'sized' defines it wrongly" in said
    described = runner.invoke(app, ["plugins", "sizes"])
    assert described.exit_code == 2 and "dataset 'sizes' was skipped when plugins loaded" in described.output

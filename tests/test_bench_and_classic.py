"""`fgvcbench bench throughput` and the classic reference pipeline (`pipeline: classic`)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fgvcbench.cli import app
from fgvcbench.data.base import DatasetSplits
from fgvcbench.data.classic import classic_loader
from fgvcbench.data.pipeline import build_tensor_data
from fgvcbench.engine.augment import BatchAugmenter
from fgvcbench.engine.recipe import Recipe
from fgvcbench.plugins import get_registry

from conftest import tiny_suite
from test_dataset_formats import make_cub


def test_bench_throughput_writes_three_modes(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    args = ["bench", "throughput", "--backbone", "test_resnet", "--res", "32", "--batch", "4", "--steps", "2",
            "--warmup", "1", "--workers", "0", "--device", "cpu", "--dataset", "cub", "--root", str(root),
            "--output", str(tmp_path / "bench")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "bench" / "throughput.csv")))
    assert [r["mode"] for r in rows] == ["model_only", "fast", "classic"]
    assert all(float(r["images_per_second"]) > 0 for r in rows) and rows[0]["ratio_to_model_only"] == "1.0"
    assert float(rows[1]["ratio_to_classic"]) > 0 and rows[1]["backbone"] == "test_resnet"
    assert rows[1]["random_erasing"] == "0.1"                      # the classic pipeline's RandomErasing too
    other = args + ["--augment", "flip", "--random-erasing", "0"]
    assert runner.invoke(app, other).exit_code == 0
    rows = list(csv.DictReader(open(tmp_path / "bench" / "throughput.csv")))
    assert len(rows) == 6 and all(r["augment"] == "trivial_augment" for r in rows[:3])   # appended, not replaced
    assert {(r["augment"], float(r["random_erasing"])) for r in rows[3:]} == {("flip", 0.0)}
    bad = runner.invoke(app, ["bench", "throughput", "--dataset", "cub", "--root", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "no such folder" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["bench", "throughput", "--dataset", "cub"], env={"FGVCBENCH_DATA": str(tmp_path / "no")})
    assert bad.exit_code == 2 and "is not at" in bad.output and "--root DIR or set FGVCBENCH_DATA" in bad.output
    bad = runner.invoke(app, ["bench", "throughput", "--augment", "randaugment"])
    assert bad.exit_code == 2 and "--augment" in bad.output and "trivial_augment" in bad.output


def test_bench_throughput_finds_the_data_root_takes_options_and_times_whole_batches(tmp_path, runner, monkeypatch):
    # the data root as data verify finds it ($FGVCBENCH_DATA/<folder>), dataset options as -o, and
    # the classic mode timed over full batches only (its loader drops a short last one)
    get_registry(refresh=True)
    make_cub(tmp_path / "data" / "CUB_200_2011")
    import fgvcbench.data.classic as classic   # bench imports the loader from here as it measures
    seen = []

    def spy(images, *args, **kwargs):
        loader = original(images, *args, **kwargs)
        seen.append((len(images), kwargs.get("drop_last"), [len(y) for _, y in loader]))
        return loader
    original = classic.classic_loader
    monkeypatch.setattr(classic, "classic_loader", spy)
    args = ["bench", "throughput", "--backbone", "test_resnet", "--res", "32", "--batch", "4", "--steps", "2",
            "--warmup", "1", "--workers", "0", "--device", "cpu", "--dataset", "cub", "-o", "crop=bbox",
            "--output", str(tmp_path / "bench")]
    result = runner.invoke(app, args, env={"FGVCBENCH_DATA": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    (n, drop_last, sizes), = seen
    assert drop_last is True and sizes == [4] * (n // 4) and n % 4   # the fixture leaves a short batch out
    bad = runner.invoke(app, args[:-2] + ["-o", "crop=boxes", "--output", str(tmp_path / "bench")],
                        env={"FGVCBENCH_DATA": str(tmp_path / "data")})
    assert bad.exit_code == 2 and "crop" in bad.output and "Traceback" not in bad.output
    big = runner.invoke(app, [*args[:6], "--batch", "999", *args[8:]], env={"FGVCBENCH_DATA": str(tmp_path / "data")})
    assert big.exit_code == 2 and "lower --batch to at most" in big.output
    odd = runner.invoke(app, args + ["--crop-extent", "centre"], env={"FGVCBENCH_DATA": str(tmp_path / "data")})
    assert odd.exit_code == 2 and "--crop-extent: must be one of full, square" in odd.output
    square = runner.invoke(app, args + ["--crop-extent", "square"], env={"FGVCBENCH_DATA": str(tmp_path / "data")})
    assert square.exit_code == 0 and "crop_extent square" in square.output
    import csv
    with open(tmp_path / "bench" / "throughput.csv", newline="") as fh:
        assert [r["crop_extent"] for r in csv.DictReader(fh)] == ["full"] * 3 + ["square"] * 3


def test_bench_refuses_a_csv_it_cannot_append_to_before_measuring(tmp_path, runner, monkeypatch):
    import fgvcbench.bench as bench
    measured = []
    monkeypatch.setattr(bench, "measure_knn", lambda *a, **k: measured.append(1) or [])
    (tmp_path / "dir" / "knn.csv").mkdir(parents=True)                       # a folder where the CSV goes
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "knn.csv").write_text('n,"unterminated\n1,2\n')    # not this benchmark's columns
    for folder, needle in (("dir", "is not a file"), ("other", "has other columns")):
        result = runner.invoke(app, ["bench", "knn", "--device", "cpu", "--output", str(tmp_path / folder)])
        assert result.exit_code == 2 and needle in result.output and "move it away" in result.output, result.output
    assert measured == []
    result = runner.invoke(app, ["bench", "throughput", "--workers", "100000", "--device", "cpu"])
    assert result.exit_code == 2 and "--workers 100000" in result.output


def test_classic_and_fast_test_views_agree(tmp_path):
    get_registry(refresh=True)
    spec = get_registry().datasets["cub"]
    from fgvcbench.api import DatasetRequest
    splits = spec.load(DatasetRequest(root=make_cub(tmp_path / "cub"), options={"crop": "none"}, cache_dir=tmp_path))
    recipe = Recipe(image_size=24, eval_batch_size=16)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    data = build_tensor_data(DatasetSplits(splits.train, splits.test), 24, None, val_fraction=0.0)
    fast = BatchAugmenter(recipe, mean, std, torch.device("cpu"), torch.Generator()).eval(data.test.images)
    classic = next(iter(classic_loader(splits.test, recipe, mean, std, train=False, workers=0)))[0]
    assert fast.shape == classic.shape
    # both: resize the short side to size/0.875, centre-crop; only the resampling filters differ
    assert (fast - classic).abs().mean() < 0.05


def test_a_run_with_the_classic_pipeline(tmp_path, runner, registry_with, monkeypatch):
    registry_with()
    from fgvcbench.engine import train as engine
    built, real = [], engine._classic_loaders

    def counted(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    def fast_path(*args, **kwargs):
        raise AssertionError("pipeline: classic ran the fast pipeline's batch augmentation")
    monkeypatch.setattr(engine, "_classic_loaders", counted)
    monkeypatch.setattr(engine.BatchAugmenter, "train", fast_path)
    suite = tiny_suite(tmp_path, extra="", epochs=1)
    text = suite.read_text().replace("batch_size: 8}", "batch_size: 8, pipeline: classic}")
    suite.write_text(text)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert record["spec"]["recipe"]["pipeline"] == "classic" and record["status"] == "ok"
    assert record["cost"]["images_per_second"] > 0
    assert len(built) == 1   # the run's one fit read its batches from the classic loaders


def test_classic_loaders_crop_to_boxes_whenever_the_tensors_were(tmp_path):
    """A method that asks for boxes (the baseline's `crop_to_box`) on a dataset left at
    `crop: none`: the classic pipeline crops too, so both pipelines see the same images."""
    from fgvcbench.api import DatasetRequest
    from fgvcbench.engine.train import _classic_loaders
    get_registry(refresh=True)
    spec = get_registry().datasets["cub"]
    splits = spec.load(DatasetRequest(root=make_cub(tmp_path / "cub"), options={"crop": "none"}, cache_dir=tmp_path))
    assert not splits.crop_to_boxes
    recipe = Recipe(image_size=16, batch_size=4, eval_batch_size=4)
    for use_boxes in (False, True):
        data = build_tensor_data(splits, 16, None, val_fraction=0.0, use_boxes=use_boxes)
        assert data.use_boxes == use_boxes
        loaders = _classic_loaders(data, recipe, (0.5,) * 3, (0.5,) * 3, seed=0)
        assert all(loader.dataset.crop == use_boxes for loader in loaders.values())
    # a degenerate box (zero width) keeps the whole image, as the tensor pipeline's decode does
    test = splits.test.subset([0])
    test.boxes[0] = (5.0, 5.0, 0.0, 10.0)
    loader = classic_loader(test, recipe, (0.5,) * 3, (0.5,) * 3, train=False, workers=0, crop_to_boxes=True)
    assert next(iter(loader))[0].shape == (1, 3, 16, 16)


def test_eval_crop_pct_sets_the_test_views_resize_in_both_pipelines(tmp_path):
    """timm's crop_pct: the test view resizes to round(crop / pct), then centre-crops (SimTrans's
    code: 255 for 224). eval_resize_size, when set, wins; null keeps 0.875 (256 for 224)."""
    assert Recipe(image_size=224, eval_crop_pct=224 / 255).eval_resize == 255
    assert Recipe(image_size=384, eval_crop_pct=0.75).eval_resize == 512
    assert Recipe(image_size=176, eval_image_size=224, eval_crop_pct=0.875).eval_resize == 256   # the test crop's
    assert Recipe(image_size=224, eval_crop_pct=0.5, eval_resize_size=240).eval_resize == 240
    assert Recipe(image_size=224).eval_resize is None
    assert Recipe(image_size=384, eval_crop_pct=0.75).data_size == 448   # decoded at 512: no upsampling
    assert "eval_crop_pct" not in Recipe().to_dict()                     # run ids from before it stand
    assert dict(Recipe(eval_crop_pct=0.0).validate())["eval_crop_pct"].startswith("must be in (0, 1]")
    assert "over 4096" in dict(Recipe(eval_crop_pct=0.01).validate())["eval_crop_pct"]
    assert set(dict(Recipe(eval_resize_size=5000).validate())) == {"eval_resize_size"}   # not blamed on the share
    get_registry(refresh=True)
    spec = get_registry().datasets["cub"]
    from PIL import Image

    from fgvcbench.api import DatasetRequest
    splits = spec.load(DatasetRequest(root=make_cub(tmp_path / "cub"), options={"crop": "none"}, cache_dir=tmp_path))
    ramp = Image.fromarray(torch.arange(48).mul(5).to(torch.uint8).repeat(48, 1)[..., None].repeat(1, 1, 3).numpy())
    for path in splits.test.paths:          # a horizontal ramp, so how much of it a view holds shows
        ramp.save(path)
    recipe = Recipe(image_size=24, eval_batch_size=16, eval_crop_pct=0.6)   # resize 40, crop 24
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def views(r):
        data = build_tensor_data(DatasetSplits(splits.train, splits.test), r.data_size, None, val_fraction=0.0)
        fast = BatchAugmenter(r, mean, std, torch.device("cpu"), torch.Generator()).eval(data.test.images)
        classic = next(iter(classic_loader(splits.test, r, mean, std, train=False, workers=0)))[0]
        return fast, classic
    fast, classic = views(recipe)
    usual, usual_classic = views(recipe.replace(eval_crop_pct=None))          # resize 27, crop 24
    span = lambda x: float((x[:, 0, :, -1] - x[:, 0, :, 0]).mean())  # noqa: E731  (normalised units)
    # a 24-px crop of the photo resized to 40 px holds 24/40 of the ramp; of 27 px, 24/27
    assert span(fast) == pytest.approx(span(usual) * 27 / 40, rel=0.08)
    assert span(classic) == pytest.approx(span(usual_classic) * 27 / 40, rel=0.08)
    assert fast.shape == classic.shape and (fast - classic).abs().mean() < 0.05


def test_a_pipeline_timed_faster_than_the_model_alone_is_flagged_as_noise(tmp_path, runner, monkeypatch):
    """Model-only trains on a batch already on the device: the ceiling of both pipelines.
    A pipeline measured above it (few steps, a busy machine) gets a warning; the rows are
    still written."""
    import fgvcbench.bench as bench
    from fgvcbench.bench import ceiling_note

    def rows(fast, classic):
        return [{"mode": "model_only", "ratio_to_model_only": 1.0}, {"mode": "fast", "ratio_to_model_only": fast},
                {"mode": "classic", "ratio_to_model_only": classic}]
    assert ceiling_note(rows(0.95, 0.4), 20) is None and ceiling_note(rows(1.08, 0.4), 20) is None
    note = ceiling_note(rows(13.83, 0.98), 3)
    assert note.startswith("fast 13.83× model-only, which is the ceiling of every pipeline") and "(3 timed steps" in note
    assert "classic" not in note
    measured = [{**r, "images_per_second": 100 * r["ratio_to_model_only"], "device_name": "cpu"}
                for r in rows(1.5, 1.3)]
    measured[1]["ratio_to_classic"] = 1.5 / 1.3
    monkeypatch.setattr(bench, "measure_throughput", lambda *a, **k: [dict(r) for r in measured])
    monkeypatch.setattr(bench, "THROUGHPUT_FIELDS", ["mode", "images_per_second"])
    result = runner.invoke(app, ["bench", "throughput", "--device", "cpu", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "warning: fast 1.50×, classic 1.30× model-only" in said and "raise --steps and --warmup" in said
    assert len((tmp_path / "throughput.csv").read_text().splitlines()) == 4

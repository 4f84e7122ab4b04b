"""Which data a run read: records keep the data's fingerprint and counts; resuming runs made
on other data than the folder holds now is refused; cached stages and tables never mix two
versions of one folder's data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fgvcbench.api import DatasetSplits, ImageList
from fgvcbench.cli import app

from conftest import tiny_suite


def _folder(root, classes=3, train=4, test=2, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)
                pixels[:, :, c % 3] = 250
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def _splits(paths_train, paths_test, labels_train=None, boxes=None):
    names = ["a", "b"]
    train = ImageList(list(map(str, paths_train)), labels_train or [i % 2 for i in range(len(paths_train))], names,
                      boxes=boxes)
    test = ImageList(list(map(str, paths_test)), [i % 2 for i in range(len(paths_test))], names)
    return DatasetSplits(train=train, test=test)


def test_the_fingerprint_follows_the_content_not_the_folder(tmp_path):
    a = _folder(tmp_path / "a")
    shutil.copytree(a, tmp_path / "elsewhere" / "b")
    b = tmp_path / "elsewhere" / "b"

    def listing(root):
        train = sorted((root / "train").rglob("*.png"))
        test = sorted((root / "test").rglob("*.png"))
        return train, test

    ta, sa = listing(a)
    tb, sb = listing(b)
    first = _splits(ta, sa).identity()
    assert first == _splits(tb, sb).identity()   # a copy in another place is the same data
    assert first["classes"] == 2 and first["images"] == {"train": 12, "test": 6}
    assert len(first["fingerprint"]) == 16
    changed = {
        "an image less": _splits(ta[:-1], sa).identity(),
        "a label changed": _splits(ta, sa, labels_train=[1] + [i % 2 for i in range(1, len(ta))]).identity(),
        "an image moved to the test split": _splits(ta[1:], [ta[0]] + sa).identity(),
        "boxes": _splits(ta, sa, boxes=[(0, 0, 10, 10)] * len(ta)).identity(),
    }
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(ta[0])   # another file under the same name
    changed["a file replaced"] = _splits(ta, sa).identity()
    for what, identity in changed.items():
        assert identity["fingerprint"] != first["fingerprint"], what
    # two files of one size swapped (uncompressed images: what a relabelling by hand looks like)
    one, two = ta[2], ta[3]
    for path, value in ((one, 10), (two, 200)):
        Image.fromarray(np.full((30, 30, 3), value, np.uint8)).save(path.with_suffix(".bmp"))
    bmp = [one.with_suffix(".bmp"), two.with_suffix(".bmp")]
    before = _splits(bmp + ta[4:], sa).identity()["fingerprint"]
    swap = bmp[0].read_bytes()
    bmp[0].write_bytes(bmp[1].read_bytes())
    bmp[1].write_bytes(swap)
    assert _splits(bmp + ta[4:], sa).identity()["fingerprint"] != before


def test_images_from_the_data_root_and_the_cache_are_named_below_them(tmp_path):
    """A view mixes the data root's images with ones generated into the cache (weak_shot's
    out-of-distribution images): another data root and another cache give the same
    fingerprint; a generated file's bytes (the local encoder's) do not count."""
    runs = []
    for place in ("one", "two"):
        data = _folder(tmp_path / place / "data" / "birds")
        cache = tmp_path / place / "cache"
        generated = cache / "synthetic-abc" / "train"
        generated.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 20, 3), i * 40 + len(place), np.uint8)).save(generated / f"{i}.png")
        train = sorted((data / "train").rglob("*.png")) + sorted(generated.glob("*.png"))
        runs.append(_splits(train, sorted((data / "test").rglob("*.png"))).identity({"data": data, "cache": cache}))
    assert runs[0] == runs[1]
    assert runs[0]["images"] == {"train": 15, "test": 6}


@pytest.fixture
def folder_suite(tmp_path):
    _folder(tmp_path / "data" / "birds")
    suite = tiny_suite(tmp_path, datasets="[{name: imagefolder, root: birds}]", backbones="[pixels]",
                       extra=f"data_root: {tmp_path / 'data'}")
    return suite, tmp_path / "out", tmp_path / "data" / "birds"


def test_resuming_runs_made_on_other_data_is_refused(runner, folder_suite):
    suite, out, birds = folder_suite
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = _records(out)
    assert record["data"]["classes"] == 3 and record["data"]["images"] == {"train": 12, "test": 6}
    before = record["data"]["fingerprint"]
    verified = runner.invoke(app, ["data", "verify", "imagefolder", "--root", str(birds), "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["fingerprint"] == before   # what to compare with

    again = runner.invoke(app, ["run", str(suite), "--no-progress"])   # the same data: resumed
    assert again.exit_code == 0 and "0 ran, 1 resumed" in again.output

    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    text = _one_line(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "1 finished run in" in text and "made on other data than there is now — imagefolder@birds in" in text
    assert "then 3 classes, 12 train / 6 test images, now 3 classes, 13 train / 6 test images" in text
    assert "--output" in text and "--rerun all" in text
    assert [r["data"]["fingerprint"] for r in _records(out)] == [before]   # nothing moved or redone

    preview = runner.invoke(app, ["run", str(suite), "--dry-run"])   # a preview says so, and stops nothing
    assert preview.exit_code == 0, preview.output
    assert "a real run here would stop: 1 finished run" in " ".join(preview.output.split())

    rerun = runner.invoke(app, ["run", str(suite), "--no-progress", "--rerun", "all"])
    assert rerun.exit_code == 0, rerun.output
    (record,) = _records(out)
    assert record["data"]["images"]["train"] == 13 and record["data"]["fingerprint"] != before
    (old,) = list((out / "replaced").glob("*/runs/*.json"))
    assert json.loads(old.read_text())["data"]["fingerprint"] == before


def test_same_counts_other_files(runner, folder_suite):
    suite, out, birds = folder_suite
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    # the same counts, another picture under one name
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(birds / "test" / "c2" / "1.png")
    text = _one_line(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "the same counts (3 classes, 12 train / 6 test images), other files, labels or boxes" in text


def test_records_made_before_records_kept_their_data_still_resume(runner, folder_suite):
    suite, out, birds = folder_suite
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    (path,) = (out / "runs").glob("*.json")
    record = json.loads(path.read_text())
    del record["data"]
    path.write_text(json.dumps(record))
    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])   # nothing to compare with: as before
    assert result.exit_code == 0 and "0 ran, 1 resumed" in result.output


def test_a_cached_stage_is_not_reused_on_other_data(tmp_path):
    import torch

    from fgvcbench.plugins import get_registry
    from fgvcbench.run import RunContext
    from fgvcbench.store import Store
    from fgvcbench.suite import load_suite
    birds = _folder(tmp_path / "data" / "birds")
    suite = tiny_suite(tmp_path, datasets="[{name: imagefolder, root: birds}]", backbones="[pixels]",
                       extra=f"data_root: {tmp_path / 'data'}")
    registry = get_registry()
    spec = load_suite(suite, registry).runs[0]
    calls = []

    def counted():
        ctx = RunContext(spec, registry, Store(tmp_path / "out"), device=torch.device("cpu"),
                         cache_dir=tmp_path / "cache")

        def compute():
            calls.append(1)
            return {"n": len(ctx.load_splits().train)}
        return ctx.stage("count", compute, inputs={"dataset": spec.dataset})["n"]
    assert counted() == 12 and counted() == 12 and len(calls) == 1   # the same data: the stage is reused
    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    assert counted() == 13 and len(calls) == 2   # the same inputs, other data: computed again


def test_only_does_not_hide_runs_made_on_other_data(runner, tmp_path):
    birds = _folder(tmp_path / "data" / "birds")
    suite = tiny_suite(tmp_path, datasets="[{name: imagefolder, root: birds}]", backbones="[pixels]",
                       seeds="[0, 1]", extra=f"data_root: {tmp_path / 'data'}")
    result = runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "seed=0"])
    assert result.exit_code == 0, result.output
    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    # seed 1 alone would be new: but run's tables cover seed 0 too, made on the other data
    text = _one_line(runner.invoke(app, ["run", str(suite), "--no-progress", "--only", "seed=1"]))
    assert "1 finished run in" in text and "--rerun all and without --only" in text
    assert len(_records(tmp_path / "out")) == 1


def test_ablate_refuses_to_reuse_runs_made_on_other_data(runner, tmp_path):
    birds = _folder(tmp_path / "data" / "birds")
    suite = tiny_suite(tmp_path, datasets="[{name: imagefolder, root: birds}]", backbones="[pixels]",
                       methods="[recipe]", extra=f"data_root: {tmp_path / 'data'}")
    args = ["ablate", "--step", "label_smoothing", "--suite", str(suite), "--no-progress"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ablate label_smoothing (cumulative) · imagefolder@birds · pixels" in result.output   # its table's label
    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    text = _one_line(runner.invoke(app, args))
    assert "made on other data than there is now — imagefolder@birds" in text
    assert "another --output" in text and "--rerun" not in text   # ablate has no --rerun


def test_the_leaderboard_keeps_two_versions_of_the_data_apart(runner, folder_suite, tmp_path):
    suite, out, birds = folder_suite
    assert runner.invoke(app, ["run", str(suite), "--no-progress", "--seeds", "0,1"]).exit_code == 0
    shutil.copy(birds / "train" / "c0" / "0.png", birds / "train" / "c1" / "extra.png")
    assert runner.invoke(app, ["run", str(suite), "--no-progress", "--seeds", "1",
                               "--output", str(tmp_path / "new")]).exit_code == 0
    result = runner.invoke(app, ["leaderboard", str(out), str(tmp_path / "new"), "-f", "csv", "--no-write"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "imagefolder@birds: its runs read 2 versions of its data, shown apart as" in text
    assert "(2 runs; 3 classes, 12 train / 6 test images)" in text
    assert "(1 run; 3 classes, 13 train / 6 test images)" in text
    import io

    import pandas as pd
    rows = pd.read_csv(io.StringIO(result.stdout[result.stdout.index("dataset,"):]))
    assert sorted(rows["n"]) == [1, 2]   # seed 0 of each version stays its own seed
    assert rows["dataset"].str.startswith("imagefolder@birds [data ").all()
    assert rows["data"].str.len().eq(16).all() and rows["data"].nunique() == 2
    assert all(label.endswith(f"[data {fp[:8]}]") for label, fp in zip(rows["dataset"], rows["data"]))


def test_a_record_without_its_data_joins_the_one_version_there_is(runner, folder_suite, tmp_path):
    suite, out, birds = folder_suite
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    shutil.copytree(out, tmp_path / "older")
    (path,) = (tmp_path / "older" / "runs").glob("*.json")
    record = json.loads(path.read_text())
    del record["data"]
    path.write_text(json.dumps(record))
    result = runner.invoke(app, ["leaderboard", str(out), str(tmp_path / "older"), "-f", "csv", "--no-write"])
    assert result.exit_code == 0, result.output
    assert "versions of its data" not in result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("imagefolder@birds,")]
    assert len(lines) == 1 and ",1,0," in lines[0]   # one run, once: n = 1, seed 0


def test_the_same_images_in_another_order_are_named_so_with_the_fix(runner, tmp_path, registry_with):
    """A loader that lists files unsorted (os.listdir, a set) gives another order elsewhere:
    training sees another order, so resuming is refused, and the line says it is only the order."""
    import types

    from fgvcbench.api import DatasetSpec, hookimpl
    _folder(tmp_path / "data" / "birds")
    flip = tmp_path / "flip"

    def load(request):
        names, lists = ["c0", "c1", "c2"], {}
        for split in ("train", "test"):
            paths = sorted((request.root / split).rglob("*.png"), reverse=flip.exists())
            lists[split] = ImageList([str(p) for p in paths], [names.index(p.parent.name) for p in paths], names)
        return DatasetSplits(train=lists["train"], test=lists["test"])
    mod = types.ModuleType("listed")
    mod.fgvcbench_datasets = hookimpl(lambda: [DatasetSpec(name="listed", load=load)])
    registry_with(mod)
    suite = tiny_suite(tmp_path, datasets="[{name: listed, root: birds}]", backbones="[pixels]",
                       extra=f"data_root: {tmp_path / 'data'}")
    assert runner.invoke(app, ["run", str(suite), "--no-progress"]).exit_code == 0
    flip.touch()
    text = _one_line(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "made on other data than there is now — listed@birds in" in text
    assert "the same images, labels and boxes in another order" in text and "sort each split's list" in text
    # another image as well: not only the order, so the counts are said as before
    c0 = tmp_path / "data" / "birds" / "train" / "c0"
    shutil.copy(c0 / "0.png", c0 / "x.png")
    text = _one_line(runner.invoke(app, ["run", str(suite), "--no-progress"]))
    assert "then 3 classes, 12 train / 6 test images, now 3 classes, 13 train / 6 test images" in text

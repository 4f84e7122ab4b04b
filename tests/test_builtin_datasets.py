"""The built-in dataset plugins: `imagefolder` trees and the `synthetic` registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvcbench.api import DataError, DatasetRequest
from fgvcbench.cli import app
from fgvcbench.plugins import get_registry


def make_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def load(name, root=None, **options):
    spec = get_registry(refresh=True).datasets[name]
    return spec.load(DatasetRequest(root=root, options={**spec.options, **options}, cache_dir=Path("/tmp")))


def test_imagefolder_lists_classes_and_splits(tmp_path):
    root = make_tree(tmp_path, {"train": {"b_bird": 3, "a_bird": 2}, "test": {"a_bird": 1, "b_bird": 2}})
    (root / "train" / "a_bird" / "notes.txt").write_text("not an image")
    splits = load("imagefolder", root)
    assert splits.train.class_names == ["a_bird", "b_bird"]
    assert splits.train.labels == [0, 0, 1, 1, 1] and splits.test.labels == [0, 1, 1]
    assert all(p.endswith(".png") for p in splits.train.paths)


def test_imagefolder_skips_hidden_folders_and_finds_nested_images(tmp_path):
    import os
    root = make_tree(tmp_path / "d", {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    make_tree(root / "train" / "a", {"2019": {"x": 1}})                     # train/a/2019/x/0.png
    make_tree(root / "train" / ".ipynb_checkpoints", {"sub": {"y": 1}})     # hidden: not a class
    make_tree(root / "test" / ".cache", {"z": {"q": 1}})                    # hidden in test: not an extra class
    make_tree(root / "train" / "b" / ".thumbs", {"s": {"t": 1}})            # hidden inside a class: skipped
    (root / "train" / "b" / "._0.png").write_bytes(b"resource fork")        # macOS metadata file
    linked = make_tree(tmp_path / "elsewhere", {"more": {"m": 2}})
    os.symlink(linked / "more" / "m", root / "train" / "b" / "linked")      # followed, as ImageFolder does
    splits = load("imagefolder", root)
    assert splits.train.class_names == ["a", "b"]
    rel = [os.path.relpath(p, root / "train") for p in splits.train.paths]
    assert rel == ["a/0.png", "a/2019/x/0.png", "b/0.png", "b/linked/0.png", "b/linked/1.png"]
    assert splits.train.labels == [0, 0, 1, 1, 1] and load("imagefolder", root).train.paths == splits.train.paths


def test_imagefolder_errors_say_the_layout(tmp_path):
    with pytest.raises(DataError, match="ROOT/train/<class>"):
        load("imagefolder", make_tree(tmp_path / "x", {"train": {"a": 1}}))
    root = make_tree(tmp_path / "y", {"train": {"a": 1}, "test": {"a": 1, "zebra": 1}})
    with pytest.raises(DataError, match="zebra"):
        load("imagefolder", root)
    empty_test = make_tree(tmp_path / "z", {"train": {"a": 2}, "test": {"a": 0}})   # names the empty split
    with pytest.raises(DataError, match=r"no test images found under .*z/test \(image files: .bmp"):
        load("imagefolder", empty_test)


def test_synthetic_registration_exposes_boxes_and_coarse_labels(tmp_path):
    splits = load("synthetic", None, coarse=2, fine=2, train_per_class=2, test_per_class=1, image_size=24)
    assert len(splits.train) == 8 and len(splits.test) == 4
    assert splits.train.coarse_labels == [label // 2 for label in splits.train.labels]
    assert splits.train.boxes is not None and splits.train.coarse_names[0].startswith("group0")
    with pytest.raises(DataError, match="difficulty"):
        load("synthetic", None, difficulty=3.0)


def test_imagefolder_runs_through_a_suite(tmp_path, runner):
    root = make_tree(tmp_path / "data", {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}})
    suite = tmp_path / "s.yaml"
    suite.write_text(f"output: {tmp_path / 'out'}\ndevice: cpu\ndatasets: [{{name: imagefolder, root: {root}}}]\n"
                     "backbones: [pixels]\nmethods: [finetune]\n")
    get_registry(refresh=True)
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "imagefolder" in (tmp_path / "out" / "leaderboard.csv").read_text()


def test_imagefolder_levels_2_reads_coarse_and_fine_folders(tmp_path, runner):
    root = make_tree(tmp_path / "d", {"train": {"gull/herring": 2, "gull/ivory": 1, "tern/arctic": 2},
                                      "test": {"gull/ivory": 1, "tern/arctic": 1}})
    splits = load("imagefolder", root, levels=2)
    assert splits.train.class_names == ["gull/herring", "gull/ivory", "tern/arctic"]
    assert splits.train.coarse_names == ["gull", "tern"]
    assert splits.train.labels == [0, 0, 1, 2, 2] and splits.train.coarse_labels == [0, 0, 0, 1, 1]
    assert splits.test.labels == [1, 2] and splits.test.coarse_labels == [0, 1]
    assert load("imagefolder", root).train.class_names == ["gull", "tern"]   # levels: 1 (default): the top folders
    # its coarse view: the groups as labels, the fine folders as each image's true fine label
    coarse = load("coarse", root, of="imagefolder", of_options={"levels": 2}, min_fine=1)
    assert coarse.train.class_names == ["gull", "tern"] and coarse.train.labels == [0, 0, 0, 1, 1]
    assert coarse.train.meta["fine_label"] == [0, 0, 1, 2, 2]
    (root / "test" / "tern" / "arctic" / "0.png").unlink()
    (root / "test" / "tern" / "arctic").rmdir()   # a coarse class with no test image, as levels: 1 allows
    assert load("imagefolder", root, levels=2).test.labels == [1]
    # an image beside the fine folders belongs to no fine class: say where, and what to do
    Image.new("RGB", (8, 8)).save(root / "train" / "gull" / "loose.png")
    with pytest.raises(DataError, match=r"gull holds 1 image\(s\) outside fine-class folders \(e.g. loose.png\) — "
                                        r"move them into a <fine> folder, or read the folder with levels: 1"):
        load("imagefolder", root, levels=2)
    # a coarse view of a one-level folder is refused when the suite loads; levels: 3 is no choice
    for options, said in (("{of: imagefolder}", "has no coarse level"),
                          ("{of: imagefolder, of_options: {levels: 3}}", "levels: 3 is not one of 1, 2")):
        suite = tmp_path / f"s{len(said)}.yaml"
        suite.write_text(f"name: s\noutput: {tmp_path / 'out'}\ndatasets: [{{name: coarse, root: {root}, "
                         f"options: {options}}}]\nbackbones: [pixels]\nmethods: [finetune]\n")
        result = runner.invoke(app, ["run", str(suite), "--dry-run"])
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output

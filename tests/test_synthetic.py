"""The embedded synthetic dataset: deterministic, cached, fine-grained by construction."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

from fgvcbench.data.synthetic import (SyntheticConfig, class_names, load_split, materialize, part_bits,
                                      render_image)

SMALL = SyntheticConfig(coarse=2, fine=2, train_per_class=5, test_per_class=3, image_size=32)


def pixels(path):
    return np.asarray(Image.open(path))


def test_deterministic_and_seed_dependent(tmp_path):
    a, b = materialize(SMALL, tmp_path / "a"), materialize(SMALL, tmp_path / "b")
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    first = "train/" + class_names(SMALL)[0] + "/00000.jpg"
    assert np.array_equal(pixels(a / first), pixels(b / first))
    other = materialize(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}), tmp_path / "a")
    assert other != a and not np.array_equal(pixels(other / first), pixels(a / first))


def test_counts_labels_and_boxes(tmp_path):
    root = materialize(SMALL, tmp_path)
    for split, per_class in (("train", 5), ("test", 3)):
        d = load_split(root, split)
        assert len(d["paths"]) == 4 * per_class
        assert [d["labels"].count(c) for c in range(4)] == [per_class] * 4
        assert d["coarse_labels"] == [label // 2 for label in d["labels"]]
        for path, (x, y, w, h) in zip(d["paths"], d["boxes"]):
            assert os.path.isfile(path)
            assert 0 <= x and 0 <= y and w > 2 and h > 2 and x + w <= 32.01 and y + h <= 32.01
    assert len(set(class_names(SMALL))) == 4 and load_split(root, "train")["class_names"] == class_names(SMALL)


def test_cache_and_interrupted_generation(tmp_path):
    root = materialize(SMALL, tmp_path)
    stamp = (root / "metadata.csv").stat().st_mtime_ns
    assert materialize(SMALL, tmp_path) == root and (root / "metadata.csv").stat().st_mtime_ns == stamp
    (root / "COMPLETE").unlink()                     # as if a crash had left it half-written
    os.remove(root / "metadata.csv")
    again = materialize(SMALL, tmp_path)
    assert (again / "COMPLETE").exists() and (again / "metadata.csv").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("field, value", [("fine", 1), ("coarse", 0), ("image_size", 8), ("difficulty", 1.5),
                                          ("train_per_class", 0), ("fine", 64), ("seed", -1),
                                          ("difficulty", "0.5"), ("image_size", 32.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})


def class_mean_difference(config, a, b, n=24):
    """Mean absolute pixel difference between classes a and b, rendered with the same
    per-image random draws (pose, clutter, lighting): only the class changes."""
    diffs = []
    for i in range(n):
        ia, _ = render_image(config, a, np.random.default_rng([i]))
        ib, _ = render_image(config, b, np.random.default_rng([i]))
        diffs.append(np.abs(np.asarray(ia, float) - np.asarray(ib, float)).mean())
    return float(np.mean(diffs))


def test_fine_classes_differ_subtly_and_difficulty_controls_it():
    config = SyntheticConfig(coarse=2, fine=4, image_size=48, difficulty=0.5)
    within = class_mean_difference(config, 0, 3)     # same group: parts differ
    across = class_mean_difference(config, 0, 4)     # another group: shape and palette differ
    assert 0 < within < across / 2
    easy = class_mean_difference(SyntheticConfig(coarse=2, fine=4, image_size=48, difficulty=0.0), 0, 3)
    hard = class_mean_difference(SyntheticConfig(coarse=2, fine=4, image_size=48, difficulty=1.0), 0, 3)
    assert easy > hard > 0
    assert part_bits(config, 3) == {"stripe": True, "spot": True, "longtail": False, "longbeak": False,
                                    "warmpatch": False}


def test_metadata_has_the_documented_columns(tmp_path):
    root = materialize(SMALL, tmp_path)
    with open(root / "metadata.csv") as fh:
        assert next(csv.reader(fh)) == ["path", "split", "fine_label", "coarse_label", "x", "y", "w", "h"]


def test_load_split_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_split(tmp_path, "train")
    root = materialize(SMALL, tmp_path)
    with pytest.raises(ValueError, match="'val'"):
        load_split(root, "val")


def test_a_killed_generation_is_swept_but_another_hosts_is_not(tmp_path):
    import socket
    import subprocess
    import sys
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    mine = tmp_path / f".synthetic-0123.tmp-{socket.gethostname()}-{dead}"
    theirs = tmp_path / f".synthetic-0123.tmp-another-host-{dead}"
    for folder in (mine, theirs):
        (folder / "train").mkdir(parents=True)
    materialize(SMALL, tmp_path)
    assert not mine.exists() and theirs.exists()


def test_synthetic_sizes_that_cannot_be_meant_are_refused_before_anything_is_written():
    with pytest.raises(ValueError, match="coarse must be >= 1 and <= 1,000"):
        SyntheticConfig(coarse=10**23)
    with pytest.raises(ValueError, match="make 3,672,000 images, more than 500,000"):
        SyntheticConfig(coarse=900, train_per_class=1000)

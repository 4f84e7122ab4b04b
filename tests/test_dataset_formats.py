"""Each dataset adapter on a tiny fixture in its exact published on-disk format, and on
the real CUB images in ../shared/data when they are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgvcbench.api import DataError, DatasetRequest
from fgvcbench.data.pipeline import build_tensor_data
from fgvcbench.plugins import get_registry

from conftest import SHARED_DATA


def jpeg(path: Path, size=(40, 30), colour=(120, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)


def load(name: str, root: Path | None, **options):
    spec = get_registry(refresh=True).datasets[name]
    return spec.load(DatasetRequest(root=root, options={**spec.options, **options}, cache_dir=Path("/tmp")))


def make_cub(root: Path) -> Path:
    # non-contiguous class and image ids, as in a subset of the official files
    classes = {3: "003.Sooty_Albatross", 7: "007.Parakeet_Auklet", 9: "009.Brewer_Blackbird"}
    images, labels, split, boxes = [], [], [], []
    image_id = 10
    for cid, name in classes.items():
        for k in range(3):
            rel = f"{name}/{name.split('.')[1]}_{k}.jpg"
            jpeg(root / "images" / rel, colour=(image_id * 4 % 256, 255 - image_id * 4 % 256, 90))  # distinct files
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {1 if k < 2 else 0}")
            boxes.append(f"{image_id} 2.0 3.0 20.0 15.0")
            image_id += 5
    for fname, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                         ("train_test_split.txt", split), ("bounding_boxes.txt", boxes),
                         ("classes.txt", [f"{c} {n}" for c, n in classes.items()])):
        (root / fname).write_text("\n".join(lines) + "\n")
    return root


def test_cub(tmp_path):
    splits = load("cub", make_cub(tmp_path), crop="bbox")
    assert (len(splits.train), len(splits.test)) == (6, 3)
    assert splits.train.class_names == ["003.Sooty_Albatross", "007.Parakeet_Auklet", "009.Brewer_Blackbird"]
    assert splits.train.labels == [0, 0, 1, 1, 2, 2] and splits.test.labels == [0, 1, 2]
    assert splits.train.coarse_names == ["Albatross", "Auklet", "Blackbird"]
    assert splits.train.boxes[0] == (2.0, 3.0, 20.0, 15.0) and splits.crop_to_boxes
    data = build_tensor_data(splits, 16, tmp_path / "cache")
    assert data.train.images.shape[1:] == (3, 18, 18)
    (tmp_path / "bounding_boxes.txt").write_text("10 1 1 1 1\n")
    with pytest.raises(DataError, match="bounding_boxes.txt"):
        load("cub", tmp_path)
    with pytest.raises(DataError, match="images.txt"):
        load("cub", tmp_path / "empty_missing")


def _cars_struct(rows):
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    return np.array([tuple(r) for r in rows], dtype=dtype)


def make_cars(root: Path) -> Path:
    (root / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"], dtype=object)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    train = [(1, 2, 30, 20, 1, "00001.jpg"), (1, 2, 30, 20, 2, "00002.jpg"), (1, 2, 30, 20, 3, "00003.jpg"),
             (1, 2, 30, 20, 3, "00004.jpg")]
    test = [(0, 0, 10, 10, 2, "00001.jpg"), (0, 0, 10, 10, 1, "00002.jpg")]
    for folder, rows in (("cars_train", train), ("cars_test", test)):
        for r in rows:
            jpeg(root / folder / r[5])
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _cars_struct(train).reshape(1, -1)})
    scipy.io.savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _cars_struct(test).reshape(1, -1)})
    return root


def test_cars(tmp_path):
    make_cars(tmp_path / "stanford_cars")
    splits = load("cars", tmp_path)                               # the parent folder works too
    assert splits.train.labels == [0, 1, 2, 2] and splits.test.labels == [1, 0]
    assert splits.train.boxes[0] == (1.0, 2.0, 29.0, 18.0)
    assert splits.train.coarse_names == ["AM General", "Acura"] and splits.train.coarse_labels == [0, 1, 1, 1]
    makes = load("cars", tmp_path, level="make")
    assert makes.train.class_names == ["AM General", "Acura"] and makes.test.labels == [1, 0]
    with pytest.raises(DataError, match="level"):
        load("cars", tmp_path, level="colour")


def make_aircraft(root: Path) -> Path:
    data = root / "data"
    rows = {"train": [("0001", "707-320", "Boeing 707", "Boeing"), ("0002", "A300B4", "A300", "Airbus")],
            "val": [("0003", "707-320", "Boeing 707", "Boeing")],
            "test": [("0004", "A300B4", "A300", "Airbus"), ("0005", "707-320", "Boeing 707", "Boeing")]}
    for split, items in rows.items():
        for level, col in (("variant", 1), ("family", 2), ("manufacturer", 3)):
            (data / f"images_{level}_{split}.txt").parent.mkdir(parents=True, exist_ok=True)
            (data / f"images_{level}_{split}.txt").write_text("\n".join(f"{r[0]} {r[col]}" for r in items) + "\n")
        for r in items:
            jpeg(data / "images" / f"{r[0]}.jpg", size=(40, 60))
    (data / "variants.txt").write_text("707-320\nA300B4\n")
    (data / "families.txt").write_text("A300\nBoeing 707\n")
    (data / "manufacturers.txt").write_text("Airbus\nBoeing\n")
    (data / "images_box.txt").write_text("\n".join(f"000{i} 1 2 30 40" for i in range(1, 6)) + "\n")
    return root


def test_aircraft(tmp_path):
    root = make_aircraft(tmp_path)
    splits = load("aircraft", root)
    assert len(splits.train) == 3 and splits.val is None and splits.train.trim_bottom == 20
    assert splits.train.labels == [0, 1, 0] and splits.test.labels == [1, 0]
    assert splits.train.coarse_names == ["A300", "Boeing 707"] and splits.train.coarse_labels == [1, 0, 1]
    assert splits.train.boxes[0] == (1.0, 2.0, 29.0, 38.0)
    fam = load("aircraft", root, level="family", train_split="train")
    assert fam.train.class_names == ["A300", "Boeing 707"] and len(fam.val) == 1
    assert fam.train.coarse_names == ["Airbus", "Boeing"]
    # the 20-px banner is gone before resizing: a red banner leaves no red in the decoded image
    img = Image.new("RGB", (40, 60), (0, 0, 255))
    img.paste((255, 0, 0), (0, 40, 40, 60))
    img.save(root / "data" / "images" / "0001.jpg", quality=95)
    data = build_tensor_data(splits, 16, None)
    assert data.train.images[0, 0].float().mean() < 40 or data.val.images[0, 0].float().mean() < 40


def test_flowers(tmp_path):
    for i in range(1, 7):
        jpeg(tmp_path / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2]])})
    scipy.io.savemat(tmp_path / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                              "tstid": np.array([[5, 6]])})
    splits = load("flowers102", tmp_path)
    assert len(splits.train) == 4 and splits.test.labels == [0, 1] and splits.val is None
    official = load("flowers102", tmp_path, train_split="train")
    assert official.val.paths[0].endswith("image_00003.jpg")


def test_dogs(tmp_path):
    folders = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    files = {"train": [f"{folders[0]}/a.jpg", f"{folders[1]}/b.jpg"], "test": [f"{folders[1]}/c.jpg"]}
    for split, fs in files.items():
        for f in fs:
            jpeg(tmp_path / "Images" / f)
            xml = tmp_path / "Annotation" / Path(f).with_suffix("")
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text("<annotation><object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax>"
                           "</bndbox></object><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>20</xmax>"
                           "<ymax>8</ymax></bndbox></object></annotation>")
        (tmp_path / "lists").mkdir(exist_ok=True)
        labels = [folders.index(f.split("/")[0]) + 1 for f in fs]
        scipy.io.savemat(tmp_path / "lists" / f"{split}_list.mat",
                         {"file_list": np.array(fs, dtype=object).reshape(-1, 1), "labels": np.array(labels).reshape(-1, 1)})
    splits = load("dogs", tmp_path, crop="bbox")
    assert splits.train.class_names == ["Chihuahua", "Japanese_spaniel"] and splits.train.labels == [0, 1]
    assert splits.train.boxes[0] == (1.0, 1.0, 19.0, 11.0)                 # the union of both dogs


def test_dtd(tmp_path):
    for cls in ("banded", "zigzagged"):
        for i in range(3):
            jpeg(tmp_path / "images" / cls / f"{cls}_{i}.jpg")
    (tmp_path / "labels").mkdir()
    for name, idx in (("train", 0), ("val", 1), ("test", 2)):
        (tmp_path / "labels" / f"{name}2.txt").write_text(f"banded/banded_{idx}.jpg\nzigzagged/zigzagged_{idx}.jpg\n")
    splits = load("dtd", tmp_path, split=2)
    assert len(splits.train) == 4 and splits.test.labels == [0, 1]
    with pytest.raises(DataError, match="train1.txt"):
        load("dtd", tmp_path)                                            # split 1 files are absent
    with pytest.raises(DataError, match="1 to 10"):
        load("dtd", tmp_path, split=11)


def test_pets(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_1 2 2 1\n")
    (tmp_path / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\nbeagle_2 2 2 1\n")
    for n in ("Abyssinian_1", "beagle_1", "Abyssinian_2", "beagle_2"):
        jpeg(tmp_path / "images" / f"{n}.jpg")
    splits = load("pets", tmp_path)
    assert splits.train.class_names == ["Abyssinian", "beagle"] and splits.train.coarse_labels == [0, 1]
    assert load("pets", tmp_path, level="species").test.class_names == ["cat", "dog"]


REAL_CUB = SHARED_DATA / "CUB_200_2011_first50"


@pytest.mark.skipif(not REAL_CUB.is_dir(), reason=f"real CUB subset not found at {REAL_CUB}")
def test_real_cub_subset_loads_with_official_counts():
    splits = load("cub", REAL_CUB, crop="bbox")
    assert (len(splits.train), len(splits.test)) == (1500, 1389)
    assert len(splits.train.class_names) == 50 and set(splits.train.labels) == set(range(50))
    assert splits.train.class_names[0] == "001.Black_footed_Albatross"
    assert "Albatross" in splits.train.coarse_names
    for path, (x, y, w, h) in list(zip(splits.train.paths, splits.train.boxes))[:50]:
        with Image.open(path) as img:
            assert x >= 0 and y >= 0 and x + w <= img.width + 1 and y + h <= img.height + 1

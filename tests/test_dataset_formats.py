"""Each dataset adapter on a tiny fixture in its exact published on-disk format, and on
the real CUB images in ../shared/data when they are present.

Box conventions as published: CUB gives ``x y w h`` (0-based, used as is); FGVC-Aircraft,
the Stanford Cars devkit and Stanford Dogs (PASCAL VOC) give 1-based inclusive
``xmin ymin xmax ymax`` (top-left pixel (1, 1)), which become ``x = xmin - 1``,
``w = xmax - xmin + 1``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgvcbench.api import DataError, DatasetRequest
from fgvcbench.data.pipeline import build_tensor_data, canvas_layout
from fgvcbench.plugins import get_registry

from conftest import SHARED_DATA


def jpeg(path: Path, size=(40, 30), colour=(120, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)


def load(name: str, root: Path | None, **options):
    spec = get_registry(refresh=True).datasets[name]
    return spec.load_checked(DatasetRequest(root=root, options={**spec.options, **options}, cache_dir=Path("/tmp")))


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
    # the whole 20 × 15 box (crop_extent: full), shorter side 18: 24 columns
    assert data.train.images.shape[1:3] == (3, 18) and canvas_layout(data.train.images)[0][0] == 24
    assert build_tensor_data(splits, 16, tmp_path / "cache", crop_extent="square").train.images.shape[1:] == (3, 18, 18)
    (tmp_path / "bounding_boxes.txt").write_text("10 1 1 1 1\n")
    with pytest.raises(DataError, match="bounding_boxes.txt"):
        load("cub", tmp_path)
    with pytest.raises(DataError, match="images.txt"):
        load("cub", tmp_path / "empty_missing")


def test_a_root_one_folder_above_a_renamed_copy_names_the_folder_that_holds_it(tmp_path, runner):
    from fgvcbench.cli import app
    make_cub(tmp_path / "data" / "CUB_first3")
    (tmp_path / "data" / "notes").mkdir()   # another folder, looked at first, without the files
    with pytest.raises(DataError, match=r"images.txt not found, but .*CUB_first3 has the dataset's files — use that "
                                        r"folder as the dataset's root"):
        load("cub", tmp_path / "data")
    said = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path / "data")])
    assert said.exit_code == 2 and "Traceback" not in said.output
    assert f"`--root {tmp_path / 'data' / 'CUB_first3'}`" in said.output
    with pytest.raises(DataError, match="not found — expected layout"):   # nothing below holds it either
        load("cub", tmp_path / "data" / "notes")


def test_cub_from_its_parent_folder_with_spaces_in_names_and_a_byte_order_mark(tmp_path):
    root = make_cub(tmp_path / "CUB_200_2011")
    lines = (root / "images.txt").read_text().splitlines()
    image_id, rel = lines[0].split(" ", 1)
    spaced = rel.replace(".jpg", " copy.jpg")                 # a custom file in the CUB format
    (root / "images" / rel).rename(root / "images" / spaced)
    lines[0] = f"{image_id} {spaced}  "
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\ufeff" + (root / "classes.txt").read_text(), encoding="utf-8")  # Notepad's BOM
    splits = load("cub", tmp_path)                            # the folder holding CUB_200_2011/
    assert splits.train.paths[0] == str(root / "images" / spaced) and Path(splits.train.paths[0]).is_file()
    assert splits.train.class_names[0] == "003.Sooty_Albatross"


def test_cub_coarse_groups_are_words_not_taxa():
    from fgvcbench_plugins.datasets.cub import bird_group
    assert bird_group("022.Chuck_will_Widow") == "Widow"
    assert bird_group("018.Spotted_Catbird") == bird_group("019.Gray_Catbird") == "Catbird"
    assert bird_group("047.American_Goldfinch") != bird_group("035.Purple_Finch")


@pytest.mark.parametrize("fname, row, line, message", [
    ("train_test_split.txt", 0, "10 2", r"train_test_split.txt:1: split value '2'"),
    ("train_test_split.txt", 1, "15 yes", r"train_test_split.txt:2: split value 'yes'"),
    ("classes.txt", 1, "8 008.Rhinoceros_Auklet",                       # class 7 unnamed
     r"image_class_labels.txt:4: class '7' of image 25 is not a class id of .*classes.txt"),
    ("bounding_boxes.txt", 0, "10 2.0 three 20.0 15.0", r"bounding_boxes.txt:1: box 2.0 three 20.0 15.0 of image 10"),
    ("bounding_boxes.txt", 0, "10 nan 2 20 15", r"bounding_boxes.txt:1: box nan 2 20 15 of image 10 is not x y"),
    ("images.txt", 1, "10 001.Black_footed_Albatross/a.jpg", r"images.txt:2: id 10 is listed again \(first on line 1\)"),
])
def test_cub_malformed_metadata_is_one_data_error(tmp_path, fname, row, line, message):
    root = make_cub(tmp_path)
    rows = (root / fname).read_text().splitlines()
    rows[row] = line
    (root / fname).write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=message):
        load("cub", root)


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


def cars_unlabelled_test_annos(path: Path) -> None:
    """The devkit's own cars_test_annos.mat: the same struct without the ``class`` field."""
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname")]
    rows = np.array([(1, 1, 10, 10, "00001.jpg"), (1, 1, 10, 10, "00002.jpg")], dtype=dtype)
    scipy.io.savemat(path, {"annotations": rows.reshape(1, -1)})


def test_cars(tmp_path):
    make_cars(tmp_path / "stanford_cars")
    splits = load("cars", tmp_path)                               # the parent folder works too
    assert splits.train.labels == [0, 1, 2, 2] and splits.test.labels == [1, 0]
    # devkit bbox_x1..y2 = 1, 2, 30, 20 are MATLAB 1-based inclusive pixels: x 0..30, y 1..20
    assert splits.train.boxes[0] == (0.0, 1.0, 30.0, 19.0)
    assert splits.train.coarse_names == ["AM General", "Acura"] and splits.train.coarse_labels == [0, 1, 1, 1]
    makes = load("cars", tmp_path, level="make")
    assert makes.train.class_names == ["AM General", "Acura"] and makes.test.labels == [1, 0]
    with pytest.raises(DataError, match="level"):
        load("cars", tmp_path, level="colour")


def test_cars_test_annotations_in_devkit_and_the_unlabelled_file(tmp_path):
    root = make_cars(tmp_path / "cars")
    (root / "cars_test_annos_withlabels.mat").rename(root / "devkit" / "cars_test_annos_withlabels.mat")
    assert load("cars", root).test.labels == [1, 0]                   # mmpretrain's devkit/ place
    cars_unlabelled_test_annos(root / "cars_test_annos_withlabels.mat")  # the unlabelled file, misnamed
    with pytest.raises(DataError, match="no 'class' field.*use cars_test_annos_withlabels.mat"):
        load("cars", root)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"names": np.array(["x"], dtype=object)})
    with pytest.raises(DataError, match="malformed metadata .*KeyError: 'class_names'"):
        load("cars", root)


def test_cars_all_in_one_release(tmp_path):
    """cars_annos.mat + car_ims/: one annotations struct whose ``test`` field splits it."""
    root = tmp_path / "stanford_cars"
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"], dtype=object)
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    rows = [("car_ims/000001.jpg", 1, 2, 30, 20, 1, 0), ("car_ims/000002.jpg", 3, 3, 12, 12, 3, 1),
            ("car_ims/000003.jpg", 1, 1, 10, 10, 2, 0), ("car_ims/000004.jpg", 1, 1, 10, 10, 1, 1)]
    for r in rows:
        jpeg(root / r[0])
    annos = np.array(rows, dtype=[(k, "O") for k in fields]).reshape(1, -1)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annos, "class_names": names.reshape(1, -1)})
    splits = load("cars", tmp_path)
    assert [Path(p).name for p in splits.train.paths] == ["000001.jpg", "000003.jpg"]
    assert splits.train.labels == [0, 1] and splits.test.labels == [2, 0]
    assert splits.train.boxes[0] == (0.0, 1.0, 30.0, 19.0) and splits.test.boxes[0] == (2.0, 2.0, 10.0, 10.0)
    assert splits.test.coarse_names == ["AM General", "Acura"] and splits.test.coarse_labels == [1, 0]
    assert load("cars", root, level="make").train.labels == [0, 1]
    assert load("cars", root, crop="bbox").crop_to_boxes
    # a devkit tarball unpacked beside it (devkit/ but no cars_train/, or an empty devkit/ beside
    # image folders): still the all-in-one release
    (root / "devkit").mkdir()
    assert load("cars", root).test.labels == [2, 0]
    (root / "cars_train").mkdir()
    (root / "cars_test").mkdir()
    assert load("cars", root).test.labels == [2, 0]
    # a test field that does not split: refused with what was found
    bad = np.array([r[:6] + (0,) for r in rows], dtype=[(k, "O") for k in fields]).reshape(1, -1)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": bad, "class_names": names.reshape(1, -1)})
    with pytest.raises(DataError, match=r"'test' field must be 0 \(train\) or 1 \(test\) and hold both — found \[0\]"):
        load("cars", root)
    (root / "cars_annos.mat").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read .*cars_annos.mat"):
        load("cars", root)


def test_a_complete_devkit_wins_over_the_all_in_one_files_beside_it(tmp_path):
    root = make_cars(tmp_path / "cars")
    (root / "car_ims").mkdir()
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": np.zeros((1, 1))})   # never read
    splits = load("cars", root)
    assert splits.train.labels == [0, 1, 2, 2] and splits.test.labels == [1, 0]


def test_cars_as_kaggle_nests_it_and_a_devkit_without_test_labels(tmp_path):
    root = make_cars(tmp_path / "cars")
    for folder in ("cars_train", "cars_test"):               # Kaggle: cars_train/cars_train/*.jpg
        (root / folder).rename(root / "tmp")
        (root / folder).mkdir()
        (root / "tmp").rename(root / folder / folder)
    splits = load("cars", root)
    assert splits.train.labels == [0, 1, 2, 2] and all(Path(p).is_file() for p in splits.train.paths)
    # images in another folder than the annotations say: refused at load, not at decode
    (root / "cars_test" / "cars_test").rename(root / "cars_test" / "elsewhere")
    with pytest.raises(DataError, match="names images that .*cars_test does not hold"):
        load("cars", root)
    # only the devkit's own (unlabelled) test file: the error says where the labels are
    (root / "cars_test" / "elsewhere").rename(root / "cars_test" / "cars_test")
    (root / "cars_test_annos_withlabels.mat").unlink()
    cars_unlabelled_test_annos(root / "devkit" / "cars_test_annos.mat")
    with pytest.raises(DataError, match="has no test labels.*cars_test_annos_withlabels.mat"):
        load("cars", root)


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
    # official README: xmin ymin xmax ymax, top-left pixel (1, 1); 0001's box is the whole 40×60 image
    boxes = ["0001 1 1 40 60"] + [f"000{i} 1 2 30 40" for i in range(2, 6)]
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")
    return root


def test_aircraft(tmp_path):
    root = make_aircraft(tmp_path)
    splits = load("aircraft", root)
    assert len(splits.train) == 3 and splits.val is None and splits.train.trim_bottom == 20
    assert splits.train.labels == [0, 1, 0] and splits.test.labels == [1, 0]
    assert splits.train.coarse_names == ["A300", "Boeing 707"] and splits.train.coarse_labels == [1, 0, 1]
    assert splits.train.boxes[0] == (0.0, 0.0, 40.0, 60.0)               # exactly the image
    assert splits.train.boxes[1] == (0.0, 1.0, 30.0, 39.0)
    fam = load("aircraft", root, level="family", train_split="train")
    assert fam.train.class_names == ["A300", "Boeing 707"] and len(fam.val) == 1
    assert fam.train.coarse_names == ["Airbus", "Boeing"]
    # variants with manufacturers as their coarse level; a "coarser" level that is not is refused
    maker = load("aircraft", root, coarse="manufacturer")
    assert maker.train.class_names == ["707-320", "A300B4"] and maker.train.coarse_names == ["Airbus", "Boeing"]
    assert maker.train.coarse_labels == [1, 0, 1]
    spec = get_registry().datasets["aircraft"]
    with pytest.raises(DataError, match="coarse: family is not coarser than level: family — use manufacturer"):
        spec.check_options({**spec.options, "level": "family", "coarse": "family"})
    # the 20-px banner is gone before resizing: a red banner leaves no red in the decoded image
    img = Image.new("RGB", (40, 60), (0, 0, 255))
    img.paste((255, 0, 0), (0, 40, 40, 60))
    img.save(root / "data" / "images" / "0001.jpg", quality=95)
    data = build_tensor_data(splits, 16, None)
    assert data.train.images[0, 0].float().mean() < 40 or data.val.images[0, 0].float().mean() < 40


def test_aircraft_coarse_classes_follow_the_official_list_order(tmp_path):
    root = make_aircraft(tmp_path)
    (root / "data" / "families.txt").write_text("Boeing 707\nA300\n")        # torchvision indexes this order
    splits = load("aircraft", root)
    assert splits.train.coarse_names == ["Boeing 707", "A300"] and splits.train.coarse_labels == [0, 1, 0]
    (root / "data" / "families.txt").write_text("Boeing 707\n")
    with pytest.raises(DataError, match="family 'A300' of images_family_\\*.txt is not in"):
        load("aircraft", root)


@pytest.mark.parametrize("where", ["data", "fgvc-aircraft-2013b", "parent"])
def test_aircraft_roots_like_torchvision(tmp_path, where):
    make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    root = {"data": tmp_path / "fgvc-aircraft-2013b" / "data", "fgvc-aircraft-2013b": tmp_path / "fgvc-aircraft-2013b",
            "parent": tmp_path}[where]
    assert len(load("aircraft", root).test) == 2


def test_aircraft_unreadable_txt_is_a_data_error(tmp_path):
    root = make_aircraft(tmp_path)
    (root / "data" / "variants.txt").write_bytes(b"\xff\xfe707-320\n")
    with pytest.raises(DataError, match="variants.txt is not a UTF-8 text file"):
        load("aircraft", root)


def make_flowers(root: Path, setid: dict | None = None) -> Path:
    for i in range(1, 7):
        jpeg(root / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2]])})
    scipy.io.savemat(root / "setid.mat", setid or {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                                   "tstid": np.array([[5, 6]])})
    return root


def test_flowers(tmp_path):
    make_flowers(tmp_path)
    splits = load("flowers102", tmp_path)
    assert len(splits.train) == 4 and splits.test.labels == [0, 1] and splits.val is None
    assert splits.train.class_names == ["pink primrose", "hard-leaved pocket orchid"]
    official = load("flowers102", tmp_path, train_split="train")
    assert official.val.paths[0].endswith("image_00003.jpg")
    from fgvcbench_plugins.datasets.flowers import NAMES
    assert len(NAMES) == len(set(NAMES)) == 102 and NAMES[-1] == "blackberry lily"
    datasets = pytest.importorskip("torchvision.datasets")
    if hasattr(datasets.Flowers102, "classes"):   # torchvision >= 0.21 lists them on the class
        assert list(NAMES) == list(datasets.Flowers102.classes)


def test_flowers_root_like_torchvision(tmp_path):
    make_flowers(tmp_path / "flowers-102")
    assert len(load("flowers102", tmp_path).test) == 2
    scipy.io.savemat(tmp_path / "flowers-102" / "setid.mat", {"trnid": np.array([[1, 2]]), "tstid": np.array([[5, 6]])})
    with pytest.raises(DataError, match="malformed metadata .*KeyError: 'valid'"):
        load("flowers102", tmp_path)


def make_dogs(root: Path, lists: str = "") -> Path:
    """Images.tar, annotation.tar and lists.tar extracted into ``root``: lists.tar puts
    train_list.mat, test_list.mat and file_list.mat straight into it (``lists`` names a
    sub-folder to put them in instead)."""
    folders = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    files = {"train": [f"{folders[0]}/a.jpg", f"{folders[1]}/b.jpg"], "test": [f"{folders[1]}/c.jpg"]}
    mats = root / lists
    mats.mkdir(parents=True, exist_ok=True)
    for split, fs in files.items():
        for f in fs:
            jpeg(root / "Images" / f)
            xml = root / "Annotation" / Path(f).with_suffix("")
            xml.parent.mkdir(parents=True, exist_ok=True)
            # PASCAL VOC: 1-based inclusive pixels; two dogs, their union is x 1..20, y 1..12
            xml.write_text("<annotation><object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax>"
                           "</bndbox></object><object><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>20</xmax>"
                           "<ymax>8</ymax></bndbox></object></annotation>")
        labels = [folders.index(f.split("/")[0]) + 1 for f in fs]
        scipy.io.savemat(mats / f"{split}_list.mat", {"file_list": np.array(fs, dtype=object).reshape(-1, 1),
                                                      "labels": np.array(labels).reshape(-1, 1)})
    every = files["train"] + files["test"]
    scipy.io.savemat(mats / "file_list.mat", {"file_list": np.array(every, dtype=object).reshape(-1, 1)})
    return root


def test_dogs_official_layout(tmp_path):
    splits = load("dogs", make_dogs(tmp_path), crop="bbox")
    assert splits.train.class_names == ["Chihuahua", "Japanese_spaniel"] and splits.train.labels == [0, 1]
    assert splits.train.boxes[0] == (0.0, 0.0, 20.0, 12.0)                 # the union of both dogs, 0-based
    assert len(splits.test) == 1
    # without the crop the boxes are exposed too (a method may crop to them, as fine-tuning's crop_to_box)
    plain = load("dogs", tmp_path)
    assert not plain.crop_to_boxes and plain.test.boxes == [(0.0, 0.0, 20.0, 12.0)]
    # an unreadable annotation costs a crop-free load its boxes, not the load; with crop: bbox it is an error
    (tmp_path / "Annotation" / "n02085782-Japanese_spaniel" / "c").write_text("<annotation>")
    assert load("dogs", tmp_path).test.boxes is None
    with pytest.raises(DataError, match="cannot read the annotation"):
        load("dogs", tmp_path, crop="bbox")


def test_dogs_lists_folder_and_malformed_mat(tmp_path):
    root = make_dogs(tmp_path, lists="lists")
    assert load("dogs", root).train.labels == [0, 1]
    scipy.io.savemat(root / "lists" / "test_list.mat", {"labels": np.array([[2]])})
    with pytest.raises(DataError, match="malformed metadata .*KeyError: 'file_list'"):
        load("dogs", root)
    with pytest.raises(DataError, match="train_list.mat not found"):
        load("dogs", make_dogs(tmp_path / "none", lists="elsewhere"))


def test_dtd(tmp_path):
    make_dtd(tmp_path, split=2)
    splits = load("dtd", tmp_path, split=2)
    assert len(splits.train) == 4 and splits.test.labels == [0, 1]
    with pytest.raises(DataError, match="train1.txt"):
        load("dtd", tmp_path)                                            # split 1 files are absent
    with pytest.raises(DataError, match="1 to 10"):
        load("dtd", tmp_path, split=11)


def make_dtd(root: Path, split: int = 1) -> Path:
    """DTD's layout: ``images/<class>/*.jpg`` and ``labels/{train,val,test}<split>.txt``."""
    for cls in ("banded", "zigzagged"):
        for i in range(3):
            jpeg(root / "images" / cls / f"{cls}_{i}.jpg")
    (root / "labels").mkdir()
    for name, idx in (("train", 0), ("val", 1), ("test", 2)):
        (root / "labels" / f"{name}{split}.txt").write_text(f"banded/banded_{idx}.jpg\nzigzagged/zigzagged_{idx}.jpg\n")
    return root


def test_dtd_roots_like_torchvision(tmp_path):
    make_dtd(tmp_path / "tv" / "dtd" / "dtd")                       # torchvision: root/dtd/dtd
    make_dtd(tmp_path / "archive" / "dtd")                          # the folder containing the archive's dtd/
    for root in (tmp_path / "tv", tmp_path / "tv" / "dtd", tmp_path / "archive", tmp_path / "archive" / "dtd"):
        assert load("dtd", root).test.labels == [0, 1], root


def test_pets(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\namerican_bulldog_1 2 2 1\n")
    (tmp_path / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\namerican_bulldog_2 2 2 1\n")
    for n in ("Abyssinian_1", "american_bulldog_1", "Abyssinian_2", "american_bulldog_2"):
        jpeg(tmp_path / "images" / f"{n}.jpg")
    splits = load("pets", tmp_path)
    # torchvision's OxfordIIITPet names
    assert splits.train.class_names == ["Abyssinian", "American Bulldog"] and splits.train.coarse_labels == [0, 1]
    assert load("pets", tmp_path, level="species").test.class_names == ["Cat", "Dog"]


def test_pets_subset_with_gaps_comments_and_a_bad_line(tmp_path):
    # a subset of breeds (ids 1 and 3), list.txt-style comment lines (one short), and a line that is not a row
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "trainval.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n#a\nAbyssinian_1 1 1 1\namerican_pit_bull_terrier_1 3 2 2\n")
    (tmp_path / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\n\namerican_pit_bull_terrier_2 3 2 2\n")
    for n in ("Abyssinian_1", "american_pit_bull_terrier_1", "Abyssinian_2", "american_pit_bull_terrier_2"):
        jpeg(tmp_path / "images" / f"{n}.jpg")
    splits = load("pets", tmp_path)
    assert splits.train.class_names == ["Abyssinian", "American Pit Bull Terrier"] and splits.test.labels == [0, 1]
    (tmp_path / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\nAbyssinian_3 one 1 1\n")
    with pytest.raises(DataError, match=r"test.txt:2: expected 'IMAGE CLASS-ID SPECIES"):
        load("pets", tmp_path)


def test_pets_root_like_torchvision(tmp_path):
    pets = tmp_path / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    (pets / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\n")
    (pets / "annotations" / "test.txt").write_text("Abyssinian_2 1 1 1\n")
    for n in ("Abyssinian_1", "Abyssinian_2"):
        jpeg(pets / "images" / f"{n}.jpg")
    assert load("pets", tmp_path).train.paths[0] == str(pets / "images" / "Abyssinian_1.jpg")


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


def test_labels_and_class_names_match_torchvision_s_readers(tmp_path):
    """The same files through torchvision's own readers (their public API: ``classes`` and
    ``dataset[i]``): same classes, same order, same label for every image. Flowers-102's
    reader checks the real archives' checksums, so it is compared by its class list in
    test_flowers."""
    datasets = pytest.importorskip("torchvision.datasets")

    def labels(tv) -> list[int]:
        return [tv[i][1] for i in range(len(tv))]
    make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    (tmp_path / "fgvc-aircraft-2013b" / "data" / "families.txt").write_text("Boeing 707\nA300\n")   # not sorted
    for level in ("variant", "family", "manufacturer"):
        tv = datasets.FGVCAircraft(str(tmp_path), split="test", annotation_level=level)
        ours = load("aircraft", tmp_path, level=level).test
        assert (tv.classes, labels(tv)) == (ours.class_names, ours.labels), level
    make_cars(tmp_path / "stanford_cars")
    for split in ("train", "test"):
        tv = datasets.StanfordCars(str(tmp_path), split=split)
        ours = getattr(load("cars", tmp_path), split)
        assert (tv.classes, labels(tv)) == (ours.class_names, ours.labels), split
    pets = tmp_path / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    rows = ["Abyssinian_1 1 1 1", "staffordshire_bull_terrier_1 2 2 1", "american_bulldog_1 3 2 2"]
    (pets / "annotations" / "trainval.txt").write_text("\n".join(rows) + "\n")
    (pets / "annotations" / "test.txt").write_text("\n".join(r.replace("_1 ", "_2 ") for r in rows) + "\n")
    for r in rows:
        for k in (1, 2):
            jpeg(pets / "images" / f"{r.split()[0][:-2]}_{k}.jpg")
    for level, target in (("breed", "category"), ("species", "binary-category")):
        tv = datasets.OxfordIIITPet(str(tmp_path), split="trainval", target_types=target)
        ours = load("pets", tmp_path, level=level).train
        names = tv.classes if level == "breed" else sorted(tv.bin_class_to_idx, key=tv.bin_class_to_idx.get)
        assert (names, labels(tv)) == (ours.class_names, ours.labels), level
    make_dtd(tmp_path / "dtd" / "dtd")
    tv = datasets.DTD(str(tmp_path), split="test", partition=1)
    ours = load("dtd", tmp_path).test
    assert (tv.classes, labels(tv)) == (ours.class_names, ours.labels)

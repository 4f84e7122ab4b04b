"""`fgvcbench data verify` catches planted corruption and duplicates across (and inside)
splits; malformed metadata of any adapter is one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fgvcbench.cli import app
from fgvcbench.plugins import get_registry

from conftest import SHARED_DATA
from test_dataset_formats import cars_unlabelled_test_annos, make_aircraft, make_cars, make_cub, make_dogs, make_flowers


def test_clean_dataset_passes_and_reports_counts(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert report["splits"]["train"] == {"003.Sooty_Albatross": 2, "007.Parakeet_Auklet": 2, "009.Brewer_Blackbird": 2}
    assert sum(report["splits"]["test"].values()) == 3


def test_planted_corruption_duplicate_and_missing_file_are_each_reported(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    images = sorted((root / "images").rglob("*.jpg"))
    train_img, test_img = images[0], images[2]           # _0, _1 train; _2 test (per class)
    data = train_img.read_bytes()
    images[1].write_bytes(data[: len(data) // 2])        # truncated JPEG
    shutil.copyfile(train_img, test_img)                 # the same file in train and test
    images[3].unlink()                                   # listed but gone
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stdout.splitlines() if "fix:" in line]
    kinds = sorted(line.split(":")[0] for line in lines)
    assert kinds == ["corrupt", "duplicate", "missing"], result.stdout
    assert any(str(images[1]) in line for line in lines if line.startswith("corrupt"))
    assert any(str(test_img) in line and str(train_img) in line for line in lines if line.startswith("duplicate"))
    assert "3 problems found" in result.stdout
    text = " ".join(result.stdout.split())   # a listed image is deleted with its entries; a folder's, alone
    assert "or delete it and its entries in the lists that name it (train_test_split.txt among them)" in text


def test_a_corrupt_image_of_a_folder_layout_is_deleted_alone(tmp_path, runner):
    root = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (12, 12), (40 if c == "a" else 200, 0, 0)).save(root / split / c / f"{split}.png")
    (root / "test" / "b" / "bad.png").write_bytes(b"garbage")
    result = runner.invoke(app, ["data", "verify", "imagefolder", "--root", str(root)])
    assert result.exit_code == 1, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("corrupt"))
    assert line.endswith("fix: replace it with the original file, or delete it")


def test_per_class_lists_every_class_of_every_split(tmp_path, runner):
    """A class with test images only is a row too, its train count 0."""
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    split = root / "train_test_split.txt"
    split.write_text(split.read_text().replace("40 1\n", "40 0\n").replace("45 1\n", "45 0\n"))
    counts = json.loads(runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"]).stdout)["splits"]
    assert "009.Brewer_Blackbird" not in counts["train"] or counts["train"]["009.Brewer_Blackbird"] == 0
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--per-class"], terminal_width=200)
    table = result.stdout.split("images per class")[1]
    rows = {cells[0]: cells[1:] for line in table.splitlines()
            if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 3 and cells[0][:1].isdigit()}
    assert rows == {"003.Sooty_Albatross": ["2", "1"], "007.Parakeet_Auklet": ["2", "1"],
                    "009.Brewer_Blackbird": ["0", "3"]}, result.stdout
    # the summary counts the classes a split has out of all, and its least filled among those
    summary = {cells[0]: cells[1:] for line in result.stdout.split("images per class")[0].splitlines()
               if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 5}
    assert summary["train"] == ["4", "2 of 3", "2", "2"] and summary["test"] == ["5", "3", "1", "3"], result.stdout


def test_bad_input_exits_2(tmp_path, runner):
    get_registry(refresh=True)
    assert "did you mean 'cub'" in runner.invoke(app, ["data", "verify", "cubb", "--root", str(tmp_path)]).output
    missing = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "images.txt" in missing.output and "Traceback" not in missing.output
    bad_opt = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path), "-o", "crop"])
    assert bad_opt.exit_code == 2 and "KEY=VALUE" in bad_opt.output
    # an option's type and value are checked as a suite's are, before anything is read
    typed = runner.invoke(app, ["data", "verify", "synthetic", "-o", "fine=five"])
    assert typed.exit_code == 2 and "--option fine=five: expected int like the default 4, got str 'five'" in typed.output
    choice = runner.invoke(app, ["data", "verify", "cub", "--root", str(tmp_path), "-o", "crop=boxes"])
    assert choice.exit_code == 2 and "crop" in choice.output and "Traceback" not in choice.output
    assert "images.txt" not in choice.output   # the option, not the missing layout, is what it says


def test_real_cub_subset_verifies(runner):
    import pytest
    root = SHARED_DATA / "CUB_200_2011_first50"
    if not root.is_dir():
        pytest.skip(f"real CUB subset not found at {root}")
    get_registry(refresh=True)
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"])
    report = json.loads(result.stdout)
    flags = [line.split()[1] for line in (root / "train_test_split.txt").read_text().splitlines() if line.strip()]
    assert sum(report["splits"]["train"].values()) == flags.count("1")   # the official split, every image
    assert sum(report["splits"]["test"].values()) == flags.count("0")
    assert report["problems"] == [] and result.exit_code == 0            # the real files are clean


def _rewrite_lines(path: Path, row: int, line: str) -> None:
    rows = path.read_text().splitlines()
    rows[row] = line
    path.write_text("\n".join(rows) + "\n")


def _cub_class_unnamed(tmp_path):
    root = make_cub(tmp_path / "cub")
    _rewrite_lines(root / "classes.txt", 1, "8 008.Rhinoceros_Auklet")
    return "cub", root, "image_class_labels.txt:4: class '7' of image 25 is not a class id of"


def _cub_box_not_a_number(tmp_path):
    root = make_cub(tmp_path / "cub")
    _rewrite_lines(root / "bounding_boxes.txt", 0, "10 2.0 three 20.0 15.0")
    return "cub", root, "bounding_boxes.txt:1: box 2.0 three 20.0 15.0 of image 10 is not x y width height"


def _cub_box_not_finite(tmp_path):
    root = make_cub(tmp_path / "cub")
    _rewrite_lines(root / "bounding_boxes.txt", 0, "10 nan 3.0 -5 15.0")
    return "cub", root, "bounding_boxes.txt:1: box nan 3.0 -5 15.0 of image 10"


def _cub_image_listed_twice(tmp_path):
    root = make_cub(tmp_path / "cub")
    first = (root / "images.txt").read_text().splitlines()[0]
    with open(root / "images.txt", "a") as fh:
        fh.write(first + "\n")
    return "cub", root, f"images.txt:{len((root / 'images.txt').read_text().splitlines())}: id {first.split()[0]} " \
                        "is listed again (first on line 1)"


def _cub_split_value(tmp_path):
    root = make_cub(tmp_path / "cub")
    _rewrite_lines(root / "train_test_split.txt", 2, "20 2")
    return "cub", root, "train_test_split.txt:3: split value '2'"


def _flowers_without_valid(tmp_path):
    root = make_flowers(tmp_path / "flowers", {"trnid": np.array([[1, 2]]), "tstid": np.array([[5, 6]])})
    return "flowers102", root, "KeyError: 'valid'"


def _cars_meta_without_class_names(tmp_path):
    root = make_cars(tmp_path / "cars")
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"names": np.array(["x"], dtype=object)})
    return "cars", root, "KeyError: 'class_names'"


def _cars_unlabelled_test_annos(tmp_path):
    root = make_cars(tmp_path / "cars")
    cars_unlabelled_test_annos(root / "cars_test_annos_withlabels.mat")
    return "cars", root, "use cars_test_annos_withlabels.mat"


def _dogs_without_file_list(tmp_path):
    root = make_dogs(tmp_path / "dogs")
    scipy.io.savemat(root / "train_list.mat", {"labels": np.array([[1]])})
    return "dogs", root, "KeyError: 'file_list'"


def _dogs_without_labels(tmp_path):
    root = make_dogs(tmp_path / "dogs")
    scipy.io.savemat(root / "test_list.mat", {"file_list": np.array(["x/y.jpg"], dtype=object)})
    return "dogs", root, "KeyError: 'labels'"


def _aircraft_unreadable_txt(tmp_path):
    root = make_aircraft(tmp_path / "aircraft")
    (root / "data" / "images_variant_test.txt").write_bytes(b"0004 \xff\xfe\n")
    return "aircraft", root, "images_variant_test.txt is not a UTF-8 text file"


@pytest.mark.parametrize("case", [_cub_class_unnamed, _cub_box_not_a_number, _cub_box_not_finite, _cub_image_listed_twice,
                                  _cub_split_value, _flowers_without_valid,
                                  _cars_meta_without_class_names, _cars_unlabelled_test_annos, _dogs_without_file_list,
                                  _dogs_without_labels, _aircraft_unreadable_txt])
def test_malformed_metadata_is_one_line_and_exit_2(tmp_path, runner, case):
    get_registry(refresh=True)
    name, root, needle = case(tmp_path)
    result = runner.invoke(app, ["data", "verify", name, "--root", str(root)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert needle in result.output and str(root) in result.output
    assert result.output.strip().startswith("error:") and result.output.count("error:") == 1


def test_malformed_metadata_fails_the_run_without_a_traceback(tmp_path, runner):
    get_registry(refresh=True)
    _, root, _ = _cub_class_unnamed(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(f"output: {tmp_path / 'out'}\ndevice: cpu\nseeds: [0]\ndatasets: [{{name: cub, root: {root}}}]\n"
                     "backbones: [pixels]\nmethods: [finetune]\n")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    record = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert record["status"] == "failed" and record["error"].startswith(f"{root / 'image_class_labels.txt'}:4: class '7'")
    assert "Traceback" not in record["error"]


def test_val_test_duplicate_is_a_leak(tmp_path, runner):
    get_registry(refresh=True)
    root = make_aircraft(tmp_path / "aircraft")
    images = sorted((root / "data" / "images").glob("*.jpg"))
    for i, path in enumerate(images):                            # the fixture's images are all alike
        Image.new("RGB", (40, 60), (40 * i, 200 - 30 * i, 90)).save(path, quality=90)
    shutil.copyfile(root / "data" / "images" / "0003.jpg", root / "data" / "images" / "0004.jpg")   # val → test
    result = runner.invoke(app, ["data", "verify", "aircraft", "--root", str(root), "-o", "train_split=train",
                                 "--json"])
    assert result.exit_code == 1, result.output
    problems = json.loads(result.stdout)["problems"]
    assert [(p["kind"], Path(p["path"]).name) for p in problems] == [("duplicate", "0004.jpg")]
    assert "0003.jpg" in problems[0]["detail"] and "val/test leak" in problems[0]["fix"]
    # trained on train+val (the default), the same copy is a train/test leak
    trainval = json.loads(runner.invoke(app, ["data", "verify", "aircraft", "--root", str(root), "--json"]).stdout)
    (fix,) = [p["fix"] for p in trainval["problems"]]
    assert fix.startswith("a train/test leak: restore one copy from the original archive, or drop its entry from "
                          "the split lists (data/images_variant_{train,val,test}.txt")
    # plain folders: a file's folder is its split, deleting a copy is the fix
    folder = tmp_path / "plain"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            Image.new("RGB", (20, 20), (len(split) * 40, 90 if c == "a" else 10, 0)).save(folder / split / c / "x.jpg")
    shutil.copyfile(folder / "train" / "a" / "x.jpg", folder / "test" / "a" / "y.jpg")
    plain = json.loads(runner.invoke(app, ["data", "verify", "imagefolder", "--root", str(folder), "--json"]).stdout)
    assert [p["fix"] for p in plain["problems"]] == ["remove one of the two copies (a train/test leak)"]


def test_duplicates_within_a_split_are_notes_unless_labels_differ(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    images = sorted((root / "images").rglob("*.jpg"))           # per class: _0, _1 train; _2 test
    shutil.copyfile(images[0], images[1])                        # same class, both train
    result = runner.invoke(app, ["data", "verify", "cub", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "note: duplicate_within" in result.output and str(images[1]) in result.output
    assert "no problems found (1 note)" in result.output
    shutil.copyfile(images[0], images[3])                        # another class's train image
    report = json.loads(runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"]).stdout)
    assert [p["kind"] for p in report["problems"]] == ["duplicate_within"] and len(report["notes"]) == 1
    assert "labelled 007.Parakeet_Auklet vs 003.Sooty_Albatross" in report["problems"][0]["detail"]


def test_corrupt_detail_keeps_the_whole_path(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / ("a_rather_long_folder_name_" * 4) / "cub")
    bad = sorted((root / "images").rglob("*.jpg"))[0]
    bad.write_bytes(b"not an image at all")
    report = json.loads(runner.invoke(app, ["data", "verify", "cub", "--root", str(root), "--json"]).stdout)
    corrupt = [p for p in report["problems"] if p["kind"] == "corrupt"]
    assert len(str(bad)) > 80 and len(corrupt) == 1 and str(bad) in corrupt[0]["detail"]


def test_suite_gives_root_and_options(tmp_path, runner, monkeypatch):
    get_registry(refresh=True)
    make_cub(tmp_path / "data" / "birds")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"data_root: {tmp_path / 'nowhere'}\ndevice: cpu\n"
                     "datasets: [synthetic, {name: cub, root: birds, options: {crop: bbox}}]\n"
                     "backbones: [pixels]\nmethods: [finetune]\n")
    # the suite's data_root does not hold it: exit 2 naming the resolved folder
    missing = runner.invoke(app, ["data", "verify", "cub", "--suite", str(suite)])
    assert missing.exit_code == 2 and str(tmp_path / "nowhere" / "birds") in missing.output
    # --data-root overrides the suite's data_root, as for `run`
    result = runner.invoke(app, ["data", "verify", "cub", "--suite", str(suite), "--data-root", str(tmp_path / "data"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["root"] == str(tmp_path / "data" / "birds")
    # the suite's data_root is used when it is right; --root beats everything
    suite.write_text(suite.read_text().replace(str(tmp_path / "nowhere"), str(tmp_path / "data")))
    assert runner.invoke(app, ["data", "verify", "cub", "--suite", str(suite)]).exit_code == 0
    other = make_cub(tmp_path / "other")
    report = json.loads(runner.invoke(app, ["data", "verify", "cub", "--suite", str(suite), "--root", str(other),
                                            "--json"]).stdout)
    assert report["root"] == str(other)
    unknown = runner.invoke(app, ["data", "verify", "dogs", "--suite", str(suite)])
    assert unknown.exit_code == 2 and "no `datasets:` entry named 'dogs'" in unknown.output and "cub" in unknown.output


def test_suite_options_reach_the_adapter(tmp_path, runner):
    get_registry(refresh=True)
    make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"data_root: {tmp_path}\ndevice: cpu\n"
                     "datasets: [{name: aircraft, options: {train_split: train}}]\n"
                     "backbones: [pixels]\nmethods: [finetune]\n")
    report = json.loads(runner.invoke(app, ["data", "verify", "aircraft", "--suite", str(suite), "--json"]).stdout)
    assert set(report["splits"]) == {"train", "val", "test"}           # the official val split is kept
    cli = json.loads(runner.invoke(app, ["data", "verify", "aircraft", "--suite", str(suite), "-o",
                                         "train_split=trainval", "--json"]).stdout)
    assert set(cli["splits"]) == {"train", "test"}                     # -o beats the suite


@pytest.mark.skipif(not (SHARED_DATA / "CUB_200_2011_first50").is_dir(), reason="needs ../shared/data")
def test_a_noisy_view_s_injected_copies_are_notes_and_its_base_folder_is_found(tmp_path, runner):
    # weak_shot puts other classes' images into novel classes by design: not a problem to fix;
    # without --root, the view reads its base's usual folder under --data-root
    get_registry(refresh=True)
    (tmp_path / "CUB_200_2011").symlink_to(SHARED_DATA / "CUB_200_2011_first50")
    result = runner.invoke(app, ["data", "verify", "weak_shot", "-o", "of=cub", "-o", "novel=xian_cub",
                                 "-o", "noise_pool=train", "--data-root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    noise = [n for n in report["notes"] if "injected label noise" in n["detail"]]
    assert report["problems"] == [] and noise and report["root"] == str(tmp_path / "CUB_200_2011")
    # by default the noise is base classes' test images: no training image twice, nothing to note
    result = runner.invoke(app, ["data", "verify", "weak_shot", "-o", "of=cub", "-o", "novel=xian_cub",
                                 "--data-root", str(tmp_path), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["problems"] == [], result.output
    assert not [n for n in report["notes"] if "injected label noise" in n["detail"]]


def test_a_views_leak_names_its_bases_split_lists(tmp_path, runner):
    get_registry(refresh=True)
    root = make_cub(tmp_path / "cub")
    images = sorted((root / "images").rglob("*.jpg"))
    for i, path in enumerate(images):                            # every image its own bytes
        Image.new("RGB", (24, 24), (20 * i % 256, 90, 10 * i % 256)).save(path)
    train_test = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines())
    paths = dict(line.split(maxsplit=1) for line in (root / "images.txt").read_text().splitlines())
    train = next(root / "images" / paths[i] for i, s in train_test.items() if s == "1")
    test = next(root / "images" / paths[i] for i, s in train_test.items() if s == "0")
    shutil.copyfile(train, test)
    result = runner.invoke(app, ["data", "verify", "coarse", "--root", str(root), "-o", "of=cub", "--json"])
    fixes = [p["fix"] for p in json.loads(result.stdout)["problems"] if p["kind"] == "duplicate"]
    assert fixes and all("split lists (train_test_split.txt)" in fix for fix in fixes), result.stdout


def test_a_noise_image_the_view_lists_often_is_one_note(runner):
    """A base-test pool smaller than the noise repeats images: one note per file, with the
    count, not one per repeat."""
    get_registry(refresh=True)
    result = runner.invoke(app, ["data", "verify", "weak_shot", "-o", "of=synthetic", "-o",
                                 "of_options={coarse: 2, fine: 2, train_per_class: 8, test_per_class: 1, image_size: 32}",
                                 "-o", "noise_rate=0.9", "-o", "ood_share=0", "--json"])
    assert result.exit_code == 0, result.output
    notes = [n for n in json.loads(result.stdout)["notes"] if "injected label noise" in n["detail"]]
    paths = [n["path"] for n in notes]
    assert notes and len(paths) == len(set(paths))                   # one note per file
    import re
    counts = [int(re.search(r"listed (\d+) times", n["detail"]).group(1)) for n in notes]
    # 7 noise images drawn from 3 base test images (each once, then 4 again): one is listed 3+ times
    assert max(counts) >= 3 and sum(counts) <= 7, notes


def test_training_images_past_2_to_1_get_one_note_boxes_counted_as_trained(tmp_path, runner):
    """The fast pipeline's default cache keeps an image's middle 3:1: verify says how many
    training images (boxes, where the dataset crops to them) are longer; test images, seen
    through a centre crop in every pipeline, are not counted."""
    get_registry(refresh=True)
    folder = tmp_path / "folder"
    for split, shapes in (("train", [(100, 30), (40, 30), (30, 100), (60, 30)]), ("test", [(100, 30), (30, 30)])):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i, size in enumerate(shapes):
                colour = (40 * i, 90 if c == "a" else 10, len(split) * 20)   # no file twice
                Image.new("RGB", size, colour).save(folder / split / c / f"{i}.png")
    report = json.loads(runner.invoke(app, ["data", "verify", "imagefolder", "--root", str(folder), "--json"]).stdout)
    (note,) = report["notes"]
    assert note["kind"] == "long_images" and note["path"].endswith("train/a/0.png") and not report["problems"]
    assert note["detail"] == "4 of the 8 training images are longer than 3:1 (this one first)"   # not the 2:1
    # CUB cropped to its boxes: the fixture's 20 × 15 boxes are not long
    root = make_cub(tmp_path / "cub")
    args = ["data", "verify", "cub", "--root", str(root), "-o", "crop=bbox", "--json"]
    assert json.loads(runner.invoke(app, args).stdout)["notes"] == []
    boxes = (root / "bounding_boxes.txt").read_text().splitlines()
    boxes[0] = boxes[0].split()[0] + " 0 0 40 10"      # the first training image's box: 4:1
    (root / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (note,) = json.loads(runner.invoke(app, args).stdout)["notes"]
    assert note["detail"].startswith("1 of the 6 training boxes is longer than 3:1")
    assert note["fix"].endswith("pipeline: classic from the whole box")

"""Stanford Cars (Krause et al., 2013) in the layout torchvision's StanfordCars expects.

``ROOT/devkit/cars_meta.mat`` (``class_names``), ``ROOT/devkit/cars_train_annos.mat`` and
``ROOT/cars_test_annos_withlabels.mat`` (``annotations``: bbox_x1, bbox_y1, bbox_x2,
bbox_y2, class [1-based], fname), images in ``ROOT/cars_train/`` and ``ROOT/cars_test/``.
``ROOT/devkit/cars_test_annos_withlabels.mat`` (mmpretrain's layout) is read when the
file is not directly in ROOT. ROOT may also be the folder that contains ``stanford_cars/``.
The devkit's own ``cars_test_annos.mat`` has no ``class`` field (test labels were released
later): with only that file the error points to the labelled one. The older all-in-one
``cars_annos.mat`` + ``car_ims/`` release is not read. Kaggle's copy, which nests the
image folders (``cars_train/cars_train/*.jpg``), is read too.

Boxes: the devkit's ``bbox_x1..bbox_y2`` are MATLAB pixel indices, 1-based and inclusive;
they become our 0-based continuous ``(x, y, w, h)`` as ``x = x1 - 1``, ``y = y1 - 1``,
``w = x2 - x1 + 1``, ``h = y2 - y1 + 1``.

Coarse level (derived, documented): the car *make*, the first word of the class name,
except the multi-word makes "AM General", "Aston Martin" and "Land Rover".
"""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import CROP_CHOICES, as_list, descend, loadmat, one_based_box, option, require

LAYOUT = ("ROOT/devkit/cars_meta.mat, ROOT/devkit/cars_train_annos.mat, ROOT/cars_test_annos_withlabels.mat "
          "(or ROOT/devkit/), ROOT/cars_train/*.jpg, ROOT/cars_test/*.jpg (torchvision's StanfordCars layout; "
          "the all-in-one cars_annos.mat + car_ims/ release is not read)")
MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
TEST_ANNOS = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")


def car_make(class_name: str) -> str:
    for make in MULTI_WORD_MAKES:
        if class_name.startswith(make + " "):
            return make
    return class_name.split()[0]


def _annotations(path, layout):
    mat = loadmat(path, layout)
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' — use cars_test_annos_withlabels.mat for the test split")
    fields = mat["annotations"].dtype.names or ()
    if "class" not in fields:
        raise DataError(f"{path}: its annotations have no 'class' field (the devkit's unlabelled "
                        f"cars_test_annos.mat?) — use cars_test_annos_withlabels.mat; expected layout: {layout}")
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise DataError(f"{path}: its annotations lack {', '.join(missing)} — expected layout: {layout}")
    rows = []
    for a in as_list(mat["annotations"]):
        x1, y1, x2, y2 = (float(a[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        rows.append((str(a["fname"]), int(a["class"]) - 1, one_based_box(x1, y1, x2, y2)))
    return rows


def load_cars(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "stanford_cars")
    if root is not None and not (root / "devkit").is_dir() and (
            (root / "cars_annos.mat").is_file() or (root / "car_ims").is_dir()):
        raise DataError(f"{root} holds the all-in-one cars_annos.mat + car_ims/ release, which is not read — "
                        f"use the devkit layout: {LAYOUT}")
    require(root, ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train", "cars_test"), LAYOUT)
    test_annos = next((root / rel for rel in TEST_ANNOS if (root / rel).is_file()), None)
    if test_annos is None:
        unlabelled = (root / "devkit" / "cars_test_annos.mat").is_file()
        raise DataError(f"{root / TEST_ANNOS[0]} not found (nor {root / TEST_ANNOS[1]})"
                        + (" — the devkit's cars_test_annos.mat has no test labels; they were released later as "
                           "cars_test_annos_withlabels.mat: put that file into ROOT or ROOT/devkit" if unlabelled
                           else f" — expected layout: {LAYOUT}"))
    crop = option(request, "crop", CROP_CHOICES)
    level = option(request, "level", ("model", "make"))
    class_names = [str(n) for n in as_list(loadmat(root / "devkit" / "cars_meta.mat", LAYOUT)["class_names"])]
    makes = sorted({car_make(n) for n in class_names})
    make_of = [makes.index(car_make(n)) for n in class_names]

    def image_folder(name: str) -> str:
        # Kaggle's copy nests each folder in one of the same name (cars_train/cars_train/*.jpg)
        return f"{name}/{name}" if (root / name / name).is_dir() else name

    def split(annos, folder) -> ImageList:
        rows = _annotations(annos, LAYOUT)
        folder = image_folder(folder)
        # a wrong folder fails here, not at decode time; a few missing files are `data verify`'s to list
        sample = [root / folder / f for f, _, _ in rows[:20]]
        if sample and not any(p.is_file() for p in sample):
            raise DataError(f"{sample[0]} not found: {annos.name} names images that {root / folder} does not "
                            f"hold — expected layout: {LAYOUT}")
        fine = [c for _, c, _ in rows]
        if fine and not 0 <= min(fine) <= max(fine) < len(class_names):
            raise DataError(f"{annos}: class ids outside 1..{len(class_names)} — the devkit files do not match")
        coarse = [make_of[c] for c in fine]
        labels, names = (coarse, makes) if level == "make" else (fine, class_names)
        return ImageList([str(root / folder / f) for f, _, _ in rows], labels, names,
                         boxes=[b for _, _, b in rows],
                         coarse_labels=None if level == "make" else coarse,
                         coarse_names=None if level == "make" else makes)

    return DatasetSplits(train=split(root / "devkit" / "cars_train_annos.mat", "cars_train"),
                         test=split(test_annos, "cars_test"),
                         crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="cars",
                   split_lists="the devkit's cars_train_annos.mat / cars_test_annos_withlabels.mat",
                   load=load_cars, layout=LAYOUT, default_root="stanford_cars",
                   description="Stanford Cars, 196 models (devkit .mat files; coarse = make)",
                   options={"crop": "none", "level": "model"},
                   choices={"crop": CROP_CHOICES, "level": ("model", "make")})

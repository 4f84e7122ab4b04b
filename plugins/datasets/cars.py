"""Stanford Cars (Krause et al., 2013) in the layout torchvision's StanfordCars expects.

``ROOT/devkit/cars_meta.mat`` (``class_names``), ``ROOT/devkit/cars_train_annos.mat`` and
``ROOT/cars_test_annos_withlabels.mat`` (``annotations``: bbox_x1, bbox_y1, bbox_x2,
bbox_y2, class [1-based], fname), images in ``ROOT/cars_train/`` and ``ROOT/cars_test/``.
``ROOT/devkit/cars_test_annos_withlabels.mat`` (mmpretrain's layout) is read when the
file is not directly in ROOT. ROOT may also be the folder that contains ``stanford_cars/``.
The devkit's own ``cars_test_annos.mat`` has no ``class`` field (test labels were released
later): with only that file the error points to the labelled one. Kaggle's copy, which
nests the image folders (``cars_train/cars_train/*.jpg``), is read too.

The older all-in-one release is read as well, where ROOT's devkit layout is not
complete (no ``devkit/``, a devkit tarball unpacked beside it, no labelled test file):
``ROOT/cars_annos.mat`` (``annotations``: relative_im_path, bbox_x1..bbox_y2, class,
test [1 = test split]; ``class_names``) with the images in ``ROOT/car_ims/``. It holds
the same 8,144 / 8,041 split and boxes under other file names.

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
          "or the all-in-one ROOT/cars_annos.mat + ROOT/car_ims/*.jpg)")
ALL_IN_ONE = ("ROOT/cars_annos.mat (annotations with relative_im_path, bbox_x1..bbox_y2, class, test) + "
              "ROOT/car_ims/*.jpg")
MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
TEST_ANNOS = ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
DEVKIT_PATHS = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train", "cars_test")


def car_make(class_name: str) -> str:
    for make in MULTI_WORD_MAKES:
        if class_name.startswith(make + " "):
            return make
    return class_name.split()[0]


def _annotations(path, layout, mat=None, fields=FIELDS):
    """(file, 0-based class, box, test flag) per row of ``path``'s ``annotations``; the
    file is the last of ``fields``, the test flag 0 where the file has no ``test`` field."""
    mat = loadmat(path, layout) if mat is None else mat
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' — use cars_test_annos_withlabels.mat for the test split")
    have = mat["annotations"].dtype.names or ()
    if "class" not in have:
        raise DataError(f"{path}: its annotations have no 'class' field (the devkit's unlabelled "
                        f"cars_test_annos.mat?) — use cars_test_annos_withlabels.mat; expected layout: {layout}")
    missing = [f for f in fields if f not in have]
    if missing:
        raise DataError(f"{path}: its annotations lack {', '.join(missing)} — expected layout: {layout}")
    rows = []
    for a in as_list(mat["annotations"]):
        x1, y1, x2, y2 = (float(a[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        rows.append((str(a[fields[-1]]), int(a["class"]) - 1, one_based_box(x1, y1, x2, y2),
                     int(a["test"]) if "test" in fields else 0))
    return rows


def _split(root, folder: str, rows, source, class_names, level, layout) -> ImageList:
    # a wrong folder fails here, not at decode time; a few missing files are `data verify`'s to list
    sample = [root / folder / f for f, _, _, _ in rows[:20]]
    if sample and not any(p.is_file() for p in sample):
        raise DataError(f"{sample[0]} not found: {source.name} names images that {root / folder} does not "
                        f"hold — expected layout: {layout}")
    fine = [c for _, c, _, _ in rows]
    if fine and not 0 <= min(fine) <= max(fine) < len(class_names):
        raise DataError(f"{source}: class ids outside 1..{len(class_names)} — the annotation files do not match")
    makes = sorted({car_make(n) for n in class_names})
    make_of = [makes.index(car_make(n)) for n in class_names]
    coarse = [make_of[c] for c in fine]
    labels, names = (coarse, makes) if level == "make" else (fine, class_names)
    return ImageList([str(root / folder / f) for f, _, _, _ in rows], labels, names,
                     boxes=[b for _, _, b, _ in rows],
                     coarse_labels=None if level == "make" else coarse,
                     coarse_names=None if level == "make" else makes)


def _load_all_in_one(root, crop: str, level: str) -> DatasetSplits:
    """The all-in-one release: one cars_annos.mat whose ``test`` field splits car_ims/."""
    require(root, ("cars_annos.mat", "car_ims"), ALL_IN_ONE)
    source = root / "cars_annos.mat"
    mat = loadmat(source, ALL_IN_ONE)
    if "class_names" not in mat:
        raise DataError(f"{source} has no 'class_names' — expected layout: {ALL_IN_ONE}")
    class_names = [str(n) for n in as_list(mat["class_names"])]
    rows = _annotations(source, ALL_IN_ONE, mat, FIELDS[:5] + ("test", "relative_im_path"))
    flags = {t for _, _, _, t in rows}
    if not flags <= {0, 1} or len(flags) < 2:
        raise DataError(f"{source}: its 'test' field must be 0 (train) or 1 (test) and hold both — "
                        f"found {sorted(flags)}; re-download the release")
    # relative_im_path already starts with car_ims/
    return DatasetSplits(
        train=_split(root, "", [r for r in rows if r[3] == 0], source, class_names, level, ALL_IN_ONE),
        test=_split(root, "", [r for r in rows if r[3] == 1], source, class_names, level, ALL_IN_ONE),
        crop_to_boxes=crop == "bbox")


def load_cars(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "stanford_cars")
    crop = option(request, "crop", CROP_CHOICES)
    level = option(request, "level", ("model", "make"))
    # the all-in-one release, where the devkit layout is not all there (no devkit/, a devkit
    # tarball unpacked beside the all-in-one files, no labelled test annotations)
    test_annos = next((root / rel for rel in TEST_ANNOS if (root / rel).is_file()), None) if root else None
    devkit_complete = test_annos is not None and all((root / rel).exists() for rel in DEVKIT_PATHS)
    if root is not None and (root / "cars_annos.mat").is_file() and (root / "car_ims").is_dir() \
            and not devkit_complete:
        return _load_all_in_one(root, crop, level)
    require(root, DEVKIT_PATHS, LAYOUT)
    if test_annos is None:
        unlabelled = (root / "devkit" / "cars_test_annos.mat").is_file()
        raise DataError(f"{root / TEST_ANNOS[0]} not found (nor {root / TEST_ANNOS[1]})"
                        + (" — the devkit's cars_test_annos.mat has no test labels; they were released later as "
                           "cars_test_annos_withlabels.mat: put that file into ROOT or ROOT/devkit" if unlabelled
                           else f" — expected layout: {LAYOUT}"))
    class_names = [str(n) for n in as_list(loadmat(root / "devkit" / "cars_meta.mat", LAYOUT)["class_names"])]

    def image_folder(name: str) -> str:
        # Kaggle's copy nests each folder in one of the same name (cars_train/cars_train/*.jpg)
        return f"{name}/{name}" if (root / name / name).is_dir() else name

    def split(annos, folder) -> ImageList:
        return _split(root, image_folder(folder), _annotations(annos, LAYOUT), annos, class_names, level, LAYOUT)

    return DatasetSplits(train=split(root / "devkit" / "cars_train_annos.mat", "cars_train"),
                         test=split(test_annos, "cars_test"),
                         crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="cars",
                   split_lists="the devkit's cars_train_annos.mat / cars_test_annos_withlabels.mat "
                               "(the all-in-one release: cars_annos.mat's test field)",
                   load=load_cars, layout=LAYOUT, default_root="stanford_cars",
                   description="Stanford Cars, 196 models (devkit .mat files; coarse = make)",
                   options={"crop": "none", "level": "model"},
                   choices={"crop": CROP_CHOICES, "level": ("model", "make")})

"""Stanford Cars (Krause et al., 2013) in the layout torchvision's StanfordCars expects.

``ROOT/devkit/cars_meta.mat`` (``class_names``), ``ROOT/devkit/cars_train_annos.mat`` and
``ROOT/cars_test_annos_withlabels.mat`` (``annotations``: bbox_x1, bbox_y1, bbox_x2,
bbox_y2, class [1-based], fname), images in ``ROOT/cars_train/`` and ``ROOT/cars_test/``.
ROOT may also be the folder that contains ``stanford_cars/``.

Coarse level (derived, documented): the car *make*, the first word of the class name,
except the multi-word makes "AM General", "Aston Martin" and "Land Rover".
"""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import CROP_CHOICES, as_list, loadmat, option, require

LAYOUT = ("ROOT/devkit/cars_meta.mat, ROOT/devkit/cars_train_annos.mat, ROOT/cars_test_annos_withlabels.mat, "
          "ROOT/cars_train/*.jpg, ROOT/cars_test/*.jpg (torchvision's StanfordCars layout)")
MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")


def car_make(class_name: str) -> str:
    for make in MULTI_WORD_MAKES:
        if class_name.startswith(make + " "):
            return make
    return class_name.split()[0]


def _annotations(path, layout):
    mat = loadmat(path, layout)
    if "annotations" not in mat:
        raise DataError(f"{path} has no 'annotations' — use cars_test_annos_withlabels.mat for the test split")
    rows = []
    for a in as_list(mat["annotations"]):
        x1, y1, x2, y2 = (float(a[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        rows.append((str(a["fname"]), int(a["class"]) - 1, (x1, y1, x2 - x1, y2 - y1)))
    return rows


def load_cars(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    if root is not None and (root / "stanford_cars").is_dir():
        root = root / "stanford_cars"
    require(root, ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat",
                   "cars_train", "cars_test"), LAYOUT)
    crop = option(request, "crop", CROP_CHOICES)
    level = option(request, "level", ("model", "make"))
    class_names = [str(n) for n in as_list(loadmat(root / "devkit" / "cars_meta.mat", LAYOUT)["class_names"])]
    makes = sorted({car_make(n) for n in class_names})
    make_of = [makes.index(car_make(n)) for n in class_names]

    def split(annos, folder) -> ImageList:
        rows = _annotations(annos, LAYOUT)
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
                         test=split(root / "cars_test_annos_withlabels.mat", "cars_test"),
                         crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="cars", load=load_cars, layout=LAYOUT, default_root="stanford_cars",
                   description="Stanford Cars, 196 models (devkit .mat files; coarse = make)",
                   options={"crop": "none", "level": "model"})

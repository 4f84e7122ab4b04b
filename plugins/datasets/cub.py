"""CUB-200-2011 in its official layout (Wah et al., 2011).

Files: ``images.txt`` (id, path), ``image_class_labels.txt`` (id, class id),
``train_test_split.txt`` (id, 1 = train), ``bounding_boxes.txt`` (id, x, y, w, h),
``classes.txt`` (class id, name), ``images/<class>/<file>.jpg``. Ids are used as given, so
a subset with non-contiguous ids (e.g. the first 50 classes) loads too.

Boxes are used as given: CUB's ``x y w h`` (pixels, top-left origin) already is our box.
A split value other than 0 or 1 is an error naming the file and line.

Coarse level (derived, documented): the bird *group*, the last word of the class name —
``001.Black_footed_Albatross`` → ``Albatross``, ``Least_Auklet`` → ``Auklet``. It is
word-based, not taxonomic: ``Chuck_will_Widow`` → ``Widow``; ``Spotted_Catbird`` is
grouped with ``Gray_Catbird``; ``Goldfinch`` is a group apart from ``Finch``. Over all 200
classes it yields 70 groups, 33 of them with a single class (the first 50 classes: 25
groups, 12 with two or more).
"""

from __future__ import annotations

import math

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import CROP_CHOICES, contiguous, descend, keyed_rows, option, require

LAYOUT = ("ROOT/images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, "
          "classes.txt and images/<class>/<file>.jpg (the CUB_200_2011 folder of the official archive)")
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt",
         "images")


def bird_group(class_name: str) -> str:
    name = class_name.split(".", 1)[-1]
    return name.replace("-", "_").split("_")[-1]


def load_cub(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "CUB_200_2011")   # the archive's folder, or the folder holding it
    require(root, FILES, LAYOUT)
    crop = option(request, "crop", CROP_CHOICES)
    paths = {i: r[1] for i, (_, r) in keyed_rows(root / "images.txt", 2, LAYOUT, maxsplit=1).items()}
    names = {i: r[1] for i, (_, r) in keyed_rows(root / "classes.txt", 2, LAYOUT, maxsplit=1).items()}
    labels = {}
    for i, (n, r) in keyed_rows(root / "image_class_labels.txt", 2, LAYOUT).items():
        if not r[1].isdigit() or r[1] not in names:
            raise DataError(f"{root / 'image_class_labels.txt'}:{n}: class {r[1]!r} of image {i} is not a class id "
                            f"of {root / 'classes.txt'} — the metadata files do not belong together")
        labels[i] = r[1]
    labels_text = {int(c): c for c in labels.values()}   # "007" in both files stays "007"
    is_train = {}
    for i, (n, r) in keyed_rows(root / "train_test_split.txt", 2, LAYOUT).items():
        if r[1] not in ("0", "1"):
            raise DataError(f"{root / 'train_test_split.txt'}:{n}: split value {r[1]!r} for image {i} — "
                            f"expected 1 (train) or 0 (test)")
        is_train[i] = r[1] == "1"
    boxes = {}
    for i, (n, r) in keyed_rows(root / "bounding_boxes.txt", 5, LAYOUT).items():
        try:
            box = tuple(float(v) for v in r[1:5])
        except ValueError:
            box = ()
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or min(box) < 0 or box[2] <= 0 or box[3] <= 0:
            raise DataError(f"{root / 'bounding_boxes.txt'}:{n}: box {' '.join(r[1:5])} of image {i} is not "
                            f"x y width height in pixels (finite, >= 0, a width and height > 0) — fix the line")
        boxes[i] = box
    for image_id in paths:
        for what, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                            ("bounding_boxes.txt", boxes)):
            if image_id not in table:
                raise DataError(f"image id {image_id} of images.txt is missing from {root / what} — "
                                f"the metadata files do not belong together")
    used = contiguous(int(labels[i]) for i in paths)
    class_names = [names[labels_text[cid]] for cid in sorted(used)]
    groups = sorted({bird_group(n) for n in class_names})
    group_of = [groups.index(bird_group(n)) for n in class_names]

    def split(train: bool) -> ImageList:
        ids = sorted((i for i in paths if is_train[i] == train), key=int)
        fine = [used[int(labels[i])] for i in ids]
        return ImageList([str(root / "images" / paths[i]) for i in ids], fine, class_names,
                         boxes=[boxes[i] for i in ids], coarse_labels=[group_of[f] for f in fine],
                         coarse_names=groups)

    return DatasetSplits(train=split(True), test=split(False), crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="cub",
                   split_lists="train_test_split.txt",
                   load=load_cub, layout=LAYOUT, default_root="CUB_200_2011",
                   description="CUB-200-2011 birds (official files; coarse = bird group word)",
                   options={"crop": "none"}, choices={"crop": CROP_CHOICES})

"""FGVC-Aircraft (Maji et al., 2013), official layout of ``fgvc-aircraft-2013b/data``.

``images_{variant,family,manufacturer}_{train,val,test}.txt`` (``<image id> <label with
spaces>``), ``variants.txt`` / ``families.txt`` / ``manufacturers.txt``, ``images_box.txt``
(``id xmin ymin xmax ymax``), ``images/<id>.jpg``. The bottom 20 pixels of every image
hold a copyright banner and are cut, as the official protocol does. ROOT may be that
``data/`` folder, ``fgvc-aircraft-2013b/`` or the folder containing it (torchvision's root).

Boxes: the official README gives ``xmin ymin xmax ymax`` with the top-left pixel at
(1, 1), inclusive; they become our 0-based continuous ``(x, y, w, h)`` as ``x = xmin - 1``,
``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``.

Options: ``level`` (variant | family | manufacturer), ``train_split`` (trainval: train on
train+val as the papers do, the core carves its own validation split; train: train only,
the official val split selects epochs), ``crop`` (none | bbox), ``coarse`` (the coarser
level given as each image's coarse label: ``auto`` — the next one up: family for variants,
manufacturer for families —, ``family`` or ``manufacturer``; it must be coarser than
``level``).
"""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import CROP_CHOICES, descend, one_based_box, option, read_columns, read_text, require

LAYOUT = ("ROOT/images/<id>.jpg, ROOT/images_variant_{train,val,test}.txt (and _family_, _manufacturer_), "
          "ROOT/variants.txt, families.txt, manufacturers.txt, images_box.txt (fgvc-aircraft-2013b/data; "
          "ROOT may also be fgvc-aircraft-2013b/ or the folder containing it)")
BANNER_PX = 20
LEVELS = ("variant", "family", "manufacturer")
PLURAL = {"variant": "variants", "family": "families", "manufacturer": "manufacturers"}
COARSE_CHOICES = ("auto", "family", "manufacturer")


def _check(options) -> None:
    level, coarse = options.get("level"), options.get("coarse")
    if coarse in LEVELS and level in LEVELS and LEVELS.index(coarse) <= LEVELS.index(level):
        raise DataError(f"aircraft option coarse: {coarse} is not coarser than level: {level} — use "
                        f"{' or '.join(LEVELS[LEVELS.index(level) + 1:]) or 'auto (manufacturers have no coarser level)'}")


def _labelled(path):
    rows = []
    for line in read_text(path, LAYOUT).splitlines():
        if line.strip():
            image_id, _, label = line.strip().partition(" ")
            rows.append((image_id, label))
    return rows


def load_aircraft(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "fgvc-aircraft-2013b/data", "data")
    level = option(request, "level", LEVELS)
    train_split = option(request, "train_split", ("trainval", "train"))
    crop = option(request, "crop", CROP_CHOICES)
    require(root, ["images", "images_box.txt", f"{PLURAL[level]}.txt"]
            + [f"images_{level}_{s}.txt" for s in ("train", "val", "test")], LAYOUT)
    names = [n.strip() for n in read_text(root / f"{PLURAL[level]}.txt", LAYOUT).splitlines() if n.strip()]
    index = {n: i for i, n in enumerate(names)}
    boxes = {r[0]: one_based_box(*(float(v) for v in r[1:5])) for r in read_columns(root / "images_box.txt", 5, LAYOUT)}
    coarse_level = {"variant": "family", "family": "manufacturer"}.get(level)
    wanted = option(request, "coarse", COARSE_CHOICES, default="auto")   # hash_if_set: absent from earlier runs
    if wanted != "auto":
        coarse_level = wanted
    coarse_of: dict[str, str] = {}
    coarse_names = None
    if coarse_level and all((root / f"images_{coarse_level}_{s}.txt").exists() for s in ("train", "val", "test")):
        for s in ("train", "val", "test"):
            coarse_of.update(dict(_labelled(root / f"images_{coarse_level}_{s}.txt")))
        listed = root / f"{PLURAL[coarse_level]}.txt"   # the official order (torchvision's index there)
        if listed.is_file():
            coarse_names = [n.strip() for n in read_text(listed, LAYOUT).splitlines() if n.strip()]
            unknown = sorted(set(coarse_of.values()) - set(coarse_names))
            if unknown:
                raise DataError(f"{coarse_level} {unknown[0]!r} of images_{coarse_level}_*.txt is not in {listed}")
        else:
            coarse_names = sorted(set(coarse_of.values()))

    def split(*parts: str) -> ImageList:
        rows = [row for p in parts for row in _labelled(root / f"images_{level}_{p}.txt")]
        for image_id, label in rows:
            if label not in index:
                raise DataError(f"label {label!r} of image {image_id} is not in {PLURAL[level]}.txt")
        ids = [i for i, _ in rows]
        missing_box = next((i for i in ids if i not in boxes), None)
        if missing_box is not None:
            raise DataError(f"image {missing_box} has no line in {root / 'images_box.txt'}")
        coarse_index = {n: k for k, n in enumerate(coarse_names or [])}
        coarse = [coarse_index[coarse_of[i]] for i in ids] if coarse_names and all(
            i in coarse_of for i in ids) else None
        return ImageList([str(root / "images" / f"{i}.jpg") for i in ids], [index[lbl] for _, lbl in rows], names,
                         boxes=[boxes[i] for i in ids], coarse_labels=coarse,
                         coarse_names=coarse_names if coarse is not None else None, trim_bottom=BANNER_PX)

    if train_split == "trainval":
        return DatasetSplits(train=split("train", "val"), test=split("test"), crop_to_boxes=crop == "bbox")
    return DatasetSplits(train=split("train"), val=split("val"), test=split("test"), crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="aircraft",
                   split_lists="data/images_variant_{train,val,test}.txt (and the family/manufacturer lists)",
                   load=load_aircraft, layout=LAYOUT, default_root="fgvc-aircraft-2013b",
                   description="FGVC-Aircraft (variant/family/manufacturer; 20-px banner removed)",
                   options={"level": "variant", "train_split": "trainval", "crop": "none", "coarse": "auto"},
                   choices={"level": LEVELS, "train_split": ("trainval", "train"), "crop": CROP_CHOICES,
                            "coarse": COARSE_CHOICES}, check=_check, hash_if_set=("coarse",))

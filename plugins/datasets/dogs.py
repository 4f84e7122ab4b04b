"""Stanford Dogs (Khosla et al., 2011): ``Images/<wnid-breed>/<file>.jpg``,
``train_list.mat`` and ``test_list.mat`` (``file_list``, ``labels`` 1-based) — the official
``lists.tar`` extracts them (with ``file_list.mat``) straight into the dataset folder;
``ROOT/lists/*.mat`` is read when they are not in ROOT — and
``Annotation/<wnid-breed>/<file stem>`` (PASCAL VOC XML; with several dogs in one image
the box is their union). Class names drop the WordNet id: ``n02085620-Chihuahua`` →
``Chihuahua``.

Boxes are read whenever ``Annotation/`` is there (``crop: bbox`` requires it; without
it, a missing or unreadable file leaves the split without boxes instead of failing).
PASCAL VOC pixel coordinates are 1-based and inclusive; the union
``xmin..xmax``, ``ymin..ymax`` becomes our 0-based continuous ``(x, y, w, h)`` as
``x = xmin - 1``, ``y = ymin - 1``, ``w = xmax - xmin + 1``, ``h = ymax - ymin + 1``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import CROP_CHOICES, as_list, loadmat, one_based_box, option, require

LAYOUT = ("ROOT/Images/<wnid-breed>/*.jpg, ROOT/{train,test}_list.mat (as lists.tar extracts them; "
          "ROOT/lists/ also read), ROOT/Annotation/<wnid-breed>/<stem>")


def union_box(xml_path: Path) -> tuple[float, float, float, float]:
    try:
        tree = ET.parse(xml_path)
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"cannot read the annotation {xml_path} ({exc.__class__.__name__}) — "
                        f"use crop: none, or restore Annotation/") from None
    boxes = [[float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for b in tree.iter("bndbox")]
    if not boxes:
        raise DataError(f"{xml_path} has no <bndbox>")
    return one_based_box(min(b[0] for b in boxes), min(b[1] for b in boxes),
                         max(b[2] for b in boxes), max(b[3] for b in boxes))


def load_dogs(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    require(root, ("Images",), LAYOUT)
    lists = root if (root / "train_list.mat").is_file() or not (root / "lists").is_dir() else root / "lists"
    require(root, [str((lists / f"{s}_list.mat").relative_to(root)) for s in ("train", "test")], LAYOUT)
    crop = option(request, "crop", CROP_CHOICES)
    folders = sorted(p.name for p in (root / "Images").iterdir() if p.is_dir())
    names = [f.split("-", 1)[-1] for f in folders]

    def split(name: str) -> ImageList:
        mat = loadmat(lists / f"{name}_list.mat", LAYOUT)
        files = [str(f) for f in as_list(mat["file_list"])]
        labels = [int(v) - 1 for v in as_list(mat["labels"])]
        for f, label in zip(files, labels):
            if not 0 <= label < len(folders) or f.split("/")[0] != folders[label]:
                raise DataError(f"{name}_list.mat: {f} has label {label + 1}, which is not its folder "
                                f"(Images/ should hold the 120 breed folders)")
        boxes = None
        if crop == "bbox":
            require(root, ("Annotation",), LAYOUT)
        if (root / "Annotation").is_dir():   # boxes where the dataset has them, as CUB's and Cars'
            try:
                boxes = [union_box(root / "Annotation" / Path(f).with_suffix("")) for f in files]
            except DataError:   # a crop-free run does not need them: one unreadable file costs the boxes only
                if crop == "bbox":
                    raise
        return ImageList([str(root / "Images" / f) for f in files], labels, names, boxes=boxes)

    return DatasetSplits(train=split("train"), test=split("test"), crop_to_boxes=crop == "bbox")


SPEC = DatasetSpec(name="dogs",
                   split_lists="train_list.mat / test_list.mat",
                   load=load_dogs, layout=LAYOUT, default_root="stanford_dogs",
                   description="Stanford Dogs, 120 breeds ({train,test}_list.mat; Annotation/ boxes)",
                   options={"crop": "none"}, choices={"crop": CROP_CHOICES})

"""Describable Textures (Cimpoi et al., 2014): ``images/<class>/<file>.jpg`` and the ten
official splits ``labels/{train,val,test}<k>.txt`` (lines ``banded/banded_0002.jpg``).
Option ``split`` picks k (1–10, default 1); ``train_split: trainval`` (default) trains on
train+val, ``train`` keeps val for selecting epochs. ROOT may be the archive's ``dtd/``
folder or the folder containing it (torchvision's root, which holds ``dtd/dtd/``)."""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import descend, option, read_text, require

LAYOUT = ("ROOT/images/<class>/*.jpg and ROOT/labels/{train,val,test}<1-10>.txt (dtd/ of the official archive; "
          "ROOT may also be the folder containing dtd/)")


def check_dtd(options) -> None:
    k = options.get("split")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10:
        raise DataError(f"dataset option split: {k!r} — use an official split number 1 to 10")


def load_dtd(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "dtd/dtd", "dtd")
    k = request.options["split"]   # 1–10: check_dtd ran before (DatasetSpec.load_checked, the suite)
    train_split = option(request, "train_split", ("trainval", "train"))
    require(root, ("images", f"labels/train{k}.txt", f"labels/val{k}.txt", f"labels/test{k}.txt"), LAYOUT)
    names = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    index = {n: i for i, n in enumerate(names)}

    def split(*parts: str) -> ImageList:
        rels = [line.strip() for p in parts for line in read_text(root / "labels" / f"{p}{k}.txt", LAYOUT).splitlines()
                if line.strip()]
        labels = []
        for rel in rels:
            cls = rel.split("/")[0]
            if cls not in index:
                raise DataError(f"labels/{parts[0]}{k}.txt names {rel}, but images/{cls}/ does not exist")
            labels.append(index[cls])
        return ImageList([str(root / "images" / r) for r in rels], labels, names)

    if train_split == "trainval":
        return DatasetSplits(train=split("train", "val"), test=split("test"))
    return DatasetSplits(train=split("train"), val=split("val"), test=split("test"))


SPEC = DatasetSpec(name="dtd",
                   split_lists="labels/{train,val,test}<N>.txt",
                   load=load_dtd, layout=LAYOUT, default_root="dtd",
                   description="Describable Textures, 47 classes, official splits 1–10",
                   options={"split": 1, "train_split": "trainval"},
                   choices={"train_split": ("trainval", "train")}, check=check_dtd)

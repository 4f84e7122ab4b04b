"""Oxford Flowers-102 (Nilsback & Zisserman, 2008): ``jpg/image_NNNNN.jpg``,
``imagelabels.mat`` (``labels``, 1-based, one per image) and ``setid.mat`` (``trnid``,
``valid``, ``tstid``: 1-based image numbers). ``train_split: trainval`` (default) trains
on the 1,020 train + 1,020 val images, as FGVC papers do; ``train`` keeps the official
val split for selecting epochs."""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import as_list, loadmat, option, require

LAYOUT = "ROOT/jpg/image_00001.jpg …, ROOT/imagelabels.mat, ROOT/setid.mat (the official Flowers-102 files)"


def load_flowers(request: DatasetRequest) -> DatasetSplits:
    root = request.root
    require(root, ("jpg", "imagelabels.mat", "setid.mat"), LAYOUT)
    train_split = option(request, "train_split", ("trainval", "train"))
    labels = [int(v) - 1 for v in as_list(loadmat(root / "imagelabels.mat", LAYOUT)["labels"])]
    sets = loadmat(root / "setid.mat", LAYOUT)
    n_classes = max(labels) + 1
    names = [f"flower_{c + 1:03d}" for c in range(n_classes)]

    def split(*keys: str) -> ImageList:
        ids = [int(i) for k in keys for i in as_list(sets[k])]
        bad = next((i for i in ids if not 1 <= i <= len(labels)), None)
        if bad is not None:
            raise DataError(f"setid.mat names image {bad}, but imagelabels.mat has {len(labels)} labels")
        return ImageList([str(root / "jpg" / f"image_{i:05d}.jpg") for i in ids], [labels[i - 1] for i in ids], names)

    if train_split == "trainval":
        return DatasetSplits(train=split("trnid", "valid"), test=split("tstid"))
    return DatasetSplits(train=split("trnid"), val=split("valid"), test=split("tstid"))


SPEC = DatasetSpec(name="flowers102", load=load_flowers, layout=LAYOUT, default_root="flowers-102",
                   description="Oxford Flowers-102 (imagelabels.mat, setid.mat)", options={"train_split": "trainval"})

"""Oxford Flowers-102 (Nilsback & Zisserman, 2008): ``jpg/image_NNNNN.jpg``,
``imagelabels.mat`` (``labels``, 1-based, one per image) and ``setid.mat`` (``trnid``,
``valid``, ``tstid``: 1-based image numbers). ``train_split: trainval`` (default) trains
on the 1,020 train + 1,020 val images, as FGVC papers do; ``train`` keeps the official
val split for selecting epochs. ROOT may be the folder of those files or the folder
containing ``flowers-102/`` (torchvision's root).

Class names: the release ships none; ``NAMES`` is the standard list of TensorFlow
Datasets' ``oxford_flowers102`` (``_NAMES``, label order 1..102), spelling kept as there
(e.g. ``"pink-yellow dahlia?"``)."""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import as_list, descend, loadmat, option, require

LAYOUT = ("ROOT/jpg/image_00001.jpg …, ROOT/imagelabels.mat, ROOT/setid.mat (the official Flowers-102 files; "
          "ROOT may also be the folder containing flowers-102/)")

# tensorflow/datasets: tensorflow_datasets/datasets/oxford_flowers102/oxford_flowers102_dataset_builder.py
NAMES = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle",
    "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe-flower", "purple coneflower", "peruvian lily", "balloon flower", "giant white arum lily",
    "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly",
    "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip", "lenten rose",
    "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium",
    "bishop of llandaff", "gaura", "geranium", "orange dahlia", "pink-yellow dahlia?",
    "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush", "californian poppy",
    "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy",
    "gazania", "azalea", "water lily", "rose", "thorn apple",
    "morning glory", "passion flower", "lotus", "toad lily", "anthurium",
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily",
    "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
]


def load_flowers(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "flowers-102")
    require(root, ("jpg", "imagelabels.mat", "setid.mat"), LAYOUT)
    train_split = option(request, "train_split", ("trainval", "train"))
    labels = [int(v) - 1 for v in as_list(loadmat(root / "imagelabels.mat", LAYOUT)["labels"])]
    sets = loadmat(root / "setid.mat", LAYOUT)
    if not labels or not 0 <= min(labels) <= max(labels) < len(NAMES):
        raise DataError(f"{root / 'imagelabels.mat'}: labels must be 1..{len(NAMES)} — is this the official file?")
    names = NAMES[:max(labels) + 1]

    def split(*keys: str) -> ImageList:
        ids = [int(i) for k in keys for i in as_list(sets[k])]
        bad = next((i for i in ids if not 1 <= i <= len(labels)), None)
        if bad is not None:
            raise DataError(f"setid.mat names image {bad}, but imagelabels.mat has {len(labels)} labels")
        return ImageList([str(root / "jpg" / f"image_{i:05d}.jpg") for i in ids], [labels[i - 1] for i in ids], names)

    if train_split == "trainval":
        return DatasetSplits(train=split("trnid", "valid"), test=split("tstid"))
    return DatasetSplits(train=split("trnid"), val=split("valid"), test=split("tstid"))


SPEC = DatasetSpec(name="flowers102",
                   split_lists="setid.mat",
                   load=load_flowers, layout=LAYOUT, default_root="flowers-102",
                   description="Oxford Flowers-102 (imagelabels.mat, setid.mat)", options={"train_split": "trainval"},
                   choices={"train_split": ("trainval", "train")})

"""Oxford-IIIT Pets (Parkhi et al., 2012): ``images/<Breed_name>_<n>.jpg`` and
``annotations/{trainval,test}.txt`` (lines ``Abyssinian_100 1 1 1``: image, class id
1–37, species 1 = cat / 2 = dog, breed id). Class names as torchvision's OxfordIIITPet
spells them (``American Bulldog``; species ``Cat``/``Dog``). Coarse level: the species.
``level: species`` makes the two-way task. ROOT may be ``oxford-iiit-pet/`` or the folder containing it
(torchvision's root).

No boxes are exposed (``crop: bbox`` is not offered): the only boxes in the release,
``annotations/xmls/``, are *head* boxes, not the pet's body, and exist for the trainval
images only — cropping to them would change the task and could not be applied to test."""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

from ._common import descend, option, read_columns, require

LAYOUT = ("ROOT/images/*.jpg and ROOT/annotations/{trainval,test}.txt (the official oxford-iiit-pet archives; "
          "ROOT may also be the folder containing oxford-iiit-pet/)")
SPECIES = ["Cat", "Dog"]


def breed_name(image: str) -> str:
    """``american_bulldog_12`` → ``American Bulldog``: torchvision's OxfordIIITPet names."""
    return " ".join(part.title() for part in image.rsplit("_", 1)[0].split("_"))


def load_pets(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "oxford-iiit-pet")
    require(root, ("images", "annotations/trainval.txt", "annotations/test.txt"), LAYOUT)
    level = option(request, "level", ("breed", "species"))
    rows = {s: [r for r in read_columns(root / "annotations" / f"{s}.txt", 3, LAYOUT) if not r[0].startswith("#")]
            for s in ("trainval", "test")}
    breeds: dict[int, str] = {}
    for r in rows["trainval"] + rows["test"]:
        breeds.setdefault(int(r[1]) - 1, breed_name(r[0]))
    if sorted(breeds) != list(range(len(breeds))):
        raise DataError(f"class ids in {root / 'annotations'} are not 1..{len(breeds)}")
    names = [breeds[i] for i in range(len(breeds))]

    def split(s: str) -> ImageList:
        fine = [int(r[1]) - 1 for r in rows[s]]
        species = [int(r[2]) - 1 for r in rows[s]]
        paths = [str(root / "images" / f"{r[0]}.jpg") for r in rows[s]]
        if level == "species":
            return ImageList(paths, species, SPECIES)
        return ImageList(paths, fine, names, coarse_labels=species, coarse_names=SPECIES)

    return DatasetSplits(train=split("trainval"), test=split("test"))


SPEC = DatasetSpec(name="pets", load=load_pets, layout=LAYOUT, default_root="oxford-iiit-pet",
                   description="Oxford-IIIT Pets, 37 breeds (coarse = species)", options={"level": "breed"},
                   choices={"level": ("breed", "species")})

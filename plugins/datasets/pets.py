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

from ._common import contiguous, descend, option, read_text, require

LAYOUT = ("ROOT/images/*.jpg and ROOT/annotations/{trainval,test}.txt (the official oxford-iiit-pet archives; "
          "ROOT may also be the folder containing oxford-iiit-pet/)")
SPECIES = ["Cat", "Dog"]


def breed_name(image: str) -> str:
    """``american_bulldog_12`` → ``American Bulldog``: torchvision's OxfordIIITPet names."""
    return " ".join(part.title() for part in image.rsplit("_", 1)[0].split("_"))


def _rows(path) -> list[list[str]]:
    """``IMAGE CLASS-ID SPECIES BREED-ID`` rows; ``#`` comment lines (the header of
    ``list.txt``) and blank ones skipped before the columns are checked."""
    rows = []
    for n, line in enumerate(read_text(path, LAYOUT).splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 3 or not parts[1].isdigit() or parts[2] not in ("1", "2"):
            raise DataError(f"{path}:{n}: expected 'IMAGE CLASS-ID SPECIES …' with a class id >= 1 and species 1 "
                            f"(cat) or 2 (dog), got {line.strip()[:80]!r} — is this the official file?")
        rows.append(parts)
    return rows


def load_pets(request: DatasetRequest) -> DatasetSplits:
    root = descend(request.root, "oxford-iiit-pet")
    require(root, ("images", "annotations/trainval.txt", "annotations/test.txt"), LAYOUT)
    level = option(request, "level", ("breed", "species"))
    rows = {s: _rows(root / "annotations" / f"{s}.txt") for s in ("trainval", "test")}
    breeds: dict[int, str] = {}
    for r in rows["trainval"] + rows["test"]:
        breeds.setdefault(int(r[1]), breed_name(r[0]))
    used = contiguous(breeds)   # a subset of the breeds (ids with gaps) loads too, as CUB's does
    names = [breeds[cid] for cid in sorted(used)]

    def split(s: str) -> ImageList:
        fine = [used[int(r[1])] for r in rows[s]]
        species = [int(r[2]) - 1 for r in rows[s]]
        paths = [str(root / "images" / f"{r[0]}.jpg") for r in rows[s]]
        if level == "species":
            return ImageList(paths, species, SPECIES)
        return ImageList(paths, fine, names, coarse_labels=species, coarse_names=SPECIES)

    return DatasetSplits(train=split("trainval"), test=split("test"))


SPEC = DatasetSpec(name="pets",
                   split_lists="annotations/{trainval,test}.txt",
                   load=load_pets, layout=LAYOUT, default_root="oxford-iiit-pet",
                   description="Oxford-IIIT Pets, 37 breeds (coarse = species)", options={"level": "breed"},
                   choices={"level": ("breed", "species")})

"""Dataset *views*: a registered dataset built from another one.

``coarse`` — the coarse-label task of a dataset that has a hierarchy: the labels become
the coarse level (synthetic: its groups; ``cub``: the bird-group word of the class name;
``cars``: the make; ``aircraft`` with ``level: variant``: the family, ``level: family``:
the manufacturer; ``pets``: the species; ``imagefolder`` with ``levels: 2``: the top folders). Every image keeps its true fine label in
``meta["fine_label"]`` (names in ``info["fine_names"]``), so a method that discovers
fine labels can be scored against the truth. ``min_fine`` drops coarse groups that hold
fewer fine classes (CUB's single-species groups have nothing to discover).

    datasets:
      - name: coarse
        root: CUB_200_2011                  # the root of the dataset it is a view of
        options: {of: cub, min_fine: 2}
"""

from __future__ import annotations

from fgvcbench.api import DataError, DatasetRequest, DatasetSpec, DatasetSplits, ImageList

HIERARCHIES = ("synthetic, cub, cars (level: model), aircraft (level: variant or family), pets, "
               "imagefolder (levels: 2)")


def coarse_view(splits: DatasetSplits, base: str, min_fine: int = 1) -> DatasetSplits:
    """Relabel every split of ``splits`` to its coarse level; keep the fine labels as meta."""
    train = splits.train
    if train.coarse_labels is None or train.coarse_names is None:
        raise DataError(f"dataset {base!r} (with these options) has no coarse level — "
                        f"coarse views work on: {HIERARCHIES}")
    fine_per_group: dict[int, set[int]] = {}
    for fine, group in zip(train.labels, train.coarse_labels):
        fine_per_group.setdefault(group, set()).add(fine)
    kept = sorted(g for g, fines in fine_per_group.items() if len(fines) >= min_fine)
    if not kept:
        raise DataError(f"coarse view of {base!r}: no coarse group has {min_fine} or more fine classes — "
                        f"lower min_fine")
    new_id = {g: i for i, g in enumerate(kept)}
    names = [train.coarse_names[g] for g in kept]

    def view(images: ImageList | None) -> ImageList | None:
        if images is None:
            return None
        if images.coarse_labels is None:
            raise DataError(f"coarse view of {base!r}: a split has no coarse labels")
        rows = [i for i, g in enumerate(images.coarse_labels) if g in new_id]
        sub = images.subset(rows)
        return ImageList(sub.paths, [new_id[g] for g in sub.coarse_labels], names, boxes=sub.boxes,
                         trim_bottom=sub.trim_bottom,
                         meta={**sub.meta, "fine_label": list(sub.labels)},
                         info={**sub.info, "fine_names": list(images.class_names), "view_of": base})

    return DatasetSplits(train=view(splits.train), test=view(splits.test), val=view(splits.val),
                         crop_to_boxes=splits.crop_to_boxes)


# the built-in datasets whose adapters give no coarse level: refused when the suite loads,
# not by every run (a third party's dataset is tried, and fails its runs if it has none)
NO_HIERARCHY = ("imagefolder", "flowers102", "dogs", "dtd")


def check_coarse(o) -> None:
    # imagefolder at levels: 2 has one (another value than 1 is left to the base's own check, which names it)
    two_levels = o["of"] == "imagefolder" and isinstance(o.get("of_options"), dict) and \
        not (type(o["of_options"].get("levels", 1)) is int and o["of_options"].get("levels", 1) == 1)
    if not isinstance(o["of"], str) or (o["of"] in ("coarse",) + NO_HIERARCHY and not two_levels):
        raise DataError(f"coarse view: of: {o['of']!r} has no coarse level — name a dataset with a hierarchy "
                        f"({HIERARCHIES})")
    if isinstance(o["min_fine"], bool) or not isinstance(o["min_fine"], int) or o["min_fine"] < 1:
        raise DataError(f"coarse view: min_fine: {o['min_fine']!r} — use an integer >= 1")


def load_coarse(request: DatasetRequest) -> DatasetSplits:
    o = request.options
    splits = request.load_dataset(o["of"], o["of_options"], request.root)
    return coarse_view(splits, o["of"], o["min_fine"])


COARSE = DatasetSpec(
    name="coarse", load=load_coarse, needs_root=False,
    description="view: the coarse-label task of a dataset with a hierarchy (true fine labels kept as meta)",
    layout="the layout of the dataset named by `of`; give its folder as the view's `root:`",
    options={"of": "synthetic", "of_options": {}, "min_fine": 1}, check=check_coarse)

"""Batched TrivialAugmentWide and AutoAugment: each op equals torchvision's functional op on
uint8 images, parameters are drawn per sample with torchvision's distribution."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fgvcbench.engine.batch_policies import (ALL_OPS, NUM_BINS, OPS, SIGNED, _bins, apply_ops, auto_augment,
                                             autoaugment_params, autoaugment_table, sample_params,
                                             trivial_augment_wide)


def reference(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """torchvision's TrivialAugmentWide._apply_image_or_video_transform, as written there."""
    nearest = TF.InterpolationMode.NEAREST
    if op == "Identity":
        return img
    if op == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         interpolation=nearest, center=[0, 0])
    if op == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         interpolation=nearest, center=[0, 0])
    if op == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if op == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if op == "Rotate":
        return TF.rotate(img, angle=m, interpolation=nearest)
    if op == "Brightness":
        return TF.adjust_brightness(img, 1.0 + m)
    if op == "Color":
        return TF.adjust_saturation(img, 1.0 + m)
    if op == "Contrast":
        return TF.adjust_contrast(img, 1.0 + m)
    if op == "Sharpness":
        return TF.adjust_sharpness(img, 1.0 + m)
    if op == "Posterize":
        return TF.posterize(img, bits=int(m))
    if op == "Solarize":
        return TF.solarize(img, threshold=255.0 * m)
    if op == "AutoContrast":
        return TF.autocontrast(img)
    return TF.equalize(img)


@pytest.mark.parametrize("op", OPS)
def test_each_op_matches_torchvision(op):
    g = torch.Generator().manual_seed(OPS.index(op))
    images = torch.randint(0, 256, (6, 3, 24, 24), generator=g, dtype=torch.uint8)
    images[:, :, 8:16, 4:20] = 200                      # some structure, not only noise
    bins = _bins(op)
    levels = [0, 7, 15, 22, 30, 20]
    mags = torch.tensor([0.0 if bins is None else float(bins[lv]) for lv in levels])
    if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"):
        mags[1::2] *= -1                                # signed ops: both directions
    out = apply_ops(images, torch.full((6,), OPS.index(op)), mags)
    for i in range(6):
        expected = reference(images[i], op, float(mags[i]))
        mismatch = (out[i].int() - expected.int()).abs()
        # identical, nearest ties of shears and rotations included; Color's blend may round a level apart
        assert torch.equal(out[i], expected) if op != "Color" else mismatch.max() <= 1, \
            (op, float(mags[i]), (mismatch > 0).float().mean())


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"])
def test_geometric_ops_resample_bilinearly_as_torchvisions_reference_scripts(op):
    """policy_interpolation: bilinear — what torchvision's references/classification passes."""
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (4, 3, 24, 24), generator=g, dtype=torch.uint8)
    mags = torch.tensor([float(_bins(op)[lv]) for lv in (5, 12, 20, 30)])
    mags[1::2] *= -1
    out = apply_ops(images, torch.full((4,), OPS.index(op)), mags, interpolation="bilinear")
    nearest = apply_ops(images, torch.full((4,), OPS.index(op)), mags)
    bilinear = TF.InterpolationMode.BILINEAR
    for i in range(4):
        m = float(mags[i])
        if op == "Rotate":
            expected = TF.rotate(images[i], angle=m, interpolation=bilinear)
        elif op.startswith("Shear"):
            shear = [math.degrees(math.atan(m)), 0.0] if op == "ShearX" else [0.0, math.degrees(math.atan(m))]
            expected = TF.affine(images[i], angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                                 interpolation=bilinear, center=[0, 0])
        else:
            move = [int(m), 0] if op == "TranslateX" else [0, int(m)]
            expected = TF.affine(images[i], angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0],
                                 interpolation=bilinear)
        assert ((out[i].int() - expected.int()).abs() > 1).float().mean() < 0.01, (op, m)
    if op in ("ShearX", "ShearY", "Rotate"):   # sub-pixel resampling: the two modes differ
        assert not torch.equal(out, nearest)


def test_trivial_augment_space_is_torchvisions_own():
    """Our op list, magnitude bins and signed-ness equal torchvision's
    ``TrivialAugmentWide._AUGMENTATION_SPACE`` (read from the installed torchvision)."""
    from torchvision.transforms.v2 import TrivialAugmentWide
    space = TrivialAugmentWide._AUGMENTATION_SPACE
    assert list(OPS) == list(space)
    for op, (bins_fn, signed) in space.items():
        theirs, ours = bins_fn(NUM_BINS, 224, 224), _bins(op)
        assert (op in SIGNED) == signed, op
        no_magnitude = theirs is None or theirs.ndim == 0   # Identity, AutoContrast, Equalize
        assert (ours is None) == no_magnitude, op
        if not no_magnitude:
            assert torch.allclose(ours.float(), theirs.float()), op


def test_parameters_are_drawn_per_sample_with_torchvisions_distribution():
    op, magnitude = sample_params(20000, torch.Generator().manual_seed(0))
    counts = torch.bincount(op, minlength=len(OPS)).float() / len(op)
    assert (counts - 1 / len(OPS)).abs().max() < 0.01             # uniform over the 14 ops
    rotate = magnitude[op == OPS.index("Rotate")]
    assert rotate.abs().max() <= 135 and (rotate < 0).float().mean() == pytest.approx(0.5, abs=0.04)
    assert set(magnitude[op == OPS.index("Posterize")].tolist()) <= set(range(2, 9))
    solarize = magnitude[op == OPS.index("Solarize")]
    assert solarize.min() >= 0 and solarize.max() <= 1            # unsigned
    assert len(torch.unique(rotate.abs())) == NUM_BINS


def test_a_batch_of_copies_gets_different_augmentations():
    image = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = trivial_augment_wide(image.expand(32, -1, -1, -1).clone(), torch.Generator().manual_seed(2))
    distinct = {tuple(o.flatten()[:200].tolist()) for o in out}
    assert len(distinct) > 10 and out.dtype == torch.uint8 and out.shape == (32, 3, 32, 32)


def test_invert_matches_torchvision():
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = apply_ops(images, torch.full((3,), ALL_OPS.index("Invert")), torch.zeros(3))
    assert torch.equal(out, TF.invert(images))


def test_autoaugment_table_is_torchvisions_imagenet_policy():
    from torchvision.transforms import v2
    tv = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    op, prob, mag, signed = autoaugment_table("imagenet", 64, 64)
    assert op.shape == (25, 2) == prob.shape
    assert [ALL_OPS[o] for o in op[0].tolist()] == ["Posterize", "Rotate"] and prob[0].tolist() == [0.4, 0.6]
    assert mag[0].tolist() == pytest.approx([4.0, 30.0])       # Posterize bin 8 → 4 bits; Rotate bin 9 → 30°
    assert signed[0].tolist() == [False, True]
    for p, sub_policy in enumerate(tv._policies):
        assert [ALL_OPS[o] for o in op[p].tolist()] == [name for name, _, _ in sub_policy]
        assert prob[p].tolist() == pytest.approx([q for _, q, _ in sub_policy])


def test_autoaugment_draws_per_sample_as_torchvision_does():
    b = 40000
    (op1, mag1), (op2, mag2) = autoaugment_params(b, 64, 64, torch.Generator().manual_seed(0))
    table_op, table_prob, table_mag, _ = autoaugment_table("imagenet", 64, 64)
    # sub-policy 12 is (Equalize 0.0, Equalize 0.8): its first op never runs. Over the batch,
    # each pass applies its op with the policy's mean probability.
    assert (op1 != 0).float().mean() == pytest.approx(table_prob[:, 0].mean().item(), abs=0.01)
    assert (op2 != 0).float().mean() == pytest.approx(table_prob[:, 1].mean().item(), abs=0.01)
    rotate = torch.cat([mag1[op1 == ALL_OPS.index("Rotate")], mag2[op2 == ALL_OPS.index("Rotate")]])
    assert (rotate < 0).float().mean() == pytest.approx(0.5, abs=0.03)              # signed: ± with p ½
    assert set(rotate.abs().unique().tolist()) <= set(table_mag[table_op == ALL_OPS.index("Rotate")].tolist())
    solarize = mag1[op1 == ALL_OPS.index("Solarize")]
    assert (solarize >= 0).all() and len(solarize)                                  # unsigned
    assert ALL_OPS.index("Invert") in op1.tolist()                                  # Invert occurs


def test_autoaugment_applies_each_samples_two_ops_in_order():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (48, 3, 24, 24), generator=g, dtype=torch.uint8)
    images[:, :, 6:18, 4:20] = 180
    passes = autoaugment_params(48, 24, 24, torch.Generator().manual_seed(5))
    out = auto_augment(images, torch.Generator().manual_seed(5))
    for i in range(48):
        expected = images[i]
        for op, mag in passes:
            name = ALL_OPS[int(op[i])]
            expected = TF.invert(expected) if name == "Invert" else reference(expected, name, float(mag[i]))
        mismatch = (out[i].int() - expected.int()).abs()
        assert (mismatch > 1).float().mean() < 0.01, (i, [(ALL_OPS[int(o[i])], float(m[i])) for o, m in passes])
    distinct = {tuple(o.flatten()[:300].tolist()) for o in out}
    assert len(distinct) > 20 and out.dtype == torch.uint8


def test_both_pipelines_take_the_recipes_policy_interpolation():
    from torchvision import transforms as T

    from fgvcbench.data.classic import classic_transform
    from fgvcbench.engine.augment import BatchAugmenter
    from fgvcbench.engine.recipe import Recipe
    r = Recipe(image_size=24, augment="trivial_augment", policy_interpolation="bilinear")
    policies = [t for t in classic_transform(r, (0.5,) * 3, (0.5,) * 3, train=True).transforms
                if isinstance(t, T.TrivialAugmentWide)]
    assert len(policies) == 1 and policies[0].interpolation == T.InterpolationMode.BILINEAR
    images = torch.randint(0, 256, (32, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    outs = {}
    for mode in ("nearest", "bilinear"):
        aug = BatchAugmenter(r.replace(policy_interpolation=mode), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"),
                             torch.Generator().manual_seed(3))
        outs[mode] = aug.train(images)
    assert not torch.equal(outs["nearest"], outs["bilinear"])   # same draws, another resampling
    assert "must be one of nearest, bilinear" in dict(Recipe(policy_interpolation="cubic").validate())[
        "policy_interpolation"]


def _canvas_of(images: list[torch.Tensor], photo_sides=None) -> torch.Tensor:
    """A ``full`` canvas of uint8 images ``[3, H, W]`` with a common shorter side (each
    resized from a photo with shorter side ``photo_sides[i]``; default: unknown, 0)."""
    from fgvcbench.data.pipeline import canvas_row
    width = max(max(im.shape[-2:]) for im in images) + 2
    rows = []
    for i, im in enumerate(images):
        transposed = im.shape[-2] > im.shape[-1]
        stored = im.transpose(-2, -1) if transposed else im
        photo = photo_sides[i] if photo_sides else 0
        rows.append(torch.from_numpy(canvas_row(stored.numpy(), stored.shape[-1], transposed, width, photo)))
    return torch.stack(rows)


def _row_image(canvas: torch.Tensor, i: int) -> torch.Tensor:
    """Row ``i`` of a canvas as the image it holds, in its own orientation."""
    from fgvcbench.data.pipeline import canvas_layout
    extent, transposed = canvas_layout(canvas)
    image = canvas[i, :, :, :int(extent[i])]
    return image.transpose(-2, -1) if transposed[i] else image


@pytest.mark.parametrize("op", OPS)
def test_each_op_on_a_canvas_row_is_torchvisions_on_that_image_alone(op):
    """FineRNet's policy runs on whole images before the crop: on a ``full`` canvas each
    row — landscape, portrait (stored transposed), square — gets the op torchvision gives
    that image alone, at its own size, and the canvas keeps its layout."""
    g = torch.Generator().manual_seed(100 + OPS.index(op))
    shapes = [(20, 34), (34, 20), (20, 20), (20, 51), (46, 20), (20, 27)]       # (height, width)
    images = []
    for h, w in shapes:
        im = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        im[:, 5:12, 3:15] = 200                                                  # some structure
        images.append(im)
    canvas = _canvas_of(images)
    bins = _bins(op)
    levels = [0, 7, 15, 22, 30, 20]
    mags = torch.tensor([0.0 if bins is None else float(bins[lv]) for lv in levels])
    if op in SIGNED:
        mags[1::2] *= -1
    if op == "Rotate":   # torchvision's exact fast paths too: 0° and 180° any image, 270° a square one (a
        # right angle on an oblong image puts pixel centres on edges: float rounding picks, there and in torchvision)
        mags = torch.tensor([0.0, -45.2, 270.0, 31.5, 180.0, -121.5])
    out = apply_ops(canvas, torch.full((6,), OPS.index(op)), mags, canvas=True)
    assert torch.equal(out[:, :, 0, -1], canvas[:, :, 0, -1])                     # the layout kept
    from fgvcbench.data.pipeline import canvas_layout
    assert torch.equal(out[:, :, 1, -1], canvas[:, :, 1, -1])
    for i, extent in enumerate(canvas_layout(canvas)[0].tolist()):                # the new edge repeated past it
        edge = out[i, :, :, extent - 1:extent]
        assert torch.equal(out[i, :, :, extent:-1], edge.expand(-1, -1, out.shape[-1] - 1 - extent))
        assert torch.equal(out[i, :, 2:, -1:], edge[:, 2:])
    for i in range(6):
        expected = reference(images[i], op, float(mags[i]))
        got = _row_image(out, i)
        assert got.shape == expected.shape
        mismatch = (got.int() - expected.int()).abs()
        assert torch.equal(got, expected) if op != "Color" else mismatch.max() <= 1, \
            (op, shapes[i], float(mags[i]), (mismatch > 0).float().mean())


def test_a_translation_on_a_canvas_row_is_in_the_pixels_of_the_photo_it_was_resized_from():
    """FineRNet's code runs TrivialAugment on the photo: 32 px there is 16 px of a row
    stored at half the photo's size. Rotations and shears look the same at any scale."""
    g = torch.Generator().manual_seed(11)
    shapes = [(20, 34), (34, 20), (20, 27), (20, 20)]
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
    canvas = _canvas_of(images, photo_sides=[40, 80, 20, 60])       # stored at 1/2, 1/4, 1, 1/3 of the photo
    cases = [("TranslateX", 16.0, [8, 0]), ("TranslateY", -24.0, [0, -6]), ("TranslateX", -7.0, [-7, 0]),
             ("TranslateY", 30.0, [0, 10])]
    out = apply_ops(canvas, torch.tensor([OPS.index(op) for op, _, _ in cases]),
                    torch.tensor([m for _, m, _ in cases]), canvas=True)
    for i, (_, _, shift) in enumerate(cases):
        expected = TF.affine(images[i], angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
        assert torch.equal(_row_image(out, i), expected), (i, shift)
    turned = apply_ops(canvas, torch.full((4,), OPS.index("Rotate")), torch.tensor([31.5, -45.2, 12.0, 60.0]),
                       canvas=True)
    unknown = apply_ops(_canvas_of(images), torch.full((4,), OPS.index("Rotate")),
                        torch.tensor([31.5, -45.2, 12.0, 60.0]), canvas=True)
    assert torch.equal(turned[..., :-1], unknown[..., :-1])
    same = _canvas_of(images)   # a row that does not know its photo translates in its own pixels
    out = apply_ops(same, torch.full((1,), OPS.index("TranslateX")), torch.tensor([16.0]), canvas=True)
    assert torch.equal(_row_image(out, 0), TF.affine(images[0], angle=0.0, translate=[16, 0], scale=1.0,
                                                     shear=[0.0, 0.0]))


@pytest.mark.parametrize("op", ["ShearY", "TranslateX", "Rotate"])
def test_geometric_ops_on_a_canvas_resample_bilinearly_too(op):
    g = torch.Generator().manual_seed(7)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((20, 33), (41, 20))]
    canvas = _canvas_of(images)
    mags = torch.tensor({"ShearY": [0.4, -0.7], "TranslateX": [9.0, -14.0], "Rotate": [23.0, -61.5]}[op])
    out = apply_ops(canvas, torch.full((2,), OPS.index(op)), mags, interpolation="bilinear", canvas=True)
    bilinear = TF.InterpolationMode.BILINEAR
    for i, im in enumerate(images):
        m = float(mags[i])
        if op == "Rotate":
            expected = TF.rotate(im, angle=m, interpolation=bilinear)
        elif op == "ShearY":
            expected = TF.affine(im, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                                 interpolation=bilinear, center=[0, 0])
        else:
            expected = TF.affine(im, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0],
                                 interpolation=bilinear)
        mismatch = (_row_image(out, i).int() - expected.int()).abs()
        assert (mismatch > 1).float().mean() < 0.01, (op, m, (mismatch > 1).float().mean())


@pytest.mark.parametrize("op", ["Rotate", "TranslateX", "Contrast", "Equalize", "Sharpness"])
def test_a_plain_oblong_batch_is_not_taken_for_a_canvas(op):
    """Only a caller that says so gets the canvas reading: an oblong batch of ordinary
    images is augmented as it is (its last column is pixels, not a layout)."""
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (4, 3, 24, 32), generator=g, dtype=torch.uint8)
    mags = torch.tensor({"Rotate": [17.0, -40.5, 60.0, 3.0], "TranslateX": [5.0, -9.0, 13.0, 2.0]}.get(op, [0.3, -0.4,
                                                                                                             0.5, 0.1]))
    out = apply_ops(images, torch.full((4,), OPS.index(op)), mags)
    for i in range(4):
        mismatch = (out[i].int() - reference(images[i], op, float(mags[i])).int()).abs()
        assert (mismatch > 1).float().mean() < 0.01, (op, float(mags[i]))


def test_autoaugment_translations_on_a_canvas_row_are_a_share_of_its_photo_in_whole_photo_pixels():
    """AutoAugment translates by a share of the image's width or height: on a canvas row,
    of the photo it was resized from, truncated to whole photo pixels as torchvision's int()
    does, then scaled to the row — or, where the row does not know its photo, of the row."""
    g = torch.Generator().manual_seed(12)
    shapes = [(20, 34), (34, 20), (20, 27), (20, 20)]
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
    canvas = _canvas_of(images, photo_sides=[40, 80, 20, 60])       # photos 40×68, 136×80, 20×27, 60×60
    cases = [("TranslateX", 0.3, [10, 0]),     # 0.3 × 68 = 20.4 → 20 photo px → 10 row px
             ("TranslateY", 0.15, [0, 5]),     # 0.15 × 136 = 20.4 → 20 → 5
             ("TranslateX", -0.25, [-6, 0]),   # -0.25 × 27 = -6.75 → -6 (towards zero)
             ("TranslateY", -0.45, [0, -9])]   # -0.45 × 60 = -27 → -9
    ops = torch.tensor([OPS.index(op) for op, _, _ in cases])
    out = apply_ops(canvas, ops, torch.tensor([m for _, m, _ in cases]), canvas=True, relative=True)
    for i, (_, _, shift) in enumerate(cases):
        expected = TF.affine(images[i], angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
        assert torch.equal(_row_image(out, i), expected), (i, shift)
    unknown = apply_ops(_canvas_of(images[:1]), ops[:1], torch.tensor([0.3]), canvas=True, relative=True)
    assert torch.equal(_row_image(unknown, 0), TF.affine(images[0], angle=0.0, translate=[10, 0], scale=1.0,
                                                         shear=[0.0, 0.0]))   # 0.3 × 34 = 10.2 → 10
    with pytest.raises(ValueError, match="canvas rows"):
        apply_ops(torch.stack(images[3:]), ops[:1], torch.tensor([0.3]), relative=True)


@pytest.mark.parametrize("policy", ["imagenet", "svhn"])   # svhn's sub-policies translate, imagenet's do not
def test_autoaugment_on_a_canvas_of_square_images_is_autoaugment_on_the_squares(policy):
    """The same draws on a canvas whose rows hold the squares of a square batch give each
    square what the square batch gets: the per-row share of the size is the share torchvision
    takes of the whole image, and a nearest tie falls alike in both."""
    g = torch.Generator().manual_seed(4)
    squares = torch.randint(0, 256, (64, 3, 23, 23), generator=g, dtype=torch.uint8)
    squares[:, :, 4:12, 6:18] = 220
    from fgvcbench.data.pipeline import canvas_row
    rows = [torch.from_numpy(canvas_row(im.numpy(), 23, False, 30, 0)) for im in squares]
    canvas = torch.stack(rows)
    on_canvas = auto_augment(canvas, torch.Generator().manual_seed(9), policy, canvas=True)
    on_squares = auto_augment(squares, torch.Generator().manual_seed(9), policy)
    assert not torch.equal(on_squares, squares)
    for i in range(len(squares)):
        assert torch.equal(_row_image(on_canvas, i), on_squares[i]), i


def test_a_nearest_canvas_grid_worked_out_in_chunks_of_rows_is_the_grid_worked_out_at_once(monkeypatch):
    import fgvcbench.engine.batch_policies as policies
    g = torch.Generator().manual_seed(21)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
              for h, w in ((20, 34), (34, 20), (20, 27), (20, 20), (41, 20))]
    canvas = _canvas_of(images)
    ops, mags = torch.tensor([OPS.index(o) for o in ("ShearX", "Rotate", "ShearY", "Rotate", "TranslateY")]), \
        torch.tensor([0.3, -33.0, -0.2, 17.5, 9.0])
    whole = apply_ops(canvas, ops, mags, canvas=True)
    monkeypatch.setattr(policies, "GRID_CHUNK_PIXELS", 2 * canvas.shape[-2] * canvas.shape[-1])   # two rows a chunk
    assert torch.equal(apply_ops(canvas, ops, mags, canvas=True), whole)
    for i in range(len(images)):   # and each row is still torchvision's on its image alone
        assert torch.equal(_row_image(whole, i), reference(images[i], ALL_OPS[int(ops[i])], float(mags[i])))


@pytest.mark.parametrize("trial", range(9))
def test_nearest_shears_and_rotations_of_simple_magnitudes_fall_on_torchvisions_pixels(trial):
    """Shears of a tenth and rotations of 30° or 45° put source points on pixel edges; each
    such tie falls as in torchvision, on squares and on canvas rows alike."""
    g = torch.Generator().manual_seed(21 + trial)
    shapes = [(20, 34), (34, 20), (20, 27), (20, 20), (41, 20), (20, 20)]
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in shapes]
    names = ["ShearX", "Rotate", "ShearY", "Rotate", "ShearX", "ShearY"]
    mags = torch.tensor([0.3, -30.0, -0.2, 45.0, 0.1 * trial, -0.1 * (trial % 7)])
    ops = torch.tensor([OPS.index(o) for o in names])
    on_canvas = apply_ops(_canvas_of(images), ops, mags, canvas=True)
    on_squares = apply_ops(torch.stack([images[5]] * 6), ops, mags)
    for i in range(6):
        assert torch.equal(_row_image(on_canvas, i), reference(images[i], names[i], float(mags[i]))), (i, names[i])
        assert torch.equal(on_squares[i], reference(images[5], names[i], float(mags[i]))), (i, names[i])

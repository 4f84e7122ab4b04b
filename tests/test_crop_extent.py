"""The fast pipeline's ``full`` cache (``crop_extent: full``): each image whole on a canvas,
cropped within its own extent and orientation, as torchvision's RandomResizedCrop does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fgvcbench.data import pipeline as P
from fgvcbench.data.base import ImageList
from fgvcbench.engine import augment
from fgvcbench.engine.augment import BatchAugmenter, centre_squares, random_resized_crop_flip, sized_crop_boxes
from fgvcbench.engine.recipe import Recipe


def _images(tmp_path, sizes, seed=0, boxes=None) -> ImageList:
    """PNG files (lossless, no JPEG draft) of random pixels at ``sizes`` (width, height)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageList(paths, list(range(len(paths))), [str(i) for i in range(len(paths))], boxes=boxes)


def _resized(path: str, size: int) -> np.ndarray:
    """The image with its shorter side at ``size`` as the decode resizes it, ``[3, H, W]``."""
    with Image.open(path) as img:
        scale = size / min(img.size)
        new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
        return np.array(img.convert("RGB").resize(new, Image.BILINEAR, reducing_gap=2.0)).transpose(2, 0, 1)


def test_full_cache_keeps_each_image_whole_with_its_layout(tmp_path):
    images = _images(tmp_path, [(60, 40), (40, 60), (40, 40), (120, 24)])   # landscape, portrait, square, 5:1
    canvas = P.decode_images(images, 20, None)
    assert P.is_canvas(canvas) and canvas.shape == (4, 3, 20, 60 + 2)       # the widest kept: 3:1 (MAX_ASPECT)
    extent, transposed = P.canvas_layout(canvas)
    assert extent.tolist() == [30, 30, 20, 60] and transposed.tolist() == [False, True, False, False]
    landscape, portrait, square, long = (_resized(p, 20) for p in images.paths)
    assert torch.equal(canvas[0, :, :, :30], torch.from_numpy(landscape))
    assert torch.equal(canvas[1, :, :, :30], torch.from_numpy(portrait).transpose(1, 2))   # stored transposed
    assert torch.equal(canvas[2, :, :, :20], torch.from_numpy(square))
    assert torch.equal(canvas[3, :, :, :60], torch.from_numpy(long[:, :, 20:80]))         # its ends cut, centrally
    # past the extent, the edge repeats (a bilinear sample at the edge reads the edge)
    assert torch.equal(canvas[0, :, :, 30:61], canvas[0, :, :, 29:30].expand(3, 20, 31))
    # each image's centre square is the square cache's, so the test view is unchanged
    assert torch.equal(centre_squares(canvas), P.decode_images(images, 20, None, crop_extent="square"))


def test_a_list_of_square_images_keeps_the_square_layout(tmp_path):
    images = _images(tmp_path, [(32, 32), (50, 50)])
    full = P.decode_images(images, 16, None)
    assert full.shape == (2, 3, 16, 16) and not P.is_canvas(full)
    assert torch.equal(full, P.decode_images(images, 16, None, crop_extent="square"))


def test_full_cache_crops_to_boxes_and_reloads_from_disk(tmp_path):
    images = _images(tmp_path, [(80, 60), (80, 60)], boxes=[(10, 10, 40, 20), (0, 0, 30, 60)])
    cache = tmp_path / "cache"
    boxed = P.decode_images(images, 16, cache, use_boxes=True)
    assert P.canvas_layout(boxed)[0].tolist() == [32, 32] and P.canvas_layout(boxed)[1].tolist() == [False, True]
    assert torch.equal(P.decode_images(images, 16, cache, use_boxes=True), boxed)          # from the cache
    assert len(list((cache / "decoded").glob("*.pt"))) == 1
    square = P.decode_images(images, 16, cache, use_boxes=True, crop_extent="square")
    assert square.shape == (2, 3, 16, 16) and len(list((cache / "decoded").glob("*.pt"))) == 2   # its own key
    streamed = P.decode_images(images, 16, tmp_path / "mm", use_boxes=True, streamed=True)
    assert torch.equal(streamed, boxed)


def test_the_layout_carries_the_shorter_side_of_each_photo_in_its_own_pixels(tmp_path):
    """The policy before the crop translates in the photo's pixels (the code's transforms see
    the photo): each canvas row says how large the region it was resized from was — before
    a reduced-scale JPEG decode, after the box and the banner trim — and keeps saying it
    through the cache and the batched policy's ops."""
    images = _images(tmp_path, [(60, 40), (40, 90), (120, 24)])
    canvas = P.decode_images(images, 20, tmp_path / "cache")
    assert P.canvas_photo_side(canvas).tolist() == [40, 40, 24]
    assert P.canvas_photo_side(P.decode_images(images, 20, tmp_path / "cache")).tolist() == [40, 40, 24]  # reloaded
    boxed = ImageList(images.paths, images.labels, images.class_names, boxes=[(5, 5, 40, 30), (0, 10, 30, 70),
                                                                              (0, 0, 120, 24)])
    assert P.canvas_photo_side(P.decode_images(boxed, 20, None, use_boxes=True)).tolist() == [30, 30, 24]
    trimmed = ImageList(images.paths, images.labels, images.class_names, trim_bottom=12)
    assert P.canvas_photo_side(P.decode_images(trimmed, 20, None)).tolist() == [28, 40, 12]
    photo = tmp_path / "photo.jpg"   # a JPEG the decode drafts at a quarter of its size
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    with Image.open(photo) as img:
        img.draft("RGB", (20, 20))
        assert min(img.size) < 300   # the draft does reduce it
    jpeg = ImageList([str(photo), images.paths[1]], [0, 1], ["0", "1"])
    canvas = P.decode_images(jpeg, 20, None)
    assert P.canvas_photo_side(canvas).tolist() == [300, 40]
    from fgvcbench.engine.batch_policies import OPS, apply_ops
    for op in ("Brightness", "Rotate", "Equalize"):
        out = apply_ops(canvas, torch.full((2,), OPS.index(op)), torch.tensor([0.5, 30.0]), canvas=True)
        assert P.canvas_photo_side(out).tolist() == [300, 40] and torch.equal(
            P.canvas_layout(out)[0], P.canvas_layout(canvas)[0])


@pytest.mark.parametrize("size", [(60, 30), (30, 60)])
def test_the_crop_falls_back_as_torchvision_does_in_either_orientation(tmp_path, size):
    """scale (1, 1) on a 2:1 image never fits a ratio in [3/4, 4/3]: torchvision then takes
    the centred box of ratio 4/3 (3/4 for a portrait image) at full height (width)."""
    images = _images(tmp_path, [size, (20, 20)])
    canvas = P.decode_images(images, 20, None)
    out = random_resized_crop_flip(canvas.float(), 12, 1.0, flip=False, generator=torch.Generator().manual_seed(0))
    whole = torch.from_numpy(_resized(images.paths[0], 20)).float().unsqueeze(0)   # [1, 3, H, W]
    h, w = whole.shape[-2:]
    ch, cw = (20, round(20 * 4 / 3)) if w > h else (round(20 * 4 / 3), 20)
    top, left = (h - ch) // 2, (w - cw) // 2
    expected = F.interpolate(whole[..., top:top + ch, left:left + cw], size=(12, 12), mode="bilinear",
                             align_corners=False)
    assert torch.allclose(out[0:1], expected, atol=1e-3)
    square = torch.from_numpy(_resized(images.paths[1], 20)).float().unsqueeze(0)
    assert torch.allclose(out[1:2], F.interpolate(square, size=(12, 12), mode="bilinear", align_corners=False),
                          atol=1e-3)


def test_crops_are_drawn_per_sample_within_each_image_as_torchvision_draws_them():
    width, height = torch.tensor([400.0, 300.0]).repeat(2000), torch.tensor([200.0, 300.0]).repeat(2000)
    g = torch.Generator().manual_seed(1)
    w, h, found = sized_crop_boxes(width, height, 0.08, torch.rand(4000, 10, generator=g),
                                   torch.rand(4000, 10, generator=g))
    assert found.float().mean() > 0.95 and (w <= width).all() and (h <= height).all() and (w >= 1).all()
    assert len({(a, b) for a, b in zip(w.tolist(), h.tolist())}) > 1000          # per sample, not one box
    # torchvision's own draws on the same sizes: the area share and the ratio agree in distribution
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    for wid, hgt in ((400, 200), (300, 300)):
        boxes = [RandomResizedCrop.get_params(torch.empty(1, hgt, wid), [0.08, 1.0], [3 / 4, 4 / 3])
                 for _ in range(2000)]
        tv_area = np.mean([bh * bw / (wid * hgt) for _, _, bh, bw in boxes])
        tv_ratio = np.mean([math.log(bw / bh) for _, _, bh, bw in boxes])
        ours = width == wid
        assert abs((w[ours] * h[ours] / (wid * hgt)).mean().item() - tv_area) < 0.03
        assert abs(torch.log(w[ours] / h[ours]).mean().item() - tv_ratio) < 0.03


def test_rotation_blacks_out_only_what_it_uncovers(tmp_path):
    grey, wide = tmp_path / "grey.png", tmp_path / "wide.png"
    Image.fromarray(np.full((30, 40, 3), 200, dtype=np.uint8)).save(grey)      # 4:3, stored 27 of 40 columns
    Image.fromarray(np.full((30, 60, 3), 50, dtype=np.uint8)).save(wide)       # 2:1, sets the canvas's width
    images = ImageList([str(grey)] * 64 + [str(wide)], [0] * 65, ["a"])
    canvas = P.decode_images(images, 20, None)
    assert P.canvas_layout(canvas)[0][0] == 27 and canvas.shape[-1] == 42
    out = random_resized_crop_flip(canvas.float(), 16, 1.0, flip=True, generator=torch.Generator().manual_seed(0),
                                   rotation=90)[:64]
    centre = out[:, :, 6:10, 6:10]
    assert torch.allclose(centre, torch.full_like(centre, 200.0), atol=1e-3)   # the centre stays in the image
    black = (out[:, 0] < 100).float()
    share = black.flatten(1).mean(1)
    assert share.max() > 0.1 and share.min() < share.max()                   # corners uncovered, per angle
    # crop and image share their centre, so what is uncovered is symmetric about it: the side
    # past the stored extent (where the canvas repeats the image's edge) is black too
    assert (black - black.flip(-1, -2)).abs().mean() < 0.012   # 0.005 here; 0.025 with the edge left grey


@pytest.mark.parametrize("size", [21, 37])
def test_the_centre_square_is_the_square_caches_at_odd_sizes_and_past_3_to_1(tmp_path, size):
    """The kept part of an image longer than 3:1 is cut so that its centre square is the
    square cache's to the pixel, also where the two centrings round apart (odd sizes)."""
    images = _images(tmp_path, [(170, 40), (40, 170), (113, 37), (125, 41), (60, 40)])
    canvas = P.decode_images(images, size, None)
    assert P.canvas_layout(canvas)[0].max() == int(3 * size)
    assert torch.equal(centre_squares(canvas), P.decode_images(images, size, None, crop_extent="square"))


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_a_square_image_crops_alike_from_a_canvas_and_from_the_square_cache(tmp_path, rotation):
    """The same draws give the same crop, flip and rotation of a square image whether it sits
    in a canvas (beside a wider image) or in the square cache — the edge the rotation uncovers
    past its extent fading to black as the zero padding does past its other sides."""
    images = _images(tmp_path, [(40, 40), (40, 40), (80, 40)])
    canvas = P.decode_images(images, 20, None)
    square = P.decode_images(images, 20, None, crop_extent="square")
    assert P.is_canvas(canvas) and not P.is_canvas(square)
    outs = [random_resized_crop_flip(x.float(), 16, 0.3, flip=True, generator=torch.Generator().manual_seed(5),
                                     rotation=rotation)[:2] for x in (canvas, square)]
    assert torch.allclose(outs[0], outs[1], atol=0.05)


def test_the_augmenter_trains_and_tests_on_a_canvas_with_the_policy_before_or_after_the_crop(tmp_path):
    images = _images(tmp_path, [(60, 40), (40, 60), (44, 40)])
    canvas = P.decode_images(images, 18, None)
    aug = BatchAugmenter(Recipe(image_size=16, augment="trivial_augment", random_erasing=0.5), (0.5,) * 3,
                         (0.25,) * 3, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert aug.train(canvas).shape == (3, 3, 16, 16)
    square = P.decode_images(images, 18, None, crop_extent="square")
    assert torch.equal(aug.eval(canvas), aug.eval(square))                    # the same test view
    assert torch.equal(augment.test_view(canvas, 16), augment.test_view(square, 16))
    before = BatchAugmenter(Recipe(image_size=16, augment="trivial_augment", policy_before_crop=True),
                            (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert before.train(canvas).shape == before.train(square).shape == (3, 3, 16, 16)
    auto = BatchAugmenter(Recipe(image_size=16, augment="autoaugment", policy_before_crop=True),
                          (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert auto.train(canvas).shape == auto.train(square).shape == (3, 3, 16, 16)


def test_recipe_checks_crop_extent_and_hashes_it_only_where_it_acts():
    assert Recipe().crop_extent == "full" and Recipe().to_dict()["crop_extent"] == "full"
    # classic runs keep their ids; square is taken there (FineRNet sets it for its fast phases, and
    # its single_step variant takes pipeline: classic) and tells the run apart (a method's own loop
    # on the tensors, SimTrans's, follows it under classic too)
    assert "crop_extent" not in Recipe(pipeline="classic").to_dict()
    assert Recipe(**Recipe(pipeline="classic").to_dict()) == Recipe(pipeline="classic")
    classic_square = Recipe().override({"pipeline": "classic", "crop_extent": "square"})
    assert classic_square.to_dict()["crop_extent"] == "square" and Recipe(**classic_square.to_dict()) == classic_square
    assert Recipe().override({"augment": "autoaugment", "policy_before_crop": True}).crop_extent == "full"
    assert Recipe().override({"augment": "autoaugment", "policy_before_crop": True,
                              "crop_extent": "square"}).crop_extent == "square"
    assert Recipe().override({"augment": "trivial_augment", "policy_before_crop": True}).crop_extent == "full"
    with pytest.raises(ValueError, match="crop_extent must be one of full, square"):
        Recipe().override({"crop_extent": "centre"})


def _folder(root, classes=4, train=8, test=3, seed=0):
    """``root/train/<class>/*`` and ``root/test/<class>/*``: random non-square PNGs, both
    orientations, 3:2 to 2:1 (so every fast run below trains on a canvas)."""
    rng = np.random.default_rng(seed)
    shapes = [(48, 32), (32, 48), (64, 32), (40, 30)]
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = shapes[(i + c) % len(shapes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[:, :, c % 3] = 255 - 40 * c   # a class colour, so there is something to learn
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_every_method_trains_on_a_full_canvas(tmp_path, runner):
    import json
    from conftest import tiny_suite
    from fgvcbench.cli import app
    root = _folder(tmp_path / "folder")
    out = tmp_path / "out"
    suite = tiny_suite(tmp_path, scale=None, epochs=2, methods="""
          [finetune,
           {name: recipe, params: {steps: [base, trivial_augment, random_erasing]}},
           {name: metric_learning, params: {tsne: false}},
           {name: finernet, params: {phase3_batch: 8, phase3_epochs: 1}}]""",
                       datasets=f"[{{name: imagefolder, root: {root}}}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = {r["spec"]["method"]: r for r in map(json.loads, map(Path.read_text, (out / "runs").glob("*.json")))}
    assert set(records) == {"finetune", "recipe", "metric_learning", "finernet"}
    assert all(r["status"] == "ok" for r in records.values()), {m: r.get("error") for m, r in records.items()}
    assert {m: r["spec"]["recipe"].get("crop_extent") for m, r in records.items()} == {
        "finetune": "full", "recipe": "full", "metric_learning": "full", "finernet": "full"}
    # SimTrans's rotation on a canvas: a weak-shot view of the same folder
    (tmp_path / "w").mkdir()
    suite = tiny_suite(tmp_path / "w", scale=None, batch_size=8, methods="""
          [{name: simtrans, variants: [weights], params: {simnet_hidden: [32, 16, 16], images_per_batch: 8,
            pretrain_batch_size: 8, simnet_epochs: 1}}]""",
                       datasets=f"[{{name: weak_shot, root: {root}, options: {{of: imagefolder, novel: [c2, c3], "
                                f"noise_rate: 0.25}}}}]")
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "w" / "out" / "runs").glob("*.json")]
    assert record["status"] == "ok", record.get("error")
    assert record["spec"]["recipe"]["rotation_degrees"] > 0 and record["spec"]["recipe"]["crop_extent"] == "full"


def test_a_classic_suite_takes_a_square_cache_and_keeps_its_ids_without_one(tmp_path):
    """Under pipeline: classic, crop_extent: square loads (a method's own loop on the tensors
    follows it) and enters the run id; left out, the id is a classic run's of before."""
    from conftest import tiny_suite
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    suite = tiny_suite(tmp_path, methods="[{name: finernet, variants: [single_step]}]")
    (fast,) = load_suite(suite, get_registry()).runs
    assert fast.recipe["crop_extent"] == "full" and fast.recipe["policy_before_crop"] is True
    suite.write_text(suite.read_text().replace("batch_size: 8}", "batch_size: 8, pipeline: classic}"))
    (classic,) = load_suite(suite, get_registry()).runs
    assert classic.recipe["pipeline"] == "classic" and "crop_extent" not in classic.recipe
    suite.write_text(suite.read_text().replace("pipeline: classic}", "pipeline: classic, crop_extent: square}"))
    (square,) = load_suite(suite, get_registry()).runs
    assert square.recipe["crop_extent"] == "square" and square.run_id != classic.run_id


def test_autoaugment_before_the_crop_trains_on_a_full_canvas(tmp_path, runner):
    """FineRNet's code order with AutoAugment: the policy on each whole image of a ``full``
    cache (its translations a share of that image's size), then the crop."""
    from conftest import tiny_suite
    from fgvcbench.cli import app
    root = _folder(tmp_path / "folder", classes=2, train=4, test=2)
    suite = tiny_suite(tmp_path, datasets=f"[{{name: imagefolder, root: {root}}}]")
    suite.write_text(suite.read_text().replace("batch_size: 8}", "batch_size: 8, augment: autoaugment,\n"
                                                                "                policy_before_crop: true}"))
    result = runner.invoke(app, ["run", str(suite), "--no-progress"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert record["status"] == "ok", record.get("error")
    recipe = record["spec"]["recipe"]
    assert (recipe["augment"], recipe["policy_before_crop"], recipe["crop_extent"]) == ("autoaugment", True, "full")


def test_ablate_picks_one_of_two_folder_datasets_by_its_label(tmp_path, runner):
    """Two own datasets are both `imagefolder`: `ablate --dataset` takes the label the tables
    print (imagefolder@b), and the bare adapter name, which would pick one silently, is refused."""
    from conftest import tiny_suite

    from fgvcbench.cli import app
    for name in ("a", "b"):
        _folder(tmp_path / "data" / name, classes=2, train=4, test=2)
    suite = tiny_suite(tmp_path, datasets="[{name: imagefolder, root: a}, {name: imagefolder, root: b}]",
                       extra=f"data_root: {tmp_path / 'data'}",
                       methods="[{name: recipe, params: {steps: [base, cosine]}}]")
    said = runner.invoke(app, ["ablate", "--step", "cosine", "--suite", str(suite), "--dataset", "imagefolder"])
    assert said.exit_code == 2 and "names 2 datasets of the suite — give one of imagefolder@a, imagefolder@b" in \
        " ".join(said.output.split())
    said = runner.invoke(app, ["ablate", "--step", "cosine", "--suite", str(suite), "--dataset", "imagefolder@c"])
    assert said.exit_code == 2 and "it has imagefolder@a, imagefolder@b" in " ".join(said.output.split())
    done = runner.invoke(app, ["ablate", "--step", "cosine", "--suite", str(suite), "--dataset", "imagefolder@b",
                               "--seeds", "1", "--no-progress"])
    assert done.exit_code == 0, done.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert records and {r["spec"]["dataset"].get("root_name") for r in records} == {"b"}

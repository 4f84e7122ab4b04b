"""Atomic records; the decode cache; clear errors for unreadable images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fgvcbench.data.base import DatasetSplits, ImageList
from fgvcbench.data.pipeline import build_tensor_data, canvas_layout, decode_images, load_size_for
from fgvcbench.errors import DataError
from fgvcbench.spec import RunSpec
from fgvcbench.store import Store


SPEC = {"dataset": {"name": "d", "options": {}}, "backbone": {"name": "b", "pretrained": False}, "method": "m", "seed": 0}


def test_store_writes_atomically_and_skips_corrupt(tmp_path):
    store = Store(tmp_path)
    store.write({"run_id": "abc", "status": "ok", "spec": SPEC, "metrics": {"top1": 1.0}})
    store.write({"run_id": "def", "status": "failed", "spec": SPEC})
    (tmp_path / "runs" / "bad.json").write_text("{not json")
    (tmp_path / "runs" / "list.json").write_text("[1]")                    # JSON, but not a record
    (tmp_path / "runs" / "nospec.json").write_text('{"run_id": "nospec", "status": "ok"}')
    assert store.is_finished("abc") and not store.is_finished("def") and not store.is_finished("nope")
    assert sorted(r["run_id"] for r in store.records()) == ["abc", "def"]
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.suffix != ".json"] == []
    assert json.loads((tmp_path / "runs" / "abc.json").read_text())["metrics"]["top1"] == 1.0


def test_sweeps_remove_only_what_dead_writers_of_this_host_left(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from fgvcbench.store import Store, _host_tag, sweep_dead_temporaries, temp_suffix
    store = Store(tmp_path)
    store.runs_dir.mkdir(parents=True)
    (store.stage_dir() / "finernet").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    me, host = os.getpid(), _host_tag()
    files = {
        "runs/.a.json.{h}.{d}.k2j8x_q1.tmp": True,           # a dead writer here: swept
        "runs/.b.json.{h}.{me}.77777777.tmp": False,         # alive (this process), digits-only random part
        "runs/.c.json.other-node.{d}.k2j8x_q1.tmp": False,   # another node's, fresh: its pid says nothing here
        "runs/.d.json.{d}.k2j8x_q1.tmp": False,              # from before hosts were written: as a host's, when stale
        "stages/finernet/phase1.{h}.{d}.tmp": True,           # a stage result cut off by a kill
        "stages/finernet/phase3{suffix}": False,              # this process's, in progress
    }
    paths = {}
    for pattern, swept in files.items():
        path = tmp_path / pattern.format(h=host, d=dead, me=me, suffix=temp_suffix())
        path.write_text("x")
        paths[path] = swept
    assert store.sweep_temporary() == 2
    assert {p.name for p in paths if p.exists()} == {p.name for p, swept in paths.items() if not swept}
    old = [p for p in paths if "other-node" in p.name or p.name.startswith(".d.")]
    for p in old:
        os.utime(p, (time.time() - 3600, time.time() - 3600))   # an hour old: no write takes that long
    assert sweep_dead_temporaries(store.runs_dir, ".*.tmp", stale_seconds=600) == 2
    assert not any(p.exists() for p in old)


def test_a_host_named_by_digits_alone_is_not_read_as_a_pid(tmp_path, monkeypatch):
    # a container named 123456789012: its stage temporaries `x.123456789012.<pid>.tmp` were read as pid 123456789012
    import socket

    from fgvcbench.store import sweep_dead_temporaries, temp_suffix
    monkeypatch.setattr(socket, "gethostname", lambda: "123456789012")
    live = tmp_path / ("phase1" + temp_suffix())
    live.write_text("x")
    assert ".h123456789012." in live.name
    assert sweep_dead_temporaries(tmp_path) == 0 and live.exists()


def test_a_hand_edited_record_is_not_finished_and_the_run_is_redone(tmp_path):
    """Valid JSON that is not a usable record (not an object, no spec, an ok run without a
    numeric top-1, another run's id) neither crashes the runner nor counts as done."""
    store = Store(tmp_path)
    (tmp_path / "runs").mkdir()
    broken = {"list": [1], "text": "ok", "nospec": {"run_id": "nospec", "status": "ok", "metrics": {"top1": 50.0}},
              "notop1": {"run_id": "notop1", "status": "ok", "spec": SPEC, "metrics": {"top1": "high"}},
              "other": {"run_id": "someone", "status": "ok", "spec": SPEC, "metrics": {"top1": 50.0}}}
    for run_id, content in broken.items():
        (tmp_path / "runs" / f"{run_id}.json").write_text(json.dumps(content))
        assert not store.is_finished(run_id), run_id
    assert store.get("list") is None and store.get("nospec")["status"] == "ok"
    diverged = {"run_id": "nan", "status": "diverged", "spec": SPEC, "metrics": {}}
    store.write(diverged)
    assert store.is_finished("nan")   # a diverged run is finished without a top-1
    # the run redone: its new record takes the name, the unusable file is kept beside it, never read
    for run_id in ("text", "other"):
        store.write({"run_id": run_id, "status": "ok", "spec": SPEC, "metrics": {"top1": 60.0}})
        (kept,) = (tmp_path / "runs").glob(f"{run_id}.json.corrupt-*")
        assert json.loads(kept.read_text()) == broken[run_id] and store.is_finished(run_id)
    store.write({"run_id": "text", "status": "ok", "spec": SPEC, "metrics": {"top1": 61.0}})   # a usable one is replaced
    assert len(list((tmp_path / "runs").glob("text.json.corrupt-*"))) == 1
    assert "text" in {r["run_id"] for r in store.records()}


def strict_json(text: str):
    """``text`` parsed as strict JSON: NaN and Infinity, which Python writes and jq refuses, fail."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_records_are_strict_json_a_number_that_is_not_finite_is_null(tmp_path):
    store = Store(tmp_path)
    nan, inf = float("nan"), float("inf")
    store.write({"run_id": "d", "status": "diverged", "spec": SPEC, "metrics": {"top1": nan, "loss": -inf},
                 "history": [{"epoch": 0, "loss": nan}, {"epoch": 1, "loss": np.float32(inf)}],
                 "notes": {"scores": torch.tensor([1.0, nan]), "gap": np.float64(nan), "fine": 2.5}})
    record = strict_json(store.record_path("d").read_text())
    assert record["metrics"] == {"top1": None, "loss": None}
    assert record["history"] == [{"epoch": 0, "loss": None}, {"epoch": 1, "loss": None}]
    assert record["notes"] == {"scores": [1.0, None], "gap": None, "fine": 2.5}
    assert store.is_finished("d")


def test_run_id_hashes_what_matters_only():
    spec = RunSpec(suite="a", dataset={"name": "d", "options": {}}, backbone={"name": "b", "pretrained": False},
                   method="m", variant="default", seed=0, scale="smoke", params={"x": 1}, recipe={"lr": 0.1},
                   data_root="/here")
    same = RunSpec(**{**spec.to_dict(), "suite": "other", "data_root": "/there"})
    assert spec.run_id == same.run_id and len(spec.run_id) == 12
    for change in ({"seed": 1}, {"params": {"x": 2}}, {"recipe": {"lr": 0.2}}, {"variant": "v"},
                   {"backbone": {"name": "b", "pretrained": True}}):
        assert RunSpec(**{**spec.to_dict(), **change}).run_id != spec.run_id


def make_images(tmp_path, n=4, size=(60, 40)):
    paths = []
    for i in range(n):
        arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        arr[:, : size[0] // 2] = (255, 0, 0)      # left half red, right half blue
        arr[:, size[0] // 2:] = (0, 0, 255)
        path = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def test_decode_resizes_crops_boxes_and_caches(tmp_path):
    paths = make_images(tmp_path)
    images = ImageList(paths, [0, 1, 0, 1], ["a", "b"], boxes=[(0, 0, 20, 40)] * 4)
    out = decode_images(images, 16, tmp_path / "cache", crop_extent="square")
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.uint8
    assert out[0, 0, :, 0].float().mean() > 200 and out[0, 2, :, -1].float().mean() > 200  # red | blue
    boxed = decode_images(images, 16, tmp_path / "cache", use_boxes=True, crop_extent="square")
    assert boxed[:, 0].float().mean() > 250 and boxed[:, 2].float().mean() < 5           # only the red half
    # the default keeps each 3:2 image whole: 24 columns at 16 rows, red from the first, blue to the last
    full = decode_images(images, 16, tmp_path / "cache")
    assert full.shape == (4, 3, 16, 24 + 2) and canvas_layout(full)[0].tolist() == [24] * 4
    assert (full[:, 0, :, :11] == 255).all() and (full[:, 2, :, 13:24] == 255).all()
    boxed_full = decode_images(images, 16, tmp_path / "cache", use_boxes=True)
    assert canvas_layout(boxed_full)[1].all() and (boxed_full[:, 0, :, :32] == 255).all()   # 1:2, transposed
    cached = list((tmp_path / "cache" / "decoded").glob("*.pt"))
    assert len(cached) == 4
    # a cache hit returns identical tensors without touching the images
    assert torch.equal(decode_images(images, 16, tmp_path / "cache", crop_extent="square"), out)
    assert torch.equal(decode_images(images, 16, tmp_path / "cache"), full)


def test_unreadable_and_missing_images_name_the_path(tmp_path):
    paths = make_images(tmp_path, n=2)
    (tmp_path / "0.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="0.png"):
        decode_images(ImageList(paths, [0, 1], ["a", "b"]), 16, None)
    with pytest.raises(DataError, match="missing.png"):
        decode_images(ImageList([str(tmp_path / "missing.png")], [0], ["a"]), 16, None)


def test_build_tensor_data_carves_validation_from_train(tmp_path):
    paths = make_images(tmp_path, n=8)
    train = ImageList(paths[:6], [0, 0, 0, 1, 1, 1], ["a", "b"])
    test = ImageList(paths[6:], [0, 1], ["a", "b"])
    data = build_tensor_data(DatasetSplits(train, test), 16, tmp_path / "c", val_fraction=0.34)
    assert len(data.train) + len(data.val) == 6 and len(data.val) == 2 and len(data.test) == 2
    assert sorted(data.val.labels.tolist()) == [0, 1]
    assert not set(data.train.index) & set(data.val.index)
    assert data.train.images.shape[-2] == load_size_for(16) and data.num_classes == 2

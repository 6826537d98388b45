from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from torchgeo_dic3l.models import (
    create_backbone,
    extract_backbone,
    resnet_taps,
    tap_channels,
)


@pytest.mark.parametrize(
    ("name", "channels"), [("resnet18", (256, 512)), ("resnet50", (1024, 2048))]
)
def test_taps_shapes_and_channels(name: str, channels: tuple[int, int]) -> None:
    backbone = create_backbone(name, in_channels=2)
    assert tap_channels(backbone) == channels
    layer3, layer4 = resnet_taps(backbone, torch.randn(2, 2, 64, 64))
    assert layer3.shape == (2, channels[0], 4, 4)
    assert layer4.shape == (2, channels[1], 2, 2)
    assert layer4.dtype == torch.float32


def test_taps_agree_with_timm_forward() -> None:
    backbone = create_backbone("resnet18", in_channels=1).eval()
    x = torch.randn(1, 1, 64, 64)
    _, layer4 = resnet_taps(backbone, x)
    assert torch.allclose(layer4.mean(dim=(2, 3)), backbone(x), atol=1e-6)


def test_non_resnet_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs a timm ResNet"):
        create_backbone("vit_tiny_patch16_224", in_channels=2)


def _fake_checkpoint(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    backbone = create_backbone("resnet18", in_channels=2)
    state = {f"{prefix}{k}": v for k, v in backbone.state_dict().items()}
    state["projection_head.0.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "hyper_parameters": {"model": "resnet18"}}, path)
    return backbone.state_dict()


@pytest.mark.parametrize("prefix", ["model.", "backbone."])
def test_extract_backbone_loads_strictly_into_timm_and_smp(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "run.ckpt"
    expected = _fake_checkpoint(path, prefix)
    state = extract_backbone(path)
    assert state.keys() == expected.keys()
    timm.create_model("resnet18", in_chans=2, num_classes=0).load_state_dict(state, strict=True)
    encoder = smp.Unet("resnet18", encoder_weights=None, in_channels=2).encoder
    encoder.load_state_dict(state, strict=True)
    assert torch.equal(encoder.conv1.weight, expected["conv1.weight"])


def test_create_backbone_from_checkpoint_path(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    expected = _fake_checkpoint(path, "model.")
    backbone = create_backbone("resnet18", in_channels=2, weights=str(path))
    assert torch.equal(backbone.conv1.weight, expected["conv1.weight"])


def test_extract_backbone_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        extract_backbone(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.ckpt: not a loadable"):
        extract_backbone(garbage)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match=r"other\.ckpt: the checkpoint's state_dict has no key"):
        extract_backbone(other)

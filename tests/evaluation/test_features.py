import pytest
import timm
import torch
from torch import nn
from torchgeo.tasks import BYOL, MoCo, SimCLR

from torchgeo_dic3l.evaluation import input_channels, ssl_backbone, stage_features
from torchgeo_dic3l.models import create_backbone, resnet_taps
from torchgeo_dic3l.tasks import DI3CLTask


def test_ssl_backbone_of_each_task() -> None:
    di3cl = DI3CLTask(model="resnet18", size=128, memory_bank_size=16, hidden_dim=16, output_dim=8)
    assert ssl_backbone(di3cl) is di3cl.model
    moco = MoCo(
        model="resnet18",
        in_channels=2,
        version=2,
        layers=2,
        hidden_dim=16,
        output_dim=8,
        memory_bank_size=16,
        size=32,
        schedule=[],
    )
    assert ssl_backbone(moco) is moco.backbone
    simclr = SimCLR(
        model="resnet18", in_channels=2, layers=3, hidden_dim=16, output_dim=8, size=32
    )
    assert ssl_backbone(simclr) is simclr.backbone
    byol = BYOL(model="resnet18", in_channels=2)
    backbone = ssl_backbone(byol)
    # The online network's timm model, not the target copy.
    assert backbone is byol.model.backbone.model
    assert backbone is not byol.model.target.model
    for module in (di3cl, moco, simclr, byol):
        assert isinstance(ssl_backbone(module), timm.models.ResNet)


def test_ssl_backbone_names_an_unknown_class() -> None:
    with pytest.raises(TypeError, match="no known backbone in a Linear"):
        ssl_backbone(nn.Linear(2, 2))


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_stage_features_of_a_resnet(channels: int) -> None:
    backbone = create_backbone("resnet18", channels).eval()
    images = torch.randn(2, channels, 64, 96)
    with torch.no_grad():
        stages = stage_features(backbone, images)
        layer3, layer4 = resnet_taps(backbone, images)
    assert [s.shape for s in stages] == [
        (2, 64, 16, 24),
        (2, 128, 8, 12),
        (2, 256, 4, 6),
        (2, 512, 2, 3),
    ]
    # The same layer3 and layer4 as the task's own taps.
    assert torch.equal(stages[2], layer3) and torch.equal(stages[3], layer4)
    assert input_channels(backbone) == channels


def test_input_channels_of_a_deep_stem_resnet() -> None:
    assert input_channels(timm.create_model("resnet18d", in_chans=3, num_classes=0)) == 3


@pytest.mark.parametrize("channels", [1, 2])
def test_stage_features_of_a_vision_transformer(channels: int) -> None:
    vit = timm.create_model(
        "vit_tiny_patch16_224", in_chans=channels, img_size=32, dynamic_img_size=True
    ).eval()
    images = torch.randn(2, channels, 48, 64)  # not the model's size: dynamic
    with torch.no_grad():
        stages = stage_features(vit, images)
        tokens = vit.forward_features(images)[:, vit.num_prefix_tokens :]
    assert [s.shape for s in stages] == [(2, 192, 3, 4)] * 4
    # The deepest map is the last block's patch tokens, laid out row by row.
    deepest = stages[-1].flatten(2).transpose(1, 2)
    torch.testing.assert_close(vit.norm(deepest), tokens)
    assert not torch.equal(stages[0], stages[-1])
    assert input_channels(vit) == channels


def test_stage_features_refuses_other_backbones() -> None:
    with pytest.raises(TypeError, match="needs a timm ResNet or VisionTransformer, got a Conv2d"):
        stage_features(nn.Conv2d(2, 2, 1), torch.randn(1, 2, 8, 8))
    with pytest.raises(TypeError, match="got a Conv2d"):
        input_channels(nn.Conv2d(2, 2, 1))

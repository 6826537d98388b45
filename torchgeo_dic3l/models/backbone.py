"""ResNet backbones with layer3 / layer4 taps, built with timm."""

import os
from pathlib import Path
from typing import Any, cast

import timm
from timm.models import ResNet
from torch import Tensor, nn
from torchgeo.models import get_weight
from torchgeo.tasks import utils as tg_utils
from torchvision.models._api import WeightsEnum

from .checkpoint import extract_backbone
from .weights import HASHED_NAME, load_weights

#: Stride of a ResNet's layer4 relative to its input: one layer4 cell is 32 x 32 pixels.
LAYER4_STRIDE = 32


def create_backbone(
    model: str, in_channels: int, weights: WeightsEnum | str | bool | None = None
) -> ResNet:
    """Create a timm ResNet without classifier and load initial weights.

    Args:
        model: timm model name, any ResNet (``resnet18``, ``resnet50``, ``resnet101``, ...).
        in_channels: Number of input channels (1 for single polarization, 2 for VV + VH).
        weights: None or False for random weights; True for ImageNet weights (timm
            adapts the first convolution to ``in_channels``); a ``WeightsEnum``; the
            name of a weight known to this package or to TorchGeo; or the path of a
            Lightning checkpoint, a state dict, or an exported ``<name>-<sha8>.pth``
            weights file (its hash is verified).

    Returns:
        The backbone, whose ``forward`` returns pooled layer4 features.

    Raises:
        ValueError: If ``model`` is not a timm ResNet.
    """
    backbone = timm.create_model(
        model, in_chans=in_channels, num_classes=0, pretrained=weights is True
    )
    if not isinstance(backbone, ResNet):
        raise ValueError(
            f"model={model!r} is a {type(backbone).__name__}; DI3CL needs a timm ResNet "
            "(resnet18, resnet50, resnet101, ...) for its layer3 and layer4 taps"
        )
    if weights and weights is not True:
        tg_utils.load_state_dict(backbone, _resolve_state_dict(weights))
    return backbone


def _resolve_state_dict(weights: WeightsEnum | str) -> dict[str, Tensor]:
    if isinstance(weights, WeightsEnum):
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    if os.path.exists(weights):
        path = Path(weights)
        return load_weights(path) if HASHED_NAME.search(path.name) else extract_backbone(path)
    return get_weight(weights).get_state_dict(progress=True, check_hash=True, weights_only=True)


#: ResNet stages up to layer3, in order.
_STAGES_TO_LAYER3 = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3")


def resnet_taps(backbone: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Run a ResNet and return its layer3 and layer4 feature maps.

    Args:
        backbone: timm ResNet (or its momentum copy).
        images: ``[B, C, H, W]`` input.

    Returns:
        layer3 (stride 16) and layer4 (stride 32) feature maps.
    """
    layer3 = images
    for name in _STAGES_TO_LAYER3:
        layer3 = _stage(backbone, name)(layer3)
    return layer3, _stage(backbone, "layer4")(layer3)


def _stage(backbone: nn.Module, name: str) -> nn.Module:
    return cast(nn.Module, getattr(backbone, name))


def tap_channels(backbone: ResNet) -> tuple[int, int]:
    """Channel counts of the layer3 and layer4 taps.

    Args:
        backbone: timm ResNet.

    Returns:
        ``(layer3_channels, layer4_channels)``, e.g. (1024, 2048) for ResNet-50.
    """
    entries = cast(list[dict[str, Any]], backbone.feature_info)
    info = {str(entry["module"]): int(entry["num_chs"]) for entry in entries}
    return info["layer3"], info["layer4"]


def global_pool(features: Tensor) -> Tensor:
    """Global average pooling of a ``[B, C, h, w]`` map to ``[B, C]``.

    Args:
        features: Feature map.

    Returns:
        Pooled features.
    """
    return features.mean(dim=(2, 3))

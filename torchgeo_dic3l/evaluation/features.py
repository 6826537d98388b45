"""Backbones of self-supervised tasks and their multi-scale feature maps."""

from typing import cast

from timm.models import ResNet, VisionTransformer
from torch import Tensor, nn
from torchgeo.tasks import BYOL, MoCo, SimCLR

from ..tasks import DI3CLTask

#: ``feature_info`` indices of a timm ResNet's layer1 .. layer4 (index 0 is the stem).
RESNET_STAGES = (1, 2, 3, 4)


def ssl_backbone(module: nn.Module) -> nn.Module:
    """The backbone that a self-supervised task trains.

    Args:
        module: A :class:`~torchgeo_dic3l.tasks.DI3CLTask` (``.model``), or TorchGeo's
            ``MoCo`` or ``SimCLR`` (``.backbone``) or ``BYOL`` (the timm model inside
            its online network, ``.model.backbone.model``).

    Returns:
        The backbone: the query / online encoder, not a momentum or target copy.

    Raises:
        TypeError: For any other module.
    """
    if isinstance(module, DI3CLTask):
        return cast(nn.Module, module.model)
    if isinstance(module, MoCo | SimCLR):
        return cast(nn.Module, module.backbone)
    if isinstance(module, BYOL):
        return cast(nn.Module, module.model.backbone.model)
    raise TypeError(
        f"no known backbone in a {type(module).__name__}; supported tasks are DI3CLTask "
        "and TorchGeo's MoCo, SimCLR and BYOL"
    )


def stage_features(backbone: nn.Module, images: Tensor) -> list[Tensor]:
    """Feature maps of the four stages of a timm ResNet.

    Runs timm's ``forward_intermediates`` up to layer4 (no pooling, so hooks on the
    pooling layer, such as BYOL's, do not fire). Gradients and the train/eval mode
    are the caller's business.

    Args:
        backbone: timm ResNet, for any number of input channels.
        images: ``[B, C, H, W]`` input, C the channels of the first convolution.

    Returns:
        layer1 .. layer4 maps, strides 4, 8, 16 and 32.

    Raises:
        NotImplementedError: For a timm Vision Transformer (not supported yet).
        TypeError: For any other module.
    """
    if isinstance(backbone, VisionTransformer):
        raise NotImplementedError(
            "stage_features does not support Vision Transformers yet: they have no "
            "multi-scale stages; use a timm ResNet backbone"
        )
    if not isinstance(backbone, ResNet):
        raise TypeError(f"stage_features needs a timm ResNet, got a {type(backbone).__name__}")
    return cast(
        list[Tensor],
        backbone.forward_intermediates(
            images, indices=list(RESNET_STAGES), intermediates_only=True
        ),
    )


def input_channels(backbone: nn.Module) -> int:
    """Number of input channels of a timm ResNet's first convolution.

    Args:
        backbone: timm ResNet.

    Returns:
        ``in_channels`` of ``conv1`` (of its first layer for deep-stem variants).

    Raises:
        TypeError: If the backbone is not a timm ResNet.
    """
    if not isinstance(backbone, ResNet):
        raise TypeError(f"input_channels needs a timm ResNet, got a {type(backbone).__name__}")
    first = next(m for m in backbone.conv1.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)

"""Backbones of self-supervised tasks and their multi-scale feature maps."""

from typing import cast

from timm.models import ResNet, VisionTransformer
from torch import Tensor, nn
from torchgeo.tasks import BYOL, MAE, MoCo, SimCLR

from ..tasks import DI3CLTask

#: ``feature_info`` indices of a timm ResNet's layer1 .. layer4 (index 0 is the stem).
RESNET_STAGES = (1, 2, 3, 4)


def ssl_backbone(module: nn.Module) -> nn.Module:
    """The backbone that a self-supervised task trains.

    Args:
        module: A :class:`~torchgeo_dic3l.tasks.DI3CLTask` (``.model``), TorchGeo's
            ``MoCo`` or ``SimCLR`` (``.backbone``) or ``BYOL`` (the timm model inside
            its online network, ``.model.backbone.model``), or TorchGeo's ``MAE`` and
            :class:`~torchgeo_dic3l.tasks.SARMAETask` (the ViT inside the masked
            encoder, ``.backbone.vit``).

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
    if isinstance(module, MAE):
        return cast(nn.Module, module.backbone.vit)
    raise TypeError(
        f"no known backbone in a {type(module).__name__}; supported tasks are DI3CLTask, "
        "SARMAETask and TorchGeo's MoCo, SimCLR, BYOL and MAE"
    )


def stage_features(backbone: nn.Module, images: Tensor) -> list[Tensor]:
    """Four feature maps of a timm ResNet or Vision Transformer.

    For a ResNet, layer1 .. layer4 (strides 4, 8, 16 and 32), from timm's
    ``forward_intermediates`` (no pooling, so hooks on the pooling layer, such as
    BYOL's, do not fire). For a ViT, the patch tokens of four evenly spaced blocks
    (the last of each quarter of its depth, as ViTDet and UPerNet heads read them),
    as maps at the patch stride; the input size may differ from the model's if it was
    built with ``dynamic_img_size``. Gradients and the train/eval mode are the
    caller's business.

    Args:
        backbone: timm ResNet or VisionTransformer, for any number of input channels.
        images: ``[B, C, H, W]`` input, C the channels of the first convolution.

    Returns:
        Four ``[B, D_i, H_i, W_i]`` maps, shallow to deep.

    Raises:
        TypeError: For any other module.
    """
    if isinstance(backbone, VisionTransformer):
        depth = len(backbone.blocks)
        blocks = sorted({max(depth * quarter // 4 - 1, 0) for quarter in (1, 2, 3, 4)})
        return cast(
            list[Tensor],
            backbone.forward_intermediates(
                images, indices=blocks, output_fmt="NCHW", intermediates_only=True
            ),
        )
    if not isinstance(backbone, ResNet):
        raise TypeError(
            f"stage_features needs a timm ResNet or VisionTransformer, got a "
            f"{type(backbone).__name__}"
        )
    return cast(
        list[Tensor],
        backbone.forward_intermediates(
            images, indices=list(RESNET_STAGES), intermediates_only=True
        ),
    )


def input_channels(backbone: nn.Module) -> int:
    """Number of input channels of a timm ResNet or Vision Transformer.

    Args:
        backbone: timm ResNet or VisionTransformer.

    Returns:
        ``in_channels`` of the first convolution (of its first layer for deep-stem
        ResNets; the patch embedding of a ViT).

    Raises:
        TypeError: If the backbone is neither.
    """
    if isinstance(backbone, VisionTransformer):
        return int(backbone.patch_embed.proj.in_channels)
    if not isinstance(backbone, ResNet):
        raise TypeError(
            f"input_channels needs a timm ResNet or VisionTransformer, got a "
            f"{type(backbone).__name__}"
        )
    first = next(m for m in backbone.conv1.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)

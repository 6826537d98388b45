"""ResNet backbones with layer3 / layer4 taps, built with timm."""

import os
from typing import Any, cast

import timm
from timm.layers import resample_abs_pos_embed
from timm.models import ResNet, VisionTransformer, adapt_input_conv
from torch import Tensor, nn
from torchgeo.models import get_weight
from torchvision.models._api import WeightsEnum

from .checkpoint import FIRST_LAYER_KEYS, read_backbone_file, weights_source_kind

#: Stride of a ResNet's layer4 relative to its input: one layer4 cell is 32 x 32 pixels.
LAYER4_STRIDE = 32


def create_backbone(
    model: str,
    in_channels: int,
    weights: WeightsEnum | str | bool | None = None,
    adapt_channels: bool = False,
) -> ResNet:
    """Create a timm ResNet without classifier and load initial weights.

    Args:
        model: timm model name, any ResNet (``resnet18``, ``resnet50``, ``resnet101``, ...).
        in_channels: Number of input channels (1 for single polarization, 2 for VV + VH).
        weights: None or False for random weights; True for ImageNet weights (timm
            adapts the first convolution to ``in_channels``); a ``WeightsEnum``; the
            name of a weight known to this package or to TorchGeo; or the path of a
            Lightning checkpoint, a state dict, or an exported ``<name>-<sha8>.pth``
            weights file (its hash is verified; other files load with an
            :class:`~torchgeo_dic3l.models.weights.UnverifiedWeightsWarning`).
            Keys must match the backbone's exactly (a classifier ``fc.`` is dropped).
        adapt_channels: Adapt the first convolution of weights made for another
            number of input channels (timm's ``adapt_input_conv``) instead of
            refusing them.

    Returns:
        The backbone, whose ``forward`` returns pooled layer4 features.

    Raises:
        ValueError: If ``model`` is not a timm ResNet, or the weights do not fit it.
        FileNotFoundError: If ``weights`` names a file that does not exist.
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
        state_dict = fit_state_dict(
            backbone, _resolve_state_dict(weights), f"weights={weights!s}", adapt_channels
        )
        backbone.load_state_dict(state_dict)
    return backbone


def _resolve_state_dict(weights: WeightsEnum | str) -> dict[str, Tensor]:
    if isinstance(weights, WeightsEnum):
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    if weights_source_kind(weights) == "path":
        if not os.path.exists(weights):
            raise FileNotFoundError(f"weights={weights}: the file does not exist")
        return read_backbone_file(weights)[0]
    try:
        weight = get_weight(weights)
    except ValueError as error:
        raise ValueError(
            f"weights={weights}: neither an existing file nor a weight name known to "
            "TorchGeo or this package"
        ) from error
    return weight.get_state_dict(progress=True, check_hash=True, weights_only=True)


def fit_state_dict(
    module: nn.Module, state_dict: dict[str, Tensor], origin: str, adapt_channels: bool = False
) -> dict[str, Tensor]:
    """Check that backbone weights fit a module exactly; drop a classifier.

    A ViT's absolute position embedding is resampled to the module's patch grid when
    the two differ (weights pre-trained at 128 px fine-tuned on 64 px patches), as
    timm does when it loads pre-trained weights at another image size; every other
    tensor must match.

    Args:
        module: The ResNet (timm backbone or smp encoder) or timm VisionTransformer to
            load into.
        state_dict: The weights, keyed as in timm / torchvision ResNets or timm ViTs.
        origin: What the weights are, for messages.
        adapt_channels: Adapt the first layer (``conv1.weight`` or
            ``patch_embed.proj.weight``) to the module's input channels (timm's
            ``adapt_input_conv``) instead of refusing other channel counts.

    Returns:
        The weights to pass to ``module.load_state_dict`` (strict).

    Raises:
        ValueError: If the keys carry a prefix, the input channels differ (and
            ``adapt_channels`` is off), or keys are missing, unexpected or of
            another shape.
    """
    own = module.state_dict()
    # The family's timm / torchvision classifier; the backbones here have none.
    classifier = "head." if isinstance(module, VisionTransformer) else "fc."
    state = {k: v for k, v in state_dict.items() if not k.startswith(classifier) or k in own}
    _check_prefix(own, state, origin)
    for key in FIRST_LAYER_KEYS:
        if key in own and key in state:
            state[key] = _input_conv(key, state[key], own[key].shape[1], origin, adapt_channels)
    if isinstance(module, VisionTransformer) and "pos_embed" in state:
        state["pos_embed"] = _position_embedding(module, state["pos_embed"])
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{origin}: the weights do not fit the {type(module).__name__} encoder "
            f"({len(missing)} missing key(s) e.g. {missing[:3]}, {len(unexpected)} "
            f"unexpected e.g. {unexpected[:3]}, {len(mismatched)} with another shape e.g. "
            f"{mismatched[:3]}); was it trained with another backbone?"
        )
    return state


def _position_embedding(vit: VisionTransformer, embedding: Tensor) -> Tensor:
    """A ViT position embedding resampled (bicubic) to the patch grid of ``vit``."""
    target = vit.pos_embed
    if target is None or embedding.shape == target.shape:
        return embedding
    prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    return resample_abs_pos_embed(
        embedding, new_size=list(vit.patch_embed.grid_size), num_prefix_tokens=prefix
    )


def _check_prefix(own: dict[str, Tensor], state: dict[str, Tensor], origin: str) -> None:
    """Refuse keys that are the module's own under a common prefix, naming it."""
    first = next(iter(own))
    if first in state:
        return
    for key in state:
        prefix = key.removesuffix(first)
        if key.endswith("." + first) and all(prefix + k in state for k in own):
            raise ValueError(
                f"{origin}: the keys carry the prefix {prefix!r} ({key!r} for {first!r}); "
                "strip it, or give the Lightning checkpoint they come from, whose "
                "backbone is found by its prefix"
            )


def _input_conv(key: str, weight: Tensor, channels: int, origin: str, adapt: bool) -> Tensor:
    """The first layer's weights for ``channels`` inputs, adapted only if asked."""
    if weight.shape[1] == channels:
        return weight
    if not adapt:
        raise ValueError(
            f"{origin}: {key} takes {weight.shape[1]} input channel(s) but the "
            f"backbone has in_channels={channels}; use weights made for {channels} "
            "channel(s), or set adapt_channels=True to adapt the first layer"
        )
    return adapt_input_conv(channels, weight)


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

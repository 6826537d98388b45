"""A linear segmentation probe on frozen multi-scale features.

The probe is one linear map from the concatenation of a backbone's stage features,
upsampled to the label resolution, to class logits: the standard linear-evaluation
protocol for dense tasks. :class:`MultiScaleLinearHead` computes it stage by stage at
each stage's own resolution, :func:`fit_linear_head` fits it with cross-entropy on
cached features and :func:`predict_linear_head` applies it.
"""

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

#: Pixels drawn per image and step by :func:`fit_linear_head` (with replacement).
PIXELS_PER_IMAGE = 512

#: Lower bound of a feature channel's standard deviation: a constant channel (a dead
#: ReLU, say) is then standardized to 0 instead of dividing by 0.
MIN_STD = 1e-6


class _StageHead(nn.Module):
    """Standardization and 1x1 convolution of one stage."""

    mean: Tensor
    std: Tensor

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        # skip_init builds the layer without drawing its random initial values, so
        # creating a head leaves the global RNG alone; zeros start the (convex)
        # logistic regression at the uniform prediction.
        self.conv = nn.utils.skip_init(nn.Conv2d, channels, num_classes, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def forward(self, features: Tensor) -> Tensor:
        # W ((x - mean) / std) + b with the standardization folded into the weights:
        # one pass over the features instead of two.
        weight = self.conv.weight / self.std[None, :, None, None]
        bias = self.conv.bias - weight.flatten(1) @ self.mean
        return F.conv2d(features.to(weight.dtype), weight, bias)


class MultiScaleLinearHead(nn.Module):
    """Linear classifier over standardized, upsampled multi-scale features.

    Each stage ``s`` is standardized per channel with buffers ``mean``/``std`` (set by
    :func:`fit_linear_head` from the training features), mapped to class logits by its
    own 1x1 convolution at its native resolution, and bilinearly upsampled
    (``align_corners=False``) to the output size; the stage logits are summed.

    Bilinear upsampling and a 1x1 convolution are both linear maps, the first acting on
    the pixels of each channel and the second on the channels of each pixel, so they
    commute: ``conv(up(x)) == up(conv(x))``, where the bias survives because the
    bilinear weights of a pixel sum to one. Summing the stages is therefore exactly one
    1x1 convolution over the concatenation of all upsampled, standardized stages (its
    weight the stages' weights side by side, its bias the sum of their biases), while
    only the ``K``-channel logits are ever held at full resolution instead of the
    ``sum(C_s)``-channel concatenation: 6 instead of 960 channels for a ResNet-18 and
    six classes.

    The convolutions start at zero (uniform prediction).
    """

    def __init__(self, stage_channels: Sequence[int], num_classes: int) -> None:
        """Initialize the head.

        Args:
            stage_channels: Channels of each stage, e.g. ``(64, 128, 256, 512)``.
            num_classes: Number of classes K.

        Raises:
            ValueError: If there is no stage, a channel count is not positive or
                ``num_classes < 2``.
        """
        super().__init__()
        if not stage_channels or min(stage_channels) < 1:
            raise ValueError(f"stage_channels must be positive counts, got {stage_channels}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.stages = nn.ModuleList(_StageHead(c, num_classes) for c in stage_channels)

    def stage_logits(self, stages: Sequence[Tensor]) -> list[Tensor]:
        """Logits of each stage at its native resolution.

        Args:
            stages: Stage features, stage ``s`` ``[B, C_s, h_s, w_s]``.

        Returns:
            ``[B, K, h_s, w_s]`` per stage.

        Raises:
            ValueError: If the number of stages or their channels do not match.
        """
        heads = self.stage_heads()
        if len(stages) != len(heads):
            raise ValueError(f"the head has {len(heads)} stages, got {len(stages)}")
        for index, (features, head) in enumerate(zip(stages, heads, strict=True)):
            channels = head.mean.numel()
            if features.ndim != 4 or features.shape[1] != channels:
                raise ValueError(
                    f"stage {index} needs [B, {channels}, h, w] features, "
                    f"got {tuple(features.shape)}"
                )
        return [head(features) for features, head in zip(stages, heads, strict=True)]

    def stage_heads(self) -> list["_StageHead"]:
        """The per-stage modules, each with buffers ``mean``, ``std`` and a ``conv``.

        Returns:
            One module per stage, in stage order.
        """
        return [cast(_StageHead, module) for module in self.stages]

    def forward(self, stages: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """Class logits at ``size``.

        Args:
            stages: Stage features, stage ``s`` ``[B, C_s, h_s, w_s]``.
            size: Output ``(H, W)``.

        Returns:
            ``[B, K, H, W]`` logits.
        """
        logits = [
            F.interpolate(stage, size=size, mode="bilinear", align_corners=False)
            for stage in self.stage_logits(stages)
        ]
        return torch.stack(logits).sum(0)

    def sample(
        self, stages: Sequence[Tensor], rows: Tensor, cols: Tensor, size: tuple[int, int]
    ) -> Tensor:
        """Logits of :meth:`forward` at some pixels only, without the full-size maps.

        Each stage's logits are read at the source coordinates of bilinear upsampling
        with ``align_corners=False``, ``(i + 0.5) * h / H - 0.5`` clamped to the map, from
        the four neighbouring cells: the same arithmetic as ``F.interpolate``, for a cost
        that grows with the number of pixels rather than with the image size.

        Args:
            stages: Stage features, stage ``s`` ``[B, C_s, h_s, w_s]``.
            rows: ``[B, P]`` int64 pixel rows in ``[0, H)``.
            cols: ``[B, P]`` int64 pixel columns in ``[0, W)``.
            size: The ``(H, W)`` of :meth:`forward`.

        Returns:
            ``[B, K, P]`` logits, equal to ``forward(stages, size)`` at those pixels.
        """
        sampled = []
        for logits in self.stage_logits(stages):
            height, width = logits.shape[-2:]
            top, bottom, down = _neighbours(rows, height, size[0])
            left, right, across = _neighbours(cols, width, size[1])
            flat = logits.flatten(2)
            upper = torch.lerp(
                _cells(flat, top, left, width), _cells(flat, top, right, width), across[:, None]
            )
            lower = torch.lerp(
                _cells(flat, bottom, left, width),
                _cells(flat, bottom, right, width),
                across[:, None],
            )
            sampled.append(torch.lerp(upper, lower, down[:, None]))
        return torch.stack(sampled).sum(0)


def _cells(flat: Tensor, rows: Tensor, cols: Tensor, width: int) -> Tensor:
    """Gather ``[B, K, P]`` values of ``[B, K, h * w]`` maps at ``[B, P]`` cells."""
    index = (rows * width + cols)[:, None].expand(-1, flat.shape[1], -1)
    return flat.gather(2, index)


def _neighbours(index: Tensor, source: int, target: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear source cells of output positions along one axis (``align_corners=False``).

    Args:
        index: Output positions in ``[0, target)``.
        source: Length of the axis of the map that is read.
        target: Length of the axis after upsampling.

    Returns:
        The lower and upper neighbouring cells and the weight of the upper one.
    """
    position = ((index + 0.5) * (source / target) - 0.5).clamp_min(0)
    lower = position.long().clamp_max(source - 1)
    upper = (lower + 1).clamp_max(source - 1)
    return lower, upper, position - lower


def _check_inputs(
    stages: Sequence[Tensor], masks: Tensor, num_classes: int, ignore_index: int | None
) -> None:
    """Validate the arguments of :func:`fit_linear_head`.

    Raises:
        ValueError: If shapes disagree, a mask value is neither a class nor
            ``ignore_index``, or no pixel is labelled.
    """
    if not stages:
        raise ValueError("fit_linear_head needs at least one stage of features")
    if masks.ndim != 3 or masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise ValueError(
            f"masks must be integer [N, H, W] class maps, got {masks.dtype} {tuple(masks.shape)}"
        )
    for index, stage in enumerate(stages):
        if stage.ndim != 4 or stage.shape[0] != masks.shape[0]:
            raise ValueError(
                f"stage {index} has shape {tuple(stage.shape)}; expected "
                f"[N={masks.shape[0]}, C, h, w] like the masks {tuple(masks.shape)}"
            )
    values = masks[masks != ignore_index] if ignore_index is not None else masks.flatten()
    if values.numel() == 0:
        raise ValueError(
            f"the masks hold no labelled pixel (every pixel is ignore_index={ignore_index})"
        )
    if values.min() < 0 or values.max() >= num_classes:
        raise ValueError(
            f"mask values must be class indices in [0, {num_classes}) or "
            f"ignore_index={ignore_index}; found values from {int(values.min())} to "
            f"{int(values.max())}"
        )


def fit_linear_head(
    stages: Sequence[Tensor],
    masks: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    steps: int = 300,
    lr: float = 0.03,
    batch_size: int = 16,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> MultiScaleLinearHead:
    """Fit a :class:`MultiScaleLinearHead` to cached frozen features.

    The head's standardization is set to the per-channel mean and standard deviation
    of each stage over the given (training) features. Each step draws ``batch_size``
    images and :data:`PIXELS_PER_IMAGE` pixels of each (uniformly, with replacement)
    and minimizes the plain, unweighted cross-entropy of the labelled ones, evaluated
    only at those pixels (:meth:`MultiScaleLinearHead.sample`), so a step never builds
    full-size logit maps. Plain rather than class-balanced cross-entropy: the probe
    tracks how a representation improves during pre-training, and class weights
    estimated from a few patches would add noise of their own; rare classes still
    count fully in the mIoU it is scored with.

    AdamW with a cosine decay of ``lr`` to zero: on standardized inputs all weights
    live on the same scale, where Adam's per-parameter step size needs no tuning per
    backbone, and the decay lets the last iterate settle despite the mini-batch noise.

    Everything runs on the features' device and draws from its own
    ``torch.Generator`` seeded with ``seed``: the global random state is neither used
    nor changed, and a fit is reproducible.

    Args:
        stages: Frozen features, stage ``s`` ``[N, C_s, h_s, w_s]``, all on one device.
        masks: ``[N, H, W]`` integer targets (class indices or ``ignore_index``).
        num_classes: Number of classes K.
        ignore_index: Target value of unlabelled pixels, or None.
        steps: Optimizer steps.
        lr: Peak learning rate of AdamW.
        batch_size: Images per step (at most N).
        weight_decay: Decoupled weight decay of AdamW.
        seed: Seed of the image and pixel draws.

    Returns:
        The fitted head, on the features' device.

    Raises:
        ValueError: If shapes disagree, a mask value is neither a class index nor
            ``ignore_index``, the masks hold no labelled pixel, or ``steps`` or
            ``batch_size`` is not positive.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    _check_inputs(stages, masks, num_classes, ignore_index)
    device = stages[0].device
    masks = masks.to(device=device, dtype=torch.int64)
    head = MultiScaleLinearHead([stage.shape[1] for stage in stages], num_classes).to(device)
    with torch.no_grad():
        for stage, stage_head in zip(stages, head.stage_heads(), strict=True):
            std, mean = torch.std_mean(stage.float(), dim=(0, 2, 3))
            stage_head.mean.copy_(mean)
            stage_head.std.copy_(std.clamp_min(MIN_STD))

    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    count, height, width = masks.shape
    batch = min(batch_size, count)
    pixels = min(PIXELS_PER_IMAGE, height * width)
    # Targets outside the classes are rejected above, so -1 can stand for "ignored".
    targets = masks if ignore_index is None else masks.masked_fill(masks == ignore_index, -1)
    for _ in range(steps):
        images = torch.randperm(count, generator=generator, device=device)[:batch]
        rows = torch.randint(height, (batch, pixels), generator=generator, device=device)
        cols = torch.randint(width, (batch, pixels), generator=generator, device=device)
        target = targets[images[:, None], rows, cols]
        logits = head.sample([stage[images] for stage in stages], rows, cols, (height, width))
        # Sum over the labelled draws / their count: a batch whose draws are all
        # unlabelled then gives a zero loss instead of the NaN of an empty mean.
        losses = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum")
        loss = losses / (target >= 0).sum().clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return head


@torch.no_grad()
def predict_linear_head(
    head: MultiScaleLinearHead,
    stages: Sequence[Tensor],
    size: tuple[int, int],
    batch_size: int = 16,
) -> Tensor:
    """Predicted classes of a fitted head.

    Args:
        head: The head, on the features' device.
        stages: Features, stage ``s`` ``[N, C_s, h_s, w_s]``.
        size: Output ``(H, W)``, the size of the masks.
        batch_size: Images per forward pass (bounds the ``[B, K, H, W]`` logits).

    Returns:
        ``[N, H, W]`` int64 class indices, on the features' device.
    """
    count = stages[0].shape[0]
    predictions = [
        head([stage[start : start + batch_size] for stage in stages], size).argmax(1)
        for start in range(0, count, batch_size)
    ]
    return torch.cat(predictions)

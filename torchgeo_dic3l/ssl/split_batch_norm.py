"""Split batch norm: the key encoder's remedy for the BN leak on a single device.

MoCo's key encoder must not see the statistics of the batch the query encoder
normalized with, or the two can agree through BN alone (MoCo, Section 3.3). Under
DDP, shuffling the batch across ranks separates them. In one process there is no
other rank, so the key batch is permuted at random and split into groups, each
normalized with its own statistics, as in the MoCo authors' single-GPU recipe.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics come from ``splits`` groups of the batch.

    Sample ``n`` belongs to group ``n mod splits``; shuffle the batch beforehand so
    that the groups are random. The state dict is that of a ``BatchNorm2d``; the
    running statistics are updated with the mean of the groups' statistics. In eval
    mode, or with ``splits == 1``, it is exactly ``BatchNorm2d``.
    """

    def __init__(self, num_features: int, splits: int = 1, **kwargs: object) -> None:
        """Initialize the layer.

        Args:
            num_features: Channels ``C``.
            splits: Groups of the batch with their own statistics in training.
            **kwargs: Further ``BatchNorm2d`` arguments (eps, momentum, ...).
        """
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.splits = splits

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``[N, C, H, W]`` features, each group with its own statistics.

        Args:
            input: Features; ``N`` must be a multiple of ``splits`` in training.

        Returns:
            Normalized features of the same shape.

        Raises:
            ValueError: If the batch does not split into equal groups.
        """
        splits = self.splits
        if not self.training or splits == 1:
            return super().forward(input)
        batch, channels = input.shape[:2]
        if batch % splits:
            raise ValueError(
                f"SplitBatchNorm2d: a batch of {batch} does not split into {splits} equal groups"
            )
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        # [N, C] -> [N / G, G * C]: channel g * C + c holds channel c of the samples of group g.
        grouped = input.reshape(batch // splits, splits * channels, *input.shape[2:])
        tracking = self.running_mean is not None and self.running_var is not None
        mean = self.running_mean.repeat(splits) if tracking else None  # type: ignore[union-attr]
        var = self.running_var.repeat(splits) if tracking else None  # type: ignore[union-attr]
        output = F.batch_norm(
            grouped,
            mean,
            var,
            None if self.weight is None else self.weight.repeat(splits),
            None if self.bias is None else self.bias.repeat(splits),
            True,
            factor,
            self.eps,
        )
        if mean is not None and var is not None:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(splits, channels).mean(0))  # type: ignore[union-attr]
                self.running_var.copy_(var.view(splits, channels).mean(0))  # type: ignore[union-attr]
        return output.reshape(input.shape)


def split_batch_norms(module: nn.Module) -> list[SplitBatchNorm2d]:
    """Replace every ``BatchNorm2d`` of a module, in place, by a ``SplitBatchNorm2d``.

    Parameters, buffers and ``requires_grad`` are copied into the new layers, which
    keep the module names, so state dicts and the order of parameters (momentum
    updates) are unchanged.

    Args:
        module: A network, e.g. the momentum encoder.

    Returns:
        The split layers, whose ``splits`` the caller sets per batch.
    """
    replaced: list[SplitBatchNorm2d] = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            split.to(device=child.weight.device if child.affine else None)
            split.load_state_dict(child.state_dict())
            split.train(child.training)
            split.requires_grad_(any(p.requires_grad for p in child.parameters()))
            setattr(module, name, split)
            replaced.append(split)
        else:
            replaced.extend(split_batch_norms(child))
    return replaced


def largest_split(batch: int, splits: int, min_group: int = 2) -> int:
    """The most equal groups, at most ``splits``, of at least ``min_group`` samples each.

    A group of one sample has no batch statistics worth the name (and none at all at
    a 1 x 1 layer4), so groups keep at least ``min_group`` samples.

    Args:
        batch: Batch size.
        splits: Largest number of groups wanted.
        min_group: Fewest samples per group.

    Returns:
        A divisor ``g`` of ``batch`` in ``[1, splits]`` with ``batch / g >= min_group``,
        or 1 if there is none.
    """
    fitting = [g for g in range(1, splits + 1) if batch % g == 0 and batch // g >= min_group]
    return max(fitting, default=1)

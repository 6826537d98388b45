"""Exponential moving average (momentum) encoders."""

import copy
import math

import torch
from torch import Tensor, nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """Return a frozen deep copy of ``module`` to serve as its momentum (key) twin.

    The copy starts from the module's current weights, including any loaded
    pre-trained weights, and never receives gradients.

    Args:
        module: Online module.

    Returns:
        The frozen copy.
    """
    twin = copy.deepcopy(module)
    for parameter in twin.parameters():
        parameter.requires_grad_(False)
    return twin


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """Move ``target`` towards ``online``: ``t = m * t + (1 - m) * o`` for every parameter.

    Buffers (BN running statistics) are left alone: the momentum twin runs in
    training mode and tracks its own, as in MoCo. Uses fused ``_foreach`` kernels.

    Args:
        online: Module trained by gradient descent.
        target: Momentum twin with the same structure.
        momentum: EMA coefficient m in [0, 1].
    """
    target_params: list[Tensor] = [p.data for p in target.parameters()]
    online_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's momentum schedule: rises from ``base`` to 1 along a half cosine.

    Args:
        base: Momentum at step 0.
        step: Current optimization step.
        total_steps: Steps at which the momentum reaches 1.

    Returns:
        The momentum for this step.
    """
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0

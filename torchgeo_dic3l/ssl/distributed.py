"""Key gathering under DDP, a no-op in a single process.

The batch shuffle across ranks is lightly's ``batch_shuffle_distributed``.
"""

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a default process group with more than one rank is active.

    Returns:
        True under multi-process data parallelism.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def gather_keys(keys: Tensor) -> Tensor:
    """Concatenate ``keys`` from all ranks in rank order (no gradient).

    Every rank then enqueues the same keys, so queues stay identical across ranks
    without broadcasting them.

    Args:
        keys: ``[N, D]`` keys of this rank.

    Returns:
        ``[world_size * N, D]`` keys, or ``keys`` itself in a single process.
    """
    if not is_distributed():
        return keys
    return torch.cat(_all_gather(keys))


def _all_gather(tensor: Tensor) -> list[Tensor]:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered

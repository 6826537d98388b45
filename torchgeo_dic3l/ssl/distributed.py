"""Collectives for contrastive learning under DDP; no-ops in a single process."""

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


@torch.no_grad()
def shuffle_across_ranks(images: Tensor) -> tuple[Tensor, Tensor]:
    """Batch-shuffle BN: give each rank a random slice of the global batch.

    The key encoder's BN then normalizes each sample with statistics of other
    samples than the query encoder saw, which stops the model from cheating
    through BN statistics (MoCo, Section 3.3). The permutation is drawn on rank 0
    and broadcast.

    Args:
        images: ``[N, ...]`` local batch (N equal on every rank).

    Returns:
        The shuffled local batch and the inverse permutation of the global batch
        to pass to :func:`unshuffle_across_ranks`. In a single process the batch is
        returned unchanged with an identity permutation.
    """
    if not is_distributed():
        return images, torch.arange(images.shape[0], device=images.device)
    world = dist.get_world_size()
    everything = torch.cat(_all_gather(images))
    permutation = torch.randperm(everything.shape[0], device=images.device)
    dist.broadcast(permutation, src=0)
    local = permutation.view(world, -1)[dist.get_rank()]
    return everything[local], torch.argsort(permutation)


@torch.no_grad()
def unshuffle_across_ranks(features: Tensor, inverse: Tensor) -> Tensor:
    """Undo :func:`shuffle_across_ranks` on the key encoder's outputs.

    Args:
        features: ``[N, ...]`` outputs for the shuffled local batch.
        inverse: Inverse permutation returned by :func:`shuffle_across_ranks`.

    Returns:
        Outputs in the original order of this rank's batch.
    """
    if not is_distributed():
        return features
    world = dist.get_world_size()
    everything = torch.cat(_all_gather(features))
    return everything[inverse.view(world, -1)[dist.get_rank()]]


def _all_gather(tensor: Tensor) -> list[Tensor]:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered

"""A fixed-size FIFO of contrastive keys that lives in the checkpoint."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KeyQueue(nn.Module):
    """Ring buffer of L2-normalized keys used as InfoNCE negatives (MoCo's memory bank).

    Keys and the write pointer are registered buffers, so they are saved in and
    restored from Lightning checkpoints: a resumed run continues with the same
    negatives. Enqueueing wraps around the end instead of dropping the overflow,
    and the pointer stays on the device so that no host synchronization is needed.
    """

    keys: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        """Initialize the queue with random unit vectors.

        Args:
            size: Number of keys held (K).
            dim: Dimension of each key.

        Raises:
            ValueError: If ``size`` or ``dim`` is not positive.
        """
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got {size} and {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of keys held."""
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` at the pointer, wrapping around, and advance the pointer.

        If more keys than the queue size arrive at once, only the last ``size`` are
        kept, exactly as if they had been enqueued one after another.

        Args:
            keys: ``[N, dim]`` tensor of (normalized) keys.

        Raises:
            ValueError: If the key dimension does not match the queue.
        """
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(
                f"expected keys of shape [N, {self.keys.shape[1]}], got {tuple(keys.shape)}"
            )
        count = keys.shape[0]
        if count > self.size:
            keys = keys[-self.size :]
            start = self.ptr + (count - self.size)
        else:
            start = self.ptr
        index = (start + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.keys.index_copy_(0, index, keys.detach().to(self.keys.dtype))
        self.ptr.copy_((self.ptr + count) % self.size)

"""Random-number states in checkpoints, so that a resumed fit draws what the uninterrupted one did.

Lightning checkpoints hold weights, optimizer and loop state but not the torch, CUDA,
numpy and Python generators, so a resumed run would draw other views, boxes and
shuffles than the run it continues. :class:`RandomStateCheckpointing` adds them to any
LightningModule through its checkpoint hooks.
"""

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn


def rng_states() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python random-number states, as plain data.

    numpy's key array is stored as a tensor, so that the checkpoint still loads with
    ``torch.load(weights_only=True)``.

    Returns:
        The states, for :func:`restore_rng_states`.
    """
    name, key, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the random-number states saved by :func:`rng_states`.

    CUDA states are set only if as many devices are visible as were saved.

    Args:
        states: The saved states.
    """
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, key, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class RandomStateCheckpointing(LightningModule):
    """Mixin: store the random-number states in checkpoints and restore them on resume.

    Put it before the task's base class (``class Task(RandomStateCheckpointing,
    BaseTask)``); a subclass overriding one of the hooks below calls ``super()``.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the random-number states, which Lightning leaves out of checkpoints.

        Args:
            checkpoint: The checkpoint being written.
        """
        checkpoint["rng_states"] = rng_states()
        loop = self.trainer.fit_loop.epoch_loop
        checkpoint["rng_mid_epoch"] = (
            0 < loop.batch_progress.current.ready < self.trainer.num_training_batches
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random-number states when a fit resumes from ``checkpoint``.

        They are set at once, so that a new epoch's loader draws its order as the
        uninterrupted run did; after a checkpoint written inside an epoch, again at
        the first batch, because the resumed run's fresh loader iterator has drawn
        from them meanwhile. Loading a checkpoint outside a fit leaves them alone.

        Args:
            checkpoint: The checkpoint being read.
        """
        states = checkpoint.get("rng_states")
        if states is None or self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        restore_rng_states(states)
        if checkpoint.get("rng_mid_epoch"):
            self._resumed_rng_states = states

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Set the random-number states of a mid-epoch checkpoint before its next batch.

        Args:
            batch: The batch.
            batch_idx: Index of the batch.
        """
        states = getattr(self, "_resumed_rng_states", None)
        if states is not None:
            restore_rng_states(states)
            self._resumed_rng_states = None

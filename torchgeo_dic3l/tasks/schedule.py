"""The learning-rate schedule of this package's tasks: linear warm-up, cosine decay, per step."""

import math

from lightly.utils.scheduler import CosineWarmupScheduler
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.types import LRSchedulerConfigType
from torch.optim import Optimizer


def warmup_cosine_schedule(
    optimizer: Optimizer, trainer: Trainer, warmup_epochs: float
) -> LRSchedulerConfigType:
    """Warm up linearly for ``warmup_epochs``, then decay to 0 by the run's last step.

    Stepped every batch over ``trainer.estimated_stepping_batches``, so that runs
    bounded by ``max_steps`` (``max_epochs=-1``) follow the same curve as runs bounded
    by epochs; the warm-up is counted in batches of one epoch, so that it lasts the
    epochs asked, not a share of the run. (TorchGeo's ``MAE`` steps its schedule per
    epoch over ``max_epochs``, which leaves the learning rate at its warm-up start when
    ``max_epochs=-1``.)

    Args:
        optimizer: The task's optimizer.
        trainer: The trainer fitting the task.
        warmup_epochs: Warm-up length in epochs (fractions allowed).

    Returns:
        Lightning's ``lr_scheduler`` configuration (per-step interval).

    Raises:
        ValueError: If the run has no finite length (neither ``max_steps`` nor
            ``max_epochs``), which the cosine decay needs.
    """
    estimate = float(trainer.estimated_stepping_batches)
    if not math.isfinite(estimate):
        raise ValueError(
            "the warm-up + cosine schedule needs a finite run: set trainer.max_steps or "
            "trainer.max_epochs (max_time alone does not give the decay its length)"
        )
    total = max(int(estimate), 1)
    if trainer.train_dataloader is None:  # max_epochs=-1 skips this in the estimate
        trainer.fit_loop.setup_data()
    batches = float(trainer.num_training_batches)
    if math.isfinite(batches):
        per_epoch = batches / trainer.accumulate_grad_batches
    else:  # an iterable dataset without a length: spread over max_epochs
        per_epoch = total / max(trainer.max_epochs or 1, 1)
    warmup = min(int(warmup_epochs * max(math.ceil(per_epoch), 1)), total)
    scheduler = CosineWarmupScheduler(optimizer, warmup, total, end_value=0.0)
    return {"scheduler": scheduler, "interval": "step"}

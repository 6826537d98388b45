"""Figures of what a masked autoencoder reconstructs, written while it pre-trains."""

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor

from ..datasets.utils import sar_display
from ..tasks import SARMAETask

#: Rows of the figure, from :meth:`SARMAETask.reconstruct`, and their titles.
PANELS = (
    ("clean", "clean"),
    ("input", "encoder input"),
    ("masked", "visible"),
    ("reconstruction", "reconstruction"),
)


def reconstruction_figure(clean: Tensor, panels: dict[str, Tensor]) -> Figure:
    """One column per image: clean, encoder input, visible patches, reconstruction.

    Each panel is drawn by :func:`~torchgeo_dic3l.datasets.utils.sar_display` (its own
    2-98 % stretch; hidden patches, NaN, do not move it).

    Args:
        clean: ``[B, C, H, W]`` images.
        panels: :meth:`SARMAETask.reconstruct` of them.

    Returns:
        The figure.
    """
    images = {"clean": clean, **panels}
    count = clean.shape[0]
    figure, axes = plt.subplots(
        len(PANELS), count, figsize=(2.2 * count, 2.2 * len(PANELS)), squeeze=False
    )
    for column in range(count):
        for row, (key, title) in enumerate(PANELS):
            picture, _ = sar_display(images[key][column].float().cpu())
            axis = axes[row][column]
            axis.imshow(picture)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(title)
    figure.tight_layout()
    return figure


class ReconstructionFigure(Callback):
    """Draw a SARMAE / MAE reconstruction of a few validation images every few epochs.

    The figure (:func:`reconstruction_figure`) goes to ``<log_dir>/reconstructions/
    epoch<NNN>.png`` beside the CSV logs and, with a TensorBoard logger, to its images.
    The images are the first ``count`` of the first validation batch (or of the first
    training batch without a validation loader), cropped to the model's size.
    """

    def __init__(self, every_n_epochs: int = 1, count: int = 4) -> None:
        """Initialize the callback.

        Args:
            every_n_epochs: Draw after every this many training epochs.
            count: Images per figure.

        Raises:
            ValueError: If a count is not positive.
        """
        if every_n_epochs < 1 or count < 1:
            raise ValueError(
                f"ReconstructionFigure: every_n_epochs and count must be positive, got "
                f"{every_n_epochs} and {count}"
            )
        self.every_n_epochs = every_n_epochs
        self.count = count
        self.images: Tensor | None = None
        self._from_validation = False

    def on_train_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: dict[str, Tensor],
        batch_idx: int,
    ) -> None:
        """Keep the first training batch's images, in case there is no validation."""
        if self.images is None:
            self.images = batch["image"][: self.count].detach().clone()

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Prefer validation images: they are the same at every epoch."""
        if batch_idx == 0 and not self._from_validation:
            self.images = batch["image"][: self.count].detach().clone()
            self._from_validation = True

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw and write the figure on the scheduled epochs.

        Raises:
            TypeError: If the task is not a :class:`SARMAETask`.
        """
        if not isinstance(pl_module, SARMAETask):
            raise TypeError(
                f"ReconstructionFigure needs a SARMAETask, got {type(pl_module).__name__}"
            )
        if self.images is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        size = int(pl_module.hparams["size"])
        clean = self.images[..., :size, :size].to(pl_module.device).float()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        was_training = pl_module.training
        pl_module.eval()
        # A forked generator: the run draws its masks and noise as if nothing happened.
        with torch.random.fork_rng(devices=devices):
            figure = reconstruction_figure(clean, pl_module.reconstruct(clean))
        pl_module.train(was_training)
        if trainer.is_global_zero:
            folder = Path(trainer.log_dir or trainer.default_root_dir) / "reconstructions"
            folder.mkdir(parents=True, exist_ok=True)
            figure.savefig(folder / f"epoch{trainer.current_epoch:03d}.png", dpi=80)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure("reconstruction", figure, trainer.global_step)
        plt.close(figure)

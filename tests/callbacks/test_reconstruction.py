from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from torchgeo_dic3l.callbacks import ReconstructionFigure
from torchgeo_dic3l.tasks import SARMAETask

pytestmark = pytest.mark.filterwarnings("ignore:MAEDecoderTIMM is deprecated")


class _Images(Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        self.images = torch.rand(8, 2, 40, 40, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


def _fit(tmp_path: Path, callbacks: list[ReconstructionFigure]) -> SARMAETask:
    seed_everything(0)
    task = SARMAETask(
        model="vit_tiny_patch16_224",
        size=32,
        decoder_dim=32,
        decoder_num_heads=2,
        warmup_epochs=1,
        sare_db_span=[25.0, 30.0],
    )
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path, name="run", version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(task, DataLoader(_Images(), batch_size=4))
    return task


def test_figures_are_written_and_leave_the_run_unchanged(tmp_path: Path) -> None:
    with_figures = _fit(tmp_path / "a", [ReconstructionFigure(every_n_epochs=1, count=2)])
    without = _fit(tmp_path / "b", [])
    written = sorted(p.name for p in (tmp_path / "a" / "run" / "reconstructions").glob("*.png"))
    assert written == ["epoch000.png", "epoch001.png"]
    for name, value in without.state_dict().items():
        assert torch.equal(value, with_figures.state_dict()[name]), name


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ReconstructionFigure(every_n_epochs=0)

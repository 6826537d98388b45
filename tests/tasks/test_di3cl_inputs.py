"""DI3CLTask names a channel mismatch and logs no NaN for one-image batches."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from torchgeo_dic3l.tasks import DI3CLTask

from .test_di3cl import SMALL, _Shapes

pytestmark = pytest.mark.filterwarnings("ignore:.*layer4 only")


def test_images_with_other_channels_than_in_channels_name_both_and_the_option() -> None:
    task = DI3CLTask(**SMALL)
    with pytest.raises(ValueError, match=r"in_channels=2, but the images of the batch have 1 "):
        task._step(torch.rand(2, 1, 64, 64))


def test_validation_of_a_single_image_logs_no_nan(tmp_path: Path) -> None:
    task = DI3CLTask(**SMALL)
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    (metrics,) = trainer.validate(task, DataLoader(_Shapes(1), batch_size=1), verbose=False)
    assert "val_loss" in metrics
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from trainers import quiet_trainer

from torchgeo_dic3l.datamodules import PairedSARChipsDataModule
from torchgeo_dic3l.tasks import SARMAETask

pytestmark = [
    pytest.mark.filterwarnings("ignore:MAEDecoderTIMM is deprecated"),
    pytest.mark.filterwarnings("ignore:sarc_teacher .* has random weights"),
    # The frozen optical teacher is kept in eval mode on purpose.
    pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode"),
]

Writer = Callable[[Path, np.ndarray], str]

#: Optical band c of each pair is three times SAR band OPTICAL_FROM_SAR[c].
OPTICAL_FROM_SAR = [0, 1, 0]


def write_pairs(root: Path, write: Writer, count: int, unpaired: int = 0, size: int = 32) -> None:
    """Write 2-band uint8 SAR chips and 3-band float32 optical chips derived from them."""
    (root / "sar").mkdir(parents=True)
    (root / "optical").mkdir()
    generator = np.random.default_rng(0)
    for index in range(count + unpaired):
        sar = generator.integers(1, 255, (2, size, size)).astype("uint8")
        write(root / "sar" / f"{index:02d}.tif", sar)
        if index < count:
            optical = 3 * sar[OPTICAL_FROM_SAR].astype("float32")
            write(root / "optical" / f"{index:02d}.tif", optical)


def datamodule(root: Path, **options: object) -> PairedSARChipsDataModule:
    return PairedSARChipsDataModule(
        sar_root=str(root / "sar"), optical_root=str(root / "optical"), **options
    )


def test_setup_splits_and_reports_the_paired_counts(
    tmp_path: Path, write_geotiff: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pairs(tmp_path, write_geotiff, count=10, unpaired=2)
    module = datamodule(tmp_path, allow_unpaired=True, val_fraction=0.25, batch_size=4)
    module.setup("fit")
    train, val = module.train_dataset, module.val_dataset
    assert (len(train), len(val)) == (9, 3)
    assert not set(train.sar.files) & set(val.sar.files)
    assert train.paired_count + val.paired_count == 10
    report = capsys.readouterr().out
    assert (
        f"9 training ({train.paired_count} paired), 3 validation ({val.paired_count} paired) "
        "samples; SAR 2 channel(s), optical 3 channel(s)"
    ) in report


def test_batches_crop_both_images_alike_and_normalize_only_the_sar(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    write_pairs(tmp_path, write_geotiff, count=6)
    module = datamodule(tmp_path, patch_size=16, val_fraction=0.0, batch_size=4)
    module.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"image", "optical", "paired"}
    assert batch["image"].shape == (4, 2, 16, 16)
    assert batch["optical"].shape == (4, 3, 16, 16)
    assert batch["paired"].dtype == torch.bool and batch["paired"].all()
    # Random 16 px windows of 32 px chips: the optical one is the SAR one's.
    expected = 3 * batch["image"][:, OPTICAL_FROM_SAR] * 1e-4
    torch.testing.assert_close(batch["optical"], expected)
    normalized = module.aug(batch)
    torch.testing.assert_close(normalized["image"], batch["image"] / 255)
    assert torch.equal(normalized["optical"], batch["optical"])


def test_fit_with_sarc_logs_every_term(tmp_path: Path, write_geotiff: Writer) -> None:
    write_pairs(tmp_path, write_geotiff, count=6, unpaired=2, size=40)
    module = datamodule(
        tmp_path, allow_unpaired=True, patch_size=32, val_fraction=0.25, batch_size=4
    )
    task = SARMAETask(
        model="vit_tiny_patch16_224",
        in_channels=2,
        size=32,
        decoder_dim=32,
        decoder_num_heads=2,
        warmup_epochs=1,
        sare_db_span=[25.0, 30.0],
        sarc=True,
        sarc_teacher="vit_tiny_patch16_224",
        sarc_hidden_dim=16,
    )
    trainer = quiet_trainer(tmp_path / "run", max_steps=2, limit_val_batches=1)
    trainer.fit(task, datamodule=module)
    metrics = trainer.callback_metrics
    for key in (
        "train_loss",
        "train_mae_loss",
        "train_align_loss",
        "train_paired_fraction",
        "train_noised_fraction",
        "val_loss",
        "val_align_loss",
    ):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert 0.0 <= float(metrics["train_paired_fraction"]) <= 1.0
    assert trainer.global_step == 2

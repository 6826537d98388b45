import warnings
from pathlib import Path

import lightning
import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch.cli import LightningCLI
from rasterio.errors import NotGeoreferencedWarning
from torchgeo.datamodules import BaseDataModule
from torchgeo.tasks import BaseTask

import torchgeo_dic3l.tasks  # noqa: F401  (registers DI3CLTask for the CLI)
from torchgeo_dic3l.datamodules.chips import (
    SampleCrop,
    SARChipsDataModule,
    default_chip_ranges,
    split_indices,
)
from torchgeo_dic3l.datasets.chips import BadChipError


def write_chips(
    root: Path, count: int, channels: int = 1, size: int = 32, dtype: str = "uint8"
) -> None:
    """Write `count` PNG chips whose pixel values encode row and column."""
    root.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:size, 0:size]
    for index in range(count):
        array = np.stack([(rows * 2 + cols + index + c) % 250 for c in range(channels)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(
                root / f"{index:03d}.png",
                "w",
                driver="PNG",
                width=size,
                height=size,
                count=channels,
                dtype=dtype,
            ) as dst:
                dst.write(array.astype(dtype))


@pytest.fixture
def chips_root(tmp_path: Path) -> Path:
    write_chips(tmp_path / "chips", 10)
    return tmp_path / "chips"


def test_split_is_reproducible_and_disjoint() -> None:
    train, val = split_indices(10, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7
    assert sorted(train + val) == list(range(10))
    assert split_indices(10, 0.3, seed=0) == (train, val)
    assert split_indices(10, 0.3, seed=1) != (train, val)


def test_split_without_validation() -> None:
    assert split_indices(4, 0.0, seed=0) == ([0, 1, 2, 3], [])


@pytest.mark.parametrize("fraction, message", [(1.0, r"in \[0, 1\)"), (0.9, "none for training")])
def test_split_rejects_bad_fractions(fraction: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_indices(2, fraction, seed=0)


def test_default_ranges() -> None:
    assert default_chip_ranges("dn", 2, ["uint8"]) == ([0.0, 0.0], [255.0, 255.0])
    assert default_chip_ranges("power", 1, ["float32"]) == ([-25.0], [0.0])
    assert default_chip_ranges("db", 2, ["float32"]) == ([-25.0, -32.0], [0.0, -5.0])
    with pytest.raises(ValueError, match="units='dn' chips of type uint16; pass low="):
        default_chip_ranges("dn", 1, ["uint16"])
    with pytest.raises(ValueError, match="3-channel chips"):
        default_chip_ranges("db", 3, ["float32"])


def test_crop_random_and_centre() -> None:
    image = torch.arange(100.0).reshape(1, 10, 10)
    centre = SampleCrop(4, random=False)({"image": image})["image"]
    assert torch.equal(centre, image[:, 3:7, 3:7])
    torch.manual_seed(0)
    corners = {
        int(SampleCrop(4, random=True)({"image": image})["image"][0, 0, 0]) for _ in range(30)
    }
    assert len(corners) > 1
    assert all(c // 10 <= 6 and c % 10 <= 6 for c in corners)


def test_crop_errors() -> None:
    with pytest.raises(ValueError, match="patch_size must be positive"):
        SampleCrop(0, random=True)
    with pytest.raises(ValueError, match="8x8 pixels is smaller than patch_size=16"):
        SampleCrop(16, random=False)({"image": torch.zeros(1, 8, 8)})


def test_fit_batches_are_cropped_and_normalized(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=4, patch_size=16, val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 2  # type: ignore[arg-type]
    train_files = set(dm.train_dataset.files)  # type: ignore[union-attr]
    assert train_files.isdisjoint(dm.val_dataset.files)  # type: ignore[union-attr]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16)
    assert batch["image"].dtype == torch.float32
    normalized = dm.aug(batch)["image"]
    assert torch.allclose(normalized, batch["image"] / 255.0)
    val = next(iter(dm.val_dataloader()))
    first_val = dm.val_dataset[0]["image"]  # type: ignore[index]
    assert torch.equal(val["image"][0], first_val)
    assert val["image"].shape == (2, 1, 16, 16)


def test_val_crop_is_centre_of_chip(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), patch_size=8, val_fraction=0.1)
    dm.setup("validate")
    assert dm.train_dataset is None
    patch = dm.val_dataset[0]["image"]  # type: ignore[index]
    rows, cols = np.mgrid[12:20, 12:20]
    index = int(Path(dm.val_dataset.files[0]).stem)  # type: ignore[union-attr]
    assert torch.equal(
        patch[0], torch.from_numpy(((rows * 2 + cols + index) % 250).astype(np.float32))
    )


def test_test_and_predict_stages(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=2, val_fraction=0.3)
    dm.setup("test")
    assert len(dm.test_dataset) == 3  # type: ignore[arg-type]
    assert next(iter(dm.test_dataloader()))["image"].shape == (2, 1, 32, 32)
    dm.setup("predict")
    assert len(dm.predict_dataset) == 10  # type: ignore[arg-type]


def test_no_validation_gives_empty_loaders(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=2, val_fraction=0.0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 10  # type: ignore[arg-type]
    assert len(dm.val_dataloader()) == 0


def test_file_list_and_custom_ranges(tmp_path: Path) -> None:
    write_chips(tmp_path, 4, channels=2, dtype="uint16")
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    dm = SARChipsDataModule(
        files=files, batch_size=2, low=[0, 0], high=[100, 200], val_fraction=0.25
    )
    dm.setup("fit")
    batch = {"image": torch.tensor([50.0, 50.0]).view(1, 2, 1, 1)}
    assert torch.allclose(dm.aug(batch)["image"].flatten(), torch.tensor([0.5, 0.25]))


def test_training_set_smaller_than_a_batch(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=16)
    with pytest.raises(ValueError, match=r"9 training chip.*batch_size=16"):
        dm.setup("fit")


def test_ranges_must_match_channels(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), low=[0, 0], high=[1, 1])
    with pytest.raises(ValueError, match=r"2 value\(s\) but the chips have 1 channel"):
        dm.setup("fit")


def test_missing_default_range_asks_for_low_high(tmp_path: Path) -> None:
    write_chips(tmp_path, 3, dtype="uint16")
    dm = SARChipsDataModule(root=str(tmp_path))
    with pytest.raises(ValueError, match="pass low= and high="):
        dm.setup("fit")


def test_argument_errors(chips_root: Path) -> None:
    with pytest.raises(ValueError, match="give both low and high"):
        SARChipsDataModule(root=str(chips_root), low=[0])
    with pytest.raises(ValueError, match="val_fraction must be in"):
        SARChipsDataModule(root=str(chips_root), val_fraction=1.5)


def test_loader_settings(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=2, num_workers=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.pin_memory == torch.cuda.is_available()
    assert loader.persistent_workers
    assert loader.drop_last
    serial = SARChipsDataModule(root=str(chips_root), batch_size=2)
    serial.setup("fit")
    assert not serial.train_dataloader().persistent_workers


def test_real_chips_at_224(volkov_chips: Path) -> None:
    dm = SARChipsDataModule(root=str(volkov_chips), batch_size=2, patch_size=224)
    dm.setup("fit")
    assert len(dm.train_dataset) == 90 and len(dm.val_dataset) == 10  # type: ignore[arg-type]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 224, 224)
    normalized = dm.aug(batch)["image"]
    assert float(normalized.min()) >= 0.0 and float(normalized.max()) <= 1.0


def test_power_declared_uint16_chips_warn_of_clipping(tmp_path: Path) -> None:
    # 8-bit-style numbers read as linear power are 0-31 dB, all above VV's [-25, 0] dB.
    write_chips(tmp_path, 4, dtype="uint16")
    dm = SARChipsDataModule(root=str(tmp_path), units="power", batch_size=2, val_fraction=0)
    dm.setup("predict")
    with pytest.warns(
        UserWarning,
        match=r"001\.png: normalization clips 99\.9% of the pixels of channel 1 "
        r"\(0\.0% below and 99\.9% above the range \[-25, 0\] dB\)",
    ):
        dm.predict_dataset[1]  # type: ignore[index]


def test_clipping_threshold_is_an_option(tmp_path: Path) -> None:
    write_chips(tmp_path, 4, dtype="uint16")
    dm = SARChipsDataModule(root=str(tmp_path), units="power", max_clipped_fraction=1.0)
    dm.setup("predict")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.predict_dataset[0]  # type: ignore[index]
    with pytest.raises(ValueError, match="max_clipped_fraction must be in"):
        SARChipsDataModule(root=str(tmp_path), max_clipped_fraction=-0.1)


def test_real_chips_with_the_study_config_do_not_clip(volkov_chips: Path) -> None:
    # experiments/configs/study/pretrain_volkov.yaml: units dn, 256-pixel patches.
    dm = SARChipsDataModule(root=str(volkov_chips), units="dn", patch_size=256)
    dm.setup("predict")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for index in range(len(dm.predict_dataset)):  # type: ignore[arg-type]
            dm.predict_dataset[index]  # type: ignore[index]


def test_chip_smaller_than_patch_size_is_named_at_setup(tmp_path: Path) -> None:
    write_chips(tmp_path, 3, size=32)
    write_chips(tmp_path / "small", 1, size=8)
    dm = SARChipsDataModule(root=str(tmp_path), batch_size=2, patch_size=16)
    with pytest.raises(BadChipError, match=r"small/000\.png: chip of 8x8 pixels .*min_size=16"):
        dm.setup("fit")
    skipping = SARChipsDataModule(
        root=str(tmp_path), batch_size=2, patch_size=16, skip_bad_files=True, val_fraction=0
    )
    with pytest.warns(UserWarning, match=r"skipping unusable SAR chip .*small/000\.png"):
        skipping.setup("fit")
    assert len(skipping.train_dataset) == 3  # type: ignore[arg-type]
    assert next(iter(skipping.train_dataloader()))["image"].shape == (2, 1, 16, 16)


def test_dataset_options_are_command_line_parameters(chips_root: Path) -> None:
    cli = LightningCLI(
        model_class=BaseTask,
        datamodule_class=BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--model=DI3CLTask",
            "--model.init_args.model=resnet18",
            "--data=SARChipsDataModule",
            f"--data.init_args.root={chips_root}",
            "--data.init_args.skip_bad_files=true",
            "--data.init_args.nodata=0",
            "--data.init_args.min_valid_fraction=0.9",
            "--data.init_args.max_clipped_fraction=0.2",
            "--trainer.logger=false",
        ],
    )
    dm = cli.datamodule
    assert isinstance(dm, SARChipsDataModule)
    assert dm.kwargs["skip_bad_files"] is True and dm.kwargs["nodata"] == 0
    assert dm.kwargs["min_valid_fraction"] == 0.9 and dm.max_clipped_fraction == 0.2


class RecordingModule(lightning.LightningModule):
    """Records the range of the images it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[tuple[float, float, tuple[int, ...]]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image = batch["image"]
        self.seen.append((float(image.min()), float(image.max()), tuple(image.shape)))
        return self.layer(image.mean().view(1, 1)).sum()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.seen.append((float(batch["image"].min()), float(batch["image"].max()), ()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_sees_normalized_batches(chips_root: Path) -> None:
    dm = SARChipsDataModule(root=str(chips_root), batch_size=2, patch_size=16, val_fraction=0.2)
    module = RecordingModule()
    trainer = lightning.Trainer(
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, dm)
    assert any(shape == (2, 1, 16, 16) for _, _, shape in module.seen)
    assert all(low >= 0.0 and high <= 1.0 for low, high, _ in module.seen)
    # Raw crops reach about 90, so a maximum within (0.1, 1] shows the 0-255 scaling.
    assert 0.1 < max(high for _, high, _ in module.seen) <= 1.0

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin

from torchgeo_dic3l.datamodules.scenes import (
    SARScenesDataModule,
    grid_split,
)
from torchgeo_dic3l.datasets.scenes import SARScenes
from torchgeo_dic3l.transforms import default_db_ranges

SIZE = 200
RES = 10.0


def write_scene(path: Path, left: float = 500000.0, seed: int = 0) -> Path:
    """Two-band linear power scene (VV, VH) with a zero nodata strip on the left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.gamma(4.0, 0.25, (2, SIZE, SIZE)).astype(np.float32)
    array[0] *= 0.05
    array[1] *= 0.01
    array[:, :, :5] = 0.0
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=2,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(left, 4000000.0, RES, RES),
        nodata=0.0,
    ) as dst:
        dst.write(array)
    return path


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    write_scene(tmp_path / "train" / "a.tif")
    return tmp_path / "train"


def test_default_db_ranges() -> None:
    assert default_db_ranges(["VV", "vh"]) == ([-25.0, -32.0], [0.0, -5.0])
    with pytest.raises(ValueError, match=r"band\(s\) \['B1'\].*pass low= and high="):
        default_db_ranges(["VV", "B1"])


def test_grid_split_is_disjoint_and_reproducible(scenes: Path) -> None:
    dataset = SARScenes(scenes)
    train, val = grid_split(dataset, 0.25, grid_size=4, seed=0)
    assert train.intersection(val).area == pytest.approx(0.0)
    footprint = dataset.index.geometry.union_all()
    assert (train | val).area == pytest.approx(footprint.area)
    assert val.area == pytest.approx(footprint.area / 4)
    again, _ = grid_split(dataset, 0.25, grid_size=4, seed=0)
    assert again.equals(train)
    other, _ = grid_split(dataset, 0.25, grid_size=4, seed=1)
    assert not other.equals(train)


def test_grid_split_errors(scenes: Path) -> None:
    dataset = SARScenes(scenes)
    with pytest.raises(ValueError, match="grid_size must be at least 2"):
        grid_split(dataset, 0.5, grid_size=1, seed=0)
    with pytest.raises(ValueError, match="leaves none for training"):
        grid_split(dataset, 0.99, grid_size=2, seed=0)


def test_train_and_val_batches(scenes: Path) -> None:
    dm = SARScenesDataModule(
        scenes, patch_size=16, batch_size=4, length=8, val_fraction=0.25, grid_size=4
    )
    dm.setup("fit")
    train_roi, val_roi = grid_split(dm.train_dataset, 0.25, grid_size=4, seed=0)  # type: ignore[arg-type]
    loader = dm.train_dataloader()
    assert len(loader) == 2
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 2, 16, 16)
    assert batch["image"].dtype == torch.float32
    for bounds in batch["bounds"]:
        xmin, xmax, _, ymin, ymax = bounds[:5].tolist()
        assert train_roi.contains(shapely.box(xmin, ymin, xmax, ymax))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val_batch = next(iter(dm.val_dataloader()))
    assert val_batch["image"].shape[1:] == (2, 16, 16)
    xmin, xmax, _, ymin, ymax = val_batch["bounds"][0][:5].tolist()
    assert val_roi.intersects(shapely.box(xmin, ymin, xmax, ymax))
    normalized = dm.aug(batch)["image"]
    assert float(normalized.min()) >= 0.0 and float(normalized.max()) <= 1.0
    expected = ((batch["image"][:, 1] + 32.0) / 27.0).clamp(0, 1)
    assert torch.allclose(normalized[:, 1], expected, atol=1e-6)


def test_separate_validation_scenes(tmp_path: Path) -> None:
    write_scene(tmp_path / "train" / "a.tif")
    write_scene(tmp_path / "val" / "b.tif", left=600000.0, seed=1)
    dm = SARScenesDataModule(
        tmp_path / "train", val_paths=tmp_path / "val", patch_size=32, batch_size=2, length=4
    )
    dm.setup("fit")
    assert dm.val_dataset is not dm.train_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(dm.val_dataloader()))
    assert float(batch["bounds"][0][0]) >= 600000.0 - 32 * RES
    dm.setup("test")
    assert list(dm.test_dataset.index.filepath) == [str(tmp_path / "val" / "b.tif")]  # type: ignore[union-attr]


def test_validate_stage_skips_training(scenes: Path) -> None:
    dm = SARScenesDataModule(scenes, patch_size=16)
    dm.setup("validate")
    assert dm.train_dataset is None and dm.val_sampler is not None


def test_custom_ranges(scenes: Path) -> None:
    dm = SARScenesDataModule(scenes, bands=["VV"], file_bands=["VV", "VH"], low=[-20], high=[0])
    batch = {"image": torch.full((1, 1, 2, 2), -5.0)}
    assert torch.allclose(dm.aug(batch)["image"], torch.full((1, 1, 2, 2), 0.75))


def test_argument_errors(scenes: Path) -> None:
    with pytest.raises(ValueError, match="give both low and high"):
        SARScenesDataModule(scenes, high=[0, 0])
    with pytest.raises(ValueError, match=r"2 value\(s\) for 1 band\(s\)"):
        SARScenesDataModule(scenes, bands=["VV"], low=[-20, -30], high=[0, 0])
    with pytest.raises(ValueError, match="no default dB range"):
        SARScenesDataModule(scenes, bands=["B1"])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        SARScenesDataModule(scenes, val_fraction=0.0)


def test_epoch_shorter_than_a_batch(scenes: Path) -> None:
    dm = SARScenesDataModule(scenes, patch_size=16, batch_size=8, length=4)
    with pytest.raises(
        ValueError, match=r"only 4 training patch\(es\) per epoch for batch_size=8"
    ):
        dm.setup("fit")


def test_patch_too_large_for_training_cells(scenes: Path) -> None:
    dm = SARScenesDataModule(scenes, patch_size=64, grid_size=8, val_fraction=0.5)
    with pytest.raises(ValueError, match="no room for patch_size=64"):
        dm.setup("fit")


@pytest.mark.parametrize("cuda", [False, True])
def test_loaders_pin_memory_when_cuda_is_available(
    scenes: Path, cuda: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    dm = SARScenesDataModule(scenes, patch_size=16, batch_size=4, length=8)
    dm.setup("fit")
    assert dm.train_dataloader().pin_memory is cuda
    assert dm.val_dataloader().pin_memory is cuda


def test_dataset_options_are_command_line_parameters(scenes: Path) -> None:
    from lightning.pytorch.cli import LightningCLI
    from torchgeo.datamodules import BaseDataModule
    from torchgeo.tasks import BaseTask

    cli = LightningCLI(
        model_class=BaseTask,
        datamodule_class=BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--model=torchgeo_dic3l.tasks.DI3CLTask",
            "--model.init_args.model=resnet18",
            "--data=torchgeo_dic3l.datamodules.SARScenesDataModule",
            f"--data.init_args.paths={scenes}",
            "--data.init_args.bands=[VV]",
            "--data.init_args.file_bands=[VV, VH]",
            "--data.init_args.low=[-20]",
            "--data.init_args.high=[0]",
            "--data.init_args.crs=EPSG:32633",
            "--data.init_args.res=20",
            "--data.init_args.patch_size=16",
            "--trainer.logger=false",
        ],
    )
    dm = cli.datamodule
    assert isinstance(dm, SARScenesDataModule)
    dm.setup("fit")
    dataset = dm.train_dataset
    assert isinstance(dataset, SARScenes)
    assert dataset.crs.to_epsg() == 32633 and dataset.res == (20.0, 20.0)
    assert dm.kwargs["file_bands"] == ["VV", "VH"]

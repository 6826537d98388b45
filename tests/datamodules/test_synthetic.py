from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from matplotlib.figure import Figure

from torchgeo_dic3l.datamodules.synthetic import (
    SyntheticSARPretrainDataModule,
    SyntheticSARSegmentationDataModule,
    band_ranges,
)
from torchgeo_dic3l.datasets.synthetic import SyntheticSARPretrain, SyntheticSARSegmentation
from torchgeo_dic3l.transforms import POLARIZATION_DB_RANGES

SIZE = 32


def fake_trainer(stage: str) -> SimpleNamespace:
    """The trainer flags that TorchGeo's on_after_batch_transfer reads."""
    flags = ("training", "validating", "sanity_checking", "testing", "predicting")
    return SimpleNamespace(**{flag: flag == stage for flag in flags})


def test_pretrain_fit_batches_are_normalized_on_device() -> None:
    dm = SyntheticSARPretrainDataModule(batch_size=4, size=SIZE, length=8, val_length=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image"}
    assert batch["image"].shape == (4, 2, SIZE, SIZE)
    assert float(batch["image"].min()) < 0  # still in dB before the transfer hook
    dm.trainer = fake_trainer("training")
    out = dm.on_after_batch_transfer(batch, 0)
    image = out["image"]
    assert image.shape == (4, 2, SIZE, SIZE)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    # VV in [-25, 0] dB and VH in [-32, -5] dB map linearly onto [0, 1].
    low = torch.tensor([-25.0, -32.0]).view(1, 2, 1, 1)
    high = torch.tensor([0.0, -5.0]).view(1, 2, 1, 1)
    expected = ((batch["image"] - low) / (high - low)).clamp(0, 1)
    torch.testing.assert_close(image, expected)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (4, 2, SIZE, SIZE)


def test_pretrain_splits_have_disjoint_seeds() -> None:
    dm = SyntheticSARPretrainDataModule(batch_size=4, size=SIZE, length=8, val_length=4, seed=3)
    dm.setup("fit")
    dm.setup("test")
    seeds = [
        {dataset.scene_seed(i) for i in range(len(dataset))}
        for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset)
        if isinstance(dataset, SyntheticSARPretrain)
    ]
    assert [len(s) for s in seeds] == [8, 4, 4]
    assert min(seeds[0]) == 3
    assert not seeds[0] & seeds[1] and not seeds[0] & seeds[2] and not seeds[1] & seeds[2]
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (4, 2, SIZE, SIZE)


def test_single_channel_uses_its_own_range() -> None:
    dm = SyntheticSARPretrainDataModule(batch_size=2, size=SIZE, length=2, bands=("VH",))
    normalize = dm.aug.transform  # type: ignore[attr-defined]
    assert normalize.low.tolist() == [POLARIZATION_DB_RANGES["VH"][0]]
    assert normalize.high.tolist() == [POLARIZATION_DB_RANGES["VH"][1]]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert dm.aug(batch)["image"].shape == (2, 1, SIZE, SIZE)


def test_ranges_can_be_overridden() -> None:
    dm = SyntheticSARPretrainDataModule(
        batch_size=2, size=SIZE, length=2, low=[-30, -35], high=[5, 0]
    )
    normalize = dm.aug.transform  # type: ignore[attr-defined]
    assert normalize.low.tolist() == [-30.0, -35.0]
    assert normalize.high.tolist() == [5.0, 0.0]
    assert band_ranges(("VH", "VV")) == ([-32.0, -25.0], [-5.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low": [-25.0]}, r"low needs one value per band \['VV', 'VH'\]"),
        ({"high": [0.0, -5.0, 1.0]}, "high needs one value per band"),
        ({"bands": ["VV", "XX"]}, "unknown band"),
        ({"length": 0}, "length must be a positive integer"),
        ({"val_length": 0}, "length must be a positive integer"),
        ({"looks": 0.0}, "looks must be a positive number"),
        ({"length": 8, "batch_size": 16}, "8 scene.*fewer than batch_size=16"),
    ],
)
def test_pretrain_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSARPretrainDataModule(size=SIZE, **kwargs)


def test_no_trainer_leaves_batch_alone() -> None:
    dm = SyntheticSARPretrainDataModule(batch_size=2, size=SIZE, length=2)
    batch = {"image": torch.full((1, 2, SIZE, SIZE), -10.0)}
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["image"], batch["image"])


@pytest.mark.parametrize(("task", "num_classes"), [("landcover", 6), ("water", 2), ("roads", 2)])
def test_segmentation_batches(task: str, num_classes: int) -> None:
    dm = SyntheticSARSegmentationDataModule(
        task=task, batch_size=2, size=SIZE, length=4, val_length=2, test_length=2
    )
    assert dm.num_classes == num_classes and len(dm.classes) == num_classes
    dm.setup("fit")
    dm.setup("test")
    for stage, loader in (
        ("training", dm.train_dataloader()),
        ("validating", dm.val_dataloader()),
        ("testing", dm.test_dataloader()),
    ):
        batch = next(iter(loader))
        assert batch["image"].shape == (2, 2, SIZE, SIZE)
        assert batch["mask"].shape == (2, SIZE, SIZE) and batch["mask"].dtype == torch.int64
        assert int(batch["mask"].max()) < num_classes
        dm.trainer = fake_trainer(stage)
        out = dm.on_after_batch_transfer(batch, 0)
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
        assert torch.equal(out["mask"], batch["mask"])


def test_segmentation_label_fraction_and_lengths() -> None:
    dm = SyntheticSARSegmentationDataModule(
        batch_size=4, size=SIZE, length=20, val_length=6, test_length=5, label_fraction=0.25
    )
    dm.setup("fit")
    dm.setup("test")
    assert isinstance(dm.train_dataset, SyntheticSARSegmentation)
    assert [len(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)] == [5, 6, 5]  # type: ignore[arg-type]
    splits = {d.split for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)}  # type: ignore[union-attr]
    assert splits == {"train", "val", "test"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "ships"}, "task must be one of"),
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"test_length": 0}, "length must be a positive integer"),
        ({"length": 100, "label_fraction": 0.1}, "10 scene.*fewer than batch_size=32"),
        ({"bands": ("VV",), "low": [-25.0, -32.0]}, "low needs one value per band"),
    ],
)
def test_segmentation_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSARSegmentationDataModule(size=SIZE, **kwargs)


def test_datamodule_plot_uses_val_dataset() -> None:
    dm = SyntheticSARSegmentationDataModule(batch_size=2, size=SIZE, length=2, val_length=2)
    dm.setup("validate")
    assert dm.val_dataset is not None
    fig = dm.plot(dm.val_dataset[0])
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_configurable_from_yaml() -> None:
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_string(
        """
data:
  class_path: torchgeo_dic3l.datamodules.synthetic.SyntheticSARSegmentationDataModule
  init_args:
    task: water
    batch_size: 3
    size: 48
    bands: [VH]
    label_fraction: 0.5
    low: [-30.0]
    high: [-8.0]
"""
    )
    dm = parser.instantiate(config).data
    assert isinstance(dm, SyntheticSARSegmentationDataModule)
    assert dm.batch_size == 3 and dm.num_classes == 2
    assert dm.aug.transform.low.tolist() == [-30.0]  # type: ignore[attr-defined]
    config = parser.parse_string(
        """
data:
  class_path: torchgeo_dic3l.datamodules.synthetic.SyntheticSARPretrainDataModule
  init_args: {batch_size: 2, size: 32, length: 4, looks: 1.0, bands: [VV, VH], seed: 9}
"""
    )
    dm = parser.instantiate(config).data
    assert isinstance(dm, SyntheticSARPretrainDataModule)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 2, 32, 32)

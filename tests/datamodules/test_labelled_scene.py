from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from torchgeo_dic3l.datamodules.labelled_scene import LabelledSARSceneDataModule
from torchgeo_dic3l.datasets.labelled_scene import LabelledSARScene
from torchgeo_dic3l.transforms import robust_range

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 96, 80


@pytest.fixture
def scene(tmp_path: Path, write_geotiff: Callable[[Path, np.ndarray], str]) -> dict[str, Any]:
    """Two-channel linear-power scene with labels 1, 2 and unlabelled 0."""
    rng = np.random.default_rng(0)
    label = (1 + (np.arange(WIDTH) >= 40))[None].repeat(HEIGHT, 0).astype(np.uint8)
    label[:8] = 0
    level = np.stack([np.where(label == 2, 0.1, 0.01), np.where(label == 2, 0.01, 0.001)])
    power = (level * rng.gamma(4.0, 0.25, size=level.shape)).astype(np.float32)
    return {
        "images": [write_geotiff(tmp_path / "vv_vh.tif", power)],
        "label": write_geotiff(tmp_path / "label.tif", label[None]),
        "classes": ["land", "water"],
        "label_values": [1, 2],
        "ignore_values": [0],
        "bands": ["VV", "VH"],
        "patch_size": 16,
        "block_size": 32,
        "gap": 4,
        "batch_size": 4,
    }


def test_fit_batches_and_training_range(scene: dict[str, Any]) -> None:
    dm = LabelledSARSceneDataModule(**scene)
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        dm.aug({"image": torch.zeros(1, 2, 16, 16)})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 2, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 16, 16) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 255}
    train = dm.train_dataset
    assert isinstance(train, LabelledSARScene)
    expected_low, expected_high = robust_range(torch.stack([s["image"] for s in train]))
    assert dm.low == pytest.approx(expected_low) and dm.high == pytest.approx(expected_high)
    assert -40 < dm.low[1] < dm.high[1] < 0
    normalized = dm.aug(batch)
    assert normalized["image"].min() >= 0 and normalized["image"].max() <= 1
    assert normalized["image"].std() > 0.05
    torch.testing.assert_close(normalized["mask"], batch["mask"])
    val_batch = next(iter(dm.val_dataloader()))
    assert val_batch["image"].shape[1:] == (2, 16, 16)
    assert dm.num_classes == 2 and dm.ignore_index == 255


def test_fixed_range_is_used_as_given(scene: dict[str, Any]) -> None:
    dm = LabelledSARSceneDataModule(**scene, low=[-30.0, -40.0], high=[0.0, -10.0])
    image = torch.tensor([-30.0, 0.0, -15.0, 5.0]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = dm.aug({"image": image})["image"]
    torch.testing.assert_close(out[0, 0].flatten(), torch.tensor([0.0, 1.0, 0.5, 1.0]))
    torch.testing.assert_close(out[0, 1].flatten(), torch.tensor([1 / 3, 1.0, 5 / 6, 1.0]))
    dm.setup("fit")
    assert dm.low == [-30.0, -40.0]


def test_test_stage_computes_range_from_training_split(scene: dict[str, Any]) -> None:
    fitted = LabelledSARSceneDataModule(**scene)
    fitted.setup("fit")
    tested = LabelledSARSceneDataModule(**scene)
    tested.setup("test")
    assert tested.train_dataset is None
    assert tested.low == pytest.approx(fitted.low) and tested.high == pytest.approx(fitted.high)
    assert len(next(iter(tested.test_dataloader()))["image"]) > 0


def test_label_fraction_shrinks_training_but_not_the_range(scene: dict[str, Any]) -> None:
    full = LabelledSARSceneDataModule(**scene)
    full.setup("fit")
    few = LabelledSARSceneDataModule(**scene, label_fraction=0.25, seed=3)
    few.setup("fit")
    assert isinstance(full.train_dataset, LabelledSARScene)
    assert isinstance(few.train_dataset, LabelledSARScene)
    assert len(few.train_dataset) == round(0.25 * len(full.train_dataset))
    assert few.low == pytest.approx(full.low) and few.high == pytest.approx(full.high)


def test_range_errors(scene: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="give both low and high"):
        LabelledSARSceneDataModule(**scene, low=[-25.0, -30.0])
    dm = LabelledSARSceneDataModule(**scene, low=[-25.0], high=[0.0])
    with pytest.raises(ValueError, match=r"low/high have 1/1 value\(s\) but the scene has 2"):
        dm.setup("fit")


def test_plot_uses_validation_dataset(scene: dict[str, Any]) -> None:
    dm = LabelledSARSceneDataModule(**scene)
    dm.setup("validate")
    assert isinstance(dm.val_dataset, LabelledSARScene)
    fig = dm.plot(dm.val_dataset[0])
    assert fig is not None and len(fig.axes) == 2
    plt.close(fig)


def test_sf_config_builds_datamodule(polsar_sf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    parser.add_argument("--config", action="config")
    config = parser.parse_args(["--config", "experiments/configs/scene_polsar_sf.yaml"])
    dm = parser.instantiate(config).data
    assert isinstance(dm, LabelledSARSceneDataModule) and dm.num_classes == 5
    dm.setup("fit")
    dm.setup("test")
    for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        assert isinstance(dataset, LabelledSARScene)
        masks = torch.stack([sample["mask"] for sample in dataset])
        counts = torch.bincount(masks[masks != 255], minlength=5)
        # The configured split gives every class to every split.
        assert (counts > 1000).all()
    assert dm.low is not None and dm.high is not None
    # T33 (cross-pol-like) is the darkest channel of the T3 diagonal.
    assert dm.high[2] < dm.high[0] and dm.low[2] < dm.low[0]
    batch = dm.aug(next(iter(dm.train_dataloader())))
    assert batch["image"].shape == (16, 3, 64, 64)
    assert 0.3 < batch["image"].mean() < 0.7


def test_setup_prints_the_split_table_once_and_warns(
    scene: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dm = LabelledSARSceneDataModule(**scene)
    with pytest.warns(UserWarning, match=r"\['water'\] have fewer than 300 labelled test"):
        dm.setup("fit")
    dm.setup("test")
    out = capsys.readouterr().out
    assert out.count("| split | patches | land | water |") == 1
    assert dm.split_table is not None and dm.split_table.patches["train"] == len(dm.train_dataset)


def test_range_ignores_replaced_pixels(
    scene: dict[str, Any], tmp_path: Path, write_geotiff: Callable[[Path, np.ndarray], str]
) -> None:
    # Powers from -20 to -14 dB, a third of them zero (clamped to -100 dB).
    db = -20.0 + np.arange(WIDTH) % 7
    power = np.broadcast_to(10 ** (db / 10), (2, HEIGHT, WIDTH)).astype(np.float32)
    power[:, :, ::3] = 0.0
    zeros = LabelledSARSceneDataModule(
        **{**scene, "images": [write_geotiff(tmp_path / "zeros.tif", power)]}
    )
    zeros.setup("fit")
    assert zeros.low == pytest.approx([-20.0, -20.0], abs=1e-3)
    assert zeros.high == pytest.approx([-14.0, -14.0], abs=1e-3)


def test_the_scene_is_read_and_split_once_for_every_stage(
    scene: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    split_map = LabelledSARScene._split_map

    def counting(self: LabelledSARScene, split_seed: int) -> Any:
        calls.append(split_seed)
        return split_map(self, split_seed)

    monkeypatch.setattr(LabelledSARScene, "_split_map", counting)
    dm = LabelledSARSceneDataModule(**scene, label_fraction=0.5)
    dm.setup("fit")
    dm.setup("test")
    dm.describe_split()
    assert len(calls) == 1
    datasets = [dm.train_dataset, dm.val_dataset, dm.test_dataset]
    assert all(isinstance(d, LabelledSARScene) for d in datasets)
    assert {d.split for d in datasets} == {"train", "val", "test"}  # type: ignore[union-attr]

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torchgeo.tasks import MoCo
from trainers import quiet_trainer

from torchgeo_dic3l.callbacks import LinearProbe
from torchgeo_dic3l.datamodules import (
    LabelledSARSceneDataModule,
    SyntheticSARPretrainDataModule,
    SyntheticSARSegmentationDataModule,
)
from torchgeo_dic3l.tasks import DI3CLTask

# Tiny views make layer4 a 2 x 2 map, which DI3CLTask warns about; fine for these tests.
pytestmark = pytest.mark.filterwarnings("ignore:DI3CLTask. size=")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"
TASK = {
    "model": "resnet18",
    "size": 64,
    "memory_bank_size": 16,
    "hidden_dim": 32,
    "output_dim": 16,
    "boxes": {"boxes_per_image": 2},
}


def _task(in_channels: int = 2) -> DI3CLTask:
    return DI3CLTask(in_channels=in_channels, **TASK)


def _pretrain_data(channels: tuple[str, ...] = ("VV", "VH")) -> SyntheticSARPretrainDataModule:
    return SyntheticSARPretrainDataModule(
        batch_size=4, size=64, length=8, val_length=4, bands=channels
    )


def _probe(**kwargs: Any) -> LinearProbe:
    data = SyntheticSARSegmentationDataModule(size=32, length=8, val_length=4, batch_size=4)
    options = {"steps": 10, "max_train_patches": 4, "max_val_patches": 4} | kwargs
    return LinearProbe(data, **options)


def _trainer(root: Path, **kwargs: Any) -> Trainer:
    return quiet_trainer(
        root, **({"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0} | kwargs)
    )


def test_probe_logs_at_fit_start_and_every_n_epochs(tmp_path: Path) -> None:
    probe = _probe(every_n_epochs=2)
    logger = CSVLogger(tmp_path, name="run")
    trainer = _trainer(tmp_path, max_epochs=3, logger=logger, callbacks=[probe])
    trainer.fit(_task(), _pretrain_data())

    with open(Path(logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("probe_miou")]
    # The baseline before the first step, then after epoch 2 (one step per epoch).
    assert [int(row["step"]) for row in rows] == [0, 2]
    for row in rows:
        for name in ("probe_miou", "probe_oa", "probe_iou_water", "probe_iou_bare_soil"):
            assert 0.0 <= float(row[name]) <= 1.0
    last = rows[-1]
    assert trainer.callback_metrics["probe_miou"].item() == pytest.approx(
        float(last["probe_miou"])
    )
    assert "probe_oa" in trainer.callback_metrics
    assert trainer.progress_bar_metrics["probe_miou"] == pytest.approx(float(last["probe_miou"]))


def _fit_and_snapshot(root: Path, callbacks: list[LinearProbe]) -> dict[str, torch.Tensor]:
    seed_everything(0)
    task = _task()
    trainer = _trainer(root, max_epochs=2, limit_train_batches=2, callbacks=callbacks)
    trainer.fit(task, _pretrain_data())
    state = {name: value.clone() for name, value in task.state_dict().items()}
    state["rng"] = torch.get_rng_state()
    return state


def test_pre_training_is_bit_identical_with_and_without_the_probe(tmp_path: Path) -> None:
    without = _fit_and_snapshot(tmp_path / "without", [])
    with_probe = _fit_and_snapshot(tmp_path / "with", [_probe()])
    assert without.keys() == with_probe.keys()
    for name, value in without.items():
        assert torch.equal(value, with_probe[name]), name


def _modes(module: torch.nn.Module) -> dict[str, bool]:
    return {name: child.training for name, child in module.named_modules()}


def test_probe_leaves_modes_parameters_buffers_and_rng_alone(tmp_path: Path) -> None:
    task = _task()
    task.train()
    task.model.layer1.eval()  # a frozen part must stay in eval mode, the rest in train
    probe = _probe()
    probe.on_fit_start(_trainer(tmp_path), task)
    modes = _modes(task)
    state = {name: value.clone() for name, value in task.state_dict().items()}
    rng = torch.get_rng_state()

    metrics = probe.probe(task)

    assert _modes(task) == modes
    for name, value in task.state_dict().items():
        # BatchNorm in train mode would have updated running_mean / num_batches_tracked.
        assert torch.equal(value, state[name]), name
    assert torch.equal(torch.get_rng_state(), rng)
    assert {"probe_miou", "probe_oa", "probe_iou_water"} <= metrics.keys()
    # A fixed seed and fixed patches: probing the same weights twice gives the same.
    assert probe.probe(task) == metrics


def test_probe_with_torchgeo_moco(tmp_path: Path) -> None:
    moco = MoCo(
        model="resnet18",
        in_channels=2,
        version=2,
        layers=2,
        hidden_dim=16,
        output_dim=8,
        memory_bank_size=16,
        size=32,
        schedule=[],
    )
    trainer = _trainer(tmp_path, callbacks=[_probe()])
    trainer.fit(moco, _pretrain_data())
    assert 0.0 <= trainer.callback_metrics["probe_miou"].item() <= 1.0


def test_channel_mismatch_fails_at_fit_start(tmp_path: Path) -> None:
    two_channels = SyntheticSARSegmentationDataModule(size=32, bands=["VV", "VH"])
    probe = LinearProbe(datamodule=two_channels, max_train_patches=2, max_val_patches=2)
    trainer = _trainer(tmp_path, callbacks=[probe])
    with pytest.raises(ValueError, match=r"2 channel\(s\) but the backbone's first conv.* 1;"):
        trainer.fit(_task(in_channels=1), _pretrain_data(channels=("VH",)))
    assert trainer.global_step == 0


def test_fast_dev_run_checks_channels_but_fits_no_probe(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, fast_dev_run=True, callbacks=[_probe()])
    trainer.fit(_task(), _pretrain_data())
    assert trainer.global_step == 1
    assert "probe_miou" not in trainer.callback_metrics


def test_probe_on_a_labelled_scene(
    tmp_path: Path, write_geotiff: Callable[[Path, np.ndarray], str]
) -> None:
    # One-channel power scene of 16 px stripes: land (label 1) bright, water (label 2)
    # 10 dB darker, so every patch holds both; every eighth row unlabelled (0), so
    # every patch, wherever the split places it, holds ignored pixels.
    label = (1 + (np.arange(128) // 16) % 2)[None].repeat(128, 0).astype(np.uint8)
    label[::8] = 0
    rng = np.random.default_rng(0)
    power = np.where(label == 1, 0.1, 0.01) * rng.gamma(4.0, 0.25, size=label.shape)
    scene = LabelledSARSceneDataModule(
        images=[write_geotiff(tmp_path / "hv.tif", power[None].astype(np.float32))],
        label=write_geotiff(tmp_path / "label.tif", label[None]),
        classes=["land", "water"],
        label_values=[1, 2],
        ignore_values=[0],
        bands=["HV"],
        patch_size=32,
        block_size=64,
        gap=0,
        split_fractions=(0.5, 0.5, 0.0),
    )
    task = _task(in_channels=1)
    probe = LinearProbe(scene, steps=30)
    probe.on_fit_start(_trainer(tmp_path), task)
    data = probe.data
    assert data is not None and data.ignore_index == 255
    assert (data.train_masks == 255).any() or (data.val_masks == 255).any()
    # Normalized by the datamodule's own dB range (computed in setup).
    assert data.train_images.min() >= 0.0 and data.train_images.max() <= 1.0
    metrics = probe.probe(task)
    assert {"probe_iou_land", "probe_iou_water"} <= metrics.keys()
    # A 10 dB step is linearly separable even in random features.
    assert metrics["probe_miou"] > 0.8


@pytest.mark.parametrize(
    "option", ["every_n_epochs", "steps", "batch_size", "max_train_patches", "max_val_patches"]
)
def test_non_positive_counts_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be positive"):
        LinearProbe(**{option: 0})


def _channels(datamodule: dict[str, Any] | None, in_channels: int) -> int:
    """Channels of a configured probe datamodule (None: the synthetic default)."""
    if datamodule is None:
        return in_channels if in_channels in (1, 2) else -1
    options = datamodule.get("init_args", {})
    if datamodule["class_path"].endswith("SyntheticSARSegmentationDataModule"):
        return len(options.get("bands", ("VV", "VH")))
    return len(options.get("bands") or options["images"])


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("pretrain_*.yaml")), ids=lambda p: p.name)
def test_shipped_pre_training_configs_probe_with_matching_channels(config: Path) -> None:
    spec = yaml.safe_load(config.read_text())
    callbacks = spec["trainer"]["callbacks"]
    probes = [c for c in callbacks if c["class_path"] == "torchgeo_dic3l.callbacks.LinearProbe"]
    assert len(probes) == 1
    datamodule = probes[0].get("init_args", {}).get("datamodule")
    in_channels = spec["model"]["init_args"]["in_channels"]
    assert _channels(datamodule, in_channels) == in_channels
    # Command-line overrides of `--trainer.callbacks.init_args.*` go to the last entry,
    # which the configs' comments use for the ModelCheckpoint.
    assert callbacks[-1]["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"


@pytest.mark.parametrize(("in_channels", "names"), [(1, ["VH"]), (2, ["VV", "VH"])])
def test_default_probe_takes_the_backbone_channels(in_channels: int, names: list[str]) -> None:
    from torchgeo_dic3l.callbacks.probe import _default_datamodule

    datamodule = _default_datamodule(in_channels)
    assert list(datamodule.kwargs["bands"]) == names  # type: ignore[attr-defined]
    assert datamodule.kwargs["size"] == 96  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="takes 3"):
        _default_datamodule(3)

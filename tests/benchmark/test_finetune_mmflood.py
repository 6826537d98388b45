"""The MMFlood fine-tuning config under the TorchGeo CLI, on a tiny stand-in of MMFlood.

MMFlood (TorchGeo's own dataset) is checked only for ``activations.json`` and the
``activations/`` folder; its components glob ``<root>/**/<event>*-*/<content>/*.tif``
and keep the events whose ``subset`` in ``activations.json`` is the split. The stand-in
has one event per split with a 2-band float32 Sentinel-1 tile and a uint8 mask.
"""

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from torchgeo.datasets import MMFlood

from torchgeo_dic3l.main import main

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "finetune_mmflood.yaml"
SIZE = 64


def _write(path: Path, data: np.ndarray, nodata: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": SIZE,
        "width": SIZE,
        "count": data.shape[0],
        "dtype": data.dtype,
        "crs": CRS.from_epsg(32633),
        "transform": from_origin(500_000, 4_000_000, 10, 10),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def make_mmflood(root: Path) -> None:
    """Write one event per split in MMFlood's layout."""
    rng = np.random.default_rng(0)
    metadata = {}
    for number, subset in enumerate(("train", "val", "test"), start=1):
        event = f"EMSR{number:03d}"
        metadata[event] = {"subset": subset, "country": "Nowhere", "start": "2020-01-01"}
        tile = root / "activations" / f"{event}-0"
        flood = np.zeros((1, SIZE, SIZE), dtype=np.uint8)
        flood[:, :, : SIZE // 2] = 1
        power = rng.gamma(4.0, 0.02, size=(2, SIZE, SIZE)).astype(np.float32)
        power[:, flood[0] == 1] *= 0.1
        power[:, :4, :4] = np.nan  # missing data: MMFlood sets these mask pixels to 255
        _write(tile / "s1_raw" / f"{event}-0.tif", power)
        _write(tile / "mask" / f"{event}-0.tif", flood)
    (root / "activations.json").write_text(json.dumps(metadata))


def test_stand_in_is_read_by_torchgeo_mmflood(tmp_path: Path) -> None:
    make_mmflood(tmp_path)
    dataset = MMFlood(tmp_path, split="train", download=False, checksum=False)
    sample = dataset[dataset.bounds]
    assert sample["image"].shape == (2, SIZE, SIZE)
    mask = sample["mask"].squeeze()
    # NaN pixels of the image become 255 (ignored) in the mask; the rest is 0 / 1.
    assert set(mask.unique().tolist()) == {0, 1, 255}
    assert (mask == 255).sum() == 16


GDAL_OPTIONS_SET_BY_TORCHGEO = (
    "GDAL_DISABLE_READDIR_ON_OPEN",
    "AWS_NO_SIGN_REQUEST",
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE",
    "GDAL_SWATH_SIZE",
    "VSI_CURL_CACHE_SIZE",
)
FIT_DONE = "`Trainer.fit` stopped: `max_steps=1` reached."


@pytest.fixture
def restore_gdal_options() -> Iterator[None]:
    """Undo the GDAL options that torchgeo.main writes into os.environ.

    Among them, GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR stops GDAL from finding the .hdr
    of raw ENVI files (the AIRSAR scene), which would break later tests.
    """
    saved = {name: os.environ.get(name) for name in GDAL_OPTIONS_SET_BY_TORCHGEO}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.parametrize(
    ("subcommand", "pretrained", "expected"),
    [("fit", False, FIT_DONE), ("fit", True, FIT_DONE), ("test", False, "test_OverallAccuracy")],
)
@pytest.mark.usefixtures("restore_gdal_options")
def test_mmflood_config_runs_with_fast_dev_run(
    subcommand: str,
    pretrained: bool,
    expected: str,
    di3cl_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "mmflood"
    make_mmflood(root)
    monkeypatch.setattr(sys, "argv", ["torchgeo"])
    with caplog.at_level(logging.INFO):
        main(
            [
                subcommand,
                "--config",
                str(CONFIG),
                f"--data.dict_kwargs.root={root}",
                "--data.init_args.patch_size=32",
                "--data.init_args.batch_size=2",
                "--data.init_args.length=4",
                "--data.init_args.num_workers=0",
                "--trainer.fast_dev_run=true",
                "--trainer.accelerator=cpu",
                "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path / 'run'}",
                # TorchGeo reads the DI3CL checkpoint's "model." backbone itself.
                *([f"--model.init_args.weights={di3cl_checkpoint}"] if pretrained else []),
            ]
        )
    assert expected in caplog.text + capsys.readouterr().out

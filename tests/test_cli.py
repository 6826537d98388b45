"""The ``torchgeo-dic3l`` and stock ``torchgeo`` CLIs on the shipped configs."""

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
BIN = Path(sys.executable).parent


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_console_script_help_lists_subcommands(tmp_path: Path) -> None:
    result = _run([str(BIN / "torchgeo-dic3l"), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_module_entry_point_prints_config_with_short_class_names(tmp_path: Path) -> None:
    result = _run(
        [
            sys.executable,
            "-m",
            "torchgeo_dic3l",
            "fit",
            "--model=DI3CLTask",
            "--model.model=resnet18",
            "--data=SyntheticSARPretrainDataModule",
            "--print_config",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "class_path: torchgeo_dic3l.tasks.DI3CLTask" in result.stdout
    assert "class_path: torchgeo_dic3l.datamodules.SyntheticSARPretrainDataModule" in result.stdout
    assert "memory_bank_size: 65536" in result.stdout


@pytest.mark.parametrize("command", ["torchgeo-dic3l", "torchgeo"])
@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("pretrain_synthetic.yaml", ["--model.init_args.size=64"]),
        ("pretrain_sarmae_synthetic.yaml", []),
    ],
)
def test_fit_synthetic_configs_with_fast_dev_run(
    command: str, config: str, overrides: list[str], tmp_path: Path
) -> None:
    result = _run(
        [
            str(BIN / command),
            "fit",
            "--config",
            str(CONFIGS / config),
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--data.init_args.batch_size=4",
            *overrides,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in output
    assert "train_loss=" in output


def _write_chips(folder: Path, count: int = 8) -> None:
    from PIL import Image

    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(count):
        pixels = generator.integers(0, 256, (96, 96), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def _write_scene(path: Path) -> None:
    generator = np.random.default_rng(0)
    power = generator.gamma(4.0, 0.05 / 4.0, (2, 256, 256)).astype("float32")
    profile = {
        "driver": "GTiff",
        "height": 256,
        "width": 256,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4000000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(power)


SMALL_MODEL = [
    "--model.init_args.model=resnet18",
    "--model.init_args.weights=null",
    "--model.init_args.size=64",
    "--model.init_args.memory_bank_size=64",
    "--trainer.precision=32",
    "--data.init_args.batch_size=2",
    "--data.init_args.num_workers=0",
]


SMALL_VIT = [
    "--model.init_args.model=vit_tiny_patch16_224",
    "--model.init_args.size=64",
    "--model.init_args.decoder_dim=32",
    "--trainer.precision=32",
    "--data.init_args.batch_size=2",
    "--data.init_args.num_workers=0",
]


@pytest.mark.parametrize("command", ["torchgeo-dic3l", "torchgeo"])
@pytest.mark.parametrize(
    ("config", "small_model"),
    [("pretrain_chips.yaml", SMALL_MODEL), ("pretrain_sarmae_chips.yaml", SMALL_VIT)],
)
def test_fit_chips_configs_on_generated_chips(
    command: str, config: str, small_model: list[str], tmp_path: Path
) -> None:
    _write_chips(tmp_path / "chips")
    result = _run(
        [
            str(BIN / command),
            "fit",
            "--config",
            str(CONFIGS / config),
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
            f"--data.init_args.root={tmp_path / 'chips'}",
            "--data.init_args.patch_size=64",
            "--data.init_args.val_fraction=0.25",
            *small_model,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["torchgeo-dic3l", "torchgeo"])
def test_fit_scenes_config_on_generated_scene(command: str, tmp_path: Path) -> None:
    (tmp_path / "scenes").mkdir()
    _write_scene(tmp_path / "scenes" / "s1_scene.tif")
    result = _run(
        [
            str(BIN / command),
            "fit",
            "--config",
            str(CONFIGS / "pretrain_scenes.yaml"),
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
            f"--data.init_args.paths={tmp_path / 'scenes'}",
            "--data.init_args.patch_size=64",
            "--data.init_args.length=4",
            "--data.init_args.grid_size=2",
            *SMALL_MODEL,
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in result.stdout + result.stderr


def test_mocov2_config_switches_off_both_terms(tmp_path: Path) -> None:
    result = _run(
        [
            str(BIN / "torchgeo-dic3l"),
            "fit",
            "--config",
            str(CONFIGS / "pretrain_synthetic_mocov2.yaml"),
            "--print_config",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "use_cc: false" in result.stdout and "use_di: false" in result.stdout


def _model_checkpoints(node: object) -> Iterator[dict[str, Any]]:
    """Every ``ModelCheckpoint`` entry in a parsed config, at any depth."""
    if isinstance(node, dict):
        if str(node.get("class_path", "")).endswith("ModelCheckpoint"):
            yield node
        for value in node.values():
            yield from _model_checkpoints(value)
    elif isinstance(node, list):
        for value in node:
            yield from _model_checkpoints(value)


@pytest.mark.parametrize(
    "config", sorted(CONFIGS.rglob("*.yaml")), ids=lambda path: str(path.relative_to(CONFIGS))
)
def test_shipped_checkpoints_overwrite_last_instead_of_versioning_it(config: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for entry in _model_checkpoints(yaml.safe_load(config.read_text())):
        callback = ModelCheckpoint(**entry.get("init_args", {}))
        assert not callback._enable_version_counter, f"{config}: would write last-v1.ckpt"
        assert callback.save_on_exception, f"{config}: SIGTERM would leave no checkpoint"


def test_sigterm_saves_last_checkpoint_and_exits_143(tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "pretrain_synthetic.yaml").read_text())
    (shipped,) = _model_checkpoints(config)
    shipped["init_args"]["dirpath"] = str(tmp_path / "run")
    progress = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(tmp_path / "progress"), "every_n_train_steps": 1},
    }
    config["trainer"] |= {"callbacks": [progress, shipped], "logger": False, "max_steps": 10_000}
    config["trainer"] |= {"accelerator": "cpu", "enable_progress_bar": False}
    config["data"]["init_args"] |= {"batch_size": 2, "size": 64, "length": 10_000}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(BIN / "torchgeo-dic3l"), "fit", "--config", str(path), *SMALL_MODEL[:4]]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "progress").glob("*.ckpt")):
            assert process.poll() is None, process.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=300)[0].decode()
    finally:
        process.kill()
    assert process.returncode == 143, output[-3000:]
    checkpoint = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] >= 1

"""The ``torchgeo-dic3l`` and stock ``torchgeo`` CLIs on the shipped configs."""

import subprocess
import sys
from pathlib import Path

import pytest

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
def test_fit_synthetic_config_with_fast_dev_run(command: str, tmp_path: Path) -> None:
    result = _run(
        [
            str(BIN / command),
            "fit",
            "--config",
            str(CONFIGS / "pretrain_synthetic.yaml"),
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--data.init_args.batch_size=4",
            "--model.init_args.size=64",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in output
    assert "train_loss=" in output

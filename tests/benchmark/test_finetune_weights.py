"""The benchmark records whether initial weights were verified; unreadable ones fail the init."""

from pathlib import Path

import pytest
import torch

from torchgeo_dic3l.benchmark.finetune import InitError, build_model, build_task_data, finetune
from torchgeo_dic3l.benchmark.grid import InitSpec, RunSpec, TaskSpec, TrainingSpec
from torchgeo_dic3l.models import export_weights
from torchgeo_dic3l.models.weights import UnverifiedWeightsWarning, sha256_of

TINY = {"task": "water", "size": 32, "length": 8, "val_length": 4, "test_length": 4}
TRAINING = TrainingSpec(steps=1, batch_size=4, accelerator="cpu")


def _run(source: str, protocol: str = "linear") -> RunSpec:
    task = TaskSpec("water", "synthetic", TINY)
    return RunSpec(InitSpec("init", source), task, "unet", protocol, 1.0, 0)


def test_rows_say_whether_the_weights_were_verified(
    di3cl_checkpoint: Path, tmp_path: Path
) -> None:
    exported = export_weights(di3cl_checkpoint, tmp_path, "bench", "synthetic", "repo")
    renamed = exported.path.rename(tmp_path / "renamed.pth")
    assert finetune(_run("random"), TRAINING).row["weights_verified"] is None
    with pytest.warns(UnverifiedWeightsWarning):
        assert finetune(_run(str(renamed)), TRAINING).row["weights_verified"] is False
    hashed = renamed.rename(exported.path)
    assert finetune(_run(str(hashed)), TRAINING).row["weights_verified"] is True


def test_a_weights_file_of_objects_is_an_init_failure(tmp_path: Path) -> None:
    path = tmp_path / "objects.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": InitSpec("a", "b")}, path)
    path = path.rename(tmp_path / f"objects-{sha256_of(path)[:8]}.pth")
    run = _run(str(path))
    data = build_task_data(run.task, 1.0, 0, TRAINING)
    with pytest.raises(InitError, match="holds objects other than tensors"):
        build_model(run, data, TRAINING)

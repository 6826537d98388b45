"""Fixtures of the benchmark tests: small DI3CL checkpoints."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from torchgeo_dic3l.tasks import DI3CLTask

CheckpointFactory = Callable[..., DI3CLTask]


def _save_di3cl_checkpoint(path: Path, in_channels: int = 2) -> DI3CLTask:
    """Save a freshly built small DI3CLTask as a Lightning-style checkpoint."""
    task = DI3CLTask(
        model="resnet18",
        in_channels=in_channels,
        size=64,
        memory_bank_size=64,
        hidden_dim=32,
        output_dim=16,
    )
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return task


@pytest.fixture
def make_di3cl_checkpoint() -> CheckpointFactory:
    """Function ``(path, in_channels=2) -> DI3CLTask`` saving a small ResNet-18 checkpoint."""
    return _save_di3cl_checkpoint


@pytest.fixture
def di3cl_checkpoint(tmp_path: Path) -> Path:
    """Path of a small 2-channel ResNet-18 DI3CL checkpoint."""
    path = tmp_path / "di3cl.ckpt"
    _save_di3cl_checkpoint(path)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: on a shared 2-core machine, two threads contending with
    other processes make these tiny runs ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

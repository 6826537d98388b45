"""Checkpoints of DI3CLTask resume the run exactly (queues, RNG, weights, optimizer)."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from torchgeo_dic3l.tasks import DI3CLTask

from .test_di3cl import SMALL, _Shapes

pytestmark = pytest.mark.filterwarnings("ignore:.*(layer4 only|not resumable|does not have many)")


class _Repeated(Dataset[dict[str, torch.Tensor]]):
    """One image, many times: the batches do not depend on their position in the epoch."""

    def __init__(self, length: int) -> None:
        self.image = _Shapes(1)[0]["image"]
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.image}


def _fit(
    root: Path,
    dataset: Dataset[dict[str, torch.Tensor]],
    steps: int,
    ckpt_path: Path | None = None,
) -> DI3CLTask:
    torch.manual_seed(0)
    task = DI3CLTask(**SMALL)
    checkpoints = ModelCheckpoint(dirpath=root, every_n_train_steps=2, save_top_k=-1)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(task, DataLoader(dataset, batch_size=2, shuffle=True), ckpt_path=ckpt_path)
    return task


def _assert_same_state(resumed: DI3CLTask, uninterrupted: DI3CLTask) -> None:
    state, expected = resumed.state_dict(), uninterrupted.state_dict()
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name
    momentum, expected_momentum = (
        [s["momentum_buffer"] for s in task.trainer.optimizers[0].state_dict()["state"].values()]
        for task in (resumed, uninterrupted)
    )
    assert len(momentum) == len(expected_momentum) > 0
    for value, expected_value in zip(momentum, expected_momentum, strict=True):
        assert torch.equal(value, expected_value)


def test_step_checkpoints_hold_the_queues_after_their_step(tmp_path: Path) -> None:
    task = _fit(tmp_path, _Shapes(8), steps=2)
    checkpoint = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert int(state["queue.ptr"]) == int(state["cc_queue.ptr"]) == 4
    assert torch.equal(state["queue.keys"], task.queue.keys)
    assert torch.equal(state["cc_queue.keys"], task.cc_queue.keys)


def test_mid_epoch_resume_ends_in_the_uninterrupted_state(tmp_path: Path) -> None:
    # 4 batches an epoch; the checkpoint at step 2 is in the middle of the first one.
    uninterrupted = _fit(tmp_path / "a", _Repeated(8), steps=6)
    resumed = _fit(
        tmp_path / "b", _Repeated(8), steps=6, ckpt_path=tmp_path / "a" / "epoch=0-step=2.ckpt"
    )
    assert int(resumed.queue.ptr) == 12
    _assert_same_state(resumed, uninterrupted)


def test_resume_at_an_epoch_boundary_replays_the_shuffled_order(tmp_path: Path) -> None:
    # 2 batches of distinct images an epoch; the checkpoint at step 2 ends the first.
    uninterrupted = _fit(tmp_path / "a", _Shapes(4), steps=4)
    resumed = _fit(
        tmp_path / "b", _Shapes(4), steps=4, ckpt_path=tmp_path / "a" / "epoch=0-step=2.ckpt"
    )
    _assert_same_state(resumed, uninterrupted)

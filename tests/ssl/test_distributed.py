"""Two CPU processes with gloo: collectives and queue consistency across ranks."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.models.utils import batch_shuffle_distributed, batch_unshuffle_distributed
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from torchgeo_dic3l.ssl.distributed import gather_keys, is_distributed
from torchgeo_dic3l.tasks import DI3CLTask

WORLD = 2


def _collectives_worker(rank: int, port: int, result_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(rank)
        local = torch.arange(4.0).view(4, 1) + 10 * rank
        gathered = gather_keys(local)
        shuffled, inverse = batch_shuffle_distributed(local)
        restored = batch_unshuffle_distributed(shuffled * 2, inverse)
        torch.save(
            {"gathered": gathered, "shuffled": shuffled, "restored": restored},
            Path(result_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_single_process_collectives_are_identity() -> None:
    assert not is_distributed()
    keys = torch.randn(3, 2)
    assert gather_keys(keys) is keys


def test_gather_and_batch_shuffle_across_two_ranks(tmp_path: Path) -> None:
    mp.spawn(_collectives_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    everything = torch.cat([torch.arange(4.0), torch.arange(4.0) + 10]).view(8, 1)
    for rank, result in enumerate(results):
        assert torch.equal(result["gathered"], everything)
        local = everything[4 * rank : 4 * rank + 4]
        assert torch.equal(result["restored"], local * 2)
    # The shuffle is a permutation of the global batch shared by both ranks.
    union = torch.cat([r["shuffled"] for r in results]).flatten().sort().values
    assert torch.equal(union, everything.flatten())


class _RandomImages(Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.rand(1, 64, 64, generator=generator)}


class _SaveQueues(Callback):
    def __init__(self, result_dir: str) -> None:
        self.result_dir = result_dir

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, DI3CLTask)
        torch.save(
            {
                "keys": pl_module.queue.keys.cpu(),
                "cc_keys": pl_module.cc_queue.keys.cpu(),
                "ptr": pl_module.queue.ptr.cpu(),
            },
            Path(self.result_dir) / f"queue{trainer.global_rank}.pt",
        )


@pytest.mark.filterwarnings("ignore")
def test_ddp_ranks_hold_identical_queues(tmp_path: Path) -> None:
    task = DI3CLTask(
        model="resnet18",
        in_channels=1,
        size=64,
        memory_bank_size=64,
        hidden_dim=32,
        output_dim=16,
        boxes={"boxes_per_image": 4, "candidates": 16},
    )
    initial = task.queue.keys.clone()
    trainer = Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp_spawn",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_SaveQueues(str(tmp_path))],
    )
    trainer.fit(task, train_dataloaders=DataLoader(_RandomImages(), batch_size=4))
    queues = [torch.load(tmp_path / f"queue{r}.pt") for r in range(WORLD)]
    # 3 steps x 4 images x 2 ranks of gathered keys were written on both ranks.
    assert int(queues[0]["ptr"]) == int(queues[1]["ptr"]) == 24
    assert torch.equal(queues[0]["keys"], queues[1]["keys"])
    assert torch.equal(queues[0]["cc_keys"], queues[1]["cc_keys"])
    assert not torch.equal(queues[0]["keys"][:24], initial[:24])
    assert torch.equal(queues[0]["keys"][24:], initial[24:])

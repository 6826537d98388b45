"""Vision Transformer encoders in the benchmark: SARMAE checkpoint -> export -> DPT runs."""

from pathlib import Path

import pytest
import timm
import torch

from torchgeo_dic3l.benchmark.finetune import (
    InitError,
    build_model,
    build_task_data,
    finetune,
    load_encoder_state,
)
from torchgeo_dic3l.benchmark.grid import GridSpec, InitSpec, RunSpec, TaskSpec, TrainingSpec
from torchgeo_dic3l.models import export_weights
from torchgeo_dic3l.models.backbone import fit_state_dict
from torchgeo_dic3l.tasks import SARMAETask

pytestmark = pytest.mark.filterwarnings("ignore:MAEDecoderTIMM is deprecated")

VIT = "vit_tiny_patch16_224"
# 32 px patches: a 2 x 2 token grid for the benchmark's ViT, pre-trained at 64 px (4 x 4).
TINY_WATER = {"task": "water", "size": 32, "length": 8, "val_length": 4, "test_length": 4}
TRAINING = TrainingSpec(backbone=f"tu-{VIT}", steps=2, batch_size=4, accelerator="cpu")


@pytest.fixture
def sarmae_checkpoint(tmp_path: Path) -> tuple[Path, SARMAETask]:
    task = SARMAETask(model=VIT, in_channels=2, size=64, decoder_dim=32, decoder_num_heads=2)
    path = tmp_path / "sarmae.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return path, task


def _run(init: InitSpec, protocol: str) -> RunSpec:
    return RunSpec(init, TaskSpec("water", "synthetic", TINY_WATER), "dpt", protocol, 1.0, 0)


def test_exported_sarmae_vit_loads_into_dpt_with_a_resampled_grid(
    sarmae_checkpoint: tuple[Path, SARMAETask], tmp_path: Path
) -> None:
    checkpoint, task = sarmae_checkpoint
    exported = export_weights(checkpoint, tmp_path / "w", "vit_sar", "synthetic", "repo")
    run = _run(InitSpec("sarmae", str(exported.path)), "linear")
    data = build_task_data(run.task, 1.0, 0, TRAINING)
    model = build_model(run, data, TRAINING)
    vit = model.model.encoder.model
    pretrained = task.backbone.vit.state_dict()
    # Every tensor but the position embedding is the pre-trained one, bit for bit.
    for key, value in vit.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, pretrained[key]), key
    assert vit.pos_embed.shape == (1, 1 + 2 * 2, vit.embed_dim)
    assert torch.equal(vit.pos_embed[:, 0], pretrained["pos_embed"][:, 0])  # class token
    assert all(not p.requires_grad for p in vit.parameters())
    # The file is hash-checked at every load.
    exported.path.write_bytes(exported.path.read_bytes()[:-10])
    with pytest.raises(InitError, match="truncated, corrupted or was modified"):
        build_model(run, data, TRAINING)


@pytest.mark.parametrize("protocol", ["linear", "frozen", "full"])
def test_every_protocol_runs_a_vit_with_dpt(
    sarmae_checkpoint: tuple[Path, SARMAETask], protocol: str
) -> None:
    checkpoint, task = sarmae_checkpoint
    result = finetune(_run(InitSpec("sarmae", str(checkpoint)), protocol), TRAINING, 1)
    row = result.row
    assert row["status"] == "ok" and 0.0 <= row["miou"] <= 1.0
    assert row["train_steps"] == 2 and row["backbone"] == f"tu-{VIT}"
    assert result.model is not None
    trained = result.model.model.encoder.model.state_dict()
    pretrained = task.backbone.vit.state_dict()
    changed = any(not torch.equal(trained[k], pretrained[k]) for k in trained if k != "pos_embed")
    # Only the full protocol may change the encoder.
    assert changed == (protocol == "full")


def test_vit_weights_of_another_channel_count_are_refused() -> None:
    run = _run(InitSpec("x", "x.pth"), "linear")
    data = build_task_data(run.task, 1.0, 0, TRAINING)
    model = build_model(RunSpec(InitSpec("random", "random"), *_fields(run)), data, TRAINING)
    three = timm.create_model(VIT, in_chans=3, num_classes=0, img_size=32).state_dict()
    with pytest.raises(InitError, match=r"take 3 input channel\(s\) but the task's images have 2"):
        load_encoder_state(model.model.encoder, three, "init 'x'")


def _fields(run: RunSpec) -> tuple[TaskSpec, str, str, float, int]:
    return run.task, run.decoder, run.protocol, run.label_fraction, run.seed


def test_position_embedding_is_resampled_only_when_the_grid_differs() -> None:
    small = timm.create_model(VIT, in_chans=1, num_classes=0, img_size=32)
    large = timm.create_model(VIT, in_chans=1, num_classes=0, img_size=64)
    same = fit_state_dict(large, large.state_dict(), "w")
    assert torch.equal(same["pos_embed"], large.pos_embed)
    resampled = fit_state_dict(small, large.state_dict(), "w")["pos_embed"]
    assert resampled.shape == small.pos_embed.shape
    # A constant grid stays constant under the (interpolating) resampling.
    flat = large.state_dict() | {"pos_embed": torch.full_like(large.pos_embed, 0.5)}
    assert torch.allclose(fit_state_dict(small, flat, "w")["pos_embed"], torch.tensor(0.5))


@pytest.mark.parametrize(
    ("backbone", "decoder", "message"),
    [
        (f"tu-{VIT}", "unet", r"decoder 'unet' cannot take the ViT backbone .*only \['dpt'\]"),
        (VIT, "dpt", r"decoder 'dpt' needs a timm ViT backbone named 'tu-<timm name>'"),
        ("resnet18", "dpt", r"got training.backbone='resnet18'"),
    ],
)
def test_grid_refuses_decoders_that_cannot_take_the_backbone(
    backbone: str, decoder: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GridSpec.from_dict(
            {
                "inits": {"random": "random"},
                "tasks": ["water"],
                "decoders": [decoder],
                "training": {"backbone": backbone},
            }
        )

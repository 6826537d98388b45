from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from trainers import quiet_trainer

from torchgeo_dic3l.callbacks import LinearProbe
from torchgeo_dic3l.datamodules import (
    SyntheticSARPretrainDataModule,
    SyntheticSARSegmentationDataModule,
)
from torchgeo_dic3l.evaluation import ssl_backbone
from torchgeo_dic3l.tasks import SARMAETask
from torchgeo_dic3l.transforms.radiometry import normalization_db_span

pytestmark = pytest.mark.filterwarnings("ignore:MAEDecoderTIMM is deprecated")

SMALL: dict[str, Any] = {
    "model": "vit_tiny_patch16_224",
    "in_channels": 2,
    "size": 32,
    "decoder_dim": 32,
    "decoder_num_heads": 2,
    "warmup_epochs": 1,
    "sare_db_span": [25.0, 30.0],
}


class _Images(Dataset[dict[str, Tensor]]):
    """Smooth random images (a 4 x 4 grid upsampled), whose patches can be inferred."""

    def __init__(self, length: int = 8, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        coarse = torch.rand(length, 2, 4, 4, generator=generator)
        self.images = F.interpolate(coarse, size=(size, size), mode="bicubic")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index]}


def test_encoder_sees_speckled_images_and_target_is_the_clean_image() -> None:
    torch.manual_seed(0)
    task = SARMAETask(**SMALL, sare_p=1.0, transform=nn.Identity())
    seen: dict[str, Tensor] = {}
    original = task.reconstruction_loss

    def recording(clean: Tensor, encoder_input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        seen["clean"], seen["input"] = clean, encoder_input
        return original(clean, encoder_input)

    task.reconstruction_loss = recording  # type: ignore[method-assign]
    images = torch.rand(4, 2, 32, 32)
    task.training_step({"image": images}, 0)
    torch.testing.assert_close(seen["clean"], images)  # the target side is untouched
    offsets = (seen["input"] - images) * torch.tensor([25.0, 30.0]).view(1, 2, 1, 1)
    assert (offsets.abs().flatten(1).amax(1) > 0.1).all()  # every image speckled (p=1)
    plain = SARMAETask(**SMALL, sare=False, transform=nn.Identity())
    assert plain.noise is None


def test_target_patches_come_from_the_clean_image() -> None:
    # Encoder input fixed, target varied: the loss must follow the target image.
    torch.manual_seed(0)
    task = SARMAETask(**(SMALL | {"norm_pix_loss": False}), transform=nn.Identity())
    encoder_input = torch.rand(2, 2, 32, 32)
    losses = []
    for clean in (encoder_input, encoder_input + 5.0):
        torch.manual_seed(1)  # the same mask
        losses.append(float(task.reconstruction_loss(clean, encoder_input)[0]))
    assert losses[1] > losses[0] + 10.0


def test_training_lowers_the_reconstruction_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Pixel loss (no per-patch normalization), so that the scale of the images is learnt.
    task = SARMAETask(**(SMALL | {"lr": 1e-3, "norm_pix_loss": False}), transform=nn.Identity())
    losses: list[float] = []
    original = task.reconstruction_loss

    def recording(clean: Tensor, encoder_input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logs = original(clean, encoder_input)
        losses.append(float(loss))
        return loss, logs

    task.reconstruction_loss = recording  # type: ignore[method-assign]
    trainer = quiet_trainer(tmp_path, max_epochs=15)
    trainer.fit(task, DataLoader(_Images(8), batch_size=8))
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_any_size_divisible_by_the_patch_and_any_channel_count() -> None:
    task = SARMAETask(**(SMALL | {"in_channels": 3, "size": 48, "sare_db_span": [20.0]}))
    assert task.sequence_length == 1 + 9
    assert ssl_backbone(task) is task.backbone.vit
    with pytest.raises(ValueError, match="size=40 is not a multiple of the patch size 16"):
        SARMAETask(**(SMALL | {"size": 40}))
    with pytest.raises(TypeError, match="needs a timm Vision Transformer"):
        SARMAETask(**(SMALL | {"model": "resnet18"}))


def test_fit_reads_the_noise_span_from_the_datamodule(tmp_path: Path) -> None:
    datamodule = SyntheticSARPretrainDataModule(batch_size=4, size=32, length=8, val_length=4)
    task = SARMAETask(**(SMALL | {"sare_db_span": None}))
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=1)
    trainer.fit(task, datamodule=datamodule)
    assert task.noise is not None
    assert task.noise.db_span == normalization_db_span(datamodule, "sare_db_span")


def test_online_probe_scores_the_vit_and_leaves_it_unchanged(tmp_path: Path) -> None:
    task = SARMAETask(**SMALL)
    probe = LinearProbe(
        SyntheticSARSegmentationDataModule(size=32, length=8, val_length=4, batch_size=4),
        steps=5,
        max_train_patches=4,
        max_val_patches=4,
    )
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[probe], limit_val_batches=0)
    probe.on_fit_start(trainer, task)
    scores = probe.probe(task)
    assert 0.0 <= scores["probe_miou"] <= 1.0 and 0.0 <= scores["probe_oa"] <= 1.0
    for name, value in task.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    task = SARMAETask(**SMALL)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(task, DataLoader(_Images(4), batch_size=4))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    stored = torch.load(path, weights_only=True)
    assert stored["hyper_parameters"]["sare_law"] == "lognormal"
    assert "rng_states" in stored
    restored = SARMAETask.load_from_checkpoint(path)
    for name, value in task.backbone.vit.state_dict().items():
        assert torch.equal(value, restored.backbone.vit.state_dict()[name]), name


def test_reconstruct_keeps_visible_patches_and_fills_the_hidden_ones() -> None:
    torch.manual_seed(0)
    task = SARMAETask(**(SMALL | {"size": 64, "sare": False})).eval()
    images = torch.rand(3, 2, 64, 64)
    out = task.reconstruct(images)
    assert torch.equal(out["input"], images)
    hidden = out["masked"].isnan()
    # 16 patches of 16 x 16, three quarters hidden, each whole patch NaN in all channels.
    assert hidden.flatten(1).sum(1).tolist() == [12 * 16 * 16 * 2] * 3
    assert torch.isfinite(out["reconstruction"]).all()
    assert torch.equal(out["reconstruction"][~hidden], images[~hidden])
    assert not torch.allclose(out["reconstruction"][hidden], images[hidden])


def test_learning_rate_warms_up_per_step_under_max_steps(tmp_path: Path) -> None:
    from lightning.pytorch import Callback, Trainer

    rates: list[float] = []

    class _Record(Callback):
        def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    task = SARMAETask(**(SMALL | {"lr": 0.4, "warmup_epochs": 1}), transform=nn.Identity())
    # 4 batches per epoch, 8 steps and no epoch limit: 4 warm-up steps, then cosine
    # (TorchGeo's per-epoch MAE schedule would hold the rate near 0 here).
    trainer = quiet_trainer(
        tmp_path, max_steps=8, max_epochs=-1, callbacks=[_Record()], limit_val_batches=0
    )
    trainer.fit(task, DataLoader(_Images(16), batch_size=4))
    assert rates[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert rates[4] == pytest.approx(0.4) and rates[-1] < 0.1


def test_a_run_bounded_only_by_time_is_refused_with_the_options_named(tmp_path: Path) -> None:
    task = SARMAETask(**SMALL, transform=nn.Identity())
    trainer = quiet_trainer(tmp_path, max_steps=-1, max_epochs=-1, max_time="00:00:00:05")
    with pytest.raises(ValueError, match="trainer.max_steps or trainer.max_epochs"):
        trainer.fit(task, DataLoader(_Images(8), batch_size=4))

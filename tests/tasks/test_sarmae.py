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
from torchgeo_dic3l.tasks.sarmae import VisibleTokens
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
    encode, reconstruction_loss = task.encode_visible, task.reconstruction_loss

    def encoding(encoder_input: Tensor) -> VisibleTokens:
        seen["input"] = encoder_input
        return encode(encoder_input)

    def recording(clean: Tensor, visible: VisibleTokens) -> tuple[Tensor, dict[str, Tensor]]:
        seen["clean"] = clean
        return reconstruction_loss(clean, visible)

    task.encode_visible = encoding  # type: ignore[method-assign]
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
    with torch.no_grad():
        visible = task.encode_visible(encoder_input)  # one mask for both targets
        losses = [
            float(task.reconstruction_loss(clean, visible)[0])
            for clean in (encoder_input, encoder_input + 5.0)
        ]
    assert losses[1] > losses[0] + 10.0


def test_training_lowers_the_reconstruction_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Pixel loss (no per-patch normalization), so that the scale of the images is learnt.
    task = SARMAETask(**(SMALL | {"lr": 1e-3, "norm_pix_loss": False}), transform=nn.Identity())
    losses: list[float] = []
    original = task.reconstruction_loss

    def recording(clean: Tensor, visible: VisibleTokens) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logs = original(clean, visible)
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
    with pytest.raises(ValueError, match=r"trainer\.max_steps or trainer\.max_epochs"):
        trainer.fit(task, DataLoader(_Images(8), batch_size=4))


# SARC: the semantic anchor on paired SAR + optical images, with a tiny random teacher.
SARC: dict[str, Any] = SMALL | {
    "sarc": True,
    "sarc_teacher": "vit_tiny_patch16_224",
    "sarc_optical_channels": 3,
    "sarc_hidden_dim": 16,
}
random_teacher = pytest.mark.filterwarnings("ignore:sarc_teacher .* has random weights")
# The frozen optical teacher is kept in eval mode on purpose.
eval_teacher = pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode")


class _Pairs(Dataset[dict[str, Tensor]]):
    """SAR images with a 3-channel optical image each; every other one unpaired."""

    def __init__(self, length: int = 8, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.sar = torch.rand(length, 2, size, size, generator=generator)
        self.optical = torch.rand(length, 3, size, size, generator=generator)

    def __len__(self) -> int:
        return len(self.sar)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        paired = index % 2 == 0
        optical = self.optical[index] if paired else torch.zeros_like(self.optical[index])
        return {"image": self.sar[index], "optical": optical, "paired": torch.tensor(paired)}


def _visible_subset(visible: VisibleTokens, keep: Tensor) -> VisibleTokens:
    return VisibleTokens(visible.tokens[keep], visible.idx_keep[keep], visible.idx_mask[keep])


def test_forward_matches_torchgeo_mae_forward() -> None:
    # The split of encoding and decoding computes what TorchGeo's one-piece forward does.
    from torchgeo.tasks import MAE

    task = SARMAETask(**SMALL).eval()
    images = torch.rand(3, 2, 32, 32)
    idx_keep, idx_mask = task.encode_visible(images)[1:]
    torch.testing.assert_close(
        task(images, idx_keep, idx_mask), MAE.forward(task, images, idx_keep, idx_mask)
    )


@random_teacher
@eval_teacher
def test_sarc_teacher_stays_frozen_in_eval_mode_and_out_of_the_optimizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = SARMAETask(**SARC, transform=nn.Identity())
    assert task.anchor is not None
    teacher, head = task.anchor.teacher, task.anchor.head
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0)
    trainer.fit(task, DataLoader(_Pairs(8), batch_size=4))
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), name
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(v, head_before[k]) for k, v in head.state_dict().items())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in head.parameters()} <= optimized
    task.train()
    assert task.anchor.head.training
    assert not any(module.training for module in teacher.modules())


@random_teacher
def test_alignment_compares_each_visible_token_with_the_teacher_token_beneath_it() -> None:
    torch.manual_seed(0)
    task = SARMAETask(**(SARC | {"size": 64}), transform=nn.Identity())
    assert task.anchor is not None
    images, optical = torch.rand(2, 2, 64, 64), torch.rand(2, 3, 64, 64)
    visible = task.encode_visible(images)
    loss = task.alignment_loss(visible, optical, torch.tensor([True, True]))
    # The same by hand: token k of image b sits on patch idx_keep[b, k] - 1 (the class
    # token comes first); the teacher's patch tokens follow its class token too.
    anchors = task.anchor.teacher.forward_features(optical)[:, 1:]
    terms = []
    for b in range(2):
        for k in range(1, visible.tokens.shape[1]):
            projected = task.anchor.head(visible.tokens[b, k])
            anchor = anchors[b, int(visible.idx_keep[b, k]) - 1]
            terms.append(1 - F.cosine_similarity(projected, anchor, dim=0))
    assert len(terms) == 2 * 4  # 16 patches, a quarter visible
    torch.testing.assert_close(loss, torch.stack(terms).mean())


@random_teacher
def test_alignment_counts_paired_images_only_and_is_zero_without_any() -> None:
    torch.manual_seed(0)
    task = SARMAETask(**SARC, transform=nn.Identity())
    assert task.anchor is not None
    images, optical = torch.rand(4, 2, 32, 32), torch.rand(4, 3, 32, 32)
    encoded = task.encode_visible(images)
    # Detached from the encoder, so that the head's gradients can be taken twice.
    visible = encoded._replace(tokens=encoded.tokens.detach())
    paired = torch.tensor([True, False, True, False])
    mixed = task.alignment_loss(visible, optical, paired)
    only_paired = task.alignment_loss(
        _visible_subset(visible, paired), optical[paired], torch.tensor([True, True])
    )
    torch.testing.assert_close(mixed, only_paired)
    everything = task.alignment_loss(visible, optical, torch.ones(4, dtype=torch.bool))
    assert not torch.allclose(mixed, everything)  # the unpaired images would change it

    none = task.alignment_loss(visible, optical, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()
    head = list(task.anchor.head.parameters())
    # In the graph (every parameter gets a gradient under DDP), but all of it zero.
    assert all(p.grad is not None and not p.grad.any() for p in head)
    assert task.alignment_loss(visible, None, paired).item() == 0.0

    task.zero_grad()
    task.alignment_loss(visible, optical, paired).backward()
    assert any(p.grad is not None and p.grad.any() for p in head)


@random_teacher
def test_sar_and_optical_share_the_crop_and_flips_and_only_sar_is_speckled() -> None:
    torch.manual_seed(0)
    # TorchGeo's MAE augmentation: random resized crop of 48 px images to 32 px, flips.
    task = SARMAETask(**(SARC | {"sare_p": 1.0}))
    assert task.anchor is not None
    seen: dict[str, Tensor] = {}
    encode, reconstruction_loss, anchor = (
        task.encode_visible,
        task.reconstruction_loss,
        task.anchor.forward,
    )

    def recording_input(encoder_input: Tensor) -> VisibleTokens:
        seen["input"] = encoder_input
        return encode(encoder_input)

    def recording_clean(clean: Tensor, visible: VisibleTokens) -> tuple[Tensor, dict[str, Tensor]]:
        seen["clean"] = clean
        return reconstruction_loss(clean, visible)

    def recording_optical(
        tokens: Tensor, index: Tensor, optical: Tensor, paired: Tensor
    ) -> Tensor:
        seen["optical"] = optical
        return anchor(tokens, index, optical, paired)

    task.encode_visible = recording_input  # type: ignore[method-assign]
    task.reconstruction_loss = recording_clean  # type: ignore[method-assign]
    task.anchor.forward = recording_optical  # type: ignore[method-assign]
    sar = F.interpolate(torch.rand(6, 2, 6, 6), size=(48, 48), mode="bicubic")
    # The optical image is a function of the SAR image: its copy and twice its first band.
    optical = torch.cat([sar, 2 * sar[:, :1]], dim=1)
    task.training_step({"image": sar, "optical": optical, "paired": torch.ones(6).bool()}, 0)
    clean, augmented = seen["clean"], seen["optical"]
    assert clean.shape == (6, 2, 32, 32) and augmented.shape == (6, 3, 32, 32)
    torch.testing.assert_close(augmented[:, :2], clean)
    torch.testing.assert_close(augmented[:, 2], 2 * clean[:, 0])
    assert (seen["input"] - clean).abs().flatten(1).amax(1).min() > 0.01  # SAR speckled
    # Separate crops would differ: the crops of the six images are not all alike.
    assert not torch.allclose(clean, F.interpolate(sar, size=(32, 32), mode="bicubic"))


@random_teacher
def test_one_encoder_pass_per_step_feeds_decoder_and_head() -> None:
    torch.manual_seed(0)
    task = SARMAETask(**SARC, transform=nn.Identity())
    assert task.anchor is not None
    calls = {"encoder": 0, "teacher": 0}

    def count(name: str) -> Any:
        def hook(*_: object) -> None:
            calls[name] += 1

        return hook

    task.backbone.vit.patch_embed.register_forward_hook(count("encoder"))
    task.anchor.teacher.patch_embed.register_forward_hook(count("teacher"))
    batch = next(iter(DataLoader(_Pairs(4), batch_size=4)))
    task.training_step(batch, 0)
    assert calls == {"encoder": 1, "teacher": 1}


@random_teacher
def test_loss_is_mae_plus_weighted_alignment_and_mae_only_without_pairs() -> None:
    task = SARMAETask(**(SARC | {"sare": False, "sarc_weight": 0.5}), transform=nn.Identity())
    batch = next(iter(DataLoader(_Pairs(4), batch_size=4)))
    images, optical, paired = batch["image"], batch["optical"], batch["paired"]

    def expected(paired: Tensor) -> Tensor:
        torch.manual_seed(1)
        visible = task.encode_visible(images)
        mae = task.reconstruction_loss(images, visible)[0]
        return mae + 0.5 * task.alignment_loss(visible, optical, paired)

    for step_batch, pairs in (
        (batch, paired),
        ({"image": images, "optical": optical, "paired": torch.zeros(4).bool()}, None),
        ({"image": images}, None),  # no optical: every image unpaired
    ):
        torch.manual_seed(1)
        loss = task.training_step(step_batch, 0)
        if pairs is None:
            torch.manual_seed(1)
            mae = task.reconstruction_loss(images, task.encode_visible(images))[0]
            torch.testing.assert_close(loss, mae)
        else:
            torch.testing.assert_close(loss, expected(pairs))
            assert loss > expected(torch.zeros(4).bool()) + 1e-3  # the alignment counts


@random_teacher
@eval_teacher
def test_sarc_logs_its_terms_and_plain_sarmae_logs_as_before(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = SARMAETask(**SMALL, transform=nn.Identity())
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(plain, DataLoader(_Pairs(4), batch_size=4))
    assert "train_mae_loss" in trainer.callback_metrics
    assert not {"train_align_loss", "train_paired_fraction"} & set(trainer.callback_metrics)

    task = SARMAETask(**SARC, transform=nn.Identity())
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=1)
    loader = DataLoader(_Pairs(4), batch_size=4)
    trainer.fit(task, loader, loader)
    metrics = trainer.callback_metrics
    assert float(metrics["train_paired_fraction"]) == 0.5
    assert float(metrics["train_align_loss"]) > 0.0
    torch.testing.assert_close(
        metrics["train_loss"], metrics["train_mae_loss"] + metrics["train_align_loss"]
    )
    assert {"val_loss", "val_mae_loss", "val_align_loss", "train_noised_fraction"} <= set(metrics)


def test_sarc_teacher_must_share_the_patch_grid_and_be_a_vit() -> None:
    with pytest.raises(ValueError, match="8x8 pixel patches but the SAR encoder has 16x16"):
        SARMAETask(**(SARC | {"sarc_teacher": "vit_small_patch8_224"}))
    with pytest.raises(TypeError, match="sarc_teacher must be a timm Vision Transformer"):
        SARMAETask(**(SARC | {"sarc_teacher": "resnet18"}))
    with pytest.warns(UserWarning, match="random weights .* the semantic anchor is then"):
        SARMAETask(**SARC)


def test_sarc_teacher_weights_load_strictly_from_a_timm_state_dict(tmp_path: Path) -> None:
    import timm

    # Saved at 64 px: the position embedding is resampled to the task's 32 px grid.
    source = timm.create_model("vit_tiny_patch16_224", in_chans=3, num_classes=0, img_size=64)
    path = tmp_path / "teacher.pth"
    torch.save(source.state_dict(), path)
    task = SARMAETask(**(SARC | {"sarc_teacher_weights": str(path)}))
    assert task.anchor is not None
    loaded = task.anchor.teacher.state_dict()
    for name, value in source.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(loaded[name], value), name
    assert loaded["pos_embed"].shape == (1, 1 + 4, 192)
    torch.testing.assert_close(loaded["pos_embed"][:, 0], source.pos_embed[:, 0])

    with pytest.raises(
        ValueError, match=r"teacher\.pth: patch_embed\.proj\.weight takes 3 input channel"
    ):
        SARMAETask(**(SARC | {"sarc_teacher_weights": str(path), "sarc_optical_channels": 4}))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        SARMAETask(**(SARC | {"sarc_teacher_weights": str(tmp_path / "missing.pth")}))


@random_teacher
@eval_teacher
def test_sarc_checkpoint_keeps_the_teacher_and_exports_only_the_student(tmp_path: Path) -> None:
    from torchgeo_dic3l.models import extract_backbone

    task = SARMAETask(**SARC, transform=nn.Identity())
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(task, DataLoader(_Pairs(4), batch_size=4))
    path = tmp_path / "sarc.ckpt"
    trainer.save_checkpoint(path)
    assert any(k.startswith("anchor.teacher.") for k in torch.load(path)["state_dict"])
    backbone = extract_backbone(path)
    assert backbone.keys() == task.backbone.vit.state_dict().keys()
    restored = SARMAETask.load_from_checkpoint(path, transform=nn.Identity())
    assert restored.anchor is not None and task.anchor is not None
    for name, value in task.anchor.state_dict().items():
        assert torch.equal(value, restored.anchor.state_dict()[name]), name

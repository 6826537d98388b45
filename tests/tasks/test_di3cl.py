import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset
from trainers import quiet_trainer

from torchgeo_dic3l.models import resnet_taps
from torchgeo_dic3l.ssl.box_matching import BoxOptions
from torchgeo_dic3l.tasks import DI3CLTask
from torchgeo_dic3l.tasks import di3cl as di3cl_module
from torchgeo_dic3l.transforms import ImageOnly, RangeNormalize
from torchgeo_dic3l.transforms.radiometry import normalization_db_span
from torchgeo_dic3l.transforms.views import ViewOptions

SMALL = {
    "model": "resnet18",
    "in_channels": 2,
    "size": 64,
    "memory_bank_size": 128,
    "hidden_dim": 64,
    "output_dim": 32,
    "boxes": {"boxes_per_image": 4, "candidates": 16},
}


class _Shapes(Dataset[dict[str, torch.Tensor]]):
    """A few fixed two-channel images with blobs, so that the task can learn them."""

    def __init__(self, length: int = 32, size: int = 80) -> None:
        generator = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        images = []
        for _ in range(length):
            centre = torch.rand(2, generator=generator) * size
            radius = 8 + 16 * torch.rand(1, generator=generator)
            blob = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2).float()
            noise = 0.1 * torch.rand(2, size, size, generator=generator)
            images.append(torch.stack([blob, 1 - blob * 0.5]) * 0.8 + noise)
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


def test_heads_exist_according_to_switches() -> None:
    full = DI3CLTask(**SMALL)
    for name in ("cc_head", "cc_head_momentum", "cc_queue", "di_projector", "di_predictor"):
        assert hasattr(full, name)
    moco = DI3CLTask(**SMALL, use_cc=False, use_di=False)
    for name in ("cc_head", "cc_queue", "di_projector", "di_predictor"):
        assert not hasattr(moco, name)


def test_momentum_encoders_start_as_exact_copies_of_loaded_weights(tmp_path: Path) -> None:
    source = DI3CLTask(**SMALL)
    with torch.no_grad():
        source.model.conv1.weight.fill_(0.123)
    path = tmp_path / "source.ckpt"
    torch.save(
        {"state_dict": source.state_dict(), "hyper_parameters": {"model": "resnet18"}}, path
    )
    task = DI3CLTask(**SMALL, weights=str(path))
    assert torch.all(task.model.conv1.weight == 0.123)
    for a, b in zip(
        task.model.state_dict().values(), task.model_momentum.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in task.model_momentum.parameters())


def test_step_outputs_and_logged_terms() -> None:
    torch.manual_seed(0)
    task = DI3CLTask(**SMALL)
    loss, logs, keys = task._step(torch.rand(4, 2, 80, 80))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert keys["global"].shape == (4, 32) and keys["cc"].shape == (4, 32)
    assert torch.allclose(keys["global"].norm(dim=1), torch.ones(4))
    expected = {"global_loss", "global_top1", "embedding_std", "cc_loss", "cc_top1", "di_loss"}
    assert expected <= logs.keys()
    assert 0 < float(logs["boxes_per_image"]) <= 4
    total = 0.8 * logs["global_loss"] + 0.2 * logs["cc_loss"] + 5.0 * logs["di_loss"]
    assert torch.allclose(loss.detach(), total)


def test_moco_v2_variant_has_only_the_global_term() -> None:
    task = DI3CLTask(**SMALL, use_cc=False, use_di=False, global_weight=1.0)
    loss, logs, keys = task._step(torch.rand(4, 2, 80, 80))
    assert set(keys) == {"global"}
    assert "di_loss" not in logs and "cc_loss" not in logs
    assert torch.allclose(loss.detach(), logs["global_loss"])


def test_no_boxes_still_trains_other_terms() -> None:
    # Boxes as large as a whole view only match if both crops coincide, which never happens.
    task = DI3CLTask(**(SMALL | {"boxes": {"min_box_cells": 2.0}}))
    loss, logs, _ = task._step(torch.rand(4, 2, 80, 80))
    assert float(logs["boxes_per_image"]) == 0.0
    assert float(logs["di_loss"]) == 0.0
    loss.backward()
    assert task.model.conv1.weight.grad is not None
    assert task.model.conv1.weight.grad.abs().sum() > 0


@contextmanager
def _forbid_host_sync() -> Iterator[None]:
    names = ("item", "__bool__", "__float__", "__int__", "tolist")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("host-device synchronization in the training step")

    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, fail)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def test_step_reads_no_tensor_value_on_the_host() -> None:
    # On the meta device tensors have no values: any read of one on the host, and any
    # op whose output shape depends on values (boolean-mask indexing, nonzero), fails;
    # the patched methods also catch reads that meta tensors would answer.
    task = DI3CLTask(**SMALL).to("meta")
    images = torch.rand(4, 2, 80, 80, device="meta")
    with _forbid_host_sync():
        loss, _, keys = task._step(images)
        loss.backward()
        task.queue.enqueue(keys["global"])
        task.cc_queue.enqueue(keys["cc"])
    assert loss.device.type == "meta" and task.model.conv1.weight.grad is not None


def test_meta_device_catches_a_value_dependent_shape() -> None:
    # The guard above would miss this host sync (a boolean mask) without the meta device.
    pooled = torch.zeros(4, 3, device="meta")
    with pytest.raises(NotImplementedError):
        pooled[pooled.abs().sum(1) >= 0]


def test_dynamic_instance_loss_falls_over_a_few_steps(tmp_path: Path) -> None:
    # The InfoNCE terms rise while the queue fills with real keys (they start against
    # random unit vectors), so the total is no learning signal here; the DI regression
    # has a fixed chance level (2 for unrelated directions) and must fall below it.
    torch.manual_seed(0)
    task = DI3CLTask(**(SMALL | {"lr": 0.05, "memory_bank_size": 64}))
    di_losses: list[float] = []
    original = task._step

    def recording_step(
        images: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        loss, logs, keys = original(images)
        di_losses.append(float(logs["di_loss"]))
        return loss, logs, keys

    task._step = recording_step  # type: ignore[method-assign]
    trainer = quiet_trainer(tmp_path, max_epochs=8, log_every_n_steps=1)
    trainer.fit(task, DataLoader(_Shapes(16), batch_size=8, shuffle=True))
    first, last = sum(di_losses[:2]) / 2, sum(di_losses[-4:]) / 4
    assert len(di_losses) == 16
    assert last < 0.6 * first


def test_queues_and_pointer_resume_from_checkpoint(tmp_path: Path) -> None:
    task = DI3CLTask(**SMALL)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(task, DataLoader(_Shapes(8), batch_size=4))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    restored = DI3CLTask.load_from_checkpoint(path)
    assert int(restored.queue.ptr) == 8
    assert torch.equal(restored.queue.keys, task.queue.keys)
    assert torch.equal(restored.cc_queue.keys, task.cc_queue.keys)
    assert torch.equal(restored.model_momentum.conv1.weight, task.model_momentum.conv1.weight)


def test_view_and_box_options_round_trip_through_weights_only_checkpoints(
    tmp_path: Path,
) -> None:
    span = (25.0, 20.0)
    views = ViewOptions(brightness=0.0, rot90=True, speckle_looks=3.0, speckle_db_span=span)
    task = DI3CLTask(**(SMALL | {"views": views}))
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(task, DataLoader(_Shapes(4), batch_size=4))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    # Plain mappings in the checkpoint: TorchGeo reads checkpoints with weights_only=True.
    stored = torch.load(path, weights_only=True)["hyper_parameters"]
    assert stored["views"] == asdict(views) and stored["boxes"]["candidates"] == 16
    restored = DI3CLTask.load_from_checkpoint(path)
    assert restored.augmentation.options == views
    assert restored.box_matcher.options == BoxOptions(boxes_per_image=4, candidates=16)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"moco_momentum": 1.5}, r"moco_momentum must be in \[0, 1\]"),
        (
            {"boxes": {"boxes_per_image": 20, "candidates": 16}},
            r"boxes: candidates \(16\) must be at least boxes_per_image",
        ),
        ({"boxes": {"max_iou": 1.0}}, r"boxes: max_iou must be in \(0, 1\)"),
        ({"boxes": {"min_box_cells": 3.0}}, "min_box_cells=3.0 is 96 px .*more than the 64 px"),
        ({"boxes": {"max_box_iou": 0.5}}, r"boxes has no option\(s\) \['max_box_iou'\]"),
        ({"views": {"brightness": 1.5}}, r"views: brightness must be in \[0, 1\)"),
        ({"views": {"size": 32}}, r"views has no option\(s\) \['size'\]"),
        ({"key_bn_splits": 0}, "key_bn_splits must be at least 1"),
        ({"model": "vit_tiny_patch16_224"}, "needs a timm ResNet"),
    ],
)
def test_invalid_hyperparameters_are_rejected(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DI3CLTask(**(SMALL | override))  # type: ignore[arg-type]


def test_queues_are_excluded_from_ddp_buffer_broadcast() -> None:
    task = DI3CLTask(**SMALL)
    ignored = set(task._ddp_params_and_buffers_to_ignore)
    assert ignored == {"queue.keys", "queue.ptr", "cc_queue.keys", "cc_queue.ptr"}
    moco = DI3CLTask(**(SMALL | {"use_cc": False, "use_di": False}))
    assert set(moco._ddp_params_and_buffers_to_ignore) == {"queue.keys", "queue.ptr"}


def test_compile_backbones_runs_both_encoders_through_torch_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[object] = []
    calls: list[torch.nn.Module] = []

    def fake_compile(function: Callable[..., object]) -> Callable[..., object]:
        compiled.append(function)

        def wrapped(model: torch.nn.Module, images: torch.Tensor) -> object:
            calls.append(model)
            return function(model, images)

        return wrapped

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert not compiled and DI3CLTask(**SMALL)._taps is resnet_taps
    task = DI3CLTask(**SMALL, compile_backbones=True)
    assert compiled == [resnet_taps]
    loss, _, _ = task._step(torch.rand(4, 2, 80, 80))
    assert torch.isfinite(loss)
    assert calls == [task.model, task.model_momentum]


def _capture_first_key_bn(task: DI3CLTask) -> list[torch.Tensor]:
    """Record the output of the key encoder's first batch norm on each call."""
    outputs: list[torch.Tensor] = []
    task.model_momentum.bn1.register_forward_hook(
        lambda module, args, output: outputs.append(output.detach().clone())
    )
    return outputs


def test_key_encoder_batch_norm_statistics_do_not_span_the_batch() -> None:
    torch.manual_seed(0)
    task = DI3CLTask(**SMALL, key_bn_splits=4)
    outputs = _capture_first_key_bn(task)
    # Very different brightness per sample: full-batch statistics would leave each
    # group of the (permuted) batch with a clearly non-zero mean.
    images = torch.rand(8, 2, 64, 64) * 0.2 + torch.linspace(0, 0.8, 8).view(8, 1, 1, 1)
    task._key_features(images)
    out = outputs[0]
    bias = task.model_momentum.bn1.bias.view(1, -1)
    groups = out.reshape(2, 4, *out.shape[1:]).mean(dim=(0, 3, 4))  # [group, C]
    torch.testing.assert_close(groups, bias.expand(4, -1), atol=1e-4, rtol=0.0)
    halves = out.reshape(2, 4, *out.shape[1:]).mean(dim=(1, 3, 4))  # contiguous halves
    assert (halves - bias).abs().max() > 0.1


def test_key_features_return_in_batch_order_and_one_split_is_plain_batch_norm() -> None:
    torch.manual_seed(1)
    task = DI3CLTask(**SMALL, key_bn_splits=1)
    images = torch.rand(6, 2, 64, 64)
    key3, key4 = task._key_features(images)
    with torch.no_grad():
        ref3, ref4 = resnet_taps(task.model_momentum, images)
    torch.testing.assert_close(key4, ref4)
    torch.testing.assert_close(key3, ref3)


def test_under_ddp_the_batch_shuffle_replaces_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    task = DI3CLTask(**SMALL, key_bn_splits=4)
    calls: list[int] = []

    def shuffle(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(images.shape[0])
        return images, torch.arange(images.shape[0])

    monkeypatch.setattr(di3cl_module, "is_distributed", lambda: True)
    monkeypatch.setattr(di3cl_module, "batch_shuffle_distributed", shuffle)
    monkeypatch.setattr(di3cl_module, "batch_unshuffle_distributed", lambda f, inverse: f[inverse])
    images = torch.rand(8, 2, 64, 64)
    _, key4 = task._key_features(images)
    assert calls == [8]
    assert all(layer.splits == 1 for layer in task._key_batch_norms)
    with torch.no_grad():
        _, ref4 = resnet_taps(task.model_momentum, images)
    torch.testing.assert_close(key4, ref4)


def test_speckle_span_comes_from_the_datamodule_normalization() -> None:
    class _DataModule:
        aug = ImageOnly(RangeNormalize([-25.0, -32.0], [0.0, -5.0]))

    option = "DI3CLTask: views.speckle_db_span"
    assert normalization_db_span(_DataModule(), option) == [25.0, 27.0]
    with pytest.raises(ValueError, match=r"pass DI3CLTask: views\.speckle_db_span"):
        normalization_db_span(object(), option)


def test_small_views_warn_that_dynamic_instances_degenerate() -> None:
    with pytest.warns(UserWarning, match=r"layer4 only 2 x 2 cell\(s\)"):
        DI3CLTask(**SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DI3CLTask(**(SMALL | {"size": 128}))
        DI3CLTask(**SMALL, use_di=False)


def test_warm_up_counts_epochs_of_batches_under_max_steps(tmp_path: Path) -> None:
    from lightning.pytorch import Callback

    rates: list[float] = []

    class _Record(Callback):
        def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    task = DI3CLTask(**(SMALL | {"lr": 0.4, "warmup_epochs": 1.0}))
    # 4 batches per epoch, 8 steps and no epoch limit: 4 warm-up steps, then cosine.
    trainer = quiet_trainer(tmp_path, max_steps=8, max_epochs=-1, callbacks=[_Record()])
    trainer.fit(task, DataLoader(_Shapes(16), batch_size=4))
    assert rates[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert rates[4] == pytest.approx(0.4) and rates[-1] < 0.1


def test_fit_reads_the_speckle_span_from_the_datamodule(tmp_path: Path) -> None:
    from torchgeo_dic3l.datamodules import SyntheticSARPretrainDataModule

    datamodule = SyntheticSARPretrainDataModule(batch_size=4, size=64, length=8, val_length=4)
    task = DI3CLTask(**(SMALL | {"views": {"speckle_looks": 2.0}}))
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(task, datamodule=datamodule)
    speckle = task.augmentation.speckle
    assert speckle is not None and speckle.span is not None
    expected = normalization_db_span(datamodule, "views.speckle_db_span")
    assert speckle.db_span == expected
    assert speckle.span.flatten().tolist() == pytest.approx(expected)

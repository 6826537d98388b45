"""The linear and frozen protocols: cached encoder features, exact steps, one test pass."""

import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import lightning
import numpy as np
import pytest
import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader
from torchgeo.tasks import SemanticSegmentation

from torchgeo_dic3l.benchmark.cached import encode, fit_decoder, validation_loss
from torchgeo_dic3l.benchmark.finetune import (
    TaskData,
    build_model,
    build_task_data,
    finetune,
    fit_lightning,
)
from torchgeo_dic3l.benchmark.grid import InitSpec, RunSpec, TaskSpec, TrainingSpec
from torchgeo_dic3l.benchmark.metrics import segmentation_scores
from torchgeo_dic3l.datasets import LabelledSARScene
from torchgeo_dic3l.evaluation import predict_linear_head

# The package exports the function finetune under the module's name.
finetune_module = importlib.import_module("torchgeo_dic3l.benchmark.finetune")
REPO = Path(__file__).resolve().parents[2]
# 8 training patches in batches of 4: 2 steps per epoch, so 3 steps end mid-epoch.
TINY_WATER = {"task": "water", "size": 32, "length": 8, "val_length": 4, "test_length": 4}
STEPS = TrainingSpec(steps=3, batch_size=4, accelerator="cpu")


def _run(init: InitSpec, protocol: str) -> RunSpec:
    return RunSpec(init, TaskSpec("water", "synthetic", TINY_WATER), "unet", protocol, 1.0, 0)


@pytest.fixture
def optimizer_steps() -> Iterator[list[int]]:
    """Count every optimizer step taken while the test runs."""
    steps: list[int] = []
    handle = register_optimizer_step_post_hook(lambda *args: steps.append(1))
    yield steps
    handle.remove()


@pytest.fixture
def encoder_inputs(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Every patch that the encoder of the next finetune() sees, in order."""
    seen: list[Tensor] = []
    build = finetune_module.build_model

    def recording(run: RunSpec, data: TaskData, training: TrainingSpec) -> SemanticSegmentation:
        model = build(run, data, training)
        model.model.encoder.register_forward_pre_hook(
            lambda module, inputs: seen.extend(inputs[0].detach().cpu())
        )
        return model

    monkeypatch.setattr(finetune_module, "build_model", recording)
    return seen


def _normalized(data: TaskData, split: str) -> Tensor:
    datamodule = data.datamodule
    datamodule.setup(split)
    dataset = getattr(datamodule, f"{split}_dataset")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return datamodule.aug({"image": images})["image"]


def _times_seen(patches: Tensor, seen: list[Tensor]) -> list[int]:
    return [sum(torch.equal(patch, other) for other in seen) for patch in patches]


def _encoder_state(model: SemanticSegmentation) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.model.encoder.state_dict().items()}


@pytest.mark.parametrize("protocol", ["linear", "frozen", "full"])
def test_exact_steps_and_one_pass_over_the_test_split(
    protocol: str, optimizer_steps: list[int], encoder_inputs: list[Tensor]
) -> None:
    result = finetune(_run(InitSpec("random", "random"), protocol), STEPS, figure_patches=1)
    # --steps 3 used to round up to whole epochs (4 steps here).
    assert len(optimizer_steps) == result.row["train_steps"] == 3
    assert result.row["epochs"] == 2
    data = build_task_data(TaskSpec("water", "synthetic", TINY_WATER), 1.0, 0, STEPS)
    test = _normalized(data, "test")
    assert _times_seen(test, encoder_inputs) == [1, 1, 1, 1]


def test_frozen_encodes_each_patch_once_and_keeps_the_encoder(
    di3cl_checkpoint: Path, optimizer_steps: list[int], encoder_inputs: list[Tensor]
) -> None:
    run = _run(InitSpec("di3cl", str(di3cl_checkpoint)), "frozen")
    data = build_task_data(run.task, 1.0, 0, STEPS)
    initial = build_model(run, data, STEPS)
    result = finetune(run, STEPS, figure_patches=0)
    assert result.model is not None
    saved = torch.load(di3cl_checkpoint, weights_only=True)["state_dict"]
    after = _encoder_state(result.model)
    # Weights and BatchNorm statistics exactly as pre-trained.
    assert all(torch.equal(after[k], saved[f"model.{k}"]) for k in after)
    decoder = result.model.model.decoder.state_dict()
    assert not torch.equal(
        decoder["blocks.0.conv1.0.weight"],
        initial.model.decoder.state_dict()["blocks.0.conv1.0.weight"],
    )
    assert len(optimizer_steps) == 3
    # The encoder saw every training and validation patch once, not once per step.
    for split in ("train", "val"):
        patches = _normalized(data, split)
        assert _times_seen(patches, encoder_inputs) == [1] * len(patches)
    assert len(encoder_inputs) == 8 + 4 + 4


def test_cached_decoder_training_matches_lightning() -> None:
    # One batch per epoch, so both see the same batches; patience 1 lowers the learning
    # rate on the plateau after the second epoch, in both.
    training = TrainingSpec(batch_size=4, patience=1, accelerator="cpu")
    task = TaskSpec("lc", "synthetic", {**TINY_WATER, "task": "landcover", "length": 4})
    run = RunSpec(InitSpec("random", "random"), task, "unet", "frozen", 1.0, 0)
    data = build_task_data(task, 1.0, 0, training)
    models = []
    for _ in range(3):
        lightning.seed_everything(0, verbose=False)
        models.append(build_model(run, data, training))
    through_lightning, cached, untrained = models
    datamodule = data.datamodule
    device = torch.device("cpu")
    loader = DataLoader(datamodule.train_dataset, 4, collate_fn=datamodule.collate_fn)  # type: ignore[arg-type]
    train = encode(cached.model, loader, datamodule.aug, device)
    val = encode(cached.model, datamodule.val_dataloader(), datamodule.aug, device)
    fit_lightning(through_lightning, data, training, 4)
    assert fit_decoder(cached, train, val, 4, 4, seed=0) == 4
    lightning_loss = validation_loss(through_lightning, val, 4)
    assert validation_loss(cached, val, 4) == pytest.approx(lightning_loss, rel=1e-2)
    assert abs(validation_loss(untrained, val, 4) - lightning_loss) > 0.05


def test_linear_row_is_scored_with_the_fitted_head(di3cl_checkpoint: Path) -> None:
    run = _run(InitSpec("di3cl", str(di3cl_checkpoint)), "linear")
    result = finetune(run, STEPS, figure_patches=1)
    row, head, model = result.row, result.linear_head, result.model
    assert head is not None and model is not None
    assert row["status"] == "ok" and row["protocol"] == "linear" and row["train_steps"] == 3
    assert set(row["f1_per_class"]) == {"background", "water"}
    assert row["num_test_pixels"] == 4 * 32 * 32
    # The four residual stages of the ResNet-18 feed the head, not the stem.
    assert [cast(Tensor, stage.mean).numel() for stage in head.stages] == [64, 128, 256, 512]
    saved = torch.load(di3cl_checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.model.encoder.conv1.weight, saved["model.conv1.weight"])
    # The row's scores are those of head(encoder(test patches)).
    data = build_task_data(run.task, 1.0, 0, STEPS)
    images = _normalized(data, "test")
    masks = torch.stack([data.datamodule.test_dataset[i]["mask"] for i in range(4)])  # type: ignore[index]
    with torch.no_grad():
        stages = cast(list[Tensor], model.model.encoder(images))[2:]
        predictions = predict_linear_head(head, stages, (32, 32))
    scores = segmentation_scores(predictions, masks, ["background", "water"])
    assert row["oa"] == pytest.approx(scores.oa) and row["miou"] == pytest.approx(scores.miou)
    (example,) = result.examples
    assert torch.equal(example.prediction, predictions[example.index])


def test_command_line_linear_protocol_on_a_scene(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write_geotiff: Callable[[Path, np.ndarray], str],
) -> None:
    # A 160 x 160 two-channel power scene, land left and water right, unlabelled top rows.
    rng = np.random.default_rng(0)
    label = (1 + (np.arange(160) >= 80))[None].repeat(160, 0).astype(np.uint8)
    label[:8] = 0
    level = np.stack([np.where(label == 2, 0.1, 0.01), np.where(label == 2, 0.01, 0.001)])
    power = (level * rng.gamma(4.0, 0.25, size=level.shape)).astype(np.float32)
    image = write_geotiff(tmp_path / "vv_vh.tif", power)
    labels = write_geotiff(tmp_path / "scene.tif", label[None])
    spec = importlib.util.spec_from_file_location(
        "benchmark_cli", REPO / "experiments" / "benchmark.py"
    )
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    output = tmp_path / "out"
    scene = ["--scene-images", image, "--scene-label", labels, "--scene-classes", "land,water"]
    scene += ["--scene-label-values", "1", "2", "--scene-ignore-values", "0"]
    scene += ["--scene-patch-size", "32", "--scene-block-size", "64", "--scene-gap", "0"]
    status = cli.main(
        [
            *scene,
            "--protocols",
            "linear",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--accelerator",
            "cpu",
            "--figure-patches",
            "1",
            "--output",
            str(output),
            "--no-progress",
        ]
    )
    assert status == 0
    assert "| Initialization | F1 land | F1 water | OA | Kappa | mIoU | Seeds |" in (
        capsys.readouterr().out
    )
    (row,) = json.loads((output / "results.json").read_text())
    assert row["status"] == "ok" and row["protocol"] == "linear" and row["train_steps"] == 3
    test = LabelledSARScene(
        split="test",
        images=[image],
        label=labels,
        classes=["land", "water"],
        label_values=[1, 2],
        ignore_values=[0],
        patch_size=32,
        block_size=64,
        gap=0,
    )
    labelled = sum(int((test[i]["mask"] != 255).sum()) for i in range(len(test)))
    assert 0 < row["num_test_pixels"] == labelled
    group = "scene_unet_linear_lf1"
    assert "## scene · unet · linear · 100 % labels" in (output / "results.md").read_text()
    assert (output / "figures" / f"predictions_{group}.png").stat().st_size > 1000
    assert (output / "figures" / f"f1_{group}.png").is_file()
    assert (output / "predictions" / f"{group}_seed0_random.npz").is_file()

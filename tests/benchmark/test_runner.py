import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from lightning.pytorch import Trainer
from torchgeo.tasks import SemanticSegmentation

from torchgeo_dic3l.benchmark import runner
from torchgeo_dic3l.benchmark.finetune import (
    InitError,
    RunResult,
    build_model,
    build_task_data,
    finetune,
)
from torchgeo_dic3l.benchmark.grid import (
    GridSpec,
    InitSpec,
    RunSpec,
    TaskSpec,
    TrainingSpec,
    run_identity,
)
from torchgeo_dic3l.datasets import LabelledSARScene
from torchgeo_dic3l.models import export_weights
from torchgeo_dic3l.tasks import DI3CLTask

REPO = Path(__file__).resolve().parents[2]
TINY_WATER = {"task": "water", "size": 32, "length": 8, "val_length": 4, "test_length": 4}
TRAINING = TrainingSpec(epochs=1, batch_size=4, accelerator="cpu")
ROW_KEYS = {
    "init",
    "task",
    "decoder",
    "protocol",
    "label_fraction",
    "seed",
    "miou",
    "oa",
    "kappa",
    "f1_per_class",
    "iou_per_class",
    "train_seconds",
    "status",
    "error",
    "backbone",
    "epochs",
    "num_train_patches",
}


def _run(init: InitSpec, protocol: str = "full", seed: int = 0) -> RunSpec:
    return RunSpec(init, TaskSpec("water", "synthetic", TINY_WATER), "unet", protocol, 1.0, seed)


def _encoder_state(model: SemanticSegmentation) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.model.encoder.state_dict().items()}


def _torchgeo_test_accuracy(model: SemanticSegmentation, run: RunSpec) -> float:
    """TorchGeo's own test_OverallAccuracy of a trained model, to check our scores by."""
    data = build_task_data(run.task, run.label_fraction, run.seed, TRAINING)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (logged,) = trainer.test(model, datamodule=data.datamodule, verbose=False)
    return float(logged["test_OverallAccuracy"])


def test_grid_end_to_end_with_a_failing_init(di3cl_checkpoint: Path, tmp_path: Path) -> None:
    grid = GridSpec.from_dict(
        {
            "inits": {
                "random": "random",
                "di3cl": str(di3cl_checkpoint),
                "missing": str(tmp_path / "missing.ckpt"),
            },
            "tasks": [{"name": "water", "synthetic": TINY_WATER}],
            "training": {"epochs": 1, "batch_size": 4, "accelerator": "cpu"},
        }
    )
    output = tmp_path / "out"
    rows = runner.run_grid(grid, output, progress=False)

    assert json.loads((output / "results.json").read_text()) == rows
    by_init = {row["init"]: row for row in rows}
    assert list(by_init) == ["random", "di3cl", "missing"]
    for name in ("random", "di3cl"):
        row = by_init[name]
        assert set(row) >= ROW_KEYS
        assert row["status"] == "ok" and row["error"] is None
        assert 0 <= row["oa"] <= 1 and -1 <= row["kappa"] <= 1 and 0 <= row["miou"] <= 1
        assert set(row["f1_per_class"]) == set(row["iou_per_class"]) == {"background", "water"}
        assert row["num_train_patches"] == 8 and row["num_test_pixels"] == 4 * 32 * 32
        assert row["train_seconds"] > 0 and row["train_steps"] == 2
    failed = by_init["missing"]
    assert set(failed) >= ROW_KEYS
    assert failed["status"] == "failed" and failed["miou"] is None
    assert "checkpoint or weights file not found" in failed["error"]
    assert (output / "errors" / f"{failed['run_id']}.log").is_file()

    markdown = (output / "results.md").read_text()
    assert "| Initialization | F1 background | F1 water | OA | Kappa | mIoU | Seeds |" in markdown
    assert "| random | " in markdown and "| di3cl | " in markdown
    assert "| missing | - | - | - | - | - | 0/1 |" in markdown
    assert "## Failed or skipped runs" in markdown and "missing.ckpt" in markdown
    group = "water_unet_full_lf1"
    for figure in (f"f1_{group}.png", f"predictions_{group}.png"):
        assert (output / "figures" / figure).stat().st_size > 1000
    assert (output / "predictions" / f"{group}_seed0_di3cl.npz").is_file()


def test_resume_keeps_rows_and_init_failures_skip_later_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = GridSpec.from_dict(
        {
            "inits": {"gone": str(tmp_path / "gone.pth")},
            "tasks": [{"name": "water", "synthetic": TINY_WATER}],
            "seeds": [0, 1],
            "figure_patches": 0,
        }
    )
    rows = runner.run_grid(grid, tmp_path, progress=False)
    assert [row["status"] for row in rows] == ["failed", "skipped"]
    assert rows[1]["error"].startswith("init failed earlier: init 'gone'")

    ok = {**rows[0], "status": "ok", "error": None, "miou": 0.5, "oa": 0.9, "kappa": 0.4}
    ok |= {"f1_per_class": {"background": 0.9}, "iou_per_class": {"background": 0.8}}
    (tmp_path / "results.json").write_text(json.dumps([ok]))

    def refuse(*args: object) -> None:
        raise AssertionError("a resumed run was run again")

    monkeypatch.setattr(runner, "finetune", lambda *args: refuse())
    resumed = runner.run_grid(grid, tmp_path, progress=False, resume=True)
    assert resumed[0] == ok
    assert resumed[1]["status"] == "failed"  # seed 1 ran (and hit the patched finetune)


def test_checkpoint_weights_match_torchgeo_route_and_stay_frozen(
    di3cl_checkpoint: Path,
) -> None:
    init = InitSpec("di3cl", str(di3cl_checkpoint))
    data = build_task_data(_run(init).task, 1.0, 0, TRAINING)
    ours = build_model(_run(init), data, TRAINING)
    # TorchGeo's own route: SemanticSegmentation(weights="x.ckpt") strips "model.".
    theirs = SemanticSegmentation(
        model="unet",
        backbone="resnet18",
        weights=str(di3cl_checkpoint),
        in_channels=2,
        num_classes=2,
    )
    saved = torch.load(di3cl_checkpoint, weights_only=True)["state_dict"]
    expected = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
    for model in (ours, theirs):
        state = model.model.encoder.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)

    frozen_run = _run(init, "frozen")
    frozen = finetune(frozen_run, TRAINING, figure_patches=1)
    assert frozen.model is not None
    after = _encoder_state(frozen.model)
    # Frozen: weights and BatchNorm statistics exactly as pre-trained.
    assert all(torch.equal(after[k], expected[k]) for k in expected)
    assert frozen.row["oa"] == pytest.approx(_torchgeo_test_accuracy(frozen.model, frozen_run))
    assert len(frozen.examples) == 1 and frozen.examples[0].image.shape == (2, 32, 32)

    full = finetune(_run(init, "full"), TRAINING, figure_patches=0)
    assert full.model is not None
    changed = _encoder_state(full.model)
    assert not torch.equal(changed["conv1.weight"], expected["conv1.weight"])


def test_same_seed_same_model_and_scores_other_seed_other_model() -> None:
    task = TaskSpec("water", "synthetic", {**TINY_WATER, "length": 4, "test_length": 2})
    results = [
        finetune(
            RunSpec(InitSpec("random", "random"), task, "unet", "full", 1.0, seed), TRAINING, 0
        )
        for seed in (3, 3, 4)
    ]
    states = [result.model.state_dict() for result in results if result.model is not None]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert results[0].row["f1_per_class"] == results[1].row["f1_per_class"]
    assert not torch.equal(
        states[0]["model.decoder.blocks.0.conv1.0.weight"],
        states[2]["model.decoder.blocks.0.conv1.0.weight"],
    )


def test_plain_state_dict_and_channel_mismatch(
    make_di3cl_checkpoint: Callable[..., DI3CLTask], tmp_path: Path
) -> None:
    task = make_di3cl_checkpoint(tmp_path / "one_channel.ckpt", in_channels=1)
    exported = tmp_path / "exported.pth"
    torch.save(task.model.state_dict(), exported)
    run = _run(InitSpec("exported", str(exported)))
    data = build_task_data(run.task, 1.0, 0, TRAINING)
    with pytest.raises(InitError, match=r"take 1 input channel\(s\) but the task's images have 2"):
        build_model(run, data, TRAINING)

    torch.save(timm.create_model("resnet34", in_chans=2, num_classes=0).state_dict(), exported)
    with pytest.raises(InitError, match=r"do not fit the ResNetEncoder encoder \(0 missing key"):
        build_model(run, data, TRAINING)

    two = make_di3cl_checkpoint(tmp_path / "two.ckpt")
    torch.save(two.model.state_dict(), exported)
    model = build_model(run, data, TRAINING)
    assert torch.equal(model.model.encoder.conv1.weight, two.model.conv1.weight)


def test_init_errors_are_clear() -> None:
    data = build_task_data(TaskSpec("water", "synthetic", TINY_WATER), 1.0, 0, TRAINING)
    unknown = _run(InitSpec("w", "NoSuch_Weights.X"))
    with pytest.raises(InitError, match="neither an existing file nor a TorchGeo weight name"):
        build_model(unknown, data, TRAINING)
    resnet50 = _run(InitSpec("s1", "ResNet50_Weights.SENTINEL1_ALL_MOCO"))
    with pytest.raises(
        InitError, match="weights for resnet50, but the grid's backbone is resnet18"
    ):
        build_model(resnet50, data, TRAINING)


def test_batch_size_is_capped_by_the_training_set() -> None:
    task = TaskSpec("water", "synthetic", {**TINY_WATER, "length": 10})
    with pytest.warns(UserWarning, match="leaves 3 training patch.*lowered from 16 to 3"):
        data = build_task_data(task, 0.3, 0, TrainingSpec(batch_size=16))
    assert data.num_train_patches == 3 and data.batch_size == 3
    assert len(data.datamodule.train_dataloader()) == 1


def test_real_scene_smoke(polsar_sf: Path, tmp_path: Path) -> None:
    t3 = polsar_sf / "T3"
    scene = {
        "images": [str(t3 / "T11.bin"), str(t3 / "T33.bin")],
        "label": str(polsar_sf / "SF-AIRSAR-label2d.png"),
        "classes": ["bare_soil", "mountain", "water", "urban", "vegetation"],
        "label_values": [1, 2, 3, 4, 5],
        "ignore_values": [0],
        "patch_size": 64,
        "gap": 16,
        "block_size": 128,
        "split_seed": 20,
        "split_method": "random",  # the SF configs' split (73 training patches)
    }
    run = RunSpec(
        InitSpec("random", "random"), TaskSpec("sf", "scene", scene), "unet", "full", 0.1, 0
    )
    result = finetune(run, TRAINING, figure_patches=1)
    row = result.row
    assert row["status"] == "ok" and row["num_train_patches"] == 7
    assert list(row["f1_per_class"]) == scene["classes"]
    # Unlabelled pixels are left out: the scores count exactly the labelled test pixels.
    test = LabelledSARScene(split="test", **scene)
    labelled = sum(int((test[i]["mask"] != 255).sum()) for i in range(len(test)))
    assert row["num_test_patches"] == len(test)
    assert 0 < row["num_test_pixels"] == labelled < len(test) * 64 * 64
    assert result.model is not None
    assert row["oa"] == pytest.approx(_torchgeo_test_accuracy(result.model, run))


def test_command_line_runs_a_yaml_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "benchmark_cli", REPO / "experiments" / "benchmark.py"
    )
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    config = tmp_path / "grid.yaml"
    config.write_text(
        "inits: {random: random}\n"
        "tasks: [water]\n"
        "synthetic: {size: 32, length: 4, val_length: 2, test_length: 2}\n"
        "training: {epochs: 1, batch_size: 4, accelerator: cpu}\n"
    )
    output = tmp_path / "out"
    status = cli.main(["--config", str(config), "--output", str(output), "--no-progress"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "1 run(s) ->" in printed
    assert "| Initialization | F1 background | F1 water | OA | Kappa | mIoU | Seeds |" in printed
    assert f"1/1 run(s) succeeded. Outputs in {output.resolve()}" in printed
    assert (output / "results.md").is_file() and (output / "grid.yaml").is_file()


def test_exported_weights_are_hash_checked(di3cl_checkpoint: Path, tmp_path: Path) -> None:
    exported = export_weights(di3cl_checkpoint, tmp_path / "w", "bench", "synthetic", "repo")
    run = _run(InitSpec("exported", str(exported.path)))
    data = build_task_data(run.task, 1.0, 0, TRAINING)
    model = build_model(run, data, TRAINING)
    saved = torch.load(di3cl_checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.model.encoder.conv1.weight, saved["model.conv1.weight"])
    exported.path.write_bytes(exported.path.read_bytes()[:-10])
    with pytest.raises(InitError, match="truncated, corrupted or was modified"):
        build_model(run, data, TRAINING)


def _fake_finetune(calls: list[str]) -> Callable[..., RunResult]:
    """A finetune that records the run and returns a successful row at once."""

    def fake(run: RunSpec, training: TrainingSpec, figure_patches: int = 2) -> RunResult:
        calls.append(run.run_id)
        row = {**run_identity(run), "backbone": training.backbone, "status": "ok"}
        row |= {"error": None, "miou": 0.5, "oa": 0.9, "kappa": 0.4, "epochs": 1}
        return RunResult(row={**row, "f1_per_class": {}, "iou_per_class": {}})

    return fake


def _grid(checkpoint: Path, **training: Any) -> GridSpec:
    return GridSpec.from_dict(
        {
            "inits": {"random": "random", "di3cl": str(checkpoint)},
            "tasks": [{"name": "water", "synthetic": TINY_WATER}],
            "training": {"epochs": 1, "batch_size": 4, **training},
            "figure_patches": 0,
        }
    )


@pytest.fixture
def finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[str]]:
    """A grid run to the end with a fake finetune: (output, init file, runs called)."""
    checkpoint = tmp_path / "di3cl.pth"
    checkpoint.write_bytes(b"weights v1")
    calls: list[str] = []
    monkeypatch.setattr(runner, "finetune", _fake_finetune(calls))
    output = tmp_path / "out"
    runner.run_grid(_grid(checkpoint), output, progress=False)
    return output, checkpoint, calls


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 2}, "training.epochs: 1 -> 2"),
        ({"lr": 0.01}, "training.lr: 0.001 -> 0.01"),
        ({"backbone": "resnet50"}, "training.backbone: 'resnet18' -> 'resnet50'"),
    ],
)
def test_resume_refuses_rows_of_other_training_settings(
    finished: tuple[Path, Path, list[str]], change: dict[str, Any], message: str
) -> None:
    output, checkpoint, calls = finished
    before = {name: (output / name).read_text() for name in ("grid.yaml", "results.json")}
    with pytest.raises(runner.ResumeError, match=r"2 successful row\(s\)") as caught:
        runner.run_grid(_grid(checkpoint, **change), output, progress=False, resume=True)
    assert f"water_unet_full_lf1_seed0_random: {message}" in str(caught.value)
    assert str(output / "results.json") in str(caught.value)
    # Nothing rewritten: grid.yaml still describes the rows.
    assert {name: (output / name).read_text() for name in before} == before
    assert len(calls) == 2


def test_resume_refuses_another_or_rewritten_init_file(
    finished: tuple[Path, Path, list[str]],
) -> None:
    output, checkpoint, _ = finished
    other = checkpoint.with_name("other.pth")
    other.write_bytes(b"weights v1")
    with pytest.raises(
        runner.ResumeError, match=r"init\.source: '.*di3cl\.pth' -> '.*other\.pth'"
    ):
        runner.run_grid(_grid(other), output, progress=False, resume=True)
    checkpoint.write_bytes(b"weights v2, pre-trained again")
    with pytest.raises(runner.ResumeError, match=r"seed0_di3cl: init_sha256: '[0-9a-f]{64}' ->"):
        runner.run_grid(_grid(checkpoint), output, progress=False, resume=True)


def test_resume_keeps_matching_rows_and_runs_new_ones(
    finished: tuple[Path, Path, list[str]],
) -> None:
    output, checkpoint, calls = finished
    grid = GridSpec.from_dict({**_grid(checkpoint).to_dict(), "seeds": [0, 1]})
    rows = runner.run_grid(grid, output, progress=False, resume=True)
    assert calls[2:] == ["water_unet_full_lf1_seed1_random", "water_unet_full_lf1_seed1_di3cl"]
    assert [row["spec"]["seed"] for row in rows] == [0, 0, 1, 1]
    assert rows[1]["spec"]["init"]["source"] == str(checkpoint)


def test_resume_refuses_rows_without_a_specification(
    finished: tuple[Path, Path, list[str]],
) -> None:
    output, checkpoint, _ = finished
    rows = json.loads((output / "results.json").read_text())
    (output / "results.json").write_text(json.dumps([{**rows[0], "spec": None}]))
    with pytest.raises(runner.ResumeError, match="seed0_random: the row stores no specification"):
        runner.run_grid(_grid(checkpoint), output, progress=False, resume=True)


def test_damaged_results_file_is_named(finished: tuple[Path, Path, list[str]]) -> None:
    output, checkpoint, _ = finished
    results = output / "results.json"
    results.write_text(results.read_text()[:50])
    with pytest.raises(runner.ResumeError, match=rf"cannot resume from {results}: .*line"):
        runner.run_grid(_grid(checkpoint), output, progress=False, resume=True)


def test_spec_changes_lists_every_difference() -> None:
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}}
    new = {"a": 1, "b": {"c": [1, 3]}, "e": None}
    assert runner.spec_changes(old, new) == [
        "b.c: [1, 2] -> [1, 3]",
        "b.d: 'x' -> '(absent)'",
        "e: '(absent)' -> None",
    ]


def test_bad_task_data_stops_the_grid_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runner, "finetune", _fake_finetune(calls))
    scene = {"images": [str(tmp_path / "missing.tif")], "label": "x.tif", "classes": ["a", "b"]}
    grid = GridSpec.from_dict(
        {
            "inits": ["random"],
            "tasks": ["water", {"name": "sf", "scene": scene}],
            "synthetic": {k: v for k, v in TINY_WATER.items() if k != "task"},
            "seeds": [0, 1],
        }
    )
    output = tmp_path / "out"
    with pytest.raises(runner.TaskDataError, match=r"task 'sf': .*missing\.tif"):
        runner.run_grid(grid, output, progress=False)
    assert calls == [] and not output.exists()


def test_command_line_reports_a_refused_resume(
    finished: tuple[Path, Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    output, checkpoint, _ = finished
    spec = importlib.util.spec_from_file_location(
        "benchmark_cli", REPO / "experiments" / "benchmark.py"
    )
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (output / "results.json").write_text("[{")
    flags = ["--inits", "random", f"di3cl={checkpoint}", "--tasks", "water", "--resume"]
    status = cli.main([*flags, "--output", str(output), "--no-progress"])
    assert status == 2
    assert f"error: cannot resume from {output / 'results.json'}" in capsys.readouterr().err

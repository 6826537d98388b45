"""Smoke test of experiments/throughput.py and rule checks of experiments/box_loop.py."""

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from box_checks import check_pairs, usable

from torchgeo_dic3l.ssl.box_matching import BoxOptions
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewGeometry, ViewOptions

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"

REQUIRED_NUMBERS = (
    "batch_size",
    "image_size",
    "dic3l_step_ms",
    "mocov2_step_ms",
    "torchgeo_moco_step_ms",
    "step_ratio",
    "views_ms",
    "box_match_ms",
    "box_loop_ms",
    "box_match_big_ms",
    "box_loop_big_ms",
    "roi_heads_ms",
)


def load(name: str) -> ModuleType:
    """Import a script of experiments/ as a module."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every key of nested JSON objects."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            paths |= {prefix + key} | key_paths(item, f"{prefix}{key}.")
    return paths


def test_throughput_script_writes_complete_json(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        str(EXPERIMENTS / "throughput.py"),
        *("--batch-size", "4", "--image-size", "64", "--steps", "2", "--warmup", "0"),
        *("--box-batch", "16", "--box-repeats", "2", "--memory-bank-size", "256"),
        *("--threads", "1", "--max-step-ratio", "1e9", "--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["backbone"] == "resnet18"
    for key in REQUIRED_NUMBERS:
        assert positive_finite(result[key]), (key, result[key])
    for key in ("images_per_s", "peak_mem_mb"):
        assert set(result[key]) == {"dic3l", "mocov2", "torchgeo_moco"}
        assert all(positive_finite(v) for v in result[key].values()), result[key]
    # A target's limit is its flag's value.
    assert result["targets"]["step_ratio"] == {
        "value": result["step_ratio"],
        "limit": "<= 1000000000.0",
        "met": True,
    }
    assert all(len(times) == 2 for times in result["step_times_ms"].values())
    assert result["host_sync_free"] is True
    for key in ("cpu_model", "torch_threads", "torch_version"):
        assert result["hardware"][key]
    assert result["hardware"]["torch_threads"] == 1
    assert "throughput.py" in result["command"]
    # Every key of the results kept in docs/measurements/ is still written.
    kept = sorted((ROOT / "docs" / "measurements").glob("h100_*.json"))
    assert kept
    for path in kept:
        assert key_paths(json.loads(path.read_text())) <= key_paths(result), path.name
    # The same numbers are printed as a table.
    assert "step ratio DI3CL / MoCo v2" in done.stdout
    assert f"{result['dic3l_step_ms']:.1f}" in done.stdout


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run single-threaded: on a busy 2-core machine two threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_step_driver_does_what_training_does() -> None:
    throughput = load("throughput")
    settings, _ = throughput.parse_args(
        ["--batch-size", "4", "--image-size", "32", "--memory-bank-size", "64"]
    )
    cpu = torch.device("cpu")
    task, optimizer = throughput.build_di3cl(settings, cpu, full=True)
    task.hparams["moco_momentum"] = 0.5  # large EMA steps, easy to check
    step = throughput.make_step(task, optimizer, settings, cpu)
    weights = task.model.conv1.weight.detach().clone()
    images = torch.rand(4, 2, 32, 32)
    step(images)
    # Both queues took the batch's keys, and SGD moved the query encoder.
    assert int(task.queue.ptr) == 4 and int(task.cc_queue.ptr) == 4
    assert not torch.allclose(task.model.conv1.weight, weights)
    query, key = task.model.conv1.weight.detach().clone(), task.model_momentum.conv1.weight
    key = key.detach().clone()
    step(images)
    assert int(task.queue.ptr) == 8
    # The momentum encoder moved halfway to the query encoder before the second step.
    assert torch.allclose(task.model_momentum.conv1.weight, (key + query) / 2, atol=1e-6)
    assert not torch.allclose(task.model_momentum.conv1.weight, key)


def box_loop_geometries(size: int) -> tuple[ViewGeometry, ViewGeometry]:
    """Random MoCo views with flips and turns, plus a barely and a non-overlapping pair."""
    torch.manual_seed(0)
    aug = TwoViewAugmentation(size, ViewOptions(hflip_p=0.5, vflip_p=0.5, rot90=True))
    geom1 = aug.sample_geometry(24, 300, 200, torch.device("cpu"))
    geom2 = aug.sample_geometry(24, 300, 200, torch.device("cpu"))
    geom1.crops[-2:] = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 50.0, 50.0]])
    geom2.crops[-2:] = torch.tensor([[96.0, 0.0, 196.0, 100.0], [60.0, 60.0, 100.0, 100.0]])
    return geom1, geom2


def test_box_loop_follows_the_match_boxes_rules() -> None:
    box_loop = load("box_loop")
    size, n, max_iou = 64, 10, 0.5
    min_box = 32 / 448 * size
    geom1, geom2 = box_loop_geometries(size)
    pairs = box_loop.loop_match_boxes(
        geom1, geom2, size, BoxOptions(boxes_per_image=n, min_box_cells=min_box / 32), seed=0
    )
    # The loop is the reference the vectorized matching is timed against: its pairs
    # have every property of match_boxes's (box_checks.check_pairs), and it fills
    # slots about as well.
    check_pairs(pairs, geom1, geom2, size, n, min_box, max_iou)
    usable_images = usable(geom1, geom2, min_box)
    assert usable_images[:-2].sum() >= 18 and not usable_images[-2:].any()
    valid = pairs.valid.view(geom1.crops.shape[0], n)
    assert valid[usable_images].sum() >= 8 * usable_images.sum()  # 50 tries nearly always fill
    # Empty slots hold the dummy box.
    dummy = torch.tensor([0.0, 0.0, min_box, min_box])
    for boxes in (pairs.boxes1, pairs.boxes2):
        empty = boxes[~pairs.valid, 1:]
        assert torch.allclose(empty, dummy.expand(len(empty), 4))


def test_box_loop_scalar_iou() -> None:
    box_loop = load("box_loop")
    assert box_loop.scalar_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_loop.scalar_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_loop.scalar_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0

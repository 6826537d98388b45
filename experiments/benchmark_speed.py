"""Wall time of frozen-encoder benchmark runs: Lightning training vs cached encoder features.

Runs the same small grid (a synthetic segmentation task, U-Net, a few seeds, equal
optimizer steps) three ways, interleaved seed by seed in one process so that the
machine's load affects them alike:

* ``lightning``: the frozen protocol as it ran before features were cached: a Lightning
  ``Trainer`` fits decoder and head through the frozen encoder at every step
  (validating every epoch), then ``Trainer.test`` and a second prediction pass of the
  test split for the scores;
* ``frozen``: :func:`~torchgeo_dic3l.benchmark.finetune` with the ``frozen`` protocol
  (encoder features computed once, the test split predicted once);
* ``linear``: the same with the ``linear`` protocol.

Each time covers a whole run (data, model, training, testing). It prints the hardware,
the command, every run's time and the median speed-up over the seeds::

    OMP_NUM_THREADS=1 python experiments/benchmark_speed.py --seeds 0 1
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import lightning
import torch

from torchgeo_dic3l.benchmark.finetune import (
    build_model,
    build_task_data,
    evaluate,
    finetune,
    fit_lightning,
    resolve_device,
)
from torchgeo_dic3l.benchmark.grid import InitSpec, RunSpec, TaskSpec, TrainingSpec
from torchgeo_dic3l.benchmark.metrics import scores_from_confusion
from torchgeo_dic3l.benchmark.runner import quiet_lightning

PATHS = ("lightning", "frozen", "linear")


def lightning_frozen(run: RunSpec, training: TrainingSpec, steps: int) -> dict[str, Any]:
    """The frozen protocol through Lightning, with the old double pass over the test split."""
    lightning.seed_everything(run.seed, workers=True, verbose=False)
    data = build_task_data(run.task, run.label_fraction, run.seed, training)
    model = build_model(run, data, training)
    device = resolve_device(training.accelerator)
    data.datamodule.aug.to(device)  # type: ignore[attr-defined]
    start = time.perf_counter()
    trainer = fit_lightning(model, data, training, steps)
    train_seconds = time.perf_counter() - start
    trainer.test(model, datamodule=data.datamodule, verbose=False)
    model.to(device).eval()
    collector = evaluate(lambda image: model(image).argmax(dim=1), data, device, keep=2)
    scores = scores_from_confusion(collector.confusion.compute().long(), data.classes)
    return {
        "train_steps": trainer.global_step,
        "train_seconds": train_seconds,
        "miou": scores.miou,
    }


def hardware() -> str:
    """CPU model, cores, torch threads and GPU, in one line."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (
        f"CPU {cpu}, {os.cpu_count()} core(s), torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, GPU {gpu}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="landcover", choices=("landcover", "water", "roads"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=48, help="optimizer steps of every run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--length", type=int, default=96, help="training scenes")
    parser.add_argument("--val-length", type=int, default=16)
    parser.add_argument("--test-length", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {
        "task": args.task,
        "size": args.size,
        "length": args.length,
        "val_length": args.val_length,
        "test_length": args.test_length,
    }
    task = TaskSpec(args.task, "synthetic", options)
    training = TrainingSpec(
        steps=args.steps, batch_size=args.batch_size, accelerator=args.accelerator
    )
    print(f"hardware: {hardware()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"grid: {args.task}, {args.size} px, {args.length} training / {args.val_length} val / "
        f"{args.test_length} test scenes, resnet18 U-Net from random weights, batch "
        f"{args.batch_size}, {args.steps} steps, seeds {args.seeds}"
    )
    print(f"{'seed':>4} {'path':<9} {'steps':>5} {'train s':>8} {'total s':>8} {'mIoU':>6}")
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    with quiet_lightning():
        for seed in args.seeds:
            for path in PATHS:
                protocol = "frozen" if path == "lightning" else path
                run = RunSpec(InitSpec("random", "random"), task, "unet", protocol, 1.0, seed)
                start = time.perf_counter()
                if path == "lightning":
                    row = lightning_frozen(run, training, args.steps)
                else:
                    row = finetune(run, training, figure_patches=2).row
                total = time.perf_counter() - start
                seconds[path].append(total)
                print(
                    f"{seed:>4} {path:<9} {row['train_steps']:>5} {row['train_seconds']:>8.2f} "
                    f"{total:>8.2f} {row['miou']:>6.3f}",
                    flush=True,
                )
    for path in ("frozen", "linear"):
        ratios = [old / new for old, new in zip(seconds["lightning"], seconds[path], strict=True)]
        print(
            f"median speed-up of {path} over lightning: {statistics.median(ratios):.2f}x "
            f"(per seed: {', '.join(f'{r:.2f}x' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

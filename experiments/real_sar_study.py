"""The real-SAR study of docs/benchmarks.md: pre-train, probe the checkpoints, compare.

Three steps, each a sub-command:

* ``pretrain``: DI3CL, MoCo v2 and the two ablations (MoCo v2 + CC, MoCo v2 + DI) on
  one corpus, with the study configs in ``experiments/configs/study/`` and the same
  number of steps for every variant (``--steps``).
* ``probe-curve``: the online-probe score of every step checkpoint of the runs (a
  linear probe on the San Francisco scene's T33 band, fitted on its training patches
  and scored on its validation patches; the test split is left to the benchmark),
  written as JSON and drawn as a curve. DI3CLTask (ResNet) and SARMAETask (ViT)
  checkpoints may be mixed. The step-0 point of each run is a fresh task of its class
  with its hyper-parameters built after ``seed_everything(0)``: a random initialization
  like its own, not necessarily the identical tensors.
* ``compare``: the paired per-seed differences of two initializations in a benchmark
  ``results.json`` (``experiments/benchmark.py``), per protocol and label fraction.

Example (the commands behind docs/benchmarks.md)::

    python experiments/real_sar_study.py pretrain --corpus volkov --variants di3cl mocov2
    python experiments/real_sar_study.py probe-curve outputs/study/volkov/di3cl \\
        outputs/study/volkov/mocov2 --output outputs/study/volkov_probe
    python experiments/benchmark.py --config experiments/configs/study/benchmark_sf_t33.yaml \\
        --output outputs/study/benchmark
    python experiments/real_sar_study.py compare outputs/study/benchmark/results.json \\
        --a di3cl --b mocov2
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import matplotlib
import torch
from lightning.pytorch import seed_everything

from torchgeo_dic3l.benchmark.report import read_results_json
from torchgeo_dic3l.callbacks import LinearProbe
from torchgeo_dic3l.datamodules import LabelledSARSceneDataModule
from torchgeo_dic3l.tasks import DI3CLTask, SARMAETask

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs" / "study"

#: Pre-training config of each corpus and method (DI3CLTask or SARMAETask).
CORPORA: dict[str, dict[str, Path]] = {
    "volkov": {
        "di3cl": CONFIGS / "pretrain_volkov.yaml",
        "sarmae": CONFIGS / "pretrain_sarmae_volkov.yaml",
    },
    "sf": {"di3cl": CONFIGS / "pretrain_sf_train_region.yaml"},
}

#: Method and task switches of each variant; MoCo v2 puts its whole weight on the
#: global term. The ``_nojitter`` variants drop the brightness/contrast jitter of the
#: views (a test of whether invariance to the backscatter level is what costs the
#: downstream probe); ``sarmae_nosare`` is plain MAE on the same ViT.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "di3cl": ("di3cl", []),
    "mocov2": ("di3cl", ["use_cc=false", "use_di=false", "global_weight=1.0"]),
    "mocov2_cc": ("di3cl", ["use_di=false"]),
    "mocov2_di": ("di3cl", ["use_cc=false"]),
    "di3cl_nojitter": ("di3cl", ["views.jitter_p=0"]),
    "mocov2_nojitter": (
        "di3cl",
        ["use_cc=false", "use_di=false", "global_weight=1.0", "views.jitter_p=0"],
    ),
    "sarmae": ("sarmae", []),
    "sarmae_nosare": ("sarmae", ["sare=false"]),
}

#: The San Francisco scene as the benchmark's one-channel task sees it (T33, dB).
SF_T33: dict[str, Any] = {
    "images": [str(REPO.parent / "shared/data/polsar_sf_airsar/T3/T33.bin")],
    "bands": ["T33"],
    "units": "power",
    "label": str(REPO.parent / "shared/data/polsar_sf_airsar/SF-AIRSAR-label2d.png"),
    "classes": ["bare_soil", "mountain", "water", "urban", "vegetation"],
    "label_values": [1, 2, 3, 4, 5],
    "ignore_values": [0],
    "ignore_index": 255,
    "split_fractions": (0.6, 0.2, 0.2),
    "patch_size": 64,
    "gap": 16,
    "block_size": 128,
    "split_seed": 20,
    "split_method": "random",
}


def pretrain_command(
    corpus: str,
    variant: str,
    steps: int | None,
    root: str | None = None,
    seed: int | None = None,
    max_time: str | None = None,
    checkpoint_every: int | None = None,
) -> list[str]:
    """The ``torchgeo-dic3l fit`` command line of one pre-training run.

    Args:
        corpus: Key of :data:`CORPORA`.
        variant: Key of :data:`VARIANTS`.
        steps: Optimizer steps; the config's if None.
        root: Folder of the run's checkpoints (``<root>/<variant>``) and logs;
            ``outputs/study/<corpus>`` if None.
        seed: Seed of the run (initialization, views, sampling); the config's if None.
        max_time: Wall-clock budget ``DD:HH:MM:SS`` (Lightning's ``max_time``); with
            it, ``steps`` is lifted unless given, so that the clock alone stops runs.
        checkpoint_every: Steps between step checkpoints; the config's if None.

    Returns:
        The command.

    Raises:
        ValueError: If the corpus has no config for the variant's method.
    """
    method, switches = VARIANTS[variant]
    if method not in CORPORA[corpus]:
        raise ValueError(f"corpus {corpus!r} has no {method} config for variant {variant!r}")
    root = root or f"outputs/study/{corpus}"
    command = [
        str(Path(sys.executable).with_name("torchgeo-dic3l")),
        "fit",
        "--config",
        str(CORPORA[corpus][method].relative_to(REPO)),
        "--trainer.enable_progress_bar=false",
        f"--trainer.callbacks.init_args.dirpath={root}/{variant}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={variant}",
    ]
    command += [f"--model.init_args.{switch}" for switch in switches]
    if steps is not None:
        command.append(f"--trainer.max_steps={steps}")
    elif max_time is not None:
        command.append("--trainer.max_steps=-1")
    if max_time is not None:
        command.append(f"--trainer.max_time={max_time}")
    if seed is not None:
        command.append(f"--seed_everything={seed}")
    if checkpoint_every is not None:
        command.append(f"--trainer.callbacks.init_args.every_n_train_steps={checkpoint_every}")
    return command


def pretrain(args: argparse.Namespace) -> int:
    """Run the variants one after another (or print their commands with ``--dry-run``)."""
    for variant in args.variants:
        command = pretrain_command(
            args.corpus,
            variant,
            args.steps,
            args.root,
            args.seed,
            args.max_time,
            args.checkpoint_every,
        )
        print(" ".join(command), flush=True)
        if args.dry_run:
            continue
        folder = REPO / (args.root or f"outputs/study/{args.corpus}") / variant
        if folder.exists() and any(folder.glob("*.ckpt")):
            print(f"{folder} already holds checkpoints; remove it to pre-train again")
            return 2
        result = subprocess.run(command, cwd=REPO, check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


def _step_of(path: Path) -> int:
    """Global step of a ``stepNNNNN.ckpt`` file, or of ``last.ckpt`` (read from it)."""
    match = re.fullmatch(r"step(\d+)\.ckpt", path.name)
    if match:
        return int(match.group(1))
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _load_task(path: Path) -> DI3CLTask | SARMAETask:
    """A DI3CLTask or SARMAETask checkpoint, told apart by where its encoder lives."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    vit = any(key.startswith("backbone.vit.") for key in state)
    task_class = SARMAETask if vit else DI3CLTask
    return task_class.load_from_checkpoint(path, map_location="cpu")


def probe_curve(args: argparse.Namespace) -> int:
    """Probe every step checkpoint of each run and write the curve."""
    datamodule = LabelledSARSceneDataModule(**SF_T33, label_fraction=1.0)
    probe = LinearProbe(
        datamodule=datamodule,
        steps=args.probe_steps,
        max_train_patches=None,
        max_val_patches=None,
    )
    curves: dict[str, list[dict[str, float]]] = {}
    for run in map(Path, args.runs):
        checkpoints = sorted(run.glob("step*.ckpt"), key=_step_of)
        last = run / "last.ckpt"
        if last.exists() and (not checkpoints or _step_of(last) > _step_of(checkpoints[-1])):
            checkpoints.append(last)
        if not checkpoints:
            print(f"{run}: no checkpoint", file=sys.stderr)
            return 2
        points = []
        initial: dict[str, float] | None = None
        for path in checkpoints:
            task = _load_task(path)
            if initial is None:
                # A random start like the run's (same class, seed and hyper-parameters).
                seed_everything(0, verbose=False)
                start = type(task)(**{k: v for k, v in task.hparams.items() if k != "weights"})
                probe.on_fit_start(None, start)  # type: ignore[arg-type]
                initial = probe.probe(start)
                print(f"{run.name} random init (step 0): probe mIoU {initial['probe_miou']:.4f}")
            scores = probe.probe(task)
            step = _step_of(path)
            print(
                f"{run.parent.name}/{run.name} step {step}: probe mIoU {scores['probe_miou']:.4f}",
                flush=True,
            )
            points.append({"step": step, **scores})
        assert initial is not None
        # corpus/variant: the same variant name appears under several corpora.
        curves[f"{run.parent.name}/{run.name}"] = [{"step": 0, **initial}, *points]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(sys.argv),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)",
        "probe": {
            "task": "San Francisco T33, all training patches -> validation patches",
            "steps": args.probe_steps,
        },
        "curves": curves,
    }
    (output / "probe_curve.json").write_text(json.dumps(record, indent=2))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        ax.plot([p["step"] for p in points], [100 * p["probe_miou"] for p in points], "o-")
        ax.annotate(name, (points[-1]["step"], 100 * points[-1]["probe_miou"]))
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("probe mIoU on validation patches (%)")
    ax.set_title("Linear probe during pre-training (San Francisco, T33)")
    fig.tight_layout()
    fig.savefig(output / "probe_curve.png", dpi=120)
    print(f"wrote {output / 'probe_curve.json'} and {output / 'probe_curve.png'}")
    return 0


def paired_differences(
    rows: Sequence[dict[str, Any]], a: str, b: str, metric: str = "miou"
) -> dict[tuple[str, float], list[tuple[int, float, float]]]:
    """Per-seed scores of two initializations, matched by protocol, fraction and seed.

    Args:
        rows: Rows of a benchmark ``results.json``.
        a: First initialization's name.
        b: Second initialization's name.
        metric: Row key of the score.

    Returns:
        ``(protocol, label_fraction) -> [(seed, score a, score b), ...]`` for the
        seeds where both runs succeeded.
    """
    scores: dict[tuple[str, str, float, int], float] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get(metric) is not None:
            key = (row["init"], row["protocol"], float(row["label_fraction"]), int(row["seed"]))
            scores[key] = float(row[metric])
    pairs: dict[tuple[str, float], list[tuple[int, float, float]]] = defaultdict(list)
    for (init, protocol, fraction, seed), value in sorted(scores.items()):
        if init == a and (b, protocol, fraction, seed) in scores:
            pairs[(protocol, fraction)].append(
                (seed, value, scores[(b, protocol, fraction, seed)])
            )
    return dict(pairs)


def compare(args: argparse.Namespace) -> int:
    """Print the paired differences of two initializations as a Markdown table."""
    rows = read_results_json(Path(args.results))
    pairs = paired_differences(rows, args.a, args.b)
    if not pairs:
        print(f"no run of {args.a!r} and {args.b!r} shares protocol, fraction and seed")
        return 2
    print(
        f"| protocol | labels | {args.a} | {args.b} | per-seed {args.a} - {args.b} | mean ± std |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for (protocol, fraction), values in sorted(pairs.items()):
        diffs = [100 * (x - y) for _, x, y in values]
        spread = stdev(diffs) if len(diffs) > 1 else 0.0
        print(
            f"| {protocol} | {100 * fraction:g} % | {100 * mean(x for _, x, _ in values):.2f} | "
            f"{100 * mean(y for _, _, y in values):.2f} | "
            f"{', '.join(f'{d:+.2f}' for d in diffs)} | {mean(diffs):+.2f} ± {spread:.2f} |"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the sub-command and run it.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` if None.

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("pretrain", help="pre-train variants on one corpus")
    run.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    run.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["di3cl"])
    run.add_argument("--steps", type=int, default=None, help="optimizer steps (config's if unset)")
    run.add_argument(
        "--root",
        default=None,
        help="run folder, relative to the repository (default: outputs/study/<corpus>)",
    )
    run.add_argument("--seed", type=int, default=None, help="seed_everything (config's if unset)")
    run.add_argument(
        "--max-time",
        default=None,
        help="wall-clock budget of each run, DD:HH:MM:SS (equal-time comparisons)",
    )
    run.add_argument(
        "--checkpoint-every", type=int, default=None, help="steps between step checkpoints"
    )
    run.add_argument("--dry-run", action="store_true", help="print the commands only")
    curve = commands.add_parser("probe-curve", help="probe the step checkpoints of runs")
    curve.add_argument("runs", nargs="+", help="checkpoint folders (outputs/study/<corpus>/<v>)")
    curve.add_argument("--output", required=True)
    curve.add_argument("--probe-steps", type=int, default=300)
    paired = commands.add_parser("compare", help="paired per-seed differences")
    paired.add_argument("results", help="benchmark results.json")
    paired.add_argument("--a", required=True, help="initialization name, e.g. di3cl")
    paired.add_argument("--b", required=True, help="initialization name, e.g. mocov2")
    args = parser.parse_args(argv)
    handlers = {"pretrain": pretrain, "probe-curve": probe_curve, "compare": compare}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

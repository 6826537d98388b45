"""Wall-time share of the LinearProbe callback in a shipped pre-training run.

Builds the run of a pre-training config (default
``experiments/configs/pretrain_synthetic.yaml``) through LightningCLI, as
``torchgeo-dic3l fit`` does, for ``--epochs`` epochs, once with the config's
:class:`~torchgeo_dic3l.callbacks.LinearProbe` and once without it, in interleaved
rounds (the order alternates, so background load and warm-up hit both alike). Loggers
and the ``ModelCheckpoint`` are dropped in both, so nothing is written under
``outputs/``; every run starts from the config's seed.

Per round the probe's share is ``(with - without) / with`` of the ``Trainer.fit``
wall times; the time spent inside the probe (reading the patches in
``on_fit_start``, and each ``probe``) over ``with`` is printed beside it. Medians over
the rounds are reported.

Examples::

    OMP_NUM_THREADS=1 python experiments/probe_cost.py
    python experiments/probe_cost.py --config experiments/configs/pretrain_synthetic_mocov2.yaml \\
        --epochs 3 --rounds 5
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from torchgeo.datamodules import BaseDataModule
from torchgeo.tasks import BaseTask

from torchgeo_dic3l.callbacks import LinearProbe

REPO = Path(__file__).resolve().parents[1]
#: Where the probe spends its time: reading the patches, and each probe.
TIMED = ("on_fit_start", "probe")


def build(config: Path, epochs: int, root: str) -> LightningCLI:
    """Instantiate model, datamodule and trainer of a config without running it."""
    return LightningCLI(
        model_class=BaseTask,
        datamodule_class=BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=None,
        run=False,
        args=[
            "--config",
            str(config),
            f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ],
    )


def timed(method: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """Wrap a method so that the wall time of each call is added to ``spent``."""

    def run(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            spent.append(time.perf_counter() - start)

    return run


def fit(config: Path, epochs: int, with_probe: bool) -> tuple[float, float, int]:
    """One run; returns the fit's wall time, the time inside the probe and probe count."""
    with tempfile.TemporaryDirectory() as root:
        cli = build(config, epochs, root)
        trainer: Trainer = cli.trainer
        probes = [c for c in trainer.callbacks if isinstance(c, LinearProbe)]
        if not probes:
            raise SystemExit(f"{config} has no LinearProbe callback")
        spent: list[float] = []
        for probe in probes:
            for name in TIMED:
                setattr(probe, name, timed(getattr(probe, name), spent))
        # Checkpoints would be written to the config's dirpath under outputs/.
        drop = (ModelCheckpoint,) if with_probe else (ModelCheckpoint, LinearProbe)
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, drop)]
        start = time.perf_counter()
        trainer.fit(cli.model, cli.datamodule)
        wall = time.perf_counter() - start
    # One on_fit_start per probe callback; the other entries are probes.
    return wall, sum(spent), max(len(spent) - len(probes), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, default=REPO / "experiments/configs/pretrain_synthetic.yaml"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    shares, inside, walls = [], [], {True: [], False: []}
    for round_ in range(args.rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        times = {}
        for with_probe in order:
            wall, spent, runs = fit(args.config, args.epochs, with_probe)
            times[with_probe] = wall
            walls[with_probe].append(wall)
            if with_probe:
                inside.append(spent / wall)
                probe_runs = runs
        shares.append((times[True] - times[False]) / times[True])
        print(
            f"round {round_}: with probe {times[True]:.1f} s, without {times[False]:.1f} s, "
            f"share {100 * shares[-1]:.1f} %, inside the probe "
            f"{100 * inside[-1]:.1f} %",
            flush=True,
        )
    print(
        f"{args.config.name}, {args.epochs} epochs, {probe_runs} probes per run: median fit "
        f"{statistics.median(walls[True]):.1f} s with the probe, "
        f"{statistics.median(walls[False]):.1f} s without; probe share "
        f"{100 * statistics.median(shares):.1f} % (difference), "
        f"{100 * statistics.median(inside):.1f} % (time inside it)"
    )


if __name__ == "__main__":
    main()

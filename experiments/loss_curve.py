"""Summarize and plot the loss and probe curves of pre-training runs logged with CSVLogger.

    python experiments/loss_curve.py outputs/pretrain_synthetic/di3cl \
        outputs/pretrain_mocov2/mocov2 --output outputs/loss_curves.png

Prints, per run, the first and last logged value of every loss term and of the online
linear probe (``probe_miou``, ``probe_oa``: the first value is the initial weights'
baseline, logged before the first step), and draws the losses (top row) and the probe
mIoU (bottom row) against the step.
"""

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Probe columns whose first and last values are printed.
PROBE_SUMMARY = ("probe_miou", "probe_oa")


def read_run(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Read the newest ``metrics.csv`` under a CSVLogger folder.

    Returns:
        Metric name -> (step, value) pairs, for every loss and probe column.
    """
    files = sorted(folder.glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    files += [folder / "metrics.csv"] if (folder / "metrics.csv").is_file() else []
    if not files:
        raise FileNotFoundError(f"no metrics.csv or version_*/metrics.csv under {folder}")
    series: dict[str, list[tuple[int, float]]] = {}
    with files[-1].open() as handle:
        for row in csv.DictReader(handle):
            for name, value in row.items():
                if ("loss" in name or name.startswith("probe_")) and value:
                    series.setdefault(name, []).append((int(row["step"]), float(value)))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="CSVLogger folders (save_dir/name)")
    parser.add_argument("--output", type=Path, default=Path("outputs/loss_curves.png"))
    args = parser.parse_args()
    count = len(args.runs)
    figure, axes = plt.subplots(2, count, figsize=(5 * count, 6), squeeze=False)
    for column, run in enumerate(args.runs):
        series = read_run(run)
        print(f"{run}:")
        losses = sorted(name for name in series if "loss" in name)
        for name in [*losses, *(n for n in PROBE_SUMMARY if n in series)]:
            values = series[name]
            first, last = values[0][1], values[-1][1]
            if not (math.isfinite(first) and math.isfinite(last)):
                raise ValueError(f"{run}: {name} is not finite")
            label = ("initial", "final") if name.startswith("probe_") else ("first", "last")
            print(
                f"  {name:28s} {label[0]} {first:8.4f}  {label[1]} {last:8.4f}  "
                f"({len(values)} logged)"
            )
            if name.startswith("train_") and name != "train_loss_epoch":
                steps, loss = zip(*values, strict=True)
                axes[0][column].plot(steps, loss, label=name.removeprefix("train_"))
        if "probe_miou" not in series:
            print("  (no probe_miou logged: add torchgeo_dic3l.callbacks.LinearProbe)")
        else:
            steps, miou = zip(*series["probe_miou"], strict=True)
            axes[1][column].plot(steps, [100 * v for v in miou], "o-")
        axes[0][column].set_title(run.name)
        axes[0][column].legend(fontsize=7)
        axes[1][column].set_xlabel("step")
        axes[1][column].set_ylabel("probe mIoU (%)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"loss and probe curves written to {args.output}")


if __name__ == "__main__":
    main()

"""Summarize and plot the loss curves of pre-training runs logged with CSVLogger.

    python experiments/loss_curve.py outputs/pretrain_synthetic/di3cl \
        outputs/pretrain_mocov2/mocov2 --output outputs/loss_curves.png
"""

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_run(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Read the newest ``metrics.csv`` under a CSVLogger folder.

    Returns:
        Metric name -> (step, value) pairs, for every loss column.
    """
    files = sorted(folder.glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no version_*/metrics.csv under {folder}")
    series: dict[str, list[tuple[int, float]]] = {}
    with files[-1].open() as handle:
        for row in csv.DictReader(handle):
            for name, value in row.items():
                if "loss" in name and value:
                    series.setdefault(name, []).append((int(row["step"]), float(value)))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="CSVLogger folders (save_dir/name)")
    parser.add_argument("--output", type=Path, default=Path("outputs/loss_curves.png"))
    args = parser.parse_args()
    figure, axes = plt.subplots(1, len(args.runs), figsize=(5 * len(args.runs), 3.5))
    for axis, run in zip(list(axes) if len(args.runs) > 1 else [axes], args.runs, strict=True):
        series = read_run(run)
        print(f"{run}:")
        for name in sorted(series):
            values = series[name]
            first, last = values[0][1], values[-1][1]
            if not (math.isfinite(first) and math.isfinite(last)):
                raise ValueError(f"{run}: {name} is not finite")
            print(f"  {name:28s} first {first:8.4f}  last {last:8.4f}  ({len(values)} logged)")
            if name.startswith("train_") and name != "train_loss_epoch":
                steps, losses = zip(*values, strict=True)
                axis.plot(steps, losses, label=name.removeprefix("train_"))
        axis.set_title(run.name)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"loss curves written to {args.output}")


if __name__ == "__main__":
    main()

"""Run a whole grid: every run in turn, results and figures written to one folder.

Output folder::

    grid.yaml                 the grid as run (every task written out)
    results.json              one row per run, rewritten after every run
    results.md                tables (see :mod:`~torchgeo_dic3l.benchmark.report`)
    figures/*.png             per-class F1 bars and prediction maps per table
    predictions/<run>.npz     test patches and predictions of each successful run
    errors/<run>.log          traceback of each failed run

A run that fails does not stop the grid: its row gets ``status: failed`` and the
error. When the initial weights of an init cannot be obtained (:class:`InitError`:
missing checkpoint, offline download, wrong backbone or channel count), the remaining
runs of that init on the same task are ``skipped`` with the same reason instead of
retrying (an offline download takes about 30 s to give up).
"""

import logging
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.warnings import PossibleUserWarning
from tqdm.auto import tqdm

from .figures import save_examples, write_figures
from .finetune import InitError, finetune
from .grid import GridSpec, RunSpec, run_identity
from .report import read_results_json, write_results_json, write_results_markdown

#: Keys of a successful row that a failed row holds as None.
OUTCOME_KEYS: tuple[str, ...] = (
    "miou",
    "oa",
    "kappa",
    "f1_per_class",
    "iou_per_class",
    "train_seconds",
    "test_seconds",
    "train_steps",
    "batch_size",
    "num_train_patches",
    "num_test_patches",
    "num_test_pixels",
    "in_channels",
    "ignore_index",
)


def failed_row(run: RunSpec, grid: GridSpec, status: str, error: str) -> dict[str, Any]:
    """The row of a run that did not produce scores.

    Args:
        run: The run.
        grid: Its grid (for the backbone and epochs).
        status: ``failed`` or ``skipped``.
        error: Why.

    Returns:
        A row with the same identifying keys as a successful one and None scores.
    """
    return {
        **run_identity(run),
        "backbone": grid.training.backbone,
        "epochs": grid.training.epochs,
        "status": status,
        "error": error,
        **dict.fromkeys(OUTCOME_KEYS),
    }


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-run banners and small-data hints during a grid."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            # Lightning's own use of a deprecated torch API, once per run.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_grid(
    grid: GridSpec, output: Path, progress: bool = True, resume: bool = False
) -> list[dict[str, Any]]:
    """Run every run of a grid and write results, tables and figures.

    Args:
        grid: The grid.
        output: Output folder (created if needed).
        progress: Show a tqdm progress bar over runs.
        resume: Keep successful rows of an earlier ``results.json`` in ``output`` with
            the same run id instead of running them again.

    Returns:
        The rows, in grid order.
    """
    output.mkdir(parents=True, exist_ok=True)
    (output / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    results = output / "results.json"
    previous: dict[str, dict[str, Any]] = {}
    if resume and results.is_file():
        previous = {
            row["run_id"]: row for row in read_results_json(results) if row.get("status") == "ok"
        }
    rows: list[dict[str, Any]] = []
    init_failures: dict[tuple[str, str], str] = {}
    runs = grid.runs()
    with quiet_lightning():
        bar = tqdm(runs, desc="benchmark", unit="run", disable=not progress)
        for run in bar:
            bar.set_postfix_str(run.run_id, refresh=True)
            if run.run_id in previous:
                rows.append(previous[run.run_id])
            else:
                rows.append(_run_one(run, grid, output, init_failures))
            write_results_json(rows, results)
        bar.close()
    write_results_markdown(rows, output / "results.md")
    write_figures(rows, output)
    return rows


def _run_one(
    run: RunSpec, grid: GridSpec, output: Path, init_failures: dict[tuple[str, str], str]
) -> dict[str, Any]:
    """Run one run, turning its failure into a row."""
    key = (run.init.name, run.task.name)
    if key in init_failures:
        return failed_row(run, grid, "skipped", f"init failed earlier: {init_failures[key]}")
    try:
        result = finetune(run, grid.training, grid.figure_patches)
    except InitError as error:
        init_failures[key] = str(error)
        _log_error(output, run)
        return failed_row(run, grid, "failed", str(error))
    except Exception as error:
        _log_error(output, run)
        return failed_row(run, grid, "failed", f"{type(error).__name__}: {error}")
    if result.examples:
        save_examples(
            output / "predictions" / f"{run.run_id}.npz",
            result.examples,
            result.classes,
            result.colors,
            result.row.get("ignore_index"),
        )
    return result.row


def _log_error(output: Path, run: RunSpec) -> None:
    folder = output / "errors"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run.run_id}.log").write_text(traceback.format_exc())

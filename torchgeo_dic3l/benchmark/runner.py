"""Run a whole grid: every run in turn, results and figures written to one folder.

Output folder::

    grid.yaml                 the grid as run (every task written out)
    results.json              one row per run, rewritten after every run
    results.md                tables (see :mod:`~torchgeo_dic3l.benchmark.report`)
    split_<task>.json, .md    patches and labelled pixels per class of each scene split
    figures/*.png             per-class F1 bars and prediction maps per table
    predictions/<run>.npz     test patches and predictions of each successful run
    errors/<run>.log          traceback of each failed run

Every row stores its run's whole specification (``spec``: init source and the
SHA-256 of an init file, task options, decoder, protocol, label fraction, seed and
every training setting). ``resume`` keeps a successful row only if its
specification equals the new one, and refuses (:class:`ResumeError`) to mix
results of different grids. Before the first run, each task's data is set up once,
so that a bad scene path or label fails the grid at once (:class:`TaskDataError`)
rather than every run in turn.

A run that fails does not stop the grid: its row gets ``status: failed`` and the
error. When the initial weights of an init cannot be obtained (:class:`InitError`:
missing checkpoint, offline download, wrong backbone or channel count), the remaining
runs of that init on the same task are ``skipped`` with the same reason instead of
retrying (an offline download takes about 30 s to give up).
"""

import logging
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.warnings import PossibleUserWarning
from tqdm.auto import tqdm

from ..models.weights import sha256_of
from .figures import save_examples, write_figures
from .finetune import InitError, build_task_data, finetune
from .grid import GridSpec, InitSpec, RunSpec, TaskSpec, run_identity, run_specification
from .report import (
    read_results_json,
    write_results_json,
    write_results_markdown,
    write_split_tables,
)

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
    "weights_verified",
)


class ResumeError(ValueError):
    """The ``results.json`` to resume from cannot be read or came from another grid."""


class TaskDataError(ValueError):
    """A task's data cannot be set up, so no run of the grid is started."""


def init_digest(init: InitSpec) -> str | None:
    """SHA-256 of an init's weights file, so that a file replaced in place is noticed.

    Args:
        init: The init.

    Returns:
        The hex digest, or None for inits that are not an existing file.
    """
    path = Path(init.source)
    if init.kind != "path" or not path.is_file():
        return None
    return sha256_of(path)


def grid_specifications(grid: GridSpec) -> dict[str, dict[str, Any]]:
    """The specification of every run of a grid (each init file hashed once).

    Args:
        grid: The grid.

    Returns:
        Run id -> :func:`~torchgeo_dic3l.benchmark.grid.run_specification` plus
        ``init_sha256``.
    """
    digests = {init.name: init_digest(init) for init in grid.inits}
    return {
        run.run_id: {
            **run_specification(run, grid.training),
            "init_sha256": digests[run.init.name],
        }
        for run in grid.runs()
    }


def spec_changes(old: Any, new: Any, key: str = "") -> list[str]:
    """List the differences of two specifications as ``key: old -> new``.

    Args:
        old: The stored specification (or one of its values).
        new: The new one.
        key: Dotted key of these values, for the messages.

    Returns:
        One entry per differing leaf, e.g. ``training.epochs: 3 -> 5``.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [
            change
            for name in sorted(set(old) | set(new), key=str)
            for change in spec_changes(
                old.get(name, "(absent)"), new.get(name, "(absent)"), f"{key}.{name}".strip(".")
            )
        ]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


def resumable_rows(
    results: Path, specifications: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The successful rows of an earlier ``results.json`` that this grid can keep.

    Failed and skipped rows are run again.

    Args:
        results: The earlier ``results.json``.
        specifications: Run id -> specification of the new grid's runs.

    Returns:
        Run id -> row.

    Raises:
        ResumeError: If the file cannot be read, or a successful row is of a run
            the grid does not have, or has no or another specification.
    """
    try:
        rows = read_results_json(results)
    except ValueError as error:
        raise ResumeError(
            f"cannot resume from {results}: {error}; move the file away to start afresh"
        ) from error
    kept = {row.get("run_id"): row for row in rows if row.get("status") == "ok"}
    problems = [
        f"{run_id}: {_resume_problem(row, specifications.get(str(run_id)))}"
        for run_id, row in kept.items()
        if row.get("spec") is None or row.get("spec") != specifications.get(str(run_id))
    ]
    if problems:
        raise ResumeError(
            f"cannot resume from {results}: {len(problems)} successful row(s) are not "
            "results of this grid (rows are the same run only if their whole "
            "specification matches):\n  " + "\n  ".join(problems) + "\nRun the grid "
            "that made them, or give another --output."
        )
    return {str(run_id): row for run_id, row in kept.items()}


def _resume_problem(row: Mapping[str, Any], new: Mapping[str, Any] | None) -> str:
    """Why a stored row cannot be kept (see :func:`resumable_rows`)."""
    if new is None:
        return "not a run of this grid"
    if row.get("spec") is None:
        return "the row stores no specification (written by an older version)"
    return "; ".join(spec_changes(row["spec"], new))


def check_task_data(grid: GridSpec, tasks: list[TaskSpec]) -> None:
    """Set up each task's data once, with the grid's largest label fraction.

    Args:
        grid: The grid (label fractions, seeds and training settings).
        tasks: The tasks to check.

    Raises:
        TaskDataError: Naming the task and the original error, if its data cannot be
            set up for fitting and testing.
    """
    for task in tasks:
        try:
            with warnings.catch_warnings():
                # Warnings about the data (a lowered batch size) come again from the runs.
                warnings.simplefilter("ignore")
                data = build_task_data(
                    task, max(grid.label_fractions), grid.seeds[0], grid.training
                )
            data.datamodule.setup("test")
        except Exception as error:
            raise TaskDataError(
                f"task {task.name!r}: its data cannot be set up, so no run was started: "
                f"{type(error).__name__}: {error}"
            ) from error


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
            the same specification instead of running them again.

    Returns:
        The rows, in grid order.

    Raises:
        ResumeError: If ``resume`` finds a ``results.json`` it cannot read or one of
            another grid; nothing is written then.
        TaskDataError: If a task's data cannot be set up; nothing is written then.
    """
    results = output / "results.json"
    specifications = grid_specifications(grid)
    previous: dict[str, dict[str, Any]] = {}
    if resume and results.is_file():
        previous = resumable_rows(results, specifications)
    runs = grid.runs()
    pending = [run for run in runs if run.run_id not in previous]
    check_task_data(grid, list({run.task.name: run.task for run in pending}.values()))
    output.mkdir(parents=True, exist_ok=True)
    (output / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    write_split_tables(grid.tasks, output)
    rows: list[dict[str, Any]] = []
    init_failures: dict[tuple[str, str], str] = {}
    with quiet_lightning():
        bar = tqdm(runs, desc="benchmark", unit="run", disable=not progress)
        for run in bar:
            bar.set_postfix_str(run.run_id, refresh=True)
            if run.run_id in previous:
                rows.append(previous[run.run_id])
            else:
                row = _run_one(run, grid, output, init_failures)
                rows.append({**row, "spec": specifications[run.run_id]})
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

"""Results files of a benchmark: ``results.json`` (one row per run) and ``results.md``.

The Markdown report has one table per task / decoder / protocol / label fraction, laid
out like Table II of the DI3CL paper: one row per initialization, the per-class F1
scores, then OA, Cohen's kappa and mIoU, in percent, as mean +- sample standard
deviation over the seeds that succeeded. The best mean of each column is in bold. A
class with no pixel in the test split has no score (``None`` in ``results.json``): its
F1 cell reads :data:`ABSENT` and it is not part of the mIoU.
Failed and skipped runs are listed with their reasons below the tables.
"""

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..datamodules import LabelledSARSceneDataModule

if TYPE_CHECKING:
    from .grid import TaskSpec

#: Keys that identify the table a row belongs to.
GROUP_KEYS: tuple[str, ...] = ("task", "decoder", "protocol", "label_fraction")

#: Overall scores after the per-class F1 columns: row key and column title.
OVERALL_COLUMNS: tuple[tuple[str, str], ...] = (("oa", "OA"), ("kappa", "Kappa"), ("miou", "mIoU"))

#: Cell of a class that no successful run could score: it has no test pixel.
ABSENT = "n/a (absent)"


def _finite_or_none(value: Any) -> Any:
    """Replace NaN and infinities by None, recursively, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def write_results_json(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the rows as a JSON list (NaN written as null), replacing the file atomically.

    Args:
        rows: Result rows.
        path: Target file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(_finite_or_none(list(rows)), indent=2, allow_nan=False) + "\n")
    partial.replace(path)


def read_results_json(path: Path) -> list[dict[str, Any]]:
    """Read rows written by :func:`write_results_json`.

    Args:
        path: The file.

    Returns:
        The rows.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not hold a list of objects.
    """
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a JSON list of result objects")
    return rows


@dataclass
class Summary:
    """Mean and sample standard deviation of one score over seeds.

    Attributes:
        mean: Mean over the defined values, or None if there is none.
        std: Sample standard deviation, or None with fewer than two values.
        count: Number of defined values.
    """

    mean: float | None
    std: float | None
    count: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Summary":
        """Summarize values, skipping undefined ones.

        Args:
            values: Scores, None where undefined.

        Returns:
            The summary.
        """
        defined = [float(v) for v in values if v is not None]
        if not defined:
            return cls(None, None, 0)
        std = statistics.stdev(defined) if len(defined) > 1 else None
        return cls(statistics.fmean(defined), std, len(defined))

    def format(self, scale: float = 100.0, bold: bool = False) -> str:
        """Format as ``mean ± std`` in percent.

        Args:
            scale: Factor applied to mean and std.
            bold: Whether to wrap the mean in ``**``.

        Returns:
            The text, ``-`` when undefined.
        """
        if self.mean is None:
            return "-"
        text = f"{self.mean * scale:.2f}"
        if bold:
            text = f"**{text}**"
        if self.std is not None:
            text += f" ± {self.std * scale:.2f}"
        return text


@dataclass
class InitRow:
    """One table row: an initialization's scores over seeds.

    Attributes:
        init: Initialization name.
        f1: Class name -> F1 summary.
        overall: ``oa``/``kappa``/``miou`` -> summary.
        succeeded: Number of successful runs (seeds).
        total: Number of runs.
    """

    init: str
    f1: dict[str, Summary]
    overall: dict[str, Summary]
    succeeded: int
    total: int


@dataclass
class Table:
    """The rows of one task / decoder / protocol / label fraction.

    Attributes:
        key: Values of :data:`GROUP_KEYS`.
        classes: Class names, in class-index order.
        rows: One row per initialization, in grid order.
        failures: ``(run_id, status, error)`` of failed or skipped runs.
    """

    key: dict[str, Any]
    classes: list[str]
    rows: list[InitRow] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def title(self) -> str:
        """Heading of the table.

        Returns:
            e.g. ``water · unet · full · 100 % labels``.
        """
        fraction = float(self.key["label_fraction"]) * 100
        return (
            f"{self.key['task']} · {self.key['decoder']} · {self.key['protocol']} · "
            f"{fraction:g} % labels"
        )


def summarize(rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Group rows into tables with mean and std over seeds.

    Args:
        rows: Result rows (successful ones have ``status == "ok"``).

    Returns:
        One table per group, in order of first appearance.
    """
    tables: dict[tuple[Any, ...], Table] = {}
    by_init: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        group = tuple(row[key] for key in GROUP_KEYS)
        table = tables.setdefault(group, Table({k: row[k] for k in GROUP_KEYS}, []))
        if row.get("status") == "ok" and not table.classes:
            table.classes = list(row["f1_per_class"])
        by_init.setdefault(group, {}).setdefault(row["init"], []).append(row)
        if row.get("status") != "ok":
            table.failures.append(
                (row["run_id"], row.get("status", "failed"), row.get("error") or "")
            )
    for group, table in tables.items():
        for init, runs in by_init[group].items():
            ok = [run for run in runs if run.get("status") == "ok"]
            table.rows.append(
                InitRow(
                    init=init,
                    f1={
                        c: Summary.of(r["f1_per_class"].get(c) for r in ok) for c in table.classes
                    },
                    overall={key: Summary.of(r[key] for r in ok) for key, _ in OVERALL_COLUMNS},
                    succeeded=len(ok),
                    total=len(runs),
                )
            )
    return list(tables.values())


def _best(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return max(defined) if len(defined) > 1 else None


def format_table(table: Table) -> str:
    """Render one table as Markdown.

    Args:
        table: The table.

    Returns:
        Markdown lines: header, alignment row and one row per initialization.
    """
    titles = ["Initialization", *(f"F1 {c}" for c in table.classes)]
    titles += [title for _, title in OVERALL_COLUMNS] + ["Seeds"]
    columns: list[list[Summary]] = [[row.f1[c] for row in table.rows] for c in table.classes]
    columns += [[row.overall[key] for row in table.rows] for key, _ in OVERALL_COLUMNS]
    best = [_best([s.mean for s in column]) for column in columns]
    lines = [
        "| " + " | ".join(titles) + " |",
        "|---" + "|---:" * (len(titles) - 1) + "|",
    ]
    for index, row in enumerate(table.rows):
        cells = [row.init]
        for number, (column, top) in enumerate(zip(columns, best, strict=True)):
            summary = column[index]
            if number < len(table.classes) and summary.count == 0 and row.succeeded:
                cells.append(ABSENT)
                continue
            cells.append(summary.format(bold=top is not None and summary.mean == top))
        cells.append(f"{row.succeeded}/{row.total}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(rows: Sequence[dict[str, Any]], title: str = "Segmentation benchmark") -> str:
    """Render all tables and failures as a Markdown document.

    Args:
        rows: Result rows.
        title: Document heading.

    Returns:
        The Markdown text.
    """
    parts = [
        f"# {title}",
        "",
        "Test-split scores in %: F1 per class, overall accuracy (OA), Cohen's kappa and "
        "mean IoU (mIoU), as mean ± sample std over the seeds that succeeded (Seeds = "
        "succeeded/run). Unlabelled pixels are ignored. Best mean per column in bold. "
        f"{ABSENT}: the class has no pixel in the test split, so it has no score and is "
        "left out of the mIoU.",
    ]
    tables = summarize(rows)
    for table in tables:
        parts += ["", f"## {table.title}", "", format_table(table)]
    failures = [failure for table in tables for failure in table.failures]
    if failures:
        parts += ["", "## Failed or skipped runs", ""]
        parts += [f"- `{run_id}` ({status}): {error}" for run_id, status, error in failures]
    return "\n".join(parts) + "\n"


def write_results_markdown(rows: Sequence[dict[str, Any]], path: Path) -> str:
    """Write :func:`format_markdown` to a file.

    Args:
        rows: Result rows.
        path: Target file.

    Returns:
        The Markdown text.
    """
    text = format_markdown(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def write_split_tables(tasks: Sequence["TaskSpec"], output: Path) -> list[Path]:
    """Write the split table of each scene task as ``split_<task>.json`` and ``.md``.

    Args:
        tasks: The grid's tasks; synthetic ones have no spatial split and are skipped.
        output: The benchmark's output folder, beside ``results.json``.

    Returns:
        The files written.
    """
    written: list[Path] = []
    for task in tasks:
        if task.kind == "scene":
            table = LabelledSARSceneDataModule(**task.options).describe_split()
            written += table.write(output, f"split_{task.name}")
    return written

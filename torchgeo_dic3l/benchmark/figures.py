"""Figures of a benchmark: per-class F1 bars and prediction maps per initialization.

Prediction maps need the test patches of each run; :func:`save_examples` stores them
as ``.npz`` files next to the results so figures can be redrawn from the output
folder alone.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import NDArray

from ..datasets.utils import sar_display
from .finetune import Example
from .grid import group_name
from .report import GROUP_KEYS, Table, summarize

#: Colour of ignored (unlabelled) pixels in mask panels.
IGNORE_COLOR = "#000000"


@dataclass
class ExampleSet:
    """Test patches of one run with its predictions, as stored on disk.

    Attributes:
        indices: Test-dataset index of each patch, ``[N]``.
        images: ``[N, C, H, W]`` images in dB.
        masks: ``[N, H, W]`` targets.
        predictions: ``[N, H, W]`` predicted classes.
        classes: Class names.
        colors: Colour per class.
        ignore_index: Mask value of unlabelled pixels, or None.
    """

    indices: NDArray[np.int64]
    images: NDArray[np.float32]
    masks: NDArray[np.int64]
    predictions: NDArray[np.int64]
    classes: list[str]
    colors: list[str]
    ignore_index: int | None


def default_colors(num_classes: int) -> list[str]:
    """Distinct colours for classes without their own palette.

    Args:
        num_classes: Number of classes.

    Returns:
        Hex colours from matplotlib's tab10 (tab20 beyond ten classes).
    """
    palette = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [
        "#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in palette(i % palette.N)[:3]))
        for i in range(num_classes)
    ]


def save_examples(
    path: Path,
    examples: Sequence[Example],
    classes: Sequence[str],
    colors: Sequence[str] | None,
    ignore_index: int | None,
) -> None:
    """Store a run's test patches and predictions as ``.npz``.

    Args:
        path: Target file.
        examples: Patches from :func:`~torchgeo_dic3l.benchmark.finetune.finetune`.
        classes: Class names.
        colors: Colour per class, or None for :func:`default_colors`.
        ignore_index: Mask value of unlabelled pixels, or None.

    Raises:
        ValueError: If there is no example.
    """
    if not examples:
        raise ValueError(f"no test patch to store in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        indices=np.array([e.index for e in examples], dtype=np.int64),
        images=np.stack([e.image.float().numpy() for e in examples]),
        masks=np.stack([e.mask.long().numpy() for e in examples]),
        predictions=np.stack([e.prediction.long().numpy() for e in examples]),
        classes=np.array(list(classes)),
        colors=np.array(list(colors) if colors is not None else default_colors(len(classes))),
        ignore_index=np.array(-1 if ignore_index is None else ignore_index),
    )


def load_examples(path: Path) -> ExampleSet:
    """Read a file written by :func:`save_examples`.

    Args:
        path: The ``.npz`` file.

    Returns:
        The stored patches.
    """
    with np.load(path) as data:
        ignore = int(data["ignore_index"])
        return ExampleSet(
            indices=data["indices"],
            images=data["images"],
            masks=data["masks"],
            predictions=data["predictions"],
            classes=[str(c) for c in data["classes"]],
            colors=[str(c) for c in data["colors"]],
            ignore_index=None if ignore < 0 else ignore,
        )


def _mask_image(
    labels: NDArray[np.int64], num_classes: int, ignore_index: int | None
) -> NDArray[np.int64]:
    """Class indices with ignored pixels moved to index ``num_classes`` (drawn black)."""
    if ignore_index is None:
        return labels
    return np.where(labels == ignore_index, num_classes, labels)


def plot_f1_bars(table: Table) -> Figure:
    """Grouped bars of per-class F1 (mean over seeds, std as error bar) per initialization.

    Args:
        table: A table from :func:`~torchgeo_dic3l.benchmark.report.summarize`.

    Initializations without any successful run get no bars and are named below the
    axes.

    Returns:
        The figure.
    """
    classes = table.classes
    rows = [row for row in table.rows if row.succeeded > 0]
    width = 0.8 / max(len(rows), 1)
    positions = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(classes) + 2) + 2.0, 3.6))
    for offset, row in enumerate(rows):
        means = [100 * (row.f1[c].mean or 0.0) for c in classes]
        stds = [100 * (row.f1[c].std or 0.0) for c in classes]
        ax.bar(
            positions + (offset - (len(rows) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=2,
            label=f"{row.init} ({row.succeeded}/{row.total} seeds)",
        )
    if missing := [row.init for row in table.rows if row.succeeded == 0]:
        ax.text(0.0, -0.3, f"no result: {', '.join(missing)}", transform=ax.transAxes)
    ax.set_xticks(positions, classes, rotation=20 if len(classes) > 4 else 0)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(table.title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_prediction_maps(predictions: dict[str, ExampleSet], title: str | None = None) -> Figure:
    """SAR image, ground truth and each initialization's prediction, one row per patch.

    Args:
        predictions: Column title (initialization) -> its stored patches (the same
            patches for all; the first set gives image and ground truth).
        title: Figure title.

    Returns:
        The figure.

    Raises:
        ValueError: If ``predictions`` is empty or the sets hold different patches.
    """
    if not predictions:
        raise ValueError("no prediction to plot")
    reference = next(iter(predictions.values()))
    for name, examples in predictions.items():
        if not np.array_equal(examples.indices, reference.indices):
            raise ValueError(
                f"init {name!r} holds test patches {examples.indices.tolist()} but the first "
                f"init holds {reference.indices.tolist()}"
            )
    num_classes = len(reference.classes)
    cmap = ListedColormap([*reference.colors, IGNORE_COLOR])
    columns = ["SAR image", "Ground truth", *predictions]
    nrows = len(reference.indices)
    fig, axs = plt.subplots(
        nrows, len(columns), figsize=(2.4 * len(columns), 2.4 * nrows + 0.8), squeeze=False
    )
    for row in range(nrows):
        image, _ = sar_display(reference.images[row])
        axs[row, 0].imshow(image, cmap="gray", interpolation="none")
        panels = [reference.masks[row], *(e.predictions[row] for e in predictions.values())]
        for column, labels in enumerate(panels, start=1):
            axs[row, column].imshow(
                _mask_image(labels, num_classes, reference.ignore_index),
                cmap=cmap,
                vmin=-0.5,
                vmax=num_classes + 0.5,
                interpolation="none",
            )
        axs[row, 0].set_ylabel(f"test patch {int(reference.indices[row])}")
    for column, name in enumerate(columns):
        axs[0, column].set_title(name, fontsize="medium")
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Patch(facecolor=color, edgecolor="black", label=name)
        for name, color in zip(reference.classes, reference.colors, strict=True)
    ]
    if reference.ignore_index is not None and (reference.masks == reference.ignore_index).any():
        handles.append(Patch(facecolor=IGNORE_COLOR, edgecolor="black", label="unlabelled"))
    fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 6), frameon=False)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def write_figures(rows: Sequence[dict[str, Any]], output: Path) -> list[Path]:
    """Draw the F1 bars and prediction maps of every table into ``output/figures``.

    Prediction maps use, per initialization, the successful run with the lowest seed
    whose patches are in ``output/predictions/<run_id>.npz``.

    Args:
        rows: Result rows.
        output: The benchmark's output folder.

    Returns:
        The written PNG files.
    """
    folder = output / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in summarize(rows):
        if not table.classes:
            continue
        group = group_name(*(table.key[k] for k in GROUP_KEYS))
        fig = plot_f1_bars(table)
        written.append(_save(fig, folder / f"f1_{group}.png"))
        chosen: dict[str, tuple[int, ExampleSet]] = {}
        members = [r for r in rows if all(r[k] == v for k, v in table.key.items())]
        for row in sorted(members, key=lambda r: r["seed"]):
            path = output / "predictions" / f"{row['run_id']}.npz"
            if row.get("status") == "ok" and row["init"] not in chosen and path.is_file():
                chosen[row["init"]] = (row["seed"], load_examples(path))
        if chosen:
            columns = {
                f"{r.init} (seed {chosen[r.init][0]})": chosen[r.init][1]
                for r in table.rows
                if r.init in chosen
            }
            fig = plot_prediction_maps(columns, title=table.title)
            written.append(_save(fig, folder / f"predictions_{group}.png"))
    return written


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

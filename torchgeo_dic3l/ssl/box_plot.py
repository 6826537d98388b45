"""Figures of matched boxes: both crops in the source and the same boxes in each view."""

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..datasets.utils import sar_display
from ..transforms.views import ViewGeometry
from .box_matching import BoxPairs


def _show(ax: Axes, image: Tensor, title: str) -> None:
    """Draw the first channel of a ``[C, H, W]`` image with a 2-98 % stretch."""
    picture, _ = sar_display(image[:1])
    ax.imshow(picture, cmap="gray")
    ax.set_title(title)
    ax.set_axis_off()


def _draw_boxes(ax: Axes, boxes: Tensor, colours: list[str], style: str = "-") -> None:
    """Outline ``[K, 4]`` pixel-edge boxes; imshow puts pixel centres on integers."""
    for (x0, y0, x1, y1), colour in zip(boxes.tolist(), colours, strict=True):
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colour,
                linestyle=style,
                linewidth=1.5,
            )
        )


def plot_box_pairs(
    image: Tensor,
    view1: Tensor,
    view2: Tensor,
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    pairs: BoxPairs,
    index: int = 0,
    suptitle: str | None = None,
) -> Figure:
    """Plot one image's crops and matched boxes in the source and in both views.

    The source panel shows both crops (dashed: view 1 white, view 2 yellow) and the
    valid boxes; the view panels show the same boxes, in the same colours, mapped
    into each view (flips and turns included).

    Args:
        image: ``[C, H, W]`` source image (batch element ``index``).
        view1: ``[C, S, S]`` first view of that image.
        view2: ``[C, S, S]`` second view of that image.
        geom1: Geometry of the first views of the batch.
        geom2: Geometry of the second views of the batch.
        pairs: Output of :func:`~torchgeo_dic3l.ssl.box_matching.match_boxes` for that batch.
        index: Batch index of the image.
        suptitle: Optional figure title.

    Returns:
        The figure.
    """
    rows = (pairs.boxes1[:, 0] == index) & pairs.valid
    colours = [to_hex(plt.get_cmap("tab10")(i % 10)) for i in range(int(rows.sum()))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    _show(axes[0], image, "source (crops: view 1 white, view 2 yellow)")
    crops = torch.stack([geom1.crops[index], geom2.crops[index]]).detach().float().cpu()
    _draw_boxes(axes[0], crops[:1], ["white"], "--")
    _draw_boxes(axes[0], crops[1:], ["yellow"], "--")
    _draw_boxes(axes[0], pairs.source[rows].detach().cpu(), colours)
    for ax, view, boxes, geom, name in [
        (axes[1], view1, pairs.boxes1, geom1, "view 1"),
        (axes[2], view2, pairs.boxes2, geom2, "view 2"),
    ]:
        flips = [
            label
            for label, on in [("h-flip", geom.hflip[index]), ("v-flip", geom.vflip[index])]
            if bool(on)
        ]
        turns = int(geom.rot90[index])
        detail = ", ".join([*flips, *([f"rot90 x{turns}"] if turns else [])])
        _show(ax, view, f"{name} ({detail})" if detail else name)
        _draw_boxes(ax, boxes[rows, 1:].detach().cpu(), colours)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig

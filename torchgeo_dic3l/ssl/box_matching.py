"""Matched instance boxes between two views, for DI3CL's Dynamic Instance term.

For every image, up to ``N`` boxes are drawn inside the intersection of its two view
crops (in source pixels), each at least ``min_box`` view pixels on a side in both
views and overlapping every other kept box of the image with IoU below ``max_iou``.
Each box is then mapped into both views, ready for
:func:`torchvision.ops.roi_align`. Everything is vectorized over the batch and has a
fixed output size, so no host synchronization is needed.
"""

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..transforms.views import ViewGeometry, source_to_view, view_to_source

#: DI3CL's smallest box side (32 px) at its 448 px view size; scaled with the view size.
MIN_BOX_FRACTION = 32 / 448

#: Parallel suppression sweeps approximating the sequential greedy rule (odd, see
#: :func:`_suppress`).
SWEEPS = 5


@dataclass
class BoxPairs:
    """Boxes matched between two views, ``N`` slots per image of a batch of ``B``.

    Attributes:
        boxes1: ``[B*N, 5]`` rows ``(batch index, x0, y0, x1, y1)`` in view-1 pixels.
        boxes2: ``[B*N, 5]`` the same boxes in view-2 pixels.
        valid: ``[B*N]`` bool; invalid slots hold small finite dummy boxes.
        source: ``[B*N, 4]`` the boxes in source pixels (the view-1 dummy mapped back
            for invalid slots).
    """

    boxes1: Tensor
    boxes2: Tensor
    valid: Tensor
    source: Tensor


def _suppress(conflict: Tensor, usable: Tensor, sweeps: int = SWEEPS) -> Tensor:
    """Keep candidates that conflict with no earlier kept candidate, in parallel.

    The sequential greedy rule keeps candidate ``j`` if it conflicts with no earlier
    *kept* candidate. Here every candidate is updated at once from the previous
    sweep's kept set, starting from all usable candidates. The first sweep is the
    strict rule "no conflict with any earlier usable candidate"; each later sweep
    alternates between a superset and a subset of the greedy set, and every odd sweep
    is a conflict-free subset of it (a kept pair ``i < j`` would have ``i`` in the
    superset before, which rules ``j`` out) that grows towards it. ``sweeps`` must be
    odd; after ``M`` sweeps the result is exactly greedy.

    Args:
        conflict: ``[B, M, M]`` bool, ``conflict[b, j, i]`` when ``i < j`` clash.
        usable: ``[B, M]`` bool candidates that may be kept at all.
        sweeps: Number of parallel sweeps, odd.

    Returns:
        ``[B, M]`` bool kept candidates.
    """
    kept = usable
    weights = conflict.to(torch.float32)
    for _ in range(sweeps):
        blocked = torch.bmm(weights, kept.to(torch.float32).unsqueeze(-1)).squeeze(-1) > 0
        kept = usable & ~blocked
    return kept


def _candidate_boxes(
    inter: Tensor,
    min_w: Tensor,
    min_h: Tensor,
    candidates: int,
    max_fraction: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Spread ``candidates`` boxes over a grid laid on each intersection.

    The intersection is split into a ``g x g`` grid with ``g * g >= candidates``;
    each candidate takes a distinct random cell, a centre uniformly inside it and
    sides uniform between the minimum and ``max_fraction`` of the intersection, and
    is shifted to lie inside the intersection.

    Args:
        inter: ``[B, 4]`` intersections in source pixels.
        min_w: ``[B]`` smallest box width in source pixels.
        min_h: ``[B]`` smallest box height in source pixels.
        candidates: Boxes per image ``M``.
        max_fraction: Largest box side as a fraction of the intersection side.
        generator: Random generator on the geometry's device.

    Returns:
        ``[B, M, 4]`` candidate boxes in source pixels.
    """
    batch, device = inter.shape[0], inter.device
    grid = math.ceil(math.sqrt(candidates))
    cells = torch.rand(batch, grid * grid, device=device, generator=generator)
    cell = cells.argsort(dim=1)[:, :candidates]
    col = (cell % grid).to(inter.dtype)
    row = torch.div(cell, grid, rounding_mode="floor").to(inter.dtype)
    jitter = torch.rand(4, batch, candidates, device=device, generator=generator)

    x0, y0, x1, y1 = inter.unbind(-1)
    iw = (x1 - x0).clamp_min(0)[:, None]
    ih = (y1 - y0).clamp_min(0)[:, None]
    min_w, min_h = min_w[:, None], min_h[:, None]
    w = min_w + jitter[0] * (max_fraction * iw - min_w).clamp_min(0)
    h = min_h + jitter[1] * (max_fraction * ih - min_h).clamp_min(0)
    cx = x0[:, None] + (col + jitter[2]) / grid * iw
    cy = y0[:, None] + (row + jitter[3]) / grid * ih
    # Shift, never shrink, boxes into the intersection; maximum then minimum so that an
    # intersection narrower than the box (an unusable image) still gives finite values.
    bx0 = torch.minimum(torch.maximum(cx - w / 2, x0[:, None]), x1[:, None] - w)
    by0 = torch.minimum(torch.maximum(cy - h / 2, y0[:, None]), y1[:, None] - h)
    return torch.stack([bx0, by0, bx0 + w, by0 + h], dim=-1)


def _conflicts(boxes: Tensor, max_iou: float) -> Tensor:
    """``[B, M, M]`` bool: ``[b, j, i]`` when ``i < j`` and their IoU is ``>= max_iou``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    iw = (torch.minimum(x1[:, :, None], x1[:, None, :]) - torch.maximum(x0[:, :, None], x0[:, None, :])).clamp_min(0)
    ih = (torch.minimum(y1[:, :, None], y1[:, None, :]) - torch.maximum(y0[:, :, None], y0[:, None, :])).clamp_min(0)
    inter = iw * ih
    area = (x1 - x0) * (y1 - y0)
    union = area[:, :, None] + area[:, None, :] - inter
    earlier = torch.ones(boxes.shape[1], boxes.shape[1], dtype=torch.bool, device=boxes.device).tril(-1)
    # IoU >= t  <=>  inter >= t * union, which avoids a division.
    return (inter >= max_iou * union) & earlier


def match_boxes(
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    size: int,
    boxes_per_image: int = 10,
    candidates: int = 50,
    min_box: float | None = None,
    max_iou: float = 0.5,
    generator: torch.Generator | None = None,
    max_fraction: float = 0.5,
) -> BoxPairs:
    """Draw boxes inside the overlap of two views and map them into both views.

    Per image, ``candidates`` boxes are spread over a grid on the intersection of the
    two crops (see :func:`_candidate_boxes`), candidates whose IoU with an earlier
    kept one is ``>= max_iou`` are suppressed (a parallel approximation of the
    sequential greedy rule that never keeps a clashing pair; see :func:`_suppress`),
    and the first ``boxes_per_image`` survivors fill the image's slots. IoU is the
    same in source and view coordinates because each mapping scales all areas of an
    image by one factor. An image whose views overlap by less than ``min_box`` view
    pixels in either direction gets no valid box.

    Args:
        geom1: Geometry of the first views.
        geom2: Geometry of the second views.
        size: Side of the square views in pixels.
        boxes_per_image: Slots ``N`` per image.
        candidates: Candidates ``M`` drawn per image, at least ``N``.
        min_box: Smallest box side in view pixels, in both views; defaults to
            ``32 / 448 * size`` as in DI3CL.
        max_iou: Largest IoU allowed between two boxes of an image.
        generator: Random generator on the geometry's device; the global one if None.
        max_fraction: Largest box side as a fraction of the intersection side.

    Returns:
        The matched boxes, ``N`` slots per image, batch-major.

    Raises:
        ValueError: If an option is out of range or the geometries' batches differ.
    """
    if geom1.crops.shape != geom2.crops.shape:
        raise ValueError(
            f"geom1 and geom2 must describe the same batch, got crops of shape "
            f"{list(geom1.crops.shape)} and {list(geom2.crops.shape)}"
        )
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if boxes_per_image < 1:
        raise ValueError(f"boxes_per_image must be at least 1, got {boxes_per_image}")
    if candidates < boxes_per_image:
        raise ValueError(
            f"candidates ({candidates}) must be at least boxes_per_image ({boxes_per_image})"
        )
    if not 0.0 < max_iou <= 1.0:
        raise ValueError(f"max_iou must be in (0, 1], got {max_iou}")
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    min_side = MIN_BOX_FRACTION * size if min_box is None else min_box
    if not 0.0 < min_side <= size:
        raise ValueError(f"min_box must be in (0, size={size}] view pixels, got {min_side}")

    crops1, crops2 = geom1.crops.float(), geom2.crops.float()
    batch = crops1.shape[0]
    inter = torch.cat([torch.maximum(crops1[:, :2], crops2[:, :2]), torch.minimum(crops1[:, 2:], crops2[:, 2:])], dim=1)
    widths = torch.maximum(crops1[:, 2] - crops1[:, 0], crops2[:, 2] - crops2[:, 0])
    heights = torch.maximum(crops1[:, 3] - crops1[:, 1], crops2[:, 3] - crops2[:, 1])
    min_w = min_side / size * widths
    min_h = min_side / size * heights
    usable = (inter[:, 2] - inter[:, 0] >= min_w) & (inter[:, 3] - inter[:, 1] >= min_h)

    boxes = _candidate_boxes(inter, min_w, min_h, candidates, max_fraction, generator)
    kept = _suppress(_conflicts(boxes, max_iou), usable[:, None].expand(-1, candidates))

    # The first N kept candidates, in candidate order: kept ones sort before the rest.
    order = torch.arange(candidates, device=kept.device)
    rank = torch.where(kept, order, order + candidates)
    first = rank.topk(boxes_per_image, dim=1, largest=False).indices
    valid = kept.gather(1, first)
    source = boxes.gather(1, first[..., None].expand(-1, -1, 4))

    dummy = torch.tensor([0.0, 0.0, min_side, min_side], device=boxes.device)
    view1 = torch.where(valid[..., None], source_to_view(source, geom1, size), dummy)
    view2 = torch.where(valid[..., None], source_to_view(source, geom2, size), dummy)
    source = torch.where(valid[..., None], source, view_to_source(view1, geom1, size))

    index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)
    index = index[:, None, None].expand(-1, boxes_per_image, 1)
    return BoxPairs(
        boxes1=torch.cat([index, view1], dim=-1).reshape(-1, 5),
        boxes2=torch.cat([index, view2], dim=-1).reshape(-1, 5),
        valid=valid.reshape(-1),
        source=source.reshape(-1, 4),
    )

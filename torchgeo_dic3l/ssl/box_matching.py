"""Matched instance boxes between two views, for DI3CL's Dynamic Instance term.

For every image, up to ``N`` boxes are drawn inside the intersection of its two view
crops (in source pixels), each at least ``min_box`` view pixels on a side in both
views and overlapping every other kept box of the image with IoU below ``max_iou``.
Each box is then mapped into both views, ready for :func:`torchvision.ops.roi_align`.
Everything is vectorized over the batch and has a fixed output size, so no host
synchronization is needed.
"""

import functools
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..transforms.views import ViewGeometry, source_to_view

#: DI3CL's smallest box side (32 px) at its 448 px view size; scaled with the view size.
MIN_BOX_FRACTION = 32 / 448

#: Parallel suppression sweeps approximating the sequential greedy rule (odd, see
#: :func:`_suppress`).
SWEEPS = 5

#: Bits per packed int64 word; 62 is two int32 half words of 31 bits (sign bits free).
WORD = 62

#: Bits per int32 half word.
HALF_WORD = WORD // 2


@dataclass
class BoxPairs:
    """Boxes matched between two views, ``N`` slots per image of a batch of ``B``.

    Attributes:
        boxes1: ``[B*N, 5]`` rows ``(batch index, x0, y0, x1, y1)`` in view-1 pixels.
        boxes2: ``[B*N, 5]`` the same boxes in view-2 pixels.
        valid: ``[B*N]`` bool; invalid slots hold a small finite dummy box
            ``(0, 0, min_box, min_box)`` in each view.
        source: ``[B*N, 4]`` the boxes in source pixels (an unused, finite candidate
            for invalid slots).
    """

    boxes1: Tensor
    boxes2: Tensor
    valid: Tensor
    source: Tensor


@dataclass(frozen=True)
class _Constants:
    """Tensors that depend only on the candidate count ``M`` and the device.

    Attributes:
        half_powers: ``[M, 1]`` int32 ``2 ** (i % HALF_WORD)``.
        powers: ``[W * WORD]`` int64 ``2 ** (i % WORD)`` for ``i < M``, then zeros.
        earlier: ``[W, 1, M]`` int64 words with the bits of every ``i < j`` in row ``j``.
        order: ``[M]`` int64 candidate numbers.
        cells: ``[2 * 4 * g * g, M]`` float32 grid column (first half) and row (second
            half) of every candidate for each of the ``4 * g * g`` grid codes.
        cell_planes: ``[2, 1]`` int64 first row of the column and of the row tables.
        grid: Side ``g`` of the candidate grid.
        dummy: ``[4]`` float32 ``(0, 0, 1, 1)``, the shape of an invalid slot.
    """

    half_powers: Tensor
    powers: Tensor
    earlier: Tensor
    order: Tensor
    cells: Tensor
    cell_planes: Tensor
    grid: int
    dummy: Tensor


def _grid_cells_table(candidates: int) -> Tensor:
    """Column and row of every candidate for every grid code (see :func:`_grid_cells`).

    Args:
        candidates: Candidates per image ``M``.

    Returns:
        ``[2, 4 * g * g, M]`` int64; code ``4 * r + 2 * my + mx`` is the offset ``r``
        with the grid mirrored along x if ``mx`` and along y if ``my``.
    """
    grid = math.ceil(math.sqrt(candidates))
    cells = grid * grid
    step = round(cells * (math.sqrt(5) - 1) / 2)
    while math.gcd(step, cells) != 1:
        step += 1
    code = torch.arange(4 * cells, device="cpu")[:, None]
    cell = (torch.arange(candidates, device="cpu") * step + code // 4) % cells
    col, row = cell % grid, cell // grid
    col = torch.where(code % 2 == 1, grid - 1 - col, col)
    row = torch.where(code // 2 % 2 == 1, grid - 1 - row, row)
    return torch.stack([col, row])


@functools.lru_cache(maxsize=32)
def _constants(m: int, device: torch.device) -> _Constants:
    """Build, once per candidate count and device, the constant tensors.

    Rebuilding them would cost about twenty small kernels per call, a sizeable share
    of :func:`match_boxes` on the CPU.

    Args:
        m: Candidates per image ``M``.
        device: Device of the tensors.

    Returns:
        The constants.
    """
    # Built on the CPU whatever the default device, then copied once.
    words = -(-m // WORD)
    index = torch.arange(words * WORD, device="cpu")
    powers = torch.where(index < m, torch.ones_like(index) << (index % WORD), 0)
    order = torch.arange(m, device="cpu")
    half_powers = (torch.ones_like(order, dtype=torch.int32) << (order % HALF_WORD).int())[:, None]
    earlier = _pack_bits((order[:, None] < order[None, :]).int() * half_powers)
    cells = _grid_cells_table(m)
    return _Constants(
        half_powers=half_powers.to(device),
        powers=powers.to(device),
        earlier=earlier[:, None, :].to(device),
        order=order.to(device),
        cells=cells.float().flatten(0, 1).to(device),
        cell_planes=torch.tensor([[0], [cells.shape[1]]], device=device),
        grid=math.ceil(math.sqrt(m)),
        dummy=torch.tensor([0.0, 0.0, 1.0, 1.0], device=device),
    )


def _pack_bits(bits: Tensor) -> Tensor:
    """Pack ``[..., M, K]`` int32 single-bit values into ``[ceil(M / WORD), ..., K]`` words.

    Bits are summed along ``M``, the second-to-last axis, because sums over a middle
    axis run over contiguous rows and vectorize, while sums along a short last axis
    do not. Half words of 31 bits are summed in int32, then joined in int64.

    Args:
        bits: Entry ``i`` along ``M`` is ``0`` or ``2 ** (i % HALF_WORD)``.

    Returns:
        int64 words: bit ``i % WORD`` of word ``i // WORD`` is bit ``i`` of the input.
    """
    m = bits.shape[-2]
    # Distinct powers below 2**31 sum exactly in int32.
    halves = [
        bits[..., k : k + HALF_WORD, :].sum(-2, dtype=torch.int32).long()
        for k in range(0, m, HALF_WORD)
    ]
    low, high = halves[0::2], halves[1::2]
    words = [a | (b << HALF_WORD) for a, b in zip(low, high, strict=False)]
    return torch.stack(words + low[len(high) :])


def _conflict_bits(boxes: Tensor, max_iou: float) -> Tensor:
    """Packed clashes: bit ``i`` of ``[:, b, j]`` is set when ``i < j`` clash.

    Two boxes clash when their IoU is ``>= t = max_iou``, that is when
    ``(1 + t) * inter - t * (area_i + area_j) >= 0`` (no division, and exact at
    ``IoU == t`` for simple values such as boxes on integer pixels and ``t = 0.5``).
    The sign is read from the float32 bit pattern because comparisons that produce
    bool tensors are several times slower than arithmetic on CPU, and this
    ``[B, M, M]`` step dominates the cost of :func:`match_boxes`.

    Args:
        boxes: ``[4, B, M]`` float32 boxes, one plane per coordinate.
        max_iou: IoU from which two boxes clash.

    Returns:
        ``[ceil(M / WORD), B, M]`` int64 words.
    """
    # In the [B, M, M] pair planes, axis 1 is the earlier box i and axis 2 the box j.
    x0, x1 = boxes[0, :, :, None], boxes[2, :, :, None]
    # Heights scaled by 1 + t make the product below (1 + t) * inter with no extra pass.
    y0, y1 = boxes[1, :, :, None] * (1 + max_iou), boxes[3, :, :, None] * (1 + max_iou)
    # All [B, M, M] work happens in one buffer: separate temporaries of this size
    # cost more in allocation and page faults than in arithmetic.
    _, batch, m = boxes.shape
    iw, ih, margin = boxes.new_empty(3, batch, m, m)
    torch.minimum(x1, x1.transpose(1, 2), out=iw)
    iw.sub_(torch.maximum(x0, x0.transpose(1, 2), out=margin))
    torch.minimum(y1, y1.transpose(1, 2), out=ih)
    ih.sub_(torch.maximum(y0, y0.transpose(1, 2), out=margin))
    area = ((boxes[2] - boxes[0]) * (boxes[3] - boxes[1]) * max_iou)[:, :, None]
    # One clamp suffices: a negative ih then makes the product negative, never a clash.
    torch.addcmul(-area, iw.clamp_min_(0), ih, out=margin)
    margin.sub_(area.transpose(1, 2))
    # -1 (all bits set) where the margin is negative, so where the pair does not clash;
    # done in place on the buffer, which is not used afterwards.
    apart = margin.view(torch.int32).bitwise_right_shift_(31)
    constants = _constants(m, boxes.device)
    apart_words = _pack_bits(apart.bitwise_and_(constants.half_powers))
    return constants.earlier & ~apart_words


def _suppress(conflict: Tensor, usable: Tensor, sweeps: int = SWEEPS) -> Tensor:
    """Keep candidates that clash with no earlier kept candidate, in parallel.

    The sequential greedy rule keeps candidate ``j`` if it clashes with no earlier
    *kept* candidate, which needs a loop over candidates. Here every candidate is
    updated at once from the previous sweep's kept set, starting from all candidates
    of usable images. The first sweep is the strict rule "no clash with any earlier
    candidate"; later sweeps alternate between a superset and a subset of the greedy
    set, and every odd sweep is a clash-free subset of it (a kept pair ``i < j``
    would put ``i`` in the superset before, which rules ``j`` out) that grows towards
    it. After ``M`` sweeps the result is exactly greedy; in practice a few sweeps
    already are (the tests compare with the sequential rule).

    Args:
        conflict: ``[W, B, M]`` packed clashes from :func:`_conflict_bits`.
        usable: ``[B]`` bool, whether an image's candidates may be kept at all.
        sweeps: Number of parallel sweeps; must be odd.

    Returns:
        ``[B, M]`` bool kept candidates.
    """
    words, batch, m = conflict.shape
    powers = _constants(m, conflict.device).powers
    # The kept set is held as its bits, 2 ** (j % WORD) or 0 per candidate, padded
    # to whole words, so that one sum packs it; padding clashes with nothing, and
    # its bits are 0, so it never counts as kept.
    conflict = F.pad(conflict, (0, words * WORD - m))
    kept_bits = powers.expand(batch, -1)
    for _ in range(sweeps):
        kept_words = kept_bits.view(batch, words, WORD).sum(-1)
        hits = conflict & kept_words.T[:, :, None]
        clashes = hits[0] if words == 1 else hits.amax(0)
        kept_bits = torch.where(clashes != 0, 0, powers)
    # Usability is per image, so it can be applied once at the end, not in every sweep.
    return (kept_bits[:, :m] != 0) & usable[:, None]


def _grid_cells(
    batch: int, candidates: int, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, int]:
    """Distinct, spread-out grid cells for the candidates of every image.

    Candidate ``k`` takes cell ``(k * a + r) mod g^2`` of a ``g x g`` grid, with
    ``a`` coprime to ``g^2`` near the golden-ratio fraction of it (so consecutive
    candidates land far apart), a random offset ``r`` per image, and the grid
    randomly mirrored per image along each axis. The cells of all ``4 g^2``
    (offset, mirror) codes are tabulated once, so one random code and one lookup per
    image give them.

    Args:
        batch: Number of images.
        candidates: Candidates per image ``M``.
        device: Device of the result.
        generator: Random generator on ``device``.

    Returns:
        ``[2, B, M]`` float32 column (first plane) and row of each candidate, and the
        grid side ``g``.
    """
    constants = _constants(candidates, device)
    codes = 4 * constants.grid**2
    code = torch.randint(0, codes, (1, batch), device=device, generator=generator)
    rows = (code + constants.cell_planes).view(-1)
    cells = constants.cells.index_select(0, rows).view(2, batch, candidates)
    return cells, constants.grid


def _candidate_boxes(
    inter: Tensor,
    min_w: Tensor,
    min_h: Tensor,
    candidates: int,
    max_fraction: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Spread ``candidates`` boxes over a grid laid on each intersection.

    Each candidate gets its own grid cell (see :func:`_grid_cells`), a centre uniform
    inside it, sides uniform between the minimum and ``max_fraction`` of the
    intersection, and is shifted (never shrunk) to lie inside the intersection.
    Both axes are handled at once as ``[2, B, M]`` planes.

    Args:
        inter: ``[B, 4]`` intersections in source pixels.
        min_w: ``[B]`` smallest box width in source pixels.
        min_h: ``[B]`` smallest box height in source pixels.
        candidates: Boxes per image ``M``.
        max_fraction: Largest box side as a fraction of the intersection side.
        generator: Random generator on the geometry's device.

    Returns:
        ``[4, B, M]`` candidate boxes ``(x0, y0, x1, y1)`` in source pixels, one plane
        per coordinate (stacking along a short last axis is slow on CPU).
    """
    batch, device = inter.shape[0], inter.device
    col_row, grid = _grid_cells(batch, candidates, device, generator)
    # Per axis: [2, B, 1] start, stop and extent of the intersection, smallest side.
    start, stop = inter[:, :2].T[:, :, None], inter[:, 2:].T[:, :, None]
    extent = (stop - start).clamp_min(0)
    least = torch.stack([min_w, min_h])[:, :, None]
    jitter = torch.rand(2, 2, batch, candidates, device=device, generator=generator)
    side = torch.addcmul(least, jitter[0], (max_fraction * extent - least).clamp_min(0))
    centre = torch.addcmul(start, col_row + jitter[1], extent / grid)
    # Clamping to the start then to the end, so that an intersection smaller than the
    # box (an image without usable overlap) still gives finite values.
    corner = torch.clamp(torch.add(centre, side, alpha=-0.5), min=start, max=stop - side)
    return torch.cat([corner, corner + side])


def _check_options(
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    size: int,
    boxes_per_image: int,
    candidates: int,
    min_box: float,
    max_iou: float,
    max_fraction: float,
) -> None:
    """Raise a ValueError naming the first out-of-range option of :func:`match_boxes`."""
    if geom1.crops.shape != geom2.crops.shape or geom1.crops.dim() != 2:
        raise ValueError(
            "geom1 and geom2 must describe the same batch with [B, 4] crops, got crops of "
            f"shape {list(geom1.crops.shape)} and {list(geom2.crops.shape)}"
        )
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if boxes_per_image < 1:
        raise ValueError(f"boxes_per_image must be at least 1, got {boxes_per_image}")
    if candidates < boxes_per_image:
        raise ValueError(
            f"candidates ({candidates}) must be at least boxes_per_image ({boxes_per_image})"
        )
    if not 0.0 < min_box <= size:
        raise ValueError(f"min_box must be in (0, size={size}] view pixels, got {min_box}")
    if not 0.0 < max_iou <= 1.0:
        raise ValueError(f"max_iou must be in (0, 1], got {max_iou}")
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")


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
    two crops (see :func:`_candidate_boxes`); candidates whose IoU with an earlier
    kept one is ``>= max_iou`` are dropped (a parallel approximation of the
    sequential greedy rule that never keeps a clashing pair, see :func:`_suppress`);
    the first ``boxes_per_image`` survivors fill the image's slots. IoU is the same
    in source and view pixels because each mapping scales all areas of an image by
    one factor. An image whose views overlap by less than ``min_box`` view pixels in
    either direction gets no valid box.

    Args:
        geom1: Geometry of the first views.
        geom2: Geometry of the second views.
        size: Side of the square views in pixels.
        boxes_per_image: Slots ``N`` per image.
        candidates: Candidates ``M`` drawn per image, at least ``N``.
        min_box: Smallest box side in view pixels, in both views; defaults to
            ``32 / 448 * size`` as in DI3CL.
        max_iou: Largest IoU allowed between two boxes of an image (exclusive).
        generator: Random generator on the geometry's device; the global one if None.
        max_fraction: Largest box side as a fraction of the intersection side.

    Returns:
        The matched boxes, ``N`` slots per image, batch-major.

    Raises:
        ValueError: If an option is out of range or the geometries' batches differ.
    """
    min_side = MIN_BOX_FRACTION * size if min_box is None else min_box
    _check_options(
        geom1, geom2, size, boxes_per_image, candidates, min_side, max_iou, max_fraction
    )
    # [2, B, 4]: both views' crops, so each step below is one kernel for both.
    crops = torch.stack([geom1.crops, geom2.crops]).float()
    batch, device = crops.shape[1], crops.device
    start, stop = crops[..., :2].amax(0), crops[..., 2:].amin(0)
    # A box needs min_side view pixels in the view that shrinks it most; with quarter
    # turns both sides need it anyway, so each source axis uses the larger crop side.
    min_wh = (crops[..., 2:] - crops[..., :2]).amax(0) * (min_side / size)
    usable = ((stop - start) >= min_wh).all(dim=1)

    boxes = _candidate_boxes(
        torch.cat([start, stop], dim=1),
        min_wh[:, 0],
        min_wh[:, 1],
        candidates,
        max_fraction,
        generator,
    )
    kept = _suppress(_conflict_bits(boxes, max_iou), usable)

    # The first N kept candidates in candidate order: kept ones rank before the rest.
    constants = _constants(candidates, device)
    rank = torch.where(kept, constants.order, constants.order + candidates)
    first = rank.topk(boxes_per_image, dim=1, largest=False).indices
    valid = kept.gather(1, first)[..., None]
    source = boxes.gather(2, first.expand(4, -1, -1)).permute(1, 2, 0)

    # Both views are mapped in one call, as a batch of 2B.
    both = ViewGeometry(
        crops=crops.view(2 * batch, 4),
        hflip=torch.cat([geom1.hflip, geom2.hflip]),
        vflip=torch.cat([geom1.vflip, geom2.vflip]),
        rot90=torch.cat([geom1.rot90, geom2.rot90]),
        size=size,
    )
    views = source_to_view(source.repeat(2, 1, 1), both)
    # Invalid slots get (0, 0, min_side, min_side).
    views = torch.where(valid.repeat(2, 1, 1), views, constants.dummy * min_side)
    index = torch.arange(batch, device=device, dtype=views.dtype).repeat(2)
    rows = torch.cat([index[:, None, None].expand(-1, boxes_per_image, 1), views], dim=-1)
    boxes1, boxes2 = rows.reshape(2, -1, 5)
    return BoxPairs(
        boxes1=boxes1,
        boxes2=boxes2,
        valid=valid.reshape(-1),
        source=source.reshape(-1, 4),
    )


def _show(ax: Axes, image: Tensor, title: str) -> None:
    """Draw the first channel of a ``[C, H, W]`` image with a 2-98 % stretch."""
    band = image[0].detach().float().cpu()
    low, high = torch.quantile(band.flatten(), torch.tensor([0.02, 0.98])).tolist()
    ax.imshow(band.numpy(), cmap="gray", vmin=low, vmax=max(high, low + 1e-6))
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
        pairs: Output of :func:`match_boxes` for that batch.
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

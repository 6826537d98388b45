"""Matched instance boxes between two views, for DI3CL's Dynamic Instance term.

For every image, up to ``N`` boxes are drawn inside the intersection of its two view
crops (in source pixels), each at least ``min_box`` view pixels on a side in both
views and overlapping every other kept box of the image with IoU below ``max_iou``.
Each box is then mapped into both views, ready for :func:`torchvision.ops.roi_align`.
Everything is vectorized over the batch and has a fixed output size, so no host
synchronization is needed.

Tensors are laid out candidate-major with the batch last (``[..., M, B]``): the
per-slot reductions then run over a leading axis, which vectorizes along the batch,
and broadcasting one box per image against all candidates reads contiguous rows.
"""

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.backbone import LAYER4_STRIDE
from ..transforms.views import ViewGeometry, source_to_view

#: Candidates per slot when ``candidates`` is not given: with grid-spread candidates,
#: 20 fill all ten slots of 99.85 % of MoCo view pairs, 50 of 99.88 %.
CANDIDATES_PER_BOX = 2

#: Scale of the candidate ranks in the greedy scores: far below any IoU margin of
#: real boxes, so that ``min(rank, margin)`` keeps the rank of every non-clashing
#: candidate exactly (see :func:`_greedy_boxes`).
RANK_SCALE = 2.0**-100


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
        cells: ``[2 * M, 4 * g * g]`` float32 grid column (first ``M`` rows) and row
            (last ``M`` rows) of every candidate for each of the ``4 * g * g`` codes.
        grid: Side ``g`` of the candidate grid.
        ranks: ``[M, 1]`` float32 ``(M - j) * RANK_SCALE``: earlier candidates rank higher.
        signs: ``[4, 1, 1]`` float32 ``(-1, -1, 1, 1)``.
        dummy: ``[4]`` float32 ``(0, 0, 1, 1)``, the shape of an invalid slot.
    """

    cells: Tensor
    grid: int
    ranks: Tensor
    signs: Tensor
    dummy: Tensor


def _grid_cells_table(candidates: int) -> Tensor:
    """Column and row of every candidate for every grid code (see :func:`_candidate_boxes`).

    Args:
        candidates: Candidates per image ``M``.

    Returns:
        ``[2, M, 4 * g * g]`` int64; code ``4 * r + 2 * my + mx`` is the offset ``r``
        with the grid mirrored along x if ``mx`` and along y if ``my``.
    """
    grid = math.ceil(math.sqrt(candidates))
    cells = grid * grid
    step = round(cells * (math.sqrt(5) - 1) / 2)
    while math.gcd(step, cells) != 1:
        step += 1
    code = torch.arange(4 * cells, device="cpu")[None, :]
    cell = (torch.arange(candidates, device="cpu")[:, None] * step + code // 4) % cells
    col, row = cell % grid, cell // grid
    col = torch.where(code % 2 == 1, grid - 1 - col, col)
    row = torch.where(code // 2 % 2 == 1, grid - 1 - row, row)
    return torch.stack([col, row])


@functools.lru_cache(maxsize=32)
def _constants(m: int, device: torch.device) -> _Constants:
    """Build, once per candidate count and device, the constant tensors.

    Args:
        m: Candidates per image ``M``.
        device: Device of the tensors.

    Returns:
        The constants.
    """
    # Built on the CPU whatever the default device, then copied once.
    ranks = torch.arange(m, 0, -1, device="cpu", dtype=torch.float32)[:, None] * RANK_SCALE
    return _Constants(
        cells=_grid_cells_table(m).float().flatten(0, 1).to(device),
        grid=math.ceil(math.sqrt(m)),
        ranks=ranks.to(device),
        signs=torch.tensor([-1.0, -1.0, 1.0, 1.0], device=device)[:, None, None],
        dummy=torch.tensor([0.0, 0.0, 1.0, 1.0], device=device),
    )


def _candidate_boxes(
    start: Tensor,
    stop: Tensor,
    least: Tensor,
    candidates: int,
    max_fraction: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Spread ``candidates`` boxes over a grid laid on each intersection.

    Candidate ``k`` of an image takes cell ``(k * a + r) mod g^2`` of a ``g x g``
    grid, with ``a`` coprime to ``g^2`` near the golden-ratio fraction of it (so
    consecutive candidates land far apart), a random offset ``r`` per image, and the
    grid randomly mirrored per image along each axis; the cells of all ``4 g^2``
    (offset, mirror) codes are tabulated once. Each candidate then gets a centre
    uniform inside its cell and sides uniform between the minimum and
    ``max_fraction`` of the intersection, and is shifted (never shrunk) to lie
    inside the intersection. Both axes are handled at once as ``[2, M, B]`` planes.

    Args:
        start: ``[2, 1, B]`` lower corner ``(x, y)`` of each intersection, source pixels.
        stop: ``[2, 1, B]`` upper corner of each intersection.
        least: ``[2, 1, B]`` smallest box width and height in source pixels.
        candidates: Boxes per image ``M``.
        max_fraction: Largest box side as a fraction of the intersection side.
        generator: Random generator on the geometry's device.

    Returns:
        ``[4, M, B]`` candidate boxes ``(x0, y0, x1, y1)`` in source pixels, one plane
        per coordinate, and their ``[2, M, B]`` widths and heights.
    """
    batch, device = start.shape[-1], start.device
    constants = _constants(candidates, device)
    code = torch.randint(0, constants.cells.shape[1], (batch,), device=device, generator=generator)
    col_row = constants.cells.index_select(1, code).view(2, candidates, batch)
    extent = (stop - start).clamp_min(0)
    jitter = torch.rand(2, 2, candidates, batch, device=device, generator=generator)
    side = torch.addcmul(least, jitter[0], (max_fraction * extent - least).clamp_min(0))
    centre = torch.addcmul(start, col_row + jitter[1], extent / constants.grid)
    # Clamping to the start then to the end, so that an intersection smaller than the
    # box (an image without usable overlap) still gives finite values.
    corner = torch.clamp(torch.add(centre, side, alpha=-0.5), min=start, max=stop - side)
    return torch.cat([corner, corner + side]), side


def _greedy_boxes(
    boxes: Tensor, sides: Tensor, usable: Tensor, slots: int, max_iou: float
) -> tuple[Tensor, Tensor]:
    """Fill each image's slots with the sequential greedy rule, one slot per pass.

    The greedy rule walks the candidates in order and keeps one when its IoU with
    every box kept before is below ``t = max_iou``. Its ``k``-th kept box is the
    first candidate that clashes with none of the ``k - 1`` kept before, so each
    pass picks the first surviving candidate of every image at once and drops the
    candidates that clash with it (itself included): exactly the greedy result, with
    ``N`` passes over ``[M, B]`` planes and no pairwise ``M x M`` work.

    Two boxes clash when ``t * (area_i + area_j) - (1 + t) * inter <= 0`` (no
    division, exact at ``IoU == t`` for simple values). A candidate's score is its
    rank ``(M - j) * RANK_SCALE`` while it survives; a pass takes the minimum of
    the score and that margin, which leaves a survivor's rank unchanged (margins of
    real boxes are many orders above the ranks) and makes a clashing one ``<= 0``.
    The top score of an image is then its first survivor, and a top score ``<= 0``
    means no survivor is left: the slot stays empty.

    Args:
        boxes: ``[4, M, B]`` candidate boxes.
        sides: ``[2, M, B]`` their widths and heights.
        usable: ``[1, B]`` bool, whether an image's candidates may be kept at all.
        slots: Slots ``N`` per image.
        max_iou: IoU from which two boxes clash.

    Returns:
        ``[4, N, B]`` the chosen boxes in slot order and ``[N, B]`` whether each slot
        holds one.
    """
    m = boxes.shape[1]
    constants = _constants(m, boxes.device)
    # Rows (-x0, -y0, x1, y1, t * area): one minimum against the chosen box gives
    # both axes' intersection bounds, as -max(a, b) = min(-a, -b).
    packed = torch.cat([boxes * constants.signs, (sides[0] * sides[1] * max_iou)[None]])
    corners, areas = packed.split((4, 1))
    score = constants.ranks * usable
    chosen, best = [], []
    for _ in range(slots):
        top, first = score.max(0, keepdim=True)
        box, area = packed.gather(1, first.expand(5, 1, -1)).split((4, 1))
        width, height = torch.minimum(corners, box).view(2, 2, m, -1).sum(0).unbind(0)
        # One clamp suffices: a negative height then makes the product negative,
        # which never counts as a clash.
        width.clamp_min_(0)
        margin = torch.addcmul(areas, width, height, value=-1 - max_iou).add_(area)
        torch.minimum(score, margin[0], out=score)
        chosen.append(box)
        best.append(top)
    return torch.cat(chosen, 1) * constants.signs, torch.cat(best) > 0


@dataclass(frozen=True)
class BoxOptions:
    """How :func:`match_boxes` draws boxes; checked when built.

    LightningCLI configures it as a nested mapping (``boxes: {boxes_per_image: 16}``).

    Attributes:
        boxes_per_image: Slots ``N`` per image.
        candidates: Candidates ``M`` drawn per image, at least ``N``; ``2 * N`` if None.
        min_box_cells: Smallest box side in ResNet layer4 cells (stride 32), in both
            views: 1 is 32 view pixels, the reference's minimum at any view size.
        max_iou: Largest IoU allowed between two boxes of an image, in (0, 1).
        max_fraction: Largest box side as a fraction of the intersection side, in
            (0, 1]; the reference lets boxes grow to the whole intersection (1).
    """

    boxes_per_image: int = 10
    candidates: int | None = None
    min_box_cells: float = 1.0
    max_iou: float = 0.5
    max_fraction: float = 1.0

    def __post_init__(self) -> None:
        """Check every option; the message names the first one out of range.

        Raises:
            ValueError: If an option is out of range.
        """
        if self.boxes_per_image < 1:
            raise ValueError(f"boxes_per_image must be at least 1, got {self.boxes_per_image}")
        if self.candidates is not None and self.candidates < self.boxes_per_image:
            raise ValueError(
                f"candidates ({self.candidates}) must be at least boxes_per_image "
                f"({self.boxes_per_image})"
            )
        if not self.min_box_cells > 0:
            raise ValueError(f"min_box_cells must be positive, got {self.min_box_cells}")
        # At 1 a box would no longer clash with itself beyond rounding (IoU < 1 is allowed).
        if not 0.0 < self.max_iou < 1.0:
            raise ValueError(f"max_iou must be in (0, 1), got {self.max_iou}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")

    @property
    def min_box(self) -> float:
        """Smallest box side in view pixels."""
        return self.min_box_cells * LAYER4_STRIDE

    @property
    def candidate_count(self) -> int:
        """Candidates drawn per image."""
        if self.candidates is None:
            return CANDIDATES_PER_BOX * self.boxes_per_image
        return self.candidates

    def check_view_size(self, size: int) -> None:
        """Check that views of ``size`` pixels can hold the smallest box.

        Args:
            size: Side of the square views in pixels.

        Raises:
            ValueError: If ``size`` is not positive or smaller than the smallest box.
        """
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if self.min_box > size:
            raise ValueError(
                f"min_box_cells={self.min_box_cells} is {self.min_box:g} px (layer4 stride "
                f"{LAYER4_STRIDE}), more than the {size} px views"
            )


def _check_geometries(geom1: ViewGeometry, geom2: ViewGeometry, size: int) -> None:
    """Raise a ValueError unless both geometries describe one batch of ``size`` px views."""
    if geom1.crops.shape != geom2.crops.shape or geom1.crops.dim() != 2:
        raise ValueError(
            "geom1 and geom2 must describe the same batch with [B, 4] crops, got crops of "
            f"shape {list(geom1.crops.shape)} and {list(geom2.crops.shape)}"
        )
    if geom1.size != size or geom2.size != size:
        raise ValueError(
            f"geom1 and geom2 must describe views of size={size}, got {geom1.size} and "
            f"{geom2.size}"
        )


def match_boxes(
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    size: int,
    options: BoxOptions | None = None,
    generator: torch.Generator | None = None,
) -> BoxPairs:
    """Draw boxes inside the overlap of two views and map them into both views.

    Per image, ``candidates`` boxes are spread over a grid on the intersection of the
    two crops (see :func:`_candidate_boxes`); walking them in order, a candidate is
    kept when its IoU with every box kept before is below ``max_iou``, until the
    ``boxes_per_image`` slots are full (the sequential greedy rule, computed for the
    whole batch at once by :func:`_greedy_boxes`). IoU is the same in source and
    view pixels because each mapping scales all areas of an image by one factor. An
    image whose views overlap by less than ``min_box`` view pixels in either
    direction gets no valid box.

    Args:
        geom1: Geometry of the first views.
        geom2: Geometry of the second views.
        size: Side of the square views in pixels.
        options: Box counts and sizes; the defaults of :class:`BoxOptions` (the
            reference's) if None.
        generator: Random generator on the geometry's device; the global one if None.

    Returns:
        The matched boxes, ``N`` slots per image, batch-major.

    Raises:
        ValueError: If the views are smaller than the smallest box or the geometries'
            batches or sizes differ.
    """
    options = options or BoxOptions()
    options.check_view_size(size)
    _check_geometries(geom1, geom2, size)
    min_side, m, boxes_per_image = (
        options.min_box,
        options.candidate_count,
        options.boxes_per_image,
    )
    # [4, 2, B]: coordinate-major crops of both views, so each step below is one kernel.
    crops = torch.stack([geom1.crops, geom2.crops]).float()
    batch = crops.shape[1]
    planes = crops.permute(2, 0, 1)
    start, stop = planes[:2].amax(1, keepdim=True), planes[2:].amin(1, keepdim=True)
    # A box needs min_side view pixels in the view that shrinks it most; with quarter
    # turns both sides need it anyway, so each source axis uses the larger crop side.
    least = (planes[2:] - planes[:2]).amax(1, keepdim=True) * (min_side / size)
    usable = ((stop - start) >= least).all(0)

    boxes, sides = _candidate_boxes(start, stop, least, m, options.max_fraction, generator)
    chosen, valid = _greedy_boxes(boxes, sides, usable, boxes_per_image, options.max_iou)
    source = chosen.permute(2, 1, 0)

    # Both views are mapped in one call, as a batch of 2B.
    both = ViewGeometry.cat([geom1, geom2])
    views = source_to_view(source.repeat(2, 1, 1), both).view(2, batch, boxes_per_image, 4)
    # Invalid slots get (0, 0, min_side, min_side).
    valid = valid.T.contiguous()
    dummy = _constants(m, views.device).dummy * min_side
    views = torch.where(valid[..., None], views, dummy)
    index = torch.arange(batch, device=views.device, dtype=views.dtype)
    index = index[None, :, None, None].expand(2, -1, boxes_per_image, 1)
    boxes1, boxes2 = torch.cat([index, views], dim=-1).view(2, -1, 5)
    return BoxPairs(
        boxes1=boxes1,
        boxes2=boxes2,
        valid=valid.view(-1),
        source=source.reshape(-1, 4),
    )

"""Class-stratified block splits and label-driven patch placement for a labelled scene.

:func:`stratified_block_split` gives every split of a block grid a share of every
class's labelled pixels close to the split fractions, and at least one block holding
each class. :func:`place_patches` then puts patches where the labels are, inside a
split's region grown by a margin, so that the guard gap between splits holds.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Split = Literal["train", "val", "test"]

#: Split names in the order of ``split_fractions`` and of the values in ``split_map``.
SPLITS: tuple[Split, ...] = ("train", "val", "test")

#: Row of :class:`SplitTable` for the training patches kept by ``label_fraction``.
TRAIN_SUBSET = "train subset"

#: Fewer test pixels of a class than this make its test scores too noisy to compare.
MIN_TEST_PIXELS = 300

#: Weight of the area term against the per-class terms of the split objective; small,
#: so that unlabelled blocks still follow the fractions without outweighing labels.
AREA_WEIGHT = 0.1

#: Maximum number of improvement sweeps over the blocks.
MAX_SWEEPS = 50


def block_grid(height: int, width: int, block_size: int) -> tuple[NDArray, NDArray]:
    """Row and column sizes of the blocks of a scene (edge blocks may be smaller).

    Args:
        height: Scene height in pixels.
        width: Scene width in pixels.
        block_size: Side of a block in pixels.

    Returns:
        The block heights (one per block row) and widths (one per block column).
    """
    starts_r = np.arange(0, height, block_size)
    starts_c = np.arange(0, width, block_size)
    sizes_r = np.minimum(starts_r + block_size, height) - starts_r
    sizes_c = np.minimum(starts_c + block_size, width) - starts_c
    return sizes_r, sizes_c


def candidate_starts(length: int, patch_size: int, stride: int) -> NDArray[np.int64]:
    """Patch starts along one axis tried by :func:`place_patches`: a step of a quarter stride.

    Args:
        length: Scene side in pixels.
        patch_size: Patch side in pixels.
        stride: Least distance between two patch corners.

    Returns:
        The starts, from 0.
    """
    return np.arange(0, length - patch_size + 1, max(1, stride // 4))


def _coverable(sizes: NDArray, patch_size: int, stride: int, margin: int) -> NDArray[np.bool_]:
    """Pixels along one axis that a patch can reach when every block is alone in its split.

    Args:
        sizes: Block sizes along the axis.
        patch_size: Patch side in pixels.
        stride: Least distance between two patch corners.
        margin: Pixels around a patch that must be in the same block.

    Returns:
        One flag per pixel of the axis.
    """
    length = int(sizes.sum())
    block = np.repeat(np.arange(sizes.size), sizes)
    starts = candidate_starts(length, patch_size, stride)
    low = np.maximum(starts - margin, 0)
    high = np.minimum(starts + patch_size + margin, length) - 1
    inside = starts[block[low] == block[high]]
    covered = np.zeros(length + 1, dtype=np.int64)
    np.add.at(covered, inside, 1)
    np.add.at(covered, inside + patch_size, -1)
    return covered.cumsum()[:-1] > 0


def block_class_counts(
    mask: NDArray[np.int64],
    num_classes: int,
    block_size: int,
    reach: tuple[int, int, int] | None = None,
) -> NDArray[np.int64]:
    """Labelled pixels of each class in each block, blocks in row-major order.

    Args:
        mask: ``[H, W]`` class indices; values outside ``0..K-1`` are unlabelled.
        num_classes: Number of classes K.
        block_size: Side of a block in pixels.
        reach: ``(patch_size, stride, margin)`` to count only the pixels that a patch
            placed by :func:`place_patches` can reach even when no neighbour block is in
            the same split; None counts every pixel.

    Returns:
        ``[num_blocks, K]`` counts.
    """
    height, width = mask.shape
    sizes_r, sizes_c = block_grid(height, width, block_size)
    rows = np.repeat(np.arange(sizes_r.size), sizes_r)[:, None]
    cols = np.repeat(np.arange(sizes_c.size), sizes_c)[None, :]
    block = np.broadcast_to(rows * sizes_c.size + cols, mask.shape)
    labelled = (mask >= 0) & (mask < num_classes)
    if reach is not None:
        labelled &= _coverable(sizes_r, *reach)[:, None] & _coverable(sizes_c, *reach)[None, :]
    flat = block[labelled] * num_classes + mask[labelled]
    counts = np.bincount(flat, minlength=sizes_r.size * sizes_c.size * num_classes)
    return counts.reshape(-1, num_classes).astype(np.int64)


def check_stratifiable(
    counts: NDArray[np.int64], classes: Sequence[str], active: int, block_size: int
) -> None:
    """Refuse a scene where a class is in fewer blocks than there are splits.

    Args:
        counts: ``[num_blocks, K]`` labelled pixels per block and class.
        classes: The K class names.
        active: Number of splits with a positive fraction.
        block_size: Side of a block, named in the message.

    Raises:
        ValueError: Naming the first such class, its blocks and what to change.
    """
    blocks = (counts > 0).sum(0)
    for name, n in zip(classes, blocks, strict=True):
        if 0 < n < active:
            raise ValueError(
                f"split_method='stratified': class {name!r} has labelled pixels in only "
                f"{n} block(s) of {block_size} px, fewer than the {active} splits it "
                f"should reach; use a smaller block_size (for example {block_size // 2}), "
                "or split_method='random' to accept splits without it"
            )


def _objective(assigned: NDArray, totals: NDArray, fractions: NDArray) -> float:
    """Squared deviation of each class's (and the area's) split shares from the fractions.

    Args:
        assigned: ``[S, K + 1]`` pixels of each class, then the area, per split.
        totals: ``[K + 1]`` totals over the splits (zero for absent classes).
        fractions: ``[S]`` target fractions.

    Returns:
        The weighted sum of squared share deviations.
    """
    present = totals > 0
    shares = assigned[:, present] / totals[present]
    weights = np.ones(shares.shape[1])
    weights[-1] = AREA_WEIGHT
    return float((((shares - fractions[:, None]) ** 2) * weights).sum())


def _greedy(
    values: NDArray[np.float64], fractions: NDArray, rng: np.random.Generator
) -> NDArray[np.int64]:
    """First assignment: blocks of the rarest class first, each to the neediest split.

    A split still without pixels of the class being placed comes first, so that every
    class reaches every split when it is in enough blocks (iterative stratification,
    Sechidis et al. 2011, on pixel counts).

    Args:
        values: ``[num_blocks, K + 1]`` class pixels and area per block.
        fractions: ``[S]`` target fractions, all positive.
        rng: Breaks ties between blocks.

    Returns:
        ``[num_blocks]`` split position (in ``fractions``) of each block.
    """
    totals = values.sum(0)
    assigned = np.zeros((fractions.size, values.shape[1]))
    split = np.full(values.shape[0], -1)
    holders = (values[:, :-1] > 0).sum(0)
    # Classes from the rarest; the area column (index K) places the unlabelled blocks.
    columns = [*np.argsort(np.where(holders > 0, holders, np.inf), kind="stable"), -1]
    for column in columns:
        if totals[column] == 0:
            continue
        order = rng.permutation(values.shape[0])
        order = order[np.argsort(-values[order, column], kind="stable")]
        for block in order:
            if split[block] >= 0 or values[block, column] == 0:
                continue
            need = fractions * totals[column] - assigned[:, column]
            missing = assigned[:, column] == 0
            split[block] = int(np.argmax(np.where(missing, np.inf, need)))
            assigned[split[block]] += values[block]
    return split


def _improve(
    values: NDArray[np.float64], fractions: NDArray, split: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Move single blocks between splits while that lowers :func:`_objective`.

    A move that would take a class's last block out of a split is not made.

    Args:
        values: ``[num_blocks, K + 1]`` class pixels and area per block.
        fractions: ``[S]`` target fractions.
        split: Starting assignment, changed in place.

    Returns:
        The improved assignment.
    """
    totals = values.sum(0)
    assigned = np.stack([values[split == s].sum(0) for s in range(fractions.size)])
    holders = np.stack([(values[split == s, :-1] > 0).sum(0) for s in range(fractions.size)])
    best = _objective(assigned, totals, fractions)
    for _ in range(MAX_SWEEPS):
        moved = False
        for block in range(values.shape[0]):
            source = split[block]
            present = values[block, :-1] > 0
            if (holders[source, present] <= 1).any():
                continue
            for target in range(fractions.size):
                if target == source:
                    continue
                trial = assigned.copy()
                trial[source] -= values[block]
                trial[target] += values[block]
                score = _objective(trial, totals, fractions)
                if score < best - 1e-12:
                    best, assigned, moved = score, trial, True
                    holders[source] -= present
                    holders[target] += present
                    split[block], source = target, target
        if not moved:
            break
    return split


def stratified_block_split(
    mask: NDArray[np.int64],
    classes: Sequence[str],
    block_size: int,
    fractions: Sequence[float],
    seed: int = 0,
    reach: tuple[int, int, int] | None = None,
) -> NDArray[np.int8]:
    """Assign blocks to splits so that every class's pixels follow the fractions.

    Args:
        mask: ``[H, W]`` class indices; values outside ``0..K-1`` are unlabelled.
        classes: The K class names, in class-index order.
        block_size: Side of a block in pixels; edge blocks may be smaller.
        fractions: Target share of each class (and of the area) per split, summing to 1;
            splits with fraction 0 get no block.
        seed: Breaks ties between blocks of equal class counts.
        reach: ``(patch_size, stride, margin)`` of the patches: only the pixels a patch
            can reach in a block count (see :func:`block_class_counts`); None counts all.

    Returns:
        A ``[H, W]`` array with the split index (position in ``fractions``) of every
        pixel.

    Raises:
        ValueError: If a class is in fewer blocks than there are splits with a positive
            fraction (see :func:`check_stratifiable`).
    """
    height, width = mask.shape
    counts = block_class_counts(mask, len(classes), block_size, reach)
    if not counts.any():
        # Blocks too small to hold a patch alone: rank them on all their pixels.
        counts = block_class_counts(mask, len(classes), block_size)
    positive = np.flatnonzero(np.asarray(fractions) > 0)
    check_stratifiable(counts, classes, positive.size, block_size)
    sizes_r, sizes_c = block_grid(height, width, block_size)
    area = np.outer(sizes_r, sizes_c).reshape(-1, 1)
    values = np.hstack([counts, area]).astype(np.float64)
    active = np.asarray(fractions, dtype=np.float64)[positive]
    split = _greedy(values, active, np.random.default_rng(seed))
    split = _improve(values, active, split)
    grid = positive[split].astype(np.int8).reshape(sizes_r.size, sizes_c.size)
    return np.repeat(np.repeat(grid, sizes_r, axis=0), sizes_c, axis=1)


def integral_image(values: NDArray) -> NDArray[np.int64]:
    """Summed-area table with a zero first row and column.

    Args:
        values: ``[H, W]`` array of counts or booleans.

    Returns:
        ``[H + 1, W + 1]`` cumulative sums.
    """
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    return integral


def window_sums(integral: NDArray, top: NDArray, left: NDArray, size: int) -> NDArray:
    """Sums over square windows, clipped to the array, from a summed-area table.

    Args:
        integral: Output of :func:`integral_image` for an ``[H, W]`` array.
        top: Window top rows (may be negative), broadcastable with ``left``.
        left: Window left columns (may be negative).
        size: Window side in pixels.

    Returns:
        The sum inside each clipped window.
    """
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    r0, c0 = np.clip(top, 0, height), np.clip(left, 0, width)
    r1, c1 = np.clip(top + size, 0, height), np.clip(left + size, 0, width)
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def place_patches(
    region: NDArray[np.bool_],
    mask: NDArray[np.int64],
    num_classes: int,
    patch_size: int,
    stride: int,
    margin: int,
) -> list[tuple[int, int]]:
    """Patches of a region placed where the labels are, rarest classes first.

    Candidate corners lie on a grid of step ``max(1, stride // 4)``
    (:func:`candidate_starts`); a candidate is usable when its footprint grown by
    ``margin`` (clipped to the scene) lies inside ``region`` and it holds a labelled
    pixel. A candidate's score is the sum over classes of the share of the class's
    region pixels it holds, so a patch with the only pixels of a rare class comes
    before one full of a common class. First each class's best patch is taken (rarest
    class first), then the others by score (then row-major),
    when their corner is at least ``stride`` rows or columns from every corner taken so
    far, so patches overlap no more than on a grid of step ``stride``, but follow
    sparse labels instead of a fixed origin.

    Args:
        region: ``[H, W]`` pixels the split may use.
        mask: ``[H, W]`` class indices; other values are unlabelled.
        num_classes: Number of classes K.
        patch_size: Patch side in pixels.
        stride: Least distance between two corners (Chebyshev).
        margin: Pixels around each patch that must also be in ``region``.

    Returns:
        ``(row, col)`` corners in row-major order.
    """
    height, width = region.shape
    rows = candidate_starts(height, patch_size, stride)
    cols = candidate_starts(width, patch_size, stride)
    top, left = np.meshgrid(rows, cols, indexing="ij")
    outside = window_sums(
        integral_image(~region), top - margin, left - margin, patch_size + 2 * margin
    )
    pixels = np.stack(
        [window_sums(integral_image(mask == k), top, left, patch_size) for k in range(num_classes)]
    )
    totals = np.maximum(1, pixels[:, outside == 0].sum(1))
    # Each class's share of its reachable pixels: rare classes are placed first.
    score = (pixels / totals[:, None, None]).sum(0)
    usable = (outside == 0) & (score > 0)
    taken = np.zeros((height, width), dtype=bool)
    chosen: list[tuple[int, int]] = []

    def claim(candidates: NDArray, rank: NDArray, first_only: bool) -> None:
        """Take candidates by rank while their corner is free of taken ones."""
        for index in candidates[np.argsort(-rank.ravel()[candidates], kind="stable")]:
            row, col = int(top.flat[index]), int(left.flat[index])
            if taken[row, col]:
                continue
            chosen.append((row, col))
            rows, cols = (
                slice(max(0, row - stride + 1), row + stride),
                slice(max(0, col - stride + 1), col + stride),
            )
            taken[rows, cols] = True
            if first_only:
                return

    # First the best patch of each class, rarest first, so that no class is crowded out.
    for k in np.argsort(totals, kind="stable"):
        claim(np.flatnonzero(usable & (pixels[k] > 0)), pixels[k], first_only=True)
    claim(np.flatnonzero(usable), score, first_only=False)
    return sorted(chosen)


@dataclass(frozen=True)
class SplitTable:
    """Patches and labelled pixels per class of each split of a scene.

    Attributes:
        classes: Class names, in class-index order.
        patches: Row name (a split, or :data:`TRAIN_SUBSET`) -> number of patches.
        pixels: Row name -> class name -> labelled pixels inside the row's patches
            (a pixel under overlapping patches counts once per patch).
    """

    classes: tuple[str, ...]
    patches: dict[str, int]
    pixels: dict[str, dict[str, int]]

    @classmethod
    def count(
        cls,
        mask: NDArray[np.int64],
        classes: Sequence[str],
        patch_size: int,
        corners: Mapping[str, Sequence[tuple[int, int]]],
    ) -> "SplitTable":
        """Count the labelled pixels of each class under each row's patches.

        Args:
            mask: ``[H, W]`` class indices; other values are unlabelled.
            classes: The K class names.
            patch_size: Patch side in pixels.
            corners: Row name -> top-left corners of its patches.

        Returns:
            The table.
        """
        integrals = [integral_image(mask == index) for index in range(len(classes))]
        pixels: dict[str, dict[str, int]] = {}
        for row, patches in corners.items():
            top = np.array([r for r, _ in patches], dtype=np.int64)
            left = np.array([c for _, c in patches], dtype=np.int64)
            pixels[row] = {
                name: int(window_sums(integral, top, left, patch_size).sum())
                for name, integral in zip(classes, integrals, strict=True)
            }
        counts = {row: len(patches) for row, patches in corners.items()}
        return cls(tuple(classes), counts, pixels)

    def problems(self, min_test_pixels: int = MIN_TEST_PIXELS) -> list[str]:
        """What makes the split unfit to score every class, one sentence each.

        Args:
            min_test_pixels: Fewer test pixels of a class than this are reported.

        Returns:
            Classes absent from the training or test split, and classes with fewer
            than ``min_test_pixels`` test pixels; empty when there is none.
        """
        found = []
        for split in ("train", "test"):
            if absent := [c for c in self.classes if self.pixels.get(split, {}).get(c, 1) == 0]:
                found.append(f"classes {absent} have no labelled pixel in the {split} split")
        test = self.pixels.get("test", {})
        if scarce := [
            c for c in self.classes if 0 < test.get(c, min_test_pixels) < min_test_pixels
        ]:
            found.append(
                f"classes {scarce} have fewer than {min_test_pixels} labelled test pixels "
                f"({', '.join(str(test[c]) for c in scarce)}): their test scores are noisy"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        """The table as JSON-ready data.

        Returns:
            ``{"classes": [...], "splits": {row: {"patches": n, "pixels": {...}}}}``.
        """
        return {
            "classes": list(self.classes),
            "splits": {
                row: {"patches": n, "pixels": self.pixels[row]} for row, n in self.patches.items()
            },
        }

    def to_markdown(self) -> str:
        """The table in Markdown, each class's pixels with their share over the splits.

        Returns:
            Header, alignment row and one row per split.
        """
        totals = {c: sum(self.pixels.get(s, {}).get(c, 0) for s in SPLITS) for c in self.classes}
        lines = [
            "| split | patches | " + " | ".join(self.classes) + " |",
            "|---|---:" + "|---:" * len(self.classes) + "|",
        ]
        for row, n in self.patches.items():
            cells = [
                f"{self.pixels[row][c]:,} ({100 * self.pixels[row][c] / totals[c]:.0f} %)"
                if totals[c]
                else "0"
                for c in self.classes
            ]
            lines.append(f"| {row} | {n} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write(self, folder: Path, stem: str = "split_table") -> tuple[Path, Path]:
        """Write the table as ``<stem>.json`` and ``<stem>.md`` into a folder.

        Args:
            folder: Target folder, created if needed.
            stem: File name without suffix.

        Returns:
            The JSON and Markdown paths.
        """
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        notes = "".join(f"\n- {problem}" for problem in self.problems())
        md_path.write_text(
            "Labelled pixels per class in the patches of each split (share of the "
            "class's pixels over train, val and test).\n\n"
            + self.to_markdown()
            + "\n"
            + notes
            + ("\n" if notes else "")
        )
        return json_path, md_path

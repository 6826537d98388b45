"""A labelled SAR scene cut into patches with a leak-free spatial train/val/test split.

Split layout
------------
The scene is divided into a grid of square blocks of ``block_size`` pixels (blocks on
the bottom and right edges may be smaller), and each block goes to train, val or test.
A split's *region* is the union of its blocks. ``split_method`` chooses how:

``"stratified"`` (default)
    Blocks are assigned on their class histograms
    (:func:`~torchgeo_dic3l.datasets.scene_split.stratified_block_split`) so that every
    class reaches every split with a share of its pixels close to ``split_fractions``;
    a class in fewer blocks than there are splits is an error naming it. Patches are
    placed where the labels are
    (:func:`~torchgeo_dic3l.datasets.scene_split.place_patches`), which covers sparse
    labels far better than a fixed grid.
``"random"``
    The layout of earlier releases, kept to reproduce their numbers: a permutation
    seeded by ``split_seed`` orders the blocks, which follow ``split_fractions`` by
    area, and patches lie on a regular grid with step ``stride`` whose origin is
    shifted by ``margin = ceil(gap / 2)`` on both axes.

Either way, a patch is kept only when its footprint, grown by ``margin`` pixels on
every side (and clipped to the scene), lies entirely inside its split's region.
Patches may therefore cross boundaries between blocks of the same split, but any two
patches of different splits are at least ``gap`` pixel rows or columns apart: they
share no pixel, and speckle or texture correlated over fewer than ``gap`` pixels cannot
leak between splits. Pixels in the guard bands belong to no patch.
"""

import copy
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import torch
from matplotlib import patches as mpatches
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from numpy.typing import NDArray
from rasterio.errors import RasterioIOError
from torch import Tensor
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..transforms import sanitize_db, sanitize_power
from .scene_split import (
    SPLITS,
    TRAIN_SUBSET,
    Split,
    SplitTable,
    block_grid,
    integral_image,
    place_patches,
    stratified_block_split,
    window_sums,
)
from .utils import open_raster, sar_display, to_working_scale

Units = Literal["power", "amplitude", "db"]
SplitMethod = Literal["stratified", "random"]

#: Scene images kept in memory between datasets of the same files (train, val, test,
#: the runs of a benchmark), so each file is read, and its invalid pixels reported, once.
IMAGE_CACHE_SIZE = 4


def block_split_map(
    height: int,
    width: int,
    block_size: int,
    fractions: Sequence[float],
    seed: int = 0,
) -> NDArray[np.int8]:
    """Assign square blocks of a scene to splits, in proportion to their area.

    Args:
        height: Scene height in pixels.
        width: Scene width in pixels.
        block_size: Side of a block in pixels; edge blocks may be smaller.
        fractions: Target share of the scene area for each split, summing to 1.
        seed: Seed of the permutation that orders the blocks.

    Returns:
        A ``[height, width]`` array with the split index (position in ``fractions``) of
        every pixel.

    Raises:
        ValueError: If a split with a positive fraction receives no block.
    """
    sizes_r, sizes_c = block_grid(height, width, block_size)
    areas = np.outer(sizes_r, sizes_c).ravel().astype(np.float64)
    order = np.random.default_rng(seed).permutation(areas.size)
    cumulative = np.cumsum(areas[order])
    # A block goes to the split whose share of the area holds the block's midpoint.
    midpoints = (cumulative - areas[order] / 2) / cumulative[-1]
    bounds = np.cumsum(np.asarray(fractions, dtype=np.float64))[:-1]
    block_split = np.empty(areas.size, dtype=np.int8)
    block_split[order] = np.searchsorted(bounds, midpoints, side="right")
    for index, fraction in enumerate(fractions):
        if fraction > 0 and not (block_split == index).any():
            name = SPLITS[index] if len(fractions) == len(SPLITS) else str(index)
            raise ValueError(
                f"split_fractions={tuple(fractions)}: the {height} x {width} scene has only "
                f"{areas.size} block(s) of {block_size} pixels and split {name} got none; "
                "use a smaller block_size"
            )
    grid = block_split.reshape(sizes_r.size, sizes_c.size)
    return np.repeat(np.repeat(grid, sizes_r, axis=0), sizes_c, axis=1)


def tile_region(
    region: NDArray[np.bool_], patch_size: int, stride: int, margin: int
) -> list[tuple[int, int]]:
    """Top-left corners of the grid patches that lie inside a region with a margin.

    Args:
        region: Boolean ``[H, W]`` map of the pixels patches may use.
        patch_size: Patch side in pixels.
        stride: Step of the patch grid.
        margin: Pixels around each patch (inside the scene) that must also be in
            ``region``; the grid origin is ``(margin, margin)``.

    Returns:
        ``(row, col)`` corners in row-major order.
    """
    height, width = region.shape
    rows = np.arange(margin, height - patch_size + 1, stride)
    cols = np.arange(margin, width - patch_size + 1, stride)
    top, left = np.meshgrid(rows - margin, cols - margin, indexing="ij")
    outside = window_sums(integral_image(~region), top, left, patch_size + 2 * margin)
    keep_r, keep_c = np.nonzero(outside == 0)
    return [(int(rows[i]), int(cols[j])) for i, j in zip(keep_r, keep_c, strict=True)]


def _open(path: str) -> rasterio.DatasetReader:
    """Open a raster, naming it if it is missing.

    Scenes such as PolSARpro exports and PNG label maps carry no georeferencing; only
    the pixel grid matters here, so rasterio's warning about that is suppressed.

    Args:
        path: Raster file; raw ENVI files are found through ``X.hdr`` or ``X.bin.hdr``.

    Returns:
        The open rasterio dataset.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If GDAL cannot read it; for a raw file without an ENVI header
            beside it, the message names the header files it looks for.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"raster file not found: {path}")
    try:
        return open_raster(path)
    except RasterioIOError as error:
        raise ValueError(_unreadable(Path(path), error)) from error


def _unreadable(path: Path, error: RasterioIOError) -> str:
    """Why a raster cannot be read, naming the missing ENVI header of a raw file.

    Args:
        path: The raster.
        error: GDAL's error.

    Returns:
        The message.
    """
    headers = [path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")]
    if not any(header.is_file() for header in headers):
        return (
            f"{path}: GDAL cannot read it ({error}); a raw binary file (such as a "
            f"PolSARpro .bin) needs an ENVI header beside it, {headers[0].name} or "
            f"{headers[1].name}, giving samples, lines, data type and byte order"
        )
    return f"{path}: GDAL cannot read it ({error})"


def _check_split(split: str, split_fractions: Sequence[float], label_fraction: float) -> None:
    """Raise a ValueError unless ``split`` is a split with area and the fraction is valid."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split_fractions[SPLITS.index(split)] == 0:
        raise ValueError(f"split {split!r} has fraction 0 in split_fractions")
    if not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")


def _stamp(path: str) -> tuple[str, int, int]:
    """A file's path, modification time and size: the image cache key of one file."""
    stat = Path(path).stat() if Path(path).is_file() else None
    return (path, stat.st_mtime_ns, stat.st_size) if stat else (path, 0, -1)


def _read_images(
    images: tuple[str, ...],
    band_indices: tuple[int, ...] | None,
    units: Units,
    nodata: float | None,
) -> tuple[Tensor, tuple[str, ...], Tensor, Tensor]:
    """Read, sanitize and convert the image channels to dB, once per unchanged files.

    Args:
        images: Image rasters.
        band_indices: 1-based band indices per file, or None for all.
        units: What the files hold.
        nodata: Missing-pixel value, or None for each file's own.

    Returns:
        The ``[C, H, W]`` dB image, default channel names, a ``[H, W]`` mask that is
        True where every channel is valid, and one that is True where no channel value
        was replaced (invalid, or zero power clamped to the floor).
    """
    return _read_images_cached(tuple(_stamp(path) for path in images), band_indices, units, nodata)


@lru_cache(maxsize=IMAGE_CACHE_SIZE)
def _read_images_cached(
    stamps: tuple[tuple[str, int, int], ...],
    band_indices: tuple[int, ...] | None,
    units: Units,
    nodata: float | None,
) -> tuple[Tensor, tuple[str, ...], Tensor, Tensor]:
    """:func:`_read_images` for files identified by :func:`_stamp`.

    Raises:
        ValueError: If a band index is out of range or the rasters differ in size.
    """
    channels: list[Tensor] = []
    names: list[str] = []
    shape: tuple[int, int] | None = None
    valid: Tensor | None = None
    measured: Tensor | None = None
    first = stamps[0][0]
    for path, _, _ in stamps:
        with _open(path) as src:
            if shape is not None and src.shape != shape:
                raise ValueError(
                    f"image {path} is {src.shape[0]} x {src.shape[1]} pixels but "
                    f"{first} is {shape[0]} x {shape[1]}"
                )
            shape = src.shape
            indices = list(range(1, src.count + 1)) if band_indices is None else list(band_indices)
            if bad := [b for b in indices if not 1 <= b <= src.count]:
                raise ValueError(
                    f"band_indices {bad} out of range: {path} has {src.count} band(s) "
                    "(indices are 1-based)"
                )
            file_nodata = src.nodata if nodata is None else nodata
            multi_band = src.count > 1
            data = torch.from_numpy(src.read(indices).astype(np.float32))
        for band, values in zip(indices, data, strict=True):
            db, ok = _to_db(values, units, file_nodata, f"{path} band {band}")
            channels.append(db)
            names.append(f"{Path(path).stem}:{band}" if multi_band else Path(path).stem)
            # Zero power is valid but clamped to the floor: not a measurement to rank.
            kept = ok & (values > 0) if units != "db" else ok
            valid = ok if valid is None else valid & ok
            measured = kept if measured is None else measured & kept
    assert valid is not None and measured is not None
    return torch.stack(channels), tuple(names), valid, measured


def _to_db(
    values: Tensor, units: Units, nodata: float | None, source: str
) -> tuple[Tensor, Tensor]:
    """Convert one channel to dB, replacing invalid pixels.

    Args:
        values: ``[H, W]`` channel.
        units: What the channel holds.
        nodata: Missing-pixel value, if any.
        source: File and band, named in warnings.

    Returns:
        The dB channel and its validity mask.
    """
    if units == "db":
        return sanitize_db(values, nodata=nodata, source=source)
    clean, ok = sanitize_power(values, nodata=nodata, source=source)
    return to_working_scale(clean, units), ok


class LabelledSARScene(NonGeoDataset):
    """Patches of one labelled SAR scene, with a spatial split that does not leak.

    The image rasters (one file per channel, or multi-band files) and the label raster
    are read once with rasterio and kept in memory, in dB; ``__getitem__`` slices a
    patch. See the module docstring for the block layout and the guard gap between
    splits. Any rasterio-readable format works, including raw ENVI files with an
    ``X.hdr`` or ``X.bin.hdr`` header (e.g. PolSARpro ``T3/T11.bin``).

    Labels: raw label values are mapped to class indices ``0..K-1`` through
    ``label_values``; ``ignore_values`` and image pixels that are invalid in any channel
    (NaN, inf, negative power/amplitude, ``nodata``) become ``ignore_index`` in the mask.
    Patches without any labelled pixel are dropped.
    :meth:`split_table` counts the patches and labelled pixels per class of every split.

    Each sample is ``{"image": float32 [C, p, p] in dB, "mask": int64 [p, p]}``.
    """

    def __init__(
        self,
        images: Sequence[str],
        label: str,
        classes: Sequence[str],
        label_values: Sequence[int] | None = None,
        ignore_values: Sequence[int] = (),
        ignore_index: int = 255,
        band_indices: Sequence[int] | None = None,
        bands: Sequence[str] | None = None,
        units: Units = "power",
        nodata: float | None = None,
        split: Split = "train",
        split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
        patch_size: int = 64,
        stride: int | None = None,
        gap: int | None = None,
        block_size: int | None = None,
        label_fraction: float = 1.0,
        seed: int = 0,
        split_seed: int = 0,
        split_method: SplitMethod = "stratified",
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Read the scene and select the patches of one split.

        Args:
            images: Image rasters, one per channel or multi-band; their selected bands
                are stacked in order.
            label: Single-band raster of raw label values, same height and width.
            classes: Class names in class-index order.
            label_values: Raw label value of each class, same order as ``classes``;
                defaults to ``0..K-1``.
            ignore_values: Raw label values meaning "unlabelled".
            ignore_index: Mask value of unlabelled and invalid pixels; must not be a
                class index.
            band_indices: 1-based band indices read from every image file; None reads all.
            bands: One name per resulting channel; defaults to the file stem,
                followed by ``:band`` for multi-band files.
            units: What the image files hold: linear ``"power"`` (converted with
                10 log10), ``"amplitude"`` (20 log10) or ``"db"`` (kept).
            nodata: Value of missing image pixels; None uses each file's own nodata
                value, if it declares one.
            split: Which split's patches this dataset holds.
            split_fractions: Target area fractions of train, val and test; sum to 1.
            patch_size: Side of the square patches in pixels.
            stride: Step between patches within a split; defaults to ``patch_size``.
            gap: Minimum number of pixel rows or columns between patches of different
                splits; defaults to ``patch_size // 2``.
            block_size: Side of the split blocks; defaults to ``4 * patch_size``.
            label_fraction: Fraction of training patches kept (at least one), chosen
                with ``seed``; the subsets for increasing fractions are nested. Ignored
                for val and test.
            seed: Seed of the ``label_fraction`` subset.
            split_seed: Seed of the block-to-split assignment (ties between blocks for
                ``"stratified"``, the block order for ``"random"``); kept separate from
                ``seed`` so that label subsets can vary while the test region is fixed.
            split_method: ``"stratified"`` assigns blocks on their class histograms
                and places patches where the labels are; ``"random"`` reproduces the
                area-based random blocks and regular patch grid of earlier releases.
                See the module docstring.
            transforms: Transform applied to each sample dictionary.

        Raises:
            FileNotFoundError: If an image or the label file does not exist.
            ValueError: If an option is invalid, a raster is unreadable (a raw file
                without its ENVI header), rasters disagree in size, a band index is out
                of range, the label raster holds unknown values, a class is in too few
                blocks for a stratified split, or the split ends up without patches.
        """
        self.stride = patch_size if stride is None else stride
        self.gap = patch_size // 2 if gap is None else gap
        self.block_size = 4 * patch_size if block_size is None else block_size
        self._check_options(
            images=images,
            classes=classes,
            label_values=label_values,
            ignore_values=ignore_values,
            ignore_index=ignore_index,
            units=units,
            split=split,
            split_fractions=split_fractions,
            patch_size=patch_size,
            label_fraction=label_fraction,
            split_method=split_method,
        )
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.ignore_index = ignore_index
        self.label_values = list(range(self.num_classes) if label_values is None else label_values)
        self.ignore_values = list(ignore_values)
        self.split = split
        self.split_fractions = split_fractions
        self.patch_size = patch_size
        self.label_fraction = label_fraction
        self.seed = seed
        self.split_method = split_method
        self.transforms = transforms

        image, names, valid, measured = _read_images(
            tuple(images), None if band_indices is None else tuple(band_indices), units, nodata
        )
        if bands is not None and len(bands) != len(names):
            raise ValueError(
                f"bands has {len(bands)} name(s) but the images give "
                f"{len(names)} channel(s): {names}"
            )
        self.bands = list(bands) if bands is not None else list(names)
        mask = self._read_label(label, image.shape[-2:], images[0])
        #: Pixels labelled in the label raster but invalid in the image, now ignored.
        self.invalid_pixels = int((~valid & (mask != ignore_index)).sum())
        mask[~valid] = ignore_index
        #: The whole scene in dB, ``[C, H, W]``; shared with other datasets of the same
        #: files, so never modified in place.
        self.scene_image = image
        #: The whole class-index mask, ``[H, W]``.
        self.scene_mask = mask
        #: Pixels measured in every channel, ``[H, W]``: False where a value was
        #: replaced (invalid, or zero power clamped to the floor).
        self.scene_measured = measured

        height, width = mask.shape
        if patch_size > min(height, width):
            raise ValueError(f"patch_size={patch_size} exceeds the {height} x {width} scene")
        #: Split index (0 train, 1 val, 2 test) of every pixel, ``[H, W]``.
        self.split_map = self._split_map(split_seed)
        #: Top-left ``(row, col)`` corners of this split's patches.
        self.patches = self._select_patches()

    def with_split(
        self, split: Split, label_fraction: float | None = None, seed: int | None = None
    ) -> "LabelledSARScene":
        """Another split of the same scene, sharing its rasters and split map.

        Nothing is read again: the image, mask and split map are shared (never
        modified in place, and samples are copies), only the patch list is new.

        Args:
            split: Which split's patches the new dataset holds.
            label_fraction: Fraction of training patches kept; this dataset's if None.
            seed: Seed of the ``label_fraction`` subset; this dataset's if None.

        Returns:
            The dataset of ``split``, with this dataset's transforms.

        Raises:
            ValueError: If the split or fraction is invalid or the split has no patch.
        """
        fraction = self.label_fraction if label_fraction is None else label_fraction
        _check_split(split, self.split_fractions, fraction)
        view = copy.copy(self)
        view.split, view.label_fraction = split, fraction
        view.seed = self.seed if seed is None else seed
        view.patches = view._select_patches()
        return view

    def _select_patches(self) -> list[tuple[int, int]]:
        """This split's patches, after ``label_fraction`` for the training split.

        Returns:
            Top-left corners.

        Raises:
            ValueError: If the split has no patch with a labelled pixel.
        """
        labelled = self._split_patches(SPLITS.index(self.split))
        if not labelled:
            height, width = self.scene_mask.shape
            raise ValueError(
                f"split {self.split!r} has no patch with a labelled pixel in the {height} x "
                f"{width} scene with patch_size={self.patch_size}, gap={self.gap}, "
                f"block_size={self.block_size}; reduce them or change split_fractions"
            )
        return self._label_subset(labelled) if self.split == "train" else labelled

    def _check_options(
        self,
        images: Sequence[str],
        classes: Sequence[str],
        label_values: Sequence[int] | None,
        ignore_values: Sequence[int],
        ignore_index: int,
        units: str,
        split: str,
        split_fractions: Sequence[float],
        patch_size: int,
        label_fraction: float,
        split_method: str,
    ) -> None:
        """Validate the options that do not need the data.

        Args:
            images: Image rasters.
            classes: Class names.
            label_values: Raw value of each class, or None.
            ignore_values: Raw values meaning unlabelled.
            ignore_index: Mask value for unlabelled pixels.
            units: Image units.
            split: Requested split.
            split_fractions: Train, val and test fractions.
            patch_size: Patch side.
            label_fraction: Fraction of training patches kept.
            split_method: How blocks are assigned and patches placed.

        Raises:
            ValueError: Naming the first invalid option and what was expected.
        """
        if isinstance(images, str) or len(images) == 0:
            raise ValueError(f"images must be a non-empty list of files, got {images!r}")
        if len(classes) == 0:
            raise ValueError("classes must name at least one class")
        if label_values is not None and len(label_values) != len(classes):
            raise ValueError(
                f"label_values has {len(label_values)} value(s) but there are "
                f"{len(classes)} classes {list(classes)}"
            )
        values = list(range(len(classes)) if label_values is None else label_values)
        if len(set(values)) != len(values):
            raise ValueError(f"label_values must be distinct, got {values}")
        if both := sorted(set(values) & set(ignore_values)):
            raise ValueError(f"values {both} are in both label_values and ignore_values")
        if 0 <= ignore_index < len(classes):
            raise ValueError(
                f"ignore_index={ignore_index} collides with a class index (0..{len(classes) - 1})"
            )
        if units not in ("power", "amplitude", "db"):
            raise ValueError(f"units must be 'power', 'amplitude' or 'db', got {units!r}")
        if (
            len(split_fractions) != 3
            or min(split_fractions) < 0
            or not math.isclose(sum(split_fractions), 1.0, abs_tol=1e-6)
        ):
            raise ValueError(
                "split_fractions must be three non-negative numbers summing to 1, "
                f"got {tuple(split_fractions)}"
            )
        _check_split(split, split_fractions, label_fraction)
        if patch_size < 1 or self.stride < 1 or self.gap < 0:
            raise ValueError(
                f"patch_size and stride must be positive and gap non-negative, got "
                f"patch_size={patch_size}, stride={self.stride}, gap={self.gap}"
            )
        if self.block_size < patch_size:
            raise ValueError(
                f"block_size={self.block_size} must be at least patch_size={patch_size}"
            )
        if split_method not in ("stratified", "random"):
            raise ValueError(
                f"split_method must be 'stratified' or 'random', got {split_method!r}"
            )

    def _read_label(self, label: str, shape: torch.Size, first_image: str) -> Tensor:
        """Read the label raster and map raw values to class indices.

        Args:
            label: Label raster.
            shape: Height and width of the images.
            first_image: Name of the first image, for the size error.

        Returns:
            The ``[H, W]`` int64 mask.

        Raises:
            ValueError: If the raster has several bands, another size, non-integer or
                unknown values.
        """
        with _open(label) as src:
            if src.count != 1:
                raise ValueError(
                    f"label {label} has {src.count} bands; expected a single-band map of "
                    "label values"
                )
            if src.shape != tuple(shape):
                raise ValueError(
                    f"label {label} is {src.shape[0]} x {src.shape[1]} pixels but image "
                    f"{first_image} is {shape[0]} x {shape[1]}"
                )
            raw = src.read(1)
        values, inverse = np.unique(raw, return_inverse=True)
        lookup = {v: i for i, v in enumerate(self.label_values)}
        lookup |= dict.fromkeys(self.ignore_values, self.ignore_index)
        unknown = [v.item() for v in values if v != np.round(v) or int(v) not in lookup]
        if unknown:
            raise ValueError(
                f"label {label} holds values {unknown} that are neither in label_values "
                f"{self.label_values} nor in ignore_values {self.ignore_values}"
            )
        mapped = np.array([lookup[int(v)] for v in values], dtype=np.int64)
        return torch.from_numpy(mapped[inverse.reshape(raw.shape)])

    def _split_map(self, split_seed: int) -> NDArray[np.int8]:
        """Split index of every pixel, by :attr:`split_method`.

        Args:
            split_seed: Seed of the assignment.

        Returns:
            The ``[H, W]`` split map.
        """
        height, width = self.scene_mask.shape
        if self.split_method == "random":
            return block_split_map(
                height, width, self.block_size, self.split_fractions, split_seed
            )
        return stratified_block_split(
            self.scene_mask.numpy(),
            self.classes,
            self.block_size,
            self.split_fractions,
            split_seed,
            reach=(self.patch_size, self.stride, self._margin),
        )

    @property
    def _margin(self) -> int:
        """Pixels around a patch that must lie in its split's region."""
        return math.ceil(self.gap / 2)

    def _split_patches(self, split_index: int) -> list[tuple[int, int]]:
        """Patches of one split that hold a labelled pixel, before ``label_fraction``.

        Args:
            split_index: 0 train, 1 val, 2 test.

        Returns:
            Top-left corners in row-major order.
        """
        if self.split_fractions[split_index] == 0:
            return []
        region = self.split_map == split_index
        mask = self.scene_mask.numpy()
        if self.split_method == "stratified":
            return place_patches(
                region, mask, self.num_classes, self.patch_size, self.stride, self._margin
            )
        corners = tile_region(region, self.patch_size, self.stride, self._margin)
        if not corners:
            return []
        top, left = (np.array(axis) for axis in zip(*corners, strict=True))
        labelled = integral_image(mask != self.ignore_index)
        counts = window_sums(labelled, top, left, self.patch_size)
        return [corner for corner, n in zip(corners, counts, strict=True) if n > 0]

    def _label_subset(self, corners: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The training patches kept by ``label_fraction`` (at least one), nested in it.

        Args:
            corners: All labelled training patches.

        Returns:
            The kept corners, in their original order.
        """
        if self.label_fraction >= 1.0 or not corners:
            return corners
        keep = max(1, round(self.label_fraction * len(corners)))
        order = np.random.default_rng(self.seed).permutation(len(corners))
        return [corners[i] for i in sorted(order[:keep])]

    def split_table(self) -> SplitTable:
        """Patches and labelled pixels per class of every split of this scene.

        Returns:
            One row per split with a positive fraction, and a ``train subset`` row
            when ``label_fraction`` keeps fewer training patches.
        """
        corners: dict[str, list[tuple[int, int]]] = {
            name: self._split_patches(index)
            for index, name in enumerate(SPLITS)
            if self.split_fractions[index] > 0
        }
        if self.label_fraction < 1.0:
            corners[TRAIN_SUBSET] = self._label_subset(corners["train"])
        return SplitTable.count(self.scene_mask.numpy(), self.classes, self.patch_size, corners)

    def __len__(self) -> int:
        """Return the number of patches of this split.

        Returns:
            Number of patches.
        """
        return len(self.patches)

    def __getitem__(self, index: int) -> Sample:
        """Return one patch.

        Args:
            index: Patch index.

        Returns:
            ``{"image": float32 [C, p, p] dB, "mask": int64 [p, p]}`` after transforms.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        row, col = self.patches[index]
        window = (slice(row, row + self.patch_size), slice(col, col + self.patch_size))
        sample: Sample = {
            "image": self.scene_image[(slice(None), *window)].clone(),
            "mask": self.scene_mask[window].clone(),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _mask_colours(self) -> list[tuple[float, float, float, float]]:
        """Colours of the classes followed by black for ``ignore_index``.

        Returns:
            RGBA colours indexed by class, with ``ignore_index`` drawn at index K.
        """
        palette = plt.get_cmap("tab10" if self.num_classes <= 10 else "tab20")
        colours = [palette(i % palette.N) for i in range(self.num_classes)]
        return [*colours, (0.0, 0.0, 0.0, 1.0)]

    def _show_mask(self, ax: Axes, mask: Tensor) -> None:
        """Draw a class mask with ignored pixels in black.

        Args:
            ax: Target axes.
            mask: ``[H, W]`` class indices.
        """
        shown = torch.where(mask == self.ignore_index, self.num_classes, mask)
        ax.imshow(
            shown.numpy(),
            cmap=ListedColormap(self._mask_colours()),
            vmin=-0.5,
            vmax=self.num_classes + 0.5,
            interpolation="nearest",
        )

    def plot(
        self,
        sample: Sample,
        show_titles: bool = True,
        suptitle: str | None = None,
        rgb_channels: Sequence[int] | None = None,
    ) -> Figure:
        """Plot a sample's image (dB, 2-98 % stretch per channel), mask and prediction.

        One channel is shown in grey. With two or more channels a false-colour composite
        is shown: ``rgb_channels`` (three channel indices), else the first three
        channels, or for two channels (c0, c1, c0 - c1).

        Args:
            sample: A sample from :meth:`__getitem__`, optionally with ``prediction``.
            show_titles: Whether to title the panels.
            suptitle: Title of the figure.
            rgb_channels: Channels shown as red, green and blue.

        Returns:
            The figure; close it when done.
        """
        image = sample["image"].float()
        shown = list(rgb_channels) if rgb_channels is not None else list(range(len(image)))
        picture, caption = sar_display(image[shown], [self.bands[i] for i in shown])

        panels = ["mask", "prediction"]
        keys = [key for key in panels if key in sample]
        fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4 * (1 + len(keys)), 4.4))
        axes = np.atleast_1d(axes)
        axes[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        for ax, key in zip(axes[1:], keys, strict=True):
            self._show_mask(ax, sample[key])
        for ax in axes:
            ax.set_axis_off()
        if show_titles:
            axes[0].set_title(f"image (dB): {caption}")
            for ax, key in zip(axes[1:], keys, strict=True):
                ax.set_title(key)
        if keys:
            colours = self._mask_colours()
            names = [*self.classes, "unlabelled"]
            handles = [
                mpatches.Patch(color=c, label=n) for c, n in zip(colours, names, strict=True)
            ]
            fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 6))
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig

    def plot_split_layout(self) -> Figure:
        """Plot the split regions with the outlines of every split's labelled patches.

        Returns:
            The figure; close it when done.
        """
        colours = ["tab:blue", "tab:orange", "tab:green"]
        fig, ax = plt.subplots(figsize=(6, 6 * self.split_map.shape[0] / self.split_map.shape[1]))
        ax.imshow(self.split_map, cmap=ListedColormap(colours), vmin=0, vmax=2, alpha=0.35)
        for index, name in enumerate(SPLITS):
            if self.split_fractions[index] == 0:
                continue
            for row, col in self._split_patches(index):
                ax.add_patch(
                    mpatches.Rectangle(
                        (col - 0.5, row - 0.5),
                        self.patch_size,
                        self.patch_size,
                        fill=False,
                        edgecolor=colours[index],
                        linewidth=0.8,
                    )
                )
            ax.plot([], [], color=colours[index], label=name)
        ax.legend(loc="upper right")
        ax.set_title(f"split layout: blocks of {self.block_size} px, gap {self.gap} px")
        ax.set_axis_off()
        return fig

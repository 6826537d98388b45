"""Unlabelled SAR image chips for self-supervised pre-training.

A SARSense-style corpus is a folder (or a list) of small PNG/TIFF/GeoTIFF chips
without labels. Chips may be raw digital numbers (for example 8-bit rescaled
images), linear power, amplitude or dB; everything except raw numbers is brought
to dB here so that models see one radiometric scale.
"""

import functools
import operator
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from matplotlib.figure import Figure
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from torch import Tensor
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..transforms import invalid_pixels
from .utils import SARUnits, open_raster, plot_sar_image, to_working_scale

#: File name endings searched for chips (compared case-insensitively).
CHIP_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff")

#: Smallest share of valid (finite, not ``nodata``) pixels of a usable chip. A chip
#: more than half invalid is mostly fill value, a flat patch the model would learn.
DEFAULT_MIN_VALID_FRACTION = 0.5

#: Largest share of a chip channel's pixels outside the normalization range before
#: :meth:`SARChips.warn_on_clipping` warns: a few saturated pixels are normal SAR (bright
#: targets, calm water), a larger share means wrong ``units`` or ranges.
DEFAULT_MAX_CLIPPED_FRACTION = 0.05

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_integrity(data: bytes) -> None:
    """Check that PNG bytes are complete and uncorrupted.

    GDAL's PNG driver returns made-up pixels instead of an error for a truncated
    or damaged PNG, so the chunk structure and checksums are verified here first.

    Args:
        data: Contents of a PNG file.

    Raises:
        OSError: If the signature is wrong, a chunk is cut short or fails its CRC
            check, or the closing ``IEND`` chunk is missing.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise OSError("not a PNG file (wrong signature)")
    view = memoryview(data)
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(view[position : position + 4], "big")
        kind = bytes(view[position + 4 : position + 8]).decode("latin-1")
        end = position + 12 + length
        if end > len(data):
            raise OSError(f"PNG chunk {kind} is cut short (truncated file)")
        if zlib.crc32(view[position + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            raise OSError(f"PNG chunk {kind} fails its CRC check (corrupt file)")
        if kind == "IEND":
            return
        position = end
    raise OSError("PNG has no IEND chunk (truncated file)")


def find_chips(root: str, name: str = "root") -> list[str]:
    """Find chip files under a folder.

    Args:
        root: Folder to search recursively.
        name: What the folder is called in the error (the option that set it).

    Returns:
        Sorted paths of the files with a chip extension.

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{name} {root!r} is not a folder")
    found = [
        os.path.join(folder, file)
        for folder, _, files in os.walk(root)
        for file in files
        if file.lower().endswith(CHIP_EXTENSIONS)
    ]
    return sorted(found)


def read_chip(path: str) -> tuple[Tensor, float | None]:
    """Read all bands of a chip file as float32, checking PNG files for damage first.

    Args:
        path: A PNG, TIFF or GeoTIFF file.

    Returns:
        The ``[C, H, W]`` values as stored (converted to float32) and the file's
        nodata tag, if it has one.

    Raises:
        OSError: If a PNG file is truncated or corrupt.
        rasterio.errors.RasterioError: If the file cannot be read.
    """
    if path.lower().endswith(".png"):
        data = Path(path).read_bytes()
        check_png_integrity(data)
        with MemoryFile(data) as memory, open_raster(memory) as src:
            array, nodata = src.read(), src.nodata
    else:
        with open_raster(path) as src:
            array, nodata = src.read(), src.nodata
    return torch.from_numpy(array.astype(np.float32, copy=False)), nodata


class BadChipError(ValueError):
    """A chip that can be read but not used: too small or with too few valid pixels."""


def sanitize_and_convert(
    image: Tensor,
    units: SARUnits,
    nodata: float | None,
    source: str,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
) -> Tensor:
    """Replace invalid pixels and bring SAR values to their working scale.

    Invalid pixels (NaN, inf, ``nodata``, and negative power or amplitude) are
    counted in a warning and replaced by the chip's lowest valid value: chips carry
    no validity mask, so a model sees them as that value. Linear power and
    amplitude are then converted to dB; dB and raw digital numbers (``"dn"``) keep
    their values.

    Args:
        image: Float tensor of any shape in the units given by ``units``.
        units: Scale of ``image``: ``"db"``, ``"power"``, ``"amplitude"`` or ``"dn"``.
        nodata: Value that marks missing pixels, if any.
        source: Name of the file or region, used in warnings and errors.
        min_valid_fraction: Smallest share of valid pixels of a usable chip.

    Returns:
        A float32 tensor of the same shape, in dB (or raw numbers for ``"dn"``),
        without NaN or infinite values.

    Raises:
        ValueError: If ``units`` is not one of the supported scales.
        BadChipError: If fewer than ``min_valid_fraction`` of the pixels are valid.
    """
    if units not in get_args(SARUnits):
        raise ValueError(f"units must be one of {get_args(SARUnits)}, got {units!r}")
    image = image.float()
    kinds = invalid_pixels(image, nodata, negative=units in ("power", "amplitude"))
    invalid = functools.reduce(
        operator.or_, kinds.values(), torch.zeros_like(image, dtype=torch.bool)
    )
    n_invalid = int(invalid.sum()) if kinds else 0
    if n_invalid:
        counts = ", ".join(
            f"{int(mask.sum())} {kind}" for kind, mask in kinds.items() if mask.any()
        )
        n_valid = image.numel() - n_invalid
        if n_valid == 0 or n_valid < min_valid_fraction * image.numel():
            raise BadChipError(
                f"{source}: only {n_valid} of {image.numel()} pixels are valid ({counts}), "
                f"fewer than min_valid_fraction={min_valid_fraction:g}"
            )
        fill = float(image[~invalid].min())
        warnings.warn(
            f"{source}: {n_invalid} of {image.numel()} pixels are invalid ({counts}); "
            f"SAR chips carry no validity mask, so they were replaced by the chip's lowest "
            f"valid value ({fill:g} as stored) and are trained on as that value.",
            stacklevel=2,
        )
        image = torch.where(invalid, torch.full_like(image, fill), image)
    return to_working_scale(image, units)


class ClipCheck:
    """Warn when a normalization range clips much of a chip (each chip checked once).

    Normalization clips values outside ``[low, high]`` to 0 or 1 on the device, in
    batches that no longer know their files, so chips are checked here as they are
    loaded. Chips in the wrong ``units`` (uint16 numbers read as power are 30-50 dB)
    come out fully saturated.
    """

    def __init__(
        self,
        low: Sequence[float],
        high: Sequence[float],
        max_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
        scale: str = "",
    ) -> None:
        """Initialize the check.

        Args:
            low: Per-channel lower normalization bound.
            high: Per-channel upper normalization bound.
            max_fraction: Largest share of a channel's pixels that may lie outside
                the range without a warning, in [0, 1].
            scale: Unit of the values, shown after the range (``dB``, ``raw DN``).

        Raises:
            ValueError: If ``max_fraction`` is outside [0, 1].
        """
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_clipped_fraction must be in [0, 1], got {max_fraction}")
        self.low = torch.tensor(list(low), dtype=torch.float32).view(-1, 1)
        self.high = torch.tensor(list(high), dtype=torch.float32).view(-1, 1)
        self.max_fraction = max_fraction
        self.scale = scale
        # Chips do not change between epochs: check each once, not at every load.
        self.checked: set[str] = set()

    def __call__(self, image: Tensor, path: str) -> None:
        """Warn if more than ``max_fraction`` of a channel of ``image`` would clip.

        Args:
            image: ``[C, H, W]`` chip in the dataset's scale.
            path: Its file, named in the warning.
        """
        if path in self.checked:
            return
        self.checked.add(path)
        flat = image.flatten(1)
        below = (flat < self.low).float().mean(dim=1)
        above = (flat > self.high).float().mean(dim=1)
        for channel, (low, high) in enumerate(zip(below.tolist(), above.tolist(), strict=True)):
            if low + high > self.max_fraction:
                warnings.warn(
                    f"{path}: normalization clips {low + high:.1%} of the pixels of channel "
                    f"{channel + 1} ({low:.1%} below and {high:.1%} above the range "
                    f"[{float(self.low[channel]):g}, {float(self.high[channel]):g}] "
                    f"{self.scale}), more than max_clipped_fraction={self.max_fraction:g}; "
                    "check units, low and high",
                    stacklevel=3,
                )
                return


class SARChips(NonGeoDataset):
    """Unlabelled SAR chips read from PNG, TIFF or GeoTIFF files.

    Files of any bit depth (uint8, uint16, int16, float32, ...) with one or more
    channels are read through rasterio. All chips must have the same number of
    channels; this is checked from the file headers when the dataset is created.
    Samples are ``{"image": float32 [C, H, W]}``, in dB for ``units`` ``"db"``,
    ``"power"`` and ``"amplitude"``, and unchanged raw values for ``"dn"``.

    A chip is bad if it cannot be read, is smaller than ``min_size`` (checked from
    its header at creation) or has fewer than ``min_valid_fraction`` valid pixels
    (checked when it is loaded). A bad chip raises an error naming the file, or,
    with ``skip_bad_files=True``, is skipped with a warning and listed in
    :attr:`skipped_files`: at creation it is left out of the dataset; if it only
    turns out bad when loaded, the next usable chip is returned in its place. With
    data-loader workers each worker keeps its own :attr:`skipped_files` list.

    Attributes:
        clip_check: If set (the data module sets it to its normalization range),
            called on every loaded chip to warn about heavy clipping.
    """

    def __init__(
        self,
        root: str | None = None,
        files: Sequence[str] | None = None,
        units: SARUnits = "dn",
        nodata: float | None = None,
        skip_bad_files: bool = False,
        min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
        min_size: int | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the dataset.

        Args:
            root: Folder searched recursively for ``.png``, ``.tif`` and ``.tiff``
                files (sorted by path for determinism).
            files: Explicit list of chip files; give exactly one of ``root`` and
                ``files``.
            units: Scale of the stored values: ``"dn"`` (raw digital numbers,
                returned unchanged as float32), ``"power"`` or ``"amplitude"``
                (converted to dB) or ``"db"`` (taken as is).
            nodata: Value that marks missing pixels; defaults to each file's own
                nodata tag, if it has one.
            skip_bad_files: Skip bad chips (unreadable, too small, too few valid
                pixels) with a warning instead of raising.
            min_valid_fraction: Smallest share of valid pixels (not NaN, inf,
                ``nodata`` or negative power) of a usable chip, in (0, 1].
            min_size: Smallest height and width of a usable chip, in pixels
                (the patch size cut from the chips); None accepts any size.
            transforms: Function applied to each sample dictionary.

        Raises:
            ValueError: If not exactly one of ``root`` and ``files`` is given, if
                ``units``, ``min_valid_fraction`` or ``min_size`` is out of range,
                or if the chips have different channel counts or a complex data type.
            BadChipError: If a chip is smaller than ``min_size`` and
                ``skip_bad_files`` is False.
            FileNotFoundError: If no chip files are found.
            OSError: If a file cannot be read and ``skip_bad_files`` is False, or
                if no file at all can be used.
        """
        if (root is None) == (files is None):
            raise ValueError("give exactly one of root (a folder) and files (a list of chips)")
        if units not in get_args(SARUnits):
            raise ValueError(f"units must be one of {get_args(SARUnits)}, got {units!r}")
        if not 0.0 < min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in (0, 1], got {min_valid_fraction}")
        if min_size is not None and min_size < 1:
            raise ValueError(f"min_size must be a positive number of pixels, got {min_size}")
        self.units = units
        self.nodata = nodata
        self.skip_bad_files = skip_bad_files
        self.min_valid_fraction = min_valid_fraction
        self.min_size = min_size
        self.transforms = transforms
        self.skipped_files: list[str] = []
        self.clip_check: ClipCheck | None = None

        candidates = find_chips(root) if root is not None else [str(f) for f in files or []]
        if not candidates:
            where = f"folder {root!r} (searched recursively)" if root else "the files list"
            raise FileNotFoundError(
                f"no SAR chips found in {where}; expected files ending in "
                f"{', '.join(CHIP_EXTENSIONS)}"
            )
        self.files, self.channels, self.dtypes = self._scan(candidates)

    def _scan(self, candidates: list[str]) -> tuple[list[str], int, tuple[str, ...]]:
        """Read the headers of all chips and check that they are consistent.

        Args:
            candidates: Files to check.

        Returns:
            The readable files, their common channel count and their distinct
            data types.

        Raises:
            ValueError: If channel counts differ or a data type is complex.
            BadChipError: If a chip is too small (and bad files are not skipped).
            OSError: If a header cannot be read (and bad files are not skipped),
                or if no chip is usable.
        """
        readable: list[str] = []
        dtypes: set[str] = set()
        first: tuple[str, int] | None = None
        for path in candidates:
            try:
                with open_raster(path) as src:
                    count, dtype, height, width = src.count, src.dtypes[0], src.height, src.width
                self._check_size(path, height, width)
            except (RasterioError, BadChipError) as error:
                self._handle_bad_file(path, error)
                continue
            if np.dtype(dtype).kind == "c":
                raise ValueError(
                    f"{path} holds complex {dtype} values; SARChips expects real "
                    "intensity, amplitude, dB or digital numbers"
                )
            if first is None:
                first = (path, count)
            elif count != first[1]:
                raise ValueError(
                    f"chips must all have the same number of channels, but {first[0]} "
                    f"has {first[1]} and {path} has {count}"
                )
            readable.append(path)
            dtypes.add(dtype)
        if first is None:
            raise OSError(f"none of the {len(candidates)} chip files could be read and used")
        return readable, first[1], tuple(sorted(dtypes))

    def _check_size(self, path: str, height: int, width: int) -> None:
        """Check that a chip is at least ``min_size`` pixels high and wide.

        Args:
            path: The chip file.
            height: Its height in pixels.
            width: Its width in pixels.

        Raises:
            BadChipError: If the chip is smaller than ``min_size``.
        """
        if self.min_size is not None and min(height, width) < self.min_size:
            raise BadChipError(
                f"{path}: chip of {height}x{width} pixels is smaller than "
                f"min_size={self.min_size} (the patch size cut from the chips)"
            )

    def _handle_bad_file(self, path: str, error: Exception) -> None:
        """Raise for a bad chip, or record and warn when skipping.

        Args:
            path: The file that failed.
            error: What rasterio reported, or the :class:`BadChipError`.

        Raises:
            BadChipError: For an unusable chip, unless ``skip_bad_files`` is True.
            OSError: For an unreadable file, unless ``skip_bad_files`` is True.
        """
        unusable = isinstance(error, BadChipError)
        if not self.skip_bad_files:
            if unusable:
                raise BadChipError(f"{error}; skip_bad_files=True leaves such chips out")
            raise OSError(f"cannot read SAR chip {path}: {error}") from error
        reason = (
            f"unusable SAR chip {error}" if unusable else f"unreadable SAR chip {path}: {error}"
        )
        warnings.warn(f"skipping {reason}", stacklevel=3)
        if path not in self.skipped_files:
            self.skipped_files.append(path)

    def subset(
        self, indices: Sequence[int], transforms: Callable[[Sample], Sample] | None = None
    ) -> "SARChips":
        """Make a dataset of some of these chips without reading their headers again.

        Args:
            indices: Positions of the chips to keep, in the order to keep them.
            transforms: Function applied to each sample of the new dataset.

        Returns:
            A new dataset sharing this one's settings.
        """
        subset = object.__new__(SARChips)
        subset.__dict__.update(self.__dict__)
        subset.files = [self.files[i] for i in indices]
        subset.skipped_files = list(self.skipped_files)
        subset.transforms = transforms
        return subset

    def __len__(self) -> int:
        """Return the number of chips.

        Returns:
            Number of readable chip files.
        """
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        """Load one chip.

        Args:
            index: Position of the chip.

        Returns:
            ``{"image": float32 [C, H, W]}`` after ``transforms``.

        Raises:
            IndexError: If ``index`` is out of range.
            BadChipError: If the chip has too few valid pixels and bad files are
                not skipped.
            OSError: If the chip cannot be read and bad files are not skipped, or
                if no chip at all can be used.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} chips")
        for offset in range(len(self)):
            path = self.files[(index + offset) % len(self)]
            if path in self.skipped_files:
                continue
            try:
                image = self._load(path)
            except (RasterioError, OSError, BadChipError) as error:
                self._handle_bad_file(path, error)
                continue
            if self.clip_check is not None:
                self.clip_check(image, path)
            sample: Sample = {"image": image}
            return self.transforms(sample) if self.transforms is not None else sample
        raise OSError(
            f"none of the {len(self)} SAR chips is usable: each was skipped as unreadable "
            "or with too few valid pixels (see the warnings)"
        )

    def _load(self, path: str) -> Tensor:
        """Read a chip and convert it to float32 in the dataset's scale.

        Args:
            path: File to read.

        Returns:
            The ``[C, H, W]`` image.

        Raises:
            BadChipError: If the chip has too few valid pixels.
        """
        image, file_nodata = read_chip(path)
        nodata = self.nodata if self.nodata is not None else file_nodata
        return sanitize_and_convert(image, self.units, nodata, path, self.min_valid_fraction)

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Show a chip with a 2-98 % percentile stretch.

        Args:
            sample: A sample from :meth:`__getitem__`.
            show_titles: Whether to title the panel with the channels and units.
            suptitle: Optional title of the figure.

        Returns:
            The figure.
        """
        scale = "raw DN" if self.units == "dn" else f"dB (stored as {self.units})"
        title = f"{{}}, {scale}, 2-98 % stretch" if show_titles else None
        return plot_sar_image(sample["image"], title=title, suptitle=suptitle)

"""Unlabelled SAR image chips for self-supervised pre-training.

A SARSense-style corpus is a folder (or a list) of small PNG/TIFF/GeoTIFF chips
without labels. Chips may be raw digital numbers (for example 8-bit rescaled
images), linear power, amplitude or dB; everything except raw numbers is brought
to dB here so that models see one radiometric scale.
"""

import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import torch
from matplotlib.figure import Figure
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from torch import Tensor
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..transforms import power_to_db, robust_range, sanitize_db, sanitize_power

#: Radiometric scale of the pixel values stored in a file.
SARUnits = Literal["db", "power", "amplitude", "dn"]

#: File name endings searched for chips (compared case-insensitively).
CHIP_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff")

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


def sanitize_and_convert(
    image: Tensor, units: SARUnits, nodata: float | None, source: str
) -> Tensor:
    """Replace invalid pixels and bring SAR values to their working scale.

    Linear power and amplitude are converted to dB; dB and raw digital numbers
    (``"dn"``) keep their values. Invalid pixels (NaN, inf, ``nodata``, and
    negative power or amplitude) are replaced and counted in a warning by
    :func:`~torchgeo_dic3l.transforms.sanitize_power` or
    :func:`~torchgeo_dic3l.transforms.sanitize_db`.

    Args:
        image: Float tensor of any shape in the units given by ``units``.
        units: Scale of ``image``: ``"db"``, ``"power"``, ``"amplitude"`` or ``"dn"``.
        nodata: Value that marks missing pixels, if any.
        source: Name of the file or region, used in warnings.

    Returns:
        A float32 tensor of the same shape, in dB (or raw numbers for ``"dn"``),
        without NaN or infinite values.

    Raises:
        ValueError: If ``units`` is not one of the supported scales.
    """
    image = image.float()
    if units in ("db", "dn"):
        clean, _ = sanitize_db(image, nodata=nodata, source=source)
        return clean
    if units == "power":
        power, _ = sanitize_power(image, nodata=nodata, source=source)
        return power_to_db(power)
    if units == "amplitude":
        amplitude, _ = sanitize_power(image, nodata=nodata, source=source)
        return power_to_db(amplitude.square())
    raise ValueError(f"units must be one of {get_args(SARUnits)}, got {units!r}")


def display_image(image: Tensor) -> tuple[np.ndarray, str]:
    """Make a displayable picture of a SAR image with a 2-98 % percentile stretch.

    One channel is shown in grey. Two channels become a false-colour composite
    (first, second, first minus second, which is the ratio when the input is in
    dB). Three or more channels show the first three as red, green and blue.

    Args:
        image: ``[C, H, W]`` tensor, typically in dB.

    Returns:
        A ``[H, W]`` or ``[H, W, 3]`` array in [0, 1] and a short description of
        what the channels show.
    """
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        layers, description = image, "channel 1"
    elif image.shape[0] == 2:
        layers = torch.stack([image[0], image[1], image[0] - image[1]])
        description = "channels 1, 2, 1-2"
    else:
        layers, description = image[:3], "channels 1-3"
    lows, highs = robust_range(layers, 0.02, 0.98)
    low = torch.tensor(lows).view(-1, 1, 1)
    high = torch.tensor(highs).view(-1, 1, 1)
    stretched = ((layers - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
    picture = stretched[0] if stretched.shape[0] == 1 else stretched.permute(1, 2, 0)
    return picture.numpy(), description


def _open_quietly(source: str | MemoryFile) -> rasterio.DatasetReader:
    """Open a raster, hiding the warning that PNG chips carry no georeferencing.

    Args:
        source: File name, or file contents already in memory.

    Returns:
        An open rasterio dataset.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return source.open() if isinstance(source, MemoryFile) else rasterio.open(source)


class SARChips(NonGeoDataset):
    """Unlabelled SAR chips read from PNG, TIFF or GeoTIFF files.

    Files of any bit depth (uint8, uint16, int16, float32, ...) with one or more
    channels are read through rasterio. All chips must have the same number of
    channels; this is checked from the file headers when the dataset is created.
    Samples are ``{"image": float32 [C, H, W]}``, in dB for ``units`` ``"db"``,
    ``"power"`` and ``"amplitude"``, and unchanged raw values for ``"dn"``.

    With ``skip_bad_files=True`` an unreadable file is skipped with a warning and
    listed in :attr:`skipped_files`: at creation it is left out of the dataset; if
    its pixels only fail to decode later, the next readable chip is returned in
    its place. With data-loader workers each worker keeps its own
    :attr:`skipped_files` list.
    """

    def __init__(
        self,
        root: str | None = None,
        files: Sequence[str] | None = None,
        units: SARUnits = "dn",
        nodata: float | None = None,
        skip_bad_files: bool = False,
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
            skip_bad_files: Skip unreadable files with a warning instead of raising.
            transforms: Function applied to each sample dictionary.

        Raises:
            ValueError: If not exactly one of ``root`` and ``files`` is given, if
                ``units`` is unknown, if the chips have different channel counts
                or a complex data type.
            FileNotFoundError: If no chip files are found.
            OSError: If a file cannot be read and ``skip_bad_files`` is False, or
                if no file at all can be read.
        """
        if (root is None) == (files is None):
            raise ValueError("give exactly one of root (a folder) and files (a list of chips)")
        if units not in get_args(SARUnits):
            raise ValueError(f"units must be one of {get_args(SARUnits)}, got {units!r}")
        self.units = units
        self.nodata = nodata
        self.skip_bad_files = skip_bad_files
        self.transforms = transforms
        self.skipped_files: list[str] = []

        candidates = self._search(root) if root is not None else [str(f) for f in files or []]
        if not candidates:
            where = f"folder {root!r} (searched recursively)" if root else "the files list"
            raise FileNotFoundError(
                f"no SAR chips found in {where}; expected files ending in "
                f"{', '.join(CHIP_EXTENSIONS)}"
            )
        self.files, self.channels, self.dtypes = self._scan(candidates)

    @staticmethod
    def _search(root: str) -> list[str]:
        """Find chip files under a folder.

        Args:
            root: Folder to search recursively.

        Returns:
            Sorted paths of the files with a chip extension.

        Raises:
            FileNotFoundError: If ``root`` is not a folder.
        """
        if not os.path.isdir(root):
            raise FileNotFoundError(f"root {root!r} is not a folder")
        found = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(root)
            for name in names
            if name.lower().endswith(CHIP_EXTENSIONS)
        ]
        return sorted(found)

    def _scan(self, candidates: list[str]) -> tuple[list[str], int, tuple[str, ...]]:
        """Read the headers of all chips and check that they are consistent.

        Args:
            candidates: Files to check.

        Returns:
            The readable files, their common channel count and their distinct
            data types.

        Raises:
            ValueError: If channel counts differ or a data type is complex.
            OSError: If a header cannot be read (and bad files are not skipped),
                or if none can.
        """
        readable: list[str] = []
        dtypes: set[str] = set()
        first: tuple[str, int] | None = None
        for path in candidates:
            try:
                with _open_quietly(path) as src:
                    count, dtype = src.count, src.dtypes[0]
            except RasterioError as error:
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
            raise OSError(f"none of the {len(candidates)} chip files could be read")
        return readable, first[1], tuple(sorted(dtypes))

    def _handle_bad_file(self, path: str, error: Exception) -> None:
        """Raise for an unreadable file, or record and warn when skipping.

        Args:
            path: The file that failed.
            error: What rasterio reported.

        Raises:
            OSError: Unless ``skip_bad_files`` is True.
        """
        if not self.skip_bad_files:
            raise OSError(f"cannot read SAR chip {path}: {error}") from error
        warnings.warn(f"skipping unreadable SAR chip {path}: {error}", stacklevel=3)
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
            OSError: If the chip cannot be read and bad files are not skipped, or
                if no chip at all can be read.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} chips")
        for offset in range(len(self)):
            path = self.files[(index + offset) % len(self)]
            if path in self.skipped_files:
                continue
            try:
                image = self._load(path)
            except (RasterioError, OSError) as error:
                self._handle_bad_file(path, error)
                continue
            sample: Sample = {"image": image}
            return self.transforms(sample) if self.transforms is not None else sample
        raise OSError(f"none of the {len(self)} SAR chips could be read")

    def _load(self, path: str) -> Tensor:
        """Read a chip and convert it to float32 in the dataset's scale.

        Args:
            path: File to read.

        Returns:
            The ``[C, H, W]`` image.
        """
        if path.lower().endswith(".png"):
            data = Path(path).read_bytes()
            check_png_integrity(data)
            with MemoryFile(data) as memory, _open_quietly(memory) as src:
                array = src.read()
                file_nodata = src.nodata
        else:
            with _open_quietly(path) as src:
                array = src.read()
                file_nodata = src.nodata
        nodata = self.nodata if self.nodata is not None else file_nodata
        image = torch.from_numpy(array.astype(np.float32, copy=False))
        return sanitize_and_convert(image, self.units, nodata, source=path)

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
        picture, description = display_image(sample["image"])
        scale = "raw DN" if self.units == "dn" else f"dB (stored as {self.units})"
        fig, ax = plt.subplots(1, 1, figsize=(4, 4))
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        ax.axis("off")
        if show_titles:
            ax.set_title(f"{description}, {scale}, 2-98 % stretch")
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig

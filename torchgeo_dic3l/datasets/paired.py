"""Co-registered SAR and optical chips, for SARMAE's semantic anchor (SARC).

Each SAR chip may have an optical image of the same pixel grid (for example a
Sentinel-2 chip cut at the same place and date). Pairs are found by file name in two
folders or listed in a CSV file. The SAR side is read exactly as
:class:`~torchgeo_dic3l.datasets.SARChips` reads chips; optical images are read as
float32 and scaled (Sentinel-2 digital numbers times ``1e-4`` give reflectance).
"""

import csv
import functools
import operator
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..transforms import invalid_pixels
from .chips import CHIP_EXTENSIONS, DEFAULT_MIN_VALID_FRACTION, SARChips, find_chips, read_chip
from .utils import SARUnits, open_raster, sar_display

#: Columns of a pairs CSV file.
PAIRS_COLUMNS = ("sar", "optical")

#: Files named in an error about many files, before "and N more".
NAMED_FILES = 5


def _some(files: Sequence[str]) -> str:
    """The first few of ``files``, for an error message.

    Args:
        files: File names.

    Returns:
        Up to :data:`NAMED_FILES` names, and how many more there are.
    """
    shown = ", ".join(files[:NAMED_FILES])
    return shown + (f" and {len(files) - NAMED_FILES} more" if len(files) > NAMED_FILES else "")


def _by_name(root: str, option: str, kind: str) -> dict[str, str]:
    """Index the chip files of a folder by their path relative to it, without extension.

    Args:
        root: Folder searched recursively.
        option: The option that named the folder, for errors.
        kind: ``SAR`` or ``optical``, for errors.

    Returns:
        File of each name (``sub/folder/stem``).

    Raises:
        FileNotFoundError: If ``root`` is not a folder.
        ValueError: If two files differ only in their extension.
    """
    files: dict[str, str] = {}
    for path in find_chips(root, option):
        name = Path(os.path.relpath(path, root)).with_suffix("").as_posix()
        if name in files:
            raise ValueError(
                f"{kind} files {files[name]} and {path} have the same name without "
                "extension, so their partner would be ambiguous; keep one of them"
            )
        files[name] = path
    return files


def match_folders(
    sar_root: str, optical_root: str
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Pair the SAR and optical chips of two folders by name.

    A SAR file ``sar_root/a/b.tif`` pairs with ``optical_root/a/b.<any chip
    extension>``: names are compared relative to each folder and without extension,
    so sub-folders must mirror each other.

    Args:
        sar_root: Folder of SAR chips, searched recursively.
        optical_root: Folder of optical chips, searched recursively.

    Returns:
        The SAR files in sorted order, each with its optical partner or None, and the
        optical files without a SAR partner.

    Raises:
        FileNotFoundError: If a folder does not exist, or ``sar_root`` holds no chips.
        ValueError: If two files of a folder differ only in their extension.
    """
    sar = _by_name(sar_root, "sar_root", "SAR")
    optical = _by_name(optical_root, "optical_root", "optical")
    if not sar:
        raise FileNotFoundError(
            f"no SAR chips found in sar_root {sar_root!r} (searched recursively, to pair "
            f"with optical_root {optical_root!r}); expected files ending in "
            f"{', '.join(CHIP_EXTENSIONS)}"
        )
    pairs = sorted((path, optical.get(name)) for name, path in sar.items())
    unmatched = sorted(path for name, path in optical.items() if name not in sar)
    return pairs, unmatched


def read_pairs_csv(path: str) -> list[tuple[str, str | None]]:
    """Read a CSV file of SAR and optical chip pairs.

    The file has a header with the columns ``sar`` and ``optical`` (others are
    ignored). Relative paths are taken from the CSV file's folder. An empty
    ``optical`` cell leaves the SAR chip unpaired. A SAR chip may appear in several
    rows (with several optical images).

    Args:
        path: The CSV file.

    Returns:
        Each row's SAR file and optical file (or None), in the file's order.

    Raises:
        FileNotFoundError: If the CSV file or a file it lists does not exist.
        ValueError: If a column is missing, a row has no SAR file, or there is no row.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pairs_csv {path!r} is not a file")
    folder = os.path.dirname(os.path.abspath(path))

    def resolve(name: str, line: int) -> str:
        resolved = os.path.normpath(os.path.join(folder, name))
        if not os.path.isfile(resolved):
            raise FileNotFoundError(f"{path}, line {line}: {resolved} does not exist")
        return resolved

    pairs: list[tuple[str, str | None]] = []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        missing = [column for column in PAIRS_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} has no column {', '.join(missing)}; the header must name the "
                f"columns {', '.join(PAIRS_COLUMNS)} (found {reader.fieldnames})"
            )
        for row in reader:
            line = reader.line_num
            sar, optical = (row["sar"] or "").strip(), (row["optical"] or "").strip()
            if not sar:
                raise ValueError(f"{path}, line {line}: no SAR file in the 'sar' column")
            pairs.append((resolve(sar, line), resolve(optical, line) if optical else None))
    if not pairs:
        raise ValueError(f"{path} lists no pairs (only a header, or empty)")
    return pairs


class PairedSARChips(NonGeoDataset):
    """SAR chips with co-registered optical images, as SARMAE's SARC term needs them.

    Samples are ``{"image": float32 [C, H, W], "optical": float32 [C_o, H, W],
    "paired": bool scalar tensor}``. ``image`` is exactly what
    :class:`~torchgeo_dic3l.datasets.SARChips` returns for the SAR file (converted to
    dB, invalid pixels replaced, chips checked when the dataset is created);
    ``optical`` is the optical file's values times ``optical_scale``, with NaN,
    infinite and nodata pixels set to 0. SAR and optical may have different channel
    counts, but every optical file must have the same count, and the height and width
    of each pair must agree (checked from the file headers when the dataset is
    created).

    Pairs come from two folders matched by name (:func:`match_folders`) or from a CSV
    file (:func:`read_pairs_csv`). A SAR chip without an optical partner is an error,
    unless ``allow_unpaired``: it is then kept with ``paired=False`` and a zero
    optical image, so that batches still collate (the task gives it the MAE loss
    only). Optical files without a SAR partner are counted in a warning.

    Attributes:
        sar: The SAR chips, in sample order.
        optical_files: Optical partner of each SAR chip, None for unpaired chips.
        optical_channels: Channel count of the optical images.
        unpaired_files: SAR chips kept without an optical partner.
        unmatched_optical: Optical files that no SAR chip pairs with.
    """

    def __init__(
        self,
        sar_root: str | None = None,
        optical_root: str | None = None,
        pairs_csv: str | None = None,
        units: SARUnits = "dn",
        nodata: float | None = None,
        optical_scale: float = 1e-4,
        allow_unpaired: bool = False,
        min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
        min_size: int | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the dataset.

        Args:
            sar_root: Folder of SAR chips, matched by name with ``optical_root``.
            optical_root: Folder of optical chips (with ``sar_root``).
            pairs_csv: CSV file with columns ``sar`` and ``optical`` instead of the
                two folders; relative paths are taken from its folder.
            units: Scale of the stored SAR values, see
                :class:`~torchgeo_dic3l.datasets.SARChips`.
            nodata: Value that marks missing SAR pixels; defaults to each file's tag.
            optical_scale: Factor applied to the optical values (``1e-4`` turns
                Sentinel-2 L1C/L2A digital numbers into reflectance).
            allow_unpaired: Keep SAR chips without an optical partner, with
                ``paired=False``, instead of raising.
            min_valid_fraction: Smallest share of valid pixels of a usable SAR chip.
            min_size: Smallest height and width of a usable chip, in pixels.
            transforms: Function applied to each sample dictionary.

        Raises:
            ValueError: If not exactly one of the two folders and ``pairs_csv`` is
                given, a SAR chip has no partner and ``allow_unpaired`` is False, a
                pair's height and width differ, optical channel counts differ, no
                SAR chip has an optical partner, or a SAR check of
                :class:`~torchgeo_dic3l.datasets.SARChips` fails.
            FileNotFoundError: If a folder, the CSV file or a file it lists does not
                exist, or ``sar_root`` holds no chips.
            OSError: If a file cannot be read.
        """
        self.unmatched_optical: list[str] = []
        if pairs_csv is not None and sar_root is None and optical_root is None:
            pairs = read_pairs_csv(pairs_csv)
            where = pairs_csv
        elif pairs_csv is None and sar_root is not None and optical_root is not None:
            pairs, self.unmatched_optical = match_folders(sar_root, optical_root)
            where = f"optical_root {optical_root!r}"
        else:
            raise ValueError(
                "give both sar_root and optical_root (pairs matched by file name), or "
                "pairs_csv alone (a CSV file with columns sar, optical)"
            )
        self.unpaired_files = [sar for sar, optical in pairs if optical is None]
        if self.unpaired_files and not allow_unpaired:
            raise ValueError(
                f"{len(self.unpaired_files)} SAR chip(s) have no optical partner in {where}: "
                f"{_some(self.unpaired_files)}; allow_unpaired=True keeps them, unpaired "
                "(MAE loss only)"
            )
        if len(self.unpaired_files) == len(pairs):
            raise ValueError(
                f"none of the {len(pairs)} SAR chip(s) has an optical partner in {where}; "
                "the semantic anchor needs paired images"
            )
        if self.unmatched_optical:
            warnings.warn(
                f"{len(self.unmatched_optical)} optical file(s) have no SAR partner in "
                f"sar_root {sar_root!r} and are not used: {_some(self.unmatched_optical)}",
                stacklevel=2,
            )
        self.sar = SARChips(
            files=[sar for sar, _ in pairs],
            units=units,
            nodata=nodata,
            min_valid_fraction=min_valid_fraction,
            min_size=min_size,
        )
        self.optical_files = [optical for _, optical in pairs]
        self.optical_channels = self._check_pairs(pairs)
        self.optical_scale = optical_scale
        self.transforms = transforms

    @staticmethod
    def _check_pairs(pairs: list[tuple[str, str | None]]) -> int:
        """Check from the file headers that pairs align and optical counts agree.

        Args:
            pairs: SAR file and optical file (or None) of each sample.

        Returns:
            The optical channel count.

        Raises:
            ValueError: If a pair's sizes or the optical channel counts differ.
        """
        first: tuple[str, int] | None = None
        for sar, optical in pairs:
            if optical is None:
                continue
            with open_raster(sar) as src:
                sar_size = (src.height, src.width)
            with open_raster(optical) as src:
                optical_size, count = (src.height, src.width), src.count
            if sar_size != optical_size:
                raise ValueError(
                    f"SAR chip {sar} is {sar_size[0]}x{sar_size[1]} pixels but its optical "
                    f"partner {optical} is {optical_size[0]}x{optical_size[1]}; paired "
                    "images must share one pixel grid"
                )
            if first is None:
                first = (optical, count)
            elif count != first[1]:
                raise ValueError(
                    f"optical images must all have the same number of channels, but "
                    f"{first[0]} has {first[1]} and {optical} has {count}"
                )
        assert first is not None  # the caller refuses datasets without a pair
        return first[1]

    def subset(
        self, indices: Sequence[int], transforms: Callable[[Sample], Sample] | None = None
    ) -> "PairedSARChips":
        """Make a dataset of some of these pairs without reading their headers again.

        Args:
            indices: Positions of the samples to keep, in the order to keep them.
            transforms: Function applied to each sample of the new dataset.

        Returns:
            A new dataset sharing this one's settings (and SAR ``clip_check``).
        """
        subset = object.__new__(PairedSARChips)
        subset.__dict__.update(self.__dict__)
        subset.sar = self.sar.subset(indices)
        subset.optical_files = [self.optical_files[i] for i in indices]
        subset.transforms = transforms
        return subset

    @property
    def paired_count(self) -> int:
        """Number of samples with an optical partner."""
        return sum(optical is not None for optical in self.optical_files)

    def __len__(self) -> int:
        """Return the number of samples.

        Returns:
            Number of SAR chips.
        """
        return len(self.sar)

    def __getitem__(self, index: int) -> Sample:
        """Load a SAR chip and its optical partner.

        Args:
            index: Position of the sample.

        Returns:
            ``{"image", "optical", "paired"}`` after ``transforms``.

        Raises:
            IndexError: If ``index`` is out of range.
            BadChipError: If the SAR chip has too few valid pixels.
            OSError: If a file cannot be read.
        """
        image = self.sar[index]["image"]
        path = self.optical_files[index]
        if path is None:
            optical = image.new_zeros(self.optical_channels, *image.shape[-2:])
        else:
            optical = self._load_optical(path)
        sample: Sample = {
            "image": image,
            "optical": optical,
            "paired": torch.tensor(path is not None),
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def _load_optical(self, path: str) -> Tensor:
        """Read an optical image, zero its invalid pixels and scale it.

        Args:
            path: File to read.

        Returns:
            The ``[C_o, H, W]`` float32 image.
        """
        image, nodata = read_chip(path)
        kinds = invalid_pixels(image, nodata, negative=False)
        if kinds:
            invalid = functools.reduce(operator.or_, kinds.values())
            if invalid.any():
                # The frozen optical encoder would turn one NaN into NaN features.
                warnings.warn(
                    f"{path}: {int(invalid.sum())} of {image.numel()} optical pixels are "
                    "NaN, infinite or nodata; they were set to 0",
                    stacklevel=3,
                )
                image = image.masked_fill(invalid, 0.0)
        return image * self.optical_scale

    def plot(
        self,
        sample: Sample,
        optical_bands: Sequence[int] | None = None,
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Show the SAR chip and its optical partner side by side, each stretched 2-98 %.

        Args:
            sample: A sample from :meth:`__getitem__`.
            optical_bands: Optical channels (0-based) shown as red, green and blue
                (or one in grey), e.g. ``[3, 2, 1]`` for Sentinel-2's 13 bands; the
                first three if None.
            show_titles: Whether to title the panels.
            suptitle: Optional title of the figure.

        Returns:
            The figure.
        """
        optical = sample["optical"]
        bands = list(optical_bands) if optical_bands is not None else [0, 1, 2][: len(optical)]
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        sar, caption = sar_display(sample["image"])
        axes[0].imshow(sar, cmap="gray" if sar.ndim == 2 else None)
        if show_titles:
            scale = "raw DN" if self.sar.units == "dn" else "dB"
            axes[0].set_title(f"SAR: {caption}, {scale}")
        if bool(sample["paired"]):
            picture, caption = sar_display(optical[bands], [f"band {b + 1}" for b in bands])
            axes[1].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            if show_titles:
                axes[1].set_title(f"optical: {caption}")
        else:
            axes[1].text(0.5, 0.5, "no optical partner", ha="center", va="center")
        for ax in axes:
            ax.axis("off")
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig

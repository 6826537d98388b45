"""Large Sentinel-1 (or other SAR) GeoTIFF/COG scenes read through TorchGeo samplers."""

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import numpy as np
import rasterio
from matplotlib.figure import Figure
from pyproj import CRS
from rasterio.errors import RasterioError
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..transforms import sanitize_db, sanitize_power
from .utils import plot_sar_image, to_working_scale

#: Radiometric scale of the values stored in scene files.
SceneUnits = Literal["db", "power", "amplitude"]

#: Regular expression for scene files in the plain (all bands in one file) layout.
TIFF_REGEX = r"(?i)^.*\.tiff?$"


def band_file_regex(band: str) -> str:
    """Regular expression for one-file-per-band scenes, such as Sentinel-1 products.

    The band name must stand alone in the file name (not inside a longer word), so
    ``S1A_IW_..._VV.tif`` and ``s1a-iw-grd-vv-...tiff`` match for ``VV`` but a
    product code such as ``5AVV`` does not. The last such occurrence is the band.

    Args:
        band: Band (polarization) name, matched case-insensitively.

    Returns:
        A pattern with a named group ``band``.
    """
    return rf"(?i)^.*(?<![a-z])(?P<band>{re.escape(band)})(?![a-z]).*\.tiff?$"


class SARScenes(RasterDataset):
    """SAR scenes in GeoTIFF/COG files of VV/VH (or HH/HV) backscatter.

    Two layouts are supported:

    * ``band_files=False``: each file holds all bands in the order of
      ``file_bands`` (default: ``bands``), found with ``filename_glob``.
    * ``band_files=True``: one single-band file per polarization, with the band
      name in the file name (Sentinel-1 style, for example
      ``S1A_IW_20201107T135241_DVP_RTC10_G_gpuned_5AF5_VV.tif`` or
      ``s1a-iw-grd-vh-20201107t135241.tiff``). Files of the first band are
      indexed and the other bands are found by replacing the band name, so the
      rest of the names must agree (rename SAFE measurement files, whose image
      numbers differ between bands).

    Patches are read through windowed rasterio reads (never whole scenes), then
    converted to dB according to ``units`` and sanitized: NaN, inf, negative and
    nodata pixels (common at scene edges, and wherever a patch reaches outside the
    files) are replaced with a warning that counts them. Samples hold
    ``"image"`` (float32 ``[C, h, w]`` in dB), ``"bounds"`` and ``"transform"``.

    Nodata: ``nodata`` if given, else the files' common nodata tag; files without a
    tag use NaN (float files) or 0 (integer files), which is also what fills areas
    outside the files.
    """

    filename_glob = "*"

    def __init__(
        self,
        paths: Path | Iterable[Path] = "data",
        bands: Sequence[str] = ("VV", "VH"),
        units: SceneUnits = "power",
        band_files: bool = False,
        file_bands: Sequence[str] | None = None,
        filename_glob: str | None = None,
        nodata: float | None = None,
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        cache: bool = True,
    ) -> None:
        """Initialize the dataset.

        Args:
            paths: Folders to search recursively, or files.
            bands: Bands to return, in this order.
            units: Scale of the stored values: ``"power"`` (linear intensity,
                sigma0/gamma0), ``"amplitude"`` or ``"db"``.
            band_files: Whether each band is stored in its own file.
            file_bands: Names of the bands in each file, in file order, when files
                hold more bands than are wanted (plain layout only).
            filename_glob: Glob selecting the files (defaults to all files); only
                names ending in ``.tif``/``.tiff`` (any case) are used.
            nodata: Value that marks missing pixels (overrides the files' tags).
            crs: Coordinate reference system to warp to (defaults to the first file's).
            res: Resolution in CRS units (defaults to the first file's).
            transforms: Function applied to each sample dictionary.
            cache: Whether to keep file handles open between reads.

        Raises:
            ValueError: If ``bands`` or ``units`` is invalid, a file has the wrong
                number of bands, or files disagree on their nodata value.
            FileNotFoundError: If no scene is found, or a band file is missing.
            OSError: If a matching file cannot be read.
        """
        if not bands or len(set(bands)) != len(bands):
            raise ValueError(f"bands must be a non-empty list without repeats, got {bands}")
        if units not in get_args(SceneUnits):
            raise ValueError(f"units must be one of {get_args(SceneUnits)}, got {units!r}")
        if band_files and file_bands is not None:
            raise ValueError("file_bands is only for files that hold several bands")
        self.units = units
        self.band_files = band_files
        self.separate_files = band_files
        self.all_bands = tuple(bands) if band_files else tuple(file_bands or bands)
        missing = set(bands) - set(self.all_bands)
        if missing:
            raise ValueError(f"bands {sorted(missing)} are not in file_bands {file_bands}")
        self.filename_regex = band_file_regex(bands[0]) if band_files else TIFF_REGEX
        self.filename_glob = filename_glob or type(self).filename_glob
        super().__init__(paths, crs=crs, res=res, bands=bands, transforms=transforms, cache=cache)
        self._check_unreadable()
        self.nodata, self.fill_value = self._resolve_nodata(nodata)

    def _check_unreadable(self) -> None:
        """Raise for matching files that TorchGeo could not open (it skips them).

        Raises:
            OSError: If a file that matches the glob and pattern was not indexed.
        """
        pattern = re.compile(self.filename_regex)
        indexed = set(self.index.filepath)
        for path in self.files:
            if pattern.match(os.path.basename(path)) and path not in indexed:
                _read_header(path)
                raise OSError(f"cannot read SAR scene {path}: TorchGeo could not index it")

    def _scene_files(self) -> list[str]:
        """List every file the dataset reads, including the other bands' files.

        Returns:
            Paths, in index order.

        Raises:
            FileNotFoundError: If the file of a band is missing.
        """
        paths: list[str] = []
        for path in self.index.filepath:
            if not self.band_files:
                paths.append(path)
                continue
            for band in self.bands:
                band_path = self._update_filepath(band, path)
                if not os.path.exists(band_path):
                    raise FileNotFoundError(
                        f"band {band} of scene {path} is missing: expected {band_path}"
                    )
                paths.append(band_path)
        return paths

    def _resolve_nodata(self, nodata: float | None) -> tuple[float | None, float]:
        """Check every file's band count and choose the nodata value.

        Args:
            nodata: Value given by the user, if any.

        Returns:
            The value to override the files' nodata tags with (None to keep the
            tags) and the value that marks missing pixels in what is read.

        Raises:
            ValueError: If a file has the wrong number of bands or files disagree
                on their nodata tag while ``nodata`` is not given.
        """
        expected = 1 if self.band_files else len(self.all_bands)
        tags: dict[str, float | None] = {}
        floating = True
        for path in self._scene_files():
            count, dtype, tags[path] = _read_header(path)
            if count != expected:
                layout = ", ".join(self.all_bands) if expected > 1 else "one band per file"
                raise ValueError(
                    f"{path} has {count} band(s) but {expected} were expected ({layout})"
                )
            floating &= np.dtype(dtype).kind == "f"
        if nodata is not None:
            return nodata, nodata
        distinct = {
            ("nan" if tag is not None and math.isnan(tag) else tag) for tag in tags.values()
        }
        if len(distinct) > 1:
            (first, first_tag), (other, other_tag) = _two_differing(tags)
            raise ValueError(
                f"scene files disagree on nodata: {first} has {first_tag} and {other} has "
                f"{other_tag}; pass nodata= to say which value marks missing pixels"
            )
        tag = next(iter(tags.values()))
        if tag is not None:
            return None, tag
        fallback = math.nan if floating else 0.0
        return fallback, fallback

    def _update_filepath(self, band: str, filepath: str) -> str:
        """Point a file name to another band, keeping the case of the name.

        Args:
            band: Band to point to.
            filepath: File of the first band.

        Returns:
            Path of the file for ``band``.
        """
        directory, filename = os.path.split(filepath)
        match = re.match(self.filename_regex, filename)
        if match is None:
            return filepath
        found = match.group("band")
        name = band.lower() if found.islower() else band
        return os.path.join(
            directory, filename[: match.start("band")] + name + filename[match.end("band") :]
        )

    def _merge_or_stack(
        self,
        filepaths: Sequence[str],
        index: GeoSlice,
        band_indexes: Sequence[int] | None = None,
        out_crs: CRS | None = None,
    ) -> Tensor:
        """Read a window through TorchGeo, then sanitize it and convert it to dB.

        Args:
            filepaths: Files covering the window.
            index: Spatial (and temporal) slice to read.
            band_indexes: Bands to read (1-based), or all.
            out_crs: Coordinate reference system to read in.

        Returns:
            ``[C, h, w]`` float32 values in dB.
        """
        raw = super()._merge_or_stack(filepaths, index, band_indexes, out_crs)
        names = ", ".join(os.path.basename(path) for path in filepaths)
        x, y = self._disambiguate_slice(index)[:2]
        source = f"{names} at x {x.start:.10g}..{x.stop:.10g}, y {y.start:.10g}..{y.stop:.10g}"
        nodata = None if math.isnan(self.fill_value) else self.fill_value
        # Windows often reach past the scene edge, so unlike a chip a window with few
        # valid pixels is normal: invalid pixels go to the dB floor (-100 dB), which
        # range normalization maps to the darkest value.
        if self.units in ("db", "dn"):
            clean, _ = sanitize_db(raw.float(), nodata=nodata, source=source)
        else:
            clean, _ = sanitize_power(raw.float(), nodata=nodata, source=source)
        return to_working_scale(clean, self.units)

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Show a patch in dB with a 2-98 % percentile stretch.

        Args:
            sample: A sample from :meth:`__getitem__`.
            show_titles: Whether to title the panel with the bands shown.
            suptitle: Optional title of the figure.

        Returns:
            The figure.
        """
        title = "{} (dB), 2-98 % stretch" if show_titles else None
        return plot_sar_image(sample["image"], list(self.bands), title, suptitle)


def _read_header(path: str) -> tuple[int, str, float | None]:
    """Read a scene file's band count, data type and nodata tag.

    Args:
        path: File to read.

    Returns:
        Number of bands, data type of the first band and nodata tag.

    Raises:
        OSError: If the file cannot be opened.
    """
    try:
        with rasterio.open(path) as src:
            return src.count, src.dtypes[0], src.nodata
    except RasterioError as error:
        raise OSError(f"cannot read SAR scene {path}: {error}") from error


def _two_differing(tags: dict[str, float | None]) -> tuple[tuple[str, object], tuple[str, object]]:
    """Find two files whose nodata tags differ.

    Args:
        tags: Nodata tag by file, with at least two distinct values.

    Returns:
        Two (file, tag) pairs with different tags.
    """
    items = list(tags.items())
    first = items[0]
    for item in items[1:]:
        if str(item[1]) != str(first[1]):
            return first, item
    return first, items[-1]

"""Lightning data module for large SAR scenes sampled in patches."""

from collections.abc import Iterable, Sequence

import shapely
import torch
from pyproj import CRS
from shapely.geometry.base import BaseGeometry
from torch.utils.data import DataLoader
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import Path, Sample
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

from ..datasets.scenes import SARScenes, SceneUnits
from ..transforms import ImageOnly, RangeNormalize, default_db_ranges


def grid_split(
    dataset: GeoDataset, val_fraction: float, grid_size: int, seed: int
) -> tuple[BaseGeometry, BaseGeometry]:
    """Split the area of a dataset into training and validation grid cells.

    A ``grid_size`` x ``grid_size`` grid is laid over the dataset's bounds; the
    cells that overlap a scene are shuffled reproducibly and a ``val_fraction``
    share of them (at least one) is held out. The regions are used as sampler
    regions of interest, so one dataset serves both splits.

    Args:
        dataset: Dataset whose index holds the scene footprints.
        val_fraction: Share of cells held out, in (0, 1).
        grid_size: Rows and columns of the grid, at least 2.
        seed: Seed of the shuffle.

    Returns:
        Training and validation regions in the dataset's CRS.

    Raises:
        ValueError: If ``grid_size`` is below 2 or the split leaves a side empty.
    """
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size}")
    footprint = dataset.index.geometry.union_all()
    xmin, ymin, xmax, ymax = footprint.bounds
    width, height = (xmax - xmin) / grid_size, (ymax - ymin) / grid_size
    cells = [
        cell
        for row in range(grid_size)
        for col in range(grid_size)
        if (
            cell := shapely.box(
                xmin + col * width,
                ymin + row * height,
                xmin + (col + 1) * width,
                ymin + (row + 1) * height,
            )
        ).intersects(footprint)
    ]
    n_val = max(1, round(len(cells) * val_fraction))
    if n_val >= len(cells):
        raise ValueError(
            f"val_fraction={val_fraction} of {len(cells)} grid cells leaves none for "
            "training; raise grid_size or lower val_fraction"
        )
    order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed)).tolist()
    val = shapely.union_all([cells[i] for i in order[:n_val]])
    train = shapely.union_all([cells[i] for i in order[n_val:]])
    return train, val


class SARScenesDataModule(GeoDataModule):
    """Data module for SAR scenes (:class:`~torchgeo_dic3l.datasets.SARScenes`).

    Training draws random patches (:class:`~torchgeo.samplers.RandomPatchSampler`,
    ``length`` per epoch); validation and test read a regular grid of patches
    (:class:`~torchgeo.samplers.GriddedPatchSampler`). Validation comes from
    ``val_paths`` when given, otherwise from a reproducible spatial split: every
    area is cut into ``grid_size`` x ``grid_size`` cells and a ``val_fraction``
    share of the cells is held out (see :func:`grid_split`). Gridded validation
    patches may reach a little over the edge of their cells. Images are normalized
    on the device with fixed per-band dB ranges (``self.aug``).
    """

    def __init__(
        self,
        paths: Path | Iterable[Path] = "data",
        bands: Sequence[str] = ("VV", "VH"),
        units: SceneUnits = "power",
        patch_size: int = 256,
        batch_size: int = 16,
        length: int | None = None,
        num_workers: int = 0,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        val_paths: Path | Iterable[Path] | None = None,
        val_fraction: float = 0.2,
        grid_size: int = 4,
        seed: int = 0,
        band_files: bool = False,
        file_bands: Sequence[str] | None = None,
        filename_glob: str | None = None,
        nodata: float | None = None,
        crs: str | None = None,
        res: float | tuple[float, float] | None = None,
    ) -> None:
        """Initialize the data module.

        Args:
            paths: Scene folders or files for training (and validation when
                ``val_paths`` is not given).
            bands: Bands to read, in order.
            units: Units of the stored values, see :class:`SARScenes`.
            patch_size: Side of the square patches in pixels.
            batch_size: Patches per batch.
            length: Training patches per epoch (defaults to about the number of
                non-overlapping patches).
            num_workers: Data-loader worker processes.
            low: Per-band lower dB bounds (defaults: VV/HH -25, VH/HV -32).
            high: Per-band upper dB bounds (defaults: VV/HH 0, VH/HV -5).
            val_paths: Separate scenes for validation and test.
            val_fraction: Share of grid cells held out when ``val_paths`` is None.
            grid_size: Rows and columns of the grid laid over each scene for the split.
            seed: Seed of the split and of the training patch positions.
            band_files: Whether each band is stored in its own file.
            file_bands: Names of the bands in each file, in file order, when files
                hold more bands than are wanted (plain layout only).
            filename_glob: Glob selecting the files (defaults to all files).
            nodata: Value that marks missing pixels (overrides the files' tags).
            crs: Coordinate reference system to warp to, as pyproj reads it
                (``EPSG:32633``, WKT, ...); the first file's if None.
            res: Resolution in CRS units; the first file's if None.

        Raises:
            ValueError: If only one of ``low`` and ``high`` is given, their lengths
                differ from ``bands``, a band has no default range, or
                ``val_fraction`` is outside (0, 1).
        """
        super().__init__(
            SARScenes,
            batch_size,
            patch_size,
            length,
            num_workers,
            paths=paths,
            bands=list(bands),
            units=units,
            band_files=band_files,
            file_bands=file_bands,
            filename_glob=filename_glob,
            nodata=nodata,
            crs=None if crs is None else CRS.from_user_input(crs),
            res=res,
        )
        if (low is None) != (high is None):
            raise ValueError("give both low and high normalization bounds, or neither")
        if low is None or high is None:
            low, high = default_db_ranges(bands)
        elif len(low) != len(bands):
            raise ValueError(
                f"low and high give {len(low)} value(s) for {len(bands)} band(s) {list(bands)}"
            )
        if val_paths is None and not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.aug = ImageOnly(RangeNormalize(low, high))
        self.val_paths = val_paths
        self.val_fraction = val_fraction
        self.grid_size = grid_size
        self.seed = seed

    def setup(self, stage: str) -> None:
        """Index the scenes, split them and create the samplers.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            ValueError: If the training region is too small for ``patch_size`` or
                an epoch has fewer patches than ``batch_size``.
        """
        train: GeoDataset = SARScenes(**self.kwargs)
        train_roi: BaseGeometry | None = None
        val_roi: BaseGeometry | None = None
        if self.val_paths is not None:
            val: GeoDataset = SARScenes(**{**self.kwargs, "paths": self.val_paths})
        else:
            val = train
            train_roi, val_roi = grid_split(train, self.val_fraction, self.grid_size, self.seed)
        if stage == "fit":
            sampler = RandomPatchSampler(
                train, size=self.patch_size, length=self.length, roi=train_roi, generator=self.seed
            )
            if sampler.series.is_empty.all():
                raise ValueError(
                    f"the training region has no room for patch_size={self.patch_size}: "
                    f"lower patch_size or grid_size={self.grid_size}, or pass val_paths"
                )
            if len(sampler) < self.batch_size:
                raise ValueError(
                    f"only {len(sampler)} training patch(es) per epoch for "
                    f"batch_size={self.batch_size}; the training loader drops incomplete "
                    "batches, so an epoch would be empty: raise length or lower batch_size"
                )
            self.train_dataset, self.train_sampler = train, sampler
        if stage in ("fit", "validate"):
            self.val_dataset = val
            self.val_sampler = GriddedPatchSampler(
                val, size=self.patch_size, stride=self.patch_size, roi=val_roi
            )
        if stage == "test":
            self.test_dataset = val
            self.test_sampler = GriddedPatchSampler(
                val, size=self.patch_size, stride=self.patch_size, roi=val_roi
            )

    def _dataloader_factory(self, split: str) -> DataLoader[Sample]:
        """TorchGeo's data loader, pinning memory when CUDA is available.

        Pinned batches let Lightning's non-blocking copy to the GPU overlap the step.

        Args:
            split: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.

        Returns:
            The data loader.
        """
        loader = super()._dataloader_factory(split)
        loader.pin_memory = torch.cuda.is_available()
        return loader

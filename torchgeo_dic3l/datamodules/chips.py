"""Lightning data module for unlabelled SAR chips."""

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..datasets.chips import (
    DEFAULT_MAX_CLIPPED_FRACTION,
    DEFAULT_MIN_VALID_FRACTION,
    ClipCheck,
    SARChips,
)
from ..datasets.paired import PairedSARChips
from ..datasets.utils import SARUnits
from ..transforms import ImageOnly, RangeNormalize, default_db_ranges

#: Polarizations assumed by channel count: one channel is taken as VV-like, two as (VV, VH).
CHANNEL_POLARIZATIONS: dict[int, tuple[str, ...]] = {1: ("VV",), 2: ("VV", "VH")}


def default_chip_ranges(
    units: SARUnits, channels: int, dtypes: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Choose per-channel normalization ranges for chips when none are configured.

    Raw 8-bit numbers use [0, 255]. Values in dB (including power and amplitude,
    which the dataset converts to dB) use VV-like [-25, 0] dB for one channel and
    VV [-25, 0], VH [-32, -5] dB for two.

    Args:
        units: Units the chips are stored in.
        channels: Number of channels per chip.
        dtypes: Data types of the chip files.

    Returns:
        Per-channel lower and upper bounds.

    Raises:
        ValueError: If there is no sensible default for this combination.
    """
    if units == "dn":
        if tuple(dtypes) == ("uint8",):
            return [0.0] * channels, [255.0] * channels
        raise ValueError(
            f"no default normalization range for units='dn' chips of type "
            f"{', '.join(dtypes)}; pass low= and high= with one value per channel"
        )
    if channels not in CHANNEL_POLARIZATIONS:
        raise ValueError(
            f"no default dB ranges for {channels}-channel chips (defaults exist for "
            f"{sorted(CHANNEL_POLARIZATIONS)} channels); pass low= and high= with one value "
            "per channel"
        )
    return default_db_ranges(CHANNEL_POLARIZATIONS[channels])


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(count)`` into training and validation positions reproducibly.

    Args:
        count: Number of items.
        val_fraction: Share of items for validation, in [0, 1).
        seed: Seed of the permutation.

    Returns:
        Sorted training and validation positions; validation gets at least one
        item unless ``val_fraction`` is 0.

    Raises:
        ValueError: If ``val_fraction`` is outside [0, 1) or leaves no training item.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(1, round(count * val_fraction))
    if n_val >= count:
        raise ValueError(
            f"val_fraction={val_fraction} of {count} chip(s) leaves none for training"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


class SampleCrop:
    """Crop the image of a sample to a square patch, at random or in the centre.

    Cropping in the dataset keeps 1024-pixel chips usable at 224 or 448 pixels
    without copying whole chips to the device. Further co-registered entries of the
    sample (``keys``, for example an optical image) are cut at the same position.
    """

    def __init__(self, size: int, random: bool, keys: Sequence[str] = ("image",)) -> None:
        """Initialize the crop.

        Args:
            size: Side of the patch in pixels.
            random: Random position (training) or the centre (evaluation).
            keys: Entries of the sample to crop, each ``[..., H, W]`` of the height
                and width of ``image``, which must be present.

        Raises:
            ValueError: If ``size`` is not positive.
        """
        if size <= 0:
            raise ValueError(f"patch_size must be positive, got {size}")
        self.size = size
        self.random = random
        self.keys = tuple(keys)

    def __call__(self, sample: Sample) -> Sample:
        """Crop ``sample["image"]`` and the other ``keys`` at one position.

        Args:
            sample: Dictionary with a ``[C, H, W]`` image.

        Returns:
            A new dictionary with the ``[C, size, size]`` image (and other keys).

        Raises:
            ValueError: If the image is smaller than the patch.
        """
        image = sample["image"]
        height, width = image.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(
                f"chip of {height}x{width} pixels is smaller than patch_size={self.size}"
            )
        if self.random:
            top = int(torch.randint(height - self.size + 1, ()).item())
            left = int(torch.randint(width - self.size + 1, ()).item())
        else:
            top, left = (height - self.size) // 2, (width - self.size) // 2
        window = (..., slice(top, top + self.size), slice(left, left + self.size))
        return {**sample, **{key: sample[key][window] for key in self.keys}}


#: The datasets that chip data modules split: all chips, or all SAR + optical pairs.
ChipSubsets = TypeVar("ChipSubsets", SARChips, PairedSARChips)


class ChipDataModule(NonGeoDataModule):
    """What the chip data modules share: the split's loaders and fixed-range normalization.

    Subclasses build their dataset in ``setup``; the SAR chips of it set the channel
    count and data types that the default normalization ranges depend on.
    """

    def __init__(
        self,
        dataset_class: type[NonGeoDataset],
        batch_size: int,
        num_workers: int,
        patch_size: int | None,
        val_fraction: float,
        low: Sequence[float] | None,
        high: Sequence[float] | None,
        seed: int,
        max_clipped_fraction: float,
        crop_keys: Sequence[str] = ("image",),
        **kwargs: Any,
    ) -> None:
        """Initialize the shared parts.

        Args:
            dataset_class: Dataset built in ``setup``.
            batch_size: Chips per batch.
            num_workers: Data-loader worker processes.
            patch_size: Side of square crops; None keeps whole chips.
            val_fraction: Share of the chips held out for validation, in [0, 1).
            low: Per-channel lower normalization bounds, or None for the defaults.
            high: Per-channel upper normalization bounds, or None for the defaults.
            seed: Seed of the train/validation split.
            max_clipped_fraction: Share of a chip channel's pixels outside the
                normalization range above which the chip is named in a warning.
            crop_keys: Sample entries cropped together with ``image``.
            **kwargs: Arguments of ``dataset_class``.

        Raises:
            ValueError: If only one of ``low`` and ``high`` is given, or
                ``val_fraction``, ``patch_size`` or ``max_clipped_fraction`` is out of
                range.
        """
        super().__init__(dataset_class, batch_size, num_workers, **kwargs)
        if (low is None) != (high is None):
            raise ValueError("give both low and high normalization bounds, or neither")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 <= max_clipped_fraction <= 1.0:
            raise ValueError(f"max_clipped_fraction must be in [0, 1], got {max_clipped_fraction}")
        self.max_clipped_fraction = max_clipped_fraction
        self.train_crop = SampleCrop(patch_size, True, crop_keys) if patch_size else None
        self.eval_crop = SampleCrop(patch_size, False, crop_keys) if patch_size else None
        self.patch_size = patch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.low = list(low) if low is not None else None
        self.high = list(high) if high is not None else None
        if self.low is not None and self.high is not None:
            self.aug = ImageOnly(RangeNormalize(self.low, self.high))

    def _check_training_size(self, count: int) -> None:
        """Refuse a split that leaves no complete training batch.

        Args:
            count: Number of training chips.

        Raises:
            ValueError: If there are fewer training chips than ``batch_size``.
        """
        if count < self.batch_size:
            raise ValueError(
                f"only {count} training chip(s) for batch_size={self.batch_size}; "
                "the training loader drops incomplete batches, so an epoch would be "
                "empty: lower batch_size or val_fraction, or add chips"
            )

    def _configure_normalization(self, chips: SARChips) -> None:
        """Set ``self.aug`` from the configured or default ranges, and check clipping.

        Args:
            chips: All chips, for their channel count and data types; their
                ``clip_check`` is set to the range.

        Raises:
            ValueError: If configured ranges do not match the channel count.
        """
        if self.low is None or self.high is None:
            low, high = default_chip_ranges(chips.units, chips.channels, chips.dtypes)
            self.aug = ImageOnly(RangeNormalize(low, high))
        elif len(self.low) != chips.channels:
            raise ValueError(
                f"low and high give {len(self.low)} value(s) but the chips have "
                f"{chips.channels} channel(s); give one value per channel"
            )
        else:
            low, high = self.low, self.high
        scale = "raw DN" if chips.units == "dn" else "dB"
        chips.clip_check = ClipCheck(low, high, self.max_clipped_fraction, scale)

    def _set_splits(self, dataset: ChipSubsets, stage: str) -> dict[str, ChipSubsets]:
        """Split ``dataset`` reproducibly and set the datasets that ``stage`` needs.

        Validation chips also serve the test stage, all chips the predict stage.

        Args:
            dataset: All chips (or pairs).
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Returns:
            The datasets set, by split name (``training``, ``validation``, ``test``,
            ``predict``), for reports.

        Raises:
            ValueError: If there are fewer training chips than ``batch_size``.
        """
        train, val = split_indices(len(dataset), self.val_fraction, self.seed)
        splits: dict[str, ChipSubsets] = {}
        if stage == "fit":
            self._check_training_size(len(train))
            self.train_dataset = splits["training"] = dataset.subset(train, self.train_crop)
        if stage in ("fit", "validate"):
            self.val_dataset = splits["validation"] = dataset.subset(val, self.eval_crop)
        if stage == "test":
            self.test_dataset = splits["test"] = dataset.subset(val, self.eval_crop)
        if stage == "predict":
            self.predict_dataset = splits["predict"] = dataset.subset(
                range(len(dataset)), self.eval_crop
            )
        return splits

    def _dataloader_factory(self, split: str) -> DataLoader[Sample]:
        """Build a data loader, pinning memory when CUDA is available.

        With ``val_fraction=0`` the validation and test loaders are empty, which
        Lightning takes as "no validation".

        Args:
            split: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``.

        Returns:
            The data loader.
        """
        held_out_nothing = split in ("val", "test") and self.val_fraction == 0
        dataset = (
            getattr(self, f"{split}_dataset")
            if held_out_nothing
            else self._valid_attribute(f"{split}_dataset", "dataset")
        )
        batch_size = self._valid_attribute(f"{split}_batch_size", "batch_size")
        return DataLoader(
            dataset=dataset,
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=split == "train",
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )


class SARChipsDataModule(ChipDataModule):
    """Data module for unlabelled SAR chips (:class:`~torchgeo_dic3l.datasets.SARChips`).

    The files are split reproducibly into training and validation chips; the
    validation chips also serve the test stage and all chips the predict stage.
    ``val_fraction=0`` trains on every chip and gives empty validation loaders.
    With ``patch_size`` the training chips are cropped at random and the others
    in the centre; chips smaller than ``patch_size`` are bad chips (see
    :class:`~torchgeo_dic3l.datasets.SARChips`). Images are normalized on the device
    with fixed per-channel ranges (``self.aug``); a chip of which more than
    ``max_clipped_fraction`` of a channel lies outside its range is named in a
    warning when it is loaded.
    """

    def __init__(
        self,
        root: str | None = None,
        files: Sequence[str] | None = None,
        units: SARUnits = "dn",
        batch_size: int = 32,
        num_workers: int = 0,
        patch_size: int | None = None,
        val_fraction: float = 0.1,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        seed: int = 0,
        nodata: float | None = None,
        skip_bad_files: bool = False,
        min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    ) -> None:
        """Initialize the data module.

        Args:
            root: Folder searched recursively for chips.
            files: Explicit list of chip files (instead of ``root``).
            units: Units of the stored values, see :class:`SARChips`.
            batch_size: Chips per batch.
            num_workers: Data-loader worker processes.
            patch_size: Side of square crops; None keeps whole chips.
            val_fraction: Share of the chips held out for validation, in [0, 1).
            low: Per-channel lower normalization bounds (defaults by units: 8-bit
                raw numbers [0, 255], dB VV [-25, 0] and VH [-32, -5]).
            high: Per-channel upper normalization bounds.
            seed: Seed of the train/validation split.
            nodata: Value that marks missing pixels; defaults to each file's tag.
            skip_bad_files: Skip bad chips (unreadable, smaller than ``patch_size``,
                too few valid pixels) with a warning instead of raising.
            min_valid_fraction: Smallest share of valid pixels of a usable chip.
            max_clipped_fraction: Share of a chip channel's pixels outside the
                normalization range above which the chip is named in a warning
                (1 never warns).

        Raises:
            ValueError: If only one of ``low`` and ``high`` is given, the ranges are
                invalid, or ``val_fraction``, ``patch_size``, ``min_valid_fraction``
                or ``max_clipped_fraction`` is out of range.
        """
        super().__init__(
            SARChips,
            batch_size,
            num_workers,
            patch_size,
            val_fraction,
            low,
            high,
            seed,
            max_clipped_fraction,
            root=root,
            files=files,
            units=units,
            nodata=nodata,
            skip_bad_files=skip_bad_files,
            min_valid_fraction=min_valid_fraction,
            min_size=patch_size,
        )

    def setup(self, stage: str) -> None:
        """Read the chip headers, split the chips and set up normalization.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            ValueError: If the configured ranges do not match the channel count,
                there is no default range for these chips, or there are fewer
                training chips than ``batch_size``.
        """
        chips = SARChips(**self.kwargs)
        self._configure_normalization(chips)
        self._set_splits(chips, stage)

"""Datamodules of the synthetic SAR world: pre-training and segmentation.

Both normalize on the device (TorchGeo's ``on_after_batch_transfer`` runs ``self.aug``)
by clipping each channel to a fixed dB range and rescaling it to [0, 1].
"""

from collections.abc import Callable, Sequence
from typing import Literal

from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..datasets.synthetic import TASK_CLASSES, SyntheticSARPretrain, SyntheticSARSegmentation
from ..datasets.synthetic_world import POLARIZATIONS
from ..transforms import ImageOnly, RangeNormalize, default_db_ranges, validate_bands


def band_ranges(
    bands: Sequence[str],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> tuple[list[float], list[float]]:
    """Per-channel normalization bounds, defaulting to the polarizations' dB ranges.

    Args:
        bands: Band names, e.g. ``("VV", "VH")``.
        low: Lower bounds in dB, one per band, or None for the defaults.
        high: Upper bounds in dB, one per band, or None for the defaults.

    Returns:
        The lower and upper bounds.

    Raises:
        ValueError: If a band is unknown or ``low``/``high`` has the wrong length.
    """
    names = validate_bands(bands, POLARIZATIONS)
    defaults = default_db_ranges(names)
    bounds = []
    for side, (name, given) in enumerate((("low", low), ("high", high))):
        if given is None:
            given = defaults[side]
        elif len(given) != len(names):
            raise ValueError(f"{name} needs one value per band {list(names)}, got {list(given)}")
        bounds.append([float(value) for value in given])
    return bounds[0], bounds[1]


def _check_train_length(length: int, batch_size: int) -> None:
    """Refuse a training set smaller than one batch.

    Raises:
        ValueError: If ``length < batch_size``; the training loader drops incomplete
            batches, so every epoch would be empty.
    """
    if length < batch_size:
        raise ValueError(
            f"the training split has {length} scene(s), fewer than batch_size={batch_size}; "
            "the training loader drops incomplete batches, so an epoch would be empty: "
            "raise length (or label_fraction) or lower batch_size"
        )


class _SyntheticDataModule(NonGeoDataModule):
    """Shared set-up of the synthetic datamodules: one dataset per split, made on demand."""

    def _dataset(self, split: Literal["train", "val", "test"]) -> NonGeoDataset:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        """Create the datasets of a stage.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"`` (the test
                scenes).
        """
        if stage == "fit":
            self.train_dataset = self._dataset("train")
        if stage in ("fit", "validate"):
            self.val_dataset = self._dataset("val")
        if stage in ("test", "predict"):
            self.test_dataset = self.predict_dataset = self._dataset("test")


class SyntheticSARPretrainDataModule(_SyntheticDataModule):
    """Unlabelled synthetic SAR scenes for self-supervised pre-training.

    The training scenes have seeds ``seed .. seed + length - 1``, validation the next
    ``val_length`` seeds and test (also used for predict) the ``val_length`` after
    those, so no scene is in two splits.
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        size: int = 256,
        length: int = 512,
        val_length: int = 64,
        looks: float = 4.0,
        bands: Sequence[str] = ("VV", "VH"),
        seed: int = 0,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the datamodule.

        Args:
            batch_size: Samples per batch.
            num_workers: Data-loading worker processes.
            size: Height and width of each scene in pixels.
            length: Number of training scenes.
            val_length: Number of validation (and of test) scenes.
            looks: Equivalent number of looks of the speckle.
            bands: Bands of the image, from ``("VV", "VH")``.
            seed: Seed of the first training scene.
            low: Per-band lower dB bound of the normalization (default
                :data:`~torchgeo_dic3l.transforms.radiometry.POLARIZATION_DB_RANGES`).
            high: Per-band upper dB bound of the normalization.
            transforms: Function applied to each sample (before the device-side
                normalization).

        Raises:
            ValueError: If a dataset argument is out of range, a band is unknown,
                a bound list has the wrong length or ``length < batch_size``.
        """
        bands = validate_bands(bands, POLARIZATIONS)
        super().__init__(
            SyntheticSARPretrain,
            batch_size,
            num_workers,
            size=size,
            looks=looks,
            bands=bands,
            transforms=transforms,
        )
        self.length = length
        self.val_length = val_length
        self.seed = seed
        self.aug = ImageOnly(RangeNormalize(*band_ranges(bands, low, high)))
        # Building the datasets is cheap (scenes are drawn on access), so bad
        # arguments fail here rather than in setup().
        _check_train_length(len(self._dataset("train")), batch_size)
        self._dataset("val")

    def _dataset(self, split: Literal["train", "val", "test"]) -> SyntheticSARPretrain:
        """Create the dataset of one split: consecutive, disjoint seed ranges."""
        length = self.length if split == "train" else self.val_length
        first = {"train": 0, "val": self.length, "test": self.length + self.val_length}
        return SyntheticSARPretrain(length=length, seed=self.seed + first[split], **self.kwargs)


class SyntheticSARSegmentationDataModule(_SyntheticDataModule):
    """Labelled synthetic SAR scenes for land-cover, water or road segmentation.

    Train, val and test use disjoint scenes (see :class:`SyntheticSARSegmentation`);
    ``label_fraction`` shrinks only the training split.
    """

    def __init__(
        self,
        task: Literal["landcover", "water", "roads"] = "landcover",
        batch_size: int = 32,
        num_workers: int = 0,
        size: int = 256,
        length: int = 256,
        val_length: int = 64,
        test_length: int = 64,
        looks: float = 4.0,
        bands: Sequence[str] = ("VV", "VH"),
        seed: int = 0,
        label_fraction: float = 1.0,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the datamodule.

        Args:
            task: ``"landcover"`` (6 classes), ``"water"`` or ``"roads"`` (binary).
            batch_size: Samples per batch.
            num_workers: Data-loading worker processes.
            size: Height and width of each scene in pixels.
            length: Number of training scenes before ``label_fraction``.
            val_length: Number of validation scenes.
            test_length: Number of test scenes.
            looks: Equivalent number of looks of the speckle.
            bands: Bands of the image, from ``("VV", "VH")``.
            seed: Seed of the scene sequence.
            label_fraction: Fraction in (0, 1] of the training scenes to keep.
            low: Per-band lower dB bound of the normalization (default
                :data:`~torchgeo_dic3l.transforms.radiometry.POLARIZATION_DB_RANGES`).
            high: Per-band upper dB bound of the normalization.
            transforms: Function applied to each sample (before the device-side
                normalization).

        Raises:
            ValueError: If a dataset argument is out of range, the task or a band is
                unknown, a bound list has the wrong length, or the training split
                (after ``label_fraction``) is smaller than ``batch_size``.
        """
        if task not in TASK_CLASSES:
            raise ValueError(f"task must be one of {tuple(TASK_CLASSES)}, got {task!r}")
        bands = validate_bands(bands, POLARIZATIONS)
        super().__init__(
            SyntheticSARSegmentation,
            batch_size,
            num_workers,
            task=task,
            size=size,
            looks=looks,
            bands=bands,
            seed=seed,
            transforms=transforms,
        )
        self.lengths = {"train": length, "val": val_length, "test": test_length}
        self.label_fraction = label_fraction
        self.classes = list(TASK_CLASSES[task])
        self.num_classes = len(self.classes)
        self.aug = ImageOnly(RangeNormalize(*band_ranges(bands, low, high)))
        # Building the datasets is cheap (scenes are drawn on access), so bad
        # arguments fail here rather than in setup().
        _check_train_length(len(self._dataset("train")), batch_size)
        self._dataset("val")
        self._dataset("test")

    def _dataset(self, split: Literal["train", "val", "test"]) -> SyntheticSARSegmentation:
        """Create the dataset of one split."""
        fraction = self.label_fraction if split == "train" else 1.0
        return SyntheticSARSegmentation(
            split=split,
            length=self.lengths[split],
            label_fraction=fraction,
            **self.kwargs,
        )

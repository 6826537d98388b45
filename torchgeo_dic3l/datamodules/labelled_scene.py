"""Datamodule for a labelled SAR scene with a spatial train/val/test split."""

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets.utils import Sample

from ..datasets.labelled_scene import LabelledSARScene, Split, SplitMethod, Units
from ..datasets.scene_split import SplitTable
from ..transforms import ImageOnly, RangeNormalize, robust_range


class _NormalizationPending(nn.Module):
    """Stand-in ``aug`` that fails loudly if used before the dB ranges are known."""

    def forward(self, sample: Sample) -> Sample:
        """Refuse to pass a batch through unnormalized.

        Args:
            sample: A batch.

        Returns:
            Never returns.

        Raises:
            RuntimeError: Always; ``setup`` computes the ranges first.
        """
        raise RuntimeError(
            "LabelledSARSceneDataModule: the dB normalization ranges are computed in "
            "setup(); call setup() (or pass low and high) before using aug"
        )


class LabelledSARSceneDataModule(NonGeoDataModule):
    """Train/val/test patches of one labelled SAR scene, normalized from dB on device.

    The scene arguments are those of
    :class:`~torchgeo_dic3l.datasets.labelled_scene.LabelledSARScene`. Normalization is
    ``ImageOnly(RangeNormalize(low, high))`` on dB values, applied in
    ``on_after_batch_transfer``. Without ``low``/``high`` the per-channel 2-98 %
    range of the training region's measured pixels (all training patches, whatever
    ``label_fraction``, without the pixels replaced because they were invalid or zero)
    is used; it is computed in :meth:`setup`.

    The first :meth:`setup` prints the split table (patches and labelled pixels per
    class of each split, :attr:`split_table`) and warns when a class is absent from the
    training or test split or has few test pixels.
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
        split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
        patch_size: int = 64,
        stride: int | None = None,
        gap: int | None = None,
        block_size: int | None = None,
        label_fraction: float = 1.0,
        seed: int = 0,
        split_seed: int = 0,
        split_method: SplitMethod = "stratified",
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        """Initialize the datamodule.

        Args:
            images: Image rasters, one per channel or multi-band.
            label: Raster of raw label values.
            classes: Class names in class-index order.
            label_values: Raw label value of each class; defaults to ``0..K-1``.
            ignore_values: Raw label values meaning "unlabelled".
            ignore_index: Mask value of unlabelled and invalid pixels.
            band_indices: 1-based band indices read from every image file; None reads all.
            bands: One name per channel.
            units: ``"power"``, ``"amplitude"`` or ``"db"``: what the files hold.
            nodata: Value of missing image pixels.
            split_fractions: Target area fractions of train, val and test.
            patch_size: Side of the square patches in pixels.
            stride: Step between patches within a split; defaults to ``patch_size``.
            gap: Minimum pixels between patches of different splits.
            block_size: Side of the split blocks; defaults to ``4 * patch_size``.
            label_fraction: Fraction of training patches kept.
            seed: Seed of the ``label_fraction`` subset.
            split_seed: Seed of the block-to-split assignment.
            split_method: ``"stratified"`` (class-balanced blocks, patches where the
                labels are) or ``"random"`` (the layout of earlier releases).
            low: Per-channel lower dB bound; None computes it from the training split.
            high: Per-channel upper dB bound; None computes it from the training split.
            batch_size: Patches per batch.
            num_workers: Data loader workers.

        Raises:
            ValueError: If only one of ``low`` and ``high`` is given.
        """
        if (low is None) != (high is None):
            raise ValueError("give both low and high (one dB value per channel) or neither")
        super().__init__(
            LabelledSARScene,
            batch_size=batch_size,
            num_workers=num_workers,
            images=list(images),
            label=label,
            classes=list(classes),
            label_values=label_values,
            ignore_values=list(ignore_values),
            ignore_index=ignore_index,
            band_indices=band_indices,
            bands=bands,
            units=units,
            nodata=nodata,
            split_fractions=split_fractions,
            patch_size=patch_size,
            stride=stride,
            gap=gap,
            block_size=block_size,
            label_fraction=label_fraction,
            seed=seed,
            split_seed=split_seed,
            split_method=split_method,
        )
        self.num_classes = len(classes)
        self.ignore_index = ignore_index
        self.low = list(low) if low is not None else None
        self.high = list(high) if high is not None else None
        self.aug = (
            ImageOnly(RangeNormalize(self.low, self.high))
            if self.low is not None and self.high is not None
            else _NormalizationPending()
        )
        #: Patches and labelled pixels per class of each split, set by :meth:`setup`.
        self.split_table: SplitTable | None = None
        self._scene: LabelledSARScene | None = None

    def _dataset(self, split: Split, label_fraction: float | None = None) -> LabelledSARScene:
        """The dataset of one split, reading the scene only for the first one asked.

        Args:
            split: Which split.
            label_fraction: Fraction of training patches kept; the configured one if None.

        Returns:
            The dataset; every split shares the rasters and split map of the first.
        """
        if self._scene is None:
            self._scene = LabelledSARScene(split=split, **self.kwargs)
        return self._scene.with_split(split, label_fraction)

    def setup(self, stage: str) -> None:
        """Build the datasets of a stage and, if needed, the normalization ranges.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            ValueError: If the configured ``low``/``high`` do not have one value per
                channel.
        """
        if stage == "fit":
            self.train_dataset = self._dataset("train")
        if stage in ("fit", "validate"):
            self.val_dataset = self._dataset("val")
        if stage == "test":
            self.test_dataset = self._dataset("test")
        if self.low is None or self.high is None:
            self.low, self.high = self._training_range()
            self.aug = ImageOnly(RangeNormalize(self.low, self.high))
        built = [
            d
            for d in (self.train_dataset, self.val_dataset, self.test_dataset)
            if isinstance(d, LabelledSARScene)
        ]
        if built and self.split_table is None:
            self._report_split(built[0])
        channels = len(built[0].bands) if built else len(self.low)
        if len(self.low) != channels or len(self.high) != channels:
            raise ValueError(
                f"low/high have {len(self.low)}/{len(self.high)} value(s) but the scene "
                f"has {channels} channel(s)"
            )

    def describe_split(self) -> SplitTable:
        """The split table, from :meth:`setup` or, before it, from the training split.

        Returns:
            Patches and labelled pixels per class of each split.
        """
        if self.split_table is not None:
            return self.split_table
        return self._dataset("train").split_table()

    def _report_split(self, dataset: LabelledSARScene) -> None:
        """Print the split table once and warn about classes the scores cannot rank.

        Args:
            dataset: Any split of the scene.

        Warns:
            UserWarning: One per problem found by :meth:`SplitTable.problems`, with what
                to change.
        """
        self.split_table = dataset.split_table()
        print(f"Split of {self.kwargs['label']}:\n{self.split_table.to_markdown()}")
        advice = "change split_fractions, block_size or split_seed"
        if dataset.split_method == "random":
            advice += ", or use split_method='stratified'"
        for problem in self.split_table.problems():
            warnings.warn(
                f"LabelledSARSceneDataModule: {problem}; {advice}",
                UserWarning,
                stacklevel=3,
            )

    def _training_range(self) -> tuple[list[float], list[float]]:
        """Per-channel 2-98 % dB range over the training patches' measured pixels.

        Pixels replaced because they were invalid or zero sit at a fill value (the
        power floor is -100 dB) and would drag the lower bound down.

        Returns:
            Lower and upper bounds per channel.
        """
        train = self.train_dataset
        if not isinstance(train, LabelledSARScene) or train.label_fraction < 1.0:
            train = self._dataset("train", 1.0)
        size = train.patch_size
        patches: list[Tensor] = []
        for row, col in train.patches:
            window = (slice(row, row + size), slice(col, col + size))
            image = train.scene_image[(slice(None), *window)]
            patches.append(image.where(train.scene_measured[window], torch.nan))
        return robust_range(torch.stack(patches))

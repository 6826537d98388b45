"""Lightning data module for SAR chips paired with optical images (SARMAE's SARC)."""

from collections.abc import Sequence

from ..datasets.chips import DEFAULT_MAX_CLIPPED_FRACTION, DEFAULT_MIN_VALID_FRACTION
from ..datasets.paired import PairedSARChips
from ..datasets.utils import SARUnits
from .chips import ChipDataModule


class PairedSARChipsDataModule(ChipDataModule):
    """Data module for SAR + optical pairs (:class:`~torchgeo_dic3l.datasets.PairedSARChips`).

    The SAR side behaves as :class:`~torchgeo_dic3l.datamodules.SARChipsDataModule`:
    the same reproducible train/validation split (validation chips also serve the
    test stage, all chips the predict stage), the same crops and the same fixed-range
    normalization of ``image`` on the device, with its clipping warning. ``optical``
    is cropped at the same place as ``image`` and otherwise left as the dataset reads
    it (scaled by ``optical_scale``); ``paired`` tells which samples have an optical
    partner. ``setup`` prints the split sizes and how many samples of each split are
    paired.
    """

    def __init__(
        self,
        sar_root: str | None = None,
        optical_root: str | None = None,
        pairs_csv: str | None = None,
        units: SARUnits = "dn",
        optical_scale: float = 1e-4,
        allow_unpaired: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        patch_size: int | None = None,
        val_fraction: float = 0.1,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        seed: int = 0,
        nodata: float | None = None,
        min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    ) -> None:
        """Initialize the data module.

        Args:
            sar_root: Folder of SAR chips, matched by file name with ``optical_root``.
            optical_root: Folder of optical chips (with ``sar_root``).
            pairs_csv: CSV file with columns ``sar`` and ``optical`` instead of the two
                folders; relative paths are taken from its folder.
            units: Units of the stored SAR values, see
                :class:`~torchgeo_dic3l.datasets.SARChips`.
            optical_scale: Factor applied to the optical values (``1e-4``: Sentinel-2
                digital numbers to reflectance).
            allow_unpaired: Keep SAR chips without an optical partner (MAE loss only)
                instead of raising.
            batch_size: Samples per batch.
            num_workers: Data-loader worker processes.
            patch_size: Side of square crops, cut at one place from both images; None
                keeps whole chips.
            val_fraction: Share of the samples held out for validation, in [0, 1).
            low: Per-channel lower SAR normalization bounds (defaults by units: 8-bit
                raw numbers [0, 255], dB VV [-25, 0] and VH [-32, -5]).
            high: Per-channel upper SAR normalization bounds.
            seed: Seed of the train/validation split.
            nodata: Value that marks missing SAR pixels; defaults to each file's tag.
            min_valid_fraction: Smallest share of valid pixels of a usable SAR chip.
            max_clipped_fraction: Share of a SAR chip channel's pixels outside the
                normalization range above which the chip is named in a warning
                (1 never warns).

        Raises:
            ValueError: If only one of ``low`` and ``high`` is given, the ranges are
                invalid, or ``val_fraction``, ``patch_size`` or
                ``max_clipped_fraction`` is out of range.
        """
        super().__init__(
            PairedSARChips,
            batch_size,
            num_workers,
            patch_size,
            val_fraction,
            low,
            high,
            seed,
            max_clipped_fraction,
            crop_keys=("image", "optical"),
            sar_root=sar_root,
            optical_root=optical_root,
            pairs_csv=pairs_csv,
            units=units,
            nodata=nodata,
            optical_scale=optical_scale,
            allow_unpaired=allow_unpaired,
            min_valid_fraction=min_valid_fraction,
            min_size=patch_size,
        )

    def setup(self, stage: str) -> None:
        """Pair and check the files, split them, set up normalization and report.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Raises:
            ValueError: If the configured ranges do not match the SAR channel count,
                there is no default range for these chips, or there are fewer
                training samples than ``batch_size``.
        """
        pairs = PairedSARChips(**self.kwargs)
        self._configure_normalization(pairs.sar)
        splits = self._set_splits(pairs, stage)
        counts = ", ".join(
            f"{len(split)} {name} ({split.paired_count} paired)" for name, split in splits.items()
        )
        print(
            f"PairedSARChipsDataModule: {counts} samples; SAR {pairs.sar.channels} channel(s), "
            f"optical {pairs.optical_channels} channel(s)"
        )

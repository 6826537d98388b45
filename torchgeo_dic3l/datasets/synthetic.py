"""Datasets of the synthetic SAR world: unlabelled scenes and three segmentation tasks.

The scenes come from :func:`~torchgeo_dic3l.datasets.synthetic_world.simulate_scene`;
every sample is drawn from one integer seed, so data sets of any size exist without
files.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..transforms import validate_bands
from .synthetic_world import (
    LANDCOVER_CLASSES,
    POLARIZATIONS,
    LandCover,
    SyntheticScene,
    check_scene_args,
    simulate_scene,
)
from .utils import sar_display

#: Segmentation tasks and the class names of their masks.
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "landcover": LANDCOVER_CLASSES,
    "water": ("background", "water"),
    "roads": ("background", "road"),
}

#: Display colours of the land-cover classes (the positive class of binary tasks
#: takes the colour of its land-cover class).
LANDCOVER_COLORS: tuple[str, ...] = (
    "#1f78b4",  # water
    "#252525",  # road
    "#e31a1c",  # urban
    "#1b7837",  # forest
    "#f2c400",  # crops
    "#b08d57",  # bare soil
)

#: Segmentation scene seeds start here, so that they never coincide with
#: pre-training scenes ``seed + i`` below it.
SEGMENTATION_SEED_OFFSET = 1_000_000_000

_SPLITS: tuple[str, ...] = ("train", "val", "test")


class _SyntheticSAR(NonGeoDataset):
    """Shared arguments, band selection and image display of the synthetic datasets."""

    all_bands = POLARIZATIONS

    def __init__(
        self,
        length: int,
        size: int,
        looks: float,
        bands: Sequence[str],
        seed: int,
        transforms: Callable[[Sample], Sample] | None,
    ) -> None:
        """Validate and store the arguments.

        Raises:
            ValueError: If an argument is out of range.
        """
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        check_scene_args(seed, size, looks)
        self.length = length
        self.size = size
        self.looks = looks
        self.bands = validate_bands(bands, POLARIZATIONS)
        self.seed = seed
        self.transforms = transforms
        self._band_indices = [POLARIZATIONS.index(name) for name in self.bands]

    def __len__(self) -> int:
        """Return the number of scenes.

        Returns:
            The dataset length.
        """
        return self.length

    def scene_seed(self, index: int) -> int:
        """Return the generator seed of a sample.

        Args:
            index: Sample index in ``[0, len(self))``.

        Returns:
            The seed passed to :func:`simulate_scene`.
        """
        raise NotImplementedError

    def _scene(self, index: int) -> SyntheticScene:
        """Generate the scene of a sample.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of length {len(self)}")
        return simulate_scene(self.scene_seed(index), self.size, self.looks)

    def _display(self, image: Tensor) -> tuple[np.ndarray, str]:
        """A displayable image and its title: dual-pol false colour or one band in grey."""
        if {"VV", "VH"} <= set(self.bands):
            shown = [self.bands.index("VV"), self.bands.index("VH")]
        else:
            shown = [0]
        picture, caption = sar_display(image[shown], [self.bands[i] for i in shown])
        return picture, f"Image ({caption})"


class SyntheticSARPretrain(_SyntheticSAR):
    """Unlabelled scenes of the synthetic SAR world, for self-supervised pre-training.

    Sample ``i`` is the scene with seed ``seed + i`` (see :func:`simulate_scene`), as
    ``{"image": float32 [C, size, size]}`` in dB with the selected bands.
    """

    def __init__(
        self,
        length: int = 512,
        size: int = 256,
        looks: float = 4.0,
        bands: Sequence[str] = POLARIZATIONS,
        seed: int = 0,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the dataset.

        Args:
            length: Number of scenes.
            size: Height and width of each scene in pixels (>= 32).
            looks: Equivalent number of looks of the speckle (> 0, or ``math.inf``).
            bands: Bands of the image, from ``("VV", "VH")``, e.g. ``("VH",)``.
            seed: Seed of the first scene (>= 0).
            transforms: Function applied to each sample dictionary.

        Raises:
            ValueError: If an argument is out of range or a band is unknown.
        """
        super().__init__(length, size, looks, bands, seed, transforms)

    def scene_seed(self, index: int) -> int:
        """Return the generator seed of a sample.

        Args:
            index: Sample index in ``[0, len(self))``.

        Returns:
            ``seed + index``.
        """
        return self.seed + index

    def __getitem__(self, index: int) -> Sample:
        """Generate a sample.

        Args:
            index: Sample index.

        Returns:
            ``{"image": float32 [C, size, size]}`` in dB.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        sample: Sample = {"image": self._scene(index).image[self._band_indices]}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample.

        Args:
            sample: A sample from :meth:`__getitem__`.
            show_titles: Whether to title the panel.
            suptitle: Optional figure title.

        Returns:
            The figure.
        """
        image, title = self._display(sample["image"])
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(image, cmap="gray", interpolation="none")
        ax.axis("off")
        if show_titles:
            ax.set_title(title)
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig


class SyntheticSARSegmentation(_SyntheticSAR):
    """Labelled scenes of the synthetic SAR world for semantic segmentation.

    Tasks: ``"landcover"`` (the six classes of :data:`LANDCOVER_CLASSES`), ``"water"``
    (0 background, 1 water) and ``"roads"`` (0 background, 1 road). Samples are
    ``{"image": float32 [C, size, size] in dB, "mask": int64 [size, size]}``.

    Sample ``i`` of split ``k`` (0 train, 1 val, 2 test) is the scene with seed
    ``SEGMENTATION_SEED_OFFSET + 3 * (seed + i) + k``: the splits never share a scene,
    whatever their lengths or seeds, and no scene is one of the pre-training scenes
    ``seed + i`` below :data:`SEGMENTATION_SEED_OFFSET`.
    """

    def __init__(
        self,
        task: Literal["landcover", "water", "roads"] = "landcover",
        split: Literal["train", "val", "test"] = "train",
        length: int = 256,
        size: int = 256,
        looks: float = 4.0,
        bands: Sequence[str] = POLARIZATIONS,
        seed: int = 0,
        label_fraction: float = 1.0,
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize the dataset.

        Args:
            task: Which mask to return.
            split: Which split; each has its own scenes.
            length: Number of scenes in the split (before ``label_fraction``).
            size: Height and width of each scene in pixels (>= 32).
            looks: Equivalent number of looks of the speckle (> 0, or ``math.inf``).
            bands: Bands of the image, from ``("VV", "VH")``, e.g. ``("VH",)``.
            seed: Seed of the scene sequence (>= 0).
            label_fraction: Fraction in (0, 1] of the training scenes to keep: the first
                ``max(1, round(label_fraction * length))``, so smaller fractions are
                subsets of larger ones. Val and test keep all ``length`` scenes so that
                evaluations stay comparable.
            transforms: Function applied to each sample dictionary.

        Raises:
            ValueError: If an argument is out of range or a band is unknown.
        """
        if task not in TASK_CLASSES:
            raise ValueError(f"task must be one of {tuple(TASK_CLASSES)}, got {task!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if not (isinstance(label_fraction, int | float) and 0 < label_fraction <= 1):
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
        super().__init__(length, size, looks, bands, seed, transforms)
        self.task = task
        self.split = split
        self.label_fraction = label_fraction
        if split == "train":
            self.length = max(1, round(label_fraction * length))
        self.classes = list(TASK_CLASSES[task])
        self.num_classes = len(self.classes)
        if task == "landcover":
            colors = list(LANDCOVER_COLORS)
        else:
            positive = LandCover.WATER if task == "water" else LandCover.ROAD
            colors = ["#d9d9d9", LANDCOVER_COLORS[positive]]
        self.colors = colors
        self.cmap = ListedColormap(colors)

    def scene_seed(self, index: int) -> int:
        """Return the generator seed of a sample.

        Args:
            index: Sample index in ``[0, len(self))``.

        Returns:
            ``SEGMENTATION_SEED_OFFSET + 3 * (seed + index) + split number``.
        """
        return SEGMENTATION_SEED_OFFSET + 3 * (self.seed + index) + _SPLITS.index(self.split)

    def __getitem__(self, index: int) -> Sample:
        """Generate a sample.

        Args:
            index: Sample index.

        Returns:
            ``{"image": float32 [C, size, size] in dB, "mask": int64 [size, size]}``.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        scene = self._scene(index)
        landcover = scene.landcover
        if self.task == "water":
            mask = (landcover == LandCover.WATER).long()
        elif self.task == "roads":
            mask = (landcover == LandCover.ROAD).long()
        else:
            mask = landcover
        sample: Sample = {"image": scene.image[self._band_indices], "mask": mask}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot the image, the mask and, if the sample has one, the prediction.

        Args:
            sample: A sample from :meth:`__getitem__`, optionally with a
                ``"prediction"`` ``[H, W]`` of class indices.
            show_titles: Whether to title the panels.
            suptitle: Optional figure title.

        Returns:
            The figure, with a legend of the class colours.
        """
        image, title = self._display(sample["image"])
        panels = [("Mask", sample["mask"])]
        if "prediction" in sample:
            panels.append(("Prediction", sample["prediction"]))
        fig, axs = plt.subplots(1, 1 + len(panels), figsize=(4 * (1 + len(panels)), 4.8))
        axs[0].imshow(image, cmap="gray", interpolation="none")
        if show_titles:
            axs[0].set_title(title)
        for ax, (name, labels) in zip(axs[1:], panels, strict=True):
            ax.imshow(
                labels.detach().cpu().numpy().squeeze(),
                cmap=self.cmap,
                vmin=0,
                vmax=self.num_classes - 1,
                interpolation="none",
            )
            if show_titles:
                ax.set_title(name)
        for ax in axs:
            ax.axis("off")
        handles = [
            Patch(facecolor=color, edgecolor="black", label=name)
            for name, color in zip(self.classes, self.colors, strict=True)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
        if suptitle is not None:
            fig.suptitle(suptitle)
        return fig

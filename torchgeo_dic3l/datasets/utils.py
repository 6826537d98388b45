"""Helpers shared by the SAR datasets, in the place TorchGeo keeps its own."""

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import torch
from matplotlib.figure import Figure
from numpy.typing import NDArray
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from torch import Tensor

from ..transforms import power_to_db, robust_range

#: What the values of a SAR raster are: linear power (intensity, sigma0), amplitude,
#: decibels, or raw digital numbers (``"dn"``, for example 8-bit quick-looks).
SARUnits = Literal["db", "power", "amplitude", "dn"]


def open_raster(source: str | MemoryFile) -> rasterio.DatasetReader:
    """Open a raster quietly, able to find the ENVI headers of raw files.

    PNG chips, PolSARpro exports and label maps carry no georeferencing and only their
    pixel grid matters here, so rasterio's warning about that is suppressed.

    Args:
        source: File name, or file contents already in memory.

    Returns:
        An open rasterio dataset.
    """
    # TorchGeo's CLI sets GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR for cloud reads, which
    # hides the ENVI ``.hdr`` sidecars of raw files; header discovery needs the listing.
    with warnings.catch_warnings(), rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return source.open() if isinstance(source, MemoryFile) else rasterio.open(source)


def to_working_scale(image: Tensor, units: SARUnits) -> Tensor:
    """Convert valid SAR values to the scale the models see.

    Args:
        image: Values in ``units``, without invalid pixels.
        units: ``"power"`` and ``"amplitude"`` become dB; ``"db"`` and ``"dn"`` are kept.

    Returns:
        The values in dB, or as given for ``"db"`` and ``"dn"``.
    """
    if units == "power":
        return power_to_db(image)
    if units == "amplitude":
        return power_to_db(image.square())
    return image


def sar_display(
    image: Tensor | NDArray[np.floating[Any]], names: Sequence[str] | None = None
) -> tuple[NDArray[np.float32], str]:
    """A displayable picture of a SAR image: a per-layer 2-98 % percentile stretch.

    One channel is shown in grey. Two channels become the false colour (c0, c1,
    c0 - c1), for example (VV, VH, VV - VH); the difference is the polarization ratio
    when the input is in dB. Three or more channels show the first three as red,
    green and blue. Non-finite pixels do not move the stretch.

    Args:
        image: ``[C, H, W]`` image, typically in dB.
        names: Channel names for the caption; ``channel 1``, ... if None.

    Returns:
        A ``[H, W]`` or ``[H, W, 3]`` array in [0, 1] and a caption naming what its
        layers show.

    Raises:
        ValueError: If ``image`` is not ``[C, H, W]`` or ``names`` does not give one
            name per channel.
    """
    bands = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image)
    bands = bands.detach().float().cpu()
    if bands.dim() != 3:
        raise ValueError(f"expected a [C, H, W] image, got shape {tuple(bands.shape)}")
    if names is None:
        names = [f"channel {index + 1}" for index in range(bands.shape[0])]
    elif len(names) != bands.shape[0]:
        raise ValueError(f"got {len(names)} channel name(s) for {bands.shape[0]} channel(s)")
    if bands.shape[0] == 2:
        layers = torch.stack([bands[0], bands[1], bands[0] - bands[1]])
        caption = f"{names[0]}, {names[1]}, {names[0]}-{names[1]}"
    else:
        layers = bands[:3]
        caption = ", ".join(names[:3])
    lows, highs = robust_range(layers, 0.02, 0.98)
    low = torch.tensor(lows).view(-1, 1, 1)
    high = torch.tensor(highs).view(-1, 1, 1)
    stretched = ((layers - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)
    stretched = torch.nan_to_num(stretched, nan=0.0)
    picture = stretched[0] if stretched.shape[0] == 1 else stretched.permute(1, 2, 0)
    return picture.numpy(), caption


def plot_sar_image(
    image: Tensor,
    names: Sequence[str] | None = None,
    title: str | None = None,
    suptitle: str | None = None,
) -> Figure:
    """One panel of a SAR image through :func:`sar_display`, as the datasets' ``plot``.

    Args:
        image: ``[C, H, W]`` image, typically in dB.
        names: Channel names for the caption.
        title: Panel title with ``{}`` where the caption goes; no title if None.
        suptitle: Optional figure title.

    Returns:
        The figure.
    """
    picture, caption = sar_display(image, names)
    fig, ax = plt.subplots(1, 1, figsize=(4, 4))
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    ax.axis("off")
    if title is not None:
        ax.set_title(title.format(caption))
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig

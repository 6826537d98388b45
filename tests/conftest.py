"""Shared fixtures: paths to the real SAR data beside the repository, when present."""

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import rasterio

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def volkov_chips() -> Path:
    """Folder of the 100 real Sentinel-1 VH chips, or skip."""
    path = SHARED_DATA / "s1_vh_volkov" / "sar"
    if not path.is_dir():
        pytest.skip(f"real Sentinel-1 chips not found at {path} (../shared is absent)")
    return path


@pytest.fixture
def polsar_sf() -> Path:
    """Folder of the AIRSAR San Francisco scene (T3 matrix and labels), or skip."""
    path = SHARED_DATA / "polsar_sf_airsar"
    if not path.is_dir():
        pytest.skip(f"AIRSAR San Francisco scene not found at {path} (../shared is absent)")
    return path


def _write_geotiff(path: Path, array: np.ndarray) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[-2],
        width=array.shape[-1],
        count=array.shape[0],
        dtype=array.dtype,
        transform=rasterio.transform.from_origin(0, array.shape[-2], 1, 1),
    ) as dst:
        dst.write(array)
    return str(path)


@pytest.fixture
def write_geotiff() -> Callable[[Path, np.ndarray], str]:
    """Write a ``[bands, H, W]`` array as a GeoTIFF with unit pixels; return its path."""
    return _write_geotiff

"""Shared fixtures: paths to the real SAR data beside the repository, when present."""

from pathlib import Path

import matplotlib
import pytest

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

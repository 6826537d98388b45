"""SAR radiometry transforms and batch adapters."""

from .batch import ImageOnly
from .radiometry import (
    RangeNormalize,
    Speckle,
    db_to_power,
    gamma_speckle,
    power_to_db,
    robust_range,
    sanitize_db,
    sanitize_power,
)

__all__ = [
    "ImageOnly",
    "RangeNormalize",
    "Speckle",
    "db_to_power",
    "gamma_speckle",
    "power_to_db",
    "robust_range",
    "sanitize_db",
    "sanitize_power",
]

"""SAR radiometry transforms and batch adapters."""

from .batch import ImageOnly
from .radiometry import (
    POLARIZATION_DB_RANGES,
    RangeNormalize,
    Speckle,
    db_to_power,
    default_db_ranges,
    gamma_speckle,
    invalid_pixels,
    power_to_db,
    robust_range,
    sanitize_db,
    sanitize_power,
    validate_bands,
)

__all__ = [
    "POLARIZATION_DB_RANGES",
    "ImageOnly",
    "RangeNormalize",
    "Speckle",
    "db_to_power",
    "default_db_ranges",
    "gamma_speckle",
    "invalid_pixels",
    "power_to_db",
    "robust_range",
    "sanitize_db",
    "sanitize_power",
    "validate_bands",
]

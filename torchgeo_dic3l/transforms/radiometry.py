"""SAR radiometry: decibels, invalid-pixel handling, normalization and speckle.

SAR intensities are heavy-tailed and multiplicative, so everything here works in
decibels (dB) or on unit-mean multiplicative noise rather than with RGB statistics.
"""

import functools
import operator
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Smallest linear power mapped to dB; keeps ``log10`` finite for zero intensities.
POWER_FLOOR = 1e-10

#: Default normalization range (low, high) in dB of each polarization: the bulk of
#: C-band land and water backscatter, speckle included.
POLARIZATION_DB_RANGES: dict[str, tuple[float, float]] = {
    "VV": (-25.0, 0.0),
    "HH": (-25.0, 0.0),
    "VH": (-32.0, -5.0),
    "HV": (-32.0, -5.0),
}


def default_db_ranges(bands: Sequence[str]) -> tuple[list[float], list[float]]:
    """Look up default dB normalization ranges for polarization bands.

    Args:
        bands: Band names such as ``"VV"`` and ``"VH"`` (case-insensitive).

    Returns:
        Per-band lower and upper bounds.

    Raises:
        ValueError: If a band has no default range.
    """
    unknown = [band for band in bands if band.upper() not in POLARIZATION_DB_RANGES]
    if unknown:
        raise ValueError(
            f"no default dB range for band(s) {unknown} (defaults exist for "
            f"{', '.join(POLARIZATION_DB_RANGES)}); pass low= and high= with one value per band"
        )
    ranges = [POLARIZATION_DB_RANGES[band.upper()] for band in bands]
    return [low for low, _ in ranges], [high for _, high in ranges]


def validate_bands(
    bands: Sequence[str], allowed: Sequence[str] = tuple(POLARIZATION_DB_RANGES)
) -> tuple[str, ...]:
    """Check a selection of polarization bands and return it in upper case.

    Args:
        bands: Names from ``allowed`` (any case, no repeats), in the order wanted in
            the image; a single string is taken as one band.
        allowed: The bands that exist, upper case (every polarization with a
            default dB range if not given).

    Returns:
        The band names, upper case.

    Raises:
        ValueError: If the selection is empty, repeats a band or names one that is
            not in ``allowed``.
    """
    choices = tuple(allowed)
    if isinstance(bands, str):
        bands = (bands,)
    names = tuple(str(name).upper() for name in bands)
    if not names:
        raise ValueError(f"bands must name at least one of {choices}, got none")
    unknown = [name for name, upper in zip(bands, names, strict=True) if upper not in choices]
    if unknown:
        raise ValueError(f"unknown band(s) {unknown} in bands; choose from {choices}")
    if len(set(names)) != len(names):
        raise ValueError(f"bands must not repeat a band, got {list(bands)}")
    return names


def power_to_db(power: Tensor, floor: float = POWER_FLOOR) -> Tensor:
    """Convert linear power (intensity, sigma0) to decibels.

    Args:
        power: Non-negative linear power.
        floor: Values below this are clamped first so that zeros give a finite dB.

    Returns:
        ``10 * log10(max(power, floor))``.
    """
    return 10.0 * torch.log10(power.clamp_min(floor))


def db_to_power(db: Tensor) -> Tensor:
    """Convert decibels to linear power.

    Args:
        db: Values in dB.

    Returns:
        ``10 ** (db / 10)``.
    """
    return torch.pow(10.0, db / 10.0)


def invalid_pixels(image: Tensor, nodata: float | None, negative: bool) -> dict[str, Tensor]:
    """Find each kind of invalid pixel, every pixel counted under one kind only.

    Args:
        image: Float tensor of SAR values.
        nodata: Value that marks missing pixels, if any.
        negative: Whether negative values are invalid (linear power and amplitude).

    Returns:
        Boolean masks of the NaN, infinite (either sign), ``nodata`` and negative
        pixels, by kind; kinds that cannot occur are left out.
    """
    finite = torch.isfinite(image)
    kinds: dict[str, Tensor] = {}
    # Clean images are the rule: one test over the image, then only what applies.
    if not finite.all():
        kinds["NaN"] = torch.isnan(image)
        kinds["infinite"] = ~finite & ~kinds["NaN"]
    if nodata is not None:
        kinds["nodata"] = finite & (image == nodata)
        finite = finite & ~kinds["nodata"]
    if negative:
        kinds["negative"] = finite & (image < 0)
    return kinds


def sanitize_power(
    power: Tensor,
    nodata: float | None = None,
    floor: float = POWER_FLOOR,
    source: str = "input",
) -> tuple[Tensor, Tensor]:
    """Replace invalid linear-power pixels and report how many there were.

    NaN, infinite, negative and ``nodata`` pixels are invalid: they are set to
    ``floor`` and flagged in the returned mask. Zeros are valid but clamped to
    ``floor`` so that a later dB conversion stays finite. A warning names the
    source and counts each kind of invalid pixel.

    Args:
        power: Linear power, any shape.
        nodata: Value that marks missing pixels, if the source has one.
        floor: Replacement for invalid and zero pixels.
        source: Name of the file or band, used in the warning.

    Returns:
        The cleaned tensor and a boolean mask that is True for valid pixels.
    """
    kinds = invalid_pixels(power, nodata, negative=True)
    invalid = functools.reduce(operator.or_, kinds.values())
    counts = {
        "NaN/inf": sum(int(kinds[kind].sum()) for kind in ("NaN", "infinite") if kind in kinds),
        "negative": int(kinds["negative"].sum()),
        "nodata": int(kinds["nodata"].sum()) if "nodata" in kinds else 0,
    }
    if any(counts.values()):
        detail = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        warnings.warn(
            f"{source}: {int(invalid.sum())} of {power.numel()} pixels are invalid "
            f"({detail}); they were set to {floor:g} and masked.",
            stacklevel=2,
        )
    cleaned = torch.where(invalid, torch.full_like(power, floor), power.clamp_min(floor))
    return cleaned, ~invalid


def sanitize_db(
    db: Tensor, nodata: float | None = None, fill: float | None = None, source: str = "input"
) -> tuple[Tensor, Tensor]:
    """Replace invalid dB pixels (NaN, inf, ``nodata``) and report how many there were.

    Args:
        db: Values in dB, any shape.
        nodata: Value that marks missing pixels, if the source has one.
        fill: Replacement value; defaults to the minimum valid value (or 0 if none).
        source: Name of the file or band, used in the warning.

    Returns:
        The cleaned tensor and a boolean mask that is True for valid pixels.
    """
    invalid = ~torch.isfinite(db)
    if nodata is not None:
        invalid |= db == nodata
    n_invalid = int(invalid.sum())
    if n_invalid == 0:
        return db, ~invalid
    if fill is None:
        fill = float(db[~invalid].min()) if n_invalid < db.numel() else 0.0
    warnings.warn(
        f"{source}: {n_invalid} of {db.numel()} pixels are invalid (NaN, inf or "
        f"nodata); they were set to {fill:g} dB and masked.",
        stacklevel=2,
    )
    return torch.where(invalid, torch.full_like(db, fill), db), ~invalid


def robust_range(
    image: Tensor, low: float = 0.02, high: float = 0.98, max_samples: int = 1_000_000
) -> tuple[list[float], list[float]]:
    """Per-channel percentile range of a ``[C, H, W]`` or ``[N, C, H, W]`` tensor.

    Args:
        image: Image or batch of images, typically in dB.
        low: Lower quantile in [0, 1].
        high: Upper quantile in [0, 1], greater than ``low``.
        max_samples: Pixels per channel kept (evenly strided) to bound the cost.

    Returns:
        Lists of per-channel lower and upper bounds.

    Raises:
        ValueError: If the quantiles are out of order or outside [0, 1].
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {low}, {high}")
    channels = image.shape[-3]
    flat = image.transpose(0, -3).reshape(channels, -1) if image.dim() == 4 else image
    flat = flat.reshape(channels, -1).float()
    stride = max(1, flat.shape[1] // max_samples)
    sample = flat[:, ::stride]
    finite = [row[torch.isfinite(row)] for row in sample]
    lows = [float(torch.quantile(row, low)) for row in finite]
    highs = [float(torch.quantile(row, high)) for row in finite]
    return lows, highs


class RangeNormalize(nn.Module):
    """Clip each channel to a fixed ``[low, high]`` range and rescale it to [0, 1].

    Works on ``[C, H, W]`` or ``[B, C, H, W]`` tensors on any device. For SAR this is
    applied to dB values with fixed ranges (for example VV in [-25, 0] dB) or with
    ranges from :func:`robust_range`.
    """

    low: Tensor
    high: Tensor

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        """Initialize the transform.

        Args:
            low: Per-channel lower bound.
            high: Per-channel upper bound, each greater than its ``low``.

        Raises:
            ValueError: If the bounds differ in length or are not increasing.
        """
        super().__init__()
        if len(low) != len(high) or len(low) == 0:
            raise ValueError(
                f"low and high need one value per channel, got {len(low)} and {len(high)}"
            )
        for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if not hi > lo:
                raise ValueError(f"channel {i}: high ({hi}) must be greater than low ({lo})")
        self.register_buffer("low", torch.tensor(list(low), dtype=torch.float32))
        self.register_buffer("high", torch.tensor(list(high), dtype=torch.float32))

    def forward(self, image: Tensor) -> Tensor:
        """Normalize an image or a batch.

        Args:
            image: ``[C, H, W]`` or ``[B, C, H, W]`` tensor with C equal to the
                number of configured channels.

        Returns:
            The clipped and rescaled tensor, same shape.

        Raises:
            ValueError: If the channel count does not match.
        """
        channels = image.shape[-3]
        if channels != self.low.numel():
            raise ValueError(
                f"RangeNormalize was configured for {self.low.numel()} channel(s) "
                f"but the image has {channels}"
            )
        shape = (-1, 1, 1)
        low = self.low.to(image.dtype).view(shape)
        high = self.high.to(image.dtype).view(shape)
        return ((image - low) / (high - low)).clamp(0.0, 1.0)


def gamma_speckle(shape: torch.Size, looks: float, device: torch.device | None = None) -> Tensor:
    """Draw unit-mean Gamma noise, the intensity speckle of an L-look SAR image.

    Args:
        shape: Output shape.
        looks: Equivalent number of looks L (the Gamma shape); the variance is 1/L.
        device: Device of the result.

    Returns:
        Positive multiplicative noise with mean 1 and variance ``1 / looks``.

    Raises:
        ValueError: If ``looks`` is not positive.
    """
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    concentration = torch.full(shape, float(looks), device=device)
    return torch._standard_gamma(concentration) / looks


def checked_db_span(db_span: Sequence[float]) -> list[float]:
    """The dB widths of a range normalization, checked, as floats.

    Args:
        db_span: ``high - low`` per channel, or one value for all channels.

    Returns:
        The widths.

    Raises:
        ValueError: If there is none or a width is not positive.
    """
    if len(db_span) == 0 or min(db_span) <= 0:
        raise ValueError(f"db_span must hold positive dB widths, got {list(db_span)}")
    return [float(span) for span in db_span]


class Speckle(nn.Module):
    """Multiply linear power by unit-mean Gamma noise (an augmentation).

    With ``in_db=True`` the input is in dB, so the noise is added as
    ``10 log10(noise)``, which is the same multiplication in the linear domain. Inputs
    that are range-normalized dB values, ``(dB - low) / (high - low)``, pass the span
    ``high - low`` of each channel as ``db_span``: the noise is then added as
    ``10 log10(noise) / span``, still the exact multiplication of the linear power.
    """

    def __init__(
        self,
        looks: float = 4.0,
        p: float = 1.0,
        in_db: bool = True,
        db_span: Sequence[float] | None = None,
    ) -> None:
        """Initialize the augmentation.

        Args:
            looks: Equivalent number of looks L; smaller means stronger speckle.
            p: Probability that a given sample in a batch is speckled.
            in_db: Whether inputs are in dB (True) or linear power (False).
            db_span: With ``in_db``, the dB width of one input unit per channel
                (``high - low`` of a range normalization); None for plain dB.

        Raises:
            ValueError: If ``looks`` is not positive, ``p`` not in [0, 1], or a span
                not positive or given for linear inputs.
        """
        super().__init__()
        if looks <= 0:
            raise ValueError(f"looks must be positive, got {looks}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if db_span is not None and not in_db:
            raise ValueError("db_span applies to dB inputs only (in_db=True)")
        self.looks = looks
        self.p = p
        self.in_db = in_db
        self.db_span = None if db_span is None else checked_db_span(db_span)
        # A buffer, so that it moves with the module: building it from the list in
        # forward would copy it to the device at every call.
        self.span: Tensor | None
        span = None if db_span is None else torch.tensor(self.db_span).view(1, -1, 1, 1)
        self.register_buffer("span", span, persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        """Speckle an image ``[C, H, W]`` or a batch ``[B, C, H, W]``.

        Args:
            image: Input in dB (plain or range-normalized) or linear power.

        Returns:
            Speckled tensor of the same shape and dtype.

        Raises:
            ValueError: If ``db_span`` does not give one width per channel.
        """
        batch = image if image.dim() == 4 else image.unsqueeze(0)
        noise = gamma_speckle(batch.shape, self.looks, device=batch.device).to(batch.dtype)
        apply = torch.rand(batch.shape[0], 1, 1, 1, device=batch.device) < self.p
        if not self.in_db:
            out = torch.where(apply, batch * noise, batch)
        else:
            offset = power_to_db(noise)
            if self.span is not None:
                if self.span.shape[1] not in (1, batch.shape[1]):
                    raise ValueError(
                        f"db_span has {self.span.shape[1]} width(s) for {batch.shape[1]} "
                        "channel(s); give one per channel"
                    )
                # A no-op once the module sits on the batch's device.
                offset = offset / self.span.to(device=batch.device, dtype=batch.dtype)
            out = batch + apply * offset
        return out if image.dim() == 4 else out.squeeze(0)


def normalization_db_span(datamodule: object, option: str) -> list[float]:
    """``high - low`` per channel of a datamodule's ``RangeNormalize`` (in its ``aug``).

    Speckle on range-normalized dB needs this width to multiply the linear power.

    Args:
        datamodule: The datamodule of the fit.
        option: The option that gives the width instead, named in the error (e.g.
            ``"DI3CLTask: views.speckle_db_span"``).

    Returns:
        The dB width of each channel's normalization range.

    Raises:
        ValueError: If the datamodule's ``aug`` holds no ``RangeNormalize``.
    """
    aug = getattr(datamodule, "aug", None)
    if isinstance(aug, nn.Module):
        for module in aug.modules():
            if isinstance(module, RangeNormalize):
                return [float(v) for v in (module.high - module.low).tolist()]
    raise ValueError(
        f"speckle is on but the dB width of the normalization is unknown "
        f"({type(datamodule).__name__}.aug holds no RangeNormalize): pass {option}, one "
        "high - low per channel"
    )

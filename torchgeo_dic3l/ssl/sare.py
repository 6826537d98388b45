"""SARMAE's speckle-aware representation enhancement (SARE): speckle for the encoder only.

SARMAE (arXiv 2512.16635) shows its encoder a speckled copy of each image and asks it
to reconstruct the clean one, so that the representation learns to see through
speckle. Speckle multiplies the linear power ``P`` by noise ``n``; in dB that is the
offset ``10 log10(n)``, and on images range-normalized from dB,
``(dB - low) / (high - low)``, the offset ``10 log10(n) / span`` with ``span = high -
low`` per channel. That is what :class:`SpeckleAwareNoise` adds: the exact
multiplication of the linear power, never a multiplication of normalized values.

Two noise laws, both with a strength ``sigma`` drawn uniformly per image:

* ``"lognormal"`` (the authors' released default): ``ln n`` is Gaussian with standard
  deviation ``sigma`` and mean 0, so the dB offset is Gaussian with standard deviation
  ``10 sigma / ln 10`` (about 3.04 dB at the published maximum 0.7);
* ``"gamma"``: unit-mean Gamma noise with coefficient of variation ``2 sigma``, the
  released code's alternative; it is the intensity speckle of ``1 / (2 sigma)^2`` looks.
"""

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..transforms.radiometry import checked_db_span

#: Noise laws of :class:`SpeckleAwareNoise`.
NoiseLaw = Literal["lognormal", "gamma"]

#: dB per natural-log unit of power: ``10 log10(n) = DB_PER_NEPER * ln(n)``.
DB_PER_NEPER = 10.0 / math.log(10.0)


class SpeckleAwareNoise(nn.Module):
    """Multiplicative speckle on range-normalized dB images, for a fraction of them.

    Each image is noised with probability ``p``, with a strength ``sigma`` drawn
    uniformly from ``sigma_range``; every pixel and channel gets its own draw. The
    call returns the noised batch and which images were noised. Everything is batched
    on the input's device without host synchronization.
    """

    span: Tensor

    def __init__(
        self,
        law: NoiseLaw = "lognormal",
        sigma_range: tuple[float, float] = (0.0, 0.7),
        p: float = 0.5,
        db_span: Sequence[float] | None = None,
    ) -> None:
        """Initialize the noise.

        Args:
            law: ``"lognormal"`` or ``"gamma"`` (see the module docstring).
            sigma_range: Range of the per-image strength ``sigma``, ``0 <= min <= max``.
            p: Probability that an image is noised.
            db_span: dB width ``high - low`` of each channel's normalization (one value
                for all channels, or one per channel); needed before the first call
                (see :meth:`set_db_span`).

        Raises:
            ValueError: If an option is out of range; the message names it.
        """
        super().__init__()
        if law not in ("lognormal", "gamma"):
            raise ValueError(f"law must be 'lognormal' or 'gamma', got {law!r}")
        low, high = (float(v) for v in sigma_range)
        if not 0.0 <= low <= high:
            raise ValueError(
                f"sigma_range must be (min, max) with 0 <= min <= max, got {sigma_range}"
            )
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p}")
        self.law = law
        self.sigma_range = (low, high)
        self.p = p
        self.db_span: list[float] | None = None
        self.register_buffer("span", torch.ones(0), persistent=False)
        if db_span is not None:
            self.set_db_span(db_span)

    def set_db_span(self, db_span: Sequence[float]) -> None:
        """Set the dB width of each channel's normalization range.

        Args:
            db_span: ``high - low`` in dB per channel, or one value for all channels.

        Raises:
            ValueError: If it is empty or a width is not positive.
        """
        self.db_span = checked_db_span(db_span)
        device = self.span.device
        self.span = torch.tensor(self.db_span, device=device).view(1, -1, 1, 1)

    def db_offsets(self, shape: torch.Size, sigma: Tensor) -> Tensor:
        """Draw ``10 log10(n)`` for noise of per-image strength ``sigma``.

        Args:
            shape: ``[B, C, H, W]``.
            sigma: ``[B]`` strengths.

        Returns:
            ``[B, C, H, W]`` dB offsets.
        """
        strength = sigma.view(-1, 1, 1, 1)
        if self.law == "lognormal":
            normal = torch.randn(shape, device=sigma.device, dtype=sigma.dtype)
            return DB_PER_NEPER * strength * normal
        # CV 2 sigma means 1 / (2 sigma)^2 looks; sigma = 0 is no noise (infinite looks):
        # a floor keeps the Gamma finite and those images get exactly no offset.
        looks = (2 * strength).clamp(min=1e-3).pow(-2).expand(shape)
        noise = torch.distributions.Gamma(looks, looks).sample()
        log_noise = noise.clamp(min=torch.finfo(noise.dtype).tiny).log()
        return torch.where(strength > 0, DB_PER_NEPER * log_noise, 0.0)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Noise a batch.

        Args:
            images: ``[B, C, H, W]`` range-normalized dB images.

        Returns:
            The noised batch (not clamped: speckle can leave the normalization range)
            and the ``[B]`` boolean mask of the images that were noised.

        Raises:
            ValueError: If the dB span is unset or does not match the channels.
        """
        if self.db_span is None:
            raise ValueError(
                "SpeckleAwareNoise needs the dB width of each channel's normalization "
                "range: pass db_span (high - low of the datamodule's RangeNormalize)"
            )
        if len(self.db_span) not in (1, images.shape[1]):
            raise ValueError(
                f"db_span has {len(self.db_span)} width(s) but the images have "
                f"{images.shape[1]} channel(s)"
            )
        batch = images.shape[0]
        low, high = self.sigma_range
        sigma = torch.empty(batch, device=images.device, dtype=images.dtype).uniform_(low, high)
        noised = torch.rand(batch, device=images.device) < self.p
        offsets = self.db_offsets(images.shape, sigma) / self.span.to(images.dtype)
        return torch.where(noised.view(-1, 1, 1, 1), images + offsets, images), noised

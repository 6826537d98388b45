"""A procedural, seeded Sentinel-1-like SAR world: the scene simulator.

Every scene is drawn from one integer seed, so data sets of any size exist without
files: scene ``s`` is identical on every call and independent of the global random
state. A scene has two channels, VV and VH backscatter in dB, and a land-cover map
with the classes of :data:`LANDCOVER_CLASSES`. The datasets that serve these scenes
are in :mod:`torchgeo_dic3l.datasets.synthetic`.

How a scene is built:

1. **Layout.** Low-pass filtered noise (a few octaves, FFT-filtered on a coarse grid
   and upsampled) is thresholded at per-scene quantiles into forest and open land
   (bare soil). An agricultural zone is cut into rectangular parcels (strips of equal
   width, each cut into fields of its own length, the grid rotated at random); most
   parcels are crops, some are fallow (bare soil). Urban zones become a grid of blocks
   separated by 2-3 px streets (labelled road). Lakes come from another thresholded
   field and a meandering river band is added in some scenes. Roads are 2-4 px wide
   straight or polyline segments drawn on top of everything but water.
2. **Radiometry.** Each class has a C-band mean backscatter for VV and VH (see
   :data:`CLASS_BACKSCATTER`), a spread between regions (a smooth offset field, or one
   offset per parcel or urban block) and a fine spatial texture, both in dB. Urban
   blocks get bright double-bounce returns: isolated strong points and a bright line
   on the block edge nearest to the streets, mostly in VV; the diffuse urban level is
   lowered by their average so the class mean stays at its design value.
3. **Speckle.** Fully developed speckle: the linear power is multiplied by unit-mean
   Gamma noise with shape ``looks`` (L), so a homogeneous region has a coefficient of
   variation of ``1 / sqrt(L)`` in linear power. Adding ``10 log10`` of the noise in
   dB is the same multiplication.

The class means are rough, typical values for Sentinel-1 IW GRD at mid incidence
(about 30-45 degrees), from general experience with such imagery rather than from one
measured source: calm open water is the darkest surface (specular reflection away
from the sensor; VH near the instrument noise floor), roads and smooth bare fields are
dark, crops sit in the middle and vary with crop type and growth stage, forest is
bright and fairly uniform from volume scattering (so comparatively bright in VH), and
built-up areas are brightest through dihedral (double-bounce) wall-ground reflections,
which are mainly co-polarised. What is left out on purpose: incidence-angle trends,
thermal noise floor, wind-roughened water, layover and shadow, and speckle correlation
between neighbouring pixels.
"""

import functools
import itertools
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from torch import Tensor

from ..transforms import power_to_db


class LandCover(IntEnum):
    """Land-cover class indices of the synthetic world."""

    WATER = 0
    ROAD = 1
    URBAN = 2
    FOREST = 3
    CROPS = 4
    BARE_SOIL = 5


#: Land-cover class names, in the order of their indices in the masks.
LANDCOVER_CLASSES: tuple[str, ...] = ("water", "road", "urban", "forest", "crops", "bare soil")

#: Polarisation channels of a generated scene, in the order of ``image``.
POLARIZATIONS: tuple[str, ...] = ("VV", "VH")


@dataclass(frozen=True)
class ClassBackscatter:
    """Backscatter design of one land-cover class, all in dB.

    Attributes:
        vv: Mean VV backscatter.
        vh: Mean VH backscatter.
        region_std: Spread of the level between regions, parcels or urban blocks.
        texture_std: Spread of the fine within-region texture (about 2 px correlation).
    """

    vv: float
    vh: float
    region_std: float
    texture_std: float


#: Backscatter design per class, indexed by :class:`LandCover`. The total spread of
#: the speckle-free image within a class, ``hypot(region_std, texture_std)``, is
#: 1-2 dB.
CLASS_BACKSCATTER: tuple[ClassBackscatter, ...] = (
    ClassBackscatter(vv=-20.0, vh=-27.0, region_std=0.8, texture_std=0.5),  # water
    ClassBackscatter(vv=-17.0, vh=-25.0, region_std=0.8, texture_std=0.8),  # road
    ClassBackscatter(vv=-4.0, vh=-12.0, region_std=1.0, texture_std=1.5),  # urban
    ClassBackscatter(vv=-7.5, vh=-13.5, region_std=0.6, texture_std=1.0),  # forest
    ClassBackscatter(vv=-11.0, vh=-17.0, region_std=1.5, texture_std=0.8),  # crops
    ClassBackscatter(vv=-13.0, vh=-21.0, region_std=1.2, texture_std=0.8),  # bare soil
)

_MEAN_VV = np.array([c.vv for c in CLASS_BACKSCATTER], dtype=np.float32)
_MEAN_VH = np.array([c.vh for c in CLASS_BACKSCATTER], dtype=np.float32)
_REGION_STD = np.array([c.region_std for c in CLASS_BACKSCATTER], dtype=np.float32)
_TEXTURE_STD = np.array([c.texture_std for c in CLASS_BACKSCATTER], dtype=np.float32)

# Correlation of the VH with the VV offsets/texture: the same structures scatter in
# both channels, but the cross-polarised share varies with vegetation and geometry.
_VH_CORRELATION = 0.8

# Coarse grid step (px) of the smooth layout fields, and their Gaussian scales (px):
# forest/open land, agricultural zone, urban zone, lakes, and two region-offset fields.
_COARSE_STEP = 4
_FIELD_SCALES: tuple[float, ...] = (24.0, 40.0, 32.0, 20.0, 16.0, 16.0)

# Double bounce: fraction of block pixels that are point scatterers, their VV boost
# range (dB), the VH share of the boost, and the boost of the block edge line.
_POINT_FRACTION = 0.03
_POINT_BOOST_DB = (6.0, 14.0)
_EDGE_BOOST_DB = 5.0
_VH_BOOST_SHARE = 0.5

_MIN_SIZE = 32


@dataclass(frozen=True)
class SyntheticScene:
    """One generated scene.

    Attributes:
        image: Speckled backscatter in dB, float32 ``[2, H, W]`` (VV, VH).
        clean: The same backscatter before speckle, float32 ``[2, H, W]`` in dB.
        landcover: Class index per pixel (:class:`LandCover`), int64 ``[H, W]``.
    """

    image: Tensor
    clean: Tensor
    landcover: Tensor


def simulate_scene(seed: int, size: int = 256, looks: float = 4.0) -> SyntheticScene:
    """Generate one scene with its speckle-free backscatter and land-cover map.

    Args:
        seed: Non-negative scene seed; the same seed gives identical tensors.
        size: Height and width in pixels, at least 32.
        looks: Equivalent number of looks L of the speckle (Gamma shape, > 0);
            ``math.inf`` gives a speckle-free image.

    Returns:
        The scene.

    Raises:
        ValueError: If an argument is out of range.
    """
    check_scene_args(seed, size, looks)
    rng = np.random.default_rng(seed)
    fields, coarse = _smooth_fields(rng, size)
    landcover, offsets = _layout(rng, fields, coarse, size)
    clean = _backscatter(rng, landcover, offsets, fields[4:6], size)
    clean_t = torch.from_numpy(clean)
    if math.isinf(looks):
        image = clean_t.clone()
    else:
        gamma = rng.standard_gamma(looks, size=clean.shape, dtype=np.float32)
        image = clean_t + power_to_db(torch.from_numpy(gamma / np.float32(looks)))
    return SyntheticScene(
        image=image, clean=clean_t, landcover=torch.from_numpy(landcover.astype(np.int64))
    )


def check_scene_args(seed: int, size: int, looks: float) -> None:
    """Validate the scene arguments shared by the generator and the datasets.

    Raises:
        ValueError: If an argument is out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer >= {_MIN_SIZE} pixels, got {size!r}")
    if not (isinstance(looks, int | float) and looks > 0) or math.isnan(looks):
        raise ValueError(f"looks must be a positive number (or math.inf), got {looks!r}")


@functools.lru_cache(maxsize=8)
def _spectral_filters(n: int) -> np.ndarray:
    """Half-spectrum low-pass filters of the layout fields on an ``n x n`` coarse grid.

    Each filter sums three Gaussian octaves (scale, scale/2, scale/4 with weights 1,
    1/2, 1/4), each octave scaled to unit output variance for white noise, so that a
    field has large blobs with rougher edges.
    """
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    # Squared frequency in cycles per full-resolution pixel.
    f2 = (fy**2 + fx**2) / _COARSE_STEP**2
    filters = np.zeros((len(_FIELD_SCALES), n, n // 2 + 1))
    for i, scale in enumerate(_FIELD_SCALES):
        for octave in range(3):
            sigma = scale / 2**octave
            gain = np.exp(-2.0 * np.pi**2 * f2 * sigma**2)
            filters[i] += gain / (2**octave * np.sqrt(np.mean(gain**2)))
    return filters


def _upsample(coarse: np.ndarray, factor: int, size: int) -> np.ndarray:
    """Bilinearly upsample ``[K, n, n]`` fields by ``factor`` and crop to ``size``."""
    fine = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], scale_factor=factor, mode="bilinear", align_corners=False
    )
    return fine[0, :, :size, :size].numpy()


def _smooth_fields(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the smooth, zero-mean, unit-variance layout fields.

    Returns:
        The fields at full resolution ``[6, size, size]`` and on the coarse grid.
    """
    n = -(-size // _COARSE_STEP)
    noise = rng.standard_normal((len(_FIELD_SCALES), n, n), dtype=np.float32)
    coarse = np.fft.irfft2(np.fft.rfft2(noise) * _spectral_filters(n), s=(n, n))
    coarse -= coarse.mean(axis=(1, 2), keepdims=True)
    coarse /= coarse.std(axis=(1, 2), keepdims=True)
    coarse = coarse.astype(np.float32)
    return _upsample(coarse, _COARSE_STEP, size), coarse


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw two unit-variance texture fields with about 2 px correlation length."""
    n = -(-size // 2)
    noise = rng.standard_normal((2, n, n), dtype=np.float32)
    # Bilinear x2 upsampling (align_corners=False) weights each output pixel by
    # (3/4, 1/4) per axis, so its variance is (9/16 + 1/16) ** 2 = 0.625 ** 2.
    return _upsample(noise, 2, size) / np.float32(0.625)


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column (x) and row (y) coordinates of every pixel, float32 ``[size, size]``."""
    axis = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return x, y


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) a direction at ``angle`` radians."""
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return x * c + y * s, y * c - x * s


def _quantile_mask(field: np.ndarray, coarse: np.ndarray, fraction: float) -> np.ndarray:
    """Pixels where ``field`` is in its top ``fraction`` (threshold from the coarse grid)."""
    if fraction <= 0:
        return np.zeros(field.shape, dtype=bool)
    return field > np.quantile(coarse, 1.0 - fraction)


@dataclass
class _Offsets:
    """Per-pixel backscatter offsets (dB) on some pixels of a scene.

    Attributes:
        index: Flat pixel indices the offsets belong to.
        vv: VV offset of each of those pixels.
        vh: VH offset of each of those pixels.
        additive: Add to the region level (True) or replace it (False).
    """

    index: np.ndarray
    vv: np.ndarray
    vh: np.ndarray
    additive: bool = False

    def subset(self, keep: np.ndarray) -> "_Offsets":
        """The offsets of the pixels where ``keep`` is True."""
        return _Offsets(self.index[keep], self.vv[keep], self.vh[keep], self.additive)


def _correlated_offsets(
    rng: np.random.Generator, std: np.ndarray | float, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` VV and VH offsets (dB) with correlation :data:`_VH_CORRELATION`."""
    a = rng.standard_normal(count).astype(np.float32)
    b = rng.standard_normal(count).astype(np.float32)
    other = math.sqrt(1.0 - _VH_CORRELATION**2)
    return std * a, std * (_VH_CORRELATION * a + other * b)


def _parcels(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the given pixels into rectangular parcels, each crops or fallow.

    Returns:
        Per pixel: whether it is fallow (bare soil), and its parcel's VV and VH offsets.
    """
    u, v = _rotate(x, y, rng.uniform(0.0, math.pi))
    width = rng.uniform(14.0, 36.0)
    strip = ((u - u.min()) / np.float32(width)).astype(np.int64)
    strips = int(strip.max()) + 1
    lengths = rng.uniform(12.0, 60.0, strips).astype(np.float32)
    shifts = rng.uniform(0.0, 1.0, strips).astype(np.float32) * lengths
    cell = ((v - v.min() + shifts[strip]) / lengths[strip]).astype(np.int64)
    cells = int(cell.max()) + 1
    parcel = strip * cells + cell
    count = strips * cells
    fallow = rng.random(count) < 0.2
    std = np.where(
        fallow,
        CLASS_BACKSCATTER[LandCover.BARE_SOIL].region_std,
        CLASS_BACKSCATTER[LandCover.CROPS].region_std,
    ).astype(np.float32)
    vv, vh = _correlated_offsets(rng, std, count)
    return fallow[parcel], vv[parcel], vh[parcel]


def _urban_blocks(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lay a rotated street grid over the given pixels.

    Returns:
        Per pixel: whether it is a street, whether it is on the bright block edge
        next to a street, and its block VV and VH offsets.
    """
    u, v = _rotate(x, y, rng.uniform(0.0, math.pi / 2))
    pitch_u, pitch_v = rng.uniform(12.0, 26.0, 2).astype(np.float32)
    street_width = np.float32(rng.integers(2, 4))
    u = u + np.float32(rng.uniform(0.0, pitch_u))
    v = v + np.float32(rng.uniform(0.0, pitch_v))
    in_u, in_v = np.mod(u, pitch_u), np.mod(v, pitch_v)
    street = (in_u < street_width) | (in_v < street_width)
    edge = ~street & (in_u < street_width + 1)
    block_u = np.floor(u / pitch_u).astype(np.int64)
    block_v = np.floor(v / pitch_v).astype(np.int64)
    block_u -= block_u.min()
    block_v -= block_v.min()
    rows = int(block_v.max()) + 1
    block = block_u * rows + block_v
    vv, vh = _correlated_offsets(
        rng, CLASS_BACKSCATTER[LandCover.URBAN].region_std, int(block.max()) + 1
    )
    return street, edge, vv[block], vh[block]


def _river(rng: np.random.Generator, size: int) -> np.ndarray:
    """A meandering band of varying width (4-14 px) across the scene."""
    x, y = _pixel_grid(size)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    along, across = _rotate(x - np.float32(cx), y - np.float32(cy), rng.uniform(0.0, math.pi))
    amp1, amp2 = rng.uniform(5.0, 25.0), rng.uniform(1.0, 6.0)
    wave1, wave2, wave3 = rng.uniform(150.0, 400.0), rng.uniform(40.0, 100.0), rng.uniform(60, 200)
    phase = rng.uniform(0.0, 2 * math.pi, 3)
    tau = np.float32(2 * math.pi)
    centre = np.float32(amp1) * np.sin(along * (tau / np.float32(wave1)) + np.float32(phase[0]))
    centre += np.float32(amp2) * np.sin(along * (tau / np.float32(wave2)) + np.float32(phase[1]))
    half_width = np.float32(rng.uniform(2.0, 7.0)) * (
        1 + np.float32(0.3) * np.sin(along * (tau / np.float32(wave3)) + np.float32(phase[2]))
    )
    return np.abs(across - centre) < half_width


def _stamp_segment(mask: np.ndarray, start: np.ndarray, end: np.ndarray, width: int) -> None:
    """Set the pixels of a ``width`` px wide straight segment in ``mask`` (in place)."""
    direction = end - start
    length = float(np.hypot(*direction))
    if length == 0:
        return
    normal = np.array([-direction[1], direction[0]]) / length
    # Samples every 0.5 px along and across the segment, so no pixel is skipped.
    along = np.linspace(0.0, 1.0, math.ceil(2 * length) + 1)
    half = (width - 1) / 2
    across = np.linspace(-half, half, 2 * width)
    points = (
        start[None, None, :]
        + along[:, None, None] * direction[None, None, :]
        + across[None, :, None] * normal[None, None, :]
    ).reshape(-1, 2)
    cols, rows = np.floor(points + 0.5).astype(np.int64).T
    size = mask.shape[0]
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    mask[rows[inside], cols[inside]] = True


def _border_point(rng: np.random.Generator, side: int, size: int) -> np.ndarray:
    """A random (x, y) point just outside one side of the scene (0 top, 1 right, ...)."""
    t = rng.uniform(0.1, 0.9) * size
    outside = -3.0, size + 2.0
    return np.array(
        [
            (t, outside[0]),
            (outside[1], t),
            (t, outside[1]),
            (outside[0], t),
        ][side]
    )


def _roads(rng: np.random.Generator, size: int) -> np.ndarray:
    """One to four 2-4 px wide roads, each straight or a polyline crossing the scene."""
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(min(4, 1 + rng.poisson(1.2))):
        side = int(rng.integers(4))
        # Two thirds of the roads run to the opposite side, the others turn.
        other = (side + 2) % 4 if rng.random() < 2 / 3 else (side + rng.choice((1, 3))) % 4
        start, end = _border_point(rng, side, size), _border_point(rng, int(other), size)
        bends = np.sort(rng.uniform(0.2, 0.8, int(rng.integers(0, 3))))
        direction = end - start
        normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
        jitter = rng.normal(0.0, 0.08 * size, len(bends))
        middle = start + bends[:, None] * direction + jitter[:, None] * normal
        vertices = np.vstack([start, middle, end])
        width = int(rng.integers(2, 5))
        for a, b in itertools.pairwise(vertices):
            _stamp_segment(mask, a, b, width)
    return mask


def _layout(
    rng: np.random.Generator, fields: np.ndarray, coarse: np.ndarray, size: int
) -> tuple[np.ndarray, list[_Offsets]]:
    """Draw the land-cover map and the parcel, block and double-bounce offsets.

    Returns:
        Land cover (uint8 ``[size, size]``) and the offsets to apply, in order.
    """
    x, y = (grid.ravel() for grid in _pixel_grid(size))
    landcover = np.full(size * size, LandCover.BARE_SOIL, dtype=np.uint8)
    forest = _quantile_mask(fields[0], coarse[0], rng.uniform(0.15, 0.45)).ravel()
    landcover[forest] = LandCover.FOREST

    agri = _quantile_mask(fields[1], coarse[1], rng.uniform(0.3, 0.75)).ravel()
    agri_index = np.flatnonzero(agri & ~forest)
    parcels = None
    if agri_index.size:
        fallow, vv, vh = _parcels(rng, x[agri_index], y[agri_index])
        landcover[agri_index] = np.where(fallow, LandCover.BARE_SOIL, LandCover.CROPS)
        parcels = _Offsets(agri_index, vv, vh)

    urban_fraction = rng.uniform(0.05, 0.25) if rng.random() < 0.7 else 0.0
    zone = np.flatnonzero(_quantile_mask(fields[2], coarse[2], urban_fraction))
    blocks, edge = None, np.zeros(0, dtype=bool)
    if zone.size:
        street, edge, vv, vh = _urban_blocks(rng, x[zone], y[zone])
        landcover[zone] = np.where(street, LandCover.ROAD, LandCover.URBAN)
        blocks = _Offsets(zone, vv, vh)

    lake_fraction = rng.uniform(0.02, 0.12) if rng.random() < 0.6 else 0.0
    water = _quantile_mask(fields[3], coarse[3], lake_fraction).ravel()
    if rng.random() < 0.5:
        water |= _river(rng, size).ravel()
    landcover[water] = LandCover.WATER
    landcover[_roads(rng, size).ravel() & ~water] = LandCover.ROAD

    # Water and roads overwrote some parcel and block pixels: their levels (and the
    # double-bounce returns) apply only where the class is still the parcel's or block's.
    offsets = []
    if parcels is not None:
        keep = np.isin(landcover[parcels.index], (LandCover.CROPS, LandCover.BARE_SOIL))
        offsets.append(parcels.subset(keep))
    if blocks is not None:
        keep = landcover[blocks.index] == LandCover.URBAN
        offsets.append(blocks.subset(keep))
        if keep.any():
            offsets.append(_double_bounce(rng, blocks.index[keep], edge[keep]))
    return landcover.reshape(size, size), offsets


def _double_bounce(rng: np.random.Generator, urban: np.ndarray, edge: np.ndarray) -> _Offsets:
    """Bright point and edge returns on urban pixels, minus their mean over the class.

    Args:
        rng: Random generator of the scene.
        urban: Flat indices of the urban (block) pixels.
        edge: Whether each of those pixels is on a block edge.

    Returns:
        Additive VV and VH offsets (dB) for the urban pixels.
    """
    vv = np.where(edge, np.float32(_EDGE_BOOST_DB), np.float32(0.0))
    points = rng.integers(0, urban.size, rng.binomial(urban.size, _POINT_FRACTION))
    vv[points] = rng.uniform(*_POINT_BOOST_DB, points.size).astype(np.float32)
    vv -= vv.mean()
    vh = np.float32(_VH_BOOST_SHARE) * vv
    return _Offsets(urban, vv, vh, additive=True)


def _backscatter(
    rng: np.random.Generator,
    landcover: np.ndarray,
    offsets: list[_Offsets],
    region: np.ndarray,
    size: int,
) -> np.ndarray:
    """Speckle-free VV and VH backscatter in dB, float32 ``[2, size, size]``.

    Args:
        rng: Random generator of the scene.
        landcover: Land-cover map, uint8 ``[size, size]``.
        offsets: Parcel and block levels, and double-bounce returns, applied in order.
        region: Two smooth unit-variance fields for the region offsets.
        size: Scene size in pixels.
    """
    texture = _texture(rng, size)
    other = np.float32(math.sqrt(1.0 - _VH_CORRELATION**2))
    rho = np.float32(_VH_CORRELATION)
    region_std = _REGION_STD[landcover]
    texture_std = _TEXTURE_STD[landcover]
    vv = region_std * region[0]
    vh = region_std * (rho * region[0] + other * region[1])
    for part in offsets:
        if part.additive:
            vv.ravel()[part.index] += part.vv
            vh.ravel()[part.index] += part.vh
        else:
            vv.ravel()[part.index] = part.vv
            vh.ravel()[part.index] = part.vh
    vv += _MEAN_VV[landcover] + texture_std * texture[0]
    vh += _MEAN_VH[landcover] + texture_std * (rho * texture[0] + other * texture[1])
    return np.stack([vv, vh])

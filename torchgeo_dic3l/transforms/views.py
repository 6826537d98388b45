"""Two augmented views of a batch with the geometry that links them to the source.

DI3CL (arXiv 2511.07808) contrasts two MoCo v2 views of each image and, for its
Dynamic Instance term, matches boxes between the views. That needs the exact crop,
flip and rotation of every view, so the augmentation here records them in a
:class:`ViewGeometry` and :func:`source_to_view` / :func:`view_to_source` map boxes
between source pixels and view pixels.

Coordinates are continuous with pixel edges on integers: pixel ``(i, j)`` covers
``[j, j + 1] x [i, i + 1]`` as ``(x, y)`` and a whole ``H x W`` image is the box
``(0, 0, W, H)``. A view is made by cropping the box ``crops[b]``, resizing it to
``size x size``, then flipping horizontally, flipping vertically and finally rotating
by ``rot90[b]`` quarter turns counter-clockwise (as :func:`torch.rot90` on dims
``(-2, -1)``), in that order.

Everything is batched on the input's device with no host synchronization (no
``.item()`` and no Python branch on tensor values), so it can run inside a training
step on the GPU.
"""

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from kornia.filters import filter2d_separable, get_gaussian_kernel1d
from torch import Tensor, nn
from torchvision.ops import roi_align

from .radiometry import Speckle

#: RandomResizedCrop draws this many (area, ratio) pairs before falling back to a centre crop.
CROP_ATTEMPTS = 10


@dataclass
class ViewGeometry:
    """Where each view of a batch came from in its source image.

    Attributes:
        crops: ``[B, 4]`` float crop boxes ``(x0, y0, x1, y1)`` in source pixels.
        hflip: ``[B]`` bool, view flipped left-right (applied first).
        vflip: ``[B]`` bool, view flipped upside down (applied second).
        rot90: ``[B]`` int64 quarter turns counter-clockwise in 0..3 (applied last).
        size: Side of the square views in pixels.
    """

    crops: Tensor
    hflip: Tensor
    vflip: Tensor
    rot90: Tensor
    size: int

    @classmethod
    def cat(cls, geometries: Sequence["ViewGeometry"]) -> "ViewGeometry":
        """Stack the views of several geometries into one batch, in order.

        Args:
            geometries: Geometries of views of the same size.

        Returns:
            The geometry of all their views.

        Raises:
            ValueError: If the geometries are empty or their view sizes differ.
        """
        sizes = {geometry.size for geometry in geometries}
        if len(sizes) != 1:
            raise ValueError(f"can only concatenate views of one size, got sizes {sorted(sizes)}")
        crops, hflip, vflip, rot90 = (
            torch.cat(parts) for parts in zip(*(g.tensors() for g in geometries), strict=True)
        )
        return cls(crops, hflip, vflip, rot90, sizes.pop())

    def __getitem__(self, index: slice | Tensor) -> "ViewGeometry":
        """The geometry of some of the views.

        Args:
            index: Rows to keep: a slice, or an index or boolean tensor over the batch.

        Returns:
            Their geometry.
        """
        return self._map(lambda tensor: tensor[index])

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The per-view tensors: crops, hflip, vflip and rot90.

        Returns:
            The four tensors, in field order.
        """
        return self.crops, self.hflip, self.vflip, self.rot90

    def _map(self, function: Callable[[Tensor], Tensor]) -> "ViewGeometry":
        """The geometry with ``function`` applied to each per-view tensor."""
        crops, hflip, vflip, rot90 = map(function, self.tensors())
        return ViewGeometry(crops, hflip, vflip, rot90, self.size)

    def to(self, device: torch.device | str) -> "ViewGeometry":
        """The same geometry with its tensors on ``device``.

        Args:
            device: Target device.

        Returns:
            The moved geometry.
        """
        return self._map(lambda tensor: tensor.to(device))

    def clone(self) -> "ViewGeometry":
        """A copy whose tensors share no memory with this geometry's.

        Returns:
            The copy.
        """
        return self._map(Tensor.clone)

    def copy_(self, other: "ViewGeometry") -> None:
        """Copy another geometry's tensors into this one's, in place.

        Args:
            other: Geometry of the same batch size and view size.

        Raises:
            ValueError: If the view sizes differ.
        """
        if other.size != self.size:
            raise ValueError(f"cannot copy views of size {other.size} into size {self.size}")
        for target, source in zip(self.tensors(), other.tensors(), strict=True):
            target.copy_(source)

    def source_to_view(self, boxes: Tensor) -> Tensor:
        """Map boxes from source pixels to view pixels; see :func:`source_to_view`.

        Args:
            boxes: ``[B, N, 4]`` boxes ``(x0, y0, x1, y1)`` in source pixels.

        Returns:
            ``[B, N, 4]`` boxes in view pixels.
        """
        return source_to_view(boxes, self)

    def view_to_source(self, boxes: Tensor) -> Tensor:
        """Map boxes from view pixels to source pixels; see :func:`view_to_source`.

        Args:
            boxes: ``[B, N, 4]`` boxes ``(x0, y0, x1, y1)`` in view pixels.

        Returns:
            ``[B, N, 4]`` boxes in source pixels.
        """
        return view_to_source(boxes, self)


@dataclass
class TwoViews:
    """Two augmented views of a batch and their geometries.

    Attributes:
        view1: ``[B, C, size, size]`` first view.
        view2: ``[B, C, size, size]`` second view.
        geom1: Geometry of the first view.
        geom2: Geometry of the second view.
    """

    view1: Tensor
    view2: Tensor
    geom1: ViewGeometry
    geom2: ViewGeometry


def _folded_flips(geometry: ViewGeometry) -> tuple[Tensor, Tensor, Tensor]:
    """Fold flips and quarter turns into a transpose followed by axis flips.

    ``rot90(v, 1) = transpose(v).flip(-2)`` and ``rot90(v, 3) = transpose(v).flip(-1)``,
    and a flip made before a transpose acts on the other axis after it, so
    "horizontal flip, vertical flip, then ``k`` turns" equals "transpose if ``k`` is
    odd, then flip x and/or y". Views and box mappings both use this, so they agree
    by construction.

    Args:
        geometry: Flips and turns of each view.

    Returns:
        ``[B]`` bool tensors: transpose, flip along x (columns), flip along y (rows).
    """
    hflip, vflip, turns = geometry.hflip, geometry.vflip, geometry.rot90
    odd = (turns % 2) == 1
    flip_x = torch.where(odd, vflip ^ (turns == 3), hflip ^ (turns == 2))
    flip_y = torch.where(odd, hflip ^ (turns == 1), vflip ^ (turns == 2))
    return odd, flip_x, flip_y


def _check_boxes(boxes: Tensor, geometry: ViewGeometry) -> None:
    """Raise if ``boxes`` is not ``[B, N, 4]`` with the geometry's batch size."""
    batch = geometry.crops.shape[0]
    if boxes.dim() != 3 or boxes.shape[0] != batch or boxes.shape[-1] != 4:
        raise ValueError(
            f"boxes must have shape [B, N, 4] with B={batch} (the geometry's batch), "
            f"got {list(boxes.shape)}"
        )


@functools.lru_cache(maxsize=8)
def _view_coordinate_tables(device: torch.device) -> tuple[Tensor, Tensor]:
    """Where each view coordinate of a box comes from, for every flip and turn.

    Rows are the 16 codes ``4 * rot90 + 2 * vflip + hflip``; columns the view
    coordinates ``(x0, y0, x1, y1)``. A transpose makes view x come from source y,
    and a mirrored axis (``v -> S - v``) swaps the lower and upper bound.

    Args:
        device: Device of the tables.

    Returns:
        ``[16, 4]`` int64 index of the source coordinate, and ``[16, 2, 4]`` float32
        mirror flag ``f`` (first row) and sign ``1 - 2 f`` of each view coordinate.
    """
    code = torch.arange(16, device="cpu")
    odd, flip_x, flip_y = _folded_flips(
        ViewGeometry(
            crops=torch.zeros(16, 4),
            hflip=code % 2 == 1,
            vflip=code // 2 % 2 == 1,
            rot90=code // 4,
            size=1,
        )
    )
    axis = torch.stack([odd, ~odd, odd, ~odd], dim=1).long()
    mirror = torch.stack([flip_x, flip_y, flip_x, flip_y], dim=1)
    upper = torch.tensor([False, False, True, True]) ^ mirror
    flags = torch.stack([mirror.float(), 1 - 2 * mirror.float()], dim=1)
    return (axis + 2 * upper.long()).to(device), flags.to(device)


def source_to_view(boxes: Tensor, geometry: ViewGeometry) -> Tensor:
    """Map boxes from source pixel coordinates to view pixel coordinates.

    Every view coordinate is one source coordinate, scaled into the crop and possibly
    mirrored, so the mapping is a per-view gather and one multiply-add, looked up in
    :func:`_view_coordinate_tables` (derived from :func:`_folded_flips`, as the views
    themselves are).

    Args:
        boxes: ``[B, N, 4]`` boxes ``(x0, y0, x1, y1)`` in source pixels.
        geometry: Geometry of the view.

    Returns:
        ``[B, N, 4]`` boxes in view pixels with ``x0 < x1`` and ``y0 < y1``.

    Raises:
        ValueError: If ``boxes`` does not have shape ``[B, N, 4]``.
    """
    _check_boxes(boxes, geometry)
    side = geometry.size
    sources, flags = _view_coordinate_tables(boxes.device)
    code = geometry.rot90 * 4 + geometry.vflip * 2 + geometry.hflip
    # [B, 1, 1, 2] corner and scale, broadcast over the boxes' (lower, upper) corners.
    crops = geometry.crops.to(boxes.dtype)[:, None, None]
    lower = crops[..., :2]
    scale = side / (crops[..., 2:] - lower)
    scaled = ((boxes.unflatten(-1, (2, 2)) - lower) * scale).flatten(-2)
    picked = scaled.gather(2, sources.index_select(0, code)[:, None].expand_as(scaled))
    mirror, sign = flags.index_select(0, code).unbind(1)
    return torch.addcmul(mirror[:, None] * side, picked, sign[:, None])


def view_to_source(boxes: Tensor, geometry: ViewGeometry) -> Tensor:
    """Map boxes from view pixel coordinates back to source pixel coordinates.

    The inverse of :func:`source_to_view`.

    Args:
        boxes: ``[B, N, 4]`` boxes ``(x0, y0, x1, y1)`` in view pixels.
        geometry: Geometry of the view.

    Returns:
        ``[B, N, 4]`` boxes in source pixels with ``x0 < x1`` and ``y0 < y1``.

    Raises:
        ValueError: If ``boxes`` does not have shape ``[B, N, 4]``.
    """
    _check_boxes(boxes, geometry)
    side = geometry.size
    odd, flip_x, flip_y = (flag.view(-1, 1, 1) for flag in _folded_flips(geometry))
    x, y = boxes[..., 0::2], boxes[..., 1::2]
    x = torch.where(flip_x, side - x, x)
    y = torch.where(flip_y, side - y, y)
    x, y = torch.where(odd, y, x), torch.where(odd, x, y)
    crops = geometry.crops.to(boxes.dtype)[:, None, :]
    x = x * ((crops[..., 2:3] - crops[..., 0:1]) / side) + crops[..., 0:1]
    y = y * ((crops[..., 3:4] - crops[..., 1:2]) / side) + crops[..., 1:2]
    return torch.stack([x.amin(-1), y.amin(-1), x.amax(-1), y.amax(-1)], dim=-1)


def sample_crops(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    device: torch.device | None = None,
) -> Tensor:
    """Draw RandomResizedCrop boxes for a batch, vectorized.

    Follows torchvision's rule with continuous (not rounded) sizes: each sample draws
    :data:`CROP_ATTEMPTS` (area fraction, log aspect ratio) pairs at once and keeps the
    first that fits in the image; a sample where none fits gets the largest centred
    crop with its aspect ratio clamped into ``ratio``.

    Args:
        batch: Number of crops.
        height: Source image height in pixels.
        width: Source image width in pixels.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio width / height.
        device: Device of the result.

    Returns:
        ``[batch, 4]`` float32 boxes ``(x0, y0, x1, y1)`` in source pixels.
    """
    area = height * width
    fraction = torch.empty(batch, CROP_ATTEMPTS, device=device).uniform_(*scale)
    log_ratio = torch.empty(batch, CROP_ATTEMPTS, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(fraction * area * aspect)
    h = torch.sqrt(fraction * area / aspect)
    fits = (w <= width) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    any_fits = fits.any(dim=1)

    # Centre-crop fallback; depends only on the image shape, so plain Python is fine.
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)

    w = torch.where(any_fits, w.gather(1, first).squeeze(1), fallback_w)
    h = torch.where(any_fits, h.gather(1, first).squeeze(1), fallback_h)
    position = torch.rand(batch, 2, device=device)
    x0 = torch.where(any_fits, position[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(any_fits, position[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_and_resize(
    images: Tensor, crops: Tensor, size: int, index: Tensor | None = None
) -> Tensor:
    """Crop continuous boxes out of a batch and resize them to ``size x size``.

    Uses :func:`torchvision.ops.roi_align` with ``aligned=True``: output pixel
    ``(i, j)`` is the bilinear sample (averaged over ``ceil(box side / size)`` points
    per axis when shrinking) at the centre of bin ``(i, j)`` of the box, the same
    convention as ``F.interpolate(..., align_corners=False)``; a whole-image box at
    the image's own size returns the image unchanged.

    Args:
        images: ``[B, C, H, W]`` floating-point batch.
        crops: ``[K, 4]`` boxes ``(x0, y0, x1, y1)`` in pixels.
        size: Output side.
        index: ``[K]`` image of each box; defaults to ``arange(K)`` (one box per image).

    Returns:
        ``[K, C, size, size]`` crops.
    """
    if index is None:
        index = torch.arange(crops.shape[0], device=crops.device)
    rois = torch.cat([index.to(images.dtype)[:, None], crops.to(images.dtype)], dim=1)
    return roi_align(
        images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )


def _flip_and_rotate(
    views: Tensor, geometry: ViewGeometry, vertical: bool = True, turns: bool = True
) -> Tensor:
    """Apply per-sample flips and then quarter turns to a batch of square views.

    Uses :func:`_folded_flips`, so each pixel moves at most three times whatever the
    turn.

    Args:
        views: ``[B, C, S, S]`` batch.
        geometry: Flips and turns of each view.
        vertical: Whether any vertical flip may be set; ``False`` skips that pass.
        turns: Whether any quarter turn may be set; ``False`` skips the transpose.

    Returns:
        The flipped and turned views.
    """
    odd, flip_x, flip_y = (flag.view(-1, 1, 1, 1) for flag in _folded_flips(geometry))
    if turns:
        views = torch.where(odd, views.transpose(-2, -1), views)
    views = torch.where(flip_x, views.flip(-1), views)
    if turns or vertical:
        views = torch.where(flip_y, views.flip(-2), views)
    return views


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    """Raise unless ``low <= value[0] <= value[1] <= high``."""
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError(
            f"{name} must be a (min, max) pair with {low} <= min <= max <= {high}, got {value}"
        )


def _check_probability(name: str, value: float) -> None:
    """Raise unless ``value`` is a probability."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class ViewOptions:
    """Options of :class:`TwoViewAugmentation` other than the view size.

    Checked when built, so a bad value fails where it is configured (a YAML file, a
    task's constructor) and not at the first training step. LightningCLI configures
    it as a nested mapping (``views: {brightness: 0.0, speckle_looks: 4}``).

    Attributes:
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio width / height.
        brightness: Brightness factors are drawn from ``[1 - b, 1 + b]``.
        contrast: Contrast factors are drawn from ``[1 - c, 1 + c]``.
        jitter_p: Probability of brightness/contrast jitter per view.
        blur_sigma: Range of the Gaussian blur standard deviation in view pixels.
        blur_p: Probability of blurring per view.
        hflip_p: Probability of a horizontal flip per view.
        vflip_p: Probability of a vertical flip per view (a SAR option).
        rot90: Whether to rotate each view by a random number of quarter turns.
        speckle_looks: Equivalent number of looks of the multiplicative Gamma
            speckle; None disables speckle.
        speckle_p: Probability of speckle per view.
        speckle_db_span: dB width ``high - low`` of each channel's range
            normalization; needed before the first call when speckle is on (see
            :meth:`TwoViewAugmentation.set_speckle_db_span`; DI3CLTask reads it from
            the datamodule's ``RangeNormalize``).
    """

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    jitter_p: float = 0.8
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    hflip_p: float = 0.5
    vflip_p: float = 0.0
    rot90: bool = False
    speckle_looks: float | None = None
    speckle_p: float = 0.5
    speckle_db_span: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """Check every option; the message names the first one out of range.

        Raises:
            ValueError: If an option is out of range.
        """
        # YAML and checkpoints give lists; tuples keep the options hashable and frozen.
        for name in ("scale", "ratio", "blur_sigma", "speckle_db_span"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        _check_range("scale", self.scale, 0.0, 1.0)
        if self.scale[0] <= 0:
            raise ValueError(f"scale must have a positive minimum, got {self.scale}")
        _check_range("ratio", self.ratio, 0.0, math.inf)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must have a positive minimum, got {self.ratio}")
        if not 0.0 <= self.brightness < 1.0:
            raise ValueError(f"brightness must be in [0, 1), got {self.brightness}")
        if not 0.0 <= self.contrast < 1.0:
            raise ValueError(f"contrast must be in [0, 1), got {self.contrast}")
        _check_range("blur_sigma", self.blur_sigma, 0.0, math.inf)
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"blur_sigma must have a positive minimum, got {self.blur_sigma}")
        # Speckle checks its own options (looks, p, dB span) when the augmentation builds it.
        for name in ("jitter_p", "blur_p", "hflip_p", "vflip_p"):
            _check_probability(name, getattr(self, name))

    @property
    def blur_kernel(self) -> int:
        """Side of the blur kernel: it reaches 3 sigma, within 1 % of a Gaussian's mass."""
        return 2 * math.ceil(3 * self.blur_sigma[1]) + 1


class TwoViewAugmentation(nn.Module):
    """MoCo v2 two-view augmentation for SAR batches, with the view geometry.

    Each view is a RandomResizedCrop, then optional horizontal / vertical flips and
    quarter turns, then brightness/contrast jitter, Gaussian blur and, optionally,
    multiplicative speckle. SAR images have 1-2 channels normalized to [0, 1], so
    there is no saturation, hue or grayscale step. Brightness multiplies by ``b`` and
    contrast blends with the per-sample mean by ``c`` (as torchvision); the two
    commute, are applied together and clamped to [0, 1] once. Speckle comes last and
    is not clamped. The views are range-normalized dB, so speckle multiplies the
    linear power: it adds ``10 log10(n) / span`` with ``span`` the dB width of each
    channel's normalization range (``speckle_db_span``), for unit-mean Gamma ``n``.
    """

    def __init__(self, size: int = 224, options: ViewOptions | None = None) -> None:
        """Initialize the augmentation.

        Args:
            size: Side of the square output views in pixels.
            options: Crop, flip, jitter, blur and speckle options; the defaults of
                :class:`ViewOptions` if None.

        Raises:
            ValueError: If ``size`` is not positive or too small for the blur kernel.
        """
        super().__init__()
        options = options or ViewOptions()
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if options.blur_kernel // 2 >= size:
            raise ValueError(
                f"blur_sigma up to {options.blur_sigma[1]} needs a {options.blur_kernel}-pixel "
                f"kernel, too large for {size}-pixel views"
            )
        self.size = size
        self.options = options
        self.speckle = (
            None
            if options.speckle_looks is None
            else Speckle(
                options.speckle_looks,
                p=options.speckle_p,
                in_db=True,
                db_span=options.speckle_db_span,
            )
        )

    def set_speckle_db_span(self, db_span: Sequence[float]) -> None:
        """Set the dB width of each channel's normalization range, for speckle.

        Args:
            db_span: ``high - low`` in dB per channel (or one for all channels).

        Raises:
            ValueError: If speckle is off or a width is not positive.
        """
        if self.speckle is None:
            raise ValueError("speckle is off (speckle_looks=None); no dB span is needed")
        self.speckle = Speckle(self.speckle.looks, p=self.speckle.p, in_db=True, db_span=db_span)

    def sample_geometry(
        self, batch: int, height: int, width: int, device: torch.device | None = None
    ) -> ViewGeometry:
        """Draw the crops, flips and turns of ``batch`` views without making them.

        Args:
            batch: Number of views.
            height: Source image height in pixels.
            width: Source image width in pixels.
            device: Device of the result.

        Returns:
            The geometry of the views.
        """
        crops = sample_crops(batch, height, width, self.options.scale, self.options.ratio, device)
        hflip = torch.rand(batch, device=device) < self.options.hflip_p
        vflip = torch.rand(batch, device=device) < self.options.vflip_p
        if self.options.rot90:
            rot90 = torch.randint(0, 4, (batch,), device=device)
        else:
            rot90 = torch.zeros(batch, dtype=torch.int64, device=device)
        return ViewGeometry(crops, hflip, vflip, rot90, self.size)

    def _jitter(self, views: Tensor) -> Tensor:
        """Per-sample brightness and contrast jitter, applied with ``jitter_p``."""
        shape = (views.shape[0], 1, 1, 1)
        device, dtype = views.device, views.dtype
        b = torch.empty(shape, device=device, dtype=dtype).uniform_(
            1 - self.options.brightness, 1 + self.options.brightness
        )
        c = torch.empty(shape, device=device, dtype=dtype).uniform_(
            1 - self.options.contrast, 1 + self.options.contrast
        )
        apply = torch.rand(shape, device=device) < self.options.jitter_p
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (b * (c * (views - mean) + mean)).clamp(0.0, 1.0)
        return torch.where(apply, jittered, views)

    def _blur(self, views: Tensor) -> Tensor:
        """Per-sample Gaussian blur, applied with ``blur_p``.

        Built from kornia's filters with one kernel per sample rather than with
        ``RandomGaussianBlur``, which checks its sigmas on the host every call.
        """
        count = views.shape[0]
        sigma = torch.empty(count, 1, device=views.device, dtype=views.dtype)
        sigma.uniform_(*self.options.blur_sigma)
        kernel = get_gaussian_kernel1d(self.options.blur_kernel, sigma)
        blurred = filter2d_separable(views, kernel, kernel, border_type="reflect")
        apply = torch.rand(count, 1, 1, 1, device=views.device) < self.options.blur_p
        return torch.where(apply, blurred, views)

    def forward(self, images: Tensor) -> TwoViews:
        """Make two augmented views of every image in a batch.

        Args:
            images: ``[B, C, H, W]`` floating-point batch normalized to [0, 1].

        Returns:
            The two views, ``[B, C, size, size]`` each, and their geometries.

        Raises:
            ValueError: If ``images`` is not a 4-D floating-point tensor.
        """
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                "TwoViewAugmentation expects a floating-point [B, C, H, W] batch, got "
                f"shape {list(images.shape)} and dtype {images.dtype}"
            )
        batch, _, height, width = images.shape
        geom = self.sample_geometry(2 * batch, height, width, images.device)
        index = torch.arange(batch, device=images.device).repeat(2)
        views = crop_and_resize(images, geom.crops, self.size, index)
        views = _flip_and_rotate(
            views, geom, vertical=self.options.vflip_p > 0, turns=self.options.rot90
        )
        views = self._jitter(views)
        views = self._blur(views)
        if self.speckle is not None:
            if self.speckle.db_span is None:
                raise ValueError(
                    "speckle on range-normalized views needs the dB width of each "
                    "channel's normalization range: pass speckle_db_span (high - low of "
                    "the datamodule's RangeNormalize)"
                )
            views = self.speckle(views)
        view1, view2 = views.split(batch)
        return TwoViews(view1, view2, geom[:batch], geom[batch:])

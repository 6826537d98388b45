import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from torchgeo_dic3l.transforms.radiometry import db_to_power
from torchgeo_dic3l.transforms.views import (
    TwoViewAugmentation,
    ViewGeometry,
    ViewOptions,
    crop_and_resize,
    sample_crops,
    source_to_view,
    view_to_source,
)


def augmentation(size: int, **options: Any) -> TwoViewAugmentation:
    """The augmentation with these :class:`ViewOptions`."""
    return TwoViewAugmentation(size, ViewOptions(**options))


def geometric(size: int, **options: Any) -> TwoViewAugmentation:
    """The augmentation without brightness/contrast jitter and blur."""
    return augmentation(size, jitter_p=0.0, blur_p=0.0, **options)


def manual_view(image: torch.Tensor, geom: ViewGeometry, b: int) -> torch.Tensor:
    """The view of sample b rebuilt one step at a time with plain torch ops."""
    view = crop_and_resize(image[None], geom.crops[b : b + 1], geom.size)[0]
    if geom.hflip[b]:
        view = view.flip(-1)
    if geom.vflip[b]:
        view = view.flip(-2)
    return torch.rot90(view, int(geom.rot90[b]), dims=(-2, -1))


def test_crop_and_resize_pixel_convention() -> None:
    image = torch.rand(2, 3, 12, 16)
    whole = torch.tensor([[0.0, 0.0, 16.0, 12.0]] * 2)
    # A whole-image crop at the image's own size is the identity (for a square view).
    square = image[..., :12, :12]
    assert torch.allclose(
        crop_and_resize(square, torch.tensor([[0.0, 0, 12, 12]] * 2), 12), square
    )
    # An integer crop at its own size is a slice.
    box = torch.tensor([[3.0, 2.0, 11.0, 10.0], [0.0, 4.0, 8.0, 12.0]])
    out = crop_and_resize(image, box, 8)
    assert torch.allclose(out[0], image[0, :, 2:10, 3:11])
    assert torch.allclose(out[1], image[1, :, 4:12, 0:8])
    # Upsampling follows interpolate(align_corners=False).
    up = crop_and_resize(square, torch.tensor([[0.0, 0, 12, 12]] * 2), 24)
    ref = F.interpolate(square, size=24, mode="bilinear", align_corners=False)
    assert torch.allclose(up, ref, atol=1e-5)
    # The index argument picks the image of each box.
    picked = crop_and_resize(image, whole[:1], 8, index=torch.tensor([1]))
    assert torch.allclose(picked, crop_and_resize(image[1:], whole[:1], 8))


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 100), (120, 40)])
def test_sample_crops_inside_image_and_within_bounds(height: int, width: int) -> None:
    torch.manual_seed(0)
    crops = sample_crops(2000, height, width, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    assert crops.shape == (2000, 4)
    assert crops.dtype == torch.float32
    assert (crops[:, 0] >= 0).all() and (crops[:, 1] >= 0).all()
    assert (crops[:, 2] <= width + 1e-4).all() and (crops[:, 3] <= height + 1e-4).all()
    w, h = crops[:, 2] - crops[:, 0], crops[:, 3] - crops[:, 1]
    ratio = w / h
    assert (ratio >= 3 / 4 - 1e-4).all() and (ratio <= 4 / 3 + 1e-4).all()
    fraction = w * h / (height * width)
    assert (fraction >= 0.2 - 1e-4).all() and (fraction <= 1 + 1e-4).all()
    # Positions are spread over the image, not always centred.
    assert crops[:, 0].std() > 1.0


def test_sample_crops_fallback_is_centred_with_clamped_ratio() -> None:
    torch.manual_seed(0)
    # A 10 x 400 strip: no crop with ratio <= 4/3 covers half of it, so all fall back.
    crops = sample_crops(8, 10, 400, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    expected = torch.tensor([200 - 20 / 3, 0.0, 200 + 20 / 3, 10.0])
    assert torch.allclose(crops, expected.expand(8, 4), atol=1e-4)


def test_flips_and_turns_match_manual_views() -> None:
    torch.manual_seed(1)
    images = torch.rand(16, 2, 40, 56)
    aug = geometric(24, hflip_p=0.5, vflip_p=0.5, rot90=True)
    views = aug(images)
    for view, geom in [(views.view1, views.geom1), (views.view2, views.geom2)]:
        for b in range(16):
            assert torch.allclose(view[b], manual_view(images[b], geom, b), atol=1e-6)
    flags = torch.cat([views.geom1.hflip, views.geom2.hflip])
    turns = torch.cat([views.geom1.rot90, views.geom2.rot90])
    assert flags.any() and not flags.all()
    assert set(turns.tolist()) == {0, 1, 2, 3}


def test_horizontal_flip_really_mirrors() -> None:
    image = torch.arange(8.0).repeat(1, 8, 1)  # value = column index
    aug = geometric(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=1.0)
    out = aug(image[None])
    assert torch.allclose(out.view1[0, 0, 0], torch.arange(7.0, -1.0, -1.0))
    assert out.geom1.hflip.all()


def test_shapes_dtypes_and_defaults() -> None:
    images = torch.rand(3, 2, 50, 70)
    out = TwoViewAugmentation(size=32)(images)
    for view in (out.view1, out.view2):
        assert view.shape == (3, 2, 32, 32)
        assert view.dtype == torch.float32
        assert torch.isfinite(view).all()
    for geom in (out.geom1, out.geom2):
        assert geom.crops.shape == (3, 4)
        assert geom.hflip.dtype == torch.bool and geom.vflip.dtype == torch.bool
        assert geom.rot90.dtype == torch.int64
        assert geom.size == 32
        # Defaults: no vertical flips, no turns.
        assert not geom.vflip.any() and not geom.rot90.any()


def test_sample_geometry_flag_frequencies() -> None:
    torch.manual_seed(0)
    aug = augmentation(16, hflip_p=0.5, vflip_p=0.25, rot90=True)
    geom = aug.sample_geometry(8000, 30, 40)
    assert geom.hflip.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert geom.vflip.float().mean().item() == pytest.approx(0.25, abs=0.03)
    counts = torch.bincount(geom.rot90, minlength=4).float() / 8000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    assert not TwoViewAugmentation(size=16).sample_geometry(100, 30, 40).rot90.any()


def test_deterministic_under_seed() -> None:
    images = torch.rand(4, 1, 40, 40)
    aug = augmentation(16, vflip_p=0.5, rot90=True, speckle_looks=2.0, speckle_db_span=[25.0])
    results = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        results.append(aug(images))
    assert torch.equal(results[0].view1, results[1].view1)
    assert torch.equal(results[0].view2, results[1].view2)
    assert torch.equal(results[0].geom1.crops, results[1].geom1.crops)
    assert torch.equal(results[0].geom2.rot90, results[1].geom2.rot90)
    assert not torch.equal(results[0].view1, results[2].view1)


def test_views_differ_from_each_other() -> None:
    torch.manual_seed(0)
    out = TwoViewAugmentation(size=16)(torch.rand(4, 1, 40, 40))
    assert not torch.equal(out.geom1.crops, out.geom2.crops)
    assert not torch.equal(out.view1, out.view2)


def test_brightness_scales_each_sample() -> None:
    torch.manual_seed(0)
    images = torch.full((64, 1, 20, 20), 0.5)
    aug = augmentation(8, brightness=0.4, contrast=0.0, jitter_p=1.0, blur_p=0.0)
    factor = aug(images).view1 / 0.5
    per_sample = factor.flatten(1)
    # One factor per sample, inside [0.6, 1.4] and not all the same.
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-5)
    assert (per_sample >= 0.6 - 1e-5).all() and (per_sample <= 1.4 + 1e-5).all()
    assert per_sample[:, 0].std() > 0.1


def test_contrast_keeps_mean_and_scales_spread() -> None:
    torch.manual_seed(0)
    images = 0.4 + 0.2 * torch.rand(32, 2, 16, 16)
    aug = augmentation(
        16,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        brightness=0.0,
        contrast=0.4,
        jitter_p=1.0,
        blur_p=0.0,
    )
    out = aug(images)
    assert torch.allclose(out.view1.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=1e-5)
    spread = out.view1.std(dim=(1, 2, 3)) / images.std(dim=(1, 2, 3))
    assert (spread >= 0.6 - 1e-4).all() and (spread <= 1.4 + 1e-4).all()
    assert spread.std() > 0.05


def test_jitter_probability_zero_is_identity() -> None:
    images = torch.rand(4, 1, 16, 16)
    aug = geometric(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0)
    assert torch.allclose(aug(images).view1, images, atol=1e-6)


def test_blur_smooths_noise() -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 1, 32, 32)
    kwargs: dict[str, Any] = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "jitter_p": 0.0}
    sharp = augmentation(32, blur_p=0.0, **kwargs)(images).view1
    blurred = augmentation(32, blur_sigma=(1.5, 2.0), blur_p=1.0, **kwargs)(images).view1
    assert blurred.std(dim=(1, 2, 3)).max() < 0.5 * sharp.std(dim=(1, 2, 3)).min()
    assert torch.allclose(blurred.mean(), sharp.mean(), atol=0.01)


@pytest.mark.parametrize("looks", [1.0, 4.0])
def test_speckle_multiplies_linear_power_of_normalized_db(looks: float) -> None:
    torch.manual_seed(0)
    # Range-normalized dB: channel 0 spans 25 dB, channel 1 spans 40 dB; dark and
    # bright pixels alike must get the same multiplicative noise in linear power.
    span = [25.0, 40.0]
    images = torch.tensor([0.1, 0.8]).view(1, 2, 1, 1).expand(16, 2, 64, 64).contiguous()
    aug = geometric(64, speckle_looks=looks, speckle_p=1.0, speckle_db_span=span)
    view = aug(images).view1
    for channel, width in enumerate(span):
        offset_db = (view[:, channel] - images[:, channel]) * width
        noise = db_to_power(offset_db)
        assert noise.mean().item() == pytest.approx(1.0, abs=0.02)
        cv = (noise.std() / noise.mean()).item()
        assert cv == pytest.approx(1.0 / math.sqrt(looks), rel=0.04)
    untouched = geometric(64, speckle_looks=looks, speckle_p=0.0, speckle_db_span=span)
    assert torch.allclose(untouched(images).view1, images)


def test_speckle_needs_the_normalization_span() -> None:
    images = torch.full((2, 1, 32, 32), 0.5)
    aug = geometric(32, speckle_looks=2.0, speckle_p=1.0)
    with pytest.raises(ValueError, match="speckle_db_span"):
        aug(images)
    aug.set_speckle_db_span([20.0])
    assert not torch.equal(aug(images).view1, images)
    with pytest.raises(ValueError, match="speckle is off"):
        geometric(32).set_speckle_db_span([20.0])


def test_runs_without_reading_tensor_values() -> None:
    # Meta tensors have no data: any .item(), bool() or data-dependent branch raises,
    # so this proves the forward pass never synchronizes a GPU with the host.
    images = torch.empty(4, 2, 60, 80, device="meta")
    aug = augmentation(
        32, vflip_p=0.5, rot90=True, speckle_looks=3.0, speckle_db_span=[25.0, 20.0]
    )
    out = aug(images)
    assert out.view1.shape == (4, 2, 32, 32)
    assert out.view1.device.type == "meta"
    assert out.geom2.crops.device.type == "meta"


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(8, 500),
    width=st.integers(8, 500),
    size=st.sampled_from([16, 32, 224]),
    seed=st.integers(0, 2**16),
)
def test_box_mapping_round_trip(height: int, width: int, size: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = 6
    crops = sample_crops(batch, height, width)
    geom = ViewGeometry(
        crops=crops,
        hflip=torch.rand(batch, generator=gen) < 0.5,
        vflip=torch.rand(batch, generator=gen) < 0.5,
        rot90=torch.randint(0, 4, (batch,), generator=gen),
        size=size,
    )
    corner = torch.rand(batch, 5, 2, generator=gen) * torch.tensor([width, height]) * 0.5
    boxes = torch.cat([corner, corner + 1 + torch.rand(batch, 5, 2, generator=gen) * 50], -1)
    in_view = source_to_view(boxes, geom)
    assert (in_view[..., 2] > in_view[..., 0]).all() and (in_view[..., 3] > in_view[..., 1]).all()
    back = view_to_source(in_view, geom)
    assert torch.allclose(back, boxes, atol=1e-3 * max(height, width))
    # The crop itself maps onto the whole view whatever the flips and turns.
    whole = source_to_view(crops[:, None, :], geom)
    assert torch.allclose(whole, torch.tensor([0.0, 0.0, size, size]).expand_as(whole), atol=1e-3)


def test_rot90_maps_points_like_torch_rot90() -> None:
    # A one-pixel box in the view must hold the pixel that torch.rot90 moved there.
    view = torch.zeros(1, 1, 6, 6)
    view[..., 1, 4] = 1.0  # row 1, column 4: box (4, 1, 5, 2)
    for k in range(4):
        geom = ViewGeometry(
            crops=torch.tensor([[0.0, 0.0, 6.0, 6.0]]),
            hflip=torch.tensor([False]),
            vflip=torch.tensor([False]),
            rot90=torch.tensor([k]),
            size=6,
        )
        box = source_to_view(torch.tensor([[[4.0, 1.0, 5.0, 2.0]]]), geom)[0, 0]
        x0, y0 = int(box[0]), int(box[1])
        assert torch.rot90(view, k, dims=(-2, -1))[0, 0, y0, x0] == 1.0
        assert box[2] - box[0] == 1 and box[3] - box[1] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": (0.5, 0.2)}, "scale must be a"),
        ({"scale": (0.0, 1.0)}, "scale must have a positive minimum"),
        ({"ratio": (2.0, 1.0)}, "ratio must be a"),
        ({"brightness": 1.5}, "brightness must be in"),
        ({"contrast": -0.1}, "contrast must be in"),
        ({"blur_sigma": (0.0, 1.0)}, "blur_sigma must have a positive minimum"),
        ({"jitter_p": 1.5}, "jitter_p must be a probability"),
        ({"vflip_p": -0.1}, "vflip_p must be a probability"),
    ],
)
def test_bad_options_raise_when_built(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ViewOptions(**kwargs)


@pytest.mark.parametrize(
    ("size", "options", "match"),
    [
        (0, ViewOptions(), "size must be a positive"),
        (4, ViewOptions(blur_sigma=(0.1, 2.0)), "too large for 4-pixel views"),
        (16, ViewOptions(speckle_looks=0.0), "looks must be positive"),
        (16, ViewOptions(speckle_looks=1.0, speckle_db_span=(0.0,)), "positive dB widths"),
    ],
)
def test_options_that_do_not_fit_the_views_raise(
    size: int, options: ViewOptions, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        TwoViewAugmentation(size, options)


def test_options_from_yaml_lists_are_tuples() -> None:
    options = ViewOptions(scale=[0.5, 1.0], speckle_db_span=[25, 20])  # type: ignore[arg-type]
    assert options.scale == (0.5, 1.0) and options.speckle_db_span == (25.0, 20.0)
    assert hash(options) == hash(ViewOptions(scale=(0.5, 1.0), speckle_db_span=(25.0, 20.0)))


def test_bad_input_raises() -> None:
    aug = TwoViewAugmentation(size=16)
    with pytest.raises(ValueError, match=r"floating-point \[B, C, H, W\] batch"):
        aug(torch.rand(2, 32, 32))
    with pytest.raises(ValueError, match=r"dtype torch\.uint8"):
        aug(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))


def test_bad_box_shape_raises() -> None:
    geom = ViewGeometry(
        torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
        torch.tensor([False]),
        torch.tensor([False]),
        torch.tensor([0]),
        size=4,
    )
    with pytest.raises(ValueError, match=r"boxes must have shape \[B, N, 4\] with B=1"):
        source_to_view(torch.zeros(2, 3, 4), geom)
    assert math.isclose(float(view_to_source(torch.ones(1, 1, 4), geom)[0, 0, 0]), 1.0)


def small_geometry(batch: int, size: int, seed: int) -> ViewGeometry:
    gen = torch.Generator().manual_seed(seed)
    corner = torch.rand(batch, 2, generator=gen) * 10
    return ViewGeometry(
        crops=torch.cat([corner, corner + 5 + torch.rand(batch, 2, generator=gen)], dim=1),
        hflip=torch.rand(batch, generator=gen) < 0.5,
        vflip=torch.rand(batch, generator=gen) < 0.5,
        rot90=torch.randint(0, 4, (batch,), generator=gen),
        size=size,
    )


def test_geometry_cat_and_index_are_inverse() -> None:
    first, second = small_geometry(3, 16, 0), small_geometry(2, 16, 1)
    both = ViewGeometry.cat([first, second])
    assert both.crops.shape == (5, 4) and both.size == 16
    for part, original in [(both[:3], first), (both[3:], second)]:
        for got, expected in zip(part.tensors(), original.tensors(), strict=True):
            assert torch.equal(got, expected)
    picked = both[torch.tensor([4, 0])]
    assert torch.equal(picked.crops, torch.stack([second.crops[1], first.crops[0]]))
    assert torch.equal(picked.rot90, torch.stack([second.rot90[1], first.rot90[0]]))


def test_geometry_cat_refuses_mixed_view_sizes() -> None:
    with pytest.raises(ValueError, match=r"one size, got sizes \[16, 32\]"):
        ViewGeometry.cat([small_geometry(1, 16, 0), small_geometry(1, 32, 0)])


def test_geometry_clone_and_copy_share_no_memory() -> None:
    geom, other = small_geometry(4, 16, 0), small_geometry(4, 16, 1)
    copy = geom.clone()
    copy.copy_(other)
    for target, source in zip(copy.tensors(), other.tensors(), strict=True):
        assert torch.equal(target, source)
    for kept, original in zip(geom.tensors(), small_geometry(4, 16, 0).tensors(), strict=True):
        assert torch.equal(kept, original)
    with pytest.raises(ValueError, match="cannot copy views of size 32 into size 16"):
        copy.copy_(small_geometry(4, 32, 1))


def test_geometry_to_moves_every_tensor() -> None:
    moved = small_geometry(2, 16, 0).to("meta")
    assert all(tensor.device.type == "meta" for tensor in moved.tensors())
    assert moved.size == 16

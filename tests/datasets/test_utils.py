import numpy as np
import pytest
import torch

from torchgeo_dic3l.datasets.utils import sar_display


def test_one_channel_is_grey_and_stretched_to_its_percentiles() -> None:
    image = torch.linspace(-30.0, 0.0, 100 * 100).view(1, 100, 100)
    picture, caption = sar_display(image, ["VH"])
    assert picture.shape == (100, 100)
    assert caption == "VH"
    # 2 % of the pixels fall at or below the low end, 2 % at or above the high end.
    assert np.mean(picture == 0.0) == pytest.approx(0.02, abs=0.002)
    assert np.mean(picture == 1.0) == pytest.approx(0.02, abs=0.002)


def test_two_channels_give_the_false_colour_with_their_difference() -> None:
    gen = torch.Generator().manual_seed(0)
    vv = torch.rand(1, 32, 32, generator=gen)
    vh = torch.rand(1, 32, 32, generator=gen)
    picture, caption = sar_display(torch.cat([vv, vh]), ["VV", "VH"])
    assert picture.shape == (32, 32, 3)
    assert caption == "VV, VH, VV-VH"
    difference, _ = sar_display((vv - vh).numpy())
    np.testing.assert_allclose(picture[..., 2], difference, atol=1e-6)


def test_three_or_more_channels_show_the_first_three() -> None:
    image = torch.rand(4, 8, 8)
    picture, caption = sar_display(image)
    assert picture.shape == (8, 8, 3)
    assert caption == "channel 1, channel 2, channel 3"
    first, _ = sar_display(image[:1])
    np.testing.assert_allclose(picture[..., 0], first, atol=1e-6)


def test_non_finite_pixels_do_not_move_the_stretch() -> None:
    image = torch.linspace(0.0, 1.0, 64 * 64).view(1, 64, 64)
    spoiled = image.clone()
    spoiled[0, 0, :8] = torch.tensor([float("nan"), float("inf"), -float("inf")] * 2 + [0, 0])
    clean, _ = sar_display(image)
    picture, _ = sar_display(spoiled)
    assert np.isfinite(picture).all()
    np.testing.assert_allclose(picture[1:], clean[1:], atol=2e-3)


@pytest.mark.parametrize(
    ("image", "names", "match"),
    [
        (torch.zeros(8, 8), None, r"expected a \[C, H, W\] image, got shape \(8, 8\)"),
        (torch.zeros(2, 8, 8), ["VV"], r"got 1 channel name\(s\) for 2 channel\(s\)"),
    ],
)
def test_bad_input_is_named(image: torch.Tensor, names: list[str] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sar_display(image, names)


@pytest.mark.parametrize("channels, shape", [(1, (16, 16)), (2, (16, 16, 3)), (4, (16, 16, 3))])
def test_sar_display_shapes(channels: int, shape: tuple[int, ...]) -> None:
    picture, _ = sar_display(torch.randn(channels, 16, 16))
    assert picture.shape == shape
    assert picture.min() >= 0.0 and picture.max() <= 1.0

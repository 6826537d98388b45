import math

import pytest
import torch

from torchgeo_dic3l.transforms import (
    ImageOnly,
    RangeNormalize,
    Speckle,
    db_to_power,
    gamma_speckle,
    power_to_db,
    robust_range,
    sanitize_db,
    sanitize_power,
    validate_bands,
)


def test_db_round_trip_and_known_values() -> None:
    power = torch.tensor([1.0, 10.0, 0.01])
    assert torch.allclose(power_to_db(power), torch.tensor([0.0, 10.0, -20.0]))
    assert torch.allclose(db_to_power(power_to_db(power)), power)


def test_power_to_db_is_finite_for_zero() -> None:
    assert torch.isfinite(power_to_db(torch.zeros(3))).all()


def test_sanitize_power_masks_and_counts_invalid_pixels() -> None:
    power = torch.tensor([1.0, float("nan"), float("inf"), -2.0, 0.0, -9999.0])
    with pytest.warns(UserWarning, match=r"band VV: 4 of 6 pixels are invalid") as record:
        clean, valid = sanitize_power(power, nodata=-9999.0, source="band VV")
    message = str(record[0].message)
    # Each invalid pixel is counted once: -9999 as nodata, not also as negative.
    assert "2 NaN/inf, 1 negative, 1 nodata" in message
    assert valid.tolist() == [True, False, False, False, True, False]
    assert torch.isfinite(clean).all()
    assert (clean > 0).all()
    assert torch.isfinite(power_to_db(clean)).all()


def test_sanitize_power_counts_minus_inf_once() -> None:
    with pytest.warns(UserWarning, match=r"1 of 2 pixels are invalid \(1 NaN/inf\)") as record:
        sanitize_power(torch.tensor([1.0, -float("inf")]), source="f.tif")
    assert "negative" not in str(record[0].message)


def test_sanitize_power_counts_positive_nodata() -> None:
    with pytest.warns(UserWarning, match=r"1 nodata"):
        _, valid = sanitize_power(torch.tensor([1.0, 5.0]), nodata=5.0, source="f.tif")
    assert valid.tolist() == [True, False]


def test_sanitize_power_silent_on_clean_input() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean, valid = sanitize_power(torch.tensor([0.5, 2.0]))
    assert valid.all()
    assert torch.equal(clean, torch.tensor([0.5, 2.0]))


def test_sanitize_db_fills_with_minimum_valid() -> None:
    db = torch.tensor([-10.0, float("nan"), -20.0, 0.0])
    with pytest.warns(UserWarning, match=r"scene.tif: 2 of 4 pixels"):
        clean, valid = sanitize_db(db, nodata=0.0, source="scene.tif")
    assert clean.tolist() == [-10.0, -20.0, -20.0, -20.0]
    assert valid.tolist() == [True, False, True, False]


def test_robust_range_per_channel() -> None:
    image = torch.stack([torch.linspace(0, 100, 10000), torch.linspace(-50, -10, 10000)])
    image = image.view(2, 100, 100)
    low, high = robust_range(image, 0.1, 0.9)
    assert low[0] == pytest.approx(10.0, abs=0.05)
    assert high[1] == pytest.approx(-14.0, abs=0.05)


def test_robust_range_rejects_bad_quantiles() -> None:
    with pytest.raises(ValueError, match="quantiles"):
        robust_range(torch.zeros(1, 4, 4), 0.9, 0.1)


def test_range_normalize_clips_and_scales_per_channel() -> None:
    normalize = RangeNormalize([-25.0, -30.0], [0.0, -10.0])
    image = torch.tensor([[[-25.0, -12.5, 5.0]], [[-30.0, -20.0, -40.0]]])
    out = normalize(image)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.5, 1.0]], [[0.0, 0.5, 0.0]]]))
    assert normalize(image.unsqueeze(0)).shape == (1, 2, 1, 3)


def test_range_normalize_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"channel 1: high \(-5\.0\) must be greater"):
        RangeNormalize([0.0, 0.0], [1.0, -5.0])
    with pytest.raises(ValueError, match="one value per channel"):
        RangeNormalize([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"configured for 1 channel\(s\) but the image has 2"):
        RangeNormalize([0.0], [1.0])(torch.zeros(2, 3, 3))


def test_gamma_speckle_has_unit_mean_and_variance_one_over_looks() -> None:
    torch.manual_seed(0)
    noise = gamma_speckle(torch.Size([200_000]), looks=4.0)
    assert noise.mean().item() == pytest.approx(1.0, abs=0.01)
    assert noise.var().item() == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="looks must be positive"):
        gamma_speckle(torch.Size([2]), looks=0.0)


def test_speckle_in_db_matches_linear_multiplication() -> None:
    torch.manual_seed(1)
    db = torch.full((1, 1, 200, 200), -10.0)
    out = Speckle(looks=1.0, in_db=True)(db)
    linear = db_to_power(out)
    # Single-look speckle: exponential intensities, coefficient of variation 1.
    cv = (linear.std() / linear.mean()).item()
    assert cv == pytest.approx(1.0, abs=0.05)
    assert linear.mean().item() == pytest.approx(0.1, rel=0.05)


def test_speckle_probability_zero_is_identity_and_validation() -> None:
    image = torch.rand(3, 2, 8, 8)
    assert torch.equal(Speckle(looks=2.0, p=0.0, in_db=False)(image), image)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        Speckle(p=1.5)
    with pytest.raises(ValueError, match="looks must be positive"):
        Speckle(looks=-1)


def test_image_only_leaves_mask_untouched() -> None:
    sample = {"image": torch.full((1, 2, 2), -12.5), "mask": torch.ones(2, 2, dtype=torch.long)}
    out = ImageOnly(RangeNormalize([-25.0], [0.0]))(sample)
    assert torch.allclose(out["image"], torch.full((1, 2, 2), 0.5))
    assert out["mask"] is sample["mask"]
    assert math.isclose(float(sample["image"][0, 0, 0]), -12.5)


def test_validate_bands_defaults_to_every_polarization_with_a_db_range() -> None:
    assert validate_bands(["hh", "Hv"]) == ("HH", "HV")
    assert validate_bands("vv") == ("VV",)


@pytest.mark.parametrize(
    ("bands", "allowed", "match"),
    [
        (["HH"], ("VV", "VH"), r"unknown band\(s\) \['HH'\] in bands; choose from"),
        (["RH"], None, r"unknown band\(s\) \['RH'\]"),
        ([], ("VV",), "at least one"),
        (["VV", "vv"], ("VV",), "must not repeat"),
    ],
)
def test_validate_bands_names_the_bad_selection(
    bands: list[str], allowed: tuple[str, ...] | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        if allowed is None:
            validate_bands(bands)
        else:
            validate_bands(bands, allowed)

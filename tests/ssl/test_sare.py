import math

import pytest
import torch

from torchgeo_dic3l.ssl.sare import DB_PER_NEPER, SpeckleAwareNoise

SPAN = [25.0, 40.0]


def offsets_db(
    noise: SpeckleAwareNoise, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dB offsets the noise added to each channel, and which images it noised."""
    noised, mask = noise(images)
    return (noised - images) * torch.tensor(SPAN).view(1, -1, 1, 1), mask


@pytest.mark.parametrize("sigma", [0.2, 0.7])
def test_lognormal_noise_is_gaussian_in_log_power(sigma: float) -> None:
    torch.manual_seed(0)
    images = torch.tensor([0.1, 0.8]).view(1, 2, 1, 1).expand(8, 2, 64, 64).contiguous()
    noise = SpeckleAwareNoise("lognormal", (sigma, sigma), p=1.0, db_span=SPAN)
    offsets, mask = offsets_db(noise, images)
    assert mask.all()
    for channel in range(2):  # dark and bright channels alike, whatever their span
        log_noise = offsets[:, channel] / DB_PER_NEPER  # ln n
        assert log_noise.mean().item() == pytest.approx(0.0, abs=0.01)
        assert log_noise.std().item() == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize("sigma", [0.1, 0.35])
def test_gamma_noise_has_unit_mean_and_cv_two_sigma(sigma: float) -> None:
    torch.manual_seed(0)
    images = torch.full((8, 2, 64, 64), 0.5)
    noise = SpeckleAwareNoise("gamma", (sigma, sigma), p=1.0, db_span=SPAN)
    offsets, _ = offsets_db(noise, images)
    power = 10 ** (offsets / 10)  # back to the linear multiplier
    assert power.mean().item() == pytest.approx(1.0, abs=0.01)
    assert (power.std() / power.mean()).item() == pytest.approx(2 * sigma, rel=0.03)


def test_only_a_fraction_of_images_is_noised_and_the_rest_untouched() -> None:
    torch.manual_seed(0)
    images = torch.rand(4000, 1, 4, 4)
    noise = SpeckleAwareNoise(p=0.3, db_span=[30.0])
    noised, mask = noise(images)
    assert mask.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(noised[~mask], images[~mask])
    changed = (noised[mask] != images[mask]).flatten(1).any(1)
    assert changed.float().mean() > 0.99  # sigma = 0 exactly has probability 0


def test_strength_is_drawn_per_image_from_the_range() -> None:
    torch.manual_seed(0)
    images = torch.full((2000, 1, 32, 32), 0.5)
    noise = SpeckleAwareNoise("lognormal", (0.0, 0.7), p=1.0, db_span=[10.0])
    noised, _ = noise(images)
    sigma = ((noised - images) * 10.0 / DB_PER_NEPER).flatten(1).std(1)
    assert sigma.min() < 0.05 and sigma.max() > 0.65 and sigma.max() < 0.75
    assert sigma.mean().item() == pytest.approx(0.35, abs=0.02)


@pytest.mark.parametrize("law", ["lognormal", "gamma"])
def test_zero_strength_leaves_images_unchanged(law: str) -> None:
    images = torch.rand(4, 2, 8, 8)
    noise = SpeckleAwareNoise(law, (0.0, 0.0), p=1.0, db_span=SPAN)  # type: ignore[arg-type]
    torch.testing.assert_close(noise(images)[0], images)


def test_runs_without_reading_tensor_values() -> None:
    images = torch.empty(4, 2, 16, 16, device="meta")
    noised, mask = SpeckleAwareNoise(db_span=SPAN).to("meta")(images)
    assert noised.device.type == "meta" and mask.shape == (4,)


def test_bad_options_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="law must be"):
        SpeckleAwareNoise("uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_range must be"):
        SpeckleAwareNoise(sigma_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="p must be a probability"):
        SpeckleAwareNoise(p=1.5)
    with pytest.raises(ValueError, match="positive dB widths"):
        SpeckleAwareNoise(db_span=[0.0])
    with pytest.raises(ValueError, match="pass db_span"):
        SpeckleAwareNoise()(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"2 width\(s\) but the images have 3"):
        SpeckleAwareNoise(db_span=SPAN)(torch.rand(1, 3, 4, 4))
    assert math.isclose(DB_PER_NEPER, 10 / math.log(10))

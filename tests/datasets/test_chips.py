import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from torchgeo_dic3l.datasets.chips import (
    BadChipError,
    ClipCheck,
    SARChips,
    check_png_integrity,
    sanitize_and_convert,
)


def write_chip(path: Path, array: np.ndarray, nodata: float | None = None) -> Path:
    """Write a [C, H, W] array as PNG or GeoTIFF depending on the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, object] = {
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
    }
    if path.suffix.lower() == ".png":
        profile["driver"] = "PNG"
    else:
        profile.update(
            driver="GTiff", crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)
        )
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
    return path


def ramp(channels: int, dtype: str, size: int = 8) -> np.ndarray:
    values = np.arange(channels * size * size).reshape(channels, size, size)
    return values.astype(dtype)


def test_uint8_png_is_returned_unchanged(tmp_path: Path) -> None:
    array = ramp(1, "uint8")
    write_chip(tmp_path / "a.png", array)
    dataset = SARChips(root=str(tmp_path))
    image = dataset[0]["image"]
    assert image.dtype == torch.float32
    assert image.shape == (1, 8, 8)
    assert torch.equal(image, torch.from_numpy(array.astype(np.float32)))
    assert dataset.channels == 1
    assert dataset.dtypes == ("uint8",)


def test_uint16_png_with_three_channels(tmp_path: Path) -> None:
    array = ramp(3, "uint16") * 500
    write_chip(tmp_path / "a.png", array)
    image = SARChips(root=str(tmp_path))[0]["image"]
    assert image.shape == (3, 8, 8)
    assert torch.equal(image, torch.from_numpy(array.astype(np.float32)))
    assert float(image.max()) > 255


def test_int16_geotiff_dn(tmp_path: Path) -> None:
    array = ramp(2, "int16") - 50
    write_chip(tmp_path / "a.tif", array)
    image = SARChips(files=[str(tmp_path / "a.tif")])[0]["image"]
    assert torch.equal(image, torch.from_numpy(array.astype(np.float32)))


def test_float32_power_geotiff_is_converted_to_db(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), 0.01, dtype=np.float32)
    array[0, 0, 0] = 1.0
    write_chip(tmp_path / "a.tif", array)
    image = SARChips(root=str(tmp_path), units="power")[0]["image"]
    assert image[0, 0, 0] == pytest.approx(0.0)
    assert image[0, 1, 1] == pytest.approx(-20.0)


def test_amplitude_is_converted_to_db(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), 0.1, dtype=np.float32)
    write_chip(tmp_path / "a.tif", array)
    image = SARChips(root=str(tmp_path), units="amplitude")[0]["image"]
    assert torch.allclose(image, torch.full_like(image, -20.0))


def test_invalid_power_pixels_warn_with_counts(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), 0.5, dtype=np.float32)
    array[0, 0, :2] = np.nan
    array[0, 1, 0] = -1.0
    array[0, 2, 2] = 0.1
    write_chip(tmp_path / "a.tif", array)
    dataset = SARChips(root=str(tmp_path), units="power")
    with pytest.warns(UserWarning, match=r"a\.tif: 3 of 16 pixels are invalid.*2 NaN, 1 negative"):
        image = dataset[0]["image"]
    assert torch.isfinite(image).all()
    # The lowest valid power (0.1, -10 dB), not the -100 dB floor, which clips.
    assert image[0, 0, 0] == pytest.approx(-10.0)


def test_minus_inf_is_counted_once_and_no_mask_is_claimed(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), 0.5, dtype=np.float32)
    array[0, 0, 0] = -np.inf
    write_chip(tmp_path / "a.tif", array)
    with pytest.warns(UserWarning) as caught:
        SARChips(root=str(tmp_path), units="power")[0]
    (message,) = [str(w.message) for w in caught]
    assert "1 of 16 pixels are invalid (1 infinite)" in message
    assert "negative" not in message and "masked" not in message
    assert "no validity mask" in message and "lowest valid value (0.5 as stored)" in message


def all_nan_and_good_chips(root: Path) -> Path:
    """Write an all-NaN chip a.tif and a clean chip b.tif; return a.tif."""
    write_chip(root / "b.tif", np.full((1, 4, 4), 0.5, dtype=np.float32))
    return write_chip(root / "a.tif", np.full((1, 4, 4), np.nan, dtype=np.float32))


def test_all_nan_chip_is_an_error_naming_it(tmp_path: Path) -> None:
    all_nan_and_good_chips(tmp_path)
    dataset = SARChips(root=str(tmp_path), units="power")
    with pytest.raises(
        BadChipError,
        match=r"a\.tif: only 0 of 16 pixels are valid \(16 NaN\).*skip_bad_files=True",
    ):
        dataset[0]


def test_mostly_invalid_chip_is_skipped_and_counted(tmp_path: Path) -> None:
    bad = all_nan_and_good_chips(tmp_path)
    dataset = SARChips(root=str(tmp_path), units="power", skip_bad_files=True)
    with pytest.warns(UserWarning, match=r"skipping unusable SAR chip .*a\.tif: only 0 of 16"):
        image = dataset[0]["image"]
    assert torch.allclose(image, torch.full_like(image, -3.0103), atol=1e-4)
    assert dataset.skipped_files == [str(bad)]


def test_min_valid_fraction_is_the_threshold(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), -9999.0, dtype=np.float32)
    array[0, :2] = -12.0  # 8 of 16 valid
    write_chip(tmp_path / "a.tif", array, nodata=-9999.0)
    with pytest.warns(UserWarning, match="8 of 16 pixels are invalid"):
        SARChips(root=str(tmp_path), units="db", min_valid_fraction=0.5)[0]
    with pytest.raises(BadChipError, match=r"only 8 of 16 .*min_valid_fraction=0\.6"):
        SARChips(root=str(tmp_path), units="db", min_valid_fraction=0.6)[0]
    with pytest.raises(ValueError, match=r"min_valid_fraction must be in \(0, 1\]"):
        SARChips(root=str(tmp_path), min_valid_fraction=0.0)


def test_chip_smaller_than_min_size_is_named_when_scanning(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8", size=16))
    write_chip(tmp_path / "small.png", ramp(1, "uint8", size=8))
    with pytest.raises(BadChipError, match=r"small\.png: chip of 8x8 pixels .*min_size=16"):
        SARChips(root=str(tmp_path), min_size=16)
    with pytest.warns(UserWarning, match=r"skipping unusable SAR chip .*small\.png"):
        dataset = SARChips(root=str(tmp_path), min_size=16, skip_bad_files=True)
    assert [os.path.basename(f) for f in dataset.files] == ["a.png"]
    assert dataset.skipped_files == [str(tmp_path / "small.png")]


def test_nodata_tag_of_db_file_is_filled(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), -12.0, dtype=np.float32)
    array[0, 0, 0] = -9999.0
    write_chip(tmp_path / "a.tif", array, nodata=-9999.0)
    dataset = SARChips(root=str(tmp_path), units="db")
    with pytest.warns(UserWarning, match="1 of 16 pixels are invalid"):
        image = dataset[0]["image"]
    assert torch.equal(image, torch.full_like(image, -12.0))


def test_nodata_argument_overrides_file(tmp_path: Path) -> None:
    array = np.full((1, 4, 4), 7, dtype=np.uint8)
    array[0, 0, 0] = 0
    write_chip(tmp_path / "a.png", array)
    dataset = SARChips(root=str(tmp_path), nodata=0)
    with pytest.warns(UserWarning, match="1 of 16 pixels are invalid"):
        image = dataset[0]["image"]
    assert float(image.min()) == 7.0


def test_recursive_search_is_sorted_and_filtered(tmp_path: Path) -> None:
    write_chip(tmp_path / "b" / "deep" / "z.tiff", ramp(1, "uint8"))
    write_chip(tmp_path / "b" / "c.TIF", ramp(1, "uint8"))
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    (tmp_path / "notes.txt").write_text("not a chip")
    (tmp_path / "a.png.aux.xml").write_text("<PAMDataset/>")
    dataset = SARChips(root=str(tmp_path))
    relative = [os.path.relpath(f, tmp_path) for f in dataset.files]
    assert relative == ["a.png", os.path.join("b", "c.TIF"), os.path.join("b", "deep", "z.tiff")]
    assert len(dataset) == 3


def test_explicit_file_list_keeps_order(tmp_path: Path) -> None:
    first = write_chip(tmp_path / "z.png", np.full((1, 4, 4), 1, dtype=np.uint8))
    second = write_chip(tmp_path / "a.png", np.full((1, 4, 4), 2, dtype=np.uint8))
    dataset = SARChips(files=[str(first), str(second)])
    assert float(dataset[0]["image"][0, 0, 0]) == 1.0
    assert float(dataset[1]["image"][0, 0, 0]) == 2.0
    assert float(dataset[-1]["image"][0, 0, 0]) == 2.0
    with pytest.raises(IndexError, match="out of range for 2 chips"):
        dataset[2]


@pytest.mark.parametrize("kwargs", [{}, {"root": "x", "files": ["y"]}])
def test_root_or_files_exactly_one(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one of root"):
        SARChips(**kwargs)  # type: ignore[arg-type]


def test_unknown_units(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="units must be one of"):
        SARChips(root=str(tmp_path), units="sigma")  # type: ignore[arg-type]


def test_mixed_channel_counts_name_both_files(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    write_chip(tmp_path / "b.png", ramp(3, "uint8"))
    with pytest.raises(ValueError, match=r"a\.png has 1 and .*b\.png has 3"):
        SARChips(root=str(tmp_path))


def test_complex_data_is_rejected(tmp_path: Path) -> None:
    write_chip(tmp_path / "slc.tif", np.ones((1, 4, 4), dtype=np.complex64))
    with pytest.raises(ValueError, match=r"slc\.tif holds complex"):
        SARChips(root=str(tmp_path))


def test_empty_folder_names_folder_and_extensions(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no chips")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*\.png, \.tif, \.tiff"):
        SARChips(root=str(tmp_path))


def test_missing_root_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        SARChips(root=str(tmp_path / "absent"))


def test_empty_file_list() -> None:
    with pytest.raises(FileNotFoundError, match="files list"):
        SARChips(files=[])


def test_corrupt_file_raises_at_init_naming_it(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    with pytest.raises(OSError, match=r"cannot read SAR chip .*bad\.png"):
        SARChips(root=str(tmp_path))


def test_corrupt_file_is_skipped_and_counted(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.warns(UserWarning, match=r"skipping unreadable SAR chip .*bad\.png"):
        dataset = SARChips(root=str(tmp_path), skip_bad_files=True)
    assert dataset.skipped_files == [str(bad)]
    assert len(dataset) == 1


def test_all_files_corrupt_in_skip_mode(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"junk")
    with (
        pytest.warns(UserWarning, match="skipping"),
        pytest.raises(OSError, match="none of the 1 chip files could be read"),
    ):
        SARChips(root=str(tmp_path), skip_bad_files=True)


def truncate_pixels(path: Path) -> None:
    """Keep the header of a PNG but cut its compressed pixel data short."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_pixels_fail_at_getitem(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (1, 64, 64), dtype=np.uint8)
    bad = write_chip(tmp_path / "a.png", noisy)
    write_chip(tmp_path / "b.png", np.full((1, 64, 64), 9, dtype=np.uint8))
    truncate_pixels(bad)
    dataset = SARChips(root=str(tmp_path))
    assert len(dataset) == 2
    with pytest.raises(OSError, match=r"cannot read SAR chip .*a\.png"):
        dataset[0]


def test_truncated_pixels_are_replaced_in_skip_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bad = write_chip(tmp_path / "a.png", rng.integers(0, 255, (1, 64, 64), dtype=np.uint8))
    write_chip(tmp_path / "b.png", np.full((1, 64, 64), 9, dtype=np.uint8))
    truncate_pixels(bad)
    dataset = SARChips(root=str(tmp_path), skip_bad_files=True)
    with pytest.warns(UserWarning, match=r"skipping unreadable SAR chip .*a\.png"):
        image = dataset[0]["image"]
    assert float(image.max()) == 9.0
    assert dataset.skipped_files == [str(bad)]


def test_png_integrity_check(tmp_path: Path) -> None:
    path = write_chip(tmp_path / "a.png", np.arange(64, dtype=np.uint8).reshape(1, 8, 8))
    data = path.read_bytes()
    check_png_integrity(data)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    with pytest.raises(OSError, match="fails its CRC check"):
        check_png_integrity(bytes(damaged))
    with pytest.raises(OSError, match="cut short"):
        check_png_integrity(data[:-14])
    with pytest.raises(OSError, match="no IEND chunk"):
        check_png_integrity(data[:-12])
    with pytest.raises(OSError, match="not a PNG file"):
        check_png_integrity(b"GIF89a")


def test_transforms_are_applied(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    dataset = SARChips(root=str(tmp_path), transforms=lambda s: {"image": s["image"] * 2})
    assert float(dataset[0]["image"].max()) == 2 * 63


def test_subset_shares_settings(tmp_path: Path) -> None:
    for name in "abc":
        write_chip(tmp_path / f"{name}.png", ramp(1, "uint8"))
    dataset = SARChips(root=str(tmp_path), units="dn")
    subset = dataset.subset([2, 0], transforms=lambda s: {"image": s["image"] + 1})
    assert [os.path.basename(f) for f in subset.files] == ["c.png", "a.png"]
    assert subset.units == "dn" and subset.channels == 1
    assert float(subset[0]["image"].min()) == 1.0
    assert dataset.transforms is None and len(dataset) == 3


def test_sanitize_and_convert_rejects_unknown_units() -> None:
    with pytest.raises(ValueError, match="units must be one of"):
        sanitize_and_convert(torch.ones(1, 2, 2), "linear", None, "x")  # type: ignore[arg-type]


def test_clip_check_names_file_and_range_once() -> None:
    check = ClipCheck([-25.0], [0.0], max_fraction=0.05, scale="dB")
    image = torch.full((1, 4, 4), -10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(image, "ok.tif")
        image[0, 0, 0] = 5.0  # 1 of 16 pixels, 6.25 % > 5 %
        with pytest.raises(
            UserWarning,
            match=r"x\.tif: normalization clips 6\.2% of the pixels of channel 1 "
            r"\(0\.0% below and 6\.2% above the range \[-25, 0\] dB\)",
        ):
            check(image, "x.tif")
        check(image, "x.tif")  # once per file
    with pytest.raises(ValueError, match=r"max_clipped_fraction must be in \[0, 1\]"):
        ClipCheck([0.0], [1.0], max_fraction=2.0)


@pytest.mark.parametrize("units, words", [("dn", "raw DN"), ("power", "dB (stored as power)")])
def test_plot_titles_units(tmp_path: Path, units: str, words: str) -> None:
    write_chip(tmp_path / "a.tif", ramp(2, "float32") + 1)
    dataset = SARChips(root=str(tmp_path), units=units)  # type: ignore[arg-type]
    fig = dataset.plot(dataset[0], suptitle="chip")
    assert isinstance(fig, Figure)
    assert words in fig.axes[0].get_title()
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)
    plt.close(fig)


def test_plot_without_titles(tmp_path: Path) -> None:
    write_chip(tmp_path / "a.png", ramp(1, "uint8"))
    dataset = SARChips(root=str(tmp_path))
    fig = dataset.plot(dataset[0], show_titles=False)
    assert fig.axes[0].get_title() == ""
    plt.close(fig)


def test_real_volkov_chips(volkov_chips: Path) -> None:
    dataset = SARChips(root=str(volkov_chips))
    assert len(dataset) == 100
    assert dataset.channels == 1 and dataset.dtypes == ("uint8",)
    for index in (0, 99):
        image = dataset[index]["image"]
        assert image.shape == (1, 1024, 1024)
        assert image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 255.0
        assert float(image.std()) > 1.0

import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from rasterio.transform import from_origin
from torchgeo.datasets import DatasetNotFoundError
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

from torchgeo_dic3l.datasets.scenes import SARScenes, band_file_regex

SIZE = 300
RES = 10.0
LEFT, TOP = 500000.0, 4000000.0
BORDER = 10


def scene_array(bands: int = 2, seed: int = 0) -> np.ndarray:
    """Linear sigma0 power with a zero (nodata) border on the top and left."""
    rng = np.random.default_rng(seed)
    means = np.array([0.05, 0.01][:bands] + [0.02] * max(0, bands - 2)).reshape(-1, 1, 1)
    array = (rng.gamma(4.0, 1.0 / 4.0, (bands, SIZE, SIZE)) * means).astype(np.float32)
    array[:, :BORDER, :] = 0.0
    array[:, :, :BORDER] = 0.0
    return array


def write_scene(
    path: Path, array: np.ndarray, nodata: float | None = 0.0, left: float = LEFT
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": "EPSG:32633",
        "transform": from_origin(left, TOP, RES, RES),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def window(col: int, row: int, size: int) -> tuple[slice, slice]:
    """Geo slice of a size x size pixel window whose top-left pixel is (row, col)."""
    xmin = LEFT + col * RES
    ymax = TOP - row * RES
    return slice(xmin, xmin + size * RES), slice(ymax - size * RES, ymax)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    array = scene_array()
    write_scene(tmp_path / "scenes" / "S1A_IW_20201107_VVVH.tif", array)
    return tmp_path / "scenes", array


def test_interior_window_matches_file_in_db(scene: tuple[Path, np.ndarray]) -> None:
    root, array = scene
    dataset = SARScenes(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample = dataset[window(100, 50, 64)]
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (2, 64, 64)
    expected = 10 * np.log10(array[:, 50:114, 100:164].astype(np.float64))
    assert np.allclose(image.numpy(), expected, atol=1e-4)
    assert sample["bounds"].shape == (9,) and sample["transform"].shape == (9,)
    assert dataset.res == (RES, RES)


def test_nodata_border_is_masked_with_a_warning(scene: tuple[Path, np.ndarray]) -> None:
    root, array = scene
    dataset = SARScenes(root)
    with pytest.warns(
        UserWarning, match=r"VVVH\.tif at x .*: 1080 of 2048 pixels are invalid \(1080 nodata\)"
    ):
        image = dataset[window(0, 0, 32)]["image"]
    assert torch.isfinite(image).all()
    assert float(image[:, :BORDER].max()) == pytest.approx(-100.0)
    expected = 10 * np.log10(array[:, BORDER:32, BORDER:32])
    assert np.allclose(image[:, BORDER:, BORDER:].numpy(), expected, atol=1e-4)


def test_samplers_give_patch_shapes(scene: tuple[Path, np.ndarray]) -> None:
    root, _ = scene
    dataset = SARScenes(root)
    random = RandomPatchSampler(dataset, size=48, length=3, generator=0)
    for index in random:
        assert dataset[index]["image"].shape == (2, 48, 48)
    gridded = GriddedPatchSampler(dataset, size=100, stride=100)
    assert len(gridded) == 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = {tuple(dataset[index]["image"].shape) for index in gridded}
    assert shapes == {(2, 100, 100)}


def test_float_file_without_nodata_tag(tmp_path: Path) -> None:
    array = np.full((2, 64, 64), 0.1, dtype=np.float32)
    array[0, 0, 0] = np.nan
    write_scene(tmp_path / "a.tif", array, nodata=None)
    dataset = SARScenes(tmp_path)
    assert math.isnan(dataset.fill_value)
    with pytest.warns(UserWarning, match="1 NaN/inf"):
        image = dataset[window(0, 0, 16)]["image"]
    assert float(image[0, 0, 0]) == pytest.approx(-100.0)
    assert float(image[1, 0, 0]) == pytest.approx(-10.0)
    with pytest.warns(UserWarning, match="NaN/inf"):
        outside = dataset[window(56, 0, 16)]["image"]
    assert float(outside[:, :, 8:].max()) == pytest.approx(-100.0)


def test_integer_file_without_nodata_tag_uses_zero(tmp_path: Path) -> None:
    array = np.full((2, 32, 32), 400, dtype=np.uint16)
    array[:, 0, 0] = 0
    write_scene(tmp_path / "a.tif", array, nodata=None)
    dataset = SARScenes(tmp_path, units="amplitude")
    assert dataset.fill_value == 0.0
    with pytest.warns(UserWarning, match="2 nodata"):
        image = dataset[window(0, 0, 8)]["image"]
    assert float(image[0, 1, 1]) == pytest.approx(20 * math.log10(400), abs=1e-4)


def test_db_units_and_explicit_nodata(tmp_path: Path) -> None:
    array = np.full((2, 32, 32), -15.0, dtype=np.float32)
    array[:, 0, 0] = -9999.0
    write_scene(tmp_path / "a.tif", array, nodata=None)
    dataset = SARScenes(tmp_path, units="db", nodata=-9999.0)
    with pytest.warns(UserWarning, match="2 of 128 pixels are invalid"):
        image = dataset[window(0, 0, 8)]["image"]
    assert torch.equal(image, torch.full_like(image, -15.0))


def test_file_bands_select_a_band(scene: tuple[Path, np.ndarray]) -> None:
    root, array = scene
    dataset = SARScenes(root, bands=["VH"], file_bands=["VV", "VH"])
    image = dataset[window(100, 100, 8)]["image"]
    assert image.shape == (1, 8, 8)
    assert np.allclose(image[0].numpy(), 10 * np.log10(array[1, 100:108, 100:108]), atol=1e-4)


@pytest.mark.parametrize(
    "names",
    [
        (
            "S1A_IW_20201107T135241_DVP_RTC10_G_gpuned_5AHV_VV.tif",
            "S1A_IW_20201107T135241_DVP_RTC10_G_gpuned_5AHV_VH.tif",
        ),
        ("s1a-iw-grd-vv-20201107t135241.tiff", "s1a-iw-grd-vh-20201107t135241.tiff"),
    ],
)
def test_one_file_per_band(tmp_path: Path, names: tuple[str, str]) -> None:
    array = scene_array()
    write_scene(tmp_path / names[0], array[:1])
    write_scene(tmp_path / names[1], array[1:])
    dataset = SARScenes(tmp_path, bands=["VH", "VV"], band_files=True)
    assert len(dataset) == 1
    image = dataset[window(50, 50, 8)]["image"]
    assert np.allclose(image[0].numpy(), 10 * np.log10(array[1, 50:58, 50:58]), atol=1e-4)
    assert np.allclose(image[1].numpy(), 10 * np.log10(array[0, 50:58, 50:58]), atol=1e-4)


def test_band_regex_ignores_band_letters_inside_words() -> None:
    import re

    pattern = re.compile(band_file_regex("HV"))
    match = pattern.match("S1A_IW_DVP_RTC10_G_gpuned_5AHV_HV.tif")
    assert match is not None and match.start("band") == len("S1A_IW_DVP_RTC10_G_gpuned_5AHV_")
    assert pattern.match("S1A_IW_5AHV_VV.tif") is None


def test_missing_band_file_names_it(tmp_path: Path) -> None:
    write_scene(tmp_path / "scene_VV.tif", scene_array(1))
    with pytest.raises(
        FileNotFoundError,
        match=r"band VH of scene .*scene_VV\.tif is missing: expected .*scene_VH\.tif",
    ):
        SARScenes(tmp_path, band_files=True)


def test_wrong_band_count(tmp_path: Path) -> None:
    write_scene(tmp_path / "a.tif", scene_array(3))
    with pytest.raises(ValueError, match=r"a\.tif has 3 band\(s\) but 2 were expected \(VV, VH\)"):
        SARScenes(tmp_path)


def test_band_files_must_be_single_band(tmp_path: Path) -> None:
    array = scene_array()
    write_scene(tmp_path / "x_VV.tif", array)
    write_scene(tmp_path / "x_VH.tif", array)
    with pytest.raises(ValueError, match="one band per file"):
        SARScenes(tmp_path, band_files=True)


def test_disagreeing_nodata_tags(tmp_path: Path) -> None:
    array = scene_array()
    write_scene(tmp_path / "a.tif", array, nodata=0.0)
    write_scene(tmp_path / "b.tif", array, nodata=-1.0, left=LEFT + SIZE * RES)
    with pytest.raises(ValueError, match=r"a\.tif has 0.0 and .*b\.tif has -1.0; pass nodata="):
        SARScenes(tmp_path)
    assert SARScenes(tmp_path, nodata=0.0).nodata == 0.0


def test_corrupt_scene_names_the_file(scene: tuple[Path, np.ndarray]) -> None:
    root, _ = scene
    (root / "broken.tif").write_bytes(b"not a tiff")
    (root / "notes.txt").write_text("ignored")
    with pytest.raises(OSError, match=r"cannot read SAR scene .*broken\.tif"):
        SARScenes(root)


def test_no_scenes(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Dataset not found"):
        SARScenes(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bands": []}, "non-empty list"),
        ({"bands": ["VV", "VV"]}, "without repeats"),
        ({"units": "dn"}, "units must be one of"),
        ({"band_files": True, "file_bands": ["VV"]}, "file_bands is only for"),
        ({"bands": ["HH"], "file_bands": ["VV", "VH"]}, r"bands \['HH'\] are not in file_bands"),
    ],
)
def test_argument_errors(
    scene: tuple[Path, np.ndarray], kwargs: dict[str, object], message: str
) -> None:
    root, _ = scene
    with pytest.raises(ValueError, match=message):
        SARScenes(root, **kwargs)  # type: ignore[arg-type]


def test_plot(scene: tuple[Path, np.ndarray]) -> None:
    root, _ = scene
    dataset = SARScenes(root)
    fig = dataset.plot(dataset[window(100, 100, 32)], suptitle="scene")
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_title() == "VV, VH, VV-VH (dB), 2-98 % stretch"
    plt.close(fig)
    single = SARScenes(root, bands=["VV"], file_bands=["VV", "VH"])
    fig = single.plot(single[window(100, 100, 32)], show_titles=False)
    assert fig.axes[0].get_title() == ""
    plt.close(fig)

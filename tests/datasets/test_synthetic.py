import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from torchgeo_dic3l.datasets.synthetic import (
    SEGMENTATION_SEED_OFFSET,
    SyntheticSARPretrain,
    SyntheticSARSegmentation,
)
from torchgeo_dic3l.datasets.synthetic_world import (
    CLASS_BACKSCATTER,
    LANDCOVER_CLASSES,
    POLARIZATIONS,
    LandCover,
    simulate_scene,
)
from torchgeo_dic3l.transforms import validate_bands

SIZE = 64


def class_means(seeds: range, size: int = 128, looks: float = 4.0) -> tuple[dict, dict]:
    """Mean dB per class and channel over several scenes, clean and speckled."""
    sums = {"clean": np.zeros((6, 2)), "image": np.zeros((6, 2))}
    counts = np.zeros(6)
    for seed in seeds:
        scene = simulate_scene(seed, size, looks)
        labels = scene.landcover.ravel()
        counts += torch.bincount(labels, minlength=6).numpy()
        for key in sums:
            values = getattr(scene, key).reshape(2, -1)
            for c in range(6):
                sums[key][c] += values[:, labels == c].sum(dim=1).double().numpy()
    assert (counts > 0).all(), f"a class is missing from all scenes: {counts}"
    means = {key: total / counts[:, None] for key, total in sums.items()}
    return means["clean"], means["image"]


def test_scene_shapes_and_types() -> None:
    scene = simulate_scene(3, size=SIZE)
    image, landcover = scene.image, scene.landcover
    assert image.shape == (2, SIZE, SIZE) and image.dtype == torch.float32
    assert landcover.shape == (SIZE, SIZE) and landcover.dtype == torch.int64
    assert torch.isfinite(image).all()
    assert int(landcover.min()) >= 0 and int(landcover.max()) < len(LANDCOVER_CLASSES)
    assert LANDCOVER_CLASSES[LandCover.WATER] == "water"
    assert LANDCOVER_CLASSES[LandCover.BARE_SOIL] == "bare soil"


def test_same_seed_same_scene_regardless_of_global_rng() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = simulate_scene(11, SIZE)
    torch.manual_seed(2)
    np.random.seed(2)
    torch.rand(10)
    second = simulate_scene(11, SIZE)
    assert torch.equal(first.image, second.image)
    assert torch.equal(first.clean, second.clean)
    assert torch.equal(first.landcover, second.landcover)


def test_different_seeds_differ() -> None:
    a, b = simulate_scene(0, SIZE), simulate_scene(1, SIZE)
    assert not torch.equal(a.landcover, b.landcover)
    assert (a.image - b.image).abs().mean() > 1.0


def test_class_means_match_design() -> None:
    clean, speckled = class_means(range(8))
    design = np.array([[c.vv, c.vh] for c in CLASS_BACKSCATTER])
    # Speckle-free means sit on the design values; speckled dB means are lower by the
    # log-Gamma bias (about 0.57 dB at 4 looks) and stay within 1.5 dB.
    np.testing.assert_allclose(clean, design, atol=0.5)
    np.testing.assert_allclose(speckled, design, atol=1.5)
    vv, vh = speckled[:, 0], speckled[:, 1]
    assert vh.argmin() == LandCover.WATER
    assert vv.argmax() == LandCover.URBAN and vh.argmax() == LandCover.URBAN


def test_speckle_bias_in_db_matches_gamma_theory() -> None:
    looks = 4
    scene = simulate_scene(5, 128, looks)
    # E[10 log10(G / L)] for G ~ Gamma(L) is 10 / ln 10 * (digamma(L) - ln L).
    digamma = -0.5772156649 + sum(1 / k for k in range(1, looks))
    expected = 10 / math.log(10) * (digamma - math.log(looks))
    measured = float((scene.image - scene.clean).mean())
    assert measured == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("looks", [1.0, 4.0, 10.0])
def test_speckle_is_unit_mean_gamma(looks: float) -> None:
    scene = simulate_scene(7, 128, looks)
    ratio = 10 ** ((scene.image - scene.clean).double() / 10)
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)
    cv = float(ratio.std() / ratio.mean())
    assert cv == pytest.approx(1 / math.sqrt(looks), rel=0.04)


def test_homogeneous_water_has_speckle_coefficient_of_variation() -> None:
    looks, block = 4.0, 8
    cvs = []
    for seed in range(12):
        scene = simulate_scene(seed, 128, looks)
        power = 10 ** (scene.image[0].double() / 10)
        blocks = power.unfold(0, block, block).unfold(1, block, block).reshape(-1, block**2)
        water = scene.landcover == LandCover.WATER
        inside = water.unfold(0, block, block).unfold(1, block, block).reshape(-1, block**2)
        selected = blocks[inside.all(dim=1)]
        if len(selected):
            cvs.append(selected.std(dim=1) / selected.mean(dim=1))
    cv = torch.cat(cvs)
    assert cv.numel() >= 20
    assert float(cv.mean()) == pytest.approx(1 / math.sqrt(looks), rel=0.1)


def test_infinite_looks_is_speckle_free() -> None:
    scene = simulate_scene(2, SIZE, math.inf)
    assert torch.equal(scene.image, scene.clean)


def test_roads_are_thin_lines() -> None:
    for seed in range(10):
        road = simulate_scene(seed, 128).landcover == LandCover.ROAD
        assert road.sum() > 0, f"scene {seed} has no road"
        # Max-pooling the non-road mask over 7 x 7 marks pixels within 3 px of it.
        off_road = (~road).float()[None, None]
        near_off_road = torch.nn.functional.max_pool2d(off_road, 7, stride=1, padding=3)[0, 0] > 0
        assert (near_off_road[road]).float().mean() > 0.98


def test_urban_has_bright_double_bounce_points() -> None:
    scene = simulate_scene(4, 256, math.inf)
    urban = scene.clean[:, scene.landcover == LandCover.URBAN]
    assert urban.shape[1] > 100
    vv_design = CLASS_BACKSCATTER[LandCover.URBAN].vv
    assert float(torch.quantile(urban[0], 0.99)) > vv_design + 5
    # Double bounce is mostly co-polarised: the brightest points gain more in VV.
    brightest = urban[0] > torch.quantile(urban[0], 0.99)
    assert float((urban[0] - urban[1])[brightest].mean()) > float((urban[0] - urban[1]).mean())


def test_crop_parcels_vary() -> None:
    scene = simulate_scene(6, 256, math.inf)
    crops = scene.clean[0, scene.landcover == LandCover.CROPS]
    assert float(crops.std()) > 1.0


@pytest.mark.parametrize("bad", [{"seed": -1}, {"size": 16}, {"looks": 0.0}, {"looks": math.nan}])
def test_generator_rejects_bad_arguments(bad: dict) -> None:
    args = {"seed": 0, "size": SIZE, "looks": 4.0} | bad
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        simulate_scene(**args)


def test_pretrain_samples() -> None:
    dataset = SyntheticSARPretrain(length=3, size=SIZE, seed=10)
    assert len(dataset) == 3
    sample = dataset[2]
    assert set(sample) == {"image"}
    assert torch.equal(sample["image"], simulate_scene(12, SIZE).image)
    with pytest.raises(IndexError, match="out of range"):
        dataset[3]


def test_channel_selection() -> None:
    full = SyntheticSARPretrain(length=1, size=SIZE)[0]["image"]
    vh = SyntheticSARPretrain(length=1, size=SIZE, bands=("VH",))[0]["image"]
    swapped = SyntheticSARPretrain(length=1, size=SIZE, bands=["vh", "vv"])[0]["image"]
    assert vh.shape == (1, SIZE, SIZE)
    assert torch.equal(vh[0], full[1])
    assert torch.equal(swapped, full.flip(0))
    assert validate_bands("VV", POLARIZATIONS) == ("VV",)


@pytest.mark.parametrize(
    ("bands", "match"),
    [(("HH",), "unknown band"), ((), "at least one"), (("VV", "vv"), "must not repeat")],
)
def test_bad_bands(bands: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSARPretrain(bands=bands)


def test_transforms_are_applied() -> None:
    def double(sample: dict) -> dict:
        return {**sample, "image": sample["image"] * 2}

    plain = SyntheticSARSegmentation(length=1, size=SIZE)[0]
    doubled = SyntheticSARSegmentation(length=1, size=SIZE, transforms=double)[0]
    assert torch.equal(doubled["image"], plain["image"] * 2)
    assert torch.equal(doubled["mask"], plain["mask"])


def test_segmentation_landcover_sample() -> None:
    dataset = SyntheticSARSegmentation(length=2, size=SIZE)
    sample = dataset[1]
    assert sample["image"].shape == (2, SIZE, SIZE)
    assert sample["mask"].shape == (SIZE, SIZE) and sample["mask"].dtype == torch.int64
    assert dataset.classes == list(LANDCOVER_CLASSES) and dataset.num_classes == 6
    scene = simulate_scene(dataset.scene_seed(1), SIZE)
    image, landcover = scene.image, scene.landcover
    assert torch.equal(sample["mask"], landcover) and torch.equal(sample["image"], image)


@pytest.mark.parametrize(
    ("task", "label"), [("water", LandCover.WATER), ("roads", LandCover.ROAD)]
)
def test_binary_masks_match_landcover(task: str, label: int) -> None:
    binary = SyntheticSARSegmentation(task=task, split="val", length=4, size=SIZE)
    landcover = SyntheticSARSegmentation(split="val", length=4, size=SIZE)
    assert binary.num_classes == 2 and binary.classes[0] == "background"
    positives = 0
    for i in range(len(binary)):
        mask = binary[i]["mask"]
        assert mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1}
        assert torch.equal(mask.bool(), landcover[i]["mask"] == label)
        positives += int(mask.sum())
    assert positives > 0


def test_splits_use_disjoint_scenes() -> None:
    seeds = {
        split: {
            SyntheticSARSegmentation(split=split, length=50, seed=s).scene_seed(i)
            for s in (0, 7)
            for i in range(50)
        }
        for split in ("train", "val", "test")
    }
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    pretrain = SyntheticSARPretrain(length=50)
    assert min(min(s) for s in seeds.values()) >= SEGMENTATION_SEED_OFFSET
    assert max(pretrain.scene_seed(i) for i in range(50)) < SEGMENTATION_SEED_OFFSET
    train = SyntheticSARSegmentation(split="train", length=1, size=SIZE)[0]
    val = SyntheticSARSegmentation(split="val", length=1, size=SIZE)[0]
    assert not torch.equal(train["image"], val["image"])


def test_label_fraction_keeps_a_nested_subset_of_train() -> None:
    full = SyntheticSARSegmentation(length=40, size=SIZE)
    quarter = SyntheticSARSegmentation(length=40, size=SIZE, label_fraction=0.25)
    tiny = SyntheticSARSegmentation(length=40, size=SIZE, label_fraction=0.001)
    val = SyntheticSARSegmentation(split="val", length=40, size=SIZE, label_fraction=0.25)
    assert (len(full), len(quarter), len(tiny), len(val)) == (40, 10, 1, 40)
    assert [quarter.scene_seed(i) for i in range(10)] == [full.scene_seed(i) for i in range(10)]
    assert torch.equal(quarter[9]["mask"], full[9]["mask"])
    with pytest.raises(IndexError):
        quarter[10]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"task": "buildings"}, "task must be one of"),
        ({"split": "validation"}, "split must be one of"),
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"label_fraction": 1.5}, "label_fraction"),
        ({"length": 0}, "length must be a positive integer"),
        ({"size": 8}, "size must be an integer >= 32"),
        ({"looks": -1.0}, "looks must be a positive number"),
        ({"seed": -5}, "seed must be a non-negative integer"),
        ({"bands": ("VV", "HV")}, "unknown band"),
    ],
)
def test_segmentation_rejects_bad_arguments(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSARSegmentation(**bad)


def test_plot_segmentation_with_prediction() -> None:
    dataset = SyntheticSARSegmentation(length=1, size=SIZE)
    sample = dataset[0]
    sample["prediction"] = sample["mask"].clone()
    fig = dataset.plot(sample, suptitle="synthetic")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == list(LANDCOVER_CLASSES)
    assert fig.axes[0].get_title() == "Image (VV, VH, VV-VH)"
    plt.close(fig)


def test_plot_single_channel_binary_and_pretrain() -> None:
    dataset = SyntheticSARSegmentation(task="water", length=1, size=SIZE, bands=("VH",))
    fig = dataset.plot(dataset[0], show_titles=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "water"]
    plt.close(fig)
    pretrain = SyntheticSARPretrain(length=1, size=SIZE, bands=("VV",))
    fig = pretrain.plot(pretrain[0])
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "Image (VV)"
    plt.close(fig)

"""Draw the figures of the documentation with the project's own code.

Each entry of :data:`FIGURES` writes one PNG and returns a sentence that says what
the figure was drawn from (real data beside the repository when it is there,
otherwise generated data). The Sphinx directive ``generated-figure`` (in
``docs/_ext/dic3l_docs.py``) calls them while the pages are read; from the command
line::

    python docs/make_figures.py OUTPUT_FOLDER [NAME ...]
"""

import argparse
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from rasterio.transform import from_origin
from torch import Tensor

from torchgeo_dic3l.datasets import (
    LANDCOVER_CLASSES,
    LabelledSARScene,
    SARChips,
    SARScenes,
    SyntheticSARPretrain,
    SyntheticSARSegmentation,
)
from torchgeo_dic3l.datasets.synthetic_world import simulate_scene
from torchgeo_dic3l.ssl.box_matching import match_boxes
from torchgeo_dic3l.ssl.box_plot import plot_box_pairs
from torchgeo_dic3l.transforms import (
    POLARIZATION_DB_RANGES,
    RangeNormalize,
    Speckle,
    db_to_power,
    default_db_ranges,
)
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewOptions

#: Real SAR data kept beside the repository (see the data page); optional.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOLKOV_CHIPS = SHARED_DATA / "s1_vh_volkov" / "sar"
POLSAR_SF = SHARED_DATA / "polsar_sf_airsar"

#: Resolution of the written PNGs.
DPI = 110


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with a fixed torch seed, leaving the global random state as it was.

    Args:
        seed: Seed of the block.

    Yields:
        Nothing.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def save(figure: Figure, path: Path) -> None:
    """Write a figure as PNG and close it.

    Args:
        figure: The figure.
        path: Target file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(figure)


def write_geotiff(path: Path, bands: np.ndarray, dtype: str = "float32") -> None:
    """Write ``[C, H, W]`` values as a GeoTIFF in UTM zone 35N with 10 m pixels.

    Args:
        path: Target file.
        bands: Values to write.
        dtype: Data type of the file.
    """
    count, height, width = bands.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        crs="EPSG:32635",
        transform=from_origin(500_000, 5_600_000, 10, 10),
    ) as dst:
        dst.write(bands.astype(dtype))


def box_matching(path: Path) -> str:
    """Two views of one image and the boxes matched in their overlap.

    Args:
        path: Target PNG.

    Returns:
        Where the image comes from.
    """
    if VOLKOV_CHIPS.is_dir():
        chips = SARChips(root=str(VOLKOV_CHIPS), units="dn")
        image = RangeNormalize([0.0], [255.0])(chips[0]["image"])
        size = 448
        source = (
            f"Drawn from the real Sentinel-1 VH chip {Path(chips.files[0]).name} "
            "(1024 x 1024 px, 8-bit) of ../shared/data/s1_vh_volkov, at the published view "
            "size of 448 px."
        )
    else:
        scene = simulate_scene(3, size=256).image
        image = RangeNormalize(*default_db_ranges(["VV", "VH"]))(scene)
        size = 128
        source = (
            "Drawn from a scene of the synthetic SAR world (simulate_scene, seed 3, VV "
            "shown): the real Sentinel-1 chips in ../shared/data were not found."
        )
    augmentation = TwoViewAugmentation(size, ViewOptions(vflip_p=0.5, rot90=True))
    # The first seed whose pair keeps at least six boxes makes a readable figure.
    for seed in range(20):
        with seeded(seed):
            views = augmentation(image[None])
            generator = torch.Generator().manual_seed(seed)
            pairs = match_boxes(views.geom1, views.geom2, size, generator=generator)
        if int(pairs.valid.sum()) >= 6:
            break
    figure = plot_box_pairs(image, views.view1[0], views.view2[0], views.geom1, views.geom2, pairs)
    save(figure, path)
    return f"{source} View seed {seed}, {int(pairs.valid.sum())} valid boxes."


def synthetic_pretrain(path: Path) -> str:
    """A pre-training scene of the synthetic world, as its dataset plots it.

    Args:
        path: Target PNG.

    Returns:
        What is shown.
    """
    dataset = SyntheticSARPretrain(length=1, size=256, seed=7)
    save(dataset.plot(dataset[0], suptitle="SyntheticSARPretrain, scene 7"), path)
    return "SyntheticSARPretrain(size=256, seed=7)[0] drawn by SyntheticSARPretrain.plot."


def synthetic_segmentation(path: Path) -> str:
    """A labelled land-cover scene of the synthetic world.

    Args:
        path: Target PNG.

    Returns:
        What is shown.
    """
    dataset = SyntheticSARSegmentation(task="landcover", split="test", length=4, size=256)
    save(dataset.plot(dataset[2], suptitle="SyntheticSARSegmentation, landcover"), path)
    return (
        'SyntheticSARSegmentation(task="landcover", split="test", size=256)[2] drawn by '
        "SyntheticSARSegmentation.plot."
    )


def chips(path: Path) -> str:
    """One unlabelled chip as :class:`SARChips` plots it.

    Args:
        path: Target PNG.

    Returns:
        Where the chip comes from.
    """
    if VOLKOV_CHIPS.is_dir():
        dataset = SARChips(root=str(VOLKOV_CHIPS), units="dn")
        save(dataset.plot(dataset[1], suptitle=Path(dataset.files[1]).name), path)
        return (
            f"The real Sentinel-1 VH chip {Path(dataset.files[1]).name} of "
            "../shared/data/s1_vh_volkov, read with SARChips(units='dn')."
        )
    with tempfile.TemporaryDirectory() as folder:
        power = db_to_power(simulate_scene(11, size=256).image).numpy()
        write_geotiff(Path(folder) / "chip_000.tif", power)
        dataset = SARChips(root=folder, units="power")
        save(dataset.plot(dataset[0], suptitle="chip_000.tif"), path)
    return (
        "A synthetic VV + VH chip written as a linear-power GeoTIFF and read with "
        "SARChips(units='power'): the real Sentinel-1 chips in ../shared/data were not found."
    )


def scenes(path: Path) -> str:
    """A patch sampled from a GeoTIFF scene by a TorchGeo sampler.

    Args:
        path: Target PNG.

    Returns:
        What the scene is.
    """
    from torchgeo.samplers import RandomPatchSampler

    with tempfile.TemporaryDirectory() as folder:
        power = db_to_power(simulate_scene(21, size=384).image).numpy()
        write_geotiff(Path(folder) / "scene_20201107.tif", power)
        dataset = SARScenes(paths=folder, bands=["VV", "VH"], units="power")
        sampler = RandomPatchSampler(dataset, size=192, length=1, generator=0)
        sample = dataset[next(iter(sampler))]
        save(dataset.plot(sample, suptitle="SARScenes + RandomPatchSampler"), path)
    return (
        "A 192 px patch drawn by RandomPatchSampler from a 384 x 384 px scene of the "
        "synthetic world written as a two-band linear-power GeoTIFF (no Sentinel-1 scene "
        "ships with the project)."
    )


def _labelled_scene() -> tuple[LabelledSARScene, str]:
    """The AIRSAR San Francisco scene if present, else a synthetic labelled scene."""
    if POLSAR_SF.is_dir():
        t3 = POLSAR_SF / "T3"
        dataset = LabelledSARScene(
            images=[str(t3 / f"{name}.bin") for name in ("T11", "T22", "T33")],
            bands=["T11", "T22", "T33"],
            units="power",
            label=str(POLSAR_SF / "SF-AIRSAR-label2d.png"),
            classes=["bare_soil", "mountain", "water", "urban", "vegetation"],
            label_values=[1, 2, 3, 4, 5],
            ignore_values=[0],
            patch_size=64,
            gap=16,
            block_size=128,
            split_seed=20,
            split_method="random",
        )
        return dataset, (
            "The real AIRSAR San Francisco scene (T3 diagonal, PolSF labels) of "
            "../shared/data/polsar_sf_airsar with the settings of "
            "experiments/configs/scene_polsar_sf.yaml."
        )
    folder = Path(tempfile.mkdtemp())
    scene = simulate_scene(31, size=384)
    write_geotiff(folder / "scene.tif", scene.image.numpy())
    write_geotiff(folder / "label.tif", scene.landcover.numpy()[None] + 1, dtype="uint8")
    dataset = LabelledSARScene(
        images=[str(folder / "scene.tif")],
        bands=["VV", "VH"],
        units="db",
        label=str(folder / "label.tif"),
        classes=list(LANDCOVER_CLASSES),
        label_values=list(range(1, len(LANDCOVER_CLASSES) + 1)),
        patch_size=32,
        block_size=96,
    )
    return dataset, (
        "A synthetic labelled scene written as GeoTIFFs: the AIRSAR San Francisco scene "
        "in ../shared/data was not found."
    )


def labelled_scene(path: Path) -> str:
    """A whole labelled scene with its mask, as :meth:`LabelledSARScene.plot` draws it.

    Args:
        path: Target PNG.

    Returns:
        Which scene is shown.
    """
    dataset, source = _labelled_scene()
    whole = {"image": dataset.scene_image, "mask": dataset.scene_mask}
    save(dataset.plot(whole), path)
    return f"{source} The whole scene is passed to plot() as one sample."


def split_layout(path: Path) -> str:
    """The leak-free block split of a labelled scene.

    Args:
        path: Target PNG.

    Returns:
        Which scene is shown.
    """
    dataset, source = _labelled_scene()
    save(dataset.plot_split_layout(), path)
    return f"{source} Drawn by LabelledSARScene.plot_split_layout()."


def speckle(path: Path) -> str:
    """The same speckle-free scene with Gamma speckle of decreasing number of looks.

    Args:
        path: Target PNG.

    Returns:
        What is shown.
    """
    clean = simulate_scene(5, size=160, looks=math.inf).clean[:1]
    panels: list[tuple[str, Tensor]] = [("speckle-free", clean)]
    with seeded(0):
        for looks in (16.0, 4.0, 1.0):
            panels.append((f"Speckle(looks={looks:g})", Speckle(looks=looks, in_db=True)(clean)))
    low, high = POLARIZATION_DB_RANGES["VV"]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for axis, (title, image) in zip(axes, panels, strict=True):
        shown = axis.imshow(image[0].numpy(), cmap="gray", vmin=low, vmax=high)
        axis.set_title(title)
        axis.set_axis_off()
    figure.colorbar(shown, ax=list(axes), fraction=0.015, label="VV (dB)")
    save(figure, path)
    return (
        "VV of the speckle-free synthetic scene 5 (simulate_scene(..., looks=inf).clean) "
        "and the same image through Speckle(in_db=True), all on the default VV range."
    )


def normalization(path: Path) -> str:
    """Histograms of dB values with the default ranges that RangeNormalize maps to [0, 1].

    Args:
        path: Target PNG.

    Returns:
        What is shown.
    """
    dataset = SyntheticSARPretrain(length=8, size=128)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    low, high = default_db_ranges(["VV", "VH"])
    normalized = RangeNormalize(low, high)(images)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for channel, (axis, name) in enumerate(zip(axes, ("VV", "VH"), strict=True)):
        values = images[:, channel].flatten().numpy()
        axis.hist(values, bins=120, color="tab:blue", alpha=0.8)
        axis.axvspan(low[channel], high[channel], color="tab:orange", alpha=0.15)
        for bound in (low[channel], high[channel]):
            axis.axvline(bound, color="tab:orange")
        share = normalized[:, channel]
        clipped = float(((share == 0) | (share == 1)).float().mean()) * 100
        axis.set_title(
            f"{name}: default range [{low[channel]:g}, {high[channel]:g}] dB, "
            f"{clipped:.1f} % clipped"
        )
        axis.set_xlabel("backscatter (dB)")
        axis.set_yticks([])
    save(figure, path)
    return (
        "Pixels of 8 synthetic scenes (SyntheticSARPretrain, speckle L = 4) with the "
        "default ranges of default_db_ranges(['VV', 'VH']) shaded."
    )


def _box(
    axis: plt.Axes, xy: tuple[float, float], size: tuple[float, float], text: str, colour: str
) -> None:
    """Draw a rounded, filled box with centred text.

    Args:
        axis: Target axes in [0, 1] coordinates.
        xy: Centre of the box.
        size: Width and height of the box.
        text: Label.
        colour: Fill colour.
    """
    (x, y), (w, h) = xy, size
    axis.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.006,rounding_size=0.012",
            facecolor=colour,
            edgecolor="#333333",
            linewidth=1.0,
        )
    )
    axis.text(x, y, text, ha="center", va="center", fontsize=8.5, linespacing=1.35)


def _arrow(
    axis: plt.Axes, start: tuple[float, float], end: tuple[float, float], dashed: bool = False
) -> None:
    """Draw an arrow between two points.

    Args:
        axis: Target axes.
        start: Tail.
        end: Head.
        dashed: Dashed line, for paths without gradient.
    """
    axis.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=11,
            linewidth=1.1,
            color="#333333",
            linestyle="--" if dashed else "-",
        )
    )


def method_diagram(path: Path) -> str:
    """The three loss terms of DI3CL and where their inputs come from.

    Args:
        path: Target PNG.

    Returns:
        A note on the notation.
    """
    figure, axis = plt.subplots(figsize=(14, 7))
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_axis_off()
    grey, blue, green, orange, red = "#eeeeee", "#d6e6f5", "#dcefd6", "#fde5c8", "#f6d5d5"

    _box(
        axis,
        (0.055, 0.5),
        (0.09, 0.2),
        'batch["image"]\n[B, C, H, W]\nnormalized\nto [0, 1]',
        grey,
    )
    _box(
        axis,
        (0.19, 0.5),
        (0.12, 0.3),
        "TwoViewAugmentation\n(on the device)\ncrop, flips, turns,\njitter, blur,\n"
        "speckle\n+ view geometry",
        grey,
    )
    _arrow(axis, (0.1, 0.5), (0.13, 0.5))
    _box(
        axis,
        (0.37, 0.82),
        (0.15, 0.16),
        "query encoder\nResNet (self.model)\nview 1 -> layer3, layer4",
        blue,
    )
    _box(
        axis,
        (0.37, 0.18),
        (0.15, 0.2),
        "momentum encoder\nEMA of the query side\nview 2 -> layer3, layer4\n(batch-shuffle BN)",
        blue,
    )
    _box(
        axis,
        (0.37, 0.5),
        (0.15, 0.14),
        "match_boxes\nN boxes inside the\noverlap of the two crops",
        grey,
    )
    _arrow(axis, (0.25, 0.58), (0.295, 0.8))
    _arrow(axis, (0.25, 0.5), (0.295, 0.5))
    _arrow(axis, (0.25, 0.42), (0.295, 0.2), dashed=True)

    _box(
        axis,
        (0.64, 0.84),
        (0.26, 0.2),
        "Global term (MoCo v2)\nq: pool(layer4) -> projector\nk: momentum projector\n"
        "InfoNCE against a queue of K keys",
        green,
    )
    _box(
        axis,
        (0.64, 0.55),
        (0.26, 0.2),
        "Contour Consistency (CC)\nq: pool(layer3) -> CC projector\n"
        "k: momentum CC projector\nInfoNCE against its own queue",
        orange,
    )
    _box(
        axis,
        (0.64, 0.2),
        (0.26, 0.25),
        "Dynamic Instance (DI)\nRoIAlign(layer4) on the matched boxes\n"
        "q: BN projector -> predictor\nk: momentum BN projector\nloss 2 - 2 cos(q, k)",
        red,
    )
    for end in ((0.51, 0.87), (0.51, 0.58), (0.51, 0.27)):
        _arrow(axis, (0.445, 0.82), end)
    for end in ((0.51, 0.8), (0.51, 0.51), (0.51, 0.14)):
        _arrow(axis, (0.445, 0.18), end, dashed=True)
    _arrow(axis, (0.445, 0.5), (0.51, 0.21))

    for y, text, colour in (
        (0.84, "x global_weight\n(0.8)", green),
        (0.55, "x cc_weight\n(0.2)", orange),
        (0.2, "x di_weight\n(5.0)", red),
    ):
        _box(axis, (0.855, y), (0.09, 0.1), text, colour)
        _arrow(axis, (0.77, y), (0.81, y))
        _arrow(axis, (0.9, y), (0.935, 0.5 + (y - 0.5) * 0.1))
    _box(axis, (0.96, 0.5), (0.05, 0.1), "loss", grey)
    axis.text(
        0.5,
        0.015,
        "solid: gradient flows;  dashed: no gradient (momentum side, updated by EMA "
        "with moco_momentum).  Keys of the global and CC terms are all-gathered over "
        "ranks and enqueued after each step.",
        ha="center",
        fontsize=8.5,
        style="italic",
    )
    save(figure, path)
    return (
        "Drawn with matplotlib from the structure of DI3CLTask._step; the numbers are "
        "the default weights."
    )


#: Figure name -> function that writes it and says what it was drawn from.
FIGURES: dict[str, Callable[[Path], str]] = {
    "method_diagram": method_diagram,
    "box_matching": box_matching,
    "synthetic_pretrain": synthetic_pretrain,
    "synthetic_segmentation": synthetic_segmentation,
    "chips": chips,
    "scenes": scenes,
    "labelled_scene": labelled_scene,
    "split_layout": split_layout,
    "speckle": speckle,
    "normalization": normalization,
}


def main(argv: list[str] | None = None) -> None:
    """Write figures into a folder.

    Args:
        argv: Arguments instead of ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description="Draw the documentation's figures.")
    parser.add_argument("output", type=Path, help="folder for the PNG files")
    parser.add_argument("names", nargs="*", help=f"figures to draw: {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    for name in args.names or FIGURES:
        note = FIGURES[name](args.output / f"{name}.png")
        print(f"{args.output / name}.png: {note}")


if __name__ == "__main__":
    main()

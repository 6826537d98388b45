from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from torchgeo_dic3l.ssl.box_matching import match_boxes
from torchgeo_dic3l.ssl.box_plot import plot_box_pairs
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewOptions


def check_plot(image: torch.Tensor, seed: int) -> None:
    torch.manual_seed(seed)
    images = image[None].repeat(2, 1, 1, 1)
    views = TwoViewAugmentation(128, ViewOptions(hflip_p=0.5, vflip_p=0.5, rot90=True))(images)
    pairs = match_boxes(views.geom1, views.geom2, 128)
    fig = plot_box_pairs(
        images[1],
        views.view1[1],
        views.view2[1],
        views.geom1,
        views.geom2,
        pairs,
        index=1,
        suptitle="pairs",
    )
    kept = int(pairs.valid.view(2, 10)[1].sum())
    axes = fig.axes
    assert len(axes) == 3
    assert len(axes[0].patches) == 2 + kept  # two crops, then the boxes
    assert len(axes[1].patches) == len(axes[2].patches) == kept
    colours = [p.get_edgecolor() for p in axes[1].patches]
    assert colours == [p.get_edgecolor() for p in axes[2].patches]
    assert colours == [p.get_edgecolor() for p in axes[0].patches[2:]]
    assert len(set(colours)) == kept
    assert fig.get_suptitle() == "pairs"
    plt.close(fig)


def test_plot_box_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    check_plot(torch.rand(2, 150, 200, generator=gen), seed=0)


def test_plot_box_pairs_on_a_real_chip(volkov_chips: Path) -> None:
    chip = sorted(volkov_chips.glob("*.png"))[0]
    array = np.asarray(Image.open(chip), dtype=np.float32) / 255.0
    check_plot(torch.from_numpy(array)[None, :256, :256], seed=1)

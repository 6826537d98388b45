import math
from typing import Any

import pytest
import torch
from box_checks import check_pairs
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou, roi_align

from torchgeo_dic3l.ssl.box_graph import BoxMatcher
from torchgeo_dic3l.ssl.box_matching import (
    BoxOptions,
    BoxPairs,
    _candidate_boxes,
    _greedy_boxes,
    match_boxes,
)
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewGeometry, ViewOptions


def geometry(
    crops: list[list[float]], size: int, flips: bool = False, seed: int = 0
) -> ViewGeometry:
    batch = len(crops)
    gen = torch.Generator().manual_seed(seed)
    return ViewGeometry(
        crops=torch.tensor(crops, dtype=torch.float32),
        hflip=(torch.rand(batch, generator=gen) < 0.5) & flips,
        vflip=(torch.rand(batch, generator=gen) < 0.5) & flips,
        rot90=torch.randint(0, 4, (batch,), generator=gen) * flips,
        size=size,
    )


def sequential_greedy(boxes: torch.Tensor, max_iou: float) -> torch.Tensor:
    """Reference rule: keep a box if its IoU with every earlier kept box is < max_iou."""
    batch, m, _ = boxes.shape
    kept = torch.zeros(batch, m, dtype=torch.bool)
    for b in range(batch):
        iou = box_iou(boxes[b], boxes[b])
        for j in range(m):
            kept[b, j] = not ((iou[j, :j] >= max_iou) & kept[b, :j]).any()
    return kept


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(20, 400),
    width=st.integers(20, 400),
    size=st.sampled_from([32, 64, 224]),
    n=st.sampled_from([1, 4, 10]),
    extra=st.sampled_from([0, 10, 40]),
    max_iou=st.sampled_from([0.3, 0.5, 0.7]),
    min_cells=st.sampled_from([0.25, 0.5, 1.0]),
    max_fraction=st.sampled_from([0.5, 1.0]),
    flips=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_box_pairs_properties(
    height: int,
    width: int,
    size: int,
    n: int,
    extra: int,
    max_iou: float,
    min_cells: float,
    max_fraction: float,
    flips: bool,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    batch = 8
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)

    def random_crops() -> list[list[float]]:
        start = torch.rand(batch, 2, generator=gen) * 0.8
        extent = (1 - start) * (0.05 + 0.95 * torch.rand(batch, 2, generator=gen))
        return (torch.cat([start, start + extent], 1) * scale).tolist()

    crops1 = random_crops()
    crops2 = random_crops()
    crops2[0] = crops1[0]  # at least one well-overlapping pair
    geom1 = geometry(crops1, size, flips, seed)
    geom2 = geometry(crops2, size, flips, seed + 1)
    options = BoxOptions(
        boxes_per_image=n,
        candidates=n + extra,
        min_box_cells=min_cells,
        max_iou=max_iou,
        max_fraction=max_fraction,
    )
    pairs = match_boxes(geom1, geom2, size, options, generator=gen)
    check_pairs(pairs, geom1, geom2, size, n, 32 * min_cells, max_iou)


def smooth_image(height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Two channels of products of sines with 0.5-1.5 periods across the image."""
    y, x = torch.meshgrid(
        (torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij"
    )
    freq = (torch.rand(2, 2, generator=gen) + 0.5) * 2 * math.pi
    phase = torch.rand(2, generator=gen) * 6
    channels = [
        torch.sin(freq[c, 0] * x + phase[c]) * torch.cos(freq[c, 1] * y + phase[c])
        for c in range(2)
    ]
    return torch.stack(channels)


def undo_view_geometry(crop: torch.Tensor, geom: ViewGeometry, b: int) -> torch.Tensor:
    """Bring a crop of a view back to source orientation: inverse turn, then flips."""
    crop = torch.rot90(crop, -int(geom.rot90[b]), dims=(-2, -1))
    if geom.vflip[b]:
        crop = crop.flip(-2)
    if geom.hflip[b]:
        crop = crop.flip(-1)
    return crop


def box_content_errors(
    images: torch.Tensor, aug: TwoViewAugmentation, gen: torch.Generator
) -> list[float]:
    """Per valid box: largest difference of its view crop from its source crop."""
    size = aug.size
    views = aug(images)
    pairs = match_boxes(
        views.geom1, views.geom2, size, BoxOptions(min_box_cells=size / 448), generator=gen
    )
    assert pairs.valid.any()
    rois = torch.cat([pairs.boxes1[:, :1], pairs.source], dim=1)
    reference = roi_align(images, rois, 7, 1.0, 2, True)[pairs.valid]
    errors = []
    for view, boxes, geom in [
        (views.view1, pairs.boxes1, views.geom1),
        (views.view2, pairs.boxes2, views.geom2),
    ]:
        crops = roi_align(view, boxes, 7, 1.0, 2, True)[pairs.valid]
        owners = boxes[pairs.valid, 0].long().tolist()
        for crop, ref, b in zip(crops, reference, owners, strict=True):
            errors.append(float((undo_view_geometry(crop, geom, b) - ref).abs().max()))
    return errors


@settings(max_examples=15, deadline=None)
@given(
    height=st.integers(24, 200),
    width=st.integers(24, 200),
    size=st.sampled_from([32, 64]),
    seed=st.integers(0, 2**16),
)
def test_box_contents_match_across_views(height: int, width: int, size: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images = smooth_image(height, width, gen)[None].repeat(4, 1, 1, 1)
    aug = TwoViewAugmentation(
        size, ViewOptions(hflip_p=0.5, vflip_p=0.5, rot90=True, jitter_p=0.0, blur_p=0.0)
    )
    errors = box_content_errors(images, aug, gen)
    # Double bilinear resampling of a smooth image: small. (The check that ignoring the
    # flips and turns gives large errors is gone: a random smooth image can be
    # symmetric where the boxes fall, which made it fail for some examples.)
    assert max(errors) < 0.1
    assert sum(errors) / len(errors) < 0.02


def test_identical_views_fill_every_slot() -> None:
    torch.manual_seed(0)
    crops = TwoViewAugmentation(size=224).sample_geometry(64, 448, 448, torch.device("cpu"))
    pairs = match_boxes(crops, crops, 224, BoxOptions(min_box_cells=0.5, max_fraction=0.5))
    assert pairs.valid.all()
    check_pairs(pairs, crops, crops, 224, 10, 32 / 448 * 224, 0.5)


def test_moco_views_give_nearly_full_slots() -> None:
    torch.manual_seed(0)
    aug = TwoViewAugmentation(size=224)
    geom1 = aug.sample_geometry(256, 448, 448, torch.device("cpu"))
    geom2 = aug.sample_geometry(256, 448, 448, torch.device("cpu"))
    options = BoxOptions(min_box_cells=0.5, max_fraction=0.5)
    per_image = match_boxes(geom1, geom2, 224, options).valid.view(256, 10).sum(1)
    assert per_image.float().mean() > 9.0


def test_barely_overlapping_and_disjoint_views_give_no_boxes() -> None:
    size = 64  # min_box = 32 / 448 * 64 = 4.57 view px = 7.1 source px for 100 px crops
    geom1 = geometry([[0, 0, 100, 100], [0, 0, 100, 100], [0, 0, 50, 50], [0, 0, 100, 100]], size)
    geom2 = geometry(
        [[96, 0, 196, 100], [92, 0, 192, 100], [60, 60, 100, 100], [0, 95, 100, 195]], size
    )
    pairs = match_boxes(geom1, geom2, size, BoxOptions(min_box_cells=size / 448))
    per_image = pairs.valid.view(4, 10).sum(1)
    assert per_image.tolist()[0] == 0  # 4 px overlap < 7.1 px
    assert per_image.tolist()[1] >= 1  # 8 px overlap is enough for one box
    assert per_image.tolist()[2:] == [0, 0]  # disjoint, then 5 px vertical overlap
    check_pairs(pairs, geom1, geom2, size, 10, 32 / 448 * size, 0.5)


def test_batch_without_any_valid_box() -> None:
    geom1 = geometry([[0, 0, 10, 10]] * 3, 32, flips=True)
    geom2 = geometry([[20, 20, 30, 30]] * 3, 32, flips=True, seed=1)
    pairs = match_boxes(geom1, geom2, 32, BoxOptions(boxes_per_image=5))
    assert not pairs.valid.any()
    assert torch.isfinite(pairs.boxes1).all() and torch.isfinite(pairs.source).all()
    features = roi_align(torch.rand(3, 4, 1, 1), pairs.boxes1, 2, 1 / 32, 2, True)
    assert torch.isfinite(features).all()


def greedy_slots(
    planes: torch.Tensor, usable: torch.Tensor, slots: int, max_iou: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run _greedy_boxes on [4, M, B] planes; return [B, N, 4] boxes and [B, N] validity."""
    sides = planes[2:] - planes[:2]
    chosen, valid = _greedy_boxes(planes, sides, usable[None], slots, max_iou)
    return chosen.permute(2, 1, 0), valid.T


def expected_slots(
    boxes: torch.Tensor, usable: torch.Tensor, slots: int, max_iou: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `slots` boxes the sequential greedy rule keeps, per image."""
    kept = sequential_greedy(boxes, max_iou) & usable[:, None]
    chosen = torch.zeros(boxes.shape[0], slots, 4)
    valid = torch.zeros(boxes.shape[0], slots, dtype=torch.bool)
    for b in range(boxes.shape[0]):
        first = boxes[b][kept[b]][:slots]
        chosen[b, : len(first)] = first
        valid[b, : len(first)] = True
    return chosen, valid


def test_greedy_slots_on_spread_candidates_match_sequential_greedy() -> None:
    gen = torch.Generator().manual_seed(0)
    inter = torch.tensor([[0.0, 0.0, 300.0, 200.0]]).repeat(128, 1) * torch.rand(128, 1) + 20
    least = torch.full((2, 1, 128), 10.0)
    start, stop = inter[:, :2].T[:, None], inter[:, 2:].T[:, None]
    planes, _ = _candidate_boxes(start, stop, least, 20, 0.5, gen)
    usable = torch.ones(128, dtype=torch.bool)
    chosen, valid = greedy_slots(planes, usable, 10, 0.5)
    expected, expected_valid = expected_slots(planes.permute(2, 1, 0), usable, 10, 0.5)
    assert torch.equal(valid, expected_valid)
    assert torch.equal(chosen[valid], expected[valid])


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 70),
    slots=st.integers(1, 12),
    max_iou=st.sampled_from([0.1, 0.3, 0.5, 0.9, 0.99]),
    seed=st.integers(0, 2**16),
)
def test_greedy_slots_match_sequential_greedy_with_many_clashes(
    m: int, slots: int, max_iou: float, seed: int
) -> None:
    # Crowded boxes, so that many candidates clash and slots often stay empty.
    gen = torch.Generator().manual_seed(seed)
    corner = torch.rand(6, m, 2, generator=gen) * 50
    boxes = torch.cat([corner, corner + 5 + torch.rand(6, m, 2, generator=gen) * 50], -1)
    usable = torch.tensor([True, True, False, True, True, True])
    chosen, valid = greedy_slots(boxes.permute(2, 1, 0).contiguous(), usable, slots, max_iou)
    expected, expected_valid = expected_slots(boxes, usable, slots, max_iou)
    # Float rounding may decide IoU == t either way; these boxes avoid such ties.
    assert torch.equal(valid, expected_valid)
    assert torch.equal(chosen[valid], expected[valid])
    assert torch.isfinite(chosen).all()
    assert not valid[2].any()


def test_greedy_slots_follow_iou_threshold() -> None:
    base = [0.0, 0.0, 10.0, 10.0]
    # IoU with base: 1, 1/3 (half shifted), 0.5 exactly, 0 (disjoint).
    boxes = torch.tensor([base, base, [5.0, 0, 15, 10], [0.0, 0, 10, 20], [20.0, 20, 30, 30]])
    chosen, valid = greedy_slots(boxes.T[:, :, None], torch.tensor([True]), 5, 0.5)
    assert valid[0].tolist() == [True, True, True, False, False]
    assert chosen[0, :3].tolist() == [base, [5.0, 0, 15, 10], [20.0, 20, 30, 30]]


def test_generator_makes_results_reproducible() -> None:
    geom = geometry([[0, 0, 100, 80], [10, 10, 90, 90]], 64)
    other = geometry([[20, 10, 100, 100], [0, 0, 70, 70]], 64)
    runs = [
        match_boxes(geom, other, 64, generator=torch.Generator().manual_seed(seed))
        for seed in (3, 3, 4)
    ]
    assert torch.equal(runs[0].boxes1, runs[1].boxes1)
    assert torch.equal(runs[0].source, runs[1].source)
    assert not torch.equal(runs[0].source, runs[2].source)


def test_runs_without_reading_tensor_values() -> None:
    geom = ViewGeometry(
        crops=torch.empty(4, 4, device="meta"),
        hflip=torch.empty(4, dtype=torch.bool, device="meta"),
        vflip=torch.empty(4, dtype=torch.bool, device="meta"),
        rot90=torch.empty(4, dtype=torch.int64, device="meta"),
        size=32,
    )
    pairs = match_boxes(geom, geom, 32)
    assert pairs.boxes1.shape == (40, 5) and pairs.boxes1.device.type == "meta"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"boxes_per_image": 0}, "boxes_per_image must be at least 1"),
        ({"candidates": 5}, r"candidates \(5\) must be at least boxes_per_image \(10\)"),
        ({"min_box_cells": 0.0}, "min_box_cells must be positive"),
        ({"max_iou": 0.0}, r"max_iou must be in \(0, 1\)"),
        ({"max_iou": 1.0}, r"max_iou must be in \(0, 1\)"),
        ({"max_fraction": 1.5}, r"max_fraction must be in \(0, 1\]"),
    ],
)
def test_bad_box_options_raise_when_built(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BoxOptions(**kwargs)


@pytest.mark.parametrize(
    ("size", "match"),
    [
        (0, "size must be a positive"),
        (16, "min_box_cells=1.0 is 32 px .*more than the 16 px views"),
    ],
)
def test_views_too_small_for_the_boxes_raise(size: int, match: str) -> None:
    geom = geometry([[0, 0, 10, 10]], size)
    with pytest.raises(ValueError, match=match):
        match_boxes(geom, geom, size)
    with pytest.raises(ValueError, match=match):
        BoxMatcher(size)


def test_mismatched_batches_raise() -> None:
    with pytest.raises(ValueError, match="geom1 and geom2 must describe the same batch"):
        match_boxes(geometry([[0, 0, 10, 10]], 32), geometry([[0, 0, 10, 10]] * 2, 32), 32)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def moco_geometries(batch: int, device: str, seed: int) -> tuple[ViewGeometry, ViewGeometry]:
    torch.manual_seed(seed)
    aug = TwoViewAugmentation(64, ViewOptions(hflip_p=0.5, vflip_p=0.5, rot90=True))
    return (
        aug.sample_geometry(batch, 128, 128, torch.device(device)),
        aug.sample_geometry(batch, 128, 128, torch.device(device)),
    )


def check_device_pairs(pairs: BoxPairs, geom1: ViewGeometry, geom2: ViewGeometry, n: int) -> None:
    """check_pairs on copies on the CPU, for the default options at 64 px views."""
    copies = BoxPairs(
        pairs.boxes1.cpu(), pairs.boxes2.cpu(), pairs.valid.cpu(), pairs.source.cpu()
    )
    check_pairs(copies, geom1.to("cpu"), geom2.to("cpu"), 64, n, 32 / 448 * 64, 0.5)


def test_box_matcher_without_cuda_is_match_boxes_with_its_options() -> None:
    geom1, geom2 = moco_geometries(6, "cpu", seed=0)
    options = BoxOptions(boxes_per_image=3, candidates=7, min_box_cells=6 / 32, max_iou=0.4)
    matcher = BoxMatcher(64, options)
    torch.manual_seed(1)
    pairs = matcher(geom1, geom2)
    torch.manual_seed(1)
    expected = match_boxes(geom1, geom2, 64, options)
    assert torch.equal(pairs.boxes1, expected.boxes1)
    assert torch.equal(pairs.boxes2, expected.boxes2)
    assert torch.equal(pairs.valid, expected.valid)
    assert not matcher._captures


@needs_cuda
def test_cuda_graph_replays_draw_fresh_boxes_and_keep_earlier_results() -> None:
    matcher = BoxMatcher(64, BoxOptions(boxes_per_image=5), cuda_graph=True)
    geom1, geom2 = moco_geometries(16, "cuda", seed=0)
    first = matcher(geom1, geom2)
    kept = first.source.clone()
    second = matcher(geom1, geom2)
    assert len(matcher._captures) == 1
    check_device_pairs(first, geom1, geom2, 5)
    check_device_pairs(second, geom1, geom2, 5)
    assert torch.equal(first.source, kept)  # the replay wrote into its own buffers
    assert not torch.equal(first.source, second.source)  # fresh random draws


@needs_cuda
def test_cuda_graph_follows_new_geometry_and_batch_sizes() -> None:
    matcher = BoxMatcher(64, cuda_graph=True)
    for batch, seed in ((8, 0), (8, 1), (3, 2)):
        geom1, geom2 = moco_geometries(batch, "cuda", seed)
        check_device_pairs(matcher(geom1, geom2), geom1, geom2, 10)
    assert sorted(key[0] for key in matcher._captures) == [3, 8]


def test_geometries_of_another_view_size_raise() -> None:
    with pytest.raises(ValueError, match=r"views of size=64, got 32 and 32"):
        match_boxes(geometry([[0, 0, 10, 10]], 32), geometry([[0, 0, 10, 10]], 32), 64)


def test_box_contents_differ_when_the_geometry_is_ignored() -> None:
    # On a ramp along x (in the views' [0, 1] range), a left-right flip changes every
    # box's content: the small errors above come from undoing the geometry, not from
    # flat or symmetric crops.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.0, 1.0, 120).expand(2, 100, 120)[None].repeat(4, 1, 1, 1)
    aug = TwoViewAugmentation(64, ViewOptions(hflip_p=1.0, jitter_p=0.0, blur_p=0.0))
    views = aug(ramp)
    options = BoxOptions(min_box_cells=0.25)
    pairs = match_boxes(views.geom1, views.geom2, 64, options, generator=gen)
    rois = torch.cat([pairs.boxes1[:, :1], pairs.source], dim=1)
    reference = roi_align(ramp, rois, 7, 1.0, 2, True)[pairs.valid]
    crops = roi_align(views.view1, pairs.boxes1, 7, 1.0, 2, True)[pairs.valid]
    owners = pairs.boxes1[pairs.valid, 0].long().tolist()
    for crop, ref, b in zip(crops, reference, owners, strict=True):
        assert (undo_view_geometry(crop, views.geom1, b) - ref).abs().max() < 0.05
        assert (crop - ref).abs().max() > 0.02

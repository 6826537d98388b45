import pytest
import torch
from torchvision.ops import box_iou

from torchgeo_dic3l.ssl.box_graph import BoxMatcher
from torchgeo_dic3l.ssl.box_matching import BoxPairs, match_boxes
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewGeometry, view_to_source

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def geometries(batch: int, device: str, seed: int) -> tuple[ViewGeometry, ViewGeometry]:
    torch.manual_seed(seed)
    aug = TwoViewAugmentation(size=64, hflip_p=0.5, vflip_p=0.5, rot90=True)
    return (
        aug.sample_geometry(batch, 128, 128, torch.device(device)),
        aug.sample_geometry(batch, 128, 128, torch.device(device)),
    )


def check(pairs: BoxPairs, geom1: ViewGeometry, geom2: ViewGeometry, n: int) -> None:
    """Valid boxes lie in both views, map back to their source and do not clash."""
    batch = geom1.crops.shape[0]
    assert pairs.boxes1.shape == (batch * n, 5) and pairs.valid.shape == (batch * n,)
    assert torch.isfinite(pairs.boxes1).all() and torch.isfinite(pairs.boxes2).all()
    valid = pairs.valid.view(batch, n)
    source = pairs.source.view(batch, n, 4)
    for boxes, geom in ((pairs.boxes1, geom1), (pairs.boxes2, geom2)):
        view = boxes[:, 1:].view(batch, n, 4)
        assert ((view >= -1e-3) & (view <= 64 + 1e-3)).all()
        back = view_to_source(view, geom)
        assert torch.allclose(back[valid], source[valid], atol=1e-2)
    for b in range(batch):
        kept = source[b][valid[b]]
        iou = box_iou(kept, kept) - torch.eye(len(kept), device=kept.device)
        assert (iou < 0.5).all()


def test_without_cuda_it_is_match_boxes_with_its_options() -> None:
    geom1, geom2 = geometries(6, "cpu", seed=0)
    matcher = BoxMatcher(64, boxes_per_image=3, candidates=7, min_box=6.0, max_iou=0.4)
    torch.manual_seed(1)
    pairs = matcher(geom1, geom2)
    torch.manual_seed(1)
    expected = match_boxes(
        geom1, geom2, 64, boxes_per_image=3, candidates=7, min_box=6.0, max_iou=0.4
    )
    assert torch.equal(pairs.boxes1, expected.boxes1)
    assert torch.equal(pairs.boxes2, expected.boxes2)
    assert torch.equal(pairs.valid, expected.valid)
    assert not matcher._captures


def test_options_are_checked_at_the_first_call() -> None:
    geom1, geom2 = geometries(2, "cpu", seed=0)
    with pytest.raises(ValueError, match=r"max_iou must be in \(0, 1\)"):
        BoxMatcher(64, max_iou=1.0)(geom1, geom2)


@needs_cuda
def test_graph_replays_draw_fresh_boxes_and_keep_earlier_results() -> None:
    matcher = BoxMatcher(64, boxes_per_image=5)
    geom1, geom2 = geometries(16, "cuda", seed=0)
    first = matcher(geom1, geom2)
    kept = first.source.clone()
    second = matcher(geom1, geom2)
    assert len(matcher._captures) == 1
    check(first, geom1, geom2, 5)
    check(second, geom1, geom2, 5)
    assert torch.equal(first.source, kept)  # the replay wrote into its own buffers
    assert not torch.equal(first.source, second.source)  # fresh random draws
    eager = match_boxes(geom1, geom2, 64, boxes_per_image=5)
    usable = eager.valid.view(16, 5).any(1)
    assert torch.equal(second.valid.view(16, 5).any(1), usable)


@needs_cuda
def test_graph_follows_new_geometry_and_batch_sizes() -> None:
    matcher = BoxMatcher(64)
    for batch, seed in ((8, 0), (8, 1), (3, 2)):
        geom1, geom2 = geometries(batch, "cuda", seed)
        check(matcher(geom1, geom2), geom1, geom2, 10)
    assert sorted(key[0] for key in matcher._captures) == [3, 8]

"""Properties every BoxPairs must have, shared by the box-matching and box-loop tests."""

import torch
from torchvision.ops import box_iou

from torchgeo_dic3l.ssl.box_matching import BoxPairs
from torchgeo_dic3l.transforms.views import ViewGeometry, view_to_source

TOL = 1e-3


def usable(geom1: ViewGeometry, geom2: ViewGeometry, min_box: float) -> torch.Tensor:
    """Reference: the overlap is at least min_box view pixels along both axes of both views."""
    c1, c2 = geom1.crops, geom2.crops
    overlap = torch.minimum(c1[:, 2:], c2[:, 2:]) - torch.maximum(c1[:, :2], c2[:, :2])
    needed1 = (c1[:, 2:] - c1[:, :2]) * min_box / geom1.size
    needed2 = (c2[:, 2:] - c2[:, :2]) * min_box / geom2.size
    return ((overlap >= needed1) & (overlap >= needed2)).all(dim=1)


def check_pairs(
    pairs: BoxPairs,
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    size: int,
    n: int,
    min_box: float,
    max_iou: float,
) -> None:
    """Every property that a BoxPairs must have."""
    batch = geom1.crops.shape[0]
    assert pairs.boxes1.shape == pairs.boxes2.shape == (batch * n, 5)
    assert pairs.valid.shape == (batch * n,) and pairs.valid.dtype == torch.bool
    assert pairs.source.shape == (batch * n, 4)
    for tensor in (pairs.boxes1, pairs.boxes2, pairs.source):
        assert torch.isfinite(tensor).all()
    index = torch.arange(batch).repeat_interleave(n).float()
    assert torch.equal(pairs.boxes1[:, 0], index) and torch.equal(pairs.boxes2[:, 0], index)

    # Every box, valid or dummy, lies inside both views.
    for boxes in (pairs.boxes1[:, 1:], pairs.boxes2[:, 1:]):
        assert (boxes >= -TOL).all() and (boxes <= size + TOL).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()

    valid = pairs.valid.view(batch, n)
    # The first candidate of an image is always kept, so an image has a box iff usable.
    assert torch.equal(valid.any(dim=1), usable(geom1, geom2, min_box))

    source = pairs.source.view(batch, n, 4)
    c1, c2 = geom1.crops, geom2.crops
    inter = torch.cat(
        [torch.maximum(c1[:, :2], c2[:, :2]), torch.minimum(c1[:, 2:], c2[:, 2:])], 1
    )
    for boxes, geom in ((pairs.boxes1, geom1), (pairs.boxes2, geom2)):
        view = boxes[:, 1:].view(batch, n, 4)
        back = view_to_source(view, geom)
        assert torch.allclose(back[valid], source[valid], atol=1e-2)
        sides = view[..., 2:] - view[..., :2]
        assert (sides[valid] >= min_box - TOL).all()
    inside = (source[..., :2] >= inter[:, None, :2] - 1e-2) & (
        source[..., 2:] <= inter[:, None, 2:] + 1e-2
    )
    assert inside.all(dim=-1)[valid].all()
    for b in range(batch):
        kept = source[b][valid[b]]
        iou = box_iou(kept, kept) - torch.eye(len(kept))
        assert (iou < max_iou).all()

"""Per-image loop box sampler: the straightforward baseline for ``match_boxes``.

Written for the throughput comparison only (``experiments/throughput.py``), after the
rules of the reference DI3CL code: for each image, up to ``boxes_per_image`` boxes;
each box gets up to ``tries`` attempts (50, as in the reference); an attempt draws a
random box inside the intersection of the image's two crops, at least ``min_box``
view pixels on a side in both views, and keeps it if its IoU with every earlier box
of the image is below ``max_iou`` (a scalar check per pair). A slot whose attempts
all fail stays empty and the next slot is tried. Kept boxes are mapped into both
views with scalar arithmetic (crop, resize, horizontal flip, vertical flip, then
quarter turns, the convention of :mod:`torchgeo_dic3l.transforms.views`).

Everything runs in Python on host numbers, one image after the other: the geometry
is read once with ``tolist()`` (a host synchronization on a GPU), which is what
the vectorized :func:`torchgeo_dic3l.ssl.box_matching.match_boxes` avoids. The
output has the same layout as ``match_boxes`` so both can feed the same RoIAlign.

Example::

    python experiments/box_loop.py --batch-size 256
"""

import argparse
import random
import time

import torch

from torchgeo_dic3l.ssl.box_matching import BoxOptions, BoxPairs, match_boxes
from torchgeo_dic3l.transforms.views import TwoViewAugmentation, ViewGeometry

Box = tuple[float, float, float, float]


def scalar_iou(a: Box, b: Box) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def source_to_view_scalar(
    box: Box, crop: Box, hflip: bool, vflip: bool, turns: int, size: int
) -> Box:
    """Map one source box into one view: crop and resize, flips, then quarter turns.

    A counter-clockwise quarter turn of a square view of side ``S`` (``torch.rot90``
    on the last two axes) moves the point ``(x, y)`` to ``(y, S - x)``.
    """
    sx = size / (crop[2] - crop[0])
    sy = size / (crop[3] - crop[1])
    corners = [
        ((box[0] - crop[0]) * sx, (box[1] - crop[1]) * sy),
        ((box[2] - crop[0]) * sx, (box[3] - crop[1]) * sy),
    ]
    mapped = []
    for x, y in corners:
        if hflip:
            x = size - x
        if vflip:
            y = size - y
        for _ in range(turns % 4):
            x, y = y, size - x
        mapped.append((x, y))
    (xa, ya), (xb, yb) = mapped
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def loop_match_boxes(
    geom1: ViewGeometry,
    geom2: ViewGeometry,
    size: int,
    options: BoxOptions | None = None,
    tries: int = 50,
    seed: int | None = None,
) -> BoxPairs:
    """Sample and map boxes image by image, as a plain Python loop.

    Args:
        geom1: Geometry of the first views.
        geom2: Geometry of the second views.
        size: Side of the square views in pixels.
        options: Box counts and sizes as :func:`match_boxes` takes them (its
            ``candidates`` is unused: the loop makes ``tries`` attempts per slot).
        tries: Attempts per slot.
        seed: Seed of the Python random generator; fresh entropy if None.

    Returns:
        Boxes in the layout of :func:`match_boxes`; empty slots hold the dummy box
        ``(0, 0, min_box, min_box)`` in both views and the intersection corner in
        source pixels.
    """
    options = options or BoxOptions()
    boxes_per_image, min_box = options.boxes_per_image, options.min_box
    max_iou, max_fraction = options.max_iou, options.max_fraction
    rng = random.Random(seed)
    crops1, crops2 = geom1.crops.tolist(), geom2.crops.tolist()
    flips1 = list(zip(*(t.tolist() for t in (geom1.hflip, geom1.vflip, geom1.rot90)), strict=True))
    flips2 = list(zip(*(t.tolist() for t in (geom2.hflip, geom2.vflip, geom2.rot90)), strict=True))
    dummy = (0.0, 0.0, min_box, min_box)
    rows1, rows2, valid, source = [], [], [], []
    for b, (c1, c2) in enumerate(zip(crops1, crops2, strict=True)):
        ix0, iy0 = max(c1[0], c2[0]), max(c1[1], c2[1])
        ix1, iy1 = min(c1[2], c2[2]), min(c1[3], c2[3])
        # The source side that gives min_box view pixels in the view that shrinks most.
        min_w = max(c1[2] - c1[0], c2[2] - c2[0]) * min_box / size
        min_h = max(c1[3] - c1[1], c2[3] - c2[1]) * min_box / size
        usable = ix1 - ix0 >= min_w and iy1 - iy0 >= min_h
        kept: list[Box] = []
        for _ in range(boxes_per_image if usable else 0):
            for _ in range(tries):
                w = rng.uniform(min_w, max(min_w, max_fraction * (ix1 - ix0)))
                h = rng.uniform(min_h, max(min_h, max_fraction * (iy1 - iy0)))
                x0 = rng.uniform(ix0, ix1 - w)
                y0 = rng.uniform(iy0, iy1 - h)
                box = (x0, y0, x0 + w, y0 + h)
                if all(scalar_iou(box, other) < max_iou for other in kept):
                    kept.append(box)
                    break
        for slot in range(boxes_per_image):
            if slot < len(kept):
                box = kept[slot]
                hflip1, vflip1, turns1 = flips1[b]
                hflip2, vflip2, turns2 = flips2[b]
                rows1.append((b, *source_to_view_scalar(box, c1, hflip1, vflip1, turns1, size)))
                rows2.append((b, *source_to_view_scalar(box, c2, hflip2, vflip2, turns2, size)))
                valid.append(True)
                source.append(box)
            else:
                rows1.append((b, *dummy))
                rows2.append((b, *dummy))
                valid.append(False)
                source.append((ix0, iy0, ix0, iy0))
    return BoxPairs(
        boxes1=torch.tensor(rows1, dtype=torch.float32).view(-1, 5),
        boxes2=torch.tensor(rows2, dtype=torch.float32).view(-1, 5),
        valid=torch.tensor(valid, dtype=torch.bool),
        source=torch.tensor(source, dtype=torch.float32).view(-1, 4),
    )


def main() -> None:
    """Time the loop against ``match_boxes`` on one batch of MoCo-style views.

    The two run in alternating calls, so that background load hits both alike.
    """
    parser = argparse.ArgumentParser(description="Per-image loop box sampler vs match_boxes")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224, help="view side in pixels")
    parser.add_argument("--source-size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    aug = TwoViewAugmentation(size=args.size)
    cpu = torch.device("cpu")
    geom1 = aug.sample_geometry(args.batch_size, args.source_size, args.source_size, cpu)
    geom2 = aug.sample_geometry(args.batch_size, args.source_size, args.source_size, cpu)
    kinds = {
        "loop": lambda: loop_match_boxes(geom1, geom2, args.size, seed=0),
        "match_boxes": lambda: match_boxes(geom1, geom2, args.size),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    filled: dict[str, float] = {}
    for round_ in range(1 + args.repeats):
        for name, fn in kinds.items():
            start = time.perf_counter()
            pairs = fn()
            if round_:  # the first round warms up
                times[name].append(time.perf_counter() - start)
            filled[name] = pairs.valid.float().sum().item() / args.batch_size
    for name in kinds:
        median = sorted(times[name])[len(times[name]) // 2] * 1e3
        print(
            f"{name:12s} {median:8.2f} ms median of {args.repeats} "
            f"({filled[name]:.2f} boxes/image)"
        )
    ratios = sorted(a / b for a, b in zip(times["loop"], times["match_boxes"], strict=True))
    print(f"speed-up     {ratios[len(ratios) // 2]:8.1f}x median of the per-round ratios")


if __name__ == "__main__":
    main()

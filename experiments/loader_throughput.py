"""Chips per second that the data pipelines deliver, per DataLoader worker count.

Three sources, each read through the package's datasets and a PyTorch DataLoader
with ``num_workers`` 0, 1 and 2 (as in training, chips are cropped to the patch
size in the dataset and batched on the host):

* ``png_chips``: a folder of PNG chips through :class:`~torchgeo_dic3l.datasets.SARChips`
  (the real 8-bit 1024 x 1024 Volkov chips when ``../shared/data`` is present,
  otherwise generated 8-bit chips of the same size);
* ``geotiff_chips``: a generated folder of 2-band float32 GeoTIFF chips (power);
* ``scene_windows``: windowed reads from one generated 2-band float32 tiled GeoTIFF
  scene (COG-like internal tiling) through :class:`~torchgeo_dic3l.datasets.SARScenes`
  and TorchGeo's :class:`~torchgeo.samplers.RandomPatchSampler`.

The first batch of every loader (worker start-up, file opening) is not timed; the
rate is measured over the following batches. The rate with one worker is the
throughput per worker; a training step that consumes ``R`` images per second then
needs about ``ceil(R / rate_per_worker)`` workers (and that many free CPU cores).
``--throughput-json`` reads ``R`` from a result of ``experiments/throughput.py``.

Example::

    python experiments/loader_throughput.py --json loader.json \\
        --throughput-json throughput.json
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchgeo.datasets import stack_samples
from torchgeo.samplers import RandomPatchSampler

from torchgeo_dic3l.datamodules.chips import SampleCrop
from torchgeo_dic3l.datasets import SARChips, SARScenes

#: Real Sentinel-1 VH chips beside the repository, used when present.
VOLKOV_CHIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "s1_vh_volkov" / "sar"

#: Worker counts measured.
WORKERS = (0, 1, 2)


def write_png_chips(folder: Path, count: int, size: int, seed: int) -> Path:
    """Write 8-bit single-band PNG chips with speckle-like texture.

    Args:
        folder: Output folder.
        count: Number of chips.
        size: Side of each chip in pixels.
        seed: Seed of the pixel values.

    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        db = 10 * np.log10(rng.gamma(4.0, 0.25, (size, size)) * 0.02)
        pixels = np.clip((db + 32) / 27 * 255, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"chip_{index:03d}.png")
    return folder


def write_geotiff(path: Path, array: np.ndarray, tile: int | None) -> Path:
    """Write a float32 GeoTIFF (UTM 33N, 10 m pixels), tiled if ``tile`` is given.

    Args:
        path: Output file.
        array: ``[bands, H, W]`` values.
        tile: Internal tile side, or None for strips.

    Returns:
        The path.
    """
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": from_origin(500000.0, 4000000.0, 10.0, 10.0),
    }
    if tile is not None:
        profile |= {"tiled": True, "blockxsize": tile, "blockysize": tile}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.astype(np.float32))
    return path


def sigma0(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Two bands of linear power (VV ~0.05, VH ~0.01) with 4-look speckle."""
    means = np.array([0.05, 0.01], dtype=np.float32).reshape(2, 1, 1)
    speckle: np.ndarray = rng.gamma(4.0, 0.25, (2, *shape)).astype(np.float32)
    return speckle * means


def write_geotiff_chips(folder: Path, count: int, size: int, seed: int) -> Path:
    """Write 2-band float32 GeoTIFF chips of linear power.

    Args:
        folder: Output folder.
        count: Number of chips.
        size: Side of each chip in pixels.
        seed: Seed of the pixel values.

    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        write_geotiff(folder / f"chip_{index:03d}.tif", sigma0(rng, (size, size)), tile=None)
    return folder


def write_scene(path: Path, size: int, tile: int, seed: int) -> Path:
    """Write one 2-band float32 scene of linear power, tiled like a COG.

    Args:
        path: Output file.
        size: Side of the scene in pixels.
        tile: Internal tile side.
        seed: Seed of the pixel values.

    Returns:
        The path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_geotiff(path, sigma0(np.random.default_rng(seed), (size, size)), tile)


def chips_per_second(
    dataset: Dataset[Any],
    batch_size: int,
    batches: int,
    workers: int,
    sampler: Iterable[Any],
    collate: Any = None,
) -> float:
    """Images per second delivered by a DataLoader after its first batch.

    Args:
        dataset: Dataset to read.
        batch_size: Samples per batch.
        batches: Batches timed after the first.
        workers: DataLoader worker processes.
        sampler: Sampler of ``(batches + 1) * batch_size`` samples.
        collate: Collate function (None: PyTorch's default).

    Returns:
        Samples per second.
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
    )
    iterator = iter(loader)
    next(iterator)  # start-up: workers, file handles, first reads
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
        if not torch.isfinite(batch["image"]).all():
            raise RuntimeError("the loader returned non-finite pixels")
    return batches * batch_size / (time.perf_counter() - start)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Prepare the three sources and time them with every worker count.

    Args:
        args: Command-line options.
        workdir: Folder for generated data.

    Returns:
        Per source: its description and the rate per worker count.
    """
    samples = (args.batches + 1) * args.batch_size
    crop = SampleCrop(args.patch_size, random=True)
    if VOLKOV_CHIPS.is_dir() and not args.generate_png:
        png_root, png_origin = VOLKOV_CHIPS, "real Volkov Sentinel-1 VH chips"
    else:
        png_root = write_png_chips(workdir / "png", args.png_count, args.png_size, args.seed)
        png_origin = f"generated 8-bit {args.png_size} px PNG chips"
    png = SARChips(root=str(png_root), units="dn", transforms=crop)
    tif_root = write_geotiff_chips(workdir / "tif", args.tif_count, args.tif_size, args.seed)
    tif = SARChips(root=str(tif_root), units="power", transforms=crop)
    scene_path = write_scene(workdir / "scene" / "scene.tif", args.scene_size, 512, args.seed)
    scene = SARScenes(paths=[scene_path], bands=("VV", "VH"), units="power")
    sources: dict[str, dict[str, Any]] = {
        "png_chips": {
            "description": f"{len(png)} {png_origin}, {png.channels} band(s)",
            "dataset": png,
        },
        "geotiff_chips": {
            "description": f"{len(tif)} generated 2-band float32 {args.tif_size} px GeoTIFFs",
            "dataset": tif,
        },
        "scene_windows": {
            "description": f"one generated 2-band float32 {args.scene_size} px GeoTIFF, "
            "512 px tiles, RandomPatchSampler",
            "dataset": scene,
        },
    }
    results: dict[str, Any] = {}
    for name, source in sources.items():
        rates = {}
        for workers in WORKERS:
            # Chips are drawn with replacement, so that small folders last the run.
            sampler: Iterable[Any] = RandomSampler(
                source["dataset"], replacement=True, num_samples=samples
            )
            collate = None
            if name == "scene_windows":
                sampler = RandomPatchSampler(
                    scene, size=args.patch_size, length=samples, generator=args.seed
                )
                collate = stack_samples
            rates[workers] = chips_per_second(
                source["dataset"], args.batch_size, args.batches, workers, sampler, collate
            )
            print(f"{name:14s} workers={workers}: {rates[workers]:7.1f} chips/s", flush=True)
        results[name] = {"description": source["description"], "chips_per_s": rates}
    return results


def workers_needed(images_per_s: float, per_worker: float) -> int:
    """Workers that deliver ``images_per_s`` at ``per_worker`` chips/s each.

    Args:
        images_per_s: Rate the training step consumes.
        per_worker: Rate of one worker.

    Returns:
        The worker count (at least 1).
    """
    return max(1, math.ceil(images_per_s / per_worker))


def format_table(results: dict[str, Any], step_rate: float | None) -> str:
    """The rates as a plain-text table, with the workers a step would need."""
    header = f"{'source':14s} " + " ".join(f"{f'{w} workers':>10s}" for w in WORKERS)
    lines = [
        f"chips/s, batch {results['batch_size']}, {results['patch_size']} px patches, "
        f"{results['main_process_threads']} torch thread(s) in the main process"
    ]
    lines.append(header)
    for name, entry in results["sources"].items():
        rates = " ".join(f"{entry['chips_per_s'][w]:10.1f}" for w in WORKERS)
        lines.append(f"{name:14s} {rates}   {entry['description']}")
    if step_rate is not None:
        lines.append("")
        lines.append(f"a step consuming {step_rate:.1f} images/s needs, per source:")
        for name, entry in results["sources"].items():
            count = workers_needed(step_rate, entry["chips_per_s"][1])
            lines.append(f"  {name:14s} {count} worker(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the loader benchmark from the command line.

    Args:
        argv: Arguments (``sys.argv[1:]`` if None).
    """
    parser = argparse.ArgumentParser(
        description="Chips per second of the chip and scene pipelines",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per setting")
    parser.add_argument("--patch-size", type=int, default=224)
    parser.add_argument("--png-count", type=int, default=48, help="generated PNG chips")
    parser.add_argument("--png-size", type=int, default=1024)
    parser.add_argument("--generate-png", action="store_true", help="ignore the real chips")
    parser.add_argument("--tif-count", type=int, default=48)
    parser.add_argument("--tif-size", type=int, default=512)
    parser.add_argument("--scene-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads of the main process (0: default)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated data here")
    parser.add_argument(
        "--throughput-json",
        type=Path,
        default=None,
        help="experiments/throughput.py result: its DI3CL images/s sets the need",
    )
    parser.add_argument("--images-per-s", type=float, default=None, help="or give the need")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    step_rate = args.images_per_s
    if args.throughput_json is not None:
        step_rate = json.loads(args.throughput_json.read_text())["images_per_s"]["dic3l"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        sources = measure(args, workdir)
    results: dict[str, Any] = {
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "batches": args.batches,
        "sources": sources,
        "step_images_per_s": step_rate,
        "workers_needed": {
            name: workers_needed(step_rate, entry["chips_per_s"][1])
            for name, entry in sources.items()
        }
        if step_rate
        else None,
        "cpu_count": os.cpu_count(),
        "main_process_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(format_table(results, step_rate))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

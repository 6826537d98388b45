"""Downstream segmentation benchmark: fine-tune backbones on a grid, write tables and figures.

Examples (from the repository root)::

    # the shipped synthetic grid (needs the two pre-training checkpoints it names)
    python experiments/benchmark.py --config experiments/configs/benchmark_synthetic.yaml

    # flags only: two inits on the synthetic water task
    python experiments/benchmark.py --tasks water --epochs 2 --output outputs/benchmark_water \
        --inits random di3cl=outputs/pretrain_synthetic/di3cl/last.ckpt

    # a labelled scene never seen before
    python experiments/benchmark.py --inits random di3cl=path/to/last.ckpt \
        --scene-images vv.tif vh.tif --scene-label labels.tif \
        --scene-classes water urban other --scene-label-values 1 2 3 --scene-ignore-values 0 \
        --scene-units db --label-fractions 0.1 1.0 --seeds 0 1 2 --output outputs/my_scene

Flags override the values of ``--config``; list flags take space- or comma-separated
values. Outputs: results.json, results.md, figures/, predictions/, errors/ in
``--output``. The exit status is 1 when no run succeeded, 2 when the grid did not
start (bad flags, a task whose data cannot be set up, or a ``--resume`` that does not
match the results in ``--output``).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from torchgeo_dic3l.benchmark import GridSpec, format_markdown, run_grid, scene_task
from torchgeo_dic3l.benchmark.grid import load_grid_yaml
from torchgeo_dic3l.benchmark.runner import ResumeError, TaskDataError


def _split(values: Sequence[str] | None) -> list[str] | None:
    """Accept ``a b``, ``a,b`` and mixes of both."""
    if values is None:
        return None
    return [part for value in values for part in value.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help="grid YAML (see torchgeo_dic3l.benchmark.grid)"
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark"))
    parser.add_argument("--inits", nargs="+", help="name=spec: random, imagenet, a path, a weight")
    parser.add_argument("--tasks", nargs="+", help="synthetic tasks: landcover water roads")
    parser.add_argument("--decoders", nargs="+", help="unet deeplabv3+ upernet segformer dpt")
    parser.add_argument("--protocols", nargs="+", help="linear, frozen and/or full")
    parser.add_argument("--label-fractions", nargs="+")
    parser.add_argument("--seeds", nargs="+")
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--steps", type=int, help="optimizer steps of every run, exactly (overrides --epochs)"
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="AdamW learning rate of frozen and full")
    parser.add_argument("--linear-lr", type=float, help="peak learning rate of the linear probe")
    parser.add_argument("--backbone")
    parser.add_argument("--accelerator", help="auto (default), cpu, gpu, ...")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--figure-patches", type=int)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep successful rows already in --output (refused if their runs were specified "
        "otherwise)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (1 is fastest on a busy shared machine)"
    )
    scene = parser.add_argument_group("labelled scene (adds a task)")
    scene.add_argument("--scene-name", help="task name (default: label file stem)")
    scene.add_argument(
        "--scene-images", nargs="+", help="image rasters (one per channel or multi-band)"
    )
    scene.add_argument("--scene-label", help="label raster")
    scene.add_argument("--scene-classes", nargs="+")
    scene.add_argument("--scene-label-values", nargs="+", help="raw label value of each class")
    scene.add_argument("--scene-ignore-values", nargs="+", help="raw values meaning unlabelled")
    scene.add_argument("--scene-units", choices=("power", "amplitude", "db"))
    scene.add_argument("--scene-bands", nargs="+")
    scene.add_argument("--scene-patch-size", type=int)
    scene.add_argument("--scene-block-size", type=int)
    scene.add_argument("--scene-gap", type=int)
    scene.add_argument("--scene-split-seed", type=int)
    scene.add_argument(
        "--scene-split-method",
        choices=("stratified", "random"),
        help="block assignment: class-stratified (default) or random (the old layout)",
    )
    return parser


def _scene_from_flags(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> dict[str, Any] | None:
    given = [
        name
        for name in vars(args)
        if name.startswith("scene_") and getattr(args, name) is not None
    ]
    if not given:
        return None
    if args.scene_images is None or args.scene_label is None or args.scene_classes is None:
        parser.error("a scene needs --scene-images, --scene-label and --scene-classes")
    options: dict[str, Any] = {}
    for flag, key in (
        ("scene_units", "units"),
        ("scene_bands", "bands"),
        ("scene_patch_size", "patch_size"),
        ("scene_block_size", "block_size"),
        ("scene_gap", "gap"),
        ("scene_split_seed", "split_seed"),
        ("scene_split_method", "split_method"),
    ):
        if getattr(args, flag) is not None:
            options[key] = (
                _split(getattr(args, flag)) if flag == "scene_bands" else getattr(args, flag)
            )
    try:
        label_values = [int(v) for v in _split(args.scene_label_values) or []] or None
        ignore_values = [int(v) for v in _split(args.scene_ignore_values) or []]
    except ValueError as error:
        parser.error(f"--scene-label-values / --scene-ignore-values must be integers ({error})")
    task = scene_task(
        args.scene_name or Path(args.scene_label).stem,
        _split(args.scene_images) or [],
        args.scene_label,
        _split(args.scene_classes) or [],
        label_values=label_values,
        ignore_values=ignore_values,
        **options,
    )
    return {"name": task.name, "scene": task.options}


def grid_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> GridSpec:
    data: dict[str, Any] = load_grid_yaml(args.config) if args.config else {}
    if args.inits is not None:
        data["inits"] = _split(args.inits)
    for flag in ("decoders", "protocols", "label_fractions", "seeds"):
        if getattr(args, flag) is not None:
            data[flag] = _split(getattr(args, flag))
    scene = _scene_from_flags(args, parser)
    if args.tasks is not None:
        data["tasks"] = _split(args.tasks)
    elif scene is not None and args.config is None:
        data["tasks"] = []
    if scene is not None:
        data["tasks"] = [*(data.get("tasks") or []), scene]
    training = dict(data.get("training") or {})
    for flag in (
        "epochs",
        "steps",
        "batch_size",
        "lr",
        "linear_lr",
        "backbone",
        "accelerator",
        "num_workers",
    ):
        if getattr(args, flag) is not None:
            training[flag] = getattr(args, flag)
    data["training"] = training
    if args.figure_patches is not None:
        data["figure_patches"] = args.figure_patches
    data.setdefault("inits", ["random"])
    if not data.get("tasks"):
        parser.error("no task: give --config, --tasks or a scene (--scene-images ...)")
    return GridSpec.from_dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        grid = grid_from_args(args, parser)
    except (FileNotFoundError, ValueError, TypeError) as error:
        parser.error(str(error))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    runs = grid.runs()
    print(f"{len(runs)} run(s) -> {args.output}", flush=True)
    try:
        rows = run_grid(grid, args.output, progress=not args.no_progress, resume=args.resume)
    except (ResumeError, TaskDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(format_markdown(rows))
    ok = sum(row["status"] == "ok" for row in rows)
    print(f"{ok}/{len(rows)} run(s) succeeded. Outputs in {args.output.resolve()}:")
    for name in ("results.json", "results.md", "figures", "predictions", "errors"):
        if (args.output / name).exists():
            print(f"  {args.output / name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

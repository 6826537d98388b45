"""Training-step throughput of DI3CL against MoCo v2, with its components.

Measures, in one process on one device, the median wall time of full training
steps (forward, backward, SGD step, momentum update, enqueue) of

* ``dic3l``: :class:`~torchgeo_dic3l.tasks.DI3CLTask` with both terms (CC and DI);
* ``mocov2``: the same task with ``use_cc=False, use_di=False`` (MoCo v2);
* ``torchgeo_moco``: TorchGeo's own :class:`torchgeo.tasks.MoCo` with ``version=2``
  (same timm backbone, batch, view size, channels, queue length and heads),

and of the parts DI3CL adds or moves onto the device: making the two views, box
matching (against the per-image loop of ``experiments/box_loop.py``, at the step's
batch and at batch 256), and RoIAlign plus the Dynamic Instance heads.

How a step is driven (no Lightning Trainer, so nothing else is timed): each task's
own ``training_step`` is called with ``self.log``/``self.log_dict`` replaced by
no-ops and, for DI3CLTask, a stand-in trainer that only provides the optimizer
(``training_step`` reads its learning rate for logging); then
``zero_grad``, ``backward``, ``on_after_backward`` and ``SGD.step`` follow, as in
Lightning's automatic optimization. DI3CLTask's ``training_step`` updates the
momentum encoders, makes the views and boxes on the device and computes every term;
its ``on_after_backward`` enqueues the keys;
TorchGeo's MoCo runs its kornia augmentations, momentum update and lightly's
NTXentLoss with a memory bank (and its own ``.item()`` for logging). The SGD
settings are DI3CL's (lr 0.03, momentum 0.9, weight decay 1e-4) for all three; the
learning-rate schedulers are not stepped. With ``--precision bf16`` the
``training_step`` runs under ``torch.autocast`` and ``backward`` outside it, as in
Lightning's mixed precision. Models and batches are channels-last unless
``--no-channels-last``; ``--compile`` compiles the backbones (DI3CLTask's
``compile_backbones``) and ``--cuda-graphs`` replays DI3CL's box matching as a CUDA
graph (its ``cuda_graphs``).

Steps are timed in interleaved rounds (each round runs every kind once, in a
rotating order) so that background load hits all kinds alike; medians are
reported. CUDA is synchronized before every clock read. Peak memory is the step's
peak above what was in use when it started: ``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the peak resident set size (``VmHWM`` of ``/proc/self/status``, reset
through ``/proc/self/clear_refs`` before each step) minus the resident size at the
start of the step, after glibc's ``malloc_trim(0)`` has handed free heap memory back
to the system (memory the allocator still keeps is missed, so it is a lower bound).

The training step is also checked for host-device synchronization by running one
DI3CL step on PyTorch's ``meta`` device, where reading any tensor value
(``.item()``, ``bool()``, ``.tolist()``, a Python branch on a tensor) raises.

Examples::

    python experiments/throughput.py                      # resnet18, batch 32, 224 px, CPU
    python experiments/throughput.py --device cuda --backbone resnet50 --batch-size 64 \\
        --image-size 448 --precision bf16 --json throughput_448.json
    python experiments/throughput.py --device cuda --backbone resnet50 --batch-size 64 \
        --image-size 224 --precision bf16 --cuda-graphs --json throughput_224_graphs.json
"""

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchgeo
from torch import Tensor, nn
from torch.optim import SGD
from torchgeo.tasks import MoCo

from torchgeo_dic3l.tasks import DI3CLTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from box_loop import loop_match_boxes

#: Step kinds in table order.
STEP_KINDS = ("dic3l", "mocov2", "torchgeo_moco")

#: Human-readable names of the step kinds.
STEP_NAMES = {
    "dic3l": "DI3CL (global + CC + DI)",
    "mocov2": "MoCo v2 (DI3CLTask, CC and DI off)",
    "torchgeo_moco": "TorchGeo MoCo v2",
}

#: Targets of the issue: DI3CL per step at most 10 % slower than MoCo v2; box matching
#: at batch 256 under 2 ms and at least 50 times faster than the per-image loop.
MAX_STEP_RATIO = 1.10
MAX_BOX_MATCH_MS = 2.0
MIN_BOX_SPEEDUP = 50.0

#: Target on a GPU: making the two views takes at most this share of a DI3CL step.
MAX_VIEWS_FRACTION = 0.10

#: Optimizer settings shared by all step kinds (DI3CL's published ones).
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.03, 0.9, 1e-4


@dataclass(frozen=True)
class Settings:
    """What to measure; one field per command-line flag."""

    device: str
    backbone: str
    batch_size: int
    image_size: int
    source_size: int
    channels: int
    steps: int
    warmup: int
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    memory_bank_size: int
    box_batch: int
    box_repeats: int
    threads: int
    seed: int


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path | None]:
    """Read the command line.

    Args:
        argv: Arguments (``sys.argv[1:]`` if None).

    Returns:
        The settings and the JSON output path, if any.
    """
    parser = argparse.ArgumentParser(
        description="DI3CL vs MoCo v2 training-step throughput and component timings",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--backbone", default="resnet18", help="timm ResNet name")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224, help="view side in pixels")
    parser.add_argument(
        "--source-size", type=int, default=None, help="input image side (default: view side)"
    )
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels-last tensors and models (the task's default)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones")
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay DI3CL's box matching as a CUDA graph on CUDA (the task's cuda_graphs)",
    )
    parser.add_argument("--memory-bank-size", type=int, default=65536, help="queue length K")
    parser.add_argument("--box-batch", type=int, default=256, help="batch of the box targets")
    parser.add_argument("--box-repeats", type=int, default=10, help="rounds of box timings")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "channels", "steps", "box_batch", "box_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must not be negative")
    settings = Settings(
        **{k: v for k, v in vars(args).items() if k not in ("json", "source_size")},
        source_size=args.source_size or args.image_size,
    )
    return settings, args.json


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(settings: Settings, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision context of a forward pass (a no-op for fp32)."""
    if settings.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _no_log(*args: Any, **kwargs: Any) -> None:
    """Stand-in for ``LightningModule.log`` and ``log_dict``."""


def sgd(module: nn.Module) -> SGD:
    """SGD over the trainable parameters, with DI3CL's settings."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    return SGD(trainable, lr=LR, momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY)


def build_di3cl(settings: Settings, device: torch.device, full: bool) -> tuple[DI3CLTask, SGD]:
    """DI3CLTask with both terms (``full``) or none (MoCo v2), ready to step.

    Args:
        settings: Benchmark settings.
        device: Device of the task.
        full: Whether the CC and DI terms are on.

    Returns:
        The task, with logging stubbed and a stand-in trainer, and its optimizer.
    """
    task = DI3CLTask(
        model=settings.backbone,
        in_channels=settings.channels,
        size=settings.image_size,
        memory_bank_size=settings.memory_bank_size,
        use_cc=full,
        use_di=full,
        channels_last=settings.channels_last,
        cuda_graphs=settings.cuda_graphs,
        compile_backbones=settings.compile,
    ).to(device)
    task.on_fit_start()  # channels-last parameters, as in training
    task.log = _no_log  # type: ignore[method-assign]
    task.log_dict = _no_log  # type: ignore[method-assign]
    optimizer = sgd(task)
    return task, optimizer


def build_torchgeo_moco(settings: Settings, device: torch.device) -> tuple[MoCo, SGD]:
    """TorchGeo's MoCo set to version 2 with the same backbone, heads and queue.

    Args:
        settings: Benchmark settings.
        device: Device of the task.

    Returns:
        The task, with logging stubbed, and its optimizer.
    """
    task = MoCo(
        model=settings.backbone,
        in_channels=settings.channels,
        version=2,
        layers=2,
        hidden_dim=2048,
        output_dim=128,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        momentum=SGD_MOMENTUM,
        temperature=0.2,
        memory_bank_size=settings.memory_bank_size,
        moco_momentum=0.999,
        size=settings.image_size,
    ).to(device)
    if settings.channels_last:
        task.to(memory_format=torch.channels_last)
    task.log = _no_log  # type: ignore[method-assign]
    return task, sgd(task)


def compile_backbones(moco: MoCo) -> None:
    """Compile TorchGeo MoCo's backbones in place with ``torch.compile``.

    DI3CLTask compiles its own (``compile_backbones=True``).
    """
    moco.backbone = torch.compile(moco.backbone)  # type: ignore[assignment]
    moco.backbone_momentum = torch.compile(moco.backbone_momentum)  # type: ignore[assignment]


def make_step(
    task: DI3CLTask | MoCo, optimizer: SGD, settings: Settings, device: torch.device
) -> Callable[[Tensor], Tensor]:
    """One training step as Lightning's automatic optimization runs it.

    Args:
        task: The task (logging stubbed).
        optimizer: Its optimizer.
        settings: Benchmark settings (precision).
        device: Device of the task.

    Returns:
        A function of the image batch that steps and returns the (detached) loss.
    """

    def step(images: Tensor) -> Tensor:
        batch = {"image": images}
        with autocast(settings, device):
            loss = task.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Lightning's hook after backward; DI3CLTask enqueues its keys here.
        task.on_after_backward()
        optimizer.step()
        return loss.detach()

    return step


class PeakMemory:
    """Peak memory of a piece of work above the memory in use when it starts."""

    def __init__(self, device: torch.device) -> None:
        """Choose the method for the device.

        Args:
            device: Where the work runs.
        """
        self.device = device
        self.method = "cuda_max_memory_allocated"
        self.malloc_trim: Callable[[int], int] | None = None
        if device.type != "cuda":
            self.method = "proc_vmhwm_reset" if _can_reset_rss_peak() else "ru_maxrss"
            with contextlib.suppress(OSError, AttributeError):
                self.malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
                self.method += "+malloc_trim"

    @contextlib.contextmanager
    def measure(self, peaks: list[float]) -> Iterator[None]:
        """Append the peak in MiB of the enclosed work to ``peaks``.

        Args:
            peaks: List that receives the measurement.

        Yields:
            Nothing; the work runs inside.
        """
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            allocated = torch.cuda.memory_allocated(self.device)
            yield
            synchronize(self.device)
            peaks.append((torch.cuda.max_memory_allocated(self.device) - allocated) / 2**20)
        elif self.method.startswith("proc_vmhwm_reset"):
            # Free heap memory is handed back first, so that memory the step reuses
            # from earlier steps shows up as resident again.
            if self.malloc_trim is not None:
                self.malloc_trim(0)
            resident = _proc_status_kib("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            yield
            peaks.append((_proc_status_kib("VmHWM") - resident) / 1024)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            yield
            peaks.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024)


def _proc_status_kib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise KeyError(field)


def _can_reset_rss_peak() -> bool:
    """Whether the peak RSS can be reset (Linux ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_kib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Run ``fn`` once.

    Args:
        fn: Work to time.
        device: Device to synchronize.

    Returns:
        Wall-clock and process CPU time in milliseconds.
    """
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def time_steps(
    steps: dict[str, Callable[[Tensor], Tensor]],
    images: Tensor,
    settings: Settings,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, list[float]], str]:
    """Time every step kind in interleaved rounds.

    Args:
        steps: Step function of each kind.
        images: Input batch.
        settings: Benchmark settings (rounds).
        device: Device of the work.

    Returns:
        Step times in ms and peak memory in MiB of the timed rounds, per kind, and
        the memory method.
    """
    kinds = list(steps)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    peaks: dict[str, list[float]] = {kind: [] for kind in kinds}
    memory = PeakMemory(device)
    for round_ in range(settings.warmup + settings.steps):
        order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
        for kind in order:
            round_peaks: list[float] = []
            with memory.measure(round_peaks):
                wall, _ = timed(partial(steps[kind], images), device)
            if round_ >= settings.warmup:
                times[kind].append(wall)
                peaks[kind].extend(round_peaks)
    return times, peaks, memory.method


def time_components(
    task: DI3CLTask, images: Tensor, settings: Settings, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Time views, box matching vs the loop (step batch and box batch), RoI heads.

    Args:
        task: Full DI3CL task (its augmentation, box options and DI heads are used).
        images: Input batch.
        settings: Benchmark settings.
        device: Device of the work.

    Returns:
        Per component, wall and CPU times in ms of every round.
    """
    matcher = task.box_matcher
    with torch.no_grad(), autocast(settings, device):
        views = task.augmentation(images)
        _, query4 = task._taps(task.model, views.view1)
        _, key4 = task._taps(task.model_momentum, views.view2)
    query4 = query4.detach().requires_grad_()
    big = [
        task.augmentation.sample_geometry(
            settings.box_batch, settings.source_size, settings.source_size, device
        )
        for _ in range(2)
    ]

    def views_fn() -> object:
        with torch.no_grad(), autocast(settings, device):
            return task.augmentation(images)

    def match(geoms: list[Any]) -> Callable[[], object]:
        # The task's matcher: a CUDA-graph replay on CUDA, plain match_boxes elsewhere.
        return lambda: matcher(geoms[0], geoms[1])

    def loop(geoms: list[Any]) -> Callable[[], object]:
        # The loop follows the matcher's options; only its tries keep the reference's 50.
        return lambda: loop_match_boxes(geoms[0], geoms[1], matcher.size, matcher.options)

    pairs = matcher(views.geom1, views.geom2)

    def roi_heads_fn() -> object:
        query4.grad = None
        with autocast(settings, device):
            loss = task._dynamic_instance_loss(query4, key4, pairs, views)
        loss.backward()
        return loss

    geoms = [views.geom1, views.geom2]
    parts: dict[str, Callable[[], object]] = {
        "views": views_fn,
        "box_match": match(geoms),
        "box_loop": loop(geoms),
        "box_match_big": match(big),
        "box_loop_big": loop(big),
        "roi_heads": roi_heads_fn,
    }
    results: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in parts}
    for round_ in range(1 + settings.box_repeats):
        for name, fn in parts.items():
            wall, cpu = timed(fn, device)
            if round_ > 0:
                results[name]["wall"].append(wall)
                results[name]["cpu"].append(cpu)
    return results


def host_sync_free(settings: Settings) -> bool:
    """Whether a full DI3CL training step runs on the ``meta`` device.

    Meta tensors have shapes but no values, so any read of a value on the host
    (``.item()``, ``bool()``, ``.tolist()``, a branch on a tensor) raises; a step
    that completes there contains no host-device synchronization.

    Args:
        settings: Benchmark settings (backbone, sizes).

    Returns:
        True if the step ran.
    """
    meta = torch.device("meta")
    settings = replace(settings, precision="fp32")  # autocast has no meta device
    with torch.device(meta):
        task, optimizer = build_di3cl(settings, meta, full=True)
        images = torch.empty(
            settings.batch_size, settings.channels, settings.source_size, settings.source_size
        )
    try:
        make_step(task, optimizer, settings, meta)(images)
    except (RuntimeError, NotImplementedError) as error:
        print(f"host-sync check: the step failed on the meta device: {error}", file=sys.stderr)
        return False
    return True


def hardware(device: torch.device) -> dict[str, Any]:
    """CPU model, threads, library versions and GPU name."""
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "torchgeo_version": torchgeo.__version__,
        "python_version": platform.python_version(),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(
    settings: Settings,
    device: torch.device,
    step_times: dict[str, list[float]],
    peaks: dict[str, list[float]],
    memory_method: str,
    components: dict[str, dict[str, list[float]]],
    sync_free: bool,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> dict[str, Any]:
    """Collect the medians, ratios, targets and context into one JSON object.

    Returns:
        The results.
    """
    step_ms = {kind: _median(step_times[kind]) for kind in STEP_KINDS}
    comp = {name: _median(times["wall"]) for name, times in components.items()}
    comp_cpu = {name: _median(times["cpu"]) for name, times in components.items()}
    step_ratio = step_ms["dic3l"] / step_ms["mocov2"]
    speedup_big = comp["box_loop_big"] / comp["box_match_big"]
    on_cpu = device.type == "cpu"
    targets = {
        "step_ratio": {"value": step_ratio, "limit": f"<= {MAX_STEP_RATIO}"},
        "box_match_big_ms": {"value": comp["box_match_big"], "limit": f"< {MAX_BOX_MATCH_MS}"},
        "box_speedup_big": {"value": speedup_big, "limit": f">= {MIN_BOX_SPEEDUP}"},
        "host_sync_free": {"value": sync_free, "limit": "True"},
    }
    targets["step_ratio"]["met"] = step_ratio <= MAX_STEP_RATIO
    targets["box_match_big_ms"]["met"] = comp["box_match_big"] < MAX_BOX_MATCH_MS
    targets["box_speedup_big"]["met"] = speedup_big >= MIN_BOX_SPEEDUP
    targets["host_sync_free"]["met"] = sync_free
    views_fraction = comp["views"] / step_ms["dic3l"]
    if not on_cpu:
        targets["views_fraction"] = {
            "value": views_fraction,
            "limit": f"<= {MAX_VIEWS_FRACTION}",
            "met": views_fraction <= MAX_VIEWS_FRACTION,
        }
    return {
        "device": str(device),
        "backbone": settings.backbone,
        "batch_size": settings.batch_size,
        "image_size": settings.image_size,
        "source_size": settings.source_size,
        "channels": settings.channels,
        "precision": settings.precision,
        "channels_last": settings.channels_last,
        "compile": settings.compile,
        "cuda_graphs": settings.cuda_graphs and device.type == "cuda",
        "memory_bank_size": settings.memory_bank_size,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "dic3l_step_ms": step_ms["dic3l"],
        "mocov2_step_ms": step_ms["mocov2"],
        "torchgeo_moco_step_ms": step_ms["torchgeo_moco"],
        "step_ratio": step_ratio,
        "torchgeo_ratio": step_ms["dic3l"] / step_ms["torchgeo_moco"],
        "step_times_ms": step_times,
        "views_ms": comp["views"],
        "views_fraction": views_fraction,
        "box_match_ms": comp["box_match"],
        "box_loop_ms": comp["box_loop"],
        "box_speedup": comp["box_loop"] / comp["box_match"],
        "box_batch": settings.box_batch,
        "box_match_big_ms": comp["box_match_big"],
        "box_loop_big_ms": comp["box_loop_big"],
        "box_speedup_big": speedup_big,
        "box_cpu_ms": {k: comp_cpu[k] for k in comp_cpu if k.startswith("box")}
        if on_cpu
        else None,
        "roi_heads_ms": comp["roi_heads"],
        "images_per_s": {k: settings.batch_size / (v / 1e3) for k, v in step_ms.items()},
        "peak_mem_mb": {kind: max(peaks[kind]) for kind in STEP_KINDS},
        "peak_mem_method": memory_method,
        "host_sync_free": sync_free,
        "targets": targets,
        "load_average": {"before": load[0], "after": load[1]},
        "hardware": hardware(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [
        f"{results['backbone']}, batch {results['batch_size']}, {results['image_size']} px, "
        f"{results['channels']} channels, {results['precision']}, device {results['device']} "
        f"({results['hardware']['torch_threads']} threads), "
        f"median of {results['steps']} rounds after {results['warmup']} warm-up",
        "",
        f"{'step':38s} {'median ms':>10s} {'images/s':>9s} {'peak MiB':>9s}",
    ]
    for kind in STEP_KINDS:
        lines.append(
            f"{STEP_NAMES[kind]:38s} {results[kind + '_step_ms']:10.1f} "
            f"{results['images_per_s'][kind]:9.1f} {results['peak_mem_mb'][kind]:9.1f}"
        )
    lines += [
        f"step ratio DI3CL / MoCo v2: {results['step_ratio']:.3f}   "
        f"DI3CL / TorchGeo MoCo v2: {results['torchgeo_ratio']:.3f}",
        "",
        f"{'component':38s} {'median ms':>10s}",
        f"{'two views':38s} {results['views_ms']:10.2f}",
        f"{'box matching, batch ' + str(results['batch_size']):38s} "
        f"{results['box_match_ms']:10.2f}",
        f"{'per-image loop, batch ' + str(results['batch_size']):38s} "
        f"{results['box_loop_ms']:10.2f}",
        f"{'box matching, batch ' + str(results['box_batch']):38s} "
        f"{results['box_match_big_ms']:10.2f}",
        f"{'per-image loop, batch ' + str(results['box_batch']):38s} "
        f"{results['box_loop_big_ms']:10.2f}",
        f"{'RoIAlign + DI heads (fwd + bwd)':38s} {results['roi_heads_ms']:10.2f}",
        f"box speed-up over the loop: {results['box_speedup']:.1f}x at batch "
        f"{results['batch_size']}, {results['box_speedup_big']:.1f}x at batch "
        f"{results['box_batch']}",
        "",
        "targets:",
    ]
    for name, target in results["targets"].items():
        value = target["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(
            f"  {name:20s} {shown:>10s}  {target['limit']:8s} "
            f"{'met' if target['met'] else 'MISSED'}"
        )
    load = results["load_average"]
    lines.append(f"load average before {load['before']}, after {load['after']}")
    return "\n".join(lines)


def run(settings: Settings) -> dict[str, Any]:
    """Build the tasks, time everything and summarize.

    Args:
        settings: Benchmark settings.

    Returns:
        The results (see :func:`summarize`).
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    load_before = os.getloadavg()
    sync_free = host_sync_free(settings)
    torch.manual_seed(settings.seed)
    di3cl, di3cl_opt = build_di3cl(settings, device, full=True)
    mocov2, mocov2_opt = build_di3cl(settings, device, full=False)
    moco, moco_opt = build_torchgeo_moco(settings, device)
    if settings.compile:
        compile_backbones(moco)
    steps = {
        "dic3l": make_step(di3cl, di3cl_opt, settings, device),
        "mocov2": make_step(mocov2, mocov2_opt, settings, device),
        "torchgeo_moco": make_step(moco, moco_opt, settings, device),
    }
    shape = (settings.batch_size, settings.channels, settings.source_size, settings.source_size)
    images = torch.rand(shape, device=device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    step_times, peaks, method = time_steps(steps, images, settings, device)
    components = time_components(di3cl, images, settings, device)
    results = summarize(
        settings,
        device,
        step_times,
        peaks,
        method,
        components,
        sync_free,
        (load_before, os.getloadavg()),
    )
    for value in (results["dic3l_step_ms"], results["mocov2_step_ms"]):
        if not math.isfinite(value):
            raise RuntimeError("a step time is not finite")
    return results


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark from the command line.

    Args:
        argv: Arguments (``sys.argv[1:]`` if None).
    """
    settings, json_path = parse_args(argv)
    results = run(settings)
    print(format_table(results))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()

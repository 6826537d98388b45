"""Training-step throughput of DI3CL against MoCo v2, with its components.

Measures, in one process on one device, the median wall time of full training
steps (forward, backward, SGD step, momentum update, enqueue) of

* ``dic3l``: :class:`~torchgeo_dic3l.tasks.DI3CLTask` with both terms (CC and DI);
* ``mocov2``: the same task with ``use_cc=False, use_di=False`` (MoCo v2);
* ``torchgeo_moco``: TorchGeo's own :class:`torchgeo.tasks.MoCo` with ``version=2``
  (same timm backbone, batch, view size, channels, queue length and heads),

and of the parts DI3CL adds or moves onto the device: making the two views, box
matching (against the per-image loop of ``experiments/box_loop.py``, at the step's
batch and at ``--box-batch``), and RoIAlign plus the Dynamic Instance heads.

A step is each task's own ``training_step`` (logging stubbed, no Lightning Trainer,
so nothing else is timed), then ``zero_grad``, ``backward``, ``on_after_backward``
and ``SGD.step``, as in Lightning's automatic optimization (:func:`make_step`); all
three use DI3CL's SGD settings and no learning-rate schedule. DI3CL's step updates
the momentum encoders, makes the views and boxes on the device, computes every term
and enqueues the keys; TorchGeo's MoCo runs its kornia augmentations, momentum
update and lightly's NTXentLoss with a memory bank (and its own ``.item()`` for
logging). ``--precision bf16`` runs ``training_step`` under ``torch.autocast`` and
``backward`` outside it, as Lightning does; models and batches are channels-last
unless ``--no-channels-last``; ``--compile`` and ``--cuda-graphs`` switch on the
task's ``compile_backbones`` and ``cuda_graphs``.

A machine's speed can drift 1.5 to 2 times from minute to minute, so the steps are
timed in interleaved rounds (each round runs every kind once, in a rotating order)
and medians are reported; CUDA is synchronized before every clock read. Peak memory
is the step's peak above what was in use when it started (:class:`PeakMemory`). One
DI3CL step also runs on PyTorch's ``meta`` device, where reading any tensor value on
the host raises: it passing shows the step has no host-device synchronization.
:mod:`torch.utils.benchmark` is not used: its ``Timer`` repeats one statement in
blocks, which cannot interleave the kinds, and measures neither CPU time nor memory.

The results are checked against :class:`Targets` (each limit is a flag, e.g.
``--max-step-ratio``) and written as one JSON object, whose keys are the fields of
:class:`Results`.

Examples::

    python experiments/throughput.py                      # resnet18, batch 32, 224 px, CPU
    python experiments/throughput.py --device cuda --backbone resnet50 --batch-size 64 \\
        --image-size 448 --precision bf16 --json throughput_448.json
    python experiments/throughput.py --device cuda --backbone resnet50 --batch-size 64 \\
        --image-size 224 --precision bf16 --cuda-graphs --json throughput_224_graphs.json
"""

import argparse
import contextlib
import ctypes
import json
import math
import operator
import os
import platform
import resource
import runpy
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchgeo
from torch import Tensor, nn
from torch.optim import SGD
from torchgeo.tasks import MoCo

from torchgeo_dic3l.models import resnet_taps
from torchgeo_dic3l.tasks import DI3CLTask

# experiments/ is a folder of scripts, not a package: the per-image loop baseline is
# loaded by file path, which works both when this file runs as a script and when it
# is itself loaded by path (as the tests do), without touching sys.path.
loop_match_boxes = runpy.run_path(str(Path(__file__).with_name("box_loop.py")))["loop_match_boxes"]

#: Human-readable names of the step kinds, in table order.
STEP_NAMES = {
    "dic3l": "DI3CL (global + CC + DI)",
    "mocov2": "MoCo v2 (DI3CLTask, CC and DI off)",
    "torchgeo_moco": "TorchGeo MoCo v2",
}
STEP_KINDS = tuple(STEP_NAMES)

#: Optimizer settings shared by all step kinds (DI3CL's published ones).
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.03, 0.9, 1e-4


@dataclass(frozen=True)
class Targets:
    """Limits the results are checked against; the defaults are the issue's.

    Each field is a command-line flag of the same name (``--max-step-ratio``...);
    its ``help`` metadata says what it limits.
    """

    max_step_ratio: float = field(
        default=1.10, metadata={"help": "DI3CL step time / MoCo v2 step time, at most"}
    )
    max_box_match_ms: float = field(
        default=2.0, metadata={"help": "box matching at --box-batch, in ms, below"}
    )
    min_box_speedup: float = field(
        default=50.0, metadata={"help": "per-image loop / box matching at --box-batch, at least"}
    )
    max_views_fraction: float = field(
        default=0.10,
        metadata={"help": "on a GPU: share of a DI3CL step spent making the views, at most"},
    )


@dataclass(frozen=True)
class Recorded:
    """The settings a result records, in the order of the JSON's first keys."""

    device: str
    backbone: str
    batch_size: int
    image_size: int
    source_size: int
    channels: int
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    memory_bank_size: int
    steps: int
    warmup: int


@dataclass(frozen=True)
class Settings(Recorded):
    """What to measure; one field per command-line flag (the targets' in ``targets``)."""

    box_batch: int
    box_repeats: int
    threads: int
    seed: int
    targets: Targets = Targets()


@dataclass(frozen=True)
class Target:
    """One checked target, as the JSON's ``targets`` section holds it.

    Attributes:
        value: The measured value.
        limit: The condition the value must meet, e.g. ``"<= 1.1"``.
        met: Whether it does.
    """

    value: float | bool
    limit: str
    met: bool

    @classmethod
    def check(cls, value: float, relation: str, limit: float) -> "Target":
        """Check ``value <relation> limit``, the relation being ``<=``, ``<`` or ``>=``."""
        compare = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}[relation]
        return cls(value, f"{relation} {limit}", compare(value, limit))


def _cpu_model() -> str:
    """The ``model name`` of ``/proc/cpuinfo``, else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class Hardware:
    """Where the benchmark ran; ``Hardware()`` describes this process (no GPU named)."""

    cpu_model: str = field(default_factory=_cpu_model)
    cpu_count: int | None = field(default_factory=os.cpu_count)
    torch_threads: int = field(default_factory=torch.get_num_threads)
    torch_version: str = torch.__version__
    torchgeo_version: str = torchgeo.__version__
    python_version: str = field(default_factory=platform.python_version)
    gpu_name: str | None = None


@dataclass(frozen=True)
class LoadAverage:
    """``os.getloadavg()`` (1, 5 and 15 minutes) before and after the run."""

    before: tuple[float, float, float]
    after: tuple[float, float, float]


@dataclass(frozen=True)
class Results(Recorded):
    """What one run measured; the fields are the keys of the JSON file, in its order.

    The settings come first (``cuda_graphs`` is true only where the graphs were used,
    on CUDA). Times are medians in ms of the timed rounds (``step_times_ms`` keeps
    every round, per step kind); the ``*_big`` entries are at ``box_batch``, the
    others at the step's batch. Ratios are DI3CL's step time over the other kind's;
    speed-ups are the loop's time over the box matching's; ``views_fraction`` is the
    views' share of a DI3CL step. ``box_cpu_ms`` (process CPU time of the box parts)
    is only measured on the CPU. ``images_per_s`` and ``peak_mem_mb`` are per step
    kind.
    """

    dic3l_step_ms: float
    mocov2_step_ms: float
    torchgeo_moco_step_ms: float
    step_ratio: float
    torchgeo_ratio: float
    step_times_ms: dict[str, list[float]]
    views_ms: float
    views_fraction: float
    box_match_ms: float
    box_loop_ms: float
    box_speedup: float
    box_batch: int
    box_match_big_ms: float
    box_loop_big_ms: float
    box_speedup_big: float
    box_cpu_ms: dict[str, float] | None
    roi_heads_ms: float
    images_per_s: dict[str, float]
    peak_mem_mb: dict[str, float]
    peak_mem_method: str
    host_sync_free: bool
    targets: dict[str, Target]
    load_average: LoadAverage
    hardware: Hardware
    command: str


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
    group = parser.add_argument_group("targets", "limits the results are checked against")
    for target in fields(Targets):
        flag = "--" + target.name.replace("_", "-")
        group.add_argument(flag, type=float, default=target.default, help=target.metadata["help"])
    args = vars(parser.parse_args(argv))
    for name in ("batch_size", "image_size", "channels", "steps", "box_batch", "box_repeats"):
        if args[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args["warmup"] < 0 or args["threads"] < 0:
        parser.error("--warmup and --threads must not be negative")
    targets = Targets(**{target.name: args.pop(target.name) for target in fields(Targets)})
    json_path, source_size = args.pop("json"), args.pop("source_size")
    settings = Settings(**args, source_size=source_size or args["image_size"], targets=targets)
    return settings, json_path


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
        The task, with logging stubbed, and its optimizer.
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
    return task, sgd(task)


def build_torchgeo_moco(settings: Settings, device: torch.device) -> tuple[MoCo, SGD]:
    """TorchGeo's MoCo set to version 2 with the same backbone, heads and queue.

    Args:
        settings: Benchmark settings.
        device: Device of the task.

    Returns:
        The task, with logging stubbed (and its backbones compiled with
        ``--compile``, as DI3CLTask's ``compile_backbones`` does), and its optimizer.
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
    optimizer = sgd(task)
    if settings.compile:
        task.backbone = torch.compile(task.backbone)  # type: ignore[assignment]
        task.backbone_momentum = torch.compile(task.backbone_momentum)  # type: ignore[assignment]
    return task, optimizer


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
    """Peak memory of a piece of work above the memory in use when it starts.

    On CUDA, ``torch.cuda.max_memory_allocated``. On the CPU, the peak resident set
    size (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``)
    minus the resident size at the start, after glibc's ``malloc_trim(0)`` has handed
    free heap memory back to the system (memory the allocator still keeps is missed,
    so it is a lower bound); ``ru_maxrss`` where the peak cannot be reset.
    """

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
    box_args = (matcher.size, matcher.options)
    with torch.no_grad(), autocast(settings, device):
        views = task.augmentation(images)
        _, query4 = resnet_taps(task.model, views.view1)
        _, key4 = resnet_taps(task.model_momentum, views.view2)
    query4 = query4.detach().requires_grad_()
    side = settings.source_size
    big = [
        task.augmentation.sample_geometry(settings.box_batch, side, side, device) for _ in range(2)
    ]
    pairs = matcher(views.geom1, views.geom2)

    def views_fn() -> object:
        with torch.no_grad(), autocast(settings, device):
            return task.augmentation(images)

    def roi_heads_fn() -> object:
        query4.grad = None
        with autocast(settings, device):
            loss = task.dynamic_instance_loss(query4, key4, pairs, views)
        loss.backward()
        return loss

    # The task's matcher (a CUDA-graph replay on CUDA, plain match_boxes elsewhere)
    # against the loop, which follows its options; only its tries keep the reference's 50.
    parts: dict[str, Callable[[], object]] = {
        "views": views_fn,
        "box_match": lambda: matcher(views.geom1, views.geom2),
        "box_loop": lambda: loop_match_boxes(views.geom1, views.geom2, *box_args),
        "box_match_big": lambda: matcher(*big),
        "box_loop_big": lambda: loop_match_boxes(*big, *box_args),
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


def format_table(r: Results) -> str:
    """The results ``r`` as a plain-text table."""
    lines = [
        f"{r.backbone}, batch {r.batch_size}, {r.image_size} px, {r.channels} channels, "
        f"{r.precision}, device {r.device} ({r.hardware.torch_threads} threads), "
        f"median of {r.steps} rounds after {r.warmup} warm-up",
        "",
        f"{'step':38s} {'median ms':>10s} {'images/s':>9s} {'peak MiB':>9s}",
    ]
    step_ms = (r.dic3l_step_ms, r.mocov2_step_ms, r.torchgeo_moco_step_ms)
    for kind, ms in zip(STEP_KINDS, step_ms, strict=True):
        lines.append(
            f"{STEP_NAMES[kind]:38s} {ms:10.1f} "
            f"{r.images_per_s[kind]:9.1f} {r.peak_mem_mb[kind]:9.1f}"
        )
    components = [
        ("two views", r.views_ms),
        (f"box matching, batch {r.batch_size}", r.box_match_ms),
        (f"per-image loop, batch {r.batch_size}", r.box_loop_ms),
        (f"box matching, batch {r.box_batch}", r.box_match_big_ms),
        (f"per-image loop, batch {r.box_batch}", r.box_loop_big_ms),
        ("RoIAlign + DI heads (fwd + bwd)", r.roi_heads_ms),
    ]
    lines += [
        f"step ratio DI3CL / MoCo v2: {r.step_ratio:.3f}   "
        f"DI3CL / TorchGeo MoCo v2: {r.torchgeo_ratio:.3f}",
        "",
        f"{'component':38s} {'median ms':>10s}",
        *(f"{name:38s} {ms:10.2f}" for name, ms in components),
        f"box speed-up over the loop: {r.box_speedup:.1f}x at batch {r.batch_size}, "
        f"{r.box_speedup_big:.1f}x at batch {r.box_batch}",
        "",
        "targets:",
    ]
    for name, target in r.targets.items():
        value = target.value
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(
            f"  {name:20s} {shown:>10s}  {target.limit:8s} {'met' if target.met else 'MISSED'}"
        )
    lines.append(f"load average before {r.load_average.before}, after {r.load_average.after}")
    return "\n".join(lines)


def run(settings: Settings) -> Results:
    """Build the tasks, time everything, and collect the medians, ratios and targets.

    Args:
        settings: Benchmark settings.

    Returns:
        The results.

    Raises:
        RuntimeError: If a step time is not finite.
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
    step_ms = {kind: statistics.median(step_times[kind]) for kind in STEP_KINDS}
    comp = {name: statistics.median(times["wall"]) for name, times in components.items()}
    step_ratio = step_ms["dic3l"] / step_ms["mocov2"]
    speedup_big = comp["box_loop_big"] / comp["box_match_big"]
    views_fraction = comp["views"] / step_ms["dic3l"]
    on_cpu = device.type == "cpu"
    limits = settings.targets
    targets = {
        "step_ratio": Target.check(step_ratio, "<=", limits.max_step_ratio),
        "box_match_big_ms": Target.check(comp["box_match_big"], "<", limits.max_box_match_ms),
        "box_speedup_big": Target.check(speedup_big, ">=", limits.min_box_speedup),
        "host_sync_free": Target(sync_free, "True", sync_free),
    }
    if not on_cpu:
        targets["views_fraction"] = Target.check(views_fraction, "<=", limits.max_views_fraction)
    box_cpu_ms = {
        name: statistics.median(times["cpu"])
        for name, times in components.items()
        if name.startswith("box")
    }
    recorded = {name.name: getattr(settings, name.name) for name in fields(Recorded)}
    recorded |= {
        "device": str(device),
        "cuda_graphs": settings.cuda_graphs and device.type == "cuda",
    }
    if not (math.isfinite(step_ms["dic3l"]) and math.isfinite(step_ms["mocov2"])):
        raise RuntimeError("a step time is not finite")
    return Results(
        **recorded,
        dic3l_step_ms=step_ms["dic3l"],
        mocov2_step_ms=step_ms["mocov2"],
        torchgeo_moco_step_ms=step_ms["torchgeo_moco"],
        step_ratio=step_ratio,
        torchgeo_ratio=step_ms["dic3l"] / step_ms["torchgeo_moco"],
        step_times_ms=step_times,
        views_ms=comp["views"],
        views_fraction=views_fraction,
        box_match_ms=comp["box_match"],
        box_loop_ms=comp["box_loop"],
        box_speedup=comp["box_loop"] / comp["box_match"],
        box_batch=settings.box_batch,
        box_match_big_ms=comp["box_match_big"],
        box_loop_big_ms=comp["box_loop_big"],
        box_speedup_big=speedup_big,
        box_cpu_ms=box_cpu_ms if on_cpu else None,
        roi_heads_ms=comp["roi_heads"],
        images_per_s={k: settings.batch_size / (v / 1e3) for k, v in step_ms.items()},
        peak_mem_mb={kind: max(peaks[kind]) for kind in STEP_KINDS},
        peak_mem_method=method,
        host_sync_free=sync_free,
        targets=targets,
        load_average=LoadAverage(before=load_before, after=os.getloadavg()),
        hardware=Hardware(
            gpu_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None
        ),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
    )


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
        json_path.write_text(json.dumps(asdict(results), indent=2) + "\n")
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()

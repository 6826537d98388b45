"""The benchmark grid: initializations x tasks x decoders x protocols x label fractions x seeds.

A grid is read from a mapping (a YAML file or command-line flags), validated, and
expanded into :class:`RunSpec` objects, one fine-tuning run each. YAML layout::

    inits:                       # name: spec, in table order (or a list of "name=spec")
      random: random
      di3cl: outputs/pretrain_synthetic/di3cl/last.ckpt
    tasks:
      - water                    # a synthetic task, with the `synthetic` options below
      - name: sf                 # a labelled scene: LabelledSARSceneDataModule arguments
        scene: {images: [a.tif], label: labels.tif, classes: [water, land]}
    synthetic: {size: 64, length: 128}
    decoders: [unet]
    protocols: [full]            # or linear and/or frozen (encoder weights and BN fixed)
    label_fractions: [1.0]
    seeds: [0]
    training: {backbone: resnet18, steps: 200, batch_size: 16, lr: 0.001}
    figure_patches: 2

Relative paths are taken relative to the working directory, as in the LightningCLI
configs of this project.
"""

import inspect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..datamodules import LabelledSARSceneDataModule, SyntheticSARSegmentationDataModule
from ..datasets import SyntheticSARSegmentation

#: Built-in synthetic tasks (see :class:`~torchgeo_dic3l.datasets.SyntheticSARSegmentation`).
SYNTHETIC_TASKS: tuple[str, ...] = ("landcover", "water", "roads")

#: Protocols: ``linear`` fits a linear head on the frozen encoder's stages, ``frozen``
#: trains the decoder and head on the frozen encoder, ``full`` trains everything.
PROTOCOLS: tuple[str, ...] = ("linear", "frozen", "full")

#: Protocols whose encoder stays as initialized (its features are computed once).
FROZEN_PROTOCOLS: tuple[str, ...] = ("linear", "frozen")

#: smp decoders that ``torchgeo.tasks.SemanticSegmentation`` builds around a backbone.
DECODERS: tuple[str, ...] = ("unet", "deeplabv3+", "upernet", "segformer", "dpt")

#: Datamodule arguments set by the grid for every run, so tasks may not set them.
GRID_CONTROLLED: tuple[str, ...] = ("batch_size", "num_workers", "label_fraction")

#: Init specs meaning random weights, and ImageNet weights.
RANDOM_SPECS: tuple[str, ...] = ("random", "none", "scratch")
IMAGENET_SPECS: tuple[str, ...] = ("imagenet",)

#: File suffixes that mark an init spec as a path even when the file is missing.
WEIGHT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pth", ".pt", ".safetensors", ".bin")

InitKind = Literal["random", "imagenet", "path", "weight_name"]
TaskKind = Literal["synthetic", "scene"]

_TOP_LEVEL_KEYS = (
    "inits",
    "tasks",
    "synthetic",
    "decoders",
    "protocols",
    "label_fractions",
    "seeds",
    "training",
    "figure_patches",
)
_SCENE_REQUIRED = ("images", "label", "classes")


@dataclass(frozen=True)
class InitSpec:
    """A named backbone initialization.

    Attributes:
        name: Row label in the results (e.g. ``di3cl``).
        source: ``random``, ``imagenet``, a checkpoint / state-dict path, or a TorchGeo
            weight name such as ``ResNet50_Weights.SENTINEL1_ALL_MOCO``.
    """

    name: str
    source: str

    def __post_init__(self) -> None:
        """Validate the name and source.

        Raises:
            ValueError: If the name or source is empty or the name holds ``=``.
        """
        if not self.name.strip() or "=" in self.name:
            raise ValueError(f"init name must be non-empty and hold no '=', got {self.name!r}")
        if not self.source.strip():
            raise ValueError(f"init {self.name!r} has an empty spec")

    @classmethod
    def parse(cls, text: str) -> "InitSpec":
        """Parse ``name=spec``; a bare ``random`` or ``imagenet`` names itself.

        Args:
            text: The command-line form.

        Returns:
            The init spec.

        Raises:
            ValueError: If ``text`` has no ``=`` and is not a bare keyword.
        """
        name, sep, source = text.partition("=")
        if sep:
            return cls(name.strip(), source.strip())
        if text.strip().lower() in RANDOM_SPECS + IMAGENET_SPECS:
            return cls(text.strip(), text.strip())
        raise ValueError(
            f"init {text!r} must be name=spec (e.g. di3cl=path/to/last.ckpt); only "
            f"{RANDOM_SPECS + IMAGENET_SPECS} may stand alone"
        )

    @property
    def kind(self) -> InitKind:
        """How :attr:`source` is interpreted.

        Returns:
            ``random``, ``imagenet``, ``path`` (an existing file, or a spec that looks
            like one: it holds a path separator or ends in a weights suffix) or
            ``weight_name``.
        """
        lowered = self.source.strip().lower()
        if lowered in RANDOM_SPECS:
            return "random"
        if lowered in IMAGENET_SPECS:
            return "imagenet"
        looks_like_path = "/" in self.source or "\\" in self.source
        if looks_like_path or lowered.endswith(WEIGHT_SUFFIXES) or Path(self.source).is_file():
            return "path"
        return "weight_name"


@dataclass(frozen=True)
class TaskSpec:
    """A segmentation task: a built-in synthetic task or a labelled scene.

    Attributes:
        name: Task label in the results.
        kind: ``synthetic`` or ``scene``.
        options: Arguments of
            :class:`~torchgeo_dic3l.datamodules.SyntheticSARSegmentationDataModule`
            (``synthetic``, including ``task``) or of
            :class:`~torchgeo_dic3l.datamodules.LabelledSARSceneDataModule` (``scene``),
            without the grid-controlled ones.
    """

    name: str
    kind: TaskKind
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate the options.

        Raises:
            ValueError: If the kind is unknown, a grid-controlled or required option is
                misplaced, or a synthetic task name is unknown.
        """
        if not self.name.strip():
            raise ValueError("task name must be non-empty")
        if self.kind not in ("synthetic", "scene"):
            raise ValueError(f"task {self.name!r}: kind must be synthetic or scene")
        controlled = GRID_CONTROLLED + (("seed",) if self.kind == "scene" else ())
        if clash := sorted(set(self.options) & set(controlled)):
            raise ValueError(
                f"task {self.name!r} sets {clash}, which the grid sets for every run "
                "(batch_size and num_workers under training:, label_fraction under "
                "label_fractions:, the scene's label-subset seed under seeds:)"
            )
        accepted = _accepted_options(self.kind)
        if unknown := sorted(set(self.options) - accepted):
            raise ValueError(
                f"task {self.name!r}: unknown {self.kind} option(s) {unknown}; expected some "
                f"of {sorted(accepted - set(controlled))}"
            )
        if self.kind == "synthetic":
            task = self.options.get("task")
            if task not in SYNTHETIC_TASKS:
                raise ValueError(
                    f"task {self.name!r}: synthetic task must be one of {SYNTHETIC_TASKS}, "
                    f"got {task!r}"
                )
        elif missing := [key for key in _SCENE_REQUIRED if key not in self.options]:
            raise ValueError(
                f"scene task {self.name!r} lacks {missing}; a scene needs images, label "
                "and classes (LabelledSARSceneDataModule arguments)"
            )


def _accepted_options(kind: TaskKind) -> set[str]:
    """Argument names of the datamodule (and, for synthetic tasks, its dataset)."""
    if kind == "scene":
        classes: tuple[type, ...] = (LabelledSARSceneDataModule,)
    else:
        classes = (SyntheticSARSegmentationDataModule, SyntheticSARSegmentation)
    names = set()
    for cls in classes:
        for name, parameter in inspect.signature(cls).parameters.items():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                names.add(name)
    return names - {"split", "transforms"}


@dataclass(frozen=True)
class TrainingSpec:
    """Training settings shared by all runs of a grid.

    Attributes:
        backbone: smp / timm encoder name (a ResNet for this package's checkpoints).
        epochs: Training epochs (ignored when ``steps`` is set): every run takes
            ``epochs`` times the batches of one epoch in optimizer steps.
        steps: If set, the number of optimizer steps of every run, exactly, so that
            small label fractions get as many updates as large ones.
        batch_size: Patches per batch (lowered to the training set size if larger).
        lr: AdamW learning rate of the ``frozen`` and ``full`` protocols.
        linear_lr: Peak AdamW learning rate of the ``linear`` probe (cosine decay;
            see :func:`~torchgeo_dic3l.evaluation.fit_linear_head`).
        patience: ReduceLROnPlateau patience in epochs (on ``val_loss``) of the
            ``frozen`` and ``full`` protocols.
        loss: Loss of ``SemanticSegmentation`` (``ce``, ``focal``, ``dice``, ``jaccard``).
        num_workers: Data-loading workers.
        accelerator: Lightning accelerator (``auto`` uses a GPU when there is one).
    """

    backbone: str = "resnet18"
    epochs: int = 3
    steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    linear_lr: float = 0.1
    patience: int = 10
    loss: str = "ce"
    num_workers: int = 0
    accelerator: str = "auto"

    def __post_init__(self) -> None:
        """Validate the settings.

        Raises:
            ValueError: If a count is not positive or the loss is unknown.
        """
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"training.{name} must be a positive integer, got {value!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(
                f"training.steps must be a positive integer or null, got {self.steps!r}"
            )
        for name in ("lr", "linear_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"training.{name} must be positive, got {getattr(self, name)!r}")
        if self.loss not in ("ce", "focal", "dice", "jaccard"):
            raise ValueError(
                f"training.loss must be ce, focal, dice or jaccard, got {self.loss!r}"
            )
        if self.num_workers < 0:
            raise ValueError(f"training.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run of the grid.

    Attributes:
        init: Backbone initialization.
        task: Segmentation task.
        decoder: smp decoder name.
        protocol: ``linear``, ``frozen`` or ``full``.
        label_fraction: Fraction of the training patches used.
        seed: Seed of the run (weights of decoder/head, data order, scene label subset).
    """

    init: InitSpec
    task: TaskSpec
    decoder: str
    protocol: str
    label_fraction: float
    seed: int

    @property
    def group(self) -> str:
        """Identifier of the table / figure this run belongs to (all but init and seed).

        Returns:
            A file-name-safe string.
        """
        return group_name(self.task.name, self.decoder, self.protocol, self.label_fraction)

    @property
    def run_id(self) -> str:
        """Unique, file-name-safe identifier of the run.

        Returns:
            The group, seed and init name joined by underscores.
        """
        return _safe(f"{self.group}_seed{self.seed}_{self.init.name}")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)


def group_name(task: str, decoder: str, protocol: str, label_fraction: float) -> str:
    """File-name-safe identifier of one table of the grid.

    Args:
        task: Task name.
        decoder: Decoder name.
        protocol: Protocol.
        label_fraction: Label fraction.

    Returns:
        e.g. ``water_unet_full_lf0.1``.
    """
    return _safe(f"{task}_{decoder}_{protocol}_lf{float(label_fraction):g}")


@dataclass(frozen=True)
class GridSpec:
    """A full benchmark grid.

    Attributes:
        inits: Initializations, in table-row order.
        tasks: Tasks.
        decoders: smp decoders.
        protocols: Some of ``linear``, ``frozen`` and ``full``.
        label_fractions: Fractions of training patches, each in (0, 1].
        seeds: Seeds; tables report mean +- std over them.
        training: Shared training settings.
        figure_patches: Test patches shown in the prediction figures (0 for none).
    """

    inits: tuple[InitSpec, ...]
    tasks: tuple[TaskSpec, ...]
    decoders: tuple[str, ...] = ("unet",)
    protocols: tuple[str, ...] = ("full",)
    label_fractions: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    training: TrainingSpec = TrainingSpec()
    figure_patches: int = 2

    def __post_init__(self) -> None:
        """Validate the grid.

        Raises:
            ValueError: If an axis is empty, repeats a value, or holds a bad value.
        """
        for axis in ("inits", "tasks", "decoders", "protocols", "label_fractions", "seeds"):
            if not getattr(self, axis):
                raise ValueError(f"the grid needs at least one entry in {axis}")
        for axis, names in (
            ("inits", [i.name for i in self.inits]),
            ("tasks", [t.name for t in self.tasks]),
            ("decoders", self.decoders),
            ("protocols", self.protocols),
            ("label_fractions", self.label_fractions),
            ("seeds", self.seeds),
        ):
            if duplicates := sorted({str(n) for n in names if list(names).count(n) > 1}):
                raise ValueError(f"{axis} repeats {duplicates}")
        for decoder in self.decoders:
            if decoder not in DECODERS:
                raise ValueError(
                    f"decoder {decoder!r} is not one that torchgeo.tasks.SemanticSegmentation "
                    f"builds around a backbone; choose from {DECODERS}"
                )
        for protocol in self.protocols:
            if protocol not in PROTOCOLS:
                raise ValueError(f"protocol {protocol!r} must be one of {PROTOCOLS}")
        for fraction in self.label_fractions:
            if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
                raise ValueError(f"label fraction {fraction!r} must be in (0, 1]")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seed {seed!r} must be a non-negative integer")
        if not isinstance(self.figure_patches, int) or self.figure_patches < 0:
            raise ValueError(f"figure_patches must be >= 0, got {self.figure_patches!r}")

    def runs(self) -> list[RunSpec]:
        """Expand the grid; the init varies fastest, so runs of a table are adjacent.

        Returns:
            One :class:`RunSpec` per combination.
        """
        return [
            RunSpec(init, task, decoder, protocol, float(fraction), seed)
            for task in self.tasks
            for decoder in self.decoders
            for protocol in self.protocols
            for fraction in self.label_fractions
            for seed in self.seeds
            for init in self.inits
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GridSpec":
        """Build a grid from the YAML layout described in the module docstring.

        Args:
            data: The parsed mapping.

        Returns:
            The grid.

        Raises:
            ValueError: If a key is unknown or a value is malformed.
        """
        if unknown := sorted(set(data) - set(_TOP_LEVEL_KEYS)):
            raise ValueError(f"unknown grid key(s) {unknown}; expected some of {_TOP_LEVEL_KEYS}")
        synthetic = dict(data.get("synthetic") or {})
        training = data.get("training") or {}
        if unknown := sorted(set(training) - set(TrainingSpec.__dataclass_fields__)):
            raise ValueError(
                f"unknown training key(s) {unknown}; expected some of "
                f"{tuple(TrainingSpec.__dataclass_fields__)}"
            )
        defaults = GridSpec.__dataclass_fields__
        return cls(
            inits=_parse_inits(data.get("inits")),
            tasks=tuple(_parse_task(entry, synthetic) for entry in _as_list(data.get("tasks"))),
            decoders=_axis(data, "decoders", str, defaults),
            protocols=_axis(data, "protocols", str, defaults),
            label_fractions=_axis(data, "label_fractions", float, defaults),
            seeds=_axis(data, "seeds", int, defaults),
            training=TrainingSpec(**training),
            figure_patches=int(data.get("figure_patches", 2)),
        )

    @classmethod
    def from_yaml(cls, path: Path | str) -> "GridSpec":
        """Read a grid from a YAML file.

        Args:
            path: The YAML file.

        Returns:
            The grid.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the file is not a mapping or the grid is malformed.
        """
        return cls.from_dict(load_grid_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        """The grid in the YAML layout (every task written out in full).

        Returns:
            A mapping that :meth:`from_dict` turns back into an equal grid.
        """
        return {
            "inits": {init.name: init.source for init in self.inits},
            "tasks": [{"name": t.name, t.kind: dict(t.options)} for t in self.tasks],
            "decoders": list(self.decoders),
            "protocols": list(self.protocols),
            "label_fractions": list(self.label_fractions),
            "seeds": list(self.seeds),
            "training": asdict(self.training),
            "figure_patches": self.figure_patches,
        }


def load_grid_yaml(path: Path | str) -> dict[str, Any]:
    """Read a grid YAML file as a mapping.

    Args:
        path: The YAML file.

    Returns:
        The mapping (empty for an empty file).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid config not found: {path}")
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a grid config must be a mapping, got {type(content).__name__}")
    return content


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Mapping):
        return [value]
    return list(value)


def _axis(
    data: Mapping[str, Any], key: str, cast: type, defaults: Mapping[str, Any]
) -> tuple[Any, ...]:
    if key not in data:
        return tuple(defaults[key].default)
    values = []
    for value in _as_list(data[key]):
        if isinstance(value, bool):
            raise ValueError(f"{key}: {value!r} is not a {cast.__name__}")
        if cast is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{key}: {value!r} is not an int")
        try:
            converted = cast(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{key}: {value!r} is not a {cast.__name__}") from error
        if cast is float and not math.isfinite(converted):
            raise ValueError(f"{key}: {value!r} is not finite")
        values.append(converted)
    return tuple(values)


def _parse_inits(value: Any) -> tuple[InitSpec, ...]:
    if isinstance(value, Mapping):
        return tuple(InitSpec(str(name), str(source)) for name, source in value.items())
    return tuple(InitSpec.parse(str(entry)) for entry in _as_list(value))


def _parse_task(entry: Any, synthetic: Mapping[str, Any]) -> TaskSpec:
    """Turn one ``tasks`` entry into a :class:`TaskSpec`.

    A string names a synthetic task (with the shared ``synthetic`` options); a mapping
    has ``name`` and either ``scene`` or ``synthetic`` options.
    """
    if isinstance(entry, str):
        return TaskSpec(entry, "synthetic", {**synthetic, "task": entry})
    if not isinstance(entry, Mapping):
        raise ValueError(f"tasks: entry {entry!r} must be a task name or a mapping")
    kinds = [kind for kind in ("scene", "synthetic") if kind in entry]
    if unknown := sorted(set(entry) - {"name", "scene", "synthetic"}):
        raise ValueError(f"tasks: entry {dict(entry)} has unknown key(s) {unknown}")
    if len(kinds) != 1 or "name" not in entry:
        raise ValueError(
            f"tasks: entry {dict(entry)} needs a name and exactly one of scene: or synthetic:"
        )
    options = dict(entry[kinds[0]] or {})
    if kinds[0] == "synthetic":
        options = {**synthetic, "task": entry["name"], **options}
    return TaskSpec(str(entry["name"]), kinds[0], options)  # type: ignore[arg-type]


def scene_task(
    name: str,
    images: Sequence[str],
    label: str,
    classes: Sequence[str],
    label_values: Sequence[int] | None = None,
    ignore_values: Sequence[int] = (),
    **options: Any,
) -> TaskSpec:
    """Build a scene task from the essentials (what the command-line flags give).

    Args:
        name: Task label.
        images: Image rasters.
        label: Label raster.
        classes: Class names.
        label_values: Raw label value of each class; defaults to ``0..K-1``.
        ignore_values: Raw label values meaning unlabelled.
        **options: Further :class:`~torchgeo_dic3l.datamodules.LabelledSARSceneDataModule`
            arguments (``units``, ``patch_size``, ``channel_names``, ...).

    Returns:
        The task.
    """
    scene: dict[str, Any] = {
        "images": list(images),
        "label": label,
        "classes": list(classes),
        "ignore_values": list(ignore_values),
        **options,
    }
    if label_values is not None:
        scene["label_values"] = list(label_values)
    return TaskSpec(name, "scene", scene)


def run_identity(run: RunSpec) -> dict[str, Any]:
    """The keys that identify a run in ``results.json``, shared by every row kind.

    Args:
        run: The run.

    Returns:
        ``run_id``, ``init``, ``init_source``, ``task``, ``decoder``, ``protocol``,
        ``label_fraction`` and ``seed``.
    """
    return {
        "run_id": run.run_id,
        "init": run.init.name,
        "init_source": run.init.source,
        "task": run.task.name,
        "decoder": run.decoder,
        "protocol": run.protocol,
        "label_fraction": run.label_fraction,
        "seed": run.seed,
    }


def run_specification(run: RunSpec, training: TrainingSpec) -> dict[str, Any]:
    """Everything a run's scores depend on, in the JSON form stored in its row.

    Two rows are results of the same run only if their specifications are equal; the
    run id alone leaves out the init's source, the task's options and the training
    settings.

    Args:
        run: The run.
        training: The grid's training settings.

    Returns:
        ``init`` (name and source), ``task`` (name, kind and options), ``decoder``,
        ``protocol``, ``label_fraction``, ``seed`` and ``training`` (every setting),
        with lists where the specs hold tuples.
    """
    specification = {
        "init": {"name": run.init.name, "source": run.init.source},
        "task": {"name": run.task.name, "kind": run.task.kind, "options": dict(run.task.options)},
        "decoder": run.decoder,
        "protocol": run.protocol,
        "label_fraction": run.label_fraction,
        "seed": run.seed,
        "training": asdict(training),
    }
    # Through JSON, so that a fresh specification equals one read back from results.json.
    return json.loads(json.dumps(specification))

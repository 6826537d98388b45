"""The benchmark grid: initializations x tasks x decoders x protocols x label fractions x seeds.

A grid is read from a mapping (a YAML file or command-line flags), checked against its
typed layout (:class:`GridLayout`) by jsonargparse, and expanded into :class:`RunSpec`
objects, one fine-tuning run each. YAML layout::

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

import json
import re
from argparse import ArgumentError
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from jsonargparse import ArgumentParser
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt, restricted_number_type
from timm.models import is_model_in_modules

from ..datamodules import LabelledSARSceneDataModule, SyntheticSARSegmentationDataModule
from ..models.checkpoint import (
    IMAGENET_SOURCES,
    RANDOM_SOURCES,
    WeightsSourceKind,
    weights_source_kind,
)

#: smp decoders that ``torchgeo.tasks.SemanticSegmentation`` builds around a backbone.
Decoder = Literal["unet", "deeplabv3+", "upernet", "segformer", "dpt"]
#: ``linear`` fits a linear head on the frozen encoder's stages, ``frozen`` trains the
#: decoder and head on the frozen encoder, ``full`` trains everything.
Protocol = Literal["linear", "frozen", "full"]
Loss = Literal["ce", "focal", "dice", "jaccard"]
TaskKind = Literal["synthetic", "scene"]
if TYPE_CHECKING:
    LabelFraction = float
else:
    #: A fraction of the training patches, in (0, 1] (checked by jsonargparse).
    LabelFraction = restricted_number_type("LabelFraction", float, [(">", 0), ("<=", 1)])

#: Decoders of TorchGeo 0.10's ``SemanticSegmentation`` (smp 0.6) that take a timm
#: Vision Transformer encoder: only DPT. smp refuses a ViT's single-stride features
#: for the others ("Unsupported model downsampling pattern"); FCN has no encoder.
VIT_DECODERS: tuple[str, ...] = ("dpt",)

#: Protocols whose encoder stays as initialized (its features are computed once).
FROZEN_PROTOCOLS: tuple[str, ...] = ("linear", "frozen")

#: Datamodule arguments set by the grid for every run, so tasks may not set them.
GRID_CONTROLLED: tuple[str, ...] = ("batch_size", "num_workers", "label_fraction")

#: The datamodule that takes each kind of task's options.
TASK_DATAMODULES: dict[str, type] = {
    "synthetic": SyntheticSARSegmentationDataModule,
    "scene": LabelledSARSceneDataModule,
}


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
        if text.strip().lower() in RANDOM_SOURCES + IMAGENET_SOURCES:
            return cls(text.strip(), text.strip())
        raise ValueError(
            f"init {text!r} must be name=spec (e.g. di3cl=path/to/last.ckpt); only "
            f"{RANDOM_SOURCES + IMAGENET_SOURCES} may stand alone"
        )

    @property
    def kind(self) -> WeightsSourceKind:
        """How :attr:`source` is interpreted.

        Returns:
            ``random``, ``imagenet``, ``path`` or ``weight_name``, as
            :func:`~torchgeo_dic3l.models.checkpoint.weights_source_kind` decides.
        """
        return weights_source_kind(self.source)


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
        """Check the options against the datamodule's signature (names, types, required).

        Raises:
            ValueError: If the kind is unknown, a grid-controlled option is set, or the
                options do not fit the datamodule.
        """
        if not self.name.strip():
            raise ValueError("task name must be non-empty")
        if self.kind not in TASK_DATAMODULES:
            raise ValueError(f"task {self.name!r}: kind must be synthetic or scene")
        controlled = GRID_CONTROLLED + (("seed",) if self.kind == "scene" else ())
        if clash := sorted(set(self.options) & set(controlled)):
            raise ValueError(
                f"task {self.name!r} sets {clash}, which the grid sets for every run "
                "(batch_size and num_workers under training:, label_fraction under "
                "label_fractions:, the scene's label-subset seed under seeds:)"
            )
        try:
            _options_parser(self.kind).parse_object(self.options, defaults=False)
        except ArgumentError as error:  # what jsonargparse raises with exit_on_error=False
            name = TASK_DATAMODULES[self.kind].__name__
            raise ValueError(
                f"task {self.name!r}: its {self.kind} options do not fit {name}: {error}"
            ) from error


@cache
def _options_parser(kind: str) -> ArgumentParser:
    """The jsonargparse parser of one task kind's datamodule arguments, less the grid's own."""
    parser = ArgumentParser(exit_on_error=False)
    skip = set(GRID_CONTROLLED) | ({"seed"} if kind == "scene" else set())
    parser.add_class_arguments(TASK_DATAMODULES[kind], skip=skip, fail_untyped=False)
    return parser


@dataclass(frozen=True)
class TrainingSpec:
    """Training settings shared by all runs of a grid.

    Attributes:
        backbone: smp / timm encoder name: a ResNet (``resnet18``) for DI3CLTask
            checkpoints, a ``tu-`` timm ViT (``tu-vit_tiny_patch16_224``, with the
            ``dpt`` decoder) for SARMAETask ones.
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
    epochs: PositiveInt = 3
    steps: PositiveInt | None = None
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 1e-3
    linear_lr: PositiveFloat = 0.1
    patience: PositiveInt = 10
    loss: Loss = "ce"
    num_workers: NonNegativeInt = 0
    accelerator: str = "auto"


@dataclass(frozen=True)
class TaskEntry:
    """One ``tasks:`` entry written as a mapping (a bare string names a synthetic task).

    Attributes:
        name: Task label.
        scene: :class:`~torchgeo_dic3l.datamodules.LabelledSARSceneDataModule` arguments.
        synthetic: Synthetic-task options, over the grid's shared ``synthetic:`` ones;
            ``task`` defaults to the name.
    """

    name: str
    scene: dict[str, Any] | None = None
    synthetic: dict[str, Any] | None = None


@dataclass(frozen=True)
class GridLayout:
    """The grid as written in YAML (the module docstring's layout), typed for jsonargparse.

    Attributes:
        inits: ``name: spec`` in table order, or a list of ``name=spec``.
        tasks: Synthetic task names and task mappings.
        synthetic: SyntheticSARSegmentationDataModule arguments shared by the
            synthetic tasks.
        decoders: smp decoders.
        protocols: Some of ``linear``, ``frozen`` and ``full``.
        label_fractions: Fractions of training patches, each in (0, 1].
        seeds: Seeds; tables report mean +- std over them.
        training: Shared training settings.
        figure_patches: Test patches shown in the prediction figures (0 for none).
    """

    inits: dict[str, str] | list[str]
    tasks: list[str | TaskEntry]
    synthetic: dict[str, Any] = field(default_factory=dict)
    decoders: list[Decoder] = field(default_factory=lambda: ["unet"])
    protocols: list[Protocol] = field(default_factory=lambda: ["full"])
    label_fractions: list[LabelFraction] = field(default_factory=lambda: [1.0])
    seeds: list[NonNegativeInt] = field(default_factory=lambda: [0])
    training: TrainingSpec = field(default_factory=TrainingSpec)
    figure_patches: NonNegativeInt = 2


@cache
def _layout_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(GridLayout)
    return parser


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
    """A full benchmark grid, expanded from its :class:`GridLayout`.

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
        """Check what the layout's types cannot: every axis has entries, none repeats.

        Raises:
            ValueError: If an axis is empty or repeats a value.
        """
        axes: tuple[tuple[str, list[Any]], ...] = (
            ("inits", [i.name for i in self.inits]),
            ("tasks", [t.name for t in self.tasks]),
            ("decoders", list(self.decoders)),
            ("protocols", list(self.protocols)),
            ("label_fractions", list(self.label_fractions)),
            ("seeds", list(self.seeds)),
        )
        for axis, names in axes:
            if not names:
                raise ValueError(f"the grid needs at least one entry in {axis}")
            if duplicates := sorted({str(n) for n in names if names.count(n) > 1}):
                raise ValueError(f"{axis} repeats {duplicates}")
        _check_decoders(self.training.backbone, self.decoders)

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
            ValueError: If a key is unknown or a value does not fit :class:`GridLayout`
                or the task's datamodule.
        """
        parser = _layout_parser()
        try:
            layout = GridLayout(**vars(parser.instantiate(parser.parse_object(dict(data)))))
        except ArgumentError as error:  # what jsonargparse raises with exit_on_error=False
            raise ValueError(f"grid config: {error}") from error
        if isinstance(layout.inits, dict):
            inits = tuple(InitSpec(name, source) for name, source in layout.inits.items())
        else:
            inits = tuple(InitSpec.parse(entry) for entry in layout.inits)
        return cls(
            inits=inits,
            tasks=tuple(_task(entry, layout.synthetic) for entry in layout.tasks),
            decoders=tuple(layout.decoders),
            protocols=tuple(layout.protocols),
            label_fractions=tuple(float(f) for f in layout.label_fractions),
            seeds=tuple(int(seed) for seed in layout.seeds),
            training=TrainingSpec(**{k: _plain(v) for k, v in asdict(layout.training).items()}),
            figure_patches=int(layout.figure_patches),
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


def is_vit_backbone(backbone: str) -> bool:
    """Whether an smp / timm encoder name is a timm Vision Transformer.

    Args:
        backbone: e.g. ``resnet18`` or ``tu-vit_tiny_patch16_224``.

    Returns:
        True for timm ``vision_transformer`` models, with or without smp's ``tu-``.
    """
    return bool(is_model_in_modules(backbone.removeprefix("tu-"), ["vision_transformer"]))


def _check_decoders(backbone: str, decoders: Sequence[str]) -> None:
    """Refuse decoder and backbone pairs that TorchGeo's SemanticSegmentation cannot build.

    Raises:
        ValueError: For a ViT with another decoder than DPT, or DPT with another
            backbone than a ``tu-`` timm ViT; the message names both.
    """
    vit = is_vit_backbone(backbone)
    for decoder in decoders:
        if vit and decoder not in VIT_DECODERS:
            raise ValueError(
                f"decoder {decoder!r} cannot take the ViT backbone {backbone!r}: in "
                f"TorchGeo 0.10 (smp 0.6) only {list(VIT_DECODERS)} accepts a Vision "
                "Transformer encoder"
            )
        if decoder in VIT_DECODERS and not (vit and backbone.startswith("tu-")):
            raise ValueError(
                f"decoder {decoder!r} needs a timm ViT backbone named 'tu-<timm name>' "
                f"(e.g. tu-vit_tiny_patch16_224), got training.backbone={backbone!r}"
            )


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


def _plain(value: Any) -> Any:
    """A jsonargparse restricted number (an int or float subclass) as a plain one, for YAML."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    return float(value) if isinstance(value, float) else value


def _task(entry: str | TaskEntry, synthetic: Mapping[str, Any]) -> TaskSpec:
    """Turn one ``tasks`` entry into a :class:`TaskSpec`.

    A string names a synthetic task (with the shared ``synthetic`` options); a mapping
    has ``name`` and either ``scene`` or ``synthetic`` options.
    """
    if isinstance(entry, str):
        return TaskSpec(entry, "synthetic", {**synthetic, "task": entry})
    if (entry.scene is None) == (entry.synthetic is None):
        raise ValueError(f"tasks: entry {entry.name!r} needs exactly one of scene: or synthetic:")
    if entry.scene is not None:
        return TaskSpec(entry.name, "scene", dict(entry.scene))
    options = {**synthetic, "task": entry.name, **(entry.synthetic or {})}
    return TaskSpec(entry.name, "synthetic", options)


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
            arguments (``units``, ``patch_size``, ``bands``, ...).

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

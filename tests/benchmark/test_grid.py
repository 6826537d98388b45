import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from torchgeo_dic3l.benchmark.grid import (
    GridSpec,
    InitSpec,
    TaskSpec,
    run_specification,
    scene_task,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"


def _cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "benchmark_cli", REPO / "experiments" / "benchmark.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grid(**overrides: object) -> GridSpec:
    data: dict[str, object] = {"inits": {"random": "random"}, "tasks": ["water"]}
    return GridSpec.from_dict({**data, **overrides})


def test_synthetic_config_expands_to_eighteen_runs_init_fastest() -> None:
    grid = GridSpec.from_yaml(CONFIGS / "benchmark_synthetic.yaml")
    runs = grid.runs()
    assert len(runs) == 18
    assert [run.init.name for run in runs[:3]] == ["random", "di3cl", "mocov2"]
    assert [run.protocol for run in runs[:6:3]] == ["linear", "full"]
    assert [run.task.name for run in runs[::6]] == ["landcover", "water", "roads"]
    assert [init.kind for init in grid.inits] == ["random", "path", "path"]
    water = runs[6].task
    assert water.kind == "synthetic"
    assert water.options["task"] == "water"
    assert water.options["size"] == 64
    assert len({run.run_id for run in runs}) == 18


def test_polsar_config_expands_the_full_grid() -> None:
    grid = GridSpec.from_yaml(CONFIGS / "benchmark_polsar_sf.yaml")
    assert len(grid.runs()) == 4 * 2 * 3 * 2 * 3
    assert [init.kind for init in grid.inits] == ["random", "imagenet", "path", "path"]
    (task,) = grid.tasks
    assert task.kind == "scene"
    assert task.options["classes"] == ["bare_soil", "mountain", "water", "urban", "vegetation"]
    assert grid.training.steps == 200
    assert grid.protocols == ("linear", "frozen", "full")


def test_init_spec_parsing_and_kinds(tmp_path: Path) -> None:
    existing = tmp_path / "weights"
    existing.touch()
    assert InitSpec.parse("di3cl=a/b.ckpt") == InitSpec("di3cl", "a/b.ckpt")
    assert InitSpec.parse("random") == InitSpec("random", "random")
    assert InitSpec("x", "ImageNet").kind == "imagenet"
    assert InitSpec("x", "none").kind == "random"
    assert InitSpec("x", "missing.ckpt").kind == "path"
    assert InitSpec("x", "some/dir/file").kind == "path"
    assert InitSpec("x", str(existing)).kind == "path"
    assert InitSpec("x", "ResNet50_Weights.SENTINEL1_ALL_MOCO").kind == "weight_name"
    with pytest.raises(ValueError, match="must be name=spec"):
        InitSpec.parse("outputs/last.ckpt")
    with pytest.raises(ValueError, match="empty spec"):
        InitSpec.parse("di3cl=")


def test_round_trip_through_dict() -> None:
    grid = GridSpec.from_yaml(CONFIGS / "benchmark_polsar_sf.yaml")
    assert GridSpec.from_dict(grid.to_dict()) == grid
    # The runner writes grid.yaml: parsed values must be plain numbers, not jsonargparse's.
    assert (
        GridSpec.from_dict(yaml.safe_load(yaml.safe_dump(grid.to_dict(), sort_keys=False))) == grid
    )
    assert type(grid.training.steps) is int and type(grid.training.lr) is float


def test_run_ids_are_file_safe() -> None:
    grid = _grid(inits={"my init/v2": "random"}, decoders=["deeplabv3+"], label_fractions=[0.25])
    (run,) = grid.runs()
    assert run.run_id == "water_deeplabv3+_full_lf0.25_seed0_my-init-v2"
    assert run.group == "water_deeplabv3+_full_lf0.25"


def test_synthetic_options_and_named_synthetic_task() -> None:
    grid = _grid(
        tasks=["roads", {"name": "small_water", "synthetic": {"task": "water", "size": 32}}],
        synthetic={"size": 64, "length": 10},
    )
    roads, small = grid.tasks
    assert roads.options == {"size": 64, "length": 10, "task": "roads"}
    assert small.options == {"size": 32, "length": 10, "task": "water"}


def test_scene_task_helper() -> None:
    task = scene_task("s", ["a.tif"], "l.tif", ["x", "y"], label_values=[1, 2], ignore_values=[0])
    assert task.options == {
        "images": ["a.tif"],
        "label": "l.tif",
        "classes": ["x", "y"],
        "ignore_values": [0],
        "label_values": [1, 2],
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epoch": 3}, "grid config: Option 'epoch' is not accepted"),
        ({"training": {"epoch": 3}}, "Group 'training' does not accept option 'epoch'"),
        ({"decoders": ["fpn"]}, r"(?s)decoders.*'unet', 'deeplabv3\+'.*Got value: fpn"),
        ({"protocols": ["probe"]}, r"(?s)protocols.*'linear', 'frozen', 'full'.*Got value: probe"),
        ({"training": {"linear_lr": 0}}, r"(?s)training.linear_lr.*0 does not conform to .*v>0"),
        ({"label_fractions": [0.0]}, r"(?s)label_fractions.*0.0 does not conform.*v>0 and v<=1"),
        ({"label_fractions": [1.5]}, r"(?s)label_fractions.*1.5 does not conform.*v<=1"),
        ({"seeds": [1.5]}, r"(?s)seeds.*1.5 not an integer"),
        ({"seeds": [-1]}, r"(?s)seeds.*-1 does not conform to restriction v>=0"),
        ({"seeds": [0, 0]}, r"seeds repeats \['0'\]"),
        (
            {"tasks": ["floods"]},
            r"(?s)task 'floods'.*'landcover', 'water', 'roads'.*Got value: floods",
        ),
        ({"tasks": []}, "at least one entry in tasks"),
        ({"inits": {}}, "at least one entry in inits"),
        (
            {"tasks": [{"name": "s", "scene": {"images": ["a"]}}]},
            r"task 's'.*LabelledSARSceneDataModule.*required: label, classes",
        ),
        ({"tasks": [{"name": "s"}]}, "exactly one of scene: or synthetic:"),
        ({"synthetic": {"batch_size": 4}}, r"sets \['batch_size'\], which the grid sets"),
        (
            {
                "tasks": [
                    {
                        "name": "s",
                        "scene": {"images": ["a"], "label": "l", "classes": ["x"], "seed": 3},
                    }
                ]
            },
            r"sets \['seed'\]",
        ),
        (
            {"synthetic": {"lenght": 4}},
            r"task 'water': .*synthetic options.*'lenght' is not accepted",
        ),
        (
            {
                "tasks": [
                    {
                        "name": "s",
                        "scene": {"images": ["a"], "label": "l", "classes": ["x"], "patch": 8},
                    }
                ]
            },
            r"task 's': its scene options do not fit .*Option 'patch' is not accepted",
        ),
        (
            {
                "tasks": [
                    {
                        "name": "s",
                        "scene": {"images": ["a"], "label": "l", "classes": ["x"], "gap": "wide"},
                    }
                ]
            },
            r"(?s)task 's'.*Parser key \"gap\".*Given value: wide",
        ),
        (
            {"training": {"epochs": 0}},
            r"(?s)training.epochs.*0 does not conform to restriction v>0",
        ),
        ({"training": {"steps": 0}}, r"(?s)training.steps.*does not conform to restriction v>0"),
        ({"training": {"loss": "bce"}}, r"(?s)training.loss.*'ce', 'focal'.*Got value: bce"),
        ({"figure_patches": -1}, r"(?s)figure_patches.*-1 does not conform to restriction v>=0"),
    ],
)
def test_bad_grids_are_refused_with_a_clear_message(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _grid(**overrides)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="grid config not found"):
        GridSpec.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        GridSpec.from_yaml(tmp_path / "list.yaml")


def test_task_spec_validation() -> None:
    with pytest.raises(ValueError, match="kind must be synthetic or scene"):
        TaskSpec("t", "other", {})  # type: ignore[arg-type]
    # Built directly, not only from YAML, a task's options are checked the same way.
    with pytest.raises(ValueError, match="'lenght' is not accepted"):
        TaskSpec("t", "synthetic", {"task": "water", "lenght": 4})
    assert TaskSpec("t", "synthetic", {"task": "water", "size": 32}).options["size"] == 32


def test_cli_flags_override_the_config() -> None:
    cli = _cli()
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "--config",
            str(CONFIGS / "benchmark_synthetic.yaml"),
            "--inits",
            "random",
            "x=a/b.ckpt",
            "--tasks",
            "water,roads",
            "--protocols",
            "linear,full",
            "--label-fractions",
            "0.5",
            "1",
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "--linear-lr",
            "0.05",
        ]
    )
    grid = cli.grid_from_args(args, parser)
    assert [i.name for i in grid.inits] == ["random", "x"]
    assert [t.name for t in grid.tasks] == ["water", "roads"]
    assert grid.tasks[0].options["size"] == 64  # kept from the config's synthetic section
    assert grid.protocols == ("linear", "full")
    assert grid.label_fractions == (0.5, 1.0)
    assert grid.seeds == (0, 1)
    assert grid.training.epochs == 2 and grid.training.linear_lr == 0.05
    assert grid.training.batch_size == 8
    assert len(grid.runs()) == 2 * 2 * 2 * 2 * 2


def test_cli_scene_flags_make_a_scene_task() -> None:
    cli = _cli()
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "--inits",
            "random",
            "--scene-images",
            "vv.tif",
            "vh.tif",
            "--scene-label",
            "maps/labels.tif",
            "--scene-classes",
            "water,urban",
            "--scene-label-values",
            "1",
            "2",
            "--scene-ignore-values",
            "0",
            "--scene-units",
            "db",
            "--scene-patch-size",
            "32",
            "--scene-split-method",
            "random",
        ]
    )
    (task,) = cli.grid_from_args(args, parser).tasks
    assert task.name == "labels"
    assert task.kind == "scene"
    assert task.options == {
        "images": ["vv.tif", "vh.tif"],
        "label": "maps/labels.tif",
        "classes": ["water", "urban"],
        "label_values": [1, 2],
        "ignore_values": [0],
        "units": "db",
        "patch_size": 32,
        "split_method": "random",
    }


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli()
    with pytest.raises(SystemExit):
        cli.main(["--scene-label", "l.tif"])
    assert (
        "a scene needs --scene-images, --scene-label and --scene-classes"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        cli.main(["--inits", "random"])
    assert "no task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--tasks", "water", "--decoders", "fpn"])
    assert "decoders" in (err := capsys.readouterr().err) and "Got value: fpn" in err


def test_run_specification_holds_what_the_run_id_leaves_out() -> None:
    data = {"inits": ["random"], "tasks": ["water"], "synthetic": {"size": 32, "length": 8}}
    grid = GridSpec.from_dict(data)
    (run,) = grid.runs()
    spec = run_specification(run, grid.training)
    assert spec == json.loads(json.dumps(spec))
    assert spec["task"]["options"] == {"size": 32, "length": 8, "task": "water"}
    assert spec["training"]["epochs"] == 3 and spec["init"]["source"] == "random"
    other = GridSpec.from_dict({**data, "synthetic": {"size": 64, "length": 8}})
    (changed,) = other.runs()
    # Same run id, different task: only the specification tells them apart.
    assert changed.run_id == run.run_id
    assert run_specification(changed, other.training) != spec

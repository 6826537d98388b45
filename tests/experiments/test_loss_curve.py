import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _write_metrics(folder: Path) -> None:
    folder.mkdir(parents=True)
    rows = [
        "epoch,step,probe_miou,probe_oa,train_loss,train_global_loss",
        "0,0,0.25,0.5,,",
        "0,1,,,9.0,4.0",
        "1,3,,,7.5,3.5",
        "1,3,0.40,0.7,,",
    ]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_prints_initial_and_final_probe_beside_the_losses(tmp_path: Path) -> None:
    run = tmp_path / "di3cl" / "version_0"
    _write_metrics(run)
    output = tmp_path / "curves.png"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "loss_curve.py"),
            str(run.parent),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert lines["probe_miou"][1:5] == ["initial", "0.2500", "final", "0.4000"]
    assert lines["train_loss"][1:5] == ["first", "9.0000", "last", "7.5000"]
    assert output.stat().st_size > 0

from pathlib import Path

from torchgeo_dic3l.benchmark.report import ABSENT, format_markdown


def _row(seed: int, mountain: float | None) -> dict:
    return {
        "task": "sf", "decoder": "unet", "protocol": "linear", "label_fraction": 0.1,
        "init": "random", "run_id": f"r{seed}", "status": "ok",
        "f1_per_class": {"water": 0.9, "mountain": mountain},
        "oa": 0.8, "kappa": 0.7, "miou": 0.6,
    }  # fmt: skip


def test_class_absent_from_the_test_split_is_marked(tmp_path: Path) -> None:
    text = format_markdown([_row(0, None), _row(1, None)])
    row = next(line for line in text.splitlines() if line.startswith("| random"))
    assert row.split(" | ")[2] == ABSENT == "n/a (absent)"
    assert "left out of the mIoU" in text
    scored = format_markdown([_row(0, 0.5), _row(1, None)])
    assert ABSENT not in next(line for line in scored.splitlines() if line.startswith("| random"))

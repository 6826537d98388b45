from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from torchgeo_dic3l.datasets import PairedSARChips

Writer = Callable[[Path, np.ndarray], str]


def sar_array(seed: int, channels: int = 2, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (channels, size, size)).astype("uint8")


def optical_array(seed: int, channels: int = 4, size: int = 8) -> np.ndarray:
    generator = np.random.default_rng(100 + seed)
    return generator.integers(0, 10000, (channels, size, size)).astype("uint16")


def write_pairs(
    root: Path, write: Writer, names: list[str], optical_channels: int = 4
) -> tuple[Path, Path]:
    """Write SAR and optical chips of the same names; the values encode the name's index."""
    sar, optical = root / "sar", root / "optical"
    for index, name in enumerate(names):
        (sar / name).parent.mkdir(parents=True, exist_ok=True)
        (optical / name).parent.mkdir(parents=True, exist_ok=True)
        write(sar / f"{name}.tif", sar_array(index))
        write(optical / f"{name}.tif", optical_array(index, optical_channels))
    return sar, optical


def test_folders_are_matched_by_name_with_other_channel_counts(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["b", "a", "sub/c"])
    dataset = PairedSARChips(sar_root=str(sar), optical_root=str(optical))
    assert len(dataset) == 3 and dataset.paired_count == 3
    assert dataset.sar.channels == 2 and dataset.optical_channels == 4
    # Sorted by SAR path: a, b, sub/c, written as the 2nd, 1st and 3rd names.
    for position, index in enumerate([1, 0, 2]):
        sample = dataset[position]
        assert sample["image"].dtype == sample["optical"].dtype == torch.float32
        assert torch.equal(sample["image"], torch.from_numpy(sar_array(index)).float())
        expected = torch.from_numpy(optical_array(index).astype(np.float32)) * 1e-4
        torch.testing.assert_close(sample["optical"], expected)
        assert sample["paired"].dtype == torch.bool and bool(sample["paired"])


def test_optical_scale_and_invalid_optical_pixels(tmp_path: Path, write_geotiff: Writer) -> None:
    write_geotiff(tmp_path / "sar.tif", sar_array(0))
    optical = optical_array(0, 3).astype("float32")
    optical[1, 2, 3] = np.nan
    write_geotiff(tmp_path / "optical.tif", optical)
    (tmp_path / "pairs.csv").write_text("sar,optical\nsar.tif,optical.tif\n")
    dataset = PairedSARChips(pairs_csv=str(tmp_path / "pairs.csv"), optical_scale=0.5)
    with pytest.warns(UserWarning, match="optical.tif: 1 of 192 optical pixels are NaN"):
        image = dataset[0]["optical"]
    assert image[1, 2, 3] == 0.0
    optical[1, 2, 3] = 0.0
    assert torch.equal(image, torch.from_numpy(optical) * 0.5)


def test_csv_pairs_override_names_and_resolve_against_its_folder(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    _, optical = write_pairs(tmp_path / "data", write_geotiff, ["a", "b"])
    lists = tmp_path / "data" / "lists"
    lists.mkdir()
    absolute = optical / "a.tif"
    # Crossed on purpose (a with b), one path relative to the CSV, one absolute.
    (lists / "pairs.csv").write_text(
        f"sar,optical,date\n../sar/a.tif,../optical/b.tif,x\n../sar/b.tif,{absolute},y\n"
    )
    dataset = PairedSARChips(pairs_csv=str(lists / "pairs.csv"))
    assert dataset.optical_files == [str(optical / "b.tif"), str(absolute)]
    expected = torch.from_numpy(optical_array(1).astype(np.float32)) * 1e-4
    torch.testing.assert_close(dataset[0]["optical"], expected)
    assert torch.equal(dataset[0]["image"], torch.from_numpy(sar_array(0)).float())


def test_csv_errors_name_the_problem(tmp_path: Path, write_geotiff: Writer) -> None:
    write_geotiff(tmp_path / "a.tif", sar_array(0))
    (tmp_path / "columns.csv").write_text("radar,optical\na.tif,a.tif\n")
    with pytest.raises(ValueError, match="has no column sar"):
        PairedSARChips(pairs_csv=str(tmp_path / "columns.csv"))
    (tmp_path / "missing.csv").write_text("sar,optical\na.tif,gone.tif\n")
    with pytest.raises(FileNotFoundError, match=r"line 2: .*gone\.tif does not exist"):
        PairedSARChips(pairs_csv=str(tmp_path / "missing.csv"))
    (tmp_path / "empty.csv").write_text("sar,optical\n")
    with pytest.raises(ValueError, match="lists no pairs"):
        PairedSARChips(pairs_csv=str(tmp_path / "empty.csv"))
    either = r"give both sar_root and optical_root .* or pairs_csv alone"
    with pytest.raises(ValueError, match=either):
        PairedSARChips(sar_root=str(tmp_path), pairs_csv=str(tmp_path / "empty.csv"))
    with pytest.raises(ValueError, match=either):
        PairedSARChips(sar_root=str(tmp_path))


def test_unmatched_sar_chip_is_an_error_naming_it(tmp_path: Path, write_geotiff: Writer) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a", "b"])
    write_geotiff(sar / "lonely.tif", sar_array(5))
    with pytest.raises(ValueError, match=r"1 SAR chip\(s\) have no optical partner .*lonely\.tif"):
        PairedSARChips(sar_root=str(sar), optical_root=str(optical))


def test_allow_unpaired_keeps_sar_chips_with_a_zero_optical_image(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a", "b"])
    write_geotiff(sar / "lonely.tif", sar_array(5))
    (tmp_path / "pairs.csv").write_text("sar,optical\nsar/a.tif,optical/a.tif\nsar/b.tif,\n")
    for dataset in (
        PairedSARChips(sar_root=str(sar), optical_root=str(optical), allow_unpaired=True),
        PairedSARChips(pairs_csv=str(tmp_path / "pairs.csv"), allow_unpaired=True),
    ):
        assert len(dataset.unpaired_files) == 1 and dataset.paired_count == len(dataset) - 1
        position = dataset.sar.files.index(dataset.unpaired_files[0])
        sample = dataset[position]
        assert not bool(sample["paired"])
        assert sample["optical"].shape == (4, 8, 8) and not sample["optical"].any()
        batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
        assert batch["optical"].shape == (len(dataset), 4, 8, 8)
        assert batch["paired"].tolist() == [i != position for i in range(len(dataset))]


def test_optical_without_sar_partner_is_counted_in_a_warning(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a"])
    write_geotiff(optical / "x.tif", optical_array(1))
    write_geotiff(optical / "y.tif", optical_array(2))
    with pytest.warns(UserWarning, match=r"2 optical file\(s\) have no SAR partner"):
        dataset = PairedSARChips(sar_root=str(sar), optical_root=str(optical))
    assert sorted(Path(f).name for f in dataset.unmatched_optical) == ["x.tif", "y.tif"]


def test_a_pair_of_different_sizes_is_an_error_naming_both(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a"])
    write_geotiff(optical / "a.tif", optical_array(0, size=6))
    pattern = r"sar/a\.tif is 8x8 pixels but its optical partner .*optical/a\.tif is 6x6"
    with pytest.raises(ValueError, match=pattern):
        PairedSARChips(sar_root=str(sar), optical_root=str(optical))


def test_optical_channel_counts_must_agree(tmp_path: Path, write_geotiff: Writer) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a", "b"])
    write_geotiff(optical / "b.tif", optical_array(1, channels=3))
    with pytest.raises(ValueError, match=r"a\.tif has 4 and .*b\.tif has 3"):
        PairedSARChips(sar_root=str(sar), optical_root=str(optical))


def test_empty_or_unpaired_folders_are_errors_naming_them(
    tmp_path: Path, write_geotiff: Writer
) -> None:
    (tmp_path / "sar").mkdir()
    (tmp_path / "optical").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no SAR chips found in sar_root .*sar.*optical"):
        PairedSARChips(sar_root=str(tmp_path / "sar"), optical_root=str(tmp_path / "optical"))
    with pytest.raises(FileNotFoundError, match=r"optical_root .*nowhere.* is not a folder"):
        PairedSARChips(sar_root=str(tmp_path / "sar"), optical_root=str(tmp_path / "nowhere"))
    write_geotiff(tmp_path / "sar" / "a.tif", sar_array(0))
    with pytest.raises(ValueError, match="none of the 1 SAR chip"):
        PairedSARChips(
            sar_root=str(tmp_path / "sar"),
            optical_root=str(tmp_path / "optical"),
            allow_unpaired=True,
        )


def test_same_name_with_two_extensions_is_ambiguous(tmp_path: Path, write_geotiff: Writer) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a"])
    write_geotiff(optical / "a.tiff", optical_array(0))
    with pytest.raises(ValueError, match="have the same name without extension"):
        PairedSARChips(sar_root=str(sar), optical_root=str(optical))


def test_plot_shows_sar_and_optical_side_by_side(tmp_path: Path, write_geotiff: Writer) -> None:
    sar, optical = write_pairs(tmp_path, write_geotiff, ["a"], optical_channels=13)
    dataset = PairedSARChips(sar_root=str(sar), optical_root=str(optical))
    figure = dataset.plot(dataset[0], optical_bands=[3, 2, 1], suptitle="pair")
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes]
    sar_title = "SAR: channel 1, channel 2, channel 1-channel 2, raw DN"
    assert titles == [sar_title, "optical: band 4, band 3, band 2"]
    assert figure.axes[1].images[0].get_array().shape == (8, 8, 3)

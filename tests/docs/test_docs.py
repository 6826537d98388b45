"""The documentation: a warning-free Sphinx build, generated pages, and tested code blocks.

The site is built once per module (``sphinx-build -W --keep-going``: any warning
fails). Code blocks marked ``:class: runnable`` are read from the built doctrees, so
what runs is exactly what a reader sees, and run page by page, in order, in a fresh
working folder that links the repository's ``experiments`` and ``scripts`` folders:
bash blocks with ``bash -euo pipefail``, python blocks with this interpreter, with
the environment's ``bin`` folder first on ``PATH`` (as after ``source
.venv/bin/activate``).
"""

import importlib
import inspect
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from docutils import nodes
from PIL import Image

# The docs extra of pyproject.toml (``pip install -e ".[docs]"``, done by ``make install``).
for _tool in ("sphinx", "furo", "myst_parser"):
    pytest.importorskip(_tool, reason='install the docs extra: pip install -e ".[docs]"')

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
SHARED_DATA = REPO.parent / "shared" / "data"

#: Class that marks a code block to be run by :func:`test_runnable_blocks`.
RUNNABLE = "runnable"
#: Repository folders that runnable blocks may use, linked into their working folder.
LINKED = ("experiments", "scripts")
#: Seconds one block may take (the machine may be shared).
BLOCK_TIMEOUT = 300
#: Tables of the configuration page, in page order.
#: The parameter tables of the configuration page, in page order, with their prefix.
PARAMETER_TABLES = (
    ("torchgeo_dic3l.tasks.DI3CLTask", ""),
    ("torchgeo_dic3l.transforms.views.ViewOptions", "views."),
    ("torchgeo_dic3l.ssl.box_matching.BoxOptions", "boxes."),
    ("torchgeo_dic3l.tasks.SARMAETask", ""),
    ("torchgeo_dic3l.datamodules.SARChipsDataModule", ""),
    ("torchgeo_dic3l.datamodules.PairedSARChipsDataModule", ""),
    ("torchgeo_dic3l.datamodules.SARScenesDataModule", ""),
    ("torchgeo_dic3l.datamodules.LabelledSARSceneDataModule", ""),
    ("torchgeo_dic3l.datamodules.SyntheticSARPretrainDataModule", ""),
    ("torchgeo_dic3l.datamodules.SyntheticSARSegmentationDataModule", ""),
)


def _import(path: Path, name: str) -> ModuleType:
    """Import a module of the docs folder by file."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def _pages_with_runnable_blocks() -> list[str]:
    return sorted(
        page.stem for page in DOCS.glob("*.rst") if f":class: {RUNNABLE}" in page.read_text()
    )


def _object(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the HTML site into a temporary folder; fail on any warning."""
    out = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return out


class _TableReader(HTMLParser):
    """Collect the rows of the tables with a given class as lists of cell texts."""

    def __init__(self, table_class: str) -> None:
        super().__init__()
        self.table_class = table_class
        self.tables: list[list[list[str]]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and self.table_class in classes:
            self._inside = True
            self.tables.append([])
        elif self._inside and tag == "tr":
            self.tables[-1].append([])
        elif self._inside and tag in ("td", "th"):
            self._cell = []
        elif self._cell is not None and tag == "p":
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        elif self._cell is not None and tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_build_has_every_page(built: Path) -> None:
    html = built / "html"
    for source in DOCS.glob("*.rst"):
        assert (html / f"{source.stem}.html").is_file(), source.name
    index = (html / "index.html").read_text()
    for page in ("installation", "quickstart", "concepts", "configuration", "api"):
        assert f'href="{page}.html"' in index


@pytest.mark.parametrize(
    "index_and_table", list(enumerate(PARAMETER_TABLES)), ids=lambda x: x[1][0]
)
def test_configuration_page_lists_every_parameter(
    built: Path, index_and_table: tuple[int, tuple[str, str]]
) -> None:
    index, (path, prefix) = index_and_table
    reader = _TableReader("parameter-table")
    reader.feed((built / "html" / "configuration.html").read_text())
    assert len(reader.tables) == len(PARAMETER_TABLES)
    header, *rows = reader.tables[index]
    assert header == ["Parameter", "Default", "Meaning"]
    shown = {row[0].split("\n")[0].strip().removeprefix(prefix): row for row in rows}
    signature = inspect.signature(_object(path).__init__)  # type: ignore[misc]
    expected = [
        ("**" if p.kind is p.VAR_KEYWORD else "") + p.name
        for p in list(signature.parameters.values())[1:]
    ]
    assert list(shown) == expected
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.default is parameter.empty:
            continue
        _, default, meaning = shown[parameter.name]
        assert default == repr(parameter.default), parameter.name
        assert meaning, f"{parameter.name} has no meaning"


def test_configuration_page_meanings_come_from_the_docstring(built: Path) -> None:
    html = (built / "html" / "configuration.html").read_text()
    assert "Queue length K of the global and CC terms." in html
    # A dataclass's fields come from its Attributes: section.
    assert "Largest IoU allowed between two boxes of an image, in (0, 1)." in html


def test_parameter_table_parser_reads_google_args() -> None:
    extension = _import(DOCS / "_ext" / "dic3l_docs.py", "dic3l_docs")
    docstring = """Do something.

    Args:
        first: One line.
        second: Two
            lines, joined.
        **kwargs: Passed on.

    Returns:
        first: not an argument.
    """
    assert extension.parse_google_args(docstring) == {
        "first": "One line.",
        "second": "Two lines, joined.",
        "**kwargs": "Passed on.",
    }
    assert extension.parse_google_args(docstring, "Returns:") == {"first": "not an argument."}


def test_parameter_table_of_a_dataclass_reads_its_attributes() -> None:
    extension = _import(DOCS / "_ext" / "dic3l_docs.py", "dic3l_docs")

    @dataclass
    class Options:
        """Options.

        Attributes:
            size: Side in pixels.
        """

        size: int = 3

    assert extension.parameter_rows(Options) == [("size", "int", "3", "Side in pixels.")]


def test_parameter_table_fails_for_an_undocumented_parameter() -> None:
    extension = _import(DOCS / "_ext" / "dic3l_docs.py", "dic3l_docs")

    class Undocumented:
        def __init__(self, documented: int = 1, forgotten: float = 0.5) -> None:
            """Initialize.

            Args:
                documented: Is in the table.
            """

    with pytest.raises(Exception, match="parameter 'forgotten' has no entry"):
        extension.parameter_rows(Undocumented)


def test_markdown_links_are_rewritten_for_the_site(tmp_path: Path) -> None:
    extension = _import(DOCS / "_ext" / "dic3l_docs.py", "dic3l_docs")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text("# B\n")
    (docs / "benchmarks_page.rst").write_text("")
    (docs / "local.py").write_text("")
    text = (
        "[`experiments/throughput.py`](../experiments/throughput.py), "
        "[the script](../experiments/benchmark.py), [results](benchmarks.md#table), "
        "[here](#throughput), [web](https://example.org/a.md), [local](local.py), "
        "![figure](figures/x.png)"
    )
    assert extension.rewrite_markdown_links(text, docs, docs) == (
        "`experiments/throughput.py`, the script (`experiments/benchmark.py`), "
        "[results](benchmarks_page.rst#table), [here](#throughput), "
        "[web](https://example.org/a.md), [local](local.py), ![figure](figures/x.png)"
    )


def test_every_public_name_is_in_the_api_reference(built: Path) -> None:
    ids = set(
        re.findall(r'id="(torchgeo_dic3l\.[^"]+)"', (built / "html" / "api.html").read_text())
    )
    for package in ("datasets", "datamodules", "transforms", "models", "tasks", "benchmark"):
        module = importlib.import_module(f"torchgeo_dic3l.{package}")
        for name in module.__all__:
            defined_in = getattr(getattr(module, name), "__module__", None)
            candidates = {f"torchgeo_dic3l.{package}.{name}"}
            # Constants are documented where they are defined (their doc comments live there).
            candidates |= {
                i
                for i in ids
                if i.endswith(f".{name}") and i.startswith(f"torchgeo_dic3l.{package}.")
            }
            assert candidates & ids, f"torchgeo_dic3l.{package}.{name} ({defined_in}) is missing"


def test_generated_figures_are_drawn_and_say_where_they_come_from(built: Path) -> None:
    figures = _import(DOCS / "make_figures.py", "make_figures")
    html = built / "html"
    pages = "".join(page.read_text() for page in html.glob("*.html"))
    for name in figures.FIGURES:
        image = html / "_images" / f"{name}.png"
        assert image.is_file(), f"{name}.png is not in the site"
        assert f'src="_images/{name}.png"' in pages
        with Image.open(image) as png:
            assert png.width >= 300 and png.height >= 200
            grey = np.asarray(png.convert("L"), dtype=np.int32)
            assert grey.max() - grey.min() > 100, f"{name}.png is blank"
    concepts = (html / "concepts.html").read_text()
    if (SHARED_DATA / "s1_vh_volkov" / "sar").is_dir():
        assert "Drawn from the real Sentinel-1 VH chip" in concepts
    else:
        assert "the real Sentinel-1 chips in ../shared/data were not found" in concepts


@pytest.mark.parametrize("page", ["performance", "benchmarks"])
def test_markdown_pages_are_included(built: Path, page: str) -> None:
    markdown = (DOCS / f"{page}.md").read_text()
    title = next(line[2:].strip() for line in markdown.splitlines() if line.startswith("# "))
    html = (built / "html" / f"{page}_page.html").read_text()
    assert re.search(rf"<h1>{re.escape(title)}", html), f"{page}.md title {title!r} not shown"


def _runnable_blocks(built: Path, page: str) -> list[tuple[str, str, int | None]]:
    with (built / "doctrees" / f"{page}.doctree").open("rb") as handle:
        doctree = pickle.load(handle)
    return [
        (node.get("language", ""), node.astext(), node.line)
        for node in doctree.findall(nodes.literal_block)
        if RUNNABLE in node["classes"]
    ]


def test_runnable_blocks_are_bash_or_python(built: Path) -> None:
    pages = _pages_with_runnable_blocks()
    assert len(pages) >= 5
    for page in pages:
        blocks = _runnable_blocks(built, page)
        assert blocks, f"{page}.rst has ':class: {RUNNABLE}' but no runnable block was built"
        for language, _, line in blocks:
            assert language in ("bash", "python"), f"{page}.rst:{line}: {language!r}"


@pytest.mark.parametrize("page", _pages_with_runnable_blocks())
def test_runnable_blocks(built: Path, page: str, tmp_path: Path) -> None:
    for folder in LINKED:
        (tmp_path / folder).symlink_to(REPO / folder, target_is_directory=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(BIN.parent),
        "MPLBACKEND": "Agg",
    }
    for language, code, line in _runnable_blocks(built, page):
        command = (
            ["bash", "-euo", "pipefail", "-c", code]
            if language == "bash"
            else [sys.executable, "-c", code]
        )
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"{page}.rst:{line} failed ({language}):\n{code}\n--- stdout ---\n"
            f"{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )

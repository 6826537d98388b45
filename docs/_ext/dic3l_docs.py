"""Sphinx directives of the torchgeo-dic3l documentation.

* ``.. parameter-table:: dotted.path.Class`` renders the ``__init__`` parameters of a
  class as a table (name, type, default, meaning), read from its signature and from
  the ``Args:`` section of its Google-style docstring. A parameter without an entry
  in ``Args:`` fails the build, so the table cannot fall behind the code.
* ``.. config-defaults:: dotted.path.Class`` renders the defaults of the same
  parameters as the ``init_args`` of a LightningCLI YAML config.
* ``.. generated-figure:: name`` draws figure ``name`` of ``docs/make_figures.py``
  into the build's ``_static/figures`` folder when the page is read and shows it
  with the directive's content as caption, followed by the figure's own note on
  which data it was drawn from.
* ``.. markdown-include:: file.md`` parses a Markdown file of the docs folder with
  MyST in place, after rewriting its links for the site: a link to ``X.md`` points to
  the page ``X_page`` that shows it, and a link to a repository file outside the docs
  folder becomes the file's path as code (the site has no copy of it).
"""

import dataclasses
import importlib
import inspect
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import yaml
from docutils import nodes, utils
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

#: Lines that open a Google docstring section (``Args:``, ``Returns:``, ...).
SECTION = re.compile(r"^(\w[\w ]*):\s*$")

#: First line of an ``Args:`` entry: ``name: text``, ``*args: text`` or ``name (type): text``.
ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(?P<text>.*)$")

#: A Markdown link that is not an image: ``[label](target)``.
MARKDOWN_LINK = re.compile(r"(?<!!)\[(?P<label>[^\]]*)\]\((?P<target>[^)\s]+)\)")

#: A URL scheme such as ``https:`` or ``mailto:``.
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

#: Dotted module prefixes in rendered annotations (``collections.abc.Sequence`` -> ``Sequence``).
MODULE_PREFIX = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def import_object(path: str) -> Any:
    """Import ``package.module.Name``.

    Args:
        path: Dotted path of the object.

    Returns:
        The object.

    Raises:
        ExtensionError: If the module or the name cannot be found.
    """
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ExtensionError(f"cannot import {path}: {error}") from error


def parse_google_args(docstring: str, section: str = "Args:") -> dict[str, str]:
    """Read the ``Args:`` (or another such) section of a Google-style docstring.

    Args:
        docstring: The docstring, indented or not.
        section: Heading of the section, such as ``Attributes:`` for a dataclass.

    Returns:
        Parameter name (with ``*``/``**`` for variadic ones) -> description, with
        continuation lines joined by spaces.
    """
    lines = inspect.cleandoc(docstring).splitlines()
    entries: dict[str, str] = {}
    inside = False
    entry_indent: int | None = None
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 0 and SECTION.match(stripped):
            inside = stripped == section
            entry_indent, current = None, None
            continue
        if not inside or not stripped:
            continue
        if indent == 0:
            inside = False
            continue
        if entry_indent is None:
            entry_indent = indent
        match = ENTRY.match(stripped)
        if indent == entry_indent and match:
            current = match["name"]
            entries[current] = match["text"]
        elif current is not None:
            entries[current] = f"{entries[current]} {stripped}".strip()
    return entries


def rewrite_markdown_links(text: str, folder: Path, srcdir: Path) -> str:
    """Point the links of a Markdown file of the docs folder at things the site has.

    Args:
        text: Markdown source.
        folder: Folder of the Markdown file.
        srcdir: Documentation source folder; its parent is the repository root.

    Returns:
        The text with links to ``X.md`` pointing to ``X_page.rst`` when that wrapper
        page exists, links to files outside ``srcdir`` replaced by their repository
        path as inline code, and every other link (URLs, anchors, files of the docs
        folder) unchanged.
    """
    root = srcdir.resolve()

    def replace(match: re.Match[str]) -> str:
        label, target = match["label"], match["target"]
        if URL_SCHEME.match(target) or target.startswith("#"):
            return match[0]
        path, _, anchor = target.partition("#")
        resolved = (folder / path).resolve()
        wrapper = resolved.with_name(f"{resolved.stem}_page.rst")
        if resolved.suffix == ".md" and resolved.parent == root and wrapper.is_file():
            return f"[{label}]({wrapper.name}{'#' + anchor if anchor else ''})"
        if resolved.is_relative_to(root):
            return match[0]
        shown = (
            resolved.relative_to(root.parent).as_posix()
            if resolved.is_relative_to(root.parent)
            else path
        )
        plain = label.strip().strip("`")
        if plain in (shown, Path(shown).name, path):
            return f"`{shown}`"
        return f"{label} (`{shown}`)"

    return MARKDOWN_LINK.sub(replace, text)


def format_annotation(annotation: Any) -> str:
    """Render a parameter annotation without module prefixes.

    Args:
        annotation: ``inspect.Parameter.annotation``.

    Returns:
        Text such as ``WeightsEnum | str | bool | None``; empty when not annotated.
    """
    if annotation is inspect.Parameter.empty:
        return ""
    return MODULE_PREFIX.sub(r"\1", inspect.formatannotation(annotation))


def parameter_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """Name, type, default and meaning of every ``__init__`` parameter of a class.

    Args:
        cls: Class whose ``__init__`` is documented with a Google ``Args:`` section,
            or a dataclass whose fields are documented in its ``Attributes:``.

    Returns:
        One row per parameter in signature order; the default is ``repr`` text, or
        empty for required and variadic parameters.

    Raises:
        ExtensionError: If a parameter has no ``Args:`` entry or an entry names no
            parameter.
    """
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    if dataclasses.is_dataclass(cls):
        meanings = parse_google_args(inspect.getdoc(cls) or "", "Attributes:")
    else:
        meanings = parse_google_args(inspect.getdoc(init) or "")
    rows = []
    names = set()
    for parameter in list(signature.parameters.values())[1:]:
        name = parameter.name
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            name = f"**{name}"
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            name = f"*{name}"
        names.add(name)
        if name not in meanings:
            raise ExtensionError(
                f"{cls.__qualname__}.__init__: parameter {name!r} has no entry in the "
                "Args: section of its docstring"
            )
        default = "" if parameter.default is inspect.Parameter.empty else repr(parameter.default)
        rows.append((name, format_annotation(parameter.annotation), default, meanings[name]))
    stale = sorted(set(meanings) - names)
    if stale:
        raise ExtensionError(
            f"{cls.__qualname__}.__init__: the Args: section documents {stale}, which are "
            "not parameters"
        )
    return rows


def yaml_value(value: Any) -> Any:
    """Turn a default value into something YAML writes the way LightningCLI reads it.

    Args:
        value: A parameter default.

    Returns:
        Lists for tuples, the value itself otherwise.
    """
    if isinstance(value, tuple):
        return [yaml_value(item) for item in value]
    return value


def _literal(text: str) -> str:
    """Inline literal markup that survives backquotes in ``text``."""
    return f":literal:`{text.replace('`', r'\`')}`" if text else ""


class ParameterTable(SphinxDirective):
    """``.. parameter-table:: dotted.path.Class``: the class's ``__init__`` parameters."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "prefix": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Build the table.

        Returns:
            The table nodes.

        Raises:
            DirectiveError: If the class cannot be imported or a parameter is not
                documented (an error of the build, with the page's location).
        """
        path = self.arguments[0]
        try:
            cls = import_object(path)
            rows = parameter_rows(cls)
        except ExtensionError as error:
            raise self.error(str(error)) from error
        self.env.note_dependency(inspect.getfile(cls))
        prefix = self.options.get("prefix", "")
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 24 14 62",
            "   :class: parameter-table",
            "",
            "   * - Parameter",
            "     - Default",
            "     - Meaning",
        ]
        for name, annotation, default, meaning in rows:
            lines.append(f"   * - {_literal(prefix + name)}")
            if annotation:
                lines += ["", f"       *{annotation.replace('*', r'\*')}*"]
            lines.append(f"     - {_literal(default)}")
            lines.append(f"     - {meaning}")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, container)
        return list(container.children)


class ConfigDefaults(SphinxDirective):
    """``.. config-defaults:: dotted.path.Class``: defaults as a LightningCLI config."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "section": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Build the YAML block.

        Returns:
            One literal block.

        Raises:
            DirectiveError: If the class cannot be imported.
        """
        path = self.arguments[0]
        try:
            cls = import_object(path)
        except ExtensionError as error:
            raise self.error(str(error)) from error
        signature = inspect.signature(cls.__init__)
        init_args = {
            p.name: yaml_value(p.default)
            for p in list(signature.parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        }
        section = self.options.get("section", "model")
        text = yaml.safe_dump(
            {section: {"class_path": path, "init_args": init_args}},
            sort_keys=False,
            default_flow_style=None,
        )
        block = nodes.literal_block(text, text)
        block["language"] = "yaml"
        return [block]


class GeneratedFigure(SphinxDirective):
    """``.. generated-figure:: name``: a figure drawn by ``docs/make_figures.py``."""

    required_arguments = 1
    has_content = True
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {
        "alt": directives.unchanged,
        "width": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Draw the figure and build the figure node.

        Returns:
            The figure node.

        Raises:
            DirectiveError: If the figure name is unknown or drawing it fails.
        """
        figures = _figure_module(self.env.srcdir)
        name = self.arguments[0]
        if name not in figures.FIGURES:
            raise self.error(
                f"unknown generated figure {name!r}; make_figures.FIGURES has "
                f"{sorted(figures.FIGURES)}"
            )
        folder = Path(self.config.dic3l_figure_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.png"
        start = time.perf_counter()
        try:
            note = figures.FIGURES[name](target)
        except Exception as error:
            raise self.error(
                f"generated figure {name!r} failed: {type(error).__name__}: {error}"
            ) from error
        logger.info("generated figure %s in %.1f s", name, time.perf_counter() - start)
        self.env.note_dependency(figures.__file__)

        docdir = Path(self.env.doc2path(self.env.docname)).parent
        image = nodes.image(uri=os.path.relpath(target, docdir), alt=self.options.get("alt", name))
        if "width" in self.options:
            image["width"] = self.options["width"]
        figure = nodes.figure("", image, classes=["generated-figure"])
        caption_lines = [*self.content, "", note] if self.content else [note]
        holder = nodes.container()
        self.state.nested_parse(
            StringList(caption_lines, source=f"figure {name}"), self.content_offset, holder
        )
        paragraphs = list(holder.findall(nodes.paragraph))
        if paragraphs:
            caption = nodes.caption("", "", *paragraphs[0].children)
            figure += caption
            if len(paragraphs) > 1:
                figure += nodes.legend("", *paragraphs[1:])
        return [figure]


class MarkdownInclude(SphinxDirective):
    """``.. markdown-include:: file.md``: a Markdown file parsed by MyST in place."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Read, rewrite and parse the file.

        Returns:
            The nodes of the parsed Markdown.

        Raises:
            DirectiveError: If the file does not exist.
        """
        from myst_parser.parsers.sphinx_ import MystParser

        _, filename = self.env.relfn2path(self.arguments[0], self.env.docname)
        path = Path(filename)
        if not path.is_file():
            raise self.error(f"markdown-include: {path} does not exist")
        self.env.note_dependency(path)
        text = rewrite_markdown_links(
            path.read_text(encoding="utf-8"), path.parent, Path(self.env.srcdir)
        )
        parser = MystParser()
        document = utils.new_document(str(path), self.state.document.settings)
        # Shared so that ids stay unique across the including page.
        document.ids = self.state.document.ids
        document.nameids = self.state.document.nameids
        document.nametypes = self.state.document.nametypes
        parser.parse(text, document)
        document.transformer.populate_from_components((parser,))
        document.transformer.apply_transforms()
        return list(document.children)


def _figure_module(srcdir: str | Path) -> Any:
    """Import ``make_figures`` from the documentation folder.

    Args:
        srcdir: The documentation source folder.

    Returns:
        The module.
    """
    folder = str(Path(srcdir))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("make_figures")


def _default_figure_dir(app: Sphinx) -> None:
    """Draw figures into the build's static folder unless ``dic3l_figure_dir`` is set.

    Args:
        app: The Sphinx application.
    """
    if not app.config.dic3l_figure_dir:
        app.config.dic3l_figure_dir = str(Path(app.outdir) / "_static" / "figures")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the ``dic3l_figure_dir`` setting.

    Args:
        app: The Sphinx application.

    Returns:
        Extension metadata.
    """
    app.add_config_value("dic3l_figure_dir", "", "", types=frozenset({str}))
    app.connect("builder-inited", _default_figure_dir)
    app.add_directive("parameter-table", ParameterTable)
    app.add_directive("config-defaults", ConfigDefaults)
    app.add_directive("generated-figure", GeneratedFigure)
    app.add_directive("markdown-include", MarkdownInclude)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

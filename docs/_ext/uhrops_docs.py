"""What the uhrops documentation generates at build time, so nothing in it is copied by hand:

- ``{bench-block} NAME``: a benchmark table, rendered by :mod:`benchmarks.report` from the
  JSON files in ``benchmarks/results`` (the same blocks the README carries);
- ``{cli-reference} MODULE``: every option of a ``python -m`` command, read from its parser;
- ``{config-keys}``: every config key with its default, read from ``zoo.config.DEFAULTS``;
- the pictures under ``docs/_generated/`` (see ``docs/pictures.py``), drawn before the build.
"""

from __future__ import annotations

import argparse
import importlib
import os
from contextlib import contextmanager
from typing import Any, Iterator

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


@contextmanager
def _stop_at_parse() -> Iterator[None]:
    """The commands build their parser inside ``parse_args``/``main``: stop them at the
    moment they parse and keep the parser."""
    real = argparse.ArgumentParser.parse_args

    def stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(self)

    argparse.ArgumentParser.parse_args = stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]


def command_parser(module: str) -> argparse.ArgumentParser:
    """The argument parser of the command ``python -m <module>``."""
    mod = importlib.import_module(module)
    entry = getattr(mod, "parse_args", None) or mod.main
    with _stop_at_parse():
        try:
            entry([])
        except _Parsed as got:
            return got.parser
    raise RuntimeError(f"{module}: its entry point returned without parsing arguments")


def option_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(option, default, help) for every argument of ``parser`` but -h."""
    rows = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(action.option_strings) or action.dest
        if action.choices:
            names += " {" + ",".join(str(c) for c in action.choices) + "}"
        default = "" if action.default in (None, argparse.SUPPRESS, False) else repr(action.default)
        text = (action.help or "") % {"default": action.default, "prog": parser.prog} \
            if action.help and "%" in action.help else (action.help or "")
        rows.append((names, default, text))
    return rows


def _table(header: list[str], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


class _MarkdownDirective(SphinxDirective):
    def render(self, markdown: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(markdown, source=self.env.docname), self.content_offset,
                                container)
        return container.children


class BenchBlock(_MarkdownDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from benchmarks.report import current_blocks

        name = self.arguments[0]
        blocks = current_blocks()
        if name not in blocks:
            raise self.error(f"bench-block: no block {name!r}; known: {', '.join(sorted(blocks))}")
        return self.render(blocks[name].strip().splitlines())


class CliReference(_MarkdownDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        parser = command_parser(self.arguments[0])
        lines = [f"`{parser.prog}`: {parser.description or ''}", ""]
        lines += _table(["option", "default", "what it does"],
                        [(f"`{o}`", f"`{d}`" if d else "", h) for o, d, h in option_rows(parser)])
        return self.render(lines)


def config_rows() -> list[tuple[str, str]]:
    """(dotted key, default) of every config key, in the order of ``zoo.config.DEFAULTS``."""
    from zoo.config import DEFAULTS

    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            rows.append((prefix, repr(value)))

    walk("", DEFAULTS)
    return rows


class ConfigKeys(_MarkdownDirective):
    def run(self) -> list[nodes.Node]:
        return self.render(_table(["key", "default"],
                                  [(f"`{k}`", f"`{v}`") for k, v in config_rows()]))


def _draw_pictures(app: Sphinx) -> None:
    import pictures

    pictures.draw_all(os.path.join(DOCS, "_generated"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("bench-block", BenchBlock)
    app.add_directive("cli-reference", CliReference)
    app.add_directive("config-keys", ConfigKeys)
    app.connect("builder-inited", _draw_pictures)
    _setup_api(app)
    return {"parallel_read_safe": True, "version": "1"}


# --------------------------------------------------------------------------------------------
# API reference: one entry per public name, from each module's __all__
# --------------------------------------------------------------------------------------------

#: (module, title) of every module whose ``__all__`` is public API, in reference order
API_MODULES = (
    ("uhrops", "uhrops: ops, modules, backends"),
    ("uhrops.tiling", "uhrops.tiling: grids, merging, streaming protocols"),
    ("uhrops.checks", "uhrops.checks: argument checks"),
    ("uhrops.export", "uhrops.export: torch.export and ONNX"),
    ("zoo.wsdnet", "zoo.wsdnet: WSDNet and its losses"),
    ("zoo.fctl", "zoo.fctl: FCtL, its pipeline and the CSRN"),
    ("zoo.data", "zoo.data: datasets and images"),
    ("zoo.data.registry", "zoo.data.registry: datasets and their rules"),
    ("zoo.losses", "zoo.losses"),
    ("zoo.metrics", "zoo.metrics"),
)


def public_names(module: str) -> list[str]:
    """The names ``module`` exports (its ``__all__``), submodules left out."""
    import types

    mod = importlib.import_module(module)
    return [n for n in mod.__all__ if not isinstance(getattr(mod, n), types.ModuleType)]


def _autodoc_line(module: str, name: str) -> str:
    import inspect

    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj):
        return f".. autoclass:: {module}.{name}\n   :members:"
    if callable(obj):
        return f".. autofunction:: {module}.{name}"
    return f".. autodata:: {module}.{name}\n   :no-value:"


class ApiReference(SphinxDirective):
    """``{api-reference} MODULE``: an autodoc entry for every name of ``MODULE.__all__``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        lines: list[str] = []
        seen = _documented_before(module)
        for name in public_names(module):
            obj = getattr(importlib.import_module(module), name)
            if id(obj) in seen:  # a re-export: one entry, under the first module listing it
                lines += [f"- ``{module}.{name}``: see :obj:`{seen[id(obj)]}`", ""]
            else:
                lines += _autodoc_line(module, name).split("\n") + [""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"{module}.__all__"),
                                self.content_offset, container)
        return container.children


def _documented_before(module: str) -> dict[int, str]:
    """id(object) -> its dotted name, for the objects of the API modules listed before
    ``module`` (plain values such as tuples are not shared, only functions and classes)."""
    import inspect

    out: dict[int, str] = {}
    for name, _ in API_MODULES:
        if name == module:
            break
        mod = importlib.import_module(name)
        for n in public_names(name):
            obj = getattr(mod, n)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out.setdefault(id(obj), f"{name}.{n}")
    return out


def _setup_api(app: Sphinx) -> None:
    app.add_directive("api-reference", ApiReference)

"""The documentation site builds offline with warnings as errors, and its reference covers
every public name and every command option.

The build takes about a minute; it is skipped where the ``docs`` extra (Sphinx, the PyData
theme, MyST) is not installed. CI installs it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
sys.path.insert(0, os.path.join(DOCS, "_ext"))

pytest.importorskip("sphinx")
pytest.importorskip("pydata_sphinx_theme")
pytest.importorskip("myst_parser")

import uhrops_docs  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("html"))
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E",
                          "-b", "html", DOCS, out], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    return out


def _html(site: str, page: str) -> str:
    with open(os.path.join(site, page), encoding="utf-8") as f:
        return f.read()


def _public(module: str) -> list[tuple[str, object]]:
    mod = importlib.import_module(module)
    return [(n, getattr(mod, n)) for n in mod.__all__
            if not isinstance(getattr(mod, n), types.ModuleType)]


@pytest.mark.parametrize("module", [m for m, _ in uhrops_docs.API_MODULES])
def test_every_public_function_and_class_has_a_docstring(module):
    lacking = [n for n, obj in _public(module)
               if (inspect.isclass(obj) or inspect.isfunction(obj))
               and not (obj.__doc__ or "").strip()]
    assert not lacking, f"{module}: no docstring for {lacking}"


def test_every_public_name_is_in_the_reference(site):
    pages = "".join(_html(site, os.path.join("api", p)) for p in os.listdir(os.path.join(site, "api"))
                    if p.endswith(".html"))
    missing = []
    for module, _ in uhrops_docs.API_MODULES:
        for name, obj in _public(module):
            # an entry of its own (id="module.name"), or a line pointing to the one it re-exports
            if f'id="{module}.{name}"' not in pages and f"{module}.{name}</span>" not in pages:
                missing.append(f"{module}.{name}")
    assert not missing, missing
    import uhrops

    assert all(f'id="uhrops.{n}"' in pages for n in uhrops.__all__
               if not isinstance(getattr(uhrops, n), types.ModuleType))


def test_every_command_option_and_config_key_is_in_the_reference(site):
    page = _html(site, os.path.join("api", "cli.html"))
    for module in ("zoo.cli.train", "zoo.cli.evaluate", "zoo.cli.infer", "zoo.cli.export",
                   "zoo.cli.make_refine_data", "zoo.data.check"):
        parser = uhrops_docs.command_parser(module)
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in page, f"{module}: {option} is not in the reference"
    for key, _ in uhrops_docs.config_rows():
        assert key in page, f"config key {key} is not in the reference"


def test_the_pictures_are_drawn_by_the_build(site):
    for name in ("haar_bands.png", "laplacian_levels.png", "window_weights.png"):
        assert os.path.getsize(os.path.join(site, "_images", name)) > 1000, name


def test_the_parser_capture_finds_the_options_of_a_command():
    # the capture reads the parser the command really builds: an option it adds must show
    parser = uhrops_docs.command_parser("zoo.cli.train")
    assert "--config" in [o for a in parser._actions for o in a.option_strings]

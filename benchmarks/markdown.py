"""What every benchmark's README/documentation block is written with: number formats, a
GitHub markdown table, and the reading of a benchmark's own results file.

Each producer module (``benchmarks.ops``, ``benchmarks.models``, ``benchmarks.geo``, …)
declares the block names it renders in ``BLOCKS`` and renders them with
``render_blocks(results_dir, plots_rel) -> dict[str, str]`` from its own JSON; the report
(:mod:`benchmarks.report`) only loops over the producers and splices their blocks. Kept free
of torch so a renderer costs nothing to import.
"""

from __future__ import annotations

import json
import os
from typing import Any


def fnum(x: float | None) -> str:
    """A number with about three significant figures: 1503, 77.8, 6.60, 0.0447; None -> "—"."""
    if x is None:
        return "—"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.3g}"


def fratio(x: float | None) -> str:
    """A ratio as ``6.60x`` ("—" when undefined)."""
    return "—" if x is None else fnum(x) + "x"


def _cell(text: Any) -> str:
    # A "|" inside a cell would end it, a newline the row.
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], body: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def load_json(results_dir: str, name: str) -> dict[str, Any] | None:
    """The JSON object in ``results_dir/name``, or None when the file is absent, unreadable
    or not an object (its block then says "not measured")."""
    try:
        with open(os.path.join(results_dir, name), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def not_measured(command: str, name: str) -> str:
    """The block text of a benchmark whose results file is missing."""
    return f"Not measured: run `{command}` (writes benchmarks/results/{name})."

"""A run's ``log.jsonl``: one JSON object a line, appended; a resumed run keeps the lines up
to its checkpoint's iteration (and drops a line torn by a killed process)."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from zoo.core.atomic import atomic_write_text

__all__ = ["JsonlLog"]


class JsonlLog:
    """Append-only JSON-lines log; on resume, lines past the checkpoint's iteration go."""

    def __init__(self, path: str, enabled: bool, resume_iter: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_iter is not None and os.path.exists(path):
            kept = []
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        if json.loads(line).get("iter", 0) <= resume_iter:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except json.JSONDecodeError:
                        break  # a torn last line from a killed process
            atomic_write_text(path, "".join(kept))
        elif resume_iter is None:
            atomic_write_text(path, "")

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

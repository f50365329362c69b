"""The figures the reliability suite collects, written as JSON at the end of the session.

Every test of ``tests/reliability`` records what it tried into the one :data:`REPORT`:
property cases per op and the distinct error paths they hit, training kills survived,
untrusted files refused, peak memory per image, distributed failures stopped. The session
writes it to ``tests/reliability/last_run.json`` (and also to the path in the environment
variable ``UHROPS_RELIABILITY_JSON`` when set), so the README's Reliability section can cite
the numbers of a named run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import threading
from collections import Counter, defaultdict
from typing import Any

DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "last_run.json")

_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_DTYPE = re.compile(r"torch\.\w+")
_DEVICE = re.compile(r"\b(cpu|meta|cuda(?::\d+)?)\b")


_GIVEN = re.compile(r"[;,:]? got .*$", re.S)


def message_template(message: str) -> str:
    """The shape of an error message with its particulars (the value given after "got",
    numbers, quoted values, dtypes, devices) replaced, cut before the "Fix:" advice: two
    failures with the same template went through the same check."""
    head = message.split(" Fix:")[0]
    head = _GIVEN.sub(" got …", head)
    head = _QUOTED.sub("'…'", head)
    head = _DTYPE.sub("DTYPE", head)
    head = _DEVICE.sub("DEVICE", head)
    head = _NUMBER.sub("#", head)
    return " ".join(head.split())[:160]


class Report:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.families: dict[str, _Family] = {}
        self.sections: dict[str, Any] = {}

    # -- property cases ------------------------------------------------------------------
    def case(self, op: str, outcome: str, exc: BaseException | None = None,
             family: str = "ops") -> None:
        """One property case of ``op``: "valid" (computed and checked) or "rejected"."""
        with self._lock:
            fam = self.families.setdefault(family, _Family())
            fam.cases[op] += 1
            if outcome == "valid":
                fam.valid[op] += 1
            else:
                fam.rejected[op] += 1
                assert exc is not None
                key = (type(exc).__name__, message_template(str(exc)))
                fam.error_paths[key].add(op)

    # -- other fault classes -------------------------------------------------------------
    def add(self, section: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self.sections.setdefault(section, []).append(entry)

    def set(self, section: str, key: str, value: Any) -> None:
        with self._lock:
            self.sections.setdefault(section, {})[key] = value

    def empty(self) -> bool:
        return not self.families and not self.sections

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
        try:
            import torch

            out["torch"] = torch.__version__
        except ImportError:  # pragma: no cover
            pass
        for name, fam in sorted(self.families.items()):
            out[name] = fam.as_dict()
        out.update(self.sections)
        if isinstance(self.sections.get("files_refused"), list):
            by_class = Counter(e["class"] for e in self.sections["files_refused"])
            out["files_refused_summary"] = {"total": sum(by_class.values()),
                                            "by_class": dict(sorted(by_class.items()))}
        return out

    def write(self, extra: dict[str, Any] | None = None) -> list[str]:
        data = self.as_dict()
        if extra:
            data.update(extra)
        paths = [DEFAULT_PATH]
        if os.environ.get("UHROPS_RELIABILITY_JSON"):
            paths.append(os.environ["UHROPS_RELIABILITY_JSON"])
        text = json.dumps(data, indent=1, sort_keys=False, default=str)
        for path in paths:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmp = path + ".part"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.replace(tmp, path)
        return paths


class _Family:
    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()  # op -> cases tried
        self.valid: Counter[str] = Counter()  # op -> cases computed and checked
        self.rejected: Counter[str] = Counter()  # op -> cases rejected as documented
        self.error_paths: dict[tuple[str, str], set[str]] = defaultdict(set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases_tried": sum(self.cases.values()),
            "cases_computed": sum(self.valid.values()),
            "cases_rejected": sum(self.rejected.values()),
            "distinct_error_paths": len(self.error_paths),
            "per_op": {op: {"tried": n, "computed": self.valid[op],
                            "rejected": self.rejected[op]}
                       for op, n in sorted(self.cases.items())},
            "error_paths": [{"type": t, "template": m, "ops": sorted(o)}
                            for (t, m), o in sorted(self.error_paths.items())],
        }


REPORT = Report()

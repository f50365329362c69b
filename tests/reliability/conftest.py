"""Set-up of the reliability suite: the JSON report, and the long variants.

Long variants (``@pytest.mark.long``, also marked ``slow``) are minutes each: many more
hypothesis examples, 20+ training kills, a 10240x10240 image and a 20-image folder. They are
skipped unless asked for with ``-m long`` (or any -m expression naming ``long``) or the
environment variable ``UHROPS_LONG=1``. Everything else runs in the default ``pytest``.

The figures every test records go to ``tests/reliability/last_run.json`` at the end of the
session (see ``_report.py``).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.reliability._report import REPORT

HERE = os.path.dirname(os.path.abspath(__file__))


def long_selected(config) -> bool:
    return os.environ.get("UHROPS_LONG") == "1" or "long" in (config.getoption("-m") or "")


def pytest_collection_modifyitems(config, items):
    if long_selected(config):
        return
    skip = pytest.mark.skip(reason="long reliability variant: run with -m long or UHROPS_LONG=1")
    for item in items:
        if item.get_closest_marker("long") is not None and \
                str(item.fspath).startswith(HERE):
            item.add_marker(skip)


_STARTED = time.perf_counter()
_DURATIONS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid.startswith("tests/reliability"):
        _DURATIONS[report.nodeid] = round(report.duration, 2)
        REPORT.set("tests", report.nodeid, report.outcome)


def pytest_sessionfinish(session, exitstatus):
    if REPORT.empty():
        return
    REPORT.write({"session": {"long_variants": long_selected(session.config),
                              "markexpr": session.config.getoption("-m") or "",
                              "wall_s": round(time.perf_counter() - _STARTED, 1),
                              "test_durations_s": _DURATIONS}})


@pytest.fixture(scope="session")
def reliability_report():
    """The session's report (tests add their figures to it)."""
    return REPORT

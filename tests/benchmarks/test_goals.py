"""benchmarks.goals: paired rounds, ratios against hand-computed values, a quick end-to-end
run into a temporary results file, and the README block the report makes of it."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import goals, report
from benchmarks.common import SCHEMA


def test_paired_rounds_alternate_the_order():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"),
           "c": lambda: calls.append("c")}
    times = goals.paired_rounds(fns, rounds=4)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for v in times.values() for t in v)


def test_time_goal_is_the_median_of_paired_ratios():
    ours = [10.0, 12.0, 30.0, 11.0, 9.0]
    anchor = [20.0, 12.0, 15.0, 33.0, 18.0]  # per round: 2, 1, 0.5, 3, 2
    row = goals.time_goal("g", 4, "us", "them", {"us": ours, "them": anchor}, 1.5)
    assert row["ratio"] == 2.0  # not median(anchor) / median(ours) = 18 / 11
    assert row["ours_ms"] == statistics.median(ours) and row["anchor_ms"] == 18.0
    assert row["wins"] == 3 and row["rounds"] == 5  # round 2 is a tie: not a win
    assert row["met"] is True
    assert goals.time_goal("g", 4, "us", "them", {"us": ours, "them": anchor}, 2.5)["met"] is False
    assert goals.time_goal("g", 4, "us", "them", {"us": ours, "them": anchor}, None)["met"] is None


def test_memory_goal():
    assert goals.memory_goal("m", 5, "us", 699.0, 700.0, "")["met"] is True
    assert goals.memory_goal("m", 5, "us", 700.0, 700.0, "")["met"] is False
    assert goals.memory_goal("m", 5, "us", None, 700.0, "")["met"] is None


def test_bad_arguments_are_reported(capsys):
    with pytest.raises(SystemExit):
        goals.main(["--only", "wavelet"])
    assert "unknown goal group" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        goals.main(["--rounds", "2"])
    assert "at least 3" in capsys.readouterr().err


def test_quick_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("torch.nn.attention")
    path = tmp_path / "cpu.json"
    assert goals.main(["--quick", "--rounds", "3", "--only", "attention,tiling",
                       "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    sec = doc["sections"]["goals.cpu"]
    assert sec["metadata"]["quick"] is True
    rows = sec["rows"]
    att = [r for r in rows if r["issue"] == 4]
    assert {(r["ours"], r["anchor"]) for r in att if r["metric"] == "time"} == {
        ("uhrops-torch", "sdpa-flash"), ("uhrops-torch", "sdpa-flash from maps"),
        ("uhrops-torch channels_last", "sdpa-flash")}
    assert all(r["met"] is None for r in rows)  # quick shapes are never judged
    for r in rows:
        if r["metric"] == "time" and r.get("ratio") is not None:
            assert r["rounds"] == 3 and 0 <= r["wins"] <= 3 and r["ratio"] > 0
    mem = [r for r in att if r["metric"] == "memory"]
    assert len(mem) == 1 and (mem[0]["peak_mb"] is None or mem[0]["peak_mb"] < 256)
    assert "[info]" in capsys.readouterr().out

    # a second run of one group replaces its rows and keeps the other group's
    n_tiling = sum(r["issue"] == 5 for r in rows)
    assert goals.main(["--quick", "--rounds", "3", "--only", "attention",
                       "--json", str(path)]) == 0
    rows2 = json.loads(path.read_text())["sections"]["goals.cpu"]["rows"]
    assert len(rows2) == len(rows) and sum(r["issue"] == 5 for r in rows2) == n_tiling


def _goal_doc(quick: bool) -> dict:
    rows = [goals.time_goal("attention fwd time, N=16", 4, "uhrops-torch", "sdpa-flash",
                            {"uhrops-torch": [10.0, 10.0, 10.0],
                             "sdpa-flash": [9.0, 11.0, 12.0]}, 1.0),
            goals.memory_goal("streaming memory", 5, "uhrops-torch", 492.0, 700.0, "")]
    meta = {"commit": "0" * 16, "time": "2026-01-02T03:04:05+0000", "quick": quick}
    return {"schema": SCHEMA, "device_tag": "cpu-2t", "machine": {},
            "sections": {"goals.cpu": {"metadata": meta, "rows": rows}}}


def test_report_goals_block(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "cpu-2t.json").write_text(json.dumps(_goal_doc(quick=False)))
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n## Benchmarks\n\n")
    assert report.main(["--results-dir", str(d), "--readme", str(readme), "--no-plots"]) == 0
    text = readme.read_text()
    block = text.split("<!-- bench:goals begin -->")[1].split("<!-- bench:goals end -->")[0]
    # paired ratios 0.9, 1.1, 1.2 -> median 1.1; medians 11 / 10 ms; 2 of 3 rounds won
    assert "| 4 | attention fwd time, N=16 | sdpa-flash / uhrops-torch | 1.10x (11.0 / 10.0 ms, " \
           "faster in 2/3) | >= 1x | yes |" in block
    assert "| 5 | streaming memory | uhrops-torch | 492 MiB | < 700 MiB | yes |" in block

    (d / "cpu-2t.json").write_text(json.dumps(_goal_doc(quick=True)))
    assert report.main(["--results-dir", str(d), "--readme", str(readme), "--no-plots"]) == 0
    assert "No goal measurements yet" in readme.read_text()

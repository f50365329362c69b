"""``python -m benchmarks.gpu_check --dry-run --like-device``: every stage of the prepared GPU
call runs on the CPU at toy sizes, with the packages the GPU machine lacks made unimportable,
so the command is known to work when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_dry_run_runs_every_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    record = tmp_path / "record.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run",
                           "--like-device", "--keep", str(tmp_path), "--budget", "900",
                           "--out", str(record)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "7/7 stages ok" in proc.stdout
    stages = {r["stage"]: r for r in json.loads(record.read_text())["stages"]}
    assert list(stages) == ["preflight", "cuda-tests", "memcheck", "ops", "models", "fps-test",
                            "report"]
    facts = stages["preflight"]["facts"]
    assert set(facts["kernels"]) == {"wavelet", "wavelet-packet", "pyramid", "attention",
                                     "tiling"}
    assert all(k["ok"] for k in facts["kernels"].values()), facts["kernels"]
    # the oracles were blocked, yet every uhrops test module collected
    assert stages["cuda-tests"]["tests"] is not None
    doc = json.loads((tmp_path / "cpu-dry-run.json").read_text())
    sections = doc["sections"]
    assert {"ops.wavelet", "ops.tiling", "models.wsdnet", "models.fps_test"} <= set(sections)
    (row,) = sections["models.fps_test"]["rows"]
    assert row["repeats"] == 2 and row["fps"] == pytest.approx(2 / row["total_s"])
    # the README carries the summary (the site renders every table from the JSON)
    assert "bench:summary" in (tmp_path / "README.md").read_text()
    assert "wavelet" in (tmp_path / "README.md").read_text().split("bench:summary begin")[1]


def test_gpu_stages_are_strict_and_ordered():
    names = [s.name for s in gpu_check.stages(False, "/tmp")]
    assert names == ["preflight", "cuda-tests", "memcheck", "ops", "models", "fps-test",
                     "report"]
    for s in gpu_check.stages(False, "/tmp")[:6]:
        assert s.env.get("UHROPS_STRICT_KERNELS") == "1" and s.env.get("TRITON_INTERPRET") == "0"
    assert abs(sum(s.share for s in gpu_check.stages(False, "/tmp")) - 1.0) < 1e-9
    assert gpu_check.stages(False, "/tmp")[0].cap_s == 45


def test_stage_limits_fit_nine_minutes_and_the_preflight_cap():
    selected = gpu_check.stages(False, "/tmp")
    # Every stage using its whole limit, one after the other: still within the budget.
    used = 0.0
    for i in range(len(selected)):
        limit = gpu_check.stage_limits(selected, 540.0, used, i)
        assert limit >= 10.0
        used += limit
    assert used <= 540.0 + 1e-6
    assert gpu_check.stage_limits(selected, 540.0, 0.0, 0) <= 45.0


def test_plan_is_one_device_command_within_limits(capsys):
    assert gpu_check.main(["--plan"]) == 0
    text = capsys.readouterr().out
    cmd = gpu_check.device_command()
    assert cmd in text and len(cmd) <= 2000
    assert "python3 -m pip install -q --no-index --no-deps --target" in cmd
    m = __import__("re").search(r"timeout (\d+) ", cmd)
    assert m and int(m.group(1)) < 600  # inside the machine's 10 minutes a command
    assert ".gpuwheels" in text and "PYTHONPATH=" in cmd and "$OUT" in cmd
    assert "pip download" not in cmd and "index-url" not in cmd  # no registry there


def test_junit_counts_read_ran_passed_skipped_and_reasons(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="3">'
                   '<testcase name="a"/><testcase name="b"><skipped message="no pywt"/>'
                   '</testcase><testcase name="c"><failure message="x"/></testcase>'
                   '</testsuite></testsuites>')
    assert gpu_check._junit_counts(str(xml)) == {"ran": 3, "passed": 1, "failed": 1,
                                                 "skipped": 1,
                                                 "skip_reasons": {"no pywt": 1}}


def test_refuses_without_cuda_unless_dry_run(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "--dry-run" in capsys.readouterr().err


def test_readme_states_the_plan_command():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert "## Running the GPU check" in readme
    assert gpu_check.device_command() in readme, "README out of date: paste --plan's command"


def test_memcheck_selection_launches_every_kernel_and_every_vector_width():
    """Recorded as on a CUDA device (nothing runs): every Triton kernel is launched, and
    every kernel that takes a vector width gets one above 1 at least once."""
    pytest.importorskip("triton")
    import importlib
    import inspect

    from uhrops.kernels._launch import Launch, kernel_name, recording

    launches: list[Launch] = []
    with recording(launches, "memcheck"):
        for run in gpu_check.memcheck_selection("cpu", toy=False).values():
            run()
    kernels, vec_params = set(), {}
    for mod in ("wavelet", "pyramid", "attention", "tiling"):
        m = importlib.import_module(f"uhrops.kernels.{mod}")
        for name, obj in vars(m).items():
            if name.endswith("_kernel") and hasattr(obj, "arg_names"):
                kernels.add(name)
                widths = [a for a in obj.arg_names if a in ("VEC", "VX", "VY")
                          or a.startswith("VEC_")]
                if widths:
                    vec_params[name] = widths
    assert kernels >= {"_gather_kernel", "_down_kernel", "_wavedec_kernel", "_fwd_kernel"}
    seen = {kernel_name(x.kernel) for x in launches}
    assert kernels <= seen, f"never launched: {sorted(kernels - seen)}"
    for name, widths in vec_params.items():
        best = max((x.meta.get(w, 1) for x in launches if kernel_name(x.kernel) == name
                    for w in widths), default=1)
        assert best > 1, f"{name}: no launch with a vector width above 1 ({widths})"
    shapes = {tuple(a.shape) for x in launches for a in x.args if hasattr(a, "shape")}
    assert any(s[-2:] == (5000, 4999) for s in shapes)

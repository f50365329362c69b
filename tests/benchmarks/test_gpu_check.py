"""``python -m benchmarks.gpu_check --dry-run``: every stage of the prepared GPU call runs on
the CPU at toy sizes, so the command is known to work when a GPU is lent."""

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
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--keep",
                           str(tmp_path), "--budget", "600"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5/5 stages ok" in proc.stdout
    doc = json.loads((tmp_path / "cpu-dry-run.json").read_text())
    sections = doc["sections"]
    assert {"ops.wavelet", "ops.tiling", "models.wsdnet", "models.fps_test"} <= set(sections)
    (row,) = sections["models.fps_test"]["rows"]
    assert row["repeats"] == 2 and row["fps"] == pytest.approx(2 / row["total_s"])
    assert "bench:ops-cpu" in (tmp_path / "README.md").read_text()


def test_gpu_stages_are_strict_and_ordered():
    names = [s.name for s in gpu_check.stages(False, "/tmp")]
    assert names == ["cuda-tests", "ops", "models", "fps-test", "report"]
    for s in gpu_check.stages(False, "/tmp")[:4]:
        assert s.env.get("UHROPS_STRICT_KERNELS") == "1" and s.env.get("TRITON_INTERPRET") == "0"
    assert abs(sum(s.share for s in gpu_check.stages(False, "/tmp")) - 1.0) < 1e-9


def test_refuses_without_cuda_unless_dry_run(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "--dry-run" in capsys.readouterr().err

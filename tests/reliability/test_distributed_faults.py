"""A 2-process gloo training where one worker dies or hangs stops with a clear error.

Two ``python -m zoo.train`` processes (through ``_faulty_train``) form a gloo process group on
localhost with ``train.dist_timeout`` set to a few seconds. At the start of iteration 2, rank 1
either leaves with ``os._exit(3)`` (a crash) or stops answering (a hang: it sleeps). The
surviving rank 0 must exit with a non-zero status and a one-line ``zoo.train: error:`` naming
the lost peer / the timeout, well within the bound below, instead of waiting forever; the
checkpoint written before the failure stays loadable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.reliability._report import REPORT
from zoo.core.checkpoint import read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 12
ARGS = [
    "--set=train.iters=4", "--set=train.batch_size=2", "--set=train.val_every=0",
    "--set=train.ckpt_every=1", "--set=train.log_every=1", "--set=train.predictions=0",
    "--set=train.optimizer=sgd", "--set=train.device=cpu", f"--set=train.dist_timeout={TIMEOUT_S}",
    "--set=data.synthetic_train=4", "--set=data.synthetic_val=1",
    "--set=data.synthetic_size=[48, 48]", "--set=data.crop_size=[48, 48]",
    "--set=model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2], aspp_channels: 32, "
    "fuse_channels: 32, head_channels: 16, dropout: 0.0}",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: str, how: str) -> tuple[list[subprocess.Popen], float]:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", UHROPS_FAULT_WORKER=f"1:2:{how}",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("UHROPS_FAULT", None)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._faulty_train", "--out", out, *ARGS],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs, time.perf_counter()


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_lost_worker_stops_the_job_with_a_clear_error(tmp_path, how):
    out = str(tmp_path / "run")
    procs, t0 = _launch(out, how)
    survivor, victim = procs
    bound = TIMEOUT_S + 60  # start-up (imports, model) + the timeout + shutdown
    try:
        _, err = survivor.communicate(timeout=bound)
        elapsed = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"rank 0 still running {bound} s after its peer was lost ({how}): it hangs")
    finally:
        if victim.poll() is None:  # the hanging worker sleeps: end it
            victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    assert survivor.returncode not in (0, None), err[-3000:]
    assert "zoo.train: error:" in err, err[-3000:]
    last_line = [line for line in err.splitlines() if "zoo.train: error:" in line][0]
    assert "rank 1" in last_line or "peer" in last_line or "timed out" in last_line.lower(), \
        last_line
    assert "Traceback" not in err, err[-3000:]
    if how == "exit":
        assert victim.returncode == 3
    else:  # nothing but the timeout can end a wait on a silent peer
        assert elapsed >= TIMEOUT_S and "timed out" in last_line.lower(), (elapsed, last_line)
    # what was written before the failure is intact
    _, state = read_checkpoint(os.path.join(out, "checkpoints", "last.safetensors"))
    assert state["iteration"] == 1
    REPORT.set("distributed", how, {"survivor_exit": survivor.returncode,
                                    "seconds_to_stop": round(elapsed, 1),
                                    "timeout_s": TIMEOUT_S, "message": last_line[:300]})

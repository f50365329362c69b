"""``python -m tests.reliability._faulty_train [zoo.train arguments]``: the real trainer with
one fault armed, for the kill tests.

The fault is read from the environment variable ``UHROPS_FAULT`` = ``KIND:N`` (nothing is
armed without it) and kills this process with SIGKILL (no clean-up, no ``finally``) at the
N-th (1-based) occurrence of:

============================  ==================================================================
``ckpt-partial``              a checkpoint (``*.safetensors``) temporary file half written
``ckpt-before-rename``        a checkpoint temporary file complete, before its rename
``ckpt-after-rename``         a checkpoint renamed into place, before its ``.json`` twin
``json-partial``              a checkpoint's ``.json`` twin temporary file half written
``log-partial``               a ``log.jsonl`` line half written
``iter``                      the start of iteration N (before its step)
============================  ==================================================================

Nothing of the trainer is replaced: the hooks wrap ``os.fdopen`` / ``os.replace`` (as seen by
``zoo.core.atomic``'s writer), the log's ``open`` and the learning-rate schedule, and pass every
call through to the real function until the fault fires.

``UHROPS_FAULT_WORKER`` = ``RANK:ITER:exit|hang`` (distributed tests) makes the process of
that rank leave with ``os._exit(3)`` or sleep for an hour at the start of iteration ITER.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import time


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _target_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _HalfWriter:
    """A file proxy whose write() stores half of the data, flushes it to disk, then dies."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        try:
            os.fsync(self._f.fileno())
        except OSError:
            pass
        _die()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def arm(spec: str) -> None:
    kind, _, n = spec.partition(":")
    target = int(n or 1)
    count = {"n": 0}

    def hit() -> bool:
        count["n"] += 1
        return count["n"] == target

    import zoo.engine.runlog
    import zoo.engine.trainer

    real_fdopen, real_replace = os.fdopen, os.replace

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        name = os.path.basename(_target_of(fd))
        is_tmp = name.startswith(".") and name.endswith(".tmp")
        if kind == "ckpt-partial" and is_tmp and ".safetensors." in name and hit():
            return _HalfWriter(f)
        if kind == "json-partial" and is_tmp and name.startswith((".last.json.", ".best.json.")) \
                and hit():
            return _HalfWriter(f)
        return f

    def replace(src, dst, *args, **kwargs):
        is_ckpt = str(dst).endswith(".safetensors")
        if kind == "ckpt-before-rename" and is_ckpt and hit():
            _die()
        real_replace(src, dst, *args, **kwargs)
        if kind == "ckpt-after-rename" and is_ckpt and hit():
            _die()

    os.fdopen, os.replace = fdopen, replace

    if kind == "log-partial":
        real_open = builtins.open

        def log_open(path, mode="r", *args, **kwargs):
            f = real_open(path, mode, *args, **kwargs)
            if str(path).endswith("log.jsonl") and "a" in mode and hit():
                return _HalfWriter(f)
            return f

        zoo.engine.runlog.open = log_open  # the module's global shadows the builtin

    if kind == "iter":
        real_lr = zoo.engine.trainer.poly_lr

        def poly_lr(base_lr, it, *args, **kwargs):
            if it + 1 == target:
                _die()
            return real_lr(base_lr, it, *args, **kwargs)

        zoo.engine.trainer.poly_lr = poly_lr


def arm_worker(spec: str) -> None:
    rank_s, it_s, how = spec.split(":")
    if int(os.environ.get("RANK", "0")) != int(rank_s):
        return
    import zoo.engine.trainer

    real_lr = zoo.engine.trainer.poly_lr

    def poly_lr(base_lr, it, *args, **kwargs):
        if it + 1 == int(it_s):
            sys.stderr.write(f"[fault] rank {rank_s} {'exits' if how == 'exit' else 'hangs'} "
                             f"at iteration {it + 1}\n")
            sys.stderr.flush()
            if how == "exit":
                os._exit(3)
            time.sleep(3600)
        return real_lr(base_lr, it, *args, **kwargs)

    zoo.engine.trainer.poly_lr = poly_lr


def main() -> int:
    if os.environ.get("UHROPS_FAULT"):
        arm(os.environ["UHROPS_FAULT"])
    if os.environ.get("UHROPS_FAULT_WORKER"):
        arm_worker(os.environ["UHROPS_FAULT_WORKER"])
    from zoo.cli.train import main as train_main

    return train_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

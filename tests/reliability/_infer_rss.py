"""``python -m tests.reliability._infer_rss [zoo.infer arguments]``: ``zoo.infer`` with its
peak memory measured image by image (Linux).

Before each image the kernel's peak-RSS counter (VmHWM) is reset through
``/proc/self/clear_refs``; after it, the image's peak (VmHWM) and the resident size left
behind (VmRSS, read after ``gc.collect()`` and glibc's ``malloc_trim``) are appended as one
JSON line to the file named by ``UHROPS_RSS_LOG``.
``UHROPS_INFER_KILL_AFTER=K`` SIGKILLs the process once K images are finished (the
interrupted-folder test). Nothing else of ``zoo.infer`` changes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from benchmarks.common import proc_status_kb, reset_peak_rss


def _trim() -> None:
    """Give freed heap pages back to the kernel (glibc keeps them otherwise, so the resident
    size after an image would say more about malloc's caching than about what is kept)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main() -> int:
    import zoo.cli.infer

    log_path = os.environ.get("UHROPS_RSS_LOG")
    kill_after = int(os.environ.get("UHROPS_INFER_KILL_AFTER", "0"))
    real = zoo.cli.infer.infer_file  # the command's global, which it calls
    done = {"n": 0}

    def measured(task, model, path, *args, **kwargs):
        reset = reset_peak_rss()
        before = proc_status_kb("VmRSS")
        t0 = time.perf_counter()
        written = real(task, model, path, *args, **kwargs)
        peak = proc_status_kb("VmHWM")
        _trim()
        record = {"image": os.path.basename(path), "peak_rss_mib": peak / 1024,
                  "rss_before_mib": before / 1024, "rss_after_mib": proc_status_kb("VmRSS") / 1024,
                  "seconds": round(time.perf_counter() - t0, 2), "peak_reset": reset}
        if log_path:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        done["n"] += 1
        if kill_after and done["n"] >= kill_after:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    zoo.cli.infer.infer_file = measured
    return zoo.cli.infer.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

"""Files that are never half-written: write to a temporary file in the same folder, flush it
to disk, rename it over the target; and clean-up of the temporaries a killed process left.
"""

from __future__ import annotations

import os
import re
import tempfile

__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries"]


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp makes the file private (0600); give it the mode a plain open() would
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() would race other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# The temporary names atomic_write_bytes makes: "." + final name + "." + mkstemp's 8 random
# characters + ".tmp" (and the "<file>.tmp.png" / ".tmp.tif" of the mask writers).
_STALE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^.+\.(png|tif)\.tmp\.(png|tif)$")


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete the half-written temporary files that a process killed inside an atomic write
    left in ``folder`` (never a finished file); returns their paths. Call it before writing
    into a folder that a killed run may have used."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if _STALE.match(name):
            path = os.path.join(folder, name)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

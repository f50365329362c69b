"""Large CPU buffers: huge pages for fresh ones, and one mechanism to reuse them.

A fresh multi-MB CPU tensor is an mmap whose 4 KiB pages fault in one by one on first touch.
Two things make that cheaper:

- On Linux with transparent huge pages in "madvise" mode, :func:`empty_buffer` advises large
  buffers as MADV_HUGEPAGE, which makes the first touch about 4x cheaper (what PyTorch's
  THP_MEM_ALLOC_ENABLE does for every allocation). Best effort: anything unexpected falls
  back to plain torch.empty.
- Reuse. A buffer may be refilled only when nothing but its keeper references it: no Python
  name outside the keeper, no view, and no other owner of its storage.
  :func:`_unreferenced` is that one test, used in two places: :func:`recycle` (a
  sliding-window batch buffer refilled for the next batch when ``fn`` kept no reference to
  it) and the pool (:func:`pooled_empty` / :func:`pool_keep`: the output and batch buffers
  of a call kept when it returns, taken back by a later call with the same shapes once the
  caller dropped them, so a steady loop over images of one size touches no new page; under
  memory pressure a fresh mmap also stalls on huge-page compaction, 2-3x the median call at
  2448²). Like PyTorch's CUDA caching allocator the pool holds memory the caller has freed:
  at most _POOL_BYTES, CPU only; :func:`release_buffers` frees it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["empty_buffer", "pool_keep", "pooled_empty", "recycle", "release_buffers",
           "zeros_buffer"]


_MADV_HUGEPAGE = 14
_HUGE_MIN_BYTES = 8 << 20
_madvise: Any = None


def _get_madvise() -> Any:
    global _madvise
    if _madvise is None:
        _madvise = False
        try:
            import ctypes

            if sys.platform.startswith("linux"):
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
        except Exception:  # no libc / not Linux
            _madvise = False
    return _madvise


def empty_buffer(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """torch.empty, with huge pages advised for large CPU buffers (outside torch.compile)."""
    t = torch.empty(tuple(shape), dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if t.device.type == "cpu" and nbytes >= _HUGE_MIN_BYTES \
            and not torch.compiler.is_compiling():
        fn = _get_madvise()
        if fn:
            p = t.data_ptr()
            a = (p + 4095) & ~4095
            length = ((p + nbytes) & ~4095) - a
            if length > 0:
                fn(a, length, _MADV_HUGEPAGE)  # advisory: the return value does not matter
    return t


def zeros_buffer(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    return empty_buffer(shape, dtype, device).zero_()


_POOL_BYTES = 1 << 30
_POOL_MIN_BYTES = 1 << 20  # smaller ones come from malloc's heap (no fresh mmap each time)
_pool: list[Tensor] = []
_pool_lock = threading.Lock()  # calls from several threads never get the same buffer


def _unreferenced(t: Tensor, holders: int) -> bool:
    """True when ``holders`` references (the keeper's names, outside this function) are all
    there are to ``t``, ``t`` is no view, and no other tensor shares its storage.

    The one reuse test (see the module docstring). Best effort: should PyTorch's private
    storage count go away, nothing is reused."""
    try:
        # + 2: this function's `t` and getrefcount's own argument
        if sys.getrefcount(t) > holders + 2 or t._base is not None:
            return False
        # 2: the tensor and the storage object made for this call
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2
    except Exception:  # private API gone: never reuse
        return False


def pooled_empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """empty_buffer, or an idle pooled buffer of exactly that shape, dtype and device."""
    shape = tuple(int(v) for v in shape)
    with _pool_lock:
        for i in range(len(_pool)):  # (enumerate's tuple would hold one more reference)
            t = _pool[i]
            if t.shape == shape and t.dtype == dtype and t.device == device \
                    and _unreferenced(t, 2):  # the list entry and `t`
                return _pool.pop(i)
    return empty_buffer(shape, dtype, device)


def pool_keep(*tensors: Tensor | None) -> None:
    """Offer buffers for reuse by later calls (CPU, up to _POOL_BYTES, newest kept)."""
    with _pool_lock:
        _keep_locked(tensors)


def _keep_locked(tensors: Sequence[Tensor | None]) -> None:
    global _pool
    for t in tensors:
        if t is None or t.device.type != "cpu" or t.numel() * t.element_size() < _POOL_MIN_BYTES \
                or any(t is q for q in _pool):
            continue
        _pool.insert(0, t)
    total, kept = 0, []
    for t in _pool:
        total += t.numel() * t.element_size()
        if total <= _POOL_BYTES:
            kept.append(t)
    _pool = kept


def release_buffers() -> None:
    """Drop the buffers sliding_window keeps for reuse (the pool; see the module docstring)."""
    with _pool_lock:
        _pool.clear()


def recycle(buf: Tensor) -> Tensor | None:
    """``buf`` if no one but the caller references it (so it can be refilled), else None.

    A fresh batch buffer costs page faults on every call; refilling the previous one is free,
    but only when ``fn`` kept no reference to it or to a view of it."""
    return buf if _unreferenced(buf, 2) else None  # the caller's name and `buf`

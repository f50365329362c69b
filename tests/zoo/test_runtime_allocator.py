"""zoo.core.runtime.reuse_freed_memory: while open, a large block freed and asked for again is
served, once the heap has settled, from memory the process already has (no page faults);
outside it glibc maps and unmaps such a block every time; on exit the memory goes back.

The oracle is the kernel's count of minor page faults (``getrusage``) and the resident size
(``/proc/self/status``), not the code under test: a 64 MiB tensor filled once touches 16384
pages of 4 KiB. Each case runs in a fresh interpreter, so the heap it starts from is the
same whatever ran before in the test process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's allocator only")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ELEMENTS = 16 * 2**20  # float32: 64 MiB, far above glibc's 128 KiB mapping threshold
BLOCK_MIB = ELEMENTS * 4 / 2**20

_SCRIPT = r"""
import json, os, resource, sys
import torch
from zoo.core.runtime import reuse_freed_memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

def cycles(n):
    out = []
    for _ in range(n):
        before = faults()
        x = torch.empty(%(elements)d)
        x.fill_(1.0)
        del x
        out.append(faults() - before)
    return out

mode = sys.argv[1]
res = {"pages": %(elements)d * 4 // resource.getpagesize(), "before": cycles(4),
       "rss0": rss()}
if mode == "nested":
    with reuse_freed_memory() as outer:
        with reuse_freed_memory() as inner:
            pass
        res.update(why=[outer, inner], inside=cycles(12), rss_in=rss())
else:
    with reuse_freed_memory(mode != "off") as why:
        res.update(why=[why], inside=cycles(12), rss_in=rss())
res["rss_out"] = rss()
print(json.dumps(res))
"""


def _run(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", "LD_PRELOAD") and not k.startswith("MALLOC_")}
    p = subprocess.run([sys.executable, "-c", _SCRIPT % {"elements": ELEMENTS}, mode],
                       cwd=ROOT, env={**clean, "OMP_NUM_THREADS": "1", **env},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _fresh(r: dict, key: str) -> bool:
    """Every cycle faulted its pages in afresh (glibc mapped and unmapped the block)."""
    return all(f >= r["pages"] // 2 for f in r[key])


def _settled(r: dict) -> bool:
    """The last three cycles inside reused memory the process had (the heap settles after a
    few: each freed block sits just short of the next aligned request until blocks merge)."""
    return all(f < r["pages"] // 20 for f in r["inside"][-3:])


def test_a_freed_block_is_reused_inside_and_given_back_on_exit():
    r = _run("on")
    assert r["why"] == [None]
    assert _fresh(r, "before"), r["before"]
    assert _settled(r), r["inside"]
    # the price: the heap keeps several blocks, but a bounded number of them
    assert r["rss_in"] - r["rss0"] < 8 * BLOCK_MIB, r
    assert r["rss_out"] - r["rss0"] < BLOCK_MIB, r  # malloc_trim gave them back


def test_nested_use_keeps_the_setting_until_the_outer_exit():
    r = _run("nested")
    assert r["why"] == [None, None]
    assert _settled(r), r["inside"]  # the inner exit did not restore glibc's defaults
    assert r["rss_out"] - r["rss0"] < BLOCK_MIB, r


@pytest.mark.parametrize("mode,env,why", [
    ("off", {}, "switched off"),
    ("on", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, "GLIBC_TUNABLES"),
    ("on", {"MALLOC_ARENA_MAX": "2"}, None),  # not an allocator setting we defer to
])
def test_switched_off_or_set_by_the_environment_changes_nothing(mode, env, why):
    r = _run(mode, **env)
    if why is None:
        assert r["why"] == [None] and _settled(r), r
        return
    assert r["why"][0] is not None and why in r["why"][0], r["why"]
    assert _fresh(r, "inside"), r["inside"]


def test_eval_allocator_follows_eval_reuse_freed_memory(monkeypatch):
    """What evaluation and zoo.infer open: the setting ``eval.reuse_freed_memory`` names."""
    from zoo.core import runtime
    from zoo.engine import inference

    seen = []
    monkeypatch.setattr(inference, "reuse_freed_memory",
                        lambda enabled=True: (seen.append(enabled),
                                              runtime.reuse_freed_memory(enabled))[1])
    for key in runtime._ENV_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    with inference.eval_allocator({"eval": {"reuse_freed_memory": False}}) as why_not:
        assert why_not == "switched off"
    with inference.eval_allocator({}) as why_not:  # the default: on
        assert why_not is None
    assert seen == [False, True]

"""The alignment and contiguity promises the host hands the tiling kernels hold (issue 28).

With ``VEC`` > 1 the gather and scatter kernels tell the compiler, through
``tl.multiple_of(off, VEC)`` and ``tl.max_contiguous(off, VEC)``, that each group of ``VEC``
columns of every hinted offset starts at a multiple of ``VEC`` elements and is contiguous,
and they compute the masks on the group's first column. The Triton interpreter ignores the
hints; on a GPU a wrong one is a silently wrong vector load or an illegal address. Here views
are drawn (storage offsets, column slices, channels_last, odd sizes, grids), the launches the
host makes for a CUDA device are recorded (``uhrops.kernels._launch.recording``: nothing
runs), and every promise is checked in plain Python against the recorded arguments and the
tensors' real pointers and strides, by enumerating the group starts the kernel addresses:

- contiguity: the column stride of the addressed tensor is 1;
- multiple_of: every hinted offset at a group start is a multiple of ``VEC``, and so is the
  element address (storage offset + offset), so that a 16-byte aligned allocation gives
  ``VEC * element_size``-aligned vectors (checked on the real ``data_ptr``);
- the group masks equal the exact per-element masks.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

import uhrops  # noqa: E402
from uhrops.kernels._launch import Launch, kernel_name, recording  # noqa: E402


def _named(launch: Launch) -> dict:
    return {**dict(zip(launch.kernel.arg_names, launch.args)), **launch.meta}


def _ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


def _aligned(t: torch.Tensor, off: int, vec: int) -> bool:
    """The element at ``off`` from ``t``'s data pointer starts a ``vec``-element vector:
    aligned to ``vec`` elements from the allocation (real pointer, in bytes)."""
    size = t.element_size()
    return (t.data_ptr() + off * size) % (vec * size) == 0


def check_gather(p: dict) -> list[str]:
    """Every promise of ``_gather_kernel`` (uhrops/kernels/tiling.py), restated."""
    vec, bw = p["VEC"], p["BLOCK_W"]
    if vec == 1:
        return []
    bad = []
    img, out = p["img_ptr"], p["out_ptr"]
    C, H, W, N, NX, PH, PW = (p[k] for k in ("C", "H", "W", "N", "NX", "PH", "PW"))
    s_b, s_c, s_h, s_w = p["s_b"], p["s_c"], p["s_h"], p["s_w"]
    ys, xs = _ints(p["ys_ptr"]), _ints(p["xs_ptr"])
    B = img.shape[0]
    if bw % vec or s_w != 1:
        bad.append(f"gather: VEC={vec} with BLOCK_W={bw}, column stride {s_w}")
        return bad
    q_end = -(-PW // bw) * bw
    for k in range(N):
        y0, x0 = ys[k // NX], xs[k % NX]
        for q in range(0, q_end, vec):
            exact_in = [q + j < PW for j in range(vec)]
            exact = [q + j < PW and x0 + q + j < W for j in range(vec)]
            if exact_in != [q < PW] * vec or exact != [q < PW and q < W - x0] * vec:
                bad.append(f"gather: mask not constant over columns {q}..{q + vec - 1} "
                           f"(x0={x0}, W={W}, PW={PW}, VEC={vec})")
            for b in range(B):
                for c in range(C):
                    for r in range(PH):
                        off = b * s_b + c * s_c + (y0 + r) * s_h + (x0 + q) * s_w
                        if off % vec or not _aligned(img, off, vec):
                            bad.append(f"gather: image offset {off} (b={b} c={c} y={y0 + r} "
                                       f"x={x0 + q}) not a multiple of VEC={vec} / misaligned "
                                       f"(storage offset {img.storage_offset()})")
                        o_off = ((b * N + k) * C + c) * PH * PW + r * PW + q
                        if o_off % vec or not _aligned(out, o_off, vec):
                            bad.append(f"gather: output offset {o_off} misaligned for VEC={vec}")
                        if len(bad) > 5:
                            return bad
    if p["HAS_N"]:
        n = p["n_ptr"]
        if n.stride(-1) != 1 or W % vec or any(x % vec for x in xs) or not _aligned(n, 0, vec):
            bad.append(f"gather: normaliser map {tuple(n.shape)} strides {n.stride()} with "
                       f"VEC={vec}")
    if p["HAS_W"] and (PW % vec or not _aligned(p["w_ptr"], 0, vec)):
        bad.append(f"gather: weight map with PW={PW}, VEC={vec}")
    return bad


def check_scatter(p: dict) -> list[str]:
    """Every promise of ``_scatter_kernel`` (uhrops/kernels/tiling.py), restated."""
    vec, bw = p["VEC"], p["BLOCK_W"]
    if vec == 1:
        return []
    bad = []
    pt, out = p["p_ptr"], p["out_ptr"]
    C, H, W, N, NX, PH, PW = (p[k] for k in ("C", "H", "W", "N", "NX", "PH", "PW"))
    s_n, s_c, s_h, s_w = p["s_n"], p["s_c"], p["s_h"], p["s_w"]
    ys, xs = _ints(p["ys_ptr"]), _ints(p["xs_ptr"])
    B = out.shape[0]
    if bw % vec or s_w != 1:
        return [f"scatter: VEC={vec} with BLOCK_W={bw}, column stride {s_w}"]
    x_end = -(-W // bw) * bw
    for x in range(0, x_end, vec):  # group starts of the output columns
        if [x + j < W for j in range(vec)] != [x < W] * vec:
            bad.append(f"scatter: output mask not constant over {x}..{x + vec - 1} (W={W})")
        for k in range(N):
            i, j0 = divmod(k, NX)
            x0 = xs[j0]
            exact = [0 <= x + j - x0 < PW and x + j < W for j in range(vec)]
            if exact != [x0 <= x < x0 + PW and x < W] * vec:
                bad.append(f"scatter: patch mask not constant over {x}..{x + vec - 1} "
                           f"(x0={x0}, PW={PW}, VEC={vec})")
            if not x0 <= x < x0 + PW:
                continue
            for b in range(B):
                for c in range(C):
                    for r in range(PH):
                        off = (b * N + k) * s_n + c * s_c + r * s_h + (x - x0) * s_w
                        if off % vec or not _aligned(pt, off, vec):
                            bad.append(f"scatter: patch offset {off} (k={k} c={c} r={r} "
                                       f"q={x - x0}) not a multiple of VEC={vec} / misaligned "
                                       f"(storage offset {pt.storage_offset()})")
                        if len(bad) > 5:
                            return bad
        for b in range(B):
            for c in range(C):
                for y in range(H):
                    o_off = (b * C + c) * H * W + y * W + x
                    if o_off % vec or not _aligned(out, o_off, vec):
                        bad.append(f"scatter: output offset {o_off} misaligned for VEC={vec}")
                        return bad
    if p["HAS_W"] and (PW % vec or not _aligned(p["w_ptr"], 0, vec)):
        bad.append(f"scatter: weight map with PW={PW}, VEC={vec}")
    return bad


CHECKS = {"_gather_kernel": check_gather, "_scatter_kernel": check_scatter}


@st.composite
def views(draw):
    """(image view, grid): odd or aligned sizes, a view that starts ``shift`` elements into its
    storage, a column slice and a channel slice (more storage offset), channels_last or NCHW,
    float32/bfloat16."""
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    b, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(8, 40)), draw(st.sampled_from([8, 16, 24, 32, 33, 40, 48, 64]))
    pad_w = draw(st.sampled_from([0, 1, 2, 4, 8]))  # columns sliced away on the left
    extra_c = draw(st.integers(0, 1))  # a channel sliced away: a channel/batch offset
    shift = draw(st.integers(0, 5))  # elements before the view in its storage
    shape = (b, c + extra_c, h, w + pad_w)
    flat = torch.randn(shift + b * (c + extra_c) * h * (w + pad_w)).to(dtype)
    base = flat[shift:].view(shape)
    if draw(st.booleans()):
        base = torch.empty_strided(shape, base.contiguous(
            memory_format=torch.channels_last).stride(), dtype=dtype)
    img = base[:, extra_c:, :, pad_w:]
    ph = draw(st.integers(4, h))
    pw = draw(st.sampled_from([p for p in (4, 8, 12, 16, 24, 5, 7) if p <= w] or [w]))
    sy, sx = draw(st.integers(1, ph)), draw(st.sampled_from([s for s in (4, 8, 3, pw)
                                                             if s <= pw]))
    grid = uhrops.PatchGrid.from_stride((h, w), (ph, pw), (sy, sx))
    return img, grid


@settings(max_examples=40, deadline=None)
@given(case=views(), weighted=st.booleans())
def test_tiling_vector_promises_hold_for_drawn_views(case, weighted):
    img, grid = case
    launches: list[Launch] = []
    with recording(launches, "views"):
        patches = uhrops.extract_patches(img, grid)
        # merge from a view of the patches too: every other channel of a wider tensor
        wide = torch.randn(patches.shape[0], 2 * patches.shape[1], *patches.shape[2:]).to(
            img.dtype)[:, ::2]
        uhrops.merge_patches(patches, grid, weight="gaussian" if weighted else None)
        uhrops.merge_patches(wide, grid)
        uhrops.merge_patches(patches.contiguous(memory_format=torch.channels_last), grid)
    checked = [x for x in launches if kernel_name(x.kernel) in CHECKS]
    assert checked, [kernel_name(x.kernel) for x in launches]
    for launch in checked:
        bad = CHECKS[kernel_name(launch.kernel)](_named(launch))
        assert not bad, "\n".join(bad[:6])


def test_aligned_patches_do_get_vectors():
    """The check is not vacuous: 508-wide-style aligned grids take VEC > 1 in both kernels."""
    img = torch.randn(1, 2, 64, 96)
    grid = uhrops.PatchGrid.from_stride((64, 96), (32, 48), (16, 24))
    launches: list[Launch] = []
    with recording(launches, "aligned"):
        uhrops.merge_patches(uhrops.extract_patches(img, grid), grid)
    vecs = {kernel_name(x.kernel): x.meta["VEC"] for x in launches
            if kernel_name(x.kernel) in CHECKS}
    assert vecs == {"_gather_kernel": 4, "_scatter_kernel": 4}
    for launch in launches:
        if kernel_name(launch.kernel) in CHECKS:
            assert CHECKS[kernel_name(launch.kernel)](_named(launch)) == []

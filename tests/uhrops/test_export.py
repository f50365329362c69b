"""uhrops.export: the ATen decompositions used when exporting equal the ops, torch.export of a
module with each op works, and the ONNX files ONNX Runtime runs give the PyTorch results.

Oracles: the ops themselves in eager mode (each is tested against pywt / OpenCV / a naive
formula / a loop in its own test file) and ONNX Runtime's execution of the exported graph.
"""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import uhrops
from uhrops import export as ux
from uhrops.tiling import PatchGrid

OPS = torch.ops.uhrops
# Heavier exports (a minute on 2 busy cores) run with UHROPS_LONG=1.
LONG_ONLY = pytest.mark.skipif(os.environ.get("UHROPS_LONG") != "1",
                               reason="long variant: set UHROPS_LONG=1")
D = ux.decompositions()
SETTINGS = settings(max_examples=25, deadline=None)


def close(a, b, rtol=1e-5) -> None:
    """Max error within rtol of the reference's magnitude (fp32: a few ulp of sums)."""
    if isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, rtol)
        return
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    assert tuple(a.shape) == tuple(b.shape)
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-30)
    err = float((a.double() - b.double()).abs().max()) if b.numel() else 0.0
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol} x {scale:.3g}"


# ----------------------------------------------------------------------------------------------
# Decompositions against the ops (eager; shapes drawn)
# ----------------------------------------------------------------------------------------------


def test_table_covers_every_forward_op():
    names = {op.name().split("::")[1].split(".")[0] for op in D}
    backward_only = {"pyr_down_adjoint", "pyr_up_adjoint", "context_attention_backward",
                     "tile_contexts_backward"}
    registered = {n for n in dir(OPS) if isinstance(getattr(OPS, n, None),
                                                    torch._ops.OpOverloadPacket)}
    assert registered - backward_only == names


@SETTINGS
@given(h=st.integers(1, 24), w=st.integers(1, 24), pad=st.sampled_from([-1, 0, 1, 2, 3]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_haar_dwt_idwt(h, w, pad, dtype):
    if pad == -1:
        h, w = 2 * h, 2 * w
    if pad == 2 and min(h, w) < 2:
        pad = 1
    x = torch.randn(2, 3, h, w, dtype=dtype)
    close(D[OPS.haar_dwt2d.default](x, pad, "torch"), OPS.haar_dwt2d(x, pad, "torch"))
    y = torch.randn(2, 3, 4, h, w, dtype=dtype)
    close(D[OPS.haar_idwt2d.default](y, "torch"), OPS.haar_idwt2d(y, "torch"))


@SETTINGS
@given(h=st.integers(4, 40), w=st.integers(4, 40), levels=st.integers(1, 3),
       pad=st.sampled_from([0, 1, 2, 3]))
def test_haar_wavedec_waverec(h, w, levels, pad):
    sizes = [(h, w)]
    for _ in range(levels - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    # inputs haar_wavedec2 accepts: "reflect" pads x[n-2], so an odd side needs n >= 2
    assume(pad != 2 or all(n >= 2 for size in sizes for n in size if n % 2))
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    parts = OPS.haar_wavedec2(x, levels, pad, "torch")
    close(D[OPS.haar_wavedec2.default](x, levels, pad, "torch"), parts)
    low, highs = parts[0], list(parts[1:])
    for rec_pad in (-1, pad):  # crop (public API) and fold (the op's adjoint form)
        close(D[OPS.haar_waverec2.default](low, highs, h, w, rec_pad, "torch"),
              OPS.haar_waverec2(low, highs, h, w, rec_pad, "torch"))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_haar_packet(levels):
    x = torch.randn(2, 3, 8 * 2 ** levels, 4 * 2 ** levels)
    close(D[OPS.haar_packet2d.default](x, levels, "torch"), OPS.haar_packet2d(x, levels, "torch"))
    y = OPS.haar_packet2d(x, levels, "torch")
    close(D[OPS.haar_ipacket2d.default](y, levels, "torch"), OPS.haar_ipacket2d(y, levels, "torch"))


@SETTINGS
@given(h=st.integers(1, 30), w=st.integers(1, 30), odd_h=st.booleans(), odd_w=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_pyramid_ops(h, w, odd_h, odd_w, dtype):
    x = torch.randn(2, 2, h, w, dtype=dtype)
    close(D[OPS.pyr_down.default](x, "torch"), OPS.pyr_down(x, "torch"))
    H, W = 2 * h - int(odd_h and h > 1), 2 * w - int(odd_w and w > 1)
    close(D[OPS.pyr_up.default](x, H, W, "torch"), OPS.pyr_up(x, H, W, "torch"))
    base = torch.randn(2, 2, H, W, dtype=dtype)
    for sign in (-1.0, 1.0):
        close(D[OPS.pyr_up_add.default](base, x, sign, "torch"),
              OPS.pyr_up_add(base, x, sign, "torch"))


@pytest.mark.parametrize("shapes", [((2, 8, 5, 6), (2, 8, 4, 3), 5),  # Cq != Cv, chunked path
                                    ((1, 16, 40, 32), (1, 16, 32, 40), 16)])  # fused CPU path
def test_context_attention(shapes):
    (qs, ks, cv) = shapes
    q, k = torch.randn(*qs), torch.randn(*ks)
    v = torch.randn(ks[0], cv, *ks[2:])
    out, lse = D[OPS.context_attention.default](q, k, v, 0.3, "torch")
    ref_out, ref_lse = OPS.context_attention(q, k, v, 0.3, "torch")
    close(out, ref_out)
    close(lse, ref_lse)


def _grid():
    return PatchGrid.from_min_overlap((50, 45), (16, 20), 4)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_tile_gather_scatter(weighted, normalize):
    g = _grid()
    ys, xs = list(g.ys), list(g.xs)
    w = uhrops.gaussian_weight((16, 20)) if weighted else None
    img = torch.randn(2, 3, 50, 45)
    close(D[OPS.tile_gather.default](img, w, ys, xs, 16, 20, normalize, "torch"),
          OPS.tile_gather(img, w, ys, xs, 16, 20, normalize, "torch"))
    p = torch.randn(2 * len(g), 3, 16, 20)
    close(D[OPS.tile_scatter.default](p, w, ys, xs, 50, 45, normalize, "torch"),
          OPS.tile_scatter(p, w, ys, xs, 50, 45, normalize, "torch"))


def test_tile_gather_scatter_past_the_image():
    ys, xs = [0, 40], [0, 30]  # patches run past the 50 x 45 image
    img, p = torch.randn(1, 2, 50, 45), torch.randn(4, 2, 16, 20)
    close(D[OPS.tile_gather.default](img, None, ys, xs, 16, 20, False, "torch"),
          OPS.tile_gather(img, None, ys, xs, 16, 20, False, "torch"))
    close(D[OPS.tile_scatter.default](p, None, ys, xs, 50, 45, True, "torch"),
          OPS.tile_scatter(p, None, ys, xs, 50, 45, True, "torch"))


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("window,out", [((48, 60), (16, 20)), ((24, 30), (16, 20)),
                                        ((10, 7), (16, 1)), ((16, 20), (16, 20))])
def test_tile_contexts(antialias, window, out):
    g = _grid()
    (wh, ww), (oh, ow) = window, out
    ys = [y - (wh - 16) // 2 for y in g.ys]
    xs = [x - (ww - 20) // 2 for x in g.xs]
    img = torch.randn(2, 3, 50, 45)
    close(D[OPS.tile_contexts.default](img, ys, xs, wh, ww, oh, ow, 0.25, antialias, "torch"),
          OPS.tile_contexts(img, ys, xs, wh, ww, oh, ow, 0.25, antialias, "torch"))


def test_eager_dispatch_unchanged():
    """Building the table registers nothing: the ops still run their own kernels."""
    x = torch.randn(1, 1, 8, 8)
    ux.decompositions()
    ep = torch.export.export(_Ops(), (torch.randn(2, 3, 32, 48),))
    assert any("uhrops" in str(n.target) for n in ep.graph.nodes)  # kept by torch.export
    assert OPS.pyr_down.default._schema.name == "uhrops::pyr_down"
    assert torch.equal(uhrops.pyr_down(x), OPS.pyr_down(x, "torch"))


# ----------------------------------------------------------------------------------------------
# torch.export of modules using every op
# ----------------------------------------------------------------------------------------------


class _Ops(torch.nn.Module):
    """A module calling every wavelet and pyramid op."""

    def forward(self, x):
        d = uhrops.haar_dwt2d(x)
        low, highs = uhrops.haar_wavedec2(x, 2, pad_mode="symmetric")
        p = uhrops.haar_packet2d(x, 2)
        lp = uhrops.laplacian_pyramid(x, 2)
        return (d, uhrops.haar_idwt2d(d), low, *highs, uhrops.haar_waverec2(low, highs), p,
                uhrops.haar_ipacket2d(p), *lp, uhrops.laplacian_reconstruct(lp),
                *uhrops.gaussian_pyramid(x, 2)[1:], uhrops.pyr_up(uhrops.pyr_down(x)))


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = uhrops.LocalContextCorrelation(8, center=True)
        torch.nn.init.constant_(self.block.gamma, 0.7)

    def forward(self, local, context):
        return local + self.block(local, context), uhrops.context_attention(
            local, context, context, scale=0.2)


class _Tiling(torch.nn.Module):
    """A patch network inside a module: extract, contexts, a conv, merge (static grid)."""

    def __init__(self, grid):
        super().__init__()
        self.grid = grid
        self.conv = torch.nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, image):
        patches = uhrops.extract_patches(image, self.grid)
        ctx = uhrops.extract_contexts(image, self.grid, 2.0, pad_value=0.5)
        out = self.conv(torch.cat([patches, ctx], 1))
        # (weighted merges read the weight's values in Python checks: not exportable)
        return uhrops.merge_patches(out, self.grid), uhrops.merge_patches(out, self.grid, "sum")


def _cases():
    return {
        "ops": (_Ops(), (torch.randn(2, 3, 32, 48),)),
        "attention": (_Attention(), (torch.randn(2, 8, 6, 5), torch.randn(2, 8, 4, 7))),
        "tiling": (_Tiling(_grid()), (torch.randn(2, 3, 50, 45),)),
    }


@pytest.mark.parametrize("name", ["ops", "attention", "tiling"])
def test_torch_export_then_decompose(name):
    module, args = _cases()[name]
    ep = ux.export(module.eval(), args)
    assert not [n for n in ep.graph.nodes if "uhrops" in str(n.target)]
    close(ep.module()(*args), module(*args))


class _Dynamic(torch.nn.Module):
    """One op of each kind that must stay shape-generic."""

    def forward(self, x):
        low, highs = uhrops.haar_wavedec2(x, 2)
        return (uhrops.haar_idwt2d(uhrops.haar_dwt2d(x)), uhrops.haar_waverec2(low, highs),
                uhrops.haar_ipacket2d(uhrops.haar_packet2d(x, 1)),
                uhrops.laplacian_reconstruct(uhrops.laplacian_pyramid(x, 1)))


def test_torch_export_dynamic_sizes():
    """Wavelets and pyramids keep H and W symbolic: one program, two sizes."""
    h, w = torch.export.Dim("h", min=1, max=512), torch.export.Dim("w", min=1, max=512)
    module = _Dynamic()
    ep = ux.export(module, (torch.randn(2, 3, 32, 48),),
                   dynamic_shapes=({2: 16 * h, 3: 16 * w},))
    for size in ((32, 48), (64, 16)):
        x = torch.randn(2, 3, *size)
        close(ep.module()(x), module(x))


# ----------------------------------------------------------------------------------------------
# ONNX Runtime
# ----------------------------------------------------------------------------------------------


def _run_onnx(path, names, *args):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})


@pytest.mark.parametrize("name", ["ops", "attention", "tiling"])
def test_onnx_runtime_equals_pytorch(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module, args = _cases()[name]
    names = [f"in{i}" for i in range(len(args))]
    path = ux.to_onnx(module.eval(), args, tmp_path / f"{name}.onnx", input_names=names,
                      metadata={"note": "test"})
    with torch.no_grad():
        ref = module(*args)
    outs = _run_onnx(path, names, *args)
    close([torch.from_numpy(np.asarray(o)) for o in outs], list(ref))
    import onnx

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    assert meta["note"] == "test"


@pytest.mark.parametrize("name,table", [
    pytest.param("ops", True, marks=[pytest.mark.long, LONG_ONLY]),  # 1-2 min on 2 cores
    ("attention", True), ("tiling", True), ("attention", False)])
def test_plain_torch_onnx_export_equals_pytorch(name, table, tmp_path):
    """The standard route, torch.onnx.export(dynamo=True), with the translation table and
    without it: every op of the three modules runs in ONNX Runtime as in PyTorch. (The
    wavelet/pyramid module's export takes minutes, so it runs with UHROPS_LONG=1; by default
    it goes through to_onnx, which uses the same hooked decomposition pass.)"""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module, args = _cases()[name]
    extra = {"custom_translation_table": ux.onnx_translations()} if table else {}
    program = torch.onnx.export(module.eval(), args, dynamo=True, verbose=False, **extra)
    program.save(str(tmp_path / "m.onnx"))
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        ref = module(*args)
    close([torch.from_numpy(np.asarray(o)) for o in outs], list(ref))


def test_onnx_hook_leaves_other_dispatch_alone():
    """Only the ONNX exporter's own table gets the decompositions: the global ATen table
    (which fake tensors consult under dynamic shapes, so torch.compile would) does not."""
    from torch.onnx._internal.exporter import _decomp as onnx_decomp

    assert not [op for op in torch._decomp.decomposition_table if "uhrops" in str(op)]
    table = onnx_decomp.create_onnx_friendly_decomposition_table(set())
    assert set(D) <= set(table)
    mine = {OPS.pyr_down.default}  # an op given its own translation is left to it
    assert OPS.pyr_down.default not in onnx_decomp.create_onnx_friendly_decomposition_table(mine)


@pytest.mark.long
@LONG_ONLY
def test_onnx_dynamic_sizes(tmp_path):
    """Every wavelet/pyramid op in one dynamic ONNX graph (zoo's WSDNet test covers a dynamic
    graph in the default run)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    h, w = torch.export.Dim("h", min=1, max=512), torch.export.Dim("w", min=1, max=512)
    b = torch.export.Dim("b", min=1, max=64)
    module = _Ops()
    path = ux.to_onnx(module, (torch.randn(2, 3, 32, 48),), tmp_path / "dyn.onnx",
                      input_names=["x"], dynamic_shapes=({0: b, 2: 16 * h, 3: 16 * w},))
    for shape in ((2, 3, 32, 48), (1, 3, 64, 16)):
        x = torch.randn(*shape)
        outs = _run_onnx(path, ["x"], x)
        close([torch.from_numpy(np.asarray(o)) for o in outs], list(module(x)))


def test_missing_extra_names_it(monkeypatch):
    real = builtins.__import__

    def fake(name, *a, **k):
        if name in ("onnx", "onnxscript"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ux.MissingExtraError, match=r"uhrops\[onnx\]"):
        ux.to_onnx(_Ops(), (torch.randn(1, 3, 8, 8),), "never.onnx")

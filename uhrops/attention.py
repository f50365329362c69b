"""Local-context correlation attention (FCtL's block) as a general, memory-lean op.

``context_attention(query, key, value)`` is single-head cross attention between two feature
maps: every query position attends to every key position of a (possibly differently sized)
context map, softmax over the keys, with a free ``scale`` (FCtL uses 1, i.e. no 1/sqrt(d)).
Memory is O(N * C) on every path: the Nq x Nk matrix is never stored whole.

Which path runs when (``uhrops.use_backend``):

=========================  ==================================================================
backend / device           forward                                   backward
=========================  ==================================================================
"triton" (CUDA, or CPU     flash-style Triton kernel, online softmax  Triton kernels that
under TRITON_INTERPRET=1)  over key blocks, saves the row lse         recompute P block by
                                                                      block (dQ, dK, dV)
"torch", CPU, Cq == Cv,    ATen's fused CPU flash-attention kernel    query-chunked math
Nq * Nk >= 2**20           (the kernel SDPA picks on the CPU) called  (see below), using
                           directly on [B, 1, N, C] contiguous, so    the saved lse
                           it can never fall back to the O(N^2)
                           MATH backend silently; channels_last maps
                           are its token layout already (no copy)
"torch", otherwise         query-chunked math: rows of queries are    query-chunked math
(Cq != Cv, small maps,     processed so that one chunk's logits hold
                           at most ``_CHUNK_ELEMENTS`` (2**23 = 32 MiB
                           in fp32) elements
=========================  ==================================================================

"auto" = Triton for CUDA tensors (fp16/bf16/fp32) when Triton imports, PyTorch otherwise;
float64 always runs the PyTorch path (there is no float64 kernel).

Why not SDPA's own CPU backward: measured on 2 cores (N = 4096, C = 256, fp32) the fused
CPU backward took ~3x longer than the chunked recomputation below, which spends its time in
large GEMMs. Chunked backward memory is a few chunks of logits (~100 MiB at most) plus
O(N * C) fp32 accumulators.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from uhrops import checks
from uhrops._backend import is_triton, resolve, run_with_fallback
from uhrops._dtypes import accumulation_dtype, float32_or_64

__all__ = ["context_attention", "LocalContextCorrelation"]

_OP = "context_attention"

# Logit elements held per chunk by the chunked PyTorch path (2**23 fp32 = 32 MiB).
_CHUNK_ELEMENTS = 1 << 23
# Use ATen's fused CPU flash kernel for the PyTorch forward on the CPU when it applies and
# Nq * Nk >= _CPU_FUSED_MIN_LOGITS (below that its fixed cost, up to ~20 ms a call measured on 2
# cores, exceeds the whole chunked computation).
_CPU_FUSED = True
_CPU_FUSED_MIN_LOGITS = 1 << 20


def why_no_kernel(query: Tensor) -> str | None:
    """Why the attention kernels cannot take ``query`` (None: they can): they compute in
    float32 (or TF32 / 16-bit products), so float64 runs on the PyTorch path."""
    if query.dtype == torch.float64:
        return "the attention kernels compute in float32; float64 runs on the PyTorch path"
    return None


# --------------------------------------------------------------------------------------------
# PyTorch path
# --------------------------------------------------------------------------------------------
def _chunks(b: int, nq: int, nk: int) -> Iterator[tuple[slice, slice]]:
    """(batch slice, query slice) pairs whose logits hold <= _CHUNK_ELEMENTS elements."""
    budget = max(1, int(_CHUNK_ELEMENTS))
    rows = max(1, min(nq, budget // max(nk, 1)))
    group = max(1, min(b, budget // max(rows * nk, 1))) if rows == nq else 1
    for b0 in range(0, b, group):
        for r0 in range(0, nq, rows):
            yield slice(b0, b0 + group), slice(r0, r0 + rows)


def _use_cpu_fused(query: Tensor, value: Tensor) -> bool:
    return (
        _CPU_FUSED
        and query.device.type == "cpu"
        and query.shape[1] == value.shape[1]
        and query.shape[2] * query.shape[3] * value.shape[2] * value.shape[3]
        >= _CPU_FUSED_MIN_LOGITS
        and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    )


# Channels moved per copy when an NCHW map is turned into tokens. One transposing copy reads
# the channels at a stride of N floats; when that stride is a multiple of 2 KiB (64x64,
# 128x128 maps) the reads alias in the cache and the copy crawls (8.5 ms for N = 16384,
# C = 256); 8 channels at a time write 32 B runs and read whole rows (2.7 ms). For other
# strides (89x89: 0.7 ms against 1.3 ms) and for small maps (per-copy overhead) one copy wins.
_TOKEN_BLOCK = 8
_TOKEN_BLOCK_MIN_BYTES = 1 << 20


def _tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (B, 1, N, C); free for a channels_last map."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(b, 1, h * w, c)
    src = x.flatten(2)  # (B, C, N), a view for any NCHW-contiguous map
    esize = x.element_size()
    if x.numel() * esize <= _TOKEN_BLOCK_MIN_BYTES or (h * w * esize) % 2048 != 0:
        return src.transpose(1, 2).contiguous().unsqueeze(1)
    out = torch.empty((b, h * w, c), dtype=x.dtype, device=x.device)
    for c0 in range(0, c, _TOKEN_BLOCK):
        c1 = min(c0 + _TOKEN_BLOCK, c)
        out[:, :, c0:c1].copy_(src[:, c0:c1].transpose(1, 2))
    return out.unsqueeze(1)


# Token positions moved per copy on the way back ((B, N, C) -> (B, C, N)): each copy reads
# one contiguous ~512 KiB run of tokens and writes C rows of it, which stays in L2; measured
# 3.9 ms against 6.9 ms for one whole transposing copy (N = 16384, C = 256, 2 threads).
_MAP_BLOCK_BYTES = 1 << 19


def _maps_from_tokens(tokens: Tensor, h: int, w: int) -> Tensor:
    """(B, N, C) contiguous -> (B, C, H, W) contiguous."""
    b, n, c = tokens.shape
    out = torch.empty((b, c, n), dtype=tokens.dtype, device=tokens.device)
    step = max(64, _MAP_BLOCK_BYTES // max(1, c * tokens.element_size()))
    for n0 in range(0, n, step):
        out[:, :, n0:n0 + step].copy_(tokens[:, n0:n0 + step].transpose(1, 2))
    return out.view(b, c, h, w)


def _cpu_fused_channels_last(query: Tensor) -> bool:
    """The fused CPU path returns its tokens as a channels_last map (no copy) when the query
    is channels_last, and an NCHW-contiguous one otherwise (the output follows the query)."""
    return query.dim() == 4 and query.shape[1] > 1 and \
        query.is_contiguous(memory_format=torch.channels_last) and not query.is_contiguous()


def _cpu_fused_forward(query: Tensor, key: Tensor, value: Tensor,
                       scale: float) -> tuple[Tensor, Tensor]:
    b, cv, hq, wq = value.shape[0], value.shape[1], query.shape[2], query.shape[3]
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        _tokens(query), _tokens(key), _tokens(value), 0.0, False, attn_mask=None, scale=scale
    )
    if _cpu_fused_channels_last(query):
        out = out[:, 0].view(b, hq, wq, cv).permute(0, 3, 1, 2)  # a channels_last view
    else:
        out = _maps_from_tokens(out[:, 0], hq, wq)
    lse = lse[:, 0].to(float32_or_64(query.dtype)).contiguous()
    return out, lse


def _chunked_forward(query: Tensor, key: Tensor, value: Tensor,
                     scale: float) -> tuple[Tensor, Tensor]:
    b, cq, hq, wq = query.shape
    cv = value.shape[1]
    nq = hq * wq
    nk = key.shape[2] * key.shape[3]
    cdt = accumulation_dtype(query.dtype)
    q = query.flatten(2).to(cdt)  # (B, Cq, Nq)
    k = key.flatten(2).to(cdt)  # (B, Cq, Nk)
    v = value.flatten(2).to(cdt)  # (B, Cv, Nk)
    out = torch.empty((b, cv, nq), dtype=cdt, device=query.device)
    lse = torch.empty((b, nq), dtype=cdt, device=query.device)
    for bs, rs in _chunks(b, nq, nk):
        s = torch.bmm(q[bs, :, rs].transpose(1, 2), k[bs])  # (b, rows, Nk)
        if scale != 1.0:
            s.mul_(scale)
        m = s.amax(dim=-1, keepdim=True)
        s.sub_(m).exp_()
        denom = s.sum(dim=-1, keepdim=True)  # (b, rows, 1)
        o = torch.bmm(v[bs], s.transpose(1, 2))  # (b, Cv, rows)
        out[bs, :, rs] = o.div_(denom.transpose(1, 2))
        lse[bs, rs] = (m + denom.log()).squeeze(-1)
        del s, o
    out = out.to(value.dtype).view(b, cv, hq, wq)
    return out, lse.to(float32_or_64(query.dtype))


def _torch_forward(query: Tensor, key: Tensor, value: Tensor,
                   scale: float) -> tuple[Tensor, Tensor]:
    if _use_cpu_fused(query, value):
        return _cpu_fused_forward(query, key, value, scale)
    return _chunked_forward(query, key, value, scale)


def _torch_backward(grad_out: Tensor, grad_lse: Optional[Tensor], query: Tensor, key: Tensor,
                    value: Tensor, out: Tensor, lse: Tensor,
                    scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Recompute P chunk by chunk from the saved lse; dq, dk, dv without an Nq x Nk buffer."""
    b, cq, hq, wq = query.shape
    cv = value.shape[1]
    nq = hq * wq
    nk = key.shape[2] * key.shape[3]
    cdt = accumulation_dtype(query.dtype)
    q = query.flatten(2).to(cdt)
    k = key.flatten(2).to(cdt)
    v = value.flatten(2).to(cdt)
    do = grad_out.flatten(2).to(cdt)
    lse = lse.to(cdt)
    delta = torch.einsum("bcn,bcn->bn", do, out.flatten(2).to(cdt))  # rowsum(dO * O)
    if grad_lse is not None:
        delta = delta - grad_lse.to(cdt)
    dq = torch.empty((b, cq, nq), dtype=cdt, device=query.device)
    dk = torch.zeros((b, cq, nk), dtype=cdt, device=query.device)
    dv = torch.zeros((b, cv, nk), dtype=cdt, device=query.device)
    for bs, rs in _chunks(b, nq, nk):
        qc = q[bs, :, rs]  # (b, Cq, rows)
        doc = do[bs, :, rs]  # (b, Cv, rows)
        p = torch.bmm(qc.transpose(1, 2), k[bs])  # (b, rows, Nk) logits
        if scale != 1.0:
            p.mul_(scale)
        p.sub_(lse[bs, rs].unsqueeze(-1)).exp_()  # probabilities
        ds = torch.bmm(doc.transpose(1, 2), v[bs])  # dP
        ds.sub_(delta[bs, rs].unsqueeze(-1)).mul_(p)  # dS = P * (dP - delta)
        dv[bs].baddbmm_(doc, p)
        dk[bs].baddbmm_(qc, ds)
        dq[bs, :, rs] = torch.bmm(k[bs], ds.transpose(1, 2))
        del p, ds
    if scale != 1.0:
        dq.mul_(scale)
        dk.mul_(scale)
    return (dq.to(query.dtype).view(query.shape), dk.to(key.dtype).view(key.shape),
            dv.to(value.dtype).view(value.shape))


def _differentiable_backward(grad_out: Tensor, grad_lse: Optional[Tensor], query: Tensor,
                             key: Tensor, value: Tensor,
                             scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of both paths written with differentiable PyTorch ops, for
    ``create_graph=True`` (double backward): autograd records it, so it holds the B x Nq x Nk
    probabilities (the price of a second derivative; the first-order backward never does).
    P is recomputed from q and k rather than read from the saved out/lse, so the graph does not
    loop back through the custom op."""
    cdt = accumulation_dtype(query.dtype)
    q = query.flatten(2).to(cdt)  # (B, Cq, Nq)
    k = key.flatten(2).to(cdt)  # (B, Cq, Nk)
    v = value.flatten(2).to(cdt)  # (B, Cv, Nk)
    do = grad_out.flatten(2).to(cdt)  # (B, Cv, Nq)
    p = torch.softmax(scale * torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, Nq, Nk)
    dv = torch.bmm(do, p)
    dp = torch.bmm(do.transpose(1, 2), v)
    delta = (dp * p).sum(-1, keepdim=True)  # rowsum(dO * O)
    if grad_lse is not None:  # d lse / d logits = P
        delta = delta - grad_lse.to(cdt).unsqueeze(-1)
    ds = p * (dp - delta) * scale
    dq = torch.bmm(k, ds.transpose(1, 2))
    dk = torch.bmm(q, ds)
    return (dq.to(query.dtype).view(query.shape), dk.to(key.dtype).view(key.shape),
            dv.to(value.dtype).view(value.shape))


# --------------------------------------------------------------------------------------------
# custom ops
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("uhrops::context_attention", mutates_args=())
def _attention_op(query: Tensor, key: Tensor, value: Tensor, scale: float,
                  backend: str) -> tuple[Tensor, Tensor]:
    def run(path: str) -> tuple[Tensor, Tensor]:
        if path == "triton":
            from uhrops.kernels import attention as _kernels

            return _kernels.attention_forward(query, key, value, scale)
        return _torch_forward(query, key, value, scale)

    return run_with_fallback("context_attention", backend, run, query)


@_attention_op.register_fake
def _(query, key, value, scale, backend):
    b, _, hq, wq = query.shape
    fmt = torch.channels_last if not is_triton(backend) and _use_cpu_fused(query, value) \
        and _cpu_fused_channels_last(query) else torch.contiguous_format
    out = torch.empty((b, value.shape[1], hq, wq), dtype=value.dtype, device=query.device,
                      memory_format=fmt)
    lse = query.new_empty((b, hq * wq), dtype=float32_or_64(query.dtype))
    return out, lse


@torch.library.custom_op("uhrops::context_attention_backward", mutates_args=())
def _attention_backward_op(grad_out: Tensor, grad_lse: Optional[Tensor], query: Tensor,
                           key: Tensor, value: Tensor, out: Tensor, lse: Tensor, scale: float,
                           backend: str) -> tuple[Tensor, Tensor, Tensor]:
    def run(path: str) -> tuple[Tensor, Tensor, Tensor]:
        if path == "triton":
            from uhrops.kernels import attention as _kernels

            return _kernels.attention_backward(grad_out, grad_lse, query, key, value, out, lse,
                                               scale)
        return _torch_backward(grad_out, grad_lse, query, key, value, out, lse, scale)

    return run_with_fallback("context_attention backward", backend, run, query)


@_attention_backward_op.register_fake
def _(grad_out, grad_lse, query, key, value, out, lse, scale, backend):
    return (query.new_empty(query.shape), key.new_empty(key.shape),
            value.new_empty(value.shape))


def _attention_setup(ctx, inputs, output):
    query, key, value, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse)
    ctx.scale = scale
    ctx.backend = backend


def _attention_bwd(ctx, grad_out, grad_lse):
    query, key, value, out, lse = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    if torch.is_grad_enabled():  # backward(create_graph=True): the backward must be differentiable
        dq, dk, dv = _differentiable_backward(grad_out, grad_lse, query, key, value, ctx.scale)
        return dq, dk, dv, None, None
    dq, dk, dv = _attention_backward_op(grad_out, grad_lse, query, key, value, out, lse,
                                        ctx.scale, ctx.backend)
    return dq, dk, dv, None, None


_attention_op.register_autograd(_attention_bwd, setup_context=_attention_setup)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _check_inputs(query: object, key: object, value: object, scale: object,
                  center: object) -> None:
    q = checks.check_image(query, "query", _OP)
    k = checks.check_image(key, "key", _OP)
    v = checks.check_image(value, "value", _OP)
    checks.check_same_device(_OP, query=q, key=k, value=v)
    checks.check_same_dtype(_OP, query=q, key=k, value=v)
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        raise ValueError(
            f"{_OP}(): batch sizes differ: query has {q.shape[0]}, key {k.shape[0]}, value "
            f"{v.shape[0]}. Fix: give the three maps the same batch size (repeat a shared "
            f"context with key.expand(B, -1, -1, -1))."
        )
    if k.shape[1] != q.shape[1]:
        raise ValueError(
            f"{_OP}(): `key` must have as many channels as `query` (they are dotted); got "
            f"query {tuple(q.shape)} with {q.shape[1]} channels and key {tuple(k.shape)} with "
            f"{k.shape[1]}. Fix: project both to the same width (e.g. 1x1 convolutions)."
        )
    if k.shape[2:] != v.shape[2:]:
        raise ValueError(
            f"{_OP}(): `key` and `value` must cover the same positions; got key spatial size "
            f"{tuple(k.shape[2:])} and value {tuple(v.shape[2:])}. Fix: compute both from the "
            f"same context map."
        )
    if q.shape[1] == 0 or v.shape[1] == 0:
        raise ValueError(
            f"{_OP}(): `query`/`key` and `value` need at least one channel; got query "
            f"{tuple(q.shape)} and value {tuple(v.shape)}."
        )
    if k.shape[2] * k.shape[3] == 0:
        raise ValueError(
            f"{_OP}(): `key` needs at least one position to attend to; got shape "
            f"{tuple(k.shape)}. Fix: pass a non-empty context map."
        )
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{_OP}(): `scale` must be a Python number; got "
                        f"{type(scale).__name__} {scale!r}. Fix: pass e.g. scale=1.0.")
    if not math.isfinite(float(scale)):
        raise ValueError(f"{_OP}(): `scale` must be finite; got {scale!r}.")
    if not isinstance(center, bool):
        raise TypeError(f"{_OP}(): `center` must be a bool; got {type(center).__name__} "
                        f"{center!r}.")


def _center(x: Tensor) -> Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True, dtype=accumulation_dtype(x.dtype))
    return (x - mean).to(x.dtype)


def context_attention(query: Tensor, key: Tensor, value: Tensor, *, scale: float = 1.0,
                      center: bool = False) -> Tensor:
    r"""Attention from every query position to every key position of a context map.

    Convention:
        ``out[b, :, i] = sum_j softmax_j(scale * <q_i, k_j>) v_j`` with ``q_i = query[b, :, i]``
        over the flattened positions (row-major, N = H * W), the softmax taken over the
        **keys** j. query (B, Cq, Hq, Wq), key (B, Cq, Hk, Wk), value (B, Cv, Hk, Wk) ->
        out (B, Cv, Hq, Wq) in the memory format of ``query`` on every path: channels_last
        when ``query`` is channels_last (the fused CPU kernel's token layout, returned without
        a copy; the other paths copy once), NCHW-contiguous otherwise; channels_last inputs
        also skip the layout change on the way in. Nq != Nk and Cq != Cv are allowed; any channel
        count (FCtL uses 512). ``scale=1.0`` is FCtL's unscaled correlation; pass
        ``C ** -0.5`` for transformer-style attention. ``center=True`` first subtracts from
        query and key their per-channel mean over positions (FCtL's DeepGlobe variant, DNL
        "whitening"); the mean is part of the autograd graph, so gradients include it, and
        biases added to q/k cancel. Value is never centred.

        Memory is O(N * C) on every path (never an Nq x Nk matrix); see the module docstring
        for which path runs when. dtypes: float16/bfloat16/float32/float64; logits and
        softmax are computed in float32 for 16-bit inputs (float64 for float64) and the
        result is returned in the input dtype. The Triton kernel multiplies fp32 inputs with
        ``input_precision="ieee"`` (true fp32 products, no TF32: agrees with float64 to ~1e-6
        relative on unit-scale inputs); fp16/bf16 inputs are multiplied in their own dtype with
        fp32 accumulation, and the probabilities are rounded to the input dtype before the
        product with the values (error ~ the dtype's epsilon). Large logits (e.g. 1e5) are
        safe: the softmax subtracts the running row maximum. NaN/Inf in the inputs propagate.
        Non-contiguous and channels_last inputs give the same result.

        Differentiable to any order: the first backward is the O(N * C) recomputation;
        ``backward(create_graph=True)`` (double backward, e.g. gradient penalties) switches to
        a plain differentiable PyTorch formulation that holds the B x Nq x Nk probabilities.

    Args:
        query: (B, Cq, Hq, Wq) floating tensor, e.g. projected local-patch features.
        key: (B, Cq, Hk, Wk), same dtype and device, e.g. projected context features.
        value: (B, Cv, Hk, Wk), same dtype and device.
        scale: multiplies the dot products before the softmax (a finite Python number).
        center: subtract the mean over positions from query and key first.

    Returns:
        (B, Cv, Hq, Wq) tensor in the input dtype.

    Raises:
        TypeError: non-tensor inputs, non-floating or mismatched dtypes, non-number scale.
        ValueError: wrong rank, batch mismatch, query/key channel mismatch, key/value
            spatial mismatch, zero channels, empty key map, devices differ, non-finite scale.
        BackendUnavailableError: ``use_backend("triton")`` where Triton cannot run (no
            CUDA and no interpreter, or float64 inputs).

    Example:
        >>> q = torch.randn(2, 64, 12, 12)
        >>> ctx = torch.randn(2, 64, 9, 9)
        >>> context_attention(q, ctx, ctx).shape
        torch.Size([2, 64, 12, 12])
    """
    _check_inputs(query, key, value, scale, center)
    backend = resolve(_OP, query, key, value, no_kernel=why_no_kernel(query))
    channels_last = _cpu_fused_channels_last(query)
    if center:
        query = _center(query)
        key = _center(key)
    out, _ = _attention_op(query, key, value, float(scale), backend)
    if channels_last:  # the query's layout on every path (a no-op after the fused kernel)
        out = out.contiguous(memory_format=torch.channels_last)
    return out


class LocalContextCorrelation(nn.Module):
    r"""FCtL's locality-aware contextual correlation block: ``gamma * attention(q(x), k(y), v(y))``.

    Convention:
        As in the official FCtL code (``models/FCtL.py``): q = 1x1 conv (with bias) of the
        **local** features ``x``, k = 1x1 conv (with bias) and v = 1x1 conv (**no bias**) of the
        **context** features ``y``; q/k map ``channels -> key_channels`` (default
        ``channels``: FCtL uses 512 -> 512, no reduction), v maps ``channels -> channels``. The
        correlation is :func:`context_attention` with ``scale=1`` (no 1/sqrt(d)), softmax over
        the context positions, and ``center=True`` mean-centres q and k (the DeepGlobe branch).
        The output is ``gamma * out`` with a learnable scalar ``gamma`` (shape (1,))
        initialised to 0, so the caller's residual ``x + block(x, y)`` is the identity at
        initialisation. Weights are initialised like the official code: N(0, 0.01) conv
        weights, zero biases. Parameter names ``conv_query``, ``conv_key``, ``conv_value``,
        ``gamma`` follow the official state dict. ``x`` and ``y`` may differ in spatial size
        (not in batch or channels).

    Args:
        channels: channels of the local and context features (and of the output).
        key_channels: width of q and k (default: ``channels``).
        center: mean-centre q and k over positions before the correlation.

    Example:
        >>> block = LocalContextCorrelation(16)
        >>> x, y = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 6, 6)
        >>> (x + block(x, y)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, channels: int, key_channels: int | None = None,
                 center: bool = False) -> None:
        super().__init__()
        name = "LocalContextCorrelation"
        channels = checks.check_int(channels, "channels", name, minimum=1)
        if key_channels is None:
            key_channels = channels
        key_channels = checks.check_int(key_channels, "key_channels", name, minimum=1)
        if not isinstance(center, bool):
            raise TypeError(f"{name}(): `center` must be a bool; got {center!r}.")
        self.channels = channels
        self.key_channels = key_channels
        self.center = center
        self.conv_query = nn.Conv2d(channels, key_channels, kernel_size=1, bias=True)
        self.conv_key = nn.Conv2d(channels, key_channels, kernel_size=1, bias=True)
        self.conv_value = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: conv weights ~ N(0, 0.01), biases 0, gamma 0."""
        for conv in (self.conv_query, self.conv_key, self.conv_value):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.gamma)

    def forward(self, local: Tensor, context: Tensor) -> Tensor:
        """``gamma * context_attention(q(local), k(context), v(context))``, shaped like
        ``local``."""
        name = "LocalContextCorrelation"
        checks.check_image(local, "local", name)
        checks.check_image(context, "context", name)
        for arg, t in (("local", local), ("context", context)):
            if t.shape[1] != self.channels:
                raise ValueError(
                    f"{name}(): `{arg}` must have {self.channels} channels; got shape "
                    f"{tuple(t.shape)}. Fix: build the block with channels={t.shape[1]} or "
                    f"project the features first."
                )
        q = self.conv_query(local)
        k = self.conv_key(context)
        v = self.conv_value(context)
        out = context_attention(q, k, v, scale=1.0, center=self.center)
        return self.gamma.to(out.dtype) * out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, key_channels={self.key_channels}, center={self.center}"

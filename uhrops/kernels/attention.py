"""Triton kernels for ``context_attention``: flash-style forward and backward.

Layout: every operand is a feature map viewed as (B, C, N) with N = H * W, read through its
strides, so NCHW (token axis contiguous) and channels_last (channel axis contiguous) inputs
are both read in place, without a transpose copy. Outputs are written contiguous
(B, C, N), i.e. NCHW after a reshape.

Forward (``attention_forward``): one program per (query block, batch item, key split,
value-channel chunk). It walks the key axis of its split in blocks; for each key block the
logits S = scale * Q^T K (BLOCK_M x BLOCK_N) are accumulated over query/key channel tiles of
BLOCK_CR, then an online softmax in base 2 (running max m, running sum l) rescales the
(BLOCK_M x BLOCK_DV) accumulator and adds P V^T. The natural-log row log-sum-exp
``lse = ln sum_j exp(S_ij)`` is stored (fp32) for the backward.
  - fp16/bf16 hold the whole value width (up to 512) in one accumulator (64-row blocks up to
    256 channels, 32-row blocks above), so S is formed once per (query block, key block): the
    forward's matmul work is the minimum up to block padding (1.06x at FCtL's 23 x 23 map,
    C = 512).
  - fp32 (TF32 tensor cores under "high"/"medium" matmul precision, exact products on the
    FMA units under "highest") does the same above 64 (TF32) or 128 (exact) channels with
    smaller blocks, since fp32 tiles take twice the registers; below that it splits the value
    channels over chunks of up to 64 (TF32) or 128 (exact), each recomputing S.
  - When the query blocks, batch items and chunks give fewer programs than the GPU has SMs,
    the key axis is cut into ranges (``splits_to_fill``); each range's program stores its
    output normalised by its own sum and its log-sum-exp, and ``_fwd_combine_kernel`` weighs
    them: FCtL's map at batch 1 launches 17 x 9 = 153 programs instead of 17.

Backward (``attention_backward``), deterministic, no atomics:
  1. ``_bwd_delta_kernel``: delta_i = sum_c dO_ci O_ci - dlse_i.
  2. ``_bwd_dkdv_kernel``: programs over key blocks (and channel chunks); each walks the query
     blocks, recomputes P^T = exp(S^T - lse) from the saved lse, and accumulates
     dV += P^T dO^T and dK += dS^T Q^T with dS = P * (dP - delta), dP = dO^T V. Above 64
     channels it runs as two passes, dV (forming S^T) then dK
     (forming S^T and dP^T), each holding one full-width accumulator, so no product is
     formed once per channel chunk.
  3. ``_bwd_dq_kernel``: programs over query blocks; each walks the key blocks and
     accumulates dQ += dS K^T, full width (up to 512) for 16-bit and TF32 inputs.
  The reduction axis of 2 and 3 is split like the forward's when the programs cannot fill
  the SMs; the fp32 partial sums are added by one torch reduction. 16-bit and TF32 matmul
  work at C = 512: 1.21x a FlashAttention-2-style backward (8 C against 7 C per block pair,
  times padding; ``python -m tools.kernels.matmul_work``).
Nothing of size Nq x Nk is ever stored; memory is O(N * C) (the split partials included).

Precision: logits, softmax statistics and all accumulators are fp32. fp32 inputs follow
``torch.get_float32_matmul_precision()``: "highest" (torch's default) uses
``tl.dot(..., input_precision="ieee")`` (true fp32 products, no TF32), so results agree with
an fp32 PyTorch computation to ~1e-6 relative; "high" or "medium" use TF32 tensor cores, as
torch's own fp32 matmuls then do (~1e-3 relative). fp16/bf16 inputs are multiplied in their own
dtype with fp32 accumulation (exact products, tensor cores on GPU); P and dS are rounded to
the input dtype before the P V^T / dS Q products (as FlashAttention does), giving errors of
the order of the input dtype's epsilon. float64 has no kernel (the op falls back to PyTorch).
Under the CPU interpreter (triton 3.9), ``tl.dot`` on bfloat16 tiles returns garbage, so there
bf16 tiles are converted to fp32 right before each dot (``UPCAST``); since bf16 x bf16 products
are exact in fp32 this computes the same thing as the GPU's bf16 MMA with fp32 accumulation.

Tails: every load and store is masked, so N and C need not be multiples of any block; key
columns beyond Nk get logit -inf.

Nothing here imports torch.nn; argument checks are the caller's job (uhrops/attention.py).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from uhrops._backend import recording_launches
from uhrops.kernels._launch import GRID_LIMITS, interpreted, launch

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@triton.jit
def _mm(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b. UPCAST (Triton-interpreter bf16 only): multiply in fp32, which is exact for
    bf16 operands and so equals the GPU's bf16 MMA with fp32 accumulation."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqc, sqn,
    skb, skc, skn,
    svb, svc, svn,
    sob, soc, son,
    NQ, NK, CQ, CV,
    qk_scale,  # scale * log2(e)
    KEYS_PER_SPLIT, N_VCHUNKS,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_CR: tl.constexpr, BLOCK_DV: tl.constexpr,
    SPLIT: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_z = tl.program_id(2)
    pid_s = pid_z // N_VCHUNKS  # key split
    pid_v = pid_z - pid_s * N_VCHUNKS  # value-channel chunk

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    offs_c = tl.arange(0, BLOCK_CR)
    offs_nb = tl.arange(0, BLOCK_N)
    mask_m = offs_m < NQ
    mask_v = offs_v < CV

    q_base = Q + pid_b * sqb
    k_base = K + pid_b * skb
    v_base = V + pid_b * svb

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    n_lo = pid_s * KEYS_PER_SPLIT
    n_hi = tl.minimum(NK, n_lo + KEYS_PER_SPLIT)
    for n0 in range(n_lo, n_hi, BLOCK_N):
        offs_n = n0 + offs_nb
        mask_n = offs_n < n_hi
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for c0 in range(0, CQ, BLOCK_CR):
            cc = c0 + offs_c
            mask_c = cc < CQ
            q = tl.load(q_base + offs_m[:, None] * sqn + cc[None, :] * sqc,
                        mask=mask_m[:, None] & mask_c[None, :], other=0.0)
            k = tl.load(k_base + cc[:, None] * skc + offs_n[None, :] * skn,
                        mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            s = _mm(q, k, s, PREC, UPCAST)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_v[None, :] * svc,
                    mask=mask_n[:, None] & mask_v[None, :], other=0.0)
        acc = acc * alpha[:, None]
        acc = _mm(p.to(v.dtype), v, acc, PREC, UPCAST)
        m_i = m_new

    out = acc / l_i[:, None]
    lse2 = m_i + tl.log2(l_i)  # base 2
    if SPLIT:
        # Partial result of this key split, normalised by its own sum, with its base-2
        # log-sum-exp; _fwd_combine_kernel weighs the splits. O is (splits, B, NQ, CV) fp32
        # here and LSE (splits, B, NQ).
        o_base = O + (pid_s * tl.num_programs(1) + pid_b) * NQ * CV
        tl.store(o_base + offs_m[:, None] * CV + offs_v[None, :], out,
                 mask=mask_m[:, None] & mask_v[None, :])
        if pid_v == 0:
            tl.store(LSE + (pid_s * tl.num_programs(1) + pid_b) * NQ + offs_m, lse2,
                     mask=mask_m)
    else:
        tl.store(O + pid_b * sob + offs_m[:, None] * son + offs_v[None, :] * soc,
                 out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_v[None, :])
        if pid_v == 0:
            tl.store(LSE + pid_b * NQ + offs_m, lse2 * 0.6931471805599453, mask=mask_m)


@triton.jit
def _fwd_combine_kernel(
    OP, LP, O, LSE,
    sob, soc, son,
    NQ, CV, SPLITS,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Weighs the key splits' partial outputs: lse = log2 sum_s 2^lse_s and
    O = sum_s 2^(lse_s - lse) O_s (the softmax over all keys, exactly)."""
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    nb = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < NQ
    mask = mask_m[:, None] & (offs_c < CV)[None, :]

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for sp in range(0, SPLITS):
        m = tl.maximum(m, tl.load(LP + (sp * nb + pid_b) * NQ + offs_m, mask=mask_m,
                                  other=0.0))
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_C], tl.float32)
    for sp in range(0, SPLITS):
        w = tl.exp2(tl.load(LP + (sp * nb + pid_b) * NQ + offs_m, mask=mask_m, other=0.0) - m)
        part = tl.load(OP + (sp * nb + pid_b) * NQ * CV + offs_m[:, None] * CV
                       + offs_c[None, :], mask=mask, other=0.0)
        total += w
        acc += w[:, None] * part
    tl.store(O + pid_b * sob + offs_m[:, None] * son + offs_c[None, :] * soc,
             (acc / total[:, None]).to(O.dtype.element_ty), mask=mask)
    if pid_c == 0:
        tl.store(LSE + pid_b * NQ + offs_m, (m + tl.log2(total)) * 0.6931471805599453,
                 mask=mask_m)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------
@triton.jit
def _bwd_delta_kernel(
    O, DO, DLSE, DELTA,
    sob, soc, son,
    sdb, sdc, sdn,
    NQ, CV,
    HAS_DLSE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    mask_m = offs_m < NQ
    acc = tl.zeros([BLOCK_M], tl.float32)
    for c0 in range(0, CV, BLOCK_C):
        cc = c0 + offs_c
        mask = mask_m[:, None] & (cc < CV)[None, :]
        o = tl.load(O + pid_b * sob + offs_m[:, None] * son + cc[None, :] * soc,
                    mask=mask, other=0.0).to(tl.float32)
        do = tl.load(DO + pid_b * sdb + offs_m[:, None] * sdn + cc[None, :] * sdc,
                     mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(o * do, 1)
    if HAS_DLSE:
        acc -= tl.load(DLSE + pid_b * NQ + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_b * NQ + offs_m, acc, mask=mask_m)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    sqb, sqc, sqn,
    skb, skc, skn,
    svb, svc, svn,
    sdb, sdc, sdn,
    sdkb, sdkc, sdkn,
    sdvb, sdvc, sdvn,
    NQ, NK, CQ, CV,
    qk_scale, scale,
    ROWS_PER_SPLIT, N_CHUNKS, s_split,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_CR: tl.constexpr, BLOCK_CO: tl.constexpr,
    DO_DK: tl.constexpr, DO_DV: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_z = tl.program_id(2)
    pid_s = pid_z // N_CHUNKS  # query split: its partial dK/dV go to slice pid_s of DK/DV
    pid_c = pid_z - pid_s * N_CHUNKS

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_co = pid_c * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_cr = tl.arange(0, BLOCK_CR)
    offs_mb = tl.arange(0, BLOCK_M)
    mask_n = offs_n < NK
    mask_k_out = offs_co < CQ
    mask_v_out = offs_co < CV

    q_base = Q + pid_b * sqb
    k_base = K + pid_b * skb
    v_base = V + pid_b * svb
    do_base = DO + pid_b * sdb

    dk_acc = tl.zeros([BLOCK_N, BLOCK_CO], tl.float32)
    dv_acc = tl.zeros([BLOCK_N, BLOCK_CO], tl.float32)

    m_lo = pid_s * ROWS_PER_SPLIT
    for m0 in range(m_lo, tl.minimum(NQ, m_lo + ROWS_PER_SPLIT), BLOCK_M):
        offs_m = m0 + offs_mb
        mask_m = offs_m < NQ
        # S^T = K^T Q  (BLOCK_N x BLOCK_M), reduced over the query/key channels
        st = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        for c0 in range(0, CQ, BLOCK_CR):
            cc = c0 + offs_cr
            mask_c = cc < CQ
            k = tl.load(k_base + offs_n[:, None] * skn + cc[None, :] * skc,
                        mask=mask_n[:, None] & mask_c[None, :], other=0.0)
            q = tl.load(q_base + cc[:, None] * sqc + offs_m[None, :] * sqn,
                        mask=mask_c[:, None] & mask_m[None, :], other=0.0)
            st = _mm(k, q, st, PREC, UPCAST)
        lse2 = tl.load(LSE + pid_b * NQ + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
        pt = tl.exp2(st * qk_scale - lse2[None, :])
        pt = tl.where(mask_m[None, :] & mask_n[:, None], pt, 0.0)
        if DO_DV:
            # dV += P^T dO^T  (BLOCK_N x BLOCK_CO)
            do_t = tl.load(do_base + offs_m[:, None] * sdn + offs_co[None, :] * sdc,
                           mask=mask_m[:, None] & mask_v_out[None, :], other=0.0)
            dv_acc = _mm(pt.to(do_t.dtype), do_t, dv_acc, PREC, UPCAST)
        if DO_DK:
            # dP^T = V^T dO  (BLOCK_N x BLOCK_M), reduced over the value channels
            dpt = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
            for c0 in range(0, CV, BLOCK_CR):
                cc = c0 + offs_cr
                mask_c = cc < CV
                v = tl.load(v_base + offs_n[:, None] * svn + cc[None, :] * svc,
                            mask=mask_n[:, None] & mask_c[None, :], other=0.0)
                do = tl.load(do_base + cc[:, None] * sdc + offs_m[None, :] * sdn,
                             mask=mask_c[:, None] & mask_m[None, :], other=0.0)
                dpt = _mm(v, do, dpt, PREC, UPCAST)
            delta = tl.load(DELTA + pid_b * NQ + offs_m, mask=mask_m, other=0.0)
            dst = pt * (dpt - delta[None, :])
            # dK += dS^T Q^T  (BLOCK_N x BLOCK_CO)
            q_t = tl.load(q_base + offs_m[:, None] * sqn + offs_co[None, :] * sqc,
                          mask=mask_m[:, None] & mask_k_out[None, :], other=0.0)
            dk_acc = _mm(dst.to(q_t.dtype), q_t, dk_acc, PREC, UPCAST)

    if DO_DK:
        dk_acc = dk_acc * scale
        tl.store(DK + pid_s.to(tl.int64) * s_split + pid_b * sdkb + offs_n[:, None] * sdkn
                 + offs_co[None, :] * sdkc,
                 dk_acc.to(DK.dtype.element_ty), mask=mask_n[:, None] & mask_k_out[None, :])
    if DO_DV:
        tl.store(DV + pid_s.to(tl.int64) * s_split + pid_b * sdvb + offs_n[:, None] * sdvn
                 + offs_co[None, :] * sdvc,
                 dv_acc.to(DV.dtype.element_ty), mask=mask_n[:, None] & mask_v_out[None, :])


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sqb, sqc, sqn,
    skb, skc, skn,
    svb, svc, svn,
    sdb, sdc, sdn,
    sdqb, sdqc, sdqn,
    NQ, NK, CQ, CV,
    qk_scale, scale,
    KEYS_PER_SPLIT, N_CHUNKS, s_split,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_CR: tl.constexpr, BLOCK_CO: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_z = tl.program_id(2)
    pid_s = pid_z // N_CHUNKS  # key split: its partial dQ goes to slice pid_s of DQ
    pid_c = pid_z - pid_s * N_CHUNKS

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_co = pid_c * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_cr = tl.arange(0, BLOCK_CR)
    offs_nb = tl.arange(0, BLOCK_N)
    mask_m = offs_m < NQ
    mask_out = offs_co < CQ

    q_base = Q + pid_b * sqb
    k_base = K + pid_b * skb
    v_base = V + pid_b * svb
    do_base = DO + pid_b * sdb

    lse2 = tl.load(LSE + pid_b * NQ + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + pid_b * NQ + offs_m, mask=mask_m, other=0.0)
    dq_acc = tl.zeros([BLOCK_M, BLOCK_CO], tl.float32)

    n_lo = pid_s * KEYS_PER_SPLIT
    for n0 in range(n_lo, tl.minimum(NK, n_lo + KEYS_PER_SPLIT), BLOCK_N):
        offs_n = n0 + offs_nb
        mask_n = offs_n < NK
        s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for c0 in range(0, CQ, BLOCK_CR):
            cc = c0 + offs_cr
            mask_c = cc < CQ
            q = tl.load(q_base + offs_m[:, None] * sqn + cc[None, :] * sqc,
                        mask=mask_m[:, None] & mask_c[None, :], other=0.0)
            k = tl.load(k_base + cc[:, None] * skc + offs_n[None, :] * skn,
                        mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            s = _mm(q, k, s, PREC, UPCAST)
        p = tl.exp2(s * qk_scale - lse2[:, None])
        p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for c0 in range(0, CV, BLOCK_CR):
            cc = c0 + offs_cr
            mask_c = cc < CV
            do = tl.load(do_base + offs_m[:, None] * sdn + cc[None, :] * sdc,
                         mask=mask_m[:, None] & mask_c[None, :], other=0.0)
            v = tl.load(v_base + cc[:, None] * svc + offs_n[None, :] * svn,
                        mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            dp = _mm(do, v, dp, PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        k_t = tl.load(k_base + offs_n[:, None] * skn + offs_co[None, :] * skc,
                      mask=mask_n[:, None] & mask_out[None, :], other=0.0)
        dq_acc = _mm(ds.to(k_t.dtype), k_t, dq_acc, PREC, UPCAST)

    dq_acc = dq_acc * scale
    tl.store(DQ + pid_s.to(tl.int64) * s_split + pid_b * sdqb + offs_m[:, None] * sdqn
             + offs_co[None, :] * sdqc,
             dq_acc.to(DQ.dtype.element_ty), mask=mask_m[:, None] & mask_out[None, :])


# --------------------------------------------------------------------------------------------
# launch helpers
# --------------------------------------------------------------------------------------------
def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision. float32 follows ``torch.get_float32_matmul_precision()``
    as torch's own matmuls do: "highest" (torch's default) keeps exact fp32 products (FMA
    units); "high" or "medium" allow TF32 tensor cores. For 16-bit inputs it does not apply."""
    if dtype != torch.float32:
        return "tf32"
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _upcast(t: torch.Tensor) -> bool:
    # triton 3.9's interpreter computes tl.dot on bfloat16 operands wrongly (values ~1e10);
    # under the interpreter bf16 tiles are converted to fp32 before each dot instead.
    return t.dtype == torch.bfloat16 and interpreted(t)


def block_config(nq: int, nk: int, cq: int, cv: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Block sizes and warps for the kernels (powers of two, >= 16 so ``tl.dot`` compiles).

    On CUDA (chosen with ``python -m tools.kernels.compile_check``, which compiles every
    specialisation for sm_80/90/100 and reads ptxas' register and spill figures; not yet
    timed on hardware):
      - fp16/bf16, by the widest channel count: up to 64, everything in 64x64 blocks with
        one dK/dV pass; 65-256, 64x64 blocks with the whole value width in the forward and
        separate dV and dK passes, dQ in 64x32 blocks (wgmma on sm_90 in both tiers); 257-512, 32-row blocks
        (mma.sync: 64-row blocks with 512-wide accumulators spilled 150-1600 bytes), a dV pass
        stepping 16 queries per 32-key block, a dK pass 32x32 and dQ 32x32, full width. 8
        warps (4 for the 32x32 dK pass up to 256 query channels). No spills on sm_90.
      - fp32 with exact products (``torch.get_float32_matmul_precision() == "highest"``,
        torch's default; "ieee" products run on the FMA units, which need more registers):
        above 128 channels the full-width design with 32x16 forward blocks, a 32x16 dV pass,
        a 32x16 dK pass and 32x16 dQ blocks in channel chunks of up to 256; up to 128 channels
        forward 64x64 blocks, 16-wide reduction tiles, value chunks up to 128, 8 warps;
        backward 64x32 blocks, 16-wide tiles, 32- to 64-wide output chunks, 8 warps. ptxas
        holds these to 128 registers and spills up to 32 bytes at some channel counts (the
        compile check's documented bound; no configuration tried was spill-free everywhere).
      - fp32 with "high"/"medium" precision (TF32 tensor cores): above 64 channels the
        16-bit design with smaller blocks (fp32 tiles take twice the registers): forward
        32x16 blocks with the whole value width, dV pass 16x32, dK pass 16x32 (4 warps up to
        256 channels), dQ 16x16, full width; up to 64 channels 64x64 blocks with value chunks
        up to 64 and 32-wide backward chunks. No spills on sm_90.
    Under the CPU interpreter 32-token blocks keep the test shapes multi-block and wider
    channel tiles keep the number of interpreted programs small.
    """
    if device.type != "cuda" and not recording_launches():
        return {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_CR": _pow2(min(cq, cv), 16, 128),
                "BLOCK_DV": _pow2(cv, 16, 128), "BLOCK_CO": _pow2(max(cq, cv), 16, 256),
                "WARPS_FWD": 4, "WARPS_BWD": 4, "BLOCK_M_BWD": 32, "BLOCK_N_BWD": 32,
                "BLOCK_CR_BWD": _pow2(min(cq, cv), 16, 128)}
    if dtype == torch.float32 and _precision(dtype) == "ieee" and max(cq, cv) > 128:
        # exact products on the FMA units, full width with small blocks (no spills on sm_90)
        # dV in 32x16 blocks and dQ in channel chunks of at most 256: with dense (training)
        # gradients a 32x32 dV pass spilled 96 bytes and a 512-wide dQ 44 at C = 512
        return {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_CR": 16, "BLOCK_DV": _pow2(cv, 16, 512),
                "WARPS_FWD": 8, "BLOCK_M_BWD": 32, "BLOCK_N_BWD": 16, "BLOCK_CR_BWD": 16,
                "BLOCK_CO": _pow2(max(cq, cv), 16, 512), "SEPARATE_DKDV": True,
                "BLOCK_M_DV": 32, "BLOCK_N_DV": 16, "BLOCK_CR_DV": 16,
                "BLOCK_M_DQ": 32, "BLOCK_N_DQ": 16, "BLOCK_CR_DQ": 16,
                "BLOCK_CO_DQ": _pow2(cq, 16, 256), "WARPS_DQ": 8, "WARPS_DV": 8,
                "WARPS_BWD": 8}
    if dtype == torch.float32 and _precision(dtype) == "ieee":
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CR": 16, "BLOCK_DV": _pow2(cv, 16, 128),
                "WARPS_FWD": 8, "BLOCK_M_BWD": 64, "BLOCK_N_BWD": 32, "BLOCK_CR_BWD": 16,
                "BLOCK_CO": _pow2(max(cq, cv), 32, 64), "WARPS_BWD": 8}
    if dtype == torch.float32:  # TF32 tensor cores: fp32 tiles take twice the registers
        if max(cq, cv) <= 64:
            return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CR": _pow2(cq, 16, 32),
                    "BLOCK_DV": _pow2(cv, 16, 64), "WARPS_FWD": 8,
                    "BLOCK_M_BWD": 64, "BLOCK_N_BWD": 64, "BLOCK_CR_BWD": 16,
                    "BLOCK_CO": _pow2(max(cq, cv), 16, 32), "WARPS_BWD": 8}
        return {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_CR": _pow2(cq, 16, 32),
                "BLOCK_DV": _pow2(cv, 16, 512), "WARPS_FWD": 8,
                "BLOCK_M_BWD": 16, "BLOCK_N_BWD": 32, "BLOCK_CR_BWD": 16,
                "BLOCK_CO": _pow2(max(cq, cv), 16, 512), "SEPARATE_DKDV": True,
                "BLOCK_M_DV": 16, "BLOCK_N_DV": 32, "BLOCK_CR_DV": _pow2(cq, 16, 32),
                "BLOCK_M_DQ": 16, "BLOCK_N_DQ": 16, "BLOCK_CR_DQ": 16,
                "BLOCK_CO_DQ": _pow2(cq, 16, 512), "WARPS_DQ": 8, "WARPS_DV": 8,
                "WARPS_BWD": 4 if cq <= 256 else 8}
    width = max(cq, cv)
    if width <= 64:  # one dK/dV pass, everything 64 x 64 (wgmma on sm_90)
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CR": _pow2(cq, 16, 64),
                "BLOCK_DV": _pow2(cv, 16, 64), "WARPS_FWD": 8,
                "BLOCK_M_BWD": 64, "BLOCK_N_BWD": 64, "BLOCK_CR_BWD": _pow2(min(cq, cv), 16, 32),
                "BLOCK_CO": _pow2(width, 16, 64), "WARPS_BWD": 8}
    if width <= 256:  # separate dV and dK passes, 64 x 64 blocks (wgmma on sm_90)
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CR": _pow2(cq, 16, 64),
                "BLOCK_DV": _pow2(cv, 16, 256), "WARPS_FWD": 8,
                "BLOCK_M_BWD": 64, "BLOCK_N_BWD": 64, "BLOCK_CR_BWD": _pow2(min(cq, cv), 16, 32),
                "BLOCK_CO": _pow2(width, 16, 256), "SEPARATE_DKDV": True,
                "BLOCK_M_DV": 64, "BLOCK_N_DV": 64, "BLOCK_CR_DV": _pow2(cq, 16, 64),
                # 32-key dQ blocks: 64 spilled 72 bytes at C = 256 with a dense gradient
                "BLOCK_M_DQ": 64, "BLOCK_N_DQ": 32, "BLOCK_CR_DQ": _pow2(min(cq, cv), 16, 64),
                "BLOCK_CO_DQ": _pow2(cq, 16, 256), "WARPS_DQ": 8, "WARPS_DV": 8,
                "WARPS_BWD": 8}
    # up to 512: 32-row blocks (mma.sync), since 64-row ones spill with 512-wide accumulators
    return {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_CR": _pow2(cq, 16, 64),
            "BLOCK_DV": _pow2(cv, 16, 512), "WARPS_FWD": 8,
            "BLOCK_M_BWD": 32, "BLOCK_N_BWD": 32, "BLOCK_CR_BWD": _pow2(min(cq, cv), 16, 64),
            "BLOCK_CO": _pow2(width, 16, 512), "SEPARATE_DKDV": True,
            "BLOCK_M_DV": 16, "BLOCK_N_DV": 32, "BLOCK_CR_DV": _pow2(cq, 16, 64),
            "BLOCK_M_DQ": 32, "BLOCK_N_DQ": 32, "BLOCK_CR_DQ": _pow2(min(cq, cv), 16, 64),
            "BLOCK_CO_DQ": _pow2(cq, 16, 512), "WARPS_DQ": 8, "WARPS_DV": 8,
            "WARPS_BWD": 4 if cq <= 256 else 8}


# Tests may replace this with a function returning other (power-of-two) blocks.
CONFIG_OVERRIDE = None


def _config(nq: int, nk: int, cq: int, cv: int, device: torch.device,
            dtype: torch.dtype) -> dict[str, int]:
    cfg = block_config(nq, nk, cq, cv, device, dtype)
    if CONFIG_OVERRIDE is not None:
        cfg.update(CONFIG_OVERRIDE(nq, nk, cq, cv, device))
    return cfg


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, N) view (no copy for NCHW or channels_last); copies otherwise."""
    b, c, h, w = x.shape
    try:
        return x.view(b, c, h * w)
    except RuntimeError:
        return x.reshape(b, c, h * w)


def attention_forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash-style forward. Maps (B, C, H, W) in, returns (out (B, Cv, Hq, Wq), lse (B, Nq))."""
    b, cq, hq, wq = query.shape
    cv, hk, wk = value.shape[1], value.shape[2], value.shape[3]
    nq, nk = hq * wq, hk * wk
    q, k, v = _flat(query), _flat(key), _flat(value)
    out = torch.empty((b, cv, nq), dtype=value.dtype, device=value.device)
    lse = torch.empty((b, nq), dtype=torch.float32, device=query.device)
    if out.numel() == 0:  # empty batch or query map (the caller rejects empty keys/channels)
        return out.view(b, cv, hq, wq), lse
    cfg = _config(nq, nk, cq, cv, query.device, query.dtype)
    for b0, b1 in _batch_chunks(b):
        _launch_fwd(q[b0:b1], k[b0:b1], v[b0:b1], out[b0:b1], lse[b0:b1], nq, nk, cq, cv,
                    scale, cfg, query)
    return out.view(b, cv, hq, wq), lse


def _batch_chunks(b: int) -> list[tuple[int, int]]:
    """Batch ranges of at most 65535 items: the batch is grid axis 1, which CUDA caps there.
    Slicing the batch keeps every stride, so each range is launched on views."""
    return [(b0, min(b, b0 + GRID_LIMITS[1])) for b0 in range(0, b, GRID_LIMITS[1])]


# What the Triton interpreter pretends to fill: enough for the tests' multi-block maps to take
# the split paths, few enough that they do not multiply the interpreted programs.
INTERPRETER_SMS = 8


def sm_count(t: torch.Tensor) -> int:
    """Streaming multiprocessors the launch should fill: the device's own count on CUDA; an
    H100/H200's 132 when the launch is only planned (the compile check), so that the split
    decisions recorded there are the ones an H100 would see; ``INTERPRETER_SMS`` otherwise."""
    if t.device.type == "cuda":
        return _cuda_sms(t.device.index if t.device.index is not None
                         else torch.cuda.current_device())
    return 132 if recording_launches() else INTERPRETER_SMS


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def splits_to_fill(programs: int, length: int, block: int, sms: int) -> tuple[int, int]:
    """(splits, items per split) of a reduction axis of ``length`` items in blocks of
    ``block``, so that ``programs * splits`` fills ``sms`` streaming multiprocessors.

    Used for the forward's key axis and the backward's query (dK/dV) and key (dQ) axes: when
    the blocks of the output axis, batch items and channel chunks give fewer programs than
    SMs (FCtL's 23 x 23 map at batch 1: 17 blocks of 32 on 132 SMs), the reduction is cut
    into whole-block ranges whose partial results are combined afterwards. Each range holds
    ``blocks // needed`` blocks, so there are at least ``needed`` ranges (or one per block)."""
    nblocks = triton.cdiv(length, block)
    if programs >= sms or nblocks == 1:
        return 1, nblocks * block
    per = max(1, nblocks // triton.cdiv(sms, programs))
    return triton.cdiv(nblocks, per), per * block


def key_splits(nq: int, nk: int, b: int, n_vchunks: int, cfg: dict[str, int],
               sms: int) -> tuple[int, int]:
    """(splits, keys per split) of the forward: each split returns a partial softmax (its
    output normalised by its own sum, and its log-sum-exp), which ``_fwd_combine_kernel``
    weighs."""
    programs = triton.cdiv(nq, cfg["BLOCK_M"]) * b * n_vchunks
    return splits_to_fill(programs, nk, cfg["BLOCK_N"], sms)


def _launch_fwd(q, k, v, out, lse, nq, nk, cq, cv, scale, cfg, query) -> None:
    b = q.shape[0]
    qb = triton.cdiv(nq, cfg["BLOCK_M"])
    nv = triton.cdiv(cv, cfg["BLOCK_DV"])
    splits, per = key_splits(nq, nk, b, nv, cfg, sm_count(query))
    split = splits > 1
    if split:
        o_dst = torch.empty((splits, b, nq, cv), dtype=torch.float32, device=out.device)
        l_dst = torch.empty((splits, b, nq), dtype=torch.float32, device=out.device)
    else:
        o_dst, l_dst = out, lse
    launch(_fwd_kernel, (qb, b, splits * nv),
           q, k, v, o_dst, l_dst,
           q.stride(0), q.stride(1), q.stride(2),
           k.stride(0), k.stride(1), k.stride(2),
           v.stride(0), v.stride(1), v.stride(2),
           out.stride(0), out.stride(1), out.stride(2),
           nq, nk, cq, cv,
           float(scale) * _LOG2E,
           per, nv,
           BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
           BLOCK_CR=cfg["BLOCK_CR"], BLOCK_DV=cfg["BLOCK_DV"],
           SPLIT=split, PREC=_precision(query.dtype), UPCAST=_upcast(query),
           num_warps=cfg["WARPS_FWD"],
    )
    if split:
        bm, bc = 32, min(128, _pow2(cv, 16, 128))
        launch(_fwd_combine_kernel, (triton.cdiv(nq, bm), b, triton.cdiv(cv, bc)),
               o_dst, l_dst, out, lse,
               out.stride(0), out.stride(1), out.stride(2),
               nq, cv, splits,
               BLOCK_M=bm, BLOCK_C=bc, num_warps=4,
        )


def attention_backward(grad_out: torch.Tensor, grad_lse: torch.Tensor | None,
                       query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       out: torch.Tensor, lse: torch.Tensor,
                       scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flash-style backward; returns contiguous (dq, dk, dv) shaped like the inputs."""
    b, cq, hq, wq = query.shape
    cv, hk, wk = value.shape[1], value.shape[2], value.shape[3]
    nq, nk = hq * wq, hk * wk
    dev = query.device
    dq = torch.empty(query.shape, dtype=query.dtype, device=dev)
    dk = torch.empty(key.shape, dtype=key.dtype, device=dev)
    dv = torch.empty(value.shape, dtype=value.dtype, device=dev)
    if b == 0 or nq == 0 or cv == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    q, k, v = _flat(query), _flat(key), _flat(value)
    do, o = _flat(grad_out), _flat(out)
    dq3, dk3, dv3 = _flat(dq), _flat(dk), _flat(dv)
    lse = lse.to(torch.float32).contiguous()
    cfg = _config(nq, nk, cq, cv, dev, query.dtype)
    prec = _precision(query.dtype)

    delta = torch.empty((b, nq), dtype=torch.float32, device=dev)
    has_dlse = grad_lse is not None
    dlse = grad_lse.contiguous() if has_dlse else delta
    for b0, b1 in _batch_chunks(b):
        part = slice(b0, b1)
        _launch_bwd(q[part], k[part], v[part], do[part], o[part], lse[part], dlse[part],
                    delta[part], dq3[part], dk3[part], dv3[part], has_dlse, nq, nk, cq, cv,
                    scale, cfg, prec, query)
    return dq, dk, dv


def _launch_bwd(q, k, v, do, o, lse, dlse, delta, dq3, dk3, dv3, has_dlse, nq, nk, cq, cv,
                scale, cfg, prec, query) -> None:
    b = q.shape[0]
    sms = sm_count(query)
    bm, bn = cfg["BLOCK_M_BWD"], cfg["BLOCK_N_BWD"]
    launch(_bwd_delta_kernel, (triton.cdiv(nq, bm), b),
           o, do, dlse, delta,
           o.stride(0), o.stride(1), o.stride(2),
           do.stride(0), do.stride(1), do.stride(2),
           nq, cv,
           HAS_DLSE=has_dlse, BLOCK_M=bm, BLOCK_C=cfg["BLOCK_CR_BWD"],
    )
    strides = (q.stride(0), q.stride(1), q.stride(2),
               k.stride(0), k.stride(1), k.stride(2),
               v.stride(0), v.stride(1), v.stride(2),
               do.stride(0), do.stride(1), do.stride(2))
    scales = (float(scale) * _LOG2E, float(scale))
    base = dict(PREC=prec, UPCAST=_upcast(query))

    # dK and dV: programs over key blocks, reducing over the queries
    if cfg.get("SEPARATE_DKDV"):
        # Two passes, each holding one full-width accumulator: the dV pass forms S^T, the dK
        # pass S^T and dP^T, each once per (key, query) block pair.
        passes = [(False, True, cv, cfg.get("BLOCK_M_DV", bm), cfg.get("BLOCK_N_DV", bn),
                   cfg.get("BLOCK_CR_DV", cfg["BLOCK_CR_BWD"]), cfg.get("WARPS_DV", 8)),
                  (True, False, cq, bm, bn, cfg["BLOCK_CR_BWD"], cfg["WARPS_BWD"])]
    else:
        passes = [(True, True, max(cq, cv), bm, bn, cfg["BLOCK_CR_BWD"], cfg["WARPS_BWD"])]
    for do_dk, do_dv, width, pbm, pbn, pcr, warps in passes:
        block_co = _pow2(width, 16, cfg["BLOCK_CO"])
        chunks = triton.cdiv(width, block_co)
        splits, rows = splits_to_fill(triton.cdiv(nk, pbn) * b * chunks, nq, pbm, sms)
        dk_dst, dv_dst, s_split = dk3, dv3, 0
        if splits > 1:  # fp32 partial sums per query range, added below
            shape = (splits, b, width, nk)
            dk_dst = torch.empty(shape, dtype=torch.float32, device=q.device) if do_dk else dk3
            dv_dst = torch.empty(shape, dtype=torch.float32, device=q.device) if do_dv else dv3
            s_split = width * nk * b
        launch(_bwd_dkdv_kernel, (triton.cdiv(nk, pbn), b, splits * chunks),
               q, k, v, do, lse, delta, dk_dst, dv_dst, *strides,
               dk_dst.stride(-3), dk_dst.stride(-2), dk_dst.stride(-1),
               dv_dst.stride(-3), dv_dst.stride(-2), dv_dst.stride(-1),
               nq, nk, cq, cv, *scales, rows, chunks, s_split,
               BLOCK_M=pbm, BLOCK_N=pbn, BLOCK_CR=pcr, BLOCK_CO=block_co,
               DO_DK=do_dk, DO_DV=do_dv, num_warps=warps, **base)
        if splits > 1:
            if do_dk:
                dk3.copy_(dk_dst[:, :, :cq].sum(dim=0))
            if do_dv:
                dv3.copy_(dv_dst[:, :, :cv].sum(dim=0))

    # dQ: programs over query blocks, reducing over the keys
    bm_dq, bn_dq = cfg.get("BLOCK_M_DQ", bm), cfg.get("BLOCK_N_DQ", bn)
    block_co = cfg.get("BLOCK_CO_DQ", cfg["BLOCK_CO"])
    chunks = triton.cdiv(cq, block_co)
    splits, keys = splits_to_fill(triton.cdiv(nq, bm_dq) * b * chunks, nk, bn_dq, sms)
    dq_dst, s_split = dq3, 0
    if splits > 1:
        dq_dst = torch.empty((splits, b, cq, nq), dtype=torch.float32, device=q.device)
        s_split = dq_dst.stride(0)
    launch(_bwd_dq_kernel, (triton.cdiv(nq, bm_dq), b, splits * chunks),
           q, k, v, do, lse, delta, dq_dst, *strides,
           dq_dst.stride(-3), dq_dst.stride(-2), dq_dst.stride(-1),
           nq, nk, cq, cv, *scales, keys, chunks, s_split,
           BLOCK_M=bm_dq, BLOCK_N=bn_dq, BLOCK_CR=cfg.get("BLOCK_CR_DQ", cfg["BLOCK_CR_BWD"]),
           BLOCK_CO=block_co, num_warps=cfg.get("WARPS_DQ", cfg["WARPS_BWD"]), **base)
    if splits > 1:
        dq3.copy_(dq_dst.sum(dim=0))

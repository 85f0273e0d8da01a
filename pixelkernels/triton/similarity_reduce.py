"""similarity_reduce, the Triton variant (csrc/common/similarity_reduce.h has the formulas).

A program owns BLOCK_N query rows of one image and walks the image's refs in tiles of BLOCK_K:
the score tile is ``tl.dot(q, rᵀ)`` over D in BLOCK_D chunks (tensor cores for float16/bfloat16
with float32 accumulation; float32 in IEEE precision unless torch.backends.cuda.matmul.allow_tf32;
float64 in IEEE), then cosine, affine and sigmoid, and the tile is reduced per class into the
rows' state in global memory (out, aux and the softmax's running sum), which the program owns:
no atomics, deterministic. Refs that take no part load as zero vectors and are masked out of every
reduction, so a NaN there reaches nothing.

The backward recomputes the tiles with the same code and block sizes, tiles aligned the same way,
so every score has the forward's bits (the max's equality test finds the forward's maxima):
``_dq_kernel`` per (image, query block) over ref tiles, ``_dr_kernel`` per (image, ref block, split
of the queries) over the split's query tiles, accumulating dq and dr's partials in float32/float64
buffers; the partials are summed in order and the ref norm's cosine term applied in torch, then
rounded to the inputs' dtype. dS per reduce, then the chain of the header; softmax reads h = softmax_centered(g, out).

The max: the forward keeps each row and class's MaxArg (its only maximum) in aux as a code
(_forward_kernel's ARG 2, _FRACS); the backward's recomputation of the maxima (ARG 1) takes the
forward's out for every block of rows whose MaxArg it reads there as its own code, and recomputes
the blocks with a tie, a NaN or -inf max, a non-finite dot, or no code (another backend's aux,
another arithmetic). The gradient passes then leave out the tile pairs no row's MaxArg lies in.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ..reference.similarity_reduce import zero_labels
from ._common import (checked_labels, device_ctx, dot_acc, dot_inputs, dot_precision, expect, expect_same_device,
                      expect_sizes, grid_items, row_splits, split_pid, stats_dtype)  # fmt: skip

METRICS = {"dot": 0, "cosine": 1}
REDUCES = {"sum": 0, "mean": 1, "max": 2, "softmax": 3}
BLOCK_N, BLOCK_K, BLOCK_D = 16, 32, 32


@triton.jit
def _scores(q_ptr, r_ptr, b, offs_n, offs_k, nmask, kvalid, N, K, D, qsb, qsn, qsd, qn, rn, scale, bias, eps,
            COSINE, SIGMOID, REDUCE: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
            BLOCK_D: tl.constexpr):  # fmt: skip
    # PREC: _common.dot_precision
    """The score tile [BLOCK_N, BLOCK_K] the reduction takes (activated, but the max's logits z:
    the header's `activates`), (cosine) its sim and den, and the activation's derivative s (1 - s)
    (1 with no sigmoid), 1 - s without its cancellation, the header's score_comp: e s with
    e = exp(-z) for z >= 0 (1 - s is 0 once s rounds to 1, where the derivative is e^-z). Refs
    that take no part are zero vectors here (their scores are masked by the callers)."""
    acc = tl.zeros([offs_n.shape[0], offs_k.shape[0]], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        qa = tl.load(q_ptr + b * qsb + offs_n.to(tl.int64)[:, None] * qsn + offs_d.to(tl.int64)[None, :] * qsd,
                     mask=nmask[:, None] & dmask[None, :], other=0.0)
        ra = tl.load(r_ptr + (b * K + offs_k.to(tl.int64))[:, None] * D + offs_d[None, :],
                     mask=kvalid[:, None] & dmask[None, :], other=0.0)
        acc += dot_inputs(qa, tl.trans(ra), PREC, ACC)
    den = qn[:, None] * rn[None, :] + tl.full([], eps, ACC)
    sim = tl.where(COSINE != 0, acc / den, acc)
    z = sim * tl.full([], scale, ACC) + tl.full([], bias, ACC)
    e = tl.exp(-z)
    sg = 1.0 / (1.0 + e)
    s = tl.where((SIGMOID != 0) & (REDUCE != 2), sg, z)
    dsig = tl.where(SIGMOID != 0, tl.where(z >= 0, e * sg, 1.0 - sg) * sg, 1.0)
    return s, sim, den, acc, dsig


@triton.jit
def _ge_max(x, m):
    """above(x, m) of the header: larger, or NaN over a number."""
    return (x > m) | ((x != x) & (m == m))


@triton.jit
def _kept_arg(a, o, FRAC: tl.constexpr):
    """MaxArg from a forward's aux entry `a` and out entry `o` (the max): j where `a` is the code
    -(j + 1 + FRAC) of a forward that kept it with this kernel's arithmetic (FRAC: _FRACS), -1
    where a = 0 and o = -inf (a class without refs), else -2: a tie, a NaN or -inf max, a non-finite
    dot, or an aux without this code (another backend's tie counts, CUDA's -(j + 1), another
    precision's code), whose rows are recomputed."""
    v = -a - (1.0 + FRAC)
    j = v.to(tl.int32)
    code = (a < 0) & (v >= 0) & (j.to(a.dtype) == v)
    return tl.where(code, j, tl.where((a == 0) & (o == -float("inf")), -1, -2))


@triton.jit(do_not_specialize=["COSINE", "SIGMOID"])
def _forward_kernel(q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, out_ptr, aux_ptr, l_ptr, arg_ptr, kout_ptr, kaux_ptr, N, K,
                    D, C, qsb, qsn, qsd, scale: tl.float64, bias: tl.float64, eps: tl.float64, temp: tl.float64, nblk,
                    COSINE, SIGMOID, REDUCE: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, ARG: tl.constexpr,
                    KEPT: tl.constexpr, FRAC: tl.constexpr):  # fmt: skip
    """ARG (max only) 1: arg_ptr's (B, N, C) int32 gets each row and class's MaxArg (the backward's
    recomputed maxima; see _arg_hits); with KEPT, a block of rows whose every MaxArg the forward
    kept (kout_ptr, kaux_ptr: its out and aux, _kept_arg) takes them instead of its tiles. ARG 2
    (the forward): aux keeps each row and class's MaxArg, the code -(j + 1 + FRAC) where ref j alone
    attains a finite max in a row of finite dots, the tie count elsewhere (arg_ptr unused)."""
    pid = tl.program_id(0)
    b = (pid // nblk).to(tl.int64)
    offs_n = (pid % nblk) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    rows = b * N + offs_n.to(tl.int64)
    qn = tl.load(qn_ptr + rows, mask=nmask, other=0.0)
    wide = tl.zeros([BLOCK_N], tl.int32)  # ARG: a non-finite dot in the row (refs that take no part too)
    k_end = K
    if KEPT:
        recompute = tl.zeros([BLOCK_N], tl.int32)
        for c in range(0, C):
            at = rows * C + c
            ka = _kept_arg(tl.load(kaux_ptr + at, mask=nmask, other=0.0),
                           tl.load(kout_ptr + at, mask=nmask, other=-float("inf")), FRAC)  # fmt: skip
            recompute = recompute | (ka == -2).to(tl.int32)
        taken = tl.max(recompute, 0) == 0
        if taken:  # the forward's maxima, tie counts and MaxArg; no tile
            for c in range(0, C):
                at = rows * C + c
                ko = tl.load(kout_ptr + at, mask=nmask, other=-float("inf"))
                ka = _kept_arg(tl.load(kaux_ptr + at, mask=nmask, other=0.0), ko, FRAC)
                tl.store(out_ptr + at, ko, mask=nmask)
                tl.store(aux_ptr + at, tl.where(ka >= 0, 1.0, 0.0).to(ACC), mask=nmask)
                tl.store(arg_ptr + at, ka.to(tl.int32), mask=nmask)
        k_end = tl.where(taken, 0, K)
    for k0 in range(0, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < K
        lab = tl.load(lab_ptr + b * K + offs_k, mask=kmask, other=-1).to(tl.int64)
        kvalid = kmask & (lab >= 0) & (lab < C)
        rn = tl.load(rn_ptr + b * K + offs_k, mask=kvalid, other=0.0)
        s, sim, den, dot, _ = _scores(q_ptr, r_ptr, b, offs_n, offs_k, nmask, kvalid, N, K, D, qsb, qsn, qsd, qn,
                                      rn, scale, bias, eps, COSINE, SIGMOID, REDUCE, PREC, ACC, BLOCK_D)  # fmt: skip
        pair = nmask[:, None] & kvalid[None, :]
        if ARG:
            wide = tl.maximum(wide, tl.max((kmask[None, :] & ~(tl.abs(dot) < float("inf"))).to(tl.int32), 1))
        if REDUCE == 3:
            # Online softmax over the valid refs: the tile's max, one rescale of the row's state.
            x = tl.where(pair, s / tl.full([], temp, ACC), -float("inf"))
            nan = tl.sum(tl.where(pair & (x != x), 1, 0), 1) > 0
            tmax = tl.where(nan, float("nan"), tl.max(x, 1))
            m_old = tl.load(aux_ptr + rows, mask=nmask, other=0.0)
            l_old = tl.load(l_ptr + rows, mask=nmask, other=0.0)
            any_valid = tl.sum(pair.to(tl.int32), 1) > 0
            m_new = tl.where(any_valid & _ge_max(tmax, m_old), tmax, m_old)
            f = tl.where(m_new == m_old, 1.0, tl.exp(m_old - m_new))
            e = tl.where(pair, tl.exp(x - m_new[:, None]), 0.0)
            tl.store(l_ptr + rows, l_old * f + tl.sum(e, 1), mask=nmask)
            tl.store(aux_ptr + rows, m_new, mask=nmask)
            for c in range(0, C):
                o = tl.load(out_ptr + rows * C + c, mask=nmask, other=0.0)
                add = tl.sum(tl.where(lab[None, :] == c, e, 0.0), 1)
                tl.store(out_ptr + rows * C + c, o * f + add, mask=nmask)
        else:
            for c in range(0, C):
                member = pair & (lab[None, :] == c)
                o = tl.load(out_ptr + rows * C + c, mask=nmask, other=0.0)
                if REDUCE == 2:
                    v = tl.where(member, s, -float("inf"))
                    nan = tl.sum(tl.where(member & (s != s), 1, 0), 1) > 0
                    tmax = tl.where(nan, float("nan"), tl.max(v, 1))
                    tties = tl.sum(tl.where(member & (s == tmax[:, None]), 1.0, 0.0), 1).to(ACC)
                    t_old = tl.load(aux_ptr + rows * C + c, mask=nmask, other=0.0)
                    take = _ge_max(tmax, o)
                    same = (tmax == o) & (tties > 0)
                    if ARG == 2:  # a max taken by one ref: its code (the tile's first and only maximum)
                        first = tl.min(tl.where(member & (s == tmax[:, None]), offs_k[None, :], K), 1)
                        code = -(first.to(ACC) + (1.0 + FRAC))
                        t_cnt = tl.where(t_old < 0, 1.0, t_old)  # a code counts 1
                        t_new = tl.where(take, tl.where(tties == 1, code, tties), tl.where(same, t_cnt + tties, t_old))
                    else:
                        t_new = tl.where(take, tties, tl.where(same, t_old + tties, t_old))
                    tl.store(aux_ptr + rows * C + c, t_new, mask=nmask)
                    tl.store(out_ptr + rows * C + c, tl.where(take, tmax, o), mask=nmask)
                    if ARG == 1:  # the tile's first maximum, where the tile takes the max
                        first = tl.min(tl.where(member & (s == tmax[:, None]), offs_k[None, :], K), 1)
                        a_old = tl.load(arg_ptr + rows * C + c, mask=nmask, other=-1)
                        tl.store(arg_ptr + rows * C + c, tl.where(take, first, a_old).to(tl.int32), mask=nmask)
                else:
                    tl.store(out_ptr + rows * C + c, o + tl.sum(tl.where(member, s, 0.0), 1), mask=nmask)
    # The rows' MaxArg (a kept block's again: the same words). A NaN max counts no ties here
    # (NaN == NaN is false); a max of -inf: its members never moved arg (no score above -inf).
    if ARG == 1:
        for c in range(0, C):
            o = tl.load(out_ptr + rows * C + c, mask=nmask, other=0.0)
            t = tl.load(aux_ptr + rows * C + c, mask=nmask, other=0.0)
            a = tl.load(arg_ptr + rows * C + c, mask=nmask, other=-1)
            any_ref = (wide > 0) | (o != o) | (t > 1) | ((o == -float("inf")) & (t > 0))
            a = tl.where(any_ref, -2, tl.where(t == 0, -1, a))
            tl.store(arg_ptr + rows * C + c, a.to(tl.int32), mask=nmask)
    if ARG == 2:  # a code stays only where MaxArg is its ref; elsewhere the tie count
        for c in range(0, C):
            o = tl.load(out_ptr + rows * C + c, mask=nmask, other=0.0)
            t = tl.load(aux_ptr + rows * C + c, mask=nmask, other=0.0)
            t_cnt = tl.where(t < 0, 1.0, t)
            any_ref = (wide > 0) | (o != o) | (t_cnt > 1) | ((o == -float("inf")) & (t_cnt > 0))
            tl.store(aux_ptr + rows * C + c, tl.where(any_ref, t_cnt, t).to(ACC), mask=nmask)


@triton.jit
def _arg_hits(arg_ptr, rows, nmask, C, k0, BLOCK_K: tl.constexpr, ARG: tl.constexpr):
    """Whether a tile pair of these query rows and refs [k0, k0 + BLOCK_K) can have a nonzero dZ in
    the max's backward: a row's only maximum (MaxArg, from the recomputed forward: the ref, -1 a
    class without refs, -2 tied maxima, a NaN or -inf max or a non-finite dot in the row) in the refs.
    Without ARG (no MaxArg rows: not the max, or a non-finite scale) every tile pair can."""
    if ARG:
        hit = tl.zeros([rows.shape[0]], tl.int32)
        for c in range(0, C):
            a = tl.load(arg_ptr + rows * C + c, mask=nmask, other=-1)
            hit = hit | ((a == -2) | ((a >= k0) & (a < k0 + BLOCK_K))).to(tl.int32)
        out = tl.max(hit, 0)
    else:
        out = 1
    return out


@triton.jit
def _grad_tile(q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, gx_ptr, out_ptr, aux_ptr, lse_ptr, arg_ptr, b, offs_n, offs_k,
               N, K, D, C, qsb, qsn, qsd, scale, bias, eps, temp, COSINE, SIGMOID,
               REDUCE: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr, GACC: tl.constexpr,
               BLOCK_D: tl.constexpr, ARG: tl.constexpr):  # fmt: skip
    """dZ (A for cosine) of the tile in GACC, 0 outside valid pairs; and cosine's A·sim, with |q|, |r|;
    and `d_end`, the dims of the tile's product: D, or 0 where its dZ adds nothing to dq or dr, that
    is where dZ is 0 throughout and every dot of the tile is finite (sim is: cosine's den is inf
    where a dot is; then so is every entry of both sides' loaded rows: a non-finite one makes every
    dot with it inf or NaN, and 0 * v = 0 exactly): the max's usual tile, whose dZ is nonzero at a
    row's maxima only. lse_ptr: the softmax's (m, log l) per row. ARG (the max): arg_ptr's MaxArg
    names a row's only maximum, which takes the gradient whatever `out` holds there (a kept
    block's out is the forward's: with the sigmoid, sigmoid(max z), not the z tested here)."""
    nmask = offs_n < N
    kmask = offs_k < K
    rows = b * N + offs_n.to(tl.int64)
    lab = tl.load(lab_ptr + b * K + offs_k, mask=kmask, other=-1).to(tl.int64)
    kvalid = kmask & (lab >= 0) & (lab < C)
    qn = tl.load(qn_ptr + rows, mask=nmask, other=0.0)
    rn = tl.load(rn_ptr + b * K + offs_k, mask=kvalid, other=0.0)
    # sig: sigmoid'(z) = s (1 - s), formed in _scores: s and 1 - s die there unless the reduction
    # reads s (softmax), fewer values live across the loads (sum and mean spilled 48 B on sm_90)
    s, sim, den, dot, sig = _scores(q_ptr, r_ptr, b, offs_n, offs_k, nmask, kvalid, N, K, D, qsb, qsn, qsd, qn, rn,
                                    scale, bias, eps, COSINE, SIGMOID, REDUCE, PREC, ACC, BLOCK_D)  # fmt: skip
    pair = nmask[:, None] & kvalid[None, :]
    cls = tl.where(kvalid, lab, 0)
    at = rows[:, None] * C + cls[None, :]
    g = tl.load(gx_ptr + at, mask=pair, other=0.0)
    if REDUCE == 2:
        o = tl.load(out_ptr + at, mask=pair, other=0.0)
        ties = tl.load(aux_ptr + at, mask=pair, other=1.0)
        hit = s == o
        if ARG:
            a = tl.load(arg_ptr + at, mask=pair, other=-2)
            hit = tl.where(a >= 0, offs_k[None, :] == a, hit)
        ds = tl.where(hit, g / ties, tl.where(o != o, o, 0.0))  # a NaN max: NaN to its members (amax)
    elif REDUCE == 3:
        # p = exp((s / T - m) - log l)
        m = tl.load(lse_ptr + rows * 2, mask=nmask, other=0.0)
        logl = tl.load(lse_ptr + rows * 2 + 1, mask=nmask, other=0.0)
        ds = tl.exp((s / tl.full([], temp, ACC) - m[:, None]) - logl[:, None]) * g / tl.full([], temp, ACC)
    else:
        ds = g
    # From here in GACC (float64 for float32 inputs in IEEE): a rounding of dZ scales a pair's two
    # cosine terms alike, but sim's, and the products' sums over a tile, do not; terms of ~4 that
    # cancel to 0.01 (prior_mask, H200 2026-11-28) missed SPEC's float32 tolerance in float32.
    dz = (ds * sig * tl.full([], scale, ACC)).to(GACC)
    den = den.to(GACC)
    dz = tl.where(COSINE != 0, dz / den, dz)
    sim = tl.where(COSINE != 0, dot.to(GACC) / den, dot.to(GACC))
    # after every factor: a lane outside the valid pairs can have p = inf, den = 0 (eps = 0), sim NaN
    dz = tl.where(pair, dz, 0.0)
    if REDUCE == 2:  # only the max's dZ is sparse; the others take every tile (no extra registers)
        # sim (the dot, or cosine's dot / den) is non-finite wherever the dot is (den = inf there)
        live = tl.max(((dz != 0.0) | ~(tl.abs(sim) < float("inf"))).to(tl.int32))  # NaN != 0
        d_end = tl.where(live > 0, D, 0)  # a tile that adds nothing: no product
    else:
        d_end = D
    return dz, tl.where(pair, dz * sim, 0.0), qn.to(GACC), rn.to(GACC), nmask, kvalid, d_end


@triton.jit(do_not_specialize=["COSINE", "SIGMOID"])
def _dq_kernel(q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, gx_ptr, out_ptr, aux_ptr, lse_ptr, arg_ptr, dq_ptr, N, K, D, C,
               qsb, qsn, qsd, scale: tl.float64, bias: tl.float64, eps: tl.float64, temp: tl.float64,
               floor: tl.float64, nblk, COSINE, SIGMOID,
               REDUCE: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr, GACC: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_P: tl.constexpr, ARG: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid // nblk).to(tl.int64)
    offs_n = (pid % nblk) * BLOCK_N + tl.arange(0, BLOCK_N)
    row = tl.zeros([BLOCK_N], GACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        # the max's: a tile pair no row's only maximum lies in adds nothing (no scores)
        if _arg_hits(arg_ptr, b * N + offs_n.to(tl.int64), offs_n < N, C, k0, BLOCK_K, ARG) > 0:
            dz, a_sim, qn, rn, nmask, kvalid, d_end = _grad_tile(
                q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, gx_ptr, out_ptr, aux_ptr, lse_ptr, arg_ptr, b, offs_n, offs_k, N, K,
                D, C, qsb, qsn, qsd, scale, bias, eps, temp, COSINE, SIGMOID, REDUCE, PREC, ACC, GACC, BLOCK_D,
                ARG)  # fmt: skip
            if COSINE != 0:
                row += tl.sum(a_sim * rn[None, :], 1)
            for d0 in range(0, d_end, BLOCK_P):
                offs_d = d0 + tl.arange(0, BLOCK_P)
                dmask = offs_d < D
                ra = tl.load(r_ptr + (b * K + offs_k.to(tl.int64))[:, None] * D + offs_d[None, :],
                             mask=kvalid[:, None] & dmask[None, :], other=0.0).to(GACC)
                at = dq_ptr + (b * N + offs_n.to(tl.int64))[:, None] * D + offs_d[None, :]
                m2 = nmask[:, None] & dmask[None, :]
                # each tile's product in GACC, the running sum in float64 (pair_bce's dy: a float32 one
                # over thousands of tiles drifts past SPEC's float32 tolerance)
                tl.store(at, tl.load(at, mask=m2, other=0.0) + dot_acc(dz, ra, PREC, GACC).to(tl.float64), mask=m2)
    if COSINE != 0:
        nmask = offs_n < N
        qn = tl.load(qn_ptr + b * N + offs_n, mask=nmask, other=0.0)
        f = tl.where(qn > tl.full([], floor, ACC), row / qn.to(GACC), 0.0)  # no norm term at the floor
        for d0 in range(0, D, BLOCK_P):
            offs_d = d0 + tl.arange(0, BLOCK_P)
            m2 = nmask[:, None] & (offs_d < D)[None, :]
            qa = tl.load(q_ptr + b * qsb + offs_n.to(tl.int64)[:, None] * qsn + offs_d.to(tl.int64)[None, :] * qsd,
                         mask=m2, other=0.0).to(GACC)
            at = dq_ptr + (b * N + offs_n.to(tl.int64))[:, None] * D + offs_d[None, :]
            tl.store(at, tl.load(at, mask=m2, other=0.0) - (f[:, None] * qa).to(tl.float64), mask=m2)


@triton.jit(do_not_specialize=["COSINE", "SIGMOID"])
def _dr_kernel(q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, gx_ptr, out_ptr, aux_ptr, lse_ptr, arg_ptr, dr_ptr, col_ptr, N,
               K, D, C, qsb, qsn, qsd, scale: tl.float64, bias: tl.float64, eps: tl.float64, temp: tl.float64,
               kblk, splits, per, COSINE, SIGMOID,
               REDUCE: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr, GACC: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_P: tl.constexpr, ARG: tl.constexpr):  # fmt: skip
    """Split s of the queries [s * per, (s + 1) * per) (per a multiple of BLOCK_N: only the last
    split's last tile passes N) for a block of refs: its partial dr
    (Σ_i dZ_ij q_i) into dr_ptr's slice s (splits, B, K, D), and (cosine) its Σ_i A sim |q_i|
    and Σ_i A sim into col_ptr's (2, splits, B, K); the launcher sums the slices in order. The
    second is a weight's gradient without cancellation: eps Σ_i A sim / w_j (the launcher)."""
    b, item = split_pid(kblk * splits)
    s = item // kblk
    k_lo = (item - s * kblk) * BLOCK_K
    offs_k = k_lo + tl.arange(0, BLOCK_K)
    kmask = offs_k < K
    B = tl.num_programs(0) // (kblk * splits)
    drs = dr_ptr + s.to(tl.int64) * B * K * D
    col = tl.zeros([BLOCK_K], GACC)
    ecol = tl.zeros([BLOCK_K], GACC)
    n_end = tl.minimum(N, (s + 1) * per)
    for n0 in range(s * per, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        # the max's: a tile pair no row's only maximum lies in adds nothing (no scores)
        if _arg_hits(arg_ptr, b * N + offs_n.to(tl.int64), offs_n < N, C, k_lo, BLOCK_K, ARG) > 0:
            dz, a_sim, qn, rn, nmask, kvalid, d_end = _grad_tile(
                q_ptr, r_ptr, lab_ptr, qn_ptr, rn_ptr, gx_ptr, out_ptr, aux_ptr, lse_ptr, arg_ptr, b, offs_n, offs_k, N, K,
                D, C, qsb, qsn, qsd, scale, bias, eps, temp, COSINE, SIGMOID, REDUCE, PREC, ACC, GACC, BLOCK_D,
                ARG)  # fmt: skip
            if COSINE != 0:
                col += tl.sum(a_sim * qn[:, None], 0)
                ecol += tl.sum(a_sim, 0)
            for d0 in range(0, d_end, BLOCK_P):
                offs_d = d0 + tl.arange(0, BLOCK_P)
                dmask = offs_d < D
                qa = tl.load(q_ptr + b * qsb + offs_n.to(tl.int64)[:, None] * qsn + offs_d.to(tl.int64)[None, :] * qsd,
                             mask=nmask[:, None] & dmask[None, :], other=0.0).to(GACC)
                at = drs + (b * K + offs_k.to(tl.int64))[:, None] * D + offs_d[None, :]
                m2 = kmask[:, None] & dmask[None, :]
                tl.store(at, tl.load(at, mask=m2, other=0.0) + dot_acc(tl.trans(dz), qa, PREC, GACC).to(tl.float64),
                         mask=m2)  # fmt: skip
    if COSINE != 0:
        tl.store(col_ptr + (s.to(tl.int64) * B + b) * K + offs_k, col, mask=kmask)
        tl.store(col_ptr + ((splits + s.to(tl.int64)) * B + b) * K + offs_k, ecol, mask=kmask)


# --------------------------------------------------------------------------------------
# Launchers


def _acc(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _prepare(op, query, ref, ref_labels, num_classes, metric, reduce, tiny):
    """Checks, and the operands as the kernels read them; the norms clamped at sqrt(tiny)."""
    expect(query.dim() == 3 and ref.dim() == 3 and query.shape[0] == ref.shape[0] and query.shape[2] == ref.shape[2],
           op, f"query must be (B, N, D) and ref (B, K, D), got {tuple(query.shape)} and {tuple(ref.shape)}")
    expect(query.dtype == ref.dtype, op, "query and ref must share a dtype")
    expect_sizes(ref_labels, ref.shape[:2], op, "ref_labels")
    expect_same_device(op, query, ref, ref_labels)
    expect(metric in METRICS, op, f"metric must be 'dot' or 'cosine', got {metric!r}")
    expect(reduce in REDUCES, op, f"reduce must be one of {tuple(REDUCES)}, got {reduce!r}")
    expect(num_classes >= 1, op, f"num_classes must be positive, got {num_classes}")
    # A D-major query (a (B, D, H, W) map seen as (B, HW, D)) is read in place.
    q = query if query.is_contiguous() or query.transpose(1, 2).is_contiguous() else query.contiguous()
    r, lab = ref.contiguous(), ref_labels.contiguous()
    st = stats_dtype(q.dtype)
    C = num_classes
    cosine = metric == "cosine"
    B, N, K = q.shape[0], q.shape[1], r.shape[1]
    # |q| and |r| with the reference's clamp (derivatives 0 at a zero vector): sqrt(max(s, tiny))
    # is max(sqrt(s), sqrt(tiny)), sqrt(tiny) a power of two; two ops where square, sum, clamp
    # and sqrt took four. The kernels never read the norm of a ref that takes no part.
    floor = math.sqrt(tiny)
    qn = torch.linalg.vector_norm(q, dim=-1, dtype=st).clamp_min(floor) if cosine else q.new_zeros(B, N, dtype=st)
    rn = torch.linalg.vector_norm(r, dim=-1, dtype=st).clamp_min(floor)
    # the counts in C + 2 bins, a label below 0 in bin 0 and one from C up in bin C + 1 (dropped)
    count = torch.zeros(B, C + 2, dtype=st, device=q.device)
    count.scatter_add_(1, lab.long().clamp(-1, C) + 1, count.new_ones(()).expand(B, K))
    return q, r, lab, st, qn.contiguous(), rn.contiguous(), count[:, 1 : C + 1]


def _grad_acc(flags):
    """GACC, the backward's dZ and product type: float64 but for float32 inputs on TF32 (opted
    into ~1e-3 precision) and half inputs (held to the half tolerance): the CUDA kernels' choice."""
    return tl.float64 if flags["ACC"] == tl.float64 or flags["PREC"] == "ieee" else tl.float32


def _grad_flags(flags):
    """The backward's GACC and BLOCK_P (the dims of a chunk of its second product, which only the
    sums' grouping of dims sees, never their bits): 16 in float64 (32 spilled up to 64 B on sm_90)."""
    gacc = _grad_acc(flags)
    return {"GACC": gacc, "BLOCK_P": BLOCK_D // 2 if gacc == tl.float64 else BLOCK_D}


def _grad_warps(flags) -> int:
    """The gradient kernels' num_warps: 8 for float32 with IEEE products (float64 sums, GACC), whose
    16 x 32 tiles in 4 warps sat at 255 registers and spilled 24-40 B, up to 7 local accesses in
    the loop (sm_90); in 8 warps 144-148 registers, no spill, the same 12.5 % occupancy. 4 for the
    rest: at 8 the TF32 and half variants spill where they do not at 4."""
    return 8 if flags["PREC"] == "ieee" else 4


def _flags(metric, sigmoid, reduce, t, st):
    return {"COSINE": int(metric == "cosine"), "SIGMOID": int(bool(sigmoid)), "REDUCE": REDUCES[reduce],
            "PREC": dot_precision(t.dtype, t.device),
            "ACC": tl.float64 if st == torch.float64 else tl.float32, "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K,
            "BLOCK_D": BLOCK_D}  # fmt: skip


def _weighted(query, ref, ref_labels, num_classes, ref_weight, op, dtype=None):
    """These kernels take no weight: the weighted refs w·ref are formed first, with the query, in
    the weight's statistics dtype (the reference's arithmetic: w·ref of half refs is no half
    vector) or `dtype` -> query, ref and weight in that dtype, the refs that take no part and
    their weights zeroed (a NaN there reaches the other's gradient through the product)."""
    expect_same_device(op, ref, ref_weight)
    expect_sizes(ref_weight, tuple(ref.shape[:2]), op, "ref_weight")
    dtype = dtype or stats_dtype(ref.dtype)
    valid = (ref_labels >= 0) & (ref_labels < num_classes)
    zero = torch.zeros((), dtype=dtype, device=ref.device)
    r = torch.where(valid[..., None], ref.to(dtype), zero)
    return query.to(dtype), r, torch.where(valid, ref_weight.to(dtype), zero)


def _tiny(t: torch.Tensor) -> float:
    """The smallest normal of t's statistics dtype: the norms' clamp (its square root, the floor)."""
    return torch.finfo(stats_dtype(t.dtype)).tiny


@triton_variant("similarity_reduce")
def similarity_reduce_op(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps,
                         ref_weight, check, argmax):  # fmt: skip
    op = "similarity_reduce"
    if ref_labels is None:  # every ref of class 0 (prior_mask's): a map of zeros, nothing to check
        ref_labels, check = zero_labels(None, ref), None
    checked_labels(ref_labels, num_classes, -1, check)
    if ref_weight is not None:
        query, r, w = _weighted(query, ref, ref_labels, num_classes, ref_weight, op)
        ref = r * w[..., None]
    out, aux = _forward(op, query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature,
                        eps, _tiny(query), keep=True)  # fmt: skip
    if reduce == "max" and sigmoid:
        # the max of z activated once (the header's max_out): an empty class (no tie) keeps -inf
        out = torch.where(aux != 0, torch.sigmoid(out), out)
    # The labels as torch's argmax after the mean's and softmax's division, which run as torch ops
    # here too: one launch the CUDA kernels fold into their pass.
    labels = out.argmax(-1) if argmax else torch.empty(0, dtype=torch.int64, device=out.device)
    return out, aux, labels


# FRAC of the max's kept code -(j + 1 + FRAC) in aux, one per arithmetic of the scores (the
# operands' dtype, and float32's precision: IEEE, or TF32 where allow_tf32), so that a backward whose
# scores would not have the forward's bits (allow_tf32 changed in between; the weighted cosine's
# float64 pass; another dtype handed in) reads no code and recomputes. Eighths: exact in a float32
# aux up to 2^20 refs an image (_keeps_arg); never an integer, so CUDA's code -(j + 1) reads as
# none here, and these as none there.
_FRACS = {(torch.float32, "ieee"): 0.5, (torch.float32, "tf32"): 0.25, (torch.float64, ""): 0.75,
          (torch.float16, ""): 0.375, (torch.bfloat16, ""): 0.625, (torch.bfloat16, "widen"): 0.875}  # fmt: skip


def _keeps_arg(reduce, scale, K, st) -> bool:
    """Whether the max's forward keeps MaxArg in aux: a finite scale (the backward notes none with
    0 * inf, which makes every dZ NaN), and in a float32 aux K <= 2^20 (_FRACS)."""
    return reduce == "max" and math.isfinite(float(scale)) and (st == torch.float64 or K <= 2**20)


def _forward(op, query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, tiny,
             arg=None, kept=None, keep=False):
    """arg: for the max, an int32 (B, N, C) buffer that gets each row and class's MaxArg; `kept`, the
    (out, aux) of the forward, whose blocks of rows with every MaxArg kept are taken, not recomputed.
    keep (the op's forward): the max's aux keeps MaxArg (_forward_kernel's ARG 2) where it can."""
    q, r, lab, st, qn, rn, count = _prepare(op, query, ref, ref_labels, num_classes, metric, reduce, tiny)
    B, N, D = q.shape
    K, C = r.shape[1], num_classes
    inf = float("inf")
    out = torch.full((B, N, C), -inf if reduce == "max" else 0.0, dtype=st, device=q.device)
    if reduce == "max":
        aux = torch.zeros(B, N, C, dtype=st, device=q.device)
    elif reduce == "softmax":
        aux = torch.full((B, N), -inf, dtype=st, device=q.device)
    else:
        aux = torch.empty(0, dtype=st, device=q.device)
    lsum = torch.zeros(B, N, dtype=st, device=q.device) if reduce == "softmax" else aux
    if B * N > 0 and K > 0:
        nblk = triton.cdiv(N, BLOCK_N)
        flags = _flags(metric, sigmoid, reduce, q, st)
        mode = 1 if arg is not None else 2 if keep and _keeps_arg(reduce, scale, K, st) else 0
        kout, kaux = (out, aux) if kept is None else (t.to(st).contiguous() for t in kept)
        with device_ctx(q):
            _forward_kernel[grid_items(nblk, B)](
                q, r, lab, qn, rn, out, aux, lsum, aux if arg is None else arg, kout, kaux, N, K, D, C, *q.stride(),
                float(scale), float(bias), float(eps), float(temperature), nblk, **flags, ARG=mode,
                KEPT=mode == 1 and kept is not None, FRAC=_FRACS[(q.dtype, flags["PREC"])], num_warps=4)  # fmt: skip
    if reduce == "mean":
        out = out / count.clamp_min(1)[:, None, :]
    elif reduce == "softmax":
        # a NaN sum (a NaN score) makes the row NaN, as the reference's, but for its empty classes
        has = (lsum != 0)[..., None] & (count > 0)[:, None, :]
        out = torch.where(has, out / torch.where(lsum != 0, lsum, 1.0)[..., None], 0.0)
        aux = torch.stack([aux, torch.log(lsum)], -1)  # (m, log l); -inf, -inf for no valid ref
    return out, aux


@triton_variant("similarity_reduce_backward")
def similarity_reduce_backward_op(grad_out, query, ref, ref_labels, out, aux, num_classes, metric, scale, bias,
                                  sigmoid, reduce, temperature, eps, ref_weight):  # fmt: skip
    op = "similarity_reduce_backward"
    ref_labels = zero_labels(ref_labels, ref)
    args = (num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, _tiny(query))
    if ref_weight is None:
        gq, gr, _, _ = _backward(op, grad_out, query, ref, ref_labels, out, aux, *args)
        return gq, gr, torch.empty(0, dtype=stats_dtype(query.dtype), device=query.device)
    # G, the gradient of the weighted refs: d ref = w G, d w = ref·G. Cosine's ref·G is a difference
    # of two near-equal sums (the cosine is scale-invariant in w but for eps), whose difference is
    # eps Σ_i A_ij (q_i·ref_j) / den_ij = eps Σ_i A_ij sim_ij / w_j: that, from the kernels' column
    # sums (in float64: ~1e-12 off in float64 as ref·G where w = 1e-3, not 0 with eps = 0); ref·G
    # where the weighted norm is at the floor (w = 0 too), which has no norm term. Computed in
    # float64 (with the norms' clamp of the inputs' dtype, the reference's: a zero vector's
    # gradient is 1 / floor).
    cosine = metric == "cosine"
    qw, r, w = _weighted(query, ref, ref_labels, num_classes, ref_weight, op, torch.float64 if cosine else None)
    wr = r * w[..., None]
    gq, G, ecol, rn = _backward(op, grad_out, qw, wr, ref_labels, out, aux, *args)
    dw = (G * r.to(G.dtype)).sum(-1)
    if cosine:
        dw = torch.where(rn > math.sqrt(_tiny(query)), float(eps) * ecol / w, dw)
    dw = dw.to(stats_dtype(ref.dtype))
    return torch.empty_like(query).copy_(gq), torch.empty_like(ref).copy_(G * w.to(G.dtype)[..., None]), dw


def _backward(op, grad_out, query, ref, ref_labels, out, aux, num_classes, metric, scale, bias, sigmoid, reduce,
              temperature, eps, tiny):  # fmt: skip
    """-> the gradients of query and ref; (B, K) float64, cosine: Σ_i A_ij sim_ij per ref (a
    weight's gradient, similarity_reduce_backward_op; zeros for dot); the refs' clamped norms."""
    q, r, lab, st, qn, rn, count = _prepare(op, query, ref, ref_labels, num_classes, metric, reduce, tiny)
    B, N, D = q.shape
    K, C = r.shape[1], num_classes
    expect_sizes(grad_out, (B, N, C), op, "grad_out")
    expect_sizes(out, (B, N, C), op, "out")
    expect_sizes(aux, {"max": (B, N, C), "softmax": (B, N, 2)}.get(reduce, (0,)), op, "aux")
    expect_same_device(op, q, grad_out, out, aux)
    arg = None
    if reduce == "max":
        # The max and its ties recomputed with these kernels (one forward): the equality test then
        # holds whatever computed the `out` handed in (another backend, another dtype). With them
        # each row's only maximum (MaxArg): the passes leave out the tile pairs that hold none before
        # their scores (not with a non-finite scale, whose 0 * inf makes every dZ NaN). A block of
        # rows whose MaxArg the forward kept in aux (this backend's code, same arithmetic) takes the
        # forward's maxima instead: those are its kernels' bits, and the scores here are too.
        if math.isfinite(float(scale)):
            arg = torch.empty(q.shape[0], q.shape[1], num_classes, dtype=torch.int32, device=q.device)
        kept = (out, aux) if _keeps_arg(reduce, scale, K, st) else None
        out, aux = _forward(op, query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce,
                            temperature, eps, tiny, arg, kept)  # fmt: skip
    g, o = grad_out.to(st).contiguous(), out.to(st).contiguous()
    if reduce == "mean":
        gx = g / count.clamp_min(1)[:, None, :]
    elif reduce == "softmax":
        # softmax_centered (csrc/common/similarity_reduce.h): h = (g - g_top) + Σ_c out_c (g_top - g_c)
        g_top = g.gather(-1, o.argmax(-1, keepdim=True))
        gx = (g - g_top) + (o * (g_top - g)).sum(-1, keepdim=True)
    else:
        gx = g
    gx = gx.contiguous()
    a = aux.to(st).contiguous()
    # dq and dr's slices sum their tiles in float64 (the kernels' comments), cast once at the end
    dq = torch.zeros(B, N, D, dtype=torch.float64, device=q.device)
    nblk, kblk = triton.cdiv(N, BLOCK_N), triton.cdiv(K, BLOCK_K)
    # dr's programs split the queries: the refs are few (K = 500 is 16 blocks), and one program per
    # ref block walking all 102480 queries of W5 took 71 ms on the H100 (2026-11-26)
    splits, per = row_splits(N, BLOCK_N, kblk, B)
    dr = torch.zeros(splits, B, K, D, dtype=torch.float64, device=q.device)
    col = torch.zeros(2, splits, B, K, dtype=torch.float64, device=q.device)  # GACC's sums, at most float64
    if B * N * K * D > 0:
        args = (q, r, lab, qn, rn, gx, o, a, a, a if arg is None else arg)
        sc = (float(scale), float(bias), float(eps), float(temperature), math.sqrt(tiny))
        flags = _flags(metric, sigmoid, reduce, q, st)
        flags.update(_grad_flags(flags), ARG=arg is not None)
        with device_ctx(q):
            _dq_kernel[grid_items(nblk, B)](*args, dq, N, K, D, C, *q.stride(), *sc, nblk, **flags,
                                            num_warps=_grad_warps(flags))  # fmt: skip
            _dr_kernel[grid_items(kblk * splits, B)](*args, dr, col, N, K, D, C, *q.stride(), *sc[:4], kblk, splits,
                                                      per, **flags, num_warps=_grad_warps(flags))  # fmt: skip
    dr, (col, ecol) = dr.sum(0), col.sum(1)  # the splits in order (a fixed reduction: deterministic)
    if metric == "cosine":  # the ref norm's term: - (Σ_i A sim |q_i| / |r_j|) r_j, none at the floor
        f = torch.where(rn > math.sqrt(tiny), col / rn, torch.zeros((), dtype=st, device=rn.device))
        dr = dr - f[..., None] * r.to(dr.dtype)
    grad_query = torch.empty_like(query).copy_(dq)  # in the input's layout, as the fake

    # The refs that take no part get exactly 0 (cosine's norm term read their vectors: 0 * NaN).
    valid = ((lab >= 0) & (lab < C))[..., None]
    dr = torch.where(valid, dr, torch.zeros((), dtype=dr.dtype, device=dr.device))
    return grad_query, torch.empty_like(ref).copy_(dr), ecol, rn


def compile_specs():
    """(kernel, signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    specs = []
    for e, a, acc, precs in (("fp32", "fp32", tl.float32, ("ieee", "tf32")), ("fp64", "fp64", tl.float64, ("",)),
                             ("bf16", "fp32", tl.float32, ("",)), ("fp16", "fp32", tl.float32, ("",))):  # fmt: skip
        base = {"q_ptr": "*" + e, "r_ptr": "*" + e, "lab_ptr": "*i64", "qn_ptr": "*" + a, "rn_ptr": "*" + a,
                "scale": "fp64", "bias": "fp64", "eps": "fp64", "temp": "fp64"}  # fmt: skip
        fwd = {**base, "out_ptr": "*" + a, "aux_ptr": "*" + a, "l_ptr": "*" + a, "arg_ptr": "*i32",
               "kout_ptr": "*" + a, "kaux_ptr": "*" + a}  # fmt: skip
        dtype = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}[e]
        bwd = {**base, "gx_ptr": "*" + a, "out_ptr": "*" + a, "aux_ptr": "*" + a, "lse_ptr": "*" + a,
               "arg_ptr": "*i32", "floor": "fp64"}  # fmt: skip
        for prec in precs:
            for red in range(4):
                c = {"REDUCE": red, "PREC": prec, "ACC": acc, "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K,
                     "BLOCK_D": BLOCK_D}  # fmt: skip
                frac = _FRACS[(dtype, prec)]
                # the max: its forward keeping MaxArg (ARG 2), the backward's recomputation taking the
                # kept blocks (ARG 1, KEPT) or not (K past the code's range)
                modes = ((0, False), (2, False), (1, True), (1, False)) if red == 2 else ((0, False),)
                for arg, kept in modes:
                    specs.append((_forward_kernel, fwd, {**c, "ARG": arg, "KEPT": kept, "FRAC": frac}, 4))
                for arg in (False, True) if red == 2 else (False,):  # MaxArg: the max's backward
                    g = {**c, **_grad_flags(c), "ARG": arg}
                    specs.append((_dq_kernel, {**bwd, "dq_ptr": "*fp64"}, g, _grad_warps(g)))
                    dr = {k: v for k, v in bwd.items() if k != "floor"}
                    specs.append((_dr_kernel, {**dr, "dr_ptr": "*fp64", "col_ptr": "*fp64"}, g, _grad_warps(g)))
    return specs

"""class_scores on Triton (csrc/common/class_scores.h): a program per (image, block of pixels).
The forward takes the classes BLOCK_C at a time, their dots over d in chunks of BLOCK_D (the
query tile read once a class block: once for C <= BLOCK_C), and writes the scores; the labels
are torch's argmax of them (Triton's has no NaN rule). The backward forms each chunk of the
pixels' grad_query dims from the classes' gradients and, from the same tiles and the query's,
each program's float64 sums of k g q over its pixels: torch sums those over the blocks (a fixed
order) and rounds them once into the means' gradient."""

import torch
import triton
import triton.language as tl

from .._dtypes import stats_dtype
from .._schema import triton_variant
from ._common import device_ctx, expect, expect_same_device, expect_sizes, f64_bits, f64_from_bits, grid_items, \
    split_pid  # fmt: skip


@triton.jit
def _factors(n_ptr, b, cs, C, scale, bias, SUM: tl.constexpr):
    """(live, k, beta) of classes cs of image b: a non-empty class, its factor and offset (float64)."""
    n = tl.load(n_ptr + b * C + cs, mask=cs < C, other=0.0).to(tl.float64)
    live = (cs < C) & (n > 0)
    if SUM:
        k = scale * n
        beta = bias * n
    else:
        k = tl.zeros_like(n) + scale
        beta = tl.zeros_like(n) + bias
    return live, k, beta


@triton.jit
def _forward_kernel(q_ptr, m_ptr, n_ptr, s_ptr, C, D, N, q_sb, q_sd, q_sn, scale_hi, scale_lo, bias_hi, bias_lo,
                    n_blocks, SUM: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_N: tl.constexpr):  # fmt: skip
    b, blk = split_pid(n_blocks)
    scale, bias = f64_from_bits(scale_hi, scale_lo), f64_from_bits(bias_hi, bias_lo)
    i = blk.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mi = i < N
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        mc = cs < C
        acc = tl.zeros([BLOCK_C, BLOCK_N], tl.float64)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            md = ds < D
            q = tl.load(q_ptr + b * q_sb + ds[:, None].to(tl.int64) * q_sd + i[None, :] * q_sn,
                        mask=md[:, None] & mi[None, :], other=0.0).to(tl.float64)  # fmt: skip
            m = tl.load(m_ptr + (b * C + cs[:, None]) * D + ds[None, :], mask=mc[:, None] & md[None, :], other=0.0)
            acc += tl.sum(m.to(tl.float64)[:, :, None] * q[None, :, :], axis=1)
        live, k, beta = _factors(n_ptr, b, cs, C, scale, bias, SUM)
        s = tl.where(live[:, None], k[:, None] * acc + beta[:, None], 0.0).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + (b * C + cs[:, None]) * N + i[None, :], s, mask=mc[:, None] & mi[None, :])


@triton.jit
def _backward_kernel(g_ptr, q_ptr, m_ptr, n_ptr, gq_ptr, part_ptr, C, D, N, g_sb, g_sc, g_sn, q_sb, q_sd, q_sn,
                     gq_sb, gq_sd, gq_sn, scale_hi, scale_lo, n_blocks, SUM: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    b, blk = split_pid(n_blocks)
    scale = f64_from_bits(scale_hi, scale_lo)
    i = blk.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mi = i < N
    part = part_ptr + (b * n_blocks + blk).to(tl.int64) * C * D  # this program's (C, D) float64 sums
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        md = ds < D
        q = tl.load(q_ptr + b * q_sb + ds[:, None].to(tl.int64) * q_sd + i[None, :] * q_sn,
                    mask=md[:, None] & mi[None, :], other=0.0).to(tl.float64)  # fmt: skip
        acc = tl.zeros([BLOCK_D, BLOCK_N], tl.float64)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            live, k, _ = _factors(n_ptr, b, cs, C, scale, scale, SUM)
            m = tl.load(m_ptr + (b * C + cs[:, None]) * D + ds[None, :], mask=live[:, None] & md[None, :], other=0.0)
            # an empty class is never read (its gradient, even inf or NaN, reaches nothing)
            g = tl.load(g_ptr + b * g_sb + cs[:, None].to(tl.int64) * g_sc + i[None, :] * g_sn,
                        mask=live[:, None] & mi[None, :], other=0.0)  # fmt: skip
            w = k[:, None] * m.to(tl.float64)
            g = g.to(tl.float64)
            acc += tl.sum(w[:, :, None] * g[:, None, :], axis=0)
            # k sum_i g q over the block's pixels, 0 for an empty class (selected: its 0 * inf is NaN)
            gq64 = tl.where(live[:, None], k[:, None] * tl.sum(g[:, None, :] * q[None, :, :], axis=2), 0.0)
            tl.store(part + cs[:, None] * D + ds[None, :], gq64, mask=(cs[:, None] < C) & md[None, :])
        tl.store(gq_ptr + b * gq_sb + ds[:, None].to(tl.int64) * gq_sd + i[None, :] * gq_sn,
                 acc.to(m_ptr.dtype.element_ty).to(gq_ptr.dtype.element_ty),  # via float32 for a half
                 mask=md[:, None] & mi[None, :])  # fmt: skip


_BLOCK_N = 64
# the backward's two float64 [BLOCK_C, BLOCK_D, BLOCK_N] products over 8 warps: 16 doubles of each
# a thread (4 warps held 32 and took 196-234 registers on sm_90, one program an SM quarter); a
# float64 query's: a quarter of the dims over 4 warps (72-92 registers, no spill)
_BACKWARD_WARPS = 8


def _blocks(C: int, D: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_D): up to 8 classes a step (label_transfer's C = 5 in one), and dims so
    that the [BLOCK_C, BLOCK_D, BLOCK_N] product stays at 4096 elements."""
    block_c = min(triton.next_power_of_2(max(C, 1)), 8)
    block_d = max(1, min(triton.next_power_of_2(max(D, 1)), 4096 // (block_c * _BLOCK_N)))
    return block_c, block_d


def _expect_args(query, means, counts, op):
    expect(query.dim() == 3, op, "query must be (B, D, N), got ", list(query.shape))
    expect(query.is_floating_point(), op, "query must be a float tensor, got ", query.dtype)
    B, D, N = query.shape
    expect(means.dim() == 3 and means.shape[0] == B and means.shape[2] == D, op, "means must be (B, C, D) for query ",
           list(query.shape), ", got ", list(means.shape))  # fmt: skip
    expect_sizes(counts, (B, means.shape[1]), op, "counts")
    expect(means.is_floating_point() and counts.is_floating_point(), op, "means and counts must be float tensors, "
           "got ", means.dtype, " and ", counts.dtype)  # fmt: skip
    expect_same_device(op, query, means, counts)
    return B, means.shape[1], D, N


def _statistics(t, query):
    """t contiguous in the query's statistics dtype (a copy only where it is not)."""
    return t.to(stats_dtype(query.dtype)).contiguous()


@triton_variant("class_scores")
def class_scores_op(query, means, counts, scale, bias, sum):  # noqa: A002
    B, C, D, N = _expect_args(query, means, counts, "class_scores")
    means, counts = _statistics(means, query), _statistics(counts, query)
    scores = means.new_empty(B, C, N)
    if scores.numel() == 0:
        return scores, torch.zeros(B, N, dtype=torch.long, device=query.device)
    block_c, block_d = _blocks(C, D)
    n_blocks = triton.cdiv(N, _BLOCK_N)
    with device_ctx(query):
        _forward_kernel[grid_items(n_blocks, B)](
            query, means, counts, scores, C, D, N, *query.stride(), *f64_bits(scale), *f64_bits(bias), n_blocks,
            SUM=bool(sum), BLOCK_C=block_c, BLOCK_D=block_d, BLOCK_N=_BLOCK_N, num_warps=4)  # fmt: skip
    return scores, torch.max(scores, dim=1).indices


@triton_variant("class_scores_backward")
def class_scores_backward_op(grad_scores, query, means, counts, scale, bias, sum):  # noqa: A002
    op = "class_scores_backward"
    means_in = means
    B, C, D, N = _expect_args(query, means, counts, op)
    expect_sizes(grad_scores, (B, C, N), op, "grad_scores")
    expect_same_device(op, query, grad_scores)
    means, counts = _statistics(means, query), _statistics(counts, query)
    g = grad_scores.to(means.dtype)
    grad_q = torch.empty_like(query)
    if B * C * D == 0 or N == 0:
        return grad_q.zero_(), means_in.new_zeros(B, C, D)
    block_c, block_d = _blocks(C, D)
    warps = _BACKWARD_WARPS
    if means.dtype == torch.float64:  # every tile is double: a quarter of the dims a step, 4 warps
        block_d, warps = max(1, block_d // 4), 4
    n_blocks = triton.cdiv(N, _BLOCK_N)
    part = torch.empty(B, n_blocks, C, D, dtype=torch.float64, device=query.device)
    with device_ctx(query):
        _backward_kernel[grid_items(n_blocks, B)](
            g, query, means, counts, grad_q, part, C, D, N, *g.stride(), *query.stride(), *grad_q.stride(),
            *f64_bits(scale), n_blocks, SUM=bool(sum), BLOCK_C=block_c, BLOCK_D=block_d, BLOCK_N=_BLOCK_N,
            num_warps=warps)  # fmt: skip
    # the blocks' float64 sums (each scaled by k) merged by torch's reduction (a fixed order),
    # rounded once: two launches
    return grad_q, part.sum(dim=1).to(means_in.dtype)


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    specs = []
    for q, a in (("fp32", "fp32"), ("fp64", "fp64"), ("fp16", "fp32"), ("bf16", "fp32")):
        for s in (True, False):
            c = {"SUM": s, "BLOCK_C": 8, "BLOCK_D": 8, "BLOCK_N": _BLOCK_N}
            specs.append((_forward_kernel, {"q_ptr": "*" + q, "m_ptr": "*" + a, "n_ptr": "*" + a, "s_ptr": "*" + a}, c, 4))
            cb, warps = (dict(c, BLOCK_D=2), 4) if a == "fp64" else (c, _BACKWARD_WARPS)
            specs.append((_backward_kernel, {"g_ptr": "*" + a, "q_ptr": "*" + q, "m_ptr": "*" + a, "n_ptr": "*" + a,
                                             "gq_ptr": "*" + q, "part_ptr": "*fp64"}, cb, warps))  # fmt: skip
    return specs

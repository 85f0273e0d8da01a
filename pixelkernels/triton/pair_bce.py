"""pair_bce in Triton (csrc/common/pair_bce.h).

A program owns BLOCK_N rows of x of one image (forward, dx) or BLOCK_K rows of y and a split of
x's rows (dy) and walks the other side in blocks: the logit tile is ``tl.dot(x, yᵀ)`` over D in
BLOCK_D chunks (tensor cores for float16/bfloat16; float32 is IEEE unless torch allows TF32), then
the loss or its derivative e = g (σ(z) - t) on the tile, masked to the valid pairs. dx and dy
accumulate (scale·e)·y and (scale·e)ᵀ·x, the scale per pair and masked after (an infinite or NaN
scale acts as in the reference and reaches no row that takes no part), in buffers the program
owns (no atomics: deterministic), summed in float64: dx's rows, and dy's slices, one per split,
that the launcher sums in order; it sets the rows with a negative label to 0 and sums the row
partials for the gradients of scale and bias.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dtypes import FLOAT_TYPES
from .._schema import triton_variant
from ._common import (device_ctx, dot_acc, dot_inputs, dot_precision, expect, expect_row_labels, expect_same_device,
                      expect_sizes, grid_items, row_splits, split_pid, stats_dtype)  # fmt: skip

BLOCK_N, BLOCK_K, BLOCK_D = 16, 32, 32


@triton.jit
def _tile(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, b, offs_i, offs_j, Kx, Ky, D, PREC: tl.constexpr,
          ACC: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """The logits z and raw products S of the tile [rows offs_i of x, rows offs_j of y], the
    targets t and the valid pairs."""
    imask, jmask = offs_i < Kx, offs_j < Ky
    lx = tl.load(lx_ptr + b * Kx + offs_i, mask=imask, other=-1)
    ly = tl.load(ly_ptr + b * Ky + offs_j, mask=jmask, other=-1)
    iv, jv = lx >= 0, ly >= 0
    s = tl.zeros([offs_i.shape[0], offs_j.shape[0]], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        # rows that take no part load as 0: an inf or NaN in them reaches nothing
        xa = tl.load(x_ptr + (b * Kx + offs_i.to(tl.int64))[:, None] * D + offs_d[None, :],
                     mask=iv[:, None] & dmask[None, :], other=0.0)
        ya = tl.load(y_ptr + (b * Ky + offs_j.to(tl.int64))[:, None] * D + offs_d[None, :],
                     mask=jv[:, None] & dmask[None, :], other=0.0)
        s += dot_inputs(xa, tl.trans(ya), PREC, ACC)
    z = s * tl.load(a_ptr) + tl.load(c_ptr)
    return z, s, lx[:, None] == ly[None, :], iv[:, None] & jv[None, :]


@triton.jit
def _log1p(u):
    """log(1 + u) to full relative precision for u in [0, 1] (log(1 + u) alone loses it for small u)."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _dloss(z, t):
    """σ(z) - t, as -σ(-z) where t: no cancellation."""
    return tl.where(t, -1.0 / (1.0 + tl.exp(z)), 1.0 / (1.0 + tl.exp(-z)))


@triton.jit
def _forward_kernel(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, out_ptr, Kx, Ky, D, nblk, PREC: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid // nblk).to(tl.int64)
    offs_i = (pid % nblk) * BLOCK_N + tl.arange(0, BLOCK_N)
    row = tl.zeros([BLOCK_N], ACC)
    for j0 in range(0, Ky, BLOCK_K):
        offs_j = j0 + tl.arange(0, BLOCK_K)
        z, s, t, valid = _tile(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, b, offs_i, offs_j, Kx, Ky, D, PREC, ACC,
                               BLOCK_D)  # fmt: skip
        # softplus(-z) where t, softplus(z) elsewhere: z = ±inf gives 0 or inf, not inf - inf
        loss = tl.where(t, tl.maximum(-z, 0.0), tl.maximum(z, 0.0)) + _log1p(tl.exp(-tl.abs(z)))
        row += tl.sum(tl.where(valid, loss, 0.0), 1)
    tl.store(out_ptr + b * Kx + offs_i, row, mask=offs_i < Kx)


@triton.jit
def _dx_kernel(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, g_ptr, g_stride, dx_ptr, rows_ptr, Kx, Ky, D, nblk,
               PREC: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_D: tl.constexpr):  # fmt: skip
    """dx and the rows' sums for a block of x rows. grad_out's row i at g_ptr + i * g_stride: 1, or 0
    for one gradient read in every row (dense_gradient's: the loss's, without an expanded copy)."""
    pid = tl.program_id(0)
    b = (pid // nblk).to(tl.int64)
    offs_i = (pid % nblk) * BLOCK_N + tl.arange(0, BLOCK_N)
    imask = offs_i < Kx
    g = tl.load(g_ptr + (b * Kx + offs_i) * g_stride, mask=imask, other=0.0)
    a = tl.load(a_ptr)
    r0 = tl.zeros([BLOCK_N], ACC)
    r1 = tl.zeros([BLOCK_N], ACC)
    for j0 in range(0, Ky, BLOCK_K):
        offs_j = j0 + tl.arange(0, BLOCK_K)
        z, s, t, valid = _tile(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, b, offs_i, offs_j, Kx, Ky, D, PREC, ACC,
                               BLOCK_D)  # fmt: skip
        e = tl.where(valid, g[:, None] * _dloss(z, t), 0.0)
        r0 += tl.sum(e * s, 1)
        r1 += tl.sum(e, 1)
        ea = tl.where(valid, e * a, 0.0)
        jv = tl.load(ly_ptr + b * Ky + offs_j, mask=offs_j < Ky, other=-1) >= 0
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < D
            ya = tl.load(y_ptr + (b * Ky + offs_j.to(tl.int64))[:, None] * D + offs_d[None, :],
                         mask=jv[:, None] & dmask[None, :], other=0.0).to(ACC)
            at = dx_ptr + (b * Kx + offs_i.to(tl.int64))[:, None] * D + offs_d[None, :]
            m2 = imask[:, None] & dmask[None, :]
            # the running sum in float64, as dy's
            tl.store(at, tl.load(at, mask=m2, other=0.0) + dot_acc(ea, ya, PREC, ACC).to(tl.float64), mask=m2)
    tl.store(rows_ptr + (b * Kx + offs_i) * 2, r0, mask=imask)
    tl.store(rows_ptr + (b * Kx + offs_i) * 2 + 1, r1, mask=imask)


@triton.jit
def _dy_kernel(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, g_ptr, g_stride, dy_ptr, Kx, Ky, D, kblk, splits, per,
               PREC: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_D: tl.constexpr):  # fmt: skip
    """Split s of the x rows [s * per, (s + 1) * per) (per a multiple of BLOCK_N) for a block of
    y rows: its partial dy, Σ_i (a g_i e_ij) x_i, into dy_ptr's float64 slice s (splits, B, Ky, D);
    the launcher sums the slices in order."""
    b, item = split_pid(kblk * splits)
    s = item // kblk
    offs_j = (item - s * kblk) * BLOCK_K + tl.arange(0, BLOCK_K)
    jmask = offs_j < Ky
    B = tl.num_programs(0) // (kblk * splits)
    dys = dy_ptr + s.to(tl.int64) * B * Ky * D
    for i0 in range(s * per, tl.minimum(Kx, (s + 1) * per), BLOCK_N):
        offs_i = i0 + tl.arange(0, BLOCK_N)
        z, s_, t, valid = _tile(x_ptr, y_ptr, lx_ptr, ly_ptr, a_ptr, c_ptr, b, offs_i, offs_j, Kx, Ky, D, PREC, ACC,
                                BLOCK_D)  # fmt: skip
        # (a g_i) (σ(z) - t): a per pair, as (a e) in dx (no register held across the loop)
        ga = tl.load(g_ptr + (b * Kx + offs_i) * g_stride, mask=offs_i < Kx, other=0.0) * tl.load(a_ptr)
        ea = tl.where(valid, ga[:, None] * _dloss(z, t), 0.0)
        iv = tl.load(lx_ptr + b * Kx + offs_i, mask=offs_i < Kx, other=-1) >= 0
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < D
            xa = tl.load(x_ptr + (b * Kx + offs_i.to(tl.int64))[:, None] * D + offs_d[None, :],
                         mask=iv[:, None] & dmask[None, :], other=0.0).to(ACC)
            at = dys + (b * Ky + offs_j.to(tl.int64))[:, None] * D + offs_d[None, :]
            m2 = jmask[:, None] & dmask[None, :]
            # the tile's product in ACC, the running sum in float64: a float32 one over the 5.8M
            # x rows of GPU_SHAPES' wide_image drifted 1.4e-5 (1.7e-3 relative) on the H200
            tl.store(at, tl.load(at, mask=m2, other=0.0) + dot_acc(tl.trans(ea), xa, PREC, ACC).to(tl.float64),
                     mask=m2)  # fmt: skip


# --------------------------------------------------------------------------------------
# Launchers


def _prepare(op, x, x_labels, y, y_labels, scale, bias):
    expect(x.dim() == 3 and y.dim() == 3 and x.shape[0] == y.shape[0] and x.shape[2] == y.shape[2], op,
           f"x must be (B, Kx, D) and y (B, Ky, D), got {tuple(x.shape)} and {tuple(y.shape)}")  # fmt: skip
    expect(x.dtype in FLOAT_TYPES and x.dtype == y.dtype, op, "x and y must share a float dtype, got ", x.dtype,
           " and ", y.dtype)  # fmt: skip
    expect_row_labels(x_labels, x, op, "x_labels")
    expect_row_labels(y_labels, y, op, "y_labels")
    expect(scale.numel() == 1 and bias.numel() == 1, op, "scale and bias must hold one element each")
    expect_same_device(op, x, x_labels, y, y_labels, scale, bias)
    st = stats_dtype(x.dtype)
    flags = {"PREC": dot_precision(x.dtype, x.device), "ACC": tl.float64 if st == torch.float64 else tl.float32,
             "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K, "BLOCK_D": BLOCK_D}  # fmt: skip
    return (x.contiguous(), x_labels.long().contiguous(), y.contiguous(), y_labels.long().contiguous(),
            scale.to(st).reshape(1), bias.to(st).reshape(1), st, flags)  # fmt: skip


@triton_variant("pair_bce")
def pair_bce_op(x, x_labels, y, y_labels, scale, bias):
    x, lx, y, ly, a, c, st, flags = _prepare("pair_bce", x, x_labels, y, y_labels, scale, bias)
    B, Kx, D = x.shape
    Ky = y.shape[1]
    out = torch.empty(B, Kx, dtype=st, device=x.device)  # every row stored (0 without y rows): no fill
    if B * Kx > 0:
        nblk = triton.cdiv(Kx, BLOCK_N)
        with device_ctx(x):
            _forward_kernel[grid_items(nblk, B)](x, y, lx, ly, a, c, out, Kx, Ky, D, nblk, **flags, num_warps=4)
    return out


@triton_variant("pair_bce_backward")
def pair_bce_backward_op(grad_out, x, x_labels, y, y_labels, scale, bias):
    op = "pair_bce_backward"
    xc, lx, yc, ly, a, c, st, flags = _prepare(op, x, x_labels, y, y_labels, scale, bias)
    B, Kx, D = xc.shape
    Ky = yc.shape[1]
    expect_sizes(grad_out, (B, Kx), op, "grad_out")
    expect_same_device(op, xc, grad_out)
    g = grad_out.to(st).contiguous()
    dx = torch.zeros(B, Kx, D, dtype=torch.float64, device=xc.device)
    rows = torch.zeros(B, Kx, 2, dtype=st, device=xc.device)
    nblk, kblk = triton.cdiv(Kx, BLOCK_N), triton.cdiv(Ky, BLOCK_K)
    # dy's programs split the x rows, as similarity_reduce's dr splits the queries: y's rows can be
    # few (GPU_SHAPES' wide_image: Ky = 2, one program walking 5.8M rows), and each split's sum is
    # float64, summed over the splits in order (deterministic)
    splits, per = row_splits(Kx, BLOCK_N, kblk, B)
    dy = torch.zeros(splits, B, Ky, D, dtype=torch.float64, device=xc.device)
    if B * Kx * Ky > 0:
        args = (xc, yc, lx, ly, a, c, g, 1)
        with device_ctx(xc):
            _dx_kernel[grid_items(nblk, B)](*args, dx, rows, Kx, Ky, D, nblk, **flags, num_warps=4)
            if D > 0:
                _dy_kernel[grid_items(kblk * splits, B)](*args, dy, Kx, Ky, D, kblk, splits, per, **flags,
                                                          num_warps=4)  # fmt: skip
    dy = dy.sum(0)
    sums = rows.reshape(-1, 2).sum(0)
    # Rows with a negative label take part in nothing: 0, whatever went through the products (a
    # valid row's NaN times an invalid pair's zero coefficient); here, not in the kernels' loops
    # (registers).
    zero = torch.zeros((), dtype=st, device=xc.device)
    dx = torch.where((lx >= 0)[..., None], dx, zero)
    dy = torch.where((ly >= 0)[..., None], dy, zero)
    # clones: views of one `sums` would alias each other (custom ops may not return aliases)
    return (dx.to(x.dtype), dy.to(y.dtype), sums[0].to(scale.dtype).reshape(scale.shape).clone(),
            sums[1].to(bias.dtype).reshape(bias.shape).clone())  # fmt: skip


def compile_specs():
    """(kernel, signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    specs = []
    for e, a, acc, precs in (("fp32", "fp32", tl.float32, ("ieee", "tf32")), ("fp64", "fp64", tl.float64, ("",)),
                             ("bf16", "fp32", tl.float32, ("",)), ("fp16", "fp32", tl.float32, ("",))):  # fmt: skip
        base = {"x_ptr": "*" + e, "y_ptr": "*" + e, "lx_ptr": "*i64", "ly_ptr": "*i64", "a_ptr": "*" + a,
                "c_ptr": "*" + a}  # fmt: skip
        for prec in precs:
            c = {"PREC": prec, "ACC": acc, "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K, "BLOCK_D": BLOCK_D}
            specs.append((_forward_kernel, {**base, "out_ptr": "*" + a}, c, 4))
            specs.append((_dx_kernel, {**base, "g_ptr": "*" + a, "dx_ptr": "*fp64", "rows_ptr": "*" + a}, c, 4))
            specs.append((_dy_kernel, {**base, "g_ptr": "*" + a, "dy_ptr": "*fp64"}, c, 4))
    return specs

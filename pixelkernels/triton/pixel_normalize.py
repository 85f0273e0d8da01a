"""Triton backend of pixel_normalize (csrc/common/pixel_normalize.h), F.normalize over D:

    y_p = x_p / max(||x_p||, eps)
    grad_x = (g - y (y . g)) / ||x_p||    when ||x_p|| > eps
           = g / eps                      otherwise (the clamp is active: y = x / eps is linear)

One program per (pixel block, image) (`grid_items`, so any B), elementwise, no workspace:
a first sweep over the D blocks sums x^2 (backward: also x . g) in registers, so the full
norm is known before anything is written; a second sweep re-reads the tile (from cache) and
writes. One read + one write of the map each way; D of any size (D blocks looped).
Contiguous and channels_last maps are read in place and the output has emb's strides
(empty_like); other strides are copied once. With ``upcast``, y (forward) and g (backward)
are float32 for half emb, so a reduction over y sees no half rounding. Accumulates in float32 (float64 for float64
input, and in the backward of float32 input: its g - y (y . g) can cancel to 1/1000 of its terms); eps is passed as float64 and rounded to that type, as the C++ kernels do. A NaN in
a pixel makes that pixel's outputs NaN (n != n keeps the NaN through the clamp) and nothing
else.
"""

import struct

import torch
import triton
import triton.language as tl

from .._dtypes import stats_dtype
from .._schema import triton_variant
from ._common import (
    acc_of,
    device_ctx,
    expect_map,
    expect_same_device,
    expect_sizes,
    grid_items,
    load_tile,
    pixel_blocks,
    pixel_offsets,
    pixel_view,
    split_pid,
    warps,
    with_strides_of,
)


@triton.jit
def _forward_kernel(x_ptr, y_ptr, P, D, eps: tl.float64, sb, sd, sp, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
                    BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    ss = tl.zeros([BLOCK_P], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        ss += tl.sum(x * x, axis=1)
    e = tl.full([], eps, ACC)  # acc_t(eps), as in C++
    n = tl.sqrt(ss)
    inv = 1.0 / tl.where((n > e) | (n != n), n, e)  # noqa: PLR0124  (NaN propagates)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m = pmask[:, None] & (offs_d < D)[None, :]
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        offs = pixel_offsets(b, offs_p, offs_d, sb, sd, sp)
        tl.store(y_ptr + offs, (x * inv[:, None]).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _backward_kernel(x_ptr, g_ptr, gx_ptr, P, D, eps: tl.float64, sb, sd, sp, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    ss = tl.zeros([BLOCK_P], ACC)
    dot = tl.zeros([BLOCK_P], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        g = load_tile(g_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        ss += tl.sum(x * x, axis=1)
        dot += tl.sum(x * g, axis=1)
    e = tl.full([], eps, ACC)
    n = tl.sqrt(ss)
    clamped = n <= e
    inv = 1.0 / tl.where((n > e) | (n != n), n, e)  # noqa: PLR0124  (NaN propagates)
    dot = dot * inv
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m = pmask[:, None] & (offs_d < D)[None, :]
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        g = load_tile(g_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        y = x * inv[:, None]
        grad = tl.where(clamped[:, None], g * inv[:, None], inv[:, None] * (g - y * dot[:, None]))
        offs = pixel_offsets(b, offs_p, offs_d, sb, sd, sp)
        tl.store(gx_ptr + offs, grad.to(gx_ptr.dtype.element_ty), mask=m)


def _launch(kernel, x, out, *extra, eps, acc=None):
    B, D, H, W = x.shape
    P = H * W
    x, (sb, sd, sp) = pixel_view(x)
    extra = [with_strides_of(e, x) for e in extra]
    tmp = out if out.stride() == x.stride() else torch.empty_strided(x.shape, x.stride(), dtype=out.dtype, device=x.device)
    bp, bd = pixel_blocks(P, D)
    with device_ctx(x):
        kernel[grid_items(triton.cdiv(P, bp), B)](x, *extra, tmp, P, D, float(eps), sb, sd, sp, ACC=acc or acc_of(x), BLOCK_P=bp,
                                                   BLOCK_D=bd, num_warps=warps(bp * bd))  # fmt: skip
    if tmp is not out:
        out.copy_(tmp)
    return out


def _side_dtype(emb: torch.Tensor, upcast: bool) -> torch.dtype:
    """The dtype of y (forward) and g (backward): emb's, or float32 for half emb with upcast."""
    return stats_dtype(emb.dtype) if upcast else emb.dtype


@triton_variant("pixel_normalize")
def pixel_normalize_op(emb, eps, upcast):
    expect_map(emb, "pixel_normalize")
    out = torch.empty_like(emb, dtype=_side_dtype(emb, upcast))
    if emb.numel() == 0:
        return out
    return _launch(_forward_kernel, emb, out, eps=eps)


@triton_variant("pixel_normalize_backward")
def pixel_normalize_backward_op(grad_normalized, emb, eps, upcast):
    op = "pixel_normalize_backward"
    expect_map(emb, op)
    expect_sizes(grad_normalized, emb.shape, op, "grad_normalized")
    expect_same_device(op, emb, grad_normalized)
    out = torch.empty_like(emb)
    if emb.numel() == 0:
        return out
    g = grad_normalized.to(_side_dtype(emb, upcast))
    if emb.dtype == torch.float32:
        # float32 maps in float64 (the cancellation of g - y (y . g): csrc/cpu/pixel_normalize.cpp),
        # eps rounded to float32 first (the forward's clamp threshold)
        return _launch(_backward_kernel, emb, out, g, eps=_as_float32(eps), acc=tl.float64)
    return _launch(_backward_kernel, emb, out, g, eps=eps)


def _as_float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def compile_specs():
    """(kernel, pointer/scalar signature, constexprs, num_warps) for the offline GPU compile
    check (.ci/triton_compile_check.py); other arguments compile as i32."""
    specs = []
    for e, acc in (("fp32", tl.float32), ("fp64", tl.float64), ("bf16", tl.float32), ("fp16", tl.float32)):
        for bp, bd in ((256, 16), (64, 64)):
            nw = warps(bp * bd)  # the launcher's (it was 4 for 256 x 16, which runs 8 warps)
            c = {"ACC": acc, "BLOCK_P": bp, "BLOCK_D": bd}
            for side in dict.fromkeys((e, "fp64" if e == "fp64" else "fp32")):  # emb's dtype, upcast
                specs.append((_forward_kernel, {"x_ptr": "*" + e, "y_ptr": "*" + side, "eps": "fp64"}, c, nw))
                bwd = dict(c, ACC=tl.float64) if e == "fp32" else c  # float32 maps' backward in float64
                specs.append(
                    (
                        _backward_kernel,
                        {"x_ptr": "*" + e, "g_ptr": "*" + side, "gx_ptr": "*" + e, "eps": "fp64"},
                        bwd,
                        nw,
                    )
                )
    return specs

"""minmax_scale on Triton (csrc/common/minmax_scale.h): a program per row, blocks of the row in
order for its extremes (or the backward's sums), then the write; one launch each way."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, expect_same_device, expect_sizes, f64_bits, f64_from_bits


@triton.jit
def _extremes(x_ptr, N, BLOCK: tl.constexpr):
    """(lo, hi) of a row, NaN when the row has a NaN (torch.amin/amax)."""
    offs = tl.arange(0, BLOCK)
    lo = tl.full([BLOCK], float("inf"), x_ptr.dtype.element_ty)
    hi = tl.full([BLOCK], float("-inf"), x_ptr.dtype.element_ty)
    nan = tl.zeros([BLOCK], tl.int32)
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        nan = tl.maximum(nan, (m & (v != v)).to(tl.int32))
        lo = tl.where(m & (v < lo), v, lo)
        hi = tl.where(m & (v > hi), v, hi)
    has_nan = tl.max(nan, axis=0) > 0
    return tl.where(has_nan, float("nan"), tl.min(lo, axis=0)), tl.where(has_nan, float("nan"), tl.max(hi, axis=0))


@triton.jit
def _is(v, e):
    return tl.where(e != e, v != v, v == e)


@triton.jit
def _forward_kernel(x_ptr, y_ptr, N, eps_hi, eps_lo, BLOCK: tl.constexpr):
    eps = f64_from_bits(eps_hi, eps_lo).to(x_ptr.dtype.element_ty)
    b = tl.program_id(0).to(tl.int64)
    x_ptr += b * N
    y_ptr += b * N
    lo, hi = _extremes(x_ptr, N, BLOCK)
    den = hi - lo + eps
    offs = tl.arange(0, BLOCK)
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        tl.store(y_ptr + i0 + offs, (v - lo) / den, mask=m)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, gx_ptr, N, eps_hi, eps_lo, BLOCK: tl.constexpr):
    eps = f64_from_bits(eps_hi, eps_lo).to(x_ptr.dtype.element_ty)
    b = tl.program_id(0).to(tl.int64)
    x_ptr += b * N
    g_ptr += b * N
    gx_ptr += b * N
    lo, hi = _extremes(x_ptr, N, BLOCK)
    den = hi - lo + eps
    offs = tl.arange(0, BLOCK)
    # the sums in float64 (csrc/common/minmax_scale.h, Sums)
    s_g = tl.zeros([BLOCK], tl.float64)
    s_gy = tl.zeros([BLOCK], tl.float64)
    n_lo = tl.zeros([BLOCK], tl.float64)
    n_hi = tl.zeros([BLOCK], tl.float64)
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        g = tl.load(g_ptr + i0 + offs, mask=m, other=0.0)
        s_g += g.to(tl.float64)
        s_gy += tl.where(m, g * ((v - lo) / den), 0.0).to(tl.float64)
        n_lo += (m & _is(v, lo)).to(n_lo.dtype)
        n_hi += (m & _is(v, hi)).to(n_hi.dtype)
    sg, sgy = tl.sum(s_g, axis=0), tl.sum(s_gy, axis=0)
    d_lo = ((sgy - sg) / den / tl.sum(n_lo, axis=0)).to(x_ptr.dtype.element_ty)
    d_hi = (-sgy / den / tl.sum(n_hi, axis=0)).to(x_ptr.dtype.element_ty)
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        g = tl.load(g_ptr + i0 + offs, mask=m, other=0.0)
        gx = g / den + d_lo * _is(v, lo).to(g.dtype) + d_hi * _is(v, hi).to(g.dtype)
        tl.store(gx_ptr + i0 + offs, gx, mask=m)


def _block(N: int, most: int = 1024) -> int:
    """Values of a row per step: the backward's four float64 sums a value take 512 (at 1024 its
    float64 variant needed 168 registers a thread and spilled)."""
    return max(16, min(triton.next_power_of_2(max(N, 1)), most))


def _expect_x(x, op):
    expect(x.dim() == 2, op, "x must be (B, N), got ", list(x.shape))
    expect(x.dtype in (torch.float32, torch.float64), op, "x must be float32 or float64, got ", x.dtype)


@triton_variant("minmax_scale")
def minmax_scale_op(x, eps):
    _expect_x(x, "minmax_scale")
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        with device_ctx(x):
            _forward_kernel[(x.shape[0],)](x, y, x.shape[1], *f64_bits(eps), BLOCK=_block(x.shape[1]), num_warps=4)
    return y


@triton_variant("minmax_scale_backward")
def minmax_scale_backward_op(grad_y, x, eps):
    op = "minmax_scale_backward"
    _expect_x(x, op)
    expect_sizes(grad_y, x.shape, op, "grad_y")
    expect_same_device(op, x, grad_y)
    x, g = x.contiguous(), grad_y.to(x.dtype).contiguous()
    gx = torch.empty_like(x)
    if x.numel():
        with device_ctx(x):
            _backward_kernel[(x.shape[0],)](g, x, gx, x.shape[1], *f64_bits(eps), BLOCK=_block(x.shape[1], 512),
                                            num_warps=4)  # fmt: skip
    return gx


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    specs = []
    for a in ("fp32", "fp64"):
        specs.append((_forward_kernel, {"x_ptr": "*" + a, "y_ptr": "*" + a}, {"BLOCK": 1024}, 4))
        specs.append((_backward_kernel, {"g_ptr": "*" + a, "x_ptr": "*" + a, "gx_ptr": "*" + a}, {"BLOCK": 512}, 4))
    return specs

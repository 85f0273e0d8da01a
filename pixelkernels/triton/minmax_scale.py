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
    # RowGrad's sums in float64 (csrc/common/minmax_scale.h): the extremes' own gradients, the
    # others' g y and g c, c = 1 - y computed directly
    n_lo = tl.zeros([BLOCK], tl.float64)
    n_hi = tl.zeros([BLOCK], tl.float64)
    g_lo = tl.zeros([BLOCK], tl.float64)
    g_hi = tl.zeros([BLOCK], tl.float64)
    s_y = tl.zeros([BLOCK], tl.float64)
    s_c = tl.zeros([BLOCK], tl.float64)
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        g = tl.load(g_ptr + i0 + offs, mask=m, other=0.0).to(tl.float64)
        is_lo, is_hi = m & _is(v, lo), m & _is(v, hi)
        n_lo += is_lo.to(tl.float64)
        n_hi += is_hi.to(tl.float64)
        g_lo += tl.where(is_lo, g, 0.0)
        g_hi += tl.where(is_hi, g, 0.0)
        s_y += tl.where(m & ~is_hi, g * ((v - lo) / den).to(tl.float64), 0.0)
        s_c += tl.where(m & ~is_lo, g * ((hi - v + eps) / den).to(tl.float64), 0.0)
    nl, nh, gl, gh = tl.sum(n_lo, axis=0), tl.sum(n_hi, axis=0), tl.sum(g_lo, axis=0), tl.sum(g_hi, axis=0)
    sy, sc = tl.sum(s_y, axis=0), tl.sum(s_c, axis=0)
    sy_all = sy + gh * ((hi - lo) / den).to(tl.float64)
    bad = (sy_all - sy_all) != 0.0  # NaN or inf: NaN everywhere
    den64 = den.to(tl.float64)
    share_lo, share_hi = gl / nl, gh / nh
    push_lo = -sc / den64 / nl
    push_hi = (gh * (eps / den).to(tl.float64) - sy) / den64 / nh
    for i0 in range(0, N, BLOCK):
        m = i0 + offs < N
        v = tl.load(x_ptr + i0 + offs, mask=m, other=0.0)
        g = tl.load(g_ptr + i0 + offs, mask=m, other=0.0)
        is_lo, is_hi = _is(v, lo), _is(v, hi)
        ext = (g.to(tl.float64) - tl.where(is_lo, share_lo, 0.0) - tl.where(is_hi, share_hi, 0.0)) / den64
        ext += tl.where(is_lo, push_lo, 0.0) + tl.where(is_hi, push_hi, 0.0)
        gx = tl.where(is_lo | is_hi, ext.to(g.dtype), g / den)
        gx = tl.where(bad, float("nan"), gx)
        tl.store(gx_ptr + i0 + offs, gx, mask=m)


def _block(N: int, most: int = 1024) -> int:
    """Values of a row per step: the backward's six float64 sums a value take 256 (four of them
    at 1024 needed 168 registers a thread in the float64 variant and spilled)."""
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
            _backward_kernel[(x.shape[0],)](g, x, gx, x.shape[1], *f64_bits(eps), BLOCK=_block(x.shape[1], 256),
                                            num_warps=4)  # fmt: skip
    return gx


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    specs = []
    for a in ("fp32", "fp64"):
        specs.append((_forward_kernel, {"x_ptr": "*" + a, "y_ptr": "*" + a}, {"BLOCK": 1024}, 4))
        specs.append((_backward_kernel, {"g_ptr": "*" + a, "x_ptr": "*" + a, "gx_ptr": "*" + a}, {"BLOCK": 256}, 4))
    return specs

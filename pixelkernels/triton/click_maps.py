"""Triton backend of click_maps (csrc/common/click_maps.h): one program per block of pixels of
one image (``grid_items``), both channels; a loop over the image's clicks, each read from the
points as they are and scaled as the C++ kernels scale them (float64, rounded once to float32,
+inf for a padding row) into scalars every lane shares, a running minimum of the squared distance
in registers, then one masked store per channel. One launch, no preparation; no lane branches.

tanh has no Triton primitive the interpreter also runs: tanh(z) = (1 - t) / (1 + t) with
t = exp(-2z) for z >= 0 (absolute error ~1e-7, inside SPEC §4's float32 atol where z is
small); the square root is the correctly rounded ``sqrt_rn``.
"""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, f64_bits, f64_from_bits, grid_items, split_pid

_MODES = {"distance": 0, "disk": 1, "tanh": 2}
_BLOCK = 1024


@triton.jit
def _scaled(pt, s):
    """Click row pt (y, x, ·) scaled: (y·s, x·s) in float64 rounded once to float32, +inf for a
    padding row (max(y, x) < 0, or a NaN coordinate): csrc/common/click_maps.h scaled_click."""
    py = tl.load(pt).to(tl.float64)
    px = tl.load(pt + 1).to(tl.float64)
    valid = (py == py) & (px == px) & ((py >= 0) | (px >= 0))
    inf = float("inf")
    return tl.where(valid, (py * s).to(tl.float32), inf), tl.where(valid, (px * s).to(tl.float32), inf)


@triton.jit
def _click_maps_kernel(pt_ptr, out_ptr, N, H, W, s_hi, s_lo, r2, max_distance, MODE: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
    P = H * W
    s = f64_from_bits(s_hi, s_lo)
    b, blk = split_pid(tl.cdiv(P, BLOCK))
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < P
    i = offs // W
    fi = i.to(tl.float32)
    fj = (offs - i * W).to(tl.float32)
    d0 = tl.full([BLOCK], float("inf"), tl.float32)
    d1 = tl.full([BLOCK], float("inf"), tl.float32)
    pos = pt_ptr + b * 6 * N  # (2N, 3): the positive channel's N rows, then the negative's
    neg = pos + 3 * N
    for n in range(0, N):
        py, px = _scaled(pos + 3 * n, s)
        ny, nx = _scaled(neg + 3 * n, s)
        ay = fi - py
        ax = fj - px
        ey = fi - ny
        ex = fj - nx
        d0 = tl.minimum(d0, ay * ay + ax * ax)
        d1 = tl.minimum(d1, ey * ey + ex * ex)
    row = out_ptr + b * 2 * P
    tl.store(row + offs, _value(d0, r2, max_distance, MODE), mask=pmask)
    tl.store(row + P + offs, _value(d1, r2, max_distance, MODE), mask=pmask)


@triton.jit
def _value(d2, r2, max_distance, MODE: tl.constexpr):
    if MODE == 0:
        v = tl.minimum(tl.sqrt_rn(d2), max_distance)
    elif MODE == 1:
        v = tl.where(d2 <= r2, 1.0, 0.0)
    else:
        t = tl.exp(-4.0 * tl.sqrt_rn(d2 / r2))  # tanh(z) with z = 2 sqrt(d2 / r2); inf -> t = 0: 1
        v = (1.0 - t) / (1.0 + t)
    return v


@triton_variant("click_maps")
def click_maps_op(points, height, width, mode, radius, spatial_scale, max_distance):
    op = "click_maps"
    expect(points.dim() == 3 and points.shape[2] == 3 and points.shape[1] % 2 == 0, op,
           "points must be (B, 2N, 3), got ", tuple(points.shape))  # fmt: skip
    expect(points.is_floating_point(), op, "points must be a float tensor, got ", points.dtype)
    expect(height >= 0 and width >= 0, op, "height and width must be >= 0, got ", height, " and ", width)
    expect(mode in _MODES, op, "mode must be 'distance', 'disk' or 'tanh', got '", mode, "'")
    expect(radius >= 0 and spatial_scale > 0 and max_distance >= 0, op,
           "need radius >= 0, spatial_scale > 0, max_distance >= 0")  # fmt: skip
    B, N = points.shape[0], points.shape[1] // 2
    P = height * width
    expect(P < 2**31, op, "height * width must be < 2^31, got ", P)
    out = torch.empty(B, 2, height, width, dtype=torch.float32, device=points.device)
    if out.numel() == 0:
        return out
    pts = points.detach().contiguous()
    r = radius * spatial_scale
    with device_ctx(out):
        _click_maps_kernel[grid_items(triton.cdiv(P, _BLOCK), B)](
            pts, out, N, height, width, *f64_bits(spatial_scale), r * r, max_distance, MODE=_MODES[mode],
            BLOCK=_BLOCK, num_warps=8,
        )  # fmt: skip
    return out


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    return [(_click_maps_kernel, {"pt_ptr": pt, "out_ptr": "*fp32", "s_hi": "i32", "s_lo": "i32", "r2": "fp32",
                                  "max_distance": "fp32"}, {"MODE": m, "BLOCK": _BLOCK}, 8)
            for m in range(3) for pt in ("*fp32", "*fp64")]  # fmt: skip

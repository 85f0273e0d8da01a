"""Triton backend of click_maps (csrc/common/click_maps.h): one program per block of pixels of
one image (``grid_items``), both channels; a loop over the image's clicks, each a scalar load
of its scaled (y, x) that every lane shares, a running minimum of the squared distance in
registers, then one masked store per channel. The clicks come scaled, in float32, with +inf
for padding rows (the launcher's preparation, as the C++ op's), so no lane branches.

tanh has no Triton primitive the interpreter also runs: tanh(z) = (1 - t) / (1 + t) with
t = exp(-2z) for z >= 0 (absolute error ~1e-7, inside SPEC §4's float32 atol where z is
small); the square root is the correctly rounded ``sqrt_rn``.
"""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ..reference.click_maps import scaled_clicks
from ._common import device_ctx, expect, grid_items, split_pid

_MODES = {"distance": 0, "disk": 1, "tanh": 2}
_BLOCK = 1024


@triton.jit
def _click_maps_kernel(k_ptr, out_ptr, N, H, W, r2, max_distance, MODE: tl.constexpr, BLOCK: tl.constexpr):
    P = H * W
    b, blk = split_pid(tl.cdiv(P, BLOCK))
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    pmask = offs < P
    i = offs // W
    fi = i.to(tl.float32)
    fj = (offs - i * W).to(tl.float32)
    d0 = tl.full([BLOCK], float("inf"), tl.float32)
    d1 = tl.full([BLOCK], float("inf"), tl.float32)
    pos = k_ptr + b * 4 * N
    neg = pos + 2 * N
    for n in range(0, N):
        ay = fi - tl.load(pos + 2 * n)
        ax = fj - tl.load(pos + 2 * n + 1)
        ey = fi - tl.load(neg + 2 * n)
        ex = fj - tl.load(neg + 2 * n + 1)
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
    clicks = scaled_clicks(points, spatial_scale).to(torch.float32).contiguous()
    r = radius * spatial_scale
    with device_ctx(out):
        _click_maps_kernel[grid_items(triton.cdiv(P, _BLOCK), B)](
            clicks, out, N, height, width, r * r, max_distance, MODE=_MODES[mode], BLOCK=_BLOCK, num_warps=8
        )
    return out


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    return [(_click_maps_kernel, {"k_ptr": "*fp32", "out_ptr": "*fp32", "r2": "fp32", "max_distance": "fp32"},
             {"MODE": m, "BLOCK": _BLOCK}, 8) for m in range(3)]  # fmt: skip

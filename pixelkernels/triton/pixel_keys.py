"""Triton backend of pixel_keys (csrc/common/pixel_keys.h): one program per block of pixels of one
image (``grid_items``); the image's hash once per program, then one key per lane. In int64 with
the multiplications by 16-bit halves, as the reference's _mulmod32: no product reaches 2^63, so
the values are the same under the interpreter (numpy) and on a GPU."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, grid_items, split_pid

_BLOCK = 1024
_M32 = 0xFFFFFFFF


@triton.jit
def _mulmod32(x, C: tl.constexpr):
    return (x * (C & 0xFFFF) + (((x * (C >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF


@triton.jit
def _mix32(x):
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


@triton.jit
def _image_hash(s, stream):
    """h_b of an int64 seed and stream (csrc/common/pixel_keys.h image_hash)."""
    lo = s & 0xFFFFFFFF
    hi = (s >> 32) & 0xFFFFFFFF  # the arithmetic shift's sign bits masked off
    return _mix32(lo ^ _mix32(hi ^ _mix32(stream & 0xFFFFFFFF)))


@triton.jit
def _keys_kernel(seeds_ptr, keys_ptr, P, stream_bits, BLOCK: tl.constexpr):
    b, blk = split_pid(tl.cdiv(P, BLOCK))
    h = _image_hash(tl.load(seeds_ptr + b), stream_bits)
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(keys_ptr + b * P + offs, _mix32(offs ^ h) << 10, mask=offs < P)


@triton_variant("pixel_keys")
def pixel_keys_op(seeds, num_pixels, stream):
    op = "pixel_keys"
    expect(seeds.dim() == 1 and seeds.dtype == torch.int64, op, "seeds must be a (B,) int64 tensor, got ",
           seeds.dtype, " of shape ", tuple(seeds.shape))  # fmt: skip
    expect(0 <= num_pixels < 2**31, op, "num_pixels must be in [0, 2^31), got ", num_pixels)
    s = seeds.contiguous()
    keys = torch.empty(s.shape[0], num_pixels, dtype=torch.int64, device=s.device)
    if keys.numel() == 0:
        return keys
    # The stream's 32 bits with bit 32 set: Triton types an int argument by its value (i32, then
    # u32 in [2^31, 2^32), whose widening the interpreter got wrong); at >= 2^32 it is always i64.
    with device_ctx(keys):
        _keys_kernel[grid_items(triton.cdiv(num_pixels, _BLOCK), s.shape[0])](
            s, keys, num_pixels, (stream & _M32) | (1 << 32), BLOCK=_BLOCK, num_warps=4
        )
    return keys


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    return [(_keys_kernel, {"seeds_ptr": "*i64", "keys_ptr": "*i64", "stream_bits": "i64"}, {"BLOCK": _BLOCK}, 4)]

"""Triton backend of center_distance (csrc/common/center_distance.h), u = x_p - center[b]:

    dist[b, p]        = ||u||            (squared: ||u||^2)
    grad_emb[b, :, p] = 2 g u            (squared)
                      = g u / ||u||      (else; 0 where ||u|| == 0, NaN where it is NaN)
    grad_center[b]    = - sum_p grad_emb[b, :, p]

The center is read in the accumulation type (float32; float64 for float64 emb); dist is
written in emb's dtype. The backward recomputes the distance in the accumulation type from
emb (the forward's output may be rounded to half, and g / dist would carry that rounding).

* `_forward_kernel`, grid ((pixel block, image)): squares summed over the D blocks in
  registers, one write per pixel. One read of emb.
* `_backward_kernel`, grid ((pixel block, image)): a first sweep over the D blocks gives
  the distance, a second writes grad_emb (emb's strides) and stores the block's (D) partial
  of grad_center to a (B, blocks, D) workspace (~D/BLOCK_P per pixel); the launcher adds
  the blocks in a fixed order (no atomics: bitwise reproducible).

Contiguous and channels_last maps are read in place (other strides copied once); the batch
is on the flat axis 0 (`grid_items`), so any B runs; no host syncs.
"""

import torch
import triton
import triton.language as tl

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
    stats_dtype,
    warps,
)


@triton.jit
def _sumsq(x_ptr, c_ptr, b, offs_p, pmask, P, D, sb, sd, sp, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
           BLOCK_D: tl.constexpr):  # fmt: skip
    ss = tl.zeros([BLOCK_P], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        c = tl.load(c_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, dmask, sb, sd, sp, ACC)
        u = tl.where(dmask[None, :], x - c[None, :], 0.0)
        ss += tl.sum(u * u, axis=1)
    return ss


@triton.jit
def _forward_kernel(x_ptr, c_ptr, dist_ptr, P, D, sb, sd, sp, SQUARED: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    b, blk = split_pid(tl.cdiv(P, BLOCK_P))
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    ss = _sumsq(x_ptr, c_ptr, b, offs_p, pmask, P, D, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
    out = ss if SQUARED else tl.sqrt(ss)
    tl.store(dist_ptr + b * P + offs_p, out.to(dist_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _backward_kernel(x_ptr, c_ptr, g_ptr, gx_ptr, part_ptr, P, D, sb, sd, sp, SQUARED: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    nblk = tl.cdiv(P, BLOCK_P)
    b, blk = split_pid(nblk)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    ss = _sumsq(x_ptr, c_ptr, b, offs_p, pmask, P, D, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
    g = tl.load(g_ptr + b * P + offs_p, mask=pmask, other=0.0).to(ACC)
    if SQUARED:
        f = 2.0 * g
    else:
        dist = tl.sqrt(ss)
        nan = dist != dist  # noqa: PLR0124  (NaN propagates)
        f = tl.where(nan, dist, tl.where(dist > 0, g / tl.where(dist > 0, dist, 1.0), 0.0))
    f = tl.where(pmask, f, 0.0)
    row = part_ptr + (b * nblk + blk) * D
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        c = tl.load(c_ptr + b * D + offs_d, mask=dmask, other=0.0).to(ACC)
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, dmask, sb, sd, sp, ACC)
        m = pmask[:, None] & dmask[None, :]
        v = tl.where(m, f[:, None] * (x - c[None, :]), 0.0)
        tl.store(gx_ptr + pixel_offsets(b, offs_p, offs_d, sb, sd, sp), v.to(gx_ptr.dtype.element_ty), mask=m)
        tl.store(row + offs_d, -tl.sum(v, axis=0), mask=dmask)


def _blocks(P, D):
    return pixel_blocks(P, D, tile=2048, max_d=32)


@triton_variant("center_distance")
def center_distance_op(emb, center, squared):
    op = "center_distance"
    expect_map(emb, op)
    expect_sizes(center, emb.shape[:2], op, "center")
    expect_same_device(op, emb, center)
    B, D, H, W = emb.shape
    P = H * W
    dist = torch.empty(B, H, W, dtype=emb.dtype, device=emb.device)
    if dist.numel() == 0:
        return dist
    x, (sb, sd, sp) = pixel_view(emb)
    c = center.to(stats_dtype(emb.dtype)).contiguous()
    bp, bd = _blocks(P, D)
    with device_ctx(x):
        _forward_kernel[grid_items(triton.cdiv(P, bp), B)](x, c, dist, P, D, sb, sd, sp, SQUARED=bool(squared),
                                                           ACC=acc_of(c), BLOCK_P=bp, BLOCK_D=bd,
                                                           num_warps=warps(bp * bd))  # fmt: skip
    return dist


@triton_variant("center_distance_backward")
def center_distance_backward_op(grad_dist, emb, center, squared, acc_grad):
    op = "center_distance_backward"
    expect_map(emb, op)
    expect_sizes(center, emb.shape[:2], op, "center")
    expect_sizes(grad_dist, (emb.shape[0], *emb.shape[2:]), op, "grad_dist")
    expect_same_device(op, emb, center, grad_dist)
    B, D, H, W = emb.shape
    P = H * W
    st = stats_dtype(emb.dtype)
    # acc_grad: emb's gradient in the accumulation dtype (unrounded, for menet_saliency to add to)
    grad_emb = torch.empty_like(emb, dtype=st if acc_grad else emb.dtype)
    if grad_emb.numel() == 0:
        return grad_emb, torch.zeros(B, D, dtype=center.dtype, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    out = grad_emb if grad_emb.stride() == x.stride() else torch.empty_strided(
        x.shape, x.stride(), dtype=grad_emb.dtype, device=x.device)  # fmt: skip
    c = center.to(st).contiguous()
    bp, bd = _blocks(P, D)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, D, dtype=st, device=emb.device)
    with device_ctx(x):
        _backward_kernel[grid_items(nblk, B)](x, c, grad_dist.to(emb.dtype).contiguous(), out, part, P, D, sb, sd, sp,
                                              SQUARED=bool(squared), ACC=acc_of(c), BLOCK_P=bp, BLOCK_D=bd,
                                              num_warps=warps(bp * bd))  # fmt: skip
    if out is not grad_emb:
        grad_emb.copy_(out)
    return grad_emb, part.sum(1).to(center.dtype)


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check
    (.ci/triton_compile_check.py); other arguments compile as i32."""
    specs = []
    for e, a, acc in (("fp32", "fp32", tl.float32), ("fp64", "fp64", tl.float64), ("bf16", "fp32", tl.float32),
                      ("fp16", "fp32", tl.float32)):  # fmt: skip
        for sq in (False, True):
            for bp, bd in ((128, 16), (64, 32)):
                nw = warps(bp * bd)  # the launcher's (it was 4 for 128 x 16, which runs 8 warps)
                c = {"SQUARED": sq, "ACC": acc, "BLOCK_P": bp, "BLOCK_D": bd}
                specs.append(
                    (_forward_kernel, {"x_ptr": "*" + e, "c_ptr": "*" + a, "dist_ptr": "*" + e}, c, nw)
                )
                specs.append((_backward_kernel, {"x_ptr": "*" + e, "c_ptr": "*" + a, "g_ptr": "*" + e,
                                                 "gx_ptr": "*" + e, "part_ptr": "*" + a}, c, nw))  # fmt: skip
    return specs

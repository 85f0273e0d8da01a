"""Triton backend of center_distance (csrc/common/center_distance.h): dist = ||x − c|| per
pixel (or its square). Forward: one program per (pixel block, image), squares summed over
the D blocks. Backward: the distance is recomputed in the accumulation type, the gradient
written, and each program's (D) partial of grad_center stored and added over blocks in a
fixed order (deterministic).
"""

import torch
import triton
import triton.language as tl

from ._common import (
    acc_of,
    device_ctx,
    grid_items,
    load_tile,
    pixel_blocks,
    pixel_offsets,
    pixel_view,
    split_pid,
    stats_dtype,
    warps,
    with_strides_of,
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
        f = tl.where(dist != dist, dist, tl.where(dist > 0, g / tl.where(dist > 0, dist, 1.0), 0.0))
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


@torch.library.custom_op("pixelkernels::center_distance_triton", mutates_args=())
def center_distance_op(emb: torch.Tensor, center: torch.Tensor, squared: bool) -> torch.Tensor:
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


@torch.library.custom_op("pixelkernels::center_distance_backward_triton", mutates_args=())
def center_distance_backward_op(grad_dist: torch.Tensor, emb: torch.Tensor, center: torch.Tensor,
                                squared: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    B, D, H, W = emb.shape
    P = H * W
    st = stats_dtype(emb.dtype)
    grad_emb = torch.empty_like(emb)
    if grad_emb.numel() == 0:
        return grad_emb, torch.zeros(B, D, dtype=center.dtype, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    out = grad_emb if grad_emb.stride() == x.stride() else with_strides_of(None, x)
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
    specs = []
    for e, a, acc in (("fp32", "fp32", tl.float32), ("fp64", "fp64", tl.float64), ("bf16", "fp32", tl.float32),
                      ("fp16", "fp32", tl.float32)):  # fmt: skip
        for sq in (False, True):
            c = {"SQUARED": sq, "ACC": acc, "BLOCK_P": 128, "BLOCK_D": 16}
            specs.append((_forward_kernel, {"x_ptr": "*" + e, "c_ptr": "*" + a, "dist_ptr": "*" + e}, c, 4))
            specs.append((_backward_kernel, {"x_ptr": "*" + e, "c_ptr": "*" + a, "g_ptr": "*" + e, "gx_ptr": "*" + e,
                                             "part_ptr": "*" + a}, c, 4))  # fmt: skip
    return specs

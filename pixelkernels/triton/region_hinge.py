"""Triton backend of region_hinge (csrc/common/region_hinge.h): per region, the sum of
[||x − μ_r|| − δ]₊² over its pixels. One program per (pixel block, image): labels at their own
width, the own centroid gathered per D block, then one masked sum per region into the
program's partial row; partials are added over blocks in a fixed order (deterministic).
The backward writes the gradient in the same sweep and keeps an (R, D) partial of the
centroids' gradient per program. Work per program grows with R (a loop over regions), so
this backend suits the few-instance case of the discriminative loss (R ≲ 100).
"""

import torch
import triton
import triton.language as tl

from ._common import (
    acc_of,
    device_ctx,
    grid_items,
    load_regions,
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
def _distance(x_ptr, c_ptr, b, offs_p, pmask, valid, region, P, D, R, sb, sd, sp, ACC: tl.constexpr,
              BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    ss = tl.zeros([BLOCK_P], ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        m = valid[:, None] & (offs_d < D)[None, :]
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, offs_d < D, sb, sd, sp, ACC)
        c = tl.load(c_ptr + (b * R + region)[:, None] * D + offs_d[None, :], mask=m, other=0.0).to(ACC)
        u = tl.where(m, x - c, 0.0)
        ss += tl.sum(u * u, axis=1)
    return tl.sqrt(ss)


@triton.jit
def _forward_kernel(x_ptr, lab_ptr, c_ptr, part_ptr, P, D, R, ignore_index, delta, sb, sd, sp, ACC: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    nblk = tl.cdiv(P, BLOCK_P)
    b, blk = split_pid(nblk)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    valid, region = load_regions(lab_ptr + b * P, offs_p, pmask, R, ignore_index)
    d = _distance(x_ptr, c_ptr, b, offs_p, pmask, valid, region, P, D, R, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
    h = tl.maximum(d - delta, 0.0)
    val = tl.where(valid, tl.where(d != d, d, h * h), 0.0)
    row = part_ptr + (b * nblk + blk) * R
    for r in range(R):
        tl.store(row + r, tl.sum(tl.where(valid & (region == r), val, 0.0), axis=0))


@triton.jit
def _backward_kernel(x_ptr, lab_ptr, c_ptr, gh_ptr, gx_ptr, part_ptr, P, D, R, ignore_index, delta, sb, sd, sp,
                     ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    nblk = tl.cdiv(P, BLOCK_P)
    b, blk = split_pid(nblk)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = offs_p < P
    valid, region = load_regions(lab_ptr + b * P, offs_p, pmask, R, ignore_index)
    d = _distance(x_ptr, c_ptr, b, offs_p, pmask, valid, region, P, D, R, sb, sd, sp, ACC, BLOCK_P, BLOCK_D)
    h = tl.maximum(d - delta, 0.0)
    factor = tl.where(d != d, d, tl.where(d > 0, 2.0 * h / tl.where(d > 0, d, 1.0), 0.0))
    g = tl.load(gh_ptr + b * R + region, mask=valid, other=0.0).to(ACC)
    f = tl.where(valid, g * factor, 0.0)
    rows = part_ptr + (b * nblk + blk) * R * D
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        m = valid[:, None] & dmask[None, :]
        x = load_tile(x_ptr, b, offs_p, offs_d, pmask, dmask, sb, sd, sp, ACC)
        c = tl.load(c_ptr + (b * R + region)[:, None] * D + offs_d[None, :], mask=m, other=0.0).to(ACC)
        # Pixels that do not take part: gradient exactly 0, even where x is NaN.
        v = tl.where(m, f[:, None] * (x - c), 0.0)
        tl.store(
            gx_ptr + pixel_offsets(b, offs_p, offs_d, sb, sd, sp),
            v.to(gx_ptr.dtype.element_ty),
            mask=pmask[:, None] & dmask[None, :],
        )
        for r in range(R):
            s = tl.sum(tl.where((valid & (region == r))[:, None], v, 0.0), axis=0)
            tl.store(rows + r * D + offs_d, -s, mask=dmask)


def _blocks(P, D):
    return pixel_blocks(P, D, tile=2048, max_d=32)


@torch.library.custom_op("pixelkernels::region_hinge_triton", mutates_args=())
def region_hinge_op(emb: torch.Tensor, labels: torch.Tensor, centroid: torch.Tensor, delta: float,
                    ignore_index: int) -> torch.Tensor:  # fmt: skip
    B, D, H, W = emb.shape
    R, P = centroid.shape[1], H * W
    st = stats_dtype(emb.dtype)
    if B == 0 or P == 0:
        return torch.zeros(B, R, dtype=st, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    c = centroid.to(st).contiguous()
    bp, bd = _blocks(P, D)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, R, dtype=st, device=emb.device)
    with device_ctx(x):
        _forward_kernel[grid_items(nblk, B)](x, labels.contiguous(), c, part, P, D, R, ignore_index, delta, sb, sd, sp,
                                             ACC=acc_of(c), BLOCK_P=bp, BLOCK_D=bd, num_warps=warps(bp * bd))  # fmt: skip
    return part.sum(1)


@torch.library.custom_op("pixelkernels::region_hinge_backward_triton", mutates_args=())
def region_hinge_backward_op(grad_hinge: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor,
                             centroid: torch.Tensor, delta: float,
                             ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    B, D, H, W = emb.shape
    R, P = centroid.shape[1], H * W
    st = stats_dtype(emb.dtype)
    grad_emb = torch.empty_like(emb)
    if B == 0 or P == 0 or D == 0:
        return grad_emb.zero_(), torch.zeros(centroid.shape, dtype=centroid.dtype, device=emb.device)
    x, (sb, sd, sp) = pixel_view(emb)
    out = grad_emb if grad_emb.stride() == x.stride() else with_strides_of(None, x)
    c = centroid.to(st).contiguous()
    bp, bd = _blocks(P, D)
    nblk = triton.cdiv(P, bp)
    part = torch.empty(B, nblk, R, D, dtype=st, device=emb.device)
    with device_ctx(x):
        _backward_kernel[grid_items(nblk, B)](x, labels.contiguous(), c, grad_hinge.to(st).contiguous(), out, part, P, D,
                                              R, ignore_index, delta, sb, sd, sp, ACC=acc_of(c), BLOCK_P=bp,
                                              BLOCK_D=bd, num_warps=warps(bp * bd))  # fmt: skip
    if out is not grad_emb:
        grad_emb.copy_(out)
    return grad_emb, part.sum(1).to(centroid.dtype)


def compile_specs():
    specs = []
    for e, a, acc, lab in (("fp32", "fp32", tl.float32, "u8"), ("fp64", "fp64", tl.float64, "i64"),
                           ("bf16", "fp32", tl.float32, "i16"), ("fp16", "fp32", tl.float32, "i32")):  # fmt: skip
        c = {"ACC": acc, "BLOCK_P": 128, "BLOCK_D": 16}
        base = {"x_ptr": "*" + e, "lab_ptr": "*" + lab, "c_ptr": "*" + a, "delta": "fp32"}
        specs.append((_forward_kernel, {**base, "part_ptr": "*" + a}, c, 4))
        specs.append(
            (_backward_kernel, {**base, "gh_ptr": "*" + a, "gx_ptr": "*" + e, "part_ptr": "*" + a}, c, 4)
        )
    return specs

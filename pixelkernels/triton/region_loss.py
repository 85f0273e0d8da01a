"""region_loss on Triton: region_stats' (or centroid_hinge's) Triton launchers, then the head in
one program (the formulas of csrc/common/region_loss.h: the images in order, each over blocks of
regions and dims, so the loss is summed in a fixed order); the backward is region_stats' backward
kernel with the head's coefficients, scaled by the loss's gradient inside the kernel (or
centroid_hinge's backward, which scales them first)."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from . import centroid_hinge, region_stats
from ._common import device_ctx, expect, f64_bits, f64_from_bits

_MENET_CENTROID, _MENET_PAIRWISE, _CAS, _DISCRIMINATIVE = 0, 1, 2, 3


@triton.jit
def _present(n_ptr, b, R, MENET: tl.constexpr, BLOCK_R: tl.constexpr):
    """(#present regions of image b, whether the image is kept)."""
    offs_r = tl.arange(0, BLOCK_R)
    np = 0
    for r0 in range(0, R, BLOCK_R):
        rr = r0 + offs_r
        n = tl.load(n_ptr + b * R + rr, mask=rr < R, other=0.0)
        np += tl.sum((n > 0).to(tl.int32), axis=0)
    if MENET:
        keep = np == R
    else:
        keep = np > 0
    return np, keep


@triton.jit
def _head_kernel(
    n_ptr,
    c_ptr,
    v_ptr,
    loss_ptr,
    dc_ptr,
    dv_ptr,
    B,
    R,
    D,
    a_hi,
    a_lo,
    w_hi,
    w_lo,
    MENET: tl.constexpr,
    PAIRWISE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    ACC = n_ptr.dtype.element_ty
    a = f64_from_bits(a_hi, a_lo).to(ACC)  # weight of the variances
    w = f64_from_bits(w_hi, w_lo).to(ACC)  # weight of the pairs
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    kept = 0
    for b in range(B):
        np, keep = _present(n_ptr, b, R, MENET, BLOCK_R)
        kept += keep.to(tl.int32)
    denom = tl.maximum(kept, 1).to(ACC)
    total = tl.zeros([BLOCK_R], ACC)  # only element 0 is used: a loop-carried value of ACC
    for b in range(B):
        np, keep = _present(n_ptr, b, R, MENET, BLOCK_R)
        keep_r = (tl.zeros([BLOCK_R], tl.int32) + keep.to(tl.int32)) != 0  # as a mask's operand
        s = tl.where(keep, 1.0 / denom, 0.0).to(ACC)
        npf = np.to(ACC)
        k = -4.0 * w * npf * s
        sq = tl.zeros([BLOCK_D], ACC)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + offs_d
            dm = dd < D
            msum = tl.zeros([BLOCK_D], ACC)
            for r0 in range(0, R, BLOCK_R):
                rr = r0 + offs_r
                n = tl.load(n_ptr + b * R + rr, mask=rr < R, other=0.0)
                cm = (n > 0)[:, None] & dm[None, :]
                c = tl.load(c_ptr + (b * R + rr)[:, None] * D + dd[None, :], mask=cm, other=0.0)
                msum += tl.sum(c, axis=0)
            m = tl.where(np > 0, msum / tl.maximum(npf, 1.0), 0.0)
            for r0 in range(0, R, BLOCK_R):
                rr = r0 + offs_r
                rm = rr < R
                n = tl.load(n_ptr + b * R + rr, mask=rm, other=0.0)
                on = ((n > 0) & keep_r)[:, None] & dm[None, :]
                idx = (b * R + rr)[:, None] * D + dd[None, :]
                c = tl.load(c_ptr + idx, mask=on, other=0.0)
                u = tl.where(on, c - m[None, :], 0.0)
                sq += tl.sum(u * u, axis=0)
                tl.store(dc_ptr + idx, tl.where(on, k * u, 0.0), mask=rm[:, None] & dm[None, :])
        vsum = tl.zeros([BLOCK_R], ACC)
        n01 = tl.load(n_ptr + b * R + offs_r, mask=offs_r < 2, other=0.0)  # MEnet's two regions
        n0 = tl.sum(tl.where(offs_r == 0, n01, 0.0), axis=0)
        n1 = tl.sum(tl.where(offs_r == 1, n01, 0.0), axis=0)
        slope = tl.where(keep, (n1 - n0) / tl.where(keep, n0 + n1, 1.0), 0.0)
        for r0 in range(0, R, BLOCK_R):
            rr = r0 + offs_r
            rm = rr < R
            n = tl.load(n_ptr + b * R + rr, mask=rm, other=0.0)
            on = (n > 0) & keep_r & rm
            if not MENET:
                vsum += tl.where(on, tl.load(v_ptr + b * R + rr, mask=on, other=0.0), 0.0)
            g = tl.zeros([BLOCK_R], ACC) + a
            if PAIRWISE:
                g += tl.where(rr == 1, slope, -slope)
            tl.store(dv_ptr + b * R + rr, tl.where(on, g * s, 0.0), mask=rm)
        per = a * tl.sum(vsum, axis=0) - w * 2.0 * npf * tl.sum(sq, axis=0)
        if PAIRWISE:
            v01 = tl.load(v_ptr + b * R + offs_r, mask=offs_r < 2, other=0.0)
            v0 = tl.sum(tl.where(offs_r == 0, v01, 0.0), axis=0)
            v1 = tl.sum(tl.where(offs_r == 1, v01, 0.0), axis=0)
            per += (n1 - n0) * (v1 - v0) / tl.where(keep, n0 + n1, 1.0)
        total += tl.where((offs_r == 0) & keep_r, per, 0.0)
    tl.store(loss_ptr, tl.sum(total, axis=0) / denom)


@triton.jit
def _disc_head_kernel(
    n_ptr,
    c_ptr,
    h_ptr,
    loss_ptr,
    dc_ptr,
    dh_ptr,
    B,
    R,
    D,
    al_hi,
    al_lo,
    be_hi,
    be_lo,
    ga_hi,
    ga_lo,
    dd_hi,
    dd_lo,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The discriminative head: a centroid's row is one block of BLOCK_D >= D dims, so its
    gradient is summed over the other centroids in registers and written once."""
    ACC = n_ptr.dtype.element_ty
    alpha = f64_from_bits(al_hi, al_lo).to(ACC)
    beta = f64_from_bits(be_hi, be_lo).to(ACC)
    gamma = f64_from_bits(ga_hi, ga_lo).to(ACC)
    two_dd = 2.0 * f64_from_bits(dd_hi, dd_lo).to(ACC)
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    dm = offs_d < D
    kept = 0
    for b in range(B):
        np, keep = _present(n_ptr, b, R, False, BLOCK_R)
        kept += keep.to(tl.int32)
    denom = tl.maximum(kept, 1).to(ACC)
    total = tl.zeros([BLOCK_R], ACC)  # element 0 used
    for b in range(B):
        np, keep = _present(n_ptr, b, R, False, BLOCK_R)
        keep_r = (tl.zeros([BLOCK_R], tl.int32) + keep.to(tl.int32)) != 0
        s = tl.where(keep, 1.0 / denom, 0.0).to(ACC)
        C = tl.maximum(np, 1).to(ACC)
        pairs = tl.where(np > 1, np * (np - 1), 1).to(ACC)
        var = tl.zeros([BLOCK_R], ACC)
        for r0 in range(0, R, BLOCK_R):
            rr = r0 + offs_r
            rm = rr < R
            n = tl.load(n_ptr + b * R + rr, mask=rm, other=0.0)
            on = (n > 0) & keep_r & rm
            h = tl.load(h_ptr + b * R + rr, mask=on, other=0.0)
            nn = tl.where(on, n, 1.0)
            var += tl.where(on, h / nn, 0.0)
            tl.store(dh_ptr + b * R + rr, tl.where(on, alpha / (C * nn) * s, 0.0), mask=rm)
        push = tl.zeros([BLOCK_R], ACC)
        reg = tl.zeros([BLOCK_R], ACC)
        for i in range(R):
            ni = tl.load(n_ptr + b * R + i)
            on_i = (ni > 0) & keep
            on_ir = (tl.zeros([BLOCK_R], tl.int32) + on_i.to(tl.int32)) != 0  # as a vector operand
            on_d = dm & ((tl.zeros([BLOCK_D], tl.int32) + on_i.to(tl.int32)) != 0)
            ci = tl.load(c_ptr + (b * R + i) * D + offs_d, mask=on_d, other=0.0)
            norm = tl.sqrt(tl.sum(ci * ci, axis=0))
            reg += tl.where((offs_r == 0) & on_ir, norm, 0.0)
            kr = tl.where(on_i & (norm > 0), gamma / C / tl.where(norm > 0, norm, 1.0) * s, 0.0)
            row = kr * ci
            for r0 in range(0, R, BLOCK_R):
                rr = r0 + offs_r
                rm = rr < R
                nj = tl.load(n_ptr + b * R + rr, mask=rm, other=0.0)
                onj = (nj > 0) & rm & (rr != i) & on_ir
                m2 = onj[:, None] & dm[None, :]
                cj = tl.load(c_ptr + (b * R + rr)[:, None] * D + offs_d[None, :], mask=m2, other=0.0)
                u = tl.where(m2, ci[None, :] - cj, 0.0)
                dist = tl.sqrt(tl.sum(u * u, axis=1))
                hinge = tl.where(onj, tl.maximum(two_dd - dist, 0.0), 0.0)
                push += hinge * hinge
                kp = tl.where(onj & (dist > 0), -4.0 * hinge / tl.where(dist > 0, dist, 1.0) * beta / pairs * s, 0.0)
                row += tl.sum(kp[:, None] * u, axis=0)
            tl.store(dc_ptr + (b * R + i) * D + offs_d, tl.where(on_d, row, 0.0), mask=dm)
        per = (alpha * tl.sum(var, axis=0) + gamma * tl.sum(reg, axis=0)) / C + beta * tl.sum(push, axis=0) / pairs
        total += tl.where((offs_r == 0) & keep_r, per, 0.0)
    tl.store(loss_ptr, tl.sum(total, axis=0) / denom)


def head(count, centroid, variance, kind: int, alpha: float, beta: float, gamma: float, delta_d: float):
    """(loss, dcentroid, dvariance) of the statistics (csrc/common/region_loss.h)."""
    B, R, D = centroid.shape
    loss = count.new_empty(())
    dcentroid, dvariance = torch.empty_like(centroid), torch.empty_like(count)
    if kind == _DISCRIMINATIVE:
        block_d = max(16, triton.next_power_of_2(D))
        with device_ctx(count):
            _disc_head_kernel[(1,)](
                count, centroid, variance, loss, dcentroid, dvariance, B, R, D,
                *f64_bits(alpha), *f64_bits(beta), *f64_bits(gamma), *f64_bits(delta_d),
                BLOCK_R=max(2, min(triton.next_power_of_2(R), 4096 // block_d)), BLOCK_D=block_d, num_warps=4,
            )  # fmt: skip
        return loss, dcentroid, dvariance
    menet = kind != _CAS
    a, w = (0.0, 0.5) if menet else (alpha, 1.0 - alpha)
    with device_ctx(count):
        _head_kernel[(1,)](
            count, centroid, variance, loss, dcentroid, dvariance, B, R, D, *f64_bits(a), *f64_bits(w),
            MENET=menet, PAIRWISE=kind == _MENET_PAIRWISE,
            BLOCK_R=max(2, min(triton.next_power_of_2(R), 32)), BLOCK_D=max(16, min(triton.next_power_of_2(D), 64)),
            num_warps=4,
        )  # fmt: skip
    return loss, dcentroid, dvariance


def _expect_kind(kind, op):
    expect(0 <= kind <= 3, op, "kind must be 0 (MEnet eq. 3), 1 (MEnet eq. 2), 2 (CAS) or 3 (discriminative), got ",
           kind)  # fmt: skip


@triton_variant("region_loss")
def region_loss_op(emb, labels, num_regions, ignore_index, kind, alpha, beta, gamma, delta_v, delta_d, check):
    op = "region_loss"
    _expect_kind(kind, op)
    expect(kind >= _CAS or num_regions == 2, op, "MEnet's loss takes num_regions 2, got ", num_regions)
    if kind == _DISCRIMINATIVE:
        count, centroid, variance = centroid_hinge.centroid_hinge_op(emb, labels, num_regions, delta_v, ignore_index, check)
    else:
        count, centroid, variance = region_stats.region_stats_op(
            emb, labels, num_regions, ignore_index, kind != _MENET_CENTROID, check
        )
    loss, dcentroid, dvariance = head(count, centroid, variance, kind, alpha, beta, gamma, delta_d)
    return loss, count, centroid, dcentroid, dvariance


@triton_variant("region_loss_backward")
def region_loss_backward_op(grad_loss, emb, labels, count, centroid, dcentroid, dvariance, ignore_index, kind, alpha,
                            beta, gamma, delta_v, delta_d):  # fmt: skip
    _expect_kind(kind, "region_loss_backward")
    expect(grad_loss.numel() == 1, "region_loss_backward", "grad_loss must be a scalar, got ", list(grad_loss.shape))
    if kind == _DISCRIMINATIVE:
        return centroid_hinge.centroid_hinge_backward_op(
            dcentroid, dvariance, emb, labels, count, centroid, delta_v, ignore_index, grad_loss
        )
    return region_stats.region_stats_backward_op(
        dcentroid, dvariance, emb, labels, count, centroid, ignore_index, True, grad_loss
    )


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    specs = []
    for a in ("fp32", "fp64"):
        ptrs = {k: "*" + a for k in ("n_ptr", "c_ptr", "v_ptr", "loss_ptr", "dc_ptr", "dv_ptr")}
        for menet, pairwise, block_r in ((True, False, 2), (True, True, 2), (False, False, 32)):
            specs.append((_head_kernel, ptrs, {"MENET": menet, "PAIRWISE": pairwise, "BLOCK_R": block_r, "BLOCK_D": 64}, 4))
        disc = {k: "*" + a for k in ("n_ptr", "c_ptr", "h_ptr", "loss_ptr", "dc_ptr", "dh_ptr")}
        specs.append((_disc_head_kernel, disc, {"BLOCK_R": 32, "BLOCK_D": 64}, 4))
    return specs

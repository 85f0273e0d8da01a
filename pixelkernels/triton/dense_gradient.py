"""dense_gradient on Triton (csrc/common/dense_gradient.h; the formulas:
pixelkernels/reference/dense_gradient.py): pair_bce's Triton backward kernels on dense_moments'
rows with the loss's one gradient read in every row (stride 0), then two kernels as the CUDA
path's:

- ``_sums_kernel``, one program: R_x = Σ r_i, R_y = Σ r_j, da_p and dc_p over every row in
  order (float64), S_p from the Grams, and dw, dc;
- ``_apply_kernel``, a program per block of 32 rows of one side and image: the gradient rows,
  G'o t'_i by a float64 ``tl.dot`` of the augmented rows with the other side's (D + 2)² Gram in
  32 x 32 blocks.

pair_bce's dx' and dy' stay in their float64 sums (dy' as its splits, summed here in order):
nothing is rounded before the gradient rows are. Six launches (two of them the fills of pair_bce's
float64 sums) where ~55 PyTorch ops were."""

import torch
import triton
import triton.language as tl

from .._schema import triton_variant
from ._common import device_ctx, expect, expect_row_labels, expect_same_device, expect_sizes, grid_items, row_splits
from .pair_bce import BLOCK_K as PAIR_K
from .pair_bce import BLOCK_N as PAIR_N
from .pair_bce import _dx_kernel, _dy_kernel, _prepare

BLOCK_R, BLOCK_D, BLOCK_S = 32, 32, 1024  # rows a program, dims a block, rows a step of the sums
APPLY_WARPS = 8


def _check(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats):
    """What csrc/dense_gradient.cpp refuses, in its words (a direct call skips the public checks)."""
    op = "dense_gradient"
    expect(xa.dim() == 3 and ya.dim() == 3 and xa.shape[0] == ya.shape[0] and xa.shape[2] == ya.shape[2]
           and xa.shape[2] >= 2, op, "xa must be (B, Kx, D + 2) and ya (B, Ky, D + 2), got ", list(xa.shape),
           " and ", list(ya.shape))  # fmt: skip
    expect(xa.dtype == ya.dtype and xa.dtype in (torch.float32, torch.float64), op,
           "xa and ya must share a float32 or float64 dtype")  # fmt: skip
    B, D = xa.shape[0], xa.shape[2] - 2
    expect_row_labels(x_labels, xa, op, "x_labels")
    expect_row_labels(y_labels, ya, op, "y_labels")
    for t, sizes, name in ((means, (2, B, D), "means"), (grams, (2, B, D + 2, D + 2), "grams"),
                           (counts, (2, B), "counts"), (stats, (6,), "stats")):  # fmt: skip
        expect_sizes(t, sizes, op, name)
    expect(grad.numel() == 1, op, "grad must hold one element, got ", list(grad.shape))
    expect(counts.dtype == torch.int64, op, "counts must be int64")
    expect_same_device(op, grad, xa, x_labels, ya, y_labels, means, grams, counts, stats)


@triton.jit
def _sums_kernel(dx_ptr, dy_ptr, rows_ptr, lx_ptr, ly_ptr, stats_ptr, grams_ptr, sums_ptr, gw_ptr, gb_ptr, Nx, Ny, B,
                 D, S, BATCH: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Over the B Kx rows of x and B Ky of y (Nx, Ny), in order: Σ r_i (dx'_i[D] / n), Σ r_j
    (dy'_j[D + 1] / n, dy' the sum of its S splits in order), da_p and dc_p; S_p = Σ_ij
    <x'_i, y'_j> from the Grams' rows of ones; da (batch: da_p - S_p / n dc_p); then dw and dc."""
    n = tl.load(stats_ptr + 4).to(tl.float64)
    D2 = D + 2
    offs = tl.arange(0, BLOCK)
    rx = tl.zeros([BLOCK], tl.float64)
    da = tl.zeros([BLOCK], tl.float64)
    dc = tl.zeros([BLOCK], tl.float64)
    for t0 in range(0, Nx, BLOCK):
        t = (t0 + offs).to(tl.int64)
        m = t < Nx
        v = m & (tl.load(lx_ptr + t, mask=m, other=0) >= 0)  # a row that takes no part adds nothing
        rx += tl.where(v, tl.load(dx_ptr + t * D2 + D, mask=v, other=0.0) / n, 0.0)
        da += tl.load(rows_ptr + 2 * t, mask=m, other=0.0).to(tl.float64)
        dc += tl.load(rows_ptr + 2 * t + 1, mask=m, other=0.0).to(tl.float64)
    ry = tl.zeros([BLOCK], tl.float64)
    for t0 in range(0, Ny, BLOCK):
        t = (t0 + offs).to(tl.int64)
        m = t < Ny
        v = m & (tl.load(ly_ptr + t, mask=m, other=0) >= 0)
        pd = tl.zeros([BLOCK], tl.float64)
        for s in range(0, S):
            pd += tl.load(dy_ptr + (s * Ny + t) * D2 + D + 1, mask=v, other=0.0)
        ry += tl.where(v, pd / n, 0.0)
    sda, sdc = tl.sum(da, 0), tl.sum(dc, 0)
    # S_p: row D + 1 of G'x (Σ x'_i) times row D of G'y (Σ y'_j), per image
    part = tl.zeros([BLOCK], tl.float64)
    for b in range(0, B):
        for k0 in range(0, D2, BLOCK):
            km = k0 + offs < D2
            part += tl.load(grams_ptr + (b * D2 + D2 - 1) * D2 + k0 + offs, mask=km, other=0.0) * tl.load(
                grams_ptr + ((B + b) * D2 + D2 - 2) * D2 + k0 + offs, mask=km, other=0.0)
    total = tl.sum(part, 0)
    if BATCH:
        sda -= total / n * sdc  # around the pair values' own mean
    tl.store(sums_ptr + 0, tl.sum(rx, 0))
    tl.store(sums_ptr + 1, tl.sum(ry, 0))
    tl.store(sums_ptr + 2, sda)
    tl.store(sums_ptr + 3, sdc)
    tl.store(sums_ptr + 4, total)
    s_ = tl.load(stats_ptr + 2).to(tl.float64)
    tl.store(gw_ptr, (sda / (n * s_)).to(gw_ptr.dtype.element_ty))
    tl.store(gb_ptr, (sdc / n).to(gb_ptr.dtype.element_ty))


@triton.jit
def _side_rows(pd_ptr, S, aug_ptr, l_ptr, out_ptr, K, b, B, D, side, means_ptr, grams_ptr, counts_ptr, sums_ptr,
               stats_ptr, r0, BATCH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    D2 = D + 2
    other = 1 - side
    i = (r0 + tl.arange(0, BLOCK_R)).to(tl.int64)
    im = i < K
    on = tl.load(counts_ptr + other * B + b)
    onv = (tl.zeros([BLOCK_R], tl.int64) + on) > 0  # a vector (the interpreter's masks are no scalars)
    v = im & onv & (tl.load(l_ptr + b * K + i, mask=im, other=0) >= 0)
    row = b * K + i  # the row among the side's B K
    n = tl.load(stats_ptr + 4).to(tl.float64)
    s = tl.load(stats_ptr + 2).to(tl.float64)
    a = tl.load(stats_ptr + 3).to(tl.float64)
    Nrows = B * K
    # pair_bce's gradient of the row's own extra dim, its S splits in order
    pe = tl.zeros([BLOCK_R], tl.float64)
    for sp in range(0, S):
        pe += tl.load(pd_ptr + (sp * Nrows + row) * D2 + D + side, mask=v, other=0.0)
    r = pe / n
    offs_d = tl.arange(0, BLOCK_D)
    obar_ptr = means_ptr + (other * B + b) * D
    gram_ptr = grams_ptr + (other * B + b) * D2 * D2
    kappa = 0.0
    g1 = tl.zeros([BLOCK_R], tl.float64)
    if BATCH:
        r -= on.to(tl.float64) / n * tl.load(sums_ptr + side)
        kappa = -2.0 * (tl.load(sums_ptr + 2) / n) * a / (2.0 * s * s) / n
        # (G'o t'_i) at the other side's dim of ones (D + side), less (on / n) S_p
        for e0 in range(0, D2, BLOCK_D):
            em = e0 + offs_d < D2
            t = tl.load(aug_ptr + row[:, None] * D2 + e0 + offs_d[None, :], mask=v[:, None] & em[None, :],
                        other=0.0).to(tl.float64)  # fmt: skip
            gc = tl.load(gram_ptr + (e0 + offs_d) * D2 + D + side, mask=em, other=0.0)
            g1 += tl.sum(t * gc[None, :], 1)
        g1 -= on.to(tl.float64) / n * tl.load(sums_ptr + 4)
    for d0 in range(0, D, BLOCK_D):
        dm = d0 + offs_d < D
        m2 = v[:, None] & dm[None, :]
        pd = tl.zeros([BLOCK_R, BLOCK_D], tl.float64)
        for sp in range(0, S):
            pd += tl.load(pd_ptr + (sp * Nrows + row)[:, None] * D2 + d0 + offs_d[None, :], mask=m2, other=0.0)
        ob = tl.load(obar_ptr + d0 + offs_d, mask=dm, other=0.0).to(tl.float64)
        val = pd / n + ob[None, :] * r[:, None]
        if BATCH:
            # G'o t'_i: the augmented rows against the Gram's block (e, d0) (symmetric), in 32 x 32
            # blocks of e
            mv = tl.zeros([BLOCK_R, BLOCK_D], tl.float64)
            for e0 in range(0, D2, BLOCK_D):
                em = e0 + offs_d < D2
                t = tl.load(aug_ptr + row[:, None] * D2 + e0 + offs_d[None, :], mask=v[:, None] & em[None, :],
                            other=0.0).to(tl.float64)  # fmt: skip
                g = tl.load(gram_ptr + (e0 + offs_d)[:, None] * D2 + d0 + offs_d[None, :],
                            mask=em[:, None] & dm[None, :], other=0.0)  # fmt: skip
                mv += tl.dot(t, g)
            val += kappa * (mv + ob[None, :] * g1[:, None])
        val = tl.where(m2, val, 0.0)  # exactly 0 for the rows that take no part
        tl.store(out_ptr + row[:, None] * D + d0 + offs_d[None, :], val.to(out_ptr.dtype.element_ty),
                 mask=im[:, None] & dm[None, :])  # fmt: skip


@triton.jit
def _apply_kernel(dx_ptr, dy_ptr, Sy, xa_ptr, ya_ptr, lx_ptr, ly_ptr, gx_ptr, gy_ptr, Kx, Ky, B, D, nbx, nby,
                  means_ptr, grams_ptr, counts_ptr, sums_ptr, stats_ptr, BATCH: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    if pid < B * nbx:
        b = (pid // nbx).to(tl.int64)
        _side_rows(dx_ptr, 1, xa_ptr, lx_ptr, gx_ptr, Kx, b, B, D, 0, means_ptr, grams_ptr, counts_ptr,
                   sums_ptr, stats_ptr, (pid % nbx) * BLOCK_R, BATCH, BLOCK_R, BLOCK_D)  # fmt: skip
    else:
        q = pid - B * nbx
        b = (q // nby).to(tl.int64)
        _side_rows(dy_ptr, Sy, ya_ptr, ly_ptr, gy_ptr, Ky, b, B, D, 1, means_ptr, grams_ptr, counts_ptr,
                   sums_ptr, stats_ptr, (q % nby) * BLOCK_R, BATCH, BLOCK_R, BLOCK_D)  # fmt: skip


@triton_variant("dense_gradient")
def dense_gradient_op(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats, batch):
    _check(grad, xa, x_labels, ya, y_labels, means, grams, counts, stats)
    st = xa.dtype
    B, Kx, D2 = xa.shape
    Ky, D = ya.shape[1], D2 - 2
    # pair_bce's backward on (x', y') with a = stats[3], c = stats[5], grad_out = g in every row
    stats = stats.to(st).contiguous()
    xc, lx, yc, ly, a, c, _, flags = _prepare("dense_gradient", xa, x_labels, ya, y_labels, stats[3:4], stats[5:6])
    g = grad.to(st).reshape(1)
    dev = xa.device
    dx = torch.zeros(B, Kx, D2, dtype=torch.float64, device=dev)
    rows = torch.zeros(B, Kx, 2, dtype=st, device=dev) if Ky == 0 else torch.empty(B, Kx, 2, dtype=st, device=dev)
    nblk, kblk = triton.cdiv(Kx, PAIR_N), triton.cdiv(Ky, PAIR_K)
    splits, per = row_splits(Kx, PAIR_N, kblk, B)
    dy = torch.zeros(splits, B, Ky, D2, dtype=torch.float64, device=dev)
    sums = torch.empty(5, dtype=torch.float64, device=dev)
    grad_w = torch.empty((), dtype=st, device=dev)
    grad_b = torch.empty((), dtype=st, device=dev)
    gx = torch.empty(B, Kx, D, dtype=st, device=dev)
    gy = torch.empty(B, Ky, D, dtype=st, device=dev)
    m, gr, cn = means.to(st).contiguous(), grams.to(torch.float64).contiguous(), counts.contiguous()
    with device_ctx(xc):
        if B * Kx * Ky > 0:
            args = (xc, yc, lx, ly, a, c, g, 0)
            _dx_kernel[grid_items(nblk, B)](*args, dx, rows, Kx, Ky, D2, nblk, **flags, num_warps=4)
            _dy_kernel[grid_items(kblk * splits, B)](*args, dy, Kx, Ky, D2, kblk, splits, per, **flags, num_warps=4)
        _sums_kernel[(1,)](dx, dy, rows, lx, ly, stats, gr, sums, grad_w, grad_b, B * Kx, B * Ky, B, D, splits,
                           BATCH=bool(batch), BLOCK=BLOCK_S, num_warps=4)  # fmt: skip
        nbx, nby = triton.cdiv(Kx, BLOCK_R), triton.cdiv(Ky, BLOCK_R)
        if B * (nbx + nby) > 0 and D > 0:
            _apply_kernel[(B * (nbx + nby),)](dx, dy, splits, xc, yc, lx, ly, gx, gy, Kx, Ky, B, D, nbx, nby, m, gr,
                                              cn, sums, stats, BATCH=bool(batch), BLOCK_R=BLOCK_R,
                                              BLOCK_D=BLOCK_D, num_warps=APPLY_WARPS)  # fmt: skip
    return gx, gy, grad_w, grad_b


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check (pair_bce's
    kernels are its module's)."""
    specs = []
    for a in ("fp32", "fp64"):
        for batch in (False, True):
            specs.append((_sums_kernel, {"dx_ptr": "*fp64", "dy_ptr": "*fp64", "rows_ptr": "*" + a, "lx_ptr": "*i64",
                                         "ly_ptr": "*i64", "stats_ptr": "*" + a, "grams_ptr": "*fp64",
                                         "sums_ptr": "*fp64", "gw_ptr": "*" + a, "gb_ptr": "*" + a},
                          {"BATCH": batch, "BLOCK": BLOCK_S}, 4))  # fmt: skip
            specs.append((_apply_kernel, {"dx_ptr": "*fp64", "dy_ptr": "*fp64", "xa_ptr": "*" + a, "ya_ptr": "*" + a,
                                          "lx_ptr": "*i64", "ly_ptr": "*i64", "gx_ptr": "*" + a, "gy_ptr": "*" + a,
                                          "means_ptr": "*" + a, "grams_ptr": "*fp64", "counts_ptr": "*i64",
                                          "sums_ptr": "*fp64", "stats_ptr": "*" + a},
                          {"BATCH": batch, "BLOCK_R": BLOCK_R, "BLOCK_D": BLOCK_D}, APPLY_WARPS))  # fmt: skip
    return specs

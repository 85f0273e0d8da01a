"""dense_moments on Triton (csrc/common/dense_moments.h; the formulas:
pixelkernels/reference/dense_moments.py), four launches:

- ``_mean_kernel``, a program per (side, image): whether the other side has a labelled row,
  the side's first labelled row p, its count n and mean p + Σ (t_i - p) / n (float64 sums,
  rounded once), and the centred rows T_i = st(t_i - t̄) (0 for the others) into x', y';
- ``_rows_kernel``, a program per (1024 rows, image) of each side: the rows' extra dims
  (x'_i = [T_i, T_i·ȳ, 1], y'_j = [T_j, 1, x̄·T_j + δ_b]; δ_b from μ, which each of y's programs
  forms from the means: a loop over the images) and δ;
- ``_gram_kernel``, a program per (side, image, 32 x 32 tile of the (D + 2)² Gram): the tile of
  the augmented rows' Gram (read from x', y': the statistics dtype, whatever the input's) by a
  float64 ``tl.dot`` over all rows, kept in float64. (The Gram read the half inputs themselves
  at first: Triton 3.6, the GPU machines', failed an assertion lowering the float64 dot of
  operands converted from bfloat16 or float16.) The extra dims are the rows kernel's (the
  CUDA path forms them in its Gram tiles): formed inside the Gram's row loop they took the
  tiles to 128-167 registers and a spill, where the Gram alone needs under 80;
- ``_finish_kernel``, one program: per image tr(G'x G'y) and S_b = Σ_i x'_i · Σ_j y'_j, then μ,
  σ², s, a, c and the count over the images in order.

Every sum in float64; no atomics: the same bits on every run. A Gram tile's program takes all
of its image's rows (no split of the rows across programs): at W6c (one image of 102480 rows,
D = 64) that is 9 programs a side of up to 0.21 GFLOP float64 each, against the pair pass's
6.7 TFLOP."""

import torch
import triton
import triton.language as tl

from .._dtypes import FLOAT_TYPES, stats_dtype
from .._schema import triton_variant
from ._common import acc_of, device_ctx, expect, expect_row_labels, expect_same_device, f64_bits, f64_from_bits

BLOCK_K, BLOCK_D = 32, 32  # rows a step; dims a block (the Gram's tiles are BLOCK_D x BLOCK_D)
ROWS = 1024  # rows a program of the rows' extra dims
GRAM_WARPS = 8


def _check(x, x_labels, y, y_labels, scalars):
    """What csrc/dense_moments.cpp refuses, in its words (a direct call skips the public checks)."""
    op = "dense_moments"
    expect(x.dim() == 3 and y.dim() == 3 and x.shape[0] == y.shape[0] and x.shape[2] == y.shape[2], op,
           "x must be (B, Kx, D) and y (B, Ky, D), got ", list(x.shape), " and ", list(y.shape))  # fmt: skip
    expect(x.dtype in FLOAT_TYPES and x.dtype == y.dtype, op, "x and y must share a float dtype")
    expect_row_labels(x_labels, x, op, "x_labels")
    expect_row_labels(y_labels, y, op, "y_labels")
    expect_same_device(op, x, x_labels, y, y_labels)
    for name, t in scalars.items():
        if t is not None:
            expect(t.numel() == 1 and t.is_floating_point(), op, name, " must be a 1-element float tensor, got ",
                   list(t.shape), " ", t.dtype)  # fmt: skip
            expect_same_device(op, x, t)


@triton.jit
def _labelled(l_ptr, b, offs, K):
    """Rows offs of image b whose label is >= 0 (False past K: an unsigned label's `other` is no -1)."""
    m = offs < K
    return m & (tl.load(l_ptr + b * K + offs, mask=m, other=0) >= 0)


@triton.jit
def _side_mean(t_ptr, l_ptr, o_ptr, aug_ptr, K, Ko, b, D, mean_ptr, count_ptr, ST: tl.constexpr,
               BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    offs = tl.arange(0, BLOCK_K)
    paired = 0
    for i0 in range(0, Ko, BLOCK_K):
        paired = tl.maximum(paired, tl.max(_labelled(o_ptr, b, i0 + offs, Ko).to(tl.int32), 0))
    pair = (tl.zeros([BLOCK_K], tl.int32) + paired) > 0  # a vector: the interpreter's masks are no scalars
    first = tl.zeros([], tl.int64) + K
    n = tl.zeros([BLOCK_K], tl.int64)
    for i0 in range(0, K, BLOCK_K):
        lab = _labelled(l_ptr, b, i0 + offs, K) & pair
        first = tl.minimum(first, tl.min(tl.where(lab, i0 + offs, K), 0).to(tl.int64))
        n += lab.to(tl.int64)
    count = tl.sum(n, 0)
    tl.store(count_ptr, count)
    rows = t_ptr + b * K * D
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, D, BLOCK_D):
        dmask = d0 + offs_d < D
        pm = dmask & (offs_d * 0 + first < K)  # a vector: the interpreter's masks are no scalars
        p = tl.load(rows + first * D + d0 + offs_d, mask=pm, other=0.0).to(tl.float64)
        acc = tl.zeros([BLOCK_D], tl.float64)
        for i0 in range(0, K, BLOCK_K):
            lab = _labelled(l_ptr, b, i0 + offs, K) & pair
            m = lab[:, None] & dmask[None, :]
            v = tl.load(rows + (i0 + offs).to(tl.int64)[:, None] * D + d0 + offs_d[None, :], mask=m, other=0.0)
            acc += tl.sum(tl.where(m, v.to(tl.float64) - p[None, :], 0.0), 0)
        mean = tl.where(count > 0, p + acc / tl.maximum(count, 1).to(tl.float64), 0.0).to(ST)
        tl.store(mean_ptr + d0 + offs_d, mean, mask=dmask)
        # the centred rows of the block, in the statistics dtype (0 for the rows that take no part)
        aug = aug_ptr + b * K * (D + 2)
        for i0 in range(0, K, BLOCK_K):
            i = (i0 + offs).to(tl.int64)
            m = (_labelled(l_ptr, b, i, K) & pair)[:, None] & dmask[None, :]
            v = tl.load(rows + i[:, None] * D + d0 + offs_d[None, :], mask=m, other=0.0).to(ST)
            tl.store(aug + i[:, None] * (D + 2) + d0 + offs_d[None, :], tl.where(m, v - mean[None, :], 0.0),
                     mask=(i < K)[:, None] & dmask[None, :])  # fmt: skip


@triton.jit
def _mean_kernel(x_ptr, lx_ptr, y_ptr, ly_ptr, xa_ptr, ya_ptr, means_ptr, counts_ptr, B, Kx, Ky, D, ST: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid % B).to(tl.int64)
    # labels of two widths: a branch a side (a pointer select would need one type)
    if pid < B:
        _side_mean(x_ptr, lx_ptr, ly_ptr, xa_ptr, Kx, Ky, b, D, means_ptr + b * D, counts_ptr + b, ST, BLOCK_K,
                   BLOCK_D)  # fmt: skip
    else:
        _side_mean(y_ptr, ly_ptr, lx_ptr, ya_ptr, Ky, Kx, b, D, means_ptr + (B + b) * D, counts_ptr + B + b, ST,
                   BLOCK_K, BLOCK_D)  # fmt: skip


@triton.jit
def _image_mean(means_ptr, b, B, D, BLOCK_D: tl.constexpr):
    """m_b = x̄·ȳ from the rounded means, in float64 (the same bits in every kernel)."""
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.zeros([BLOCK_D], tl.float64)
    for d0 in range(0, D, BLOCK_D):
        dmask = d0 + offs_d < D
        xb = tl.load(means_ptr + b * D + d0 + offs_d, mask=dmask, other=0.0).to(tl.float64)
        yb = tl.load(means_ptr + (B + b) * D + d0 + offs_d, mask=dmask, other=0.0).to(tl.float64)
        m += xb * yb
    return tl.sum(m, 0)


@triton.jit
def _pair_mean(means_ptr, counts_ptr, B, D, BLOCK_D: tl.constexpr):
    """(μ, count): the mean of the m_b weighted by n_b = nx ny around the first image with pairs
    (dense_moments::pair_mean), images in order."""
    c = tl.zeros([], tl.int64)
    pivot = tl.zeros([], tl.float64)
    dev = tl.zeros([], tl.float64)
    for bb in range(0, B):
        nb = tl.load(counts_ptr + bb) * tl.load(counts_ptr + B + bb)
        m = _image_mean(means_ptr, bb, B, D, BLOCK_D)
        pivot = tl.where((nb > 0) & (c == 0), m, pivot)
        c += nb
        dev += tl.where(nb > 0, nb.to(tl.float64) * (m - pivot), 0.0)
    return tl.where(c > 0, pivot + dev / tl.maximum(c, 1).to(tl.float64), 0.0), c


@triton.jit
def _used_mean(means_ptr, counts_ptr, rm_ptr, B, D, HAS_RM: tl.constexpr, BLOCK_D: tl.constexpr):
    """μ': the running mean where given, else the batch's."""
    if HAS_RM:
        mu = tl.load(rm_ptr).to(tl.float64)
    else:
        mu, _ = _pair_mean(means_ptr, counts_ptr, B, D, BLOCK_D)
    return mu


@triton.jit
def _side_rows(l_ptr, aug_ptr, K, b, D, s, r0, obar_ptr, paired, delta, ST: tl.constexpr, BLOCK_K: tl.constexpr,
               BLOCK_D: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    """The extra dims of rows r0 .. r0 + ROWS of one side and image: x'_i = [T_i, T_i·ȳ, 1],
    y'_j = [T_j, 1, x̄·T_j + δ_b] (0 for the rows that take no part), from the centred rows."""
    D2 = D + 2
    offs = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    pair = (tl.zeros([BLOCK_K], tl.int32) + paired.to(tl.int32)) > 0  # a vector (the interpreter's masks)
    aug = aug_ptr + b * K * D2
    for i0 in range(r0, r0 + ROWS, BLOCK_K):
        i = (i0 + offs).to(tl.int64)
        lab = _labelled(l_ptr, b, i, K) & pair
        dot = tl.zeros([BLOCK_K], tl.float64)
        for f0 in range(0, D, BLOCK_D):
            fmask = f0 + offs_d < D
            of = tl.load(obar_ptr + f0 + offs_d, mask=fmask, other=0.0).to(tl.float64)
            r = tl.load(aug + i[:, None] * D2 + f0 + offs_d[None, :], mask=lab[:, None] & fmask[None, :], other=0.0)
            dot += tl.sum(r.to(tl.float64) * of[None, :], 1)
        im = i < K
        tl.store(aug + i * D2 + D + s, tl.where(lab, dot + delta, 0.0).to(ST), mask=im)
        tl.store(aug + i * D2 + D + 1 - s, tl.where(lab, 1.0, 0.0).to(ST), mask=im)


@triton.jit
def _rows_kernel(lx_ptr, ly_ptr, xa_ptr, ya_ptr, means_ptr, counts_ptr, delta_ptr, rm_ptr, B, Kx, Ky, D, nbx, nby,
                 HAS_RM: tl.constexpr, ST: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                 ROWS: tl.constexpr):  # fmt: skip
    """A program per (ROWS rows, image) of x, then of y: the rows' extra dims; y's first program of
    an image stores δ_b (each of y's programs forms it from the means: a loop over the images)."""
    pid = tl.program_id(0)
    if pid < B * nbx:
        b = (pid // nbx).to(tl.int64)
        paired = tl.load(counts_ptr + B + b) > 0
        _side_rows(lx_ptr, xa_ptr, Kx, b, D, 0, (pid % nbx) * ROWS, means_ptr + (B + b) * D, paired, 0.0, ST,
                   BLOCK_K, BLOCK_D, ROWS)  # fmt: skip
    else:
        q = pid - B * nbx
        b = (q // nby).to(tl.int64)
        paired = tl.load(counts_ptr + b) > 0
        # δ_b, rounded as the delta output (the reference adds the rounded δ)
        nb = tl.load(counts_ptr + b) * tl.load(counts_ptr + B + b)
        mu = _used_mean(means_ptr, counts_ptr, rm_ptr, B, D, HAS_RM, BLOCK_D)
        delta = tl.where(nb > 0, _image_mean(means_ptr, b, B, D, BLOCK_D) - mu, 0.0).to(ST)
        if q % nby == 0:
            tl.store(delta_ptr + b, delta)
        _side_rows(ly_ptr, ya_ptr, Ky, b, D, 1, (q % nby) * ROWS, means_ptr + b * D, paired, delta.to(tl.float64), ST,
                   BLOCK_K, BLOCK_D, ROWS)  # fmt: skip


@triton.jit
def _gram_kernel(xa_ptr, ya_ptr, grams_ptr, B, Kx, Ky, D, nt, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """A program per (side, image, 32 x 32 tile of the (D + 2)² Gram): the tile of G' = Σ t' t'ᵀ
    over the image's augmented rows (0 for the rows that take no part) by float64 tl.dot."""
    pid = tl.program_id(0)
    T = nt * nt
    s = pid // (B * T)
    rest = pid - s * B * T
    b = (rest // T).to(tl.int64)
    tile = rest % T
    D2 = D + 2
    if s == 0:
        aug, K = xa_ptr + b * Kx * D2, Kx
    else:
        aug, K = ya_ptr + b * Ky * D2, Ky
    dd = (tile // nt) * BLOCK_D + tl.arange(0, BLOCK_D)
    de = (tile % nt) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_D, BLOCK_D], tl.float64)
    for i0 in range(0, K, BLOCK_K):
        i = (i0 + offs).to(tl.int64)
        im = (i < K)[:, None]
        rd = tl.load(aug + i[:, None] * D2 + dd[None, :], mask=im & (dd < D2)[None, :], other=0.0)
        re = tl.load(aug + i[:, None] * D2 + de[None, :], mask=im & (de < D2)[None, :], other=0.0)
        acc += tl.dot(tl.trans(rd.to(tl.float64)), re.to(tl.float64))
    gram = grams_ptr + (s * B + b) * D2 * D2
    tl.store(gram + dd[:, None] * D2 + de[None, :], acc, mask=(dd < D2)[:, None] & (de < D2)[None, :])


@triton.jit
def _finish_kernel(means_ptr, grams_ptr, counts_ptr, count_ptr, stats_ptr, w_ptr, c_ptr, rm_ptr, rv_ptr,
                   B, D, w_hi, w_lo, c_hi, c_lo, eps_hi, eps_lo, HAS_W: tl.constexpr, HAS_C: tl.constexpr,
                   HAS_RM: tl.constexpr, HAS_RV: tl.constexpr, ST: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    mean, count = _pair_mean(means_ptr, counts_ptr, B, D, BLOCK_D)
    offs_d = tl.arange(0, BLOCK_D)
    D2 = D + 2
    m2 = tl.zeros([], tl.float64)
    total = tl.zeros([], tl.float64)
    if HAS_RM:
        used = tl.load(rm_ptr).to(tl.float64)
    else:
        used = mean
    for b in range(0, B):
        gx_b = grams_ptr + b * D2 * D2
        gy_b = grams_ptr + (B + b) * D2 * D2
        # tr(G'x G'y) over the Grams' tiles (both symmetric: Σ G'x∘G'y)
        part = tl.zeros([BLOCK_D, BLOCK_D], tl.float64)
        for d0 in range(0, D2, BLOCK_D):
            dmask = d0 + offs_d < D2
            for e0 in range(0, D2, BLOCK_D):
                at = (d0 + offs_d)[:, None] * D2 + e0 + offs_d[None, :]
                mm = dmask[:, None] & (e0 + offs_d < D2)[None, :]
                part += tl.load(gx_b + at, mask=mm, other=0.0) * tl.load(gy_b + at, mask=mm, other=0.0)
        m2 += tl.sum(tl.sum(part, 1), 0)
        # S_b: row D + 1 of G'x (Σ x'_i) times row D of G'y (Σ y'_j)
        row = tl.zeros([BLOCK_D], tl.float64)
        for k0 in range(0, D2, BLOCK_D):
            km = k0 + offs_d < D2
            row += tl.load(gx_b + (D2 - 1) * D2 + k0 + offs_d, mask=km, other=0.0) * tl.load(
                gy_b + (D2 - 2) * D2 + k0 + offs_d, mask=km, other=0.0)
        total += tl.sum(row, 0)
    n = tl.maximum(count, 1).to(tl.float64)
    # around the values' own mean S / count (μ - μ' with running_mean, else the means' rounding)
    var = (m2 - total * total / n) / n
    if HAS_RV:
        var = tl.load(rv_ptr).to(tl.float64)
    s = tl.sqrt(var + f64_from_bits(eps_hi, eps_lo))
    if HAS_W:
        w = tl.load(w_ptr).to(tl.float64)
    else:
        w = f64_from_bits(w_hi, w_lo)
    if HAS_C:
        c = tl.load(c_ptr).to(tl.float64)
    else:
        c = f64_from_bits(c_hi, c_lo)
    tl.store(count_ptr, count)
    tl.store(stats_ptr + 0, used.to(ST))
    tl.store(stats_ptr + 1, var.to(ST))
    tl.store(stats_ptr + 2, s.to(ST))
    tl.store(stats_ptr + 3, (w / s).to(ST))
    tl.store(stats_ptr + 4, n.to(ST))
    tl.store(stats_ptr + 5, c.to(ST))


@triton_variant("dense_moments")
def dense_moments_op(x, x_labels, y, y_labels, weight, bias, weight_value, bias_value, eps, running_mean, running_var):
    scalars = dict(weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    _check(x, x_labels, y, y_labels, scalars)
    st = stats_dtype(x.dtype)
    B, Kx, D = x.shape
    Ky = y.shape[1]
    dev = x.device
    x, y, lx, ly = x.contiguous(), y.contiguous(), x_labels.contiguous(), y_labels.contiguous()
    xa = torch.empty(B, Kx, D + 2, dtype=st, device=dev)
    ya = torch.empty(B, Ky, D + 2, dtype=st, device=dev)
    means = torch.empty(2, B, D, dtype=st, device=dev)
    grams = torch.empty(2, B, D + 2, D + 2, dtype=torch.float64, device=dev)
    counts = torch.empty(2, B, dtype=torch.int64, device=dev)
    count = torch.empty((), dtype=torch.int64, device=dev)
    stats = torch.empty(6, dtype=st, device=dev)
    # y's programs of the rows kernel store δ; with no row of y there are none (and no pairs)
    delta = (torch.zeros if Ky == 0 else torch.empty)(B, dtype=st, device=dev)
    # the optional scalars in st (a view where they are st already), a stand-in pointer where None
    one = {k: (v.detach().reshape(1).to(st) if v is not None else stats) for k, v in scalars.items()}
    has = {f"HAS_{k}": scalars[n] is not None for k, n in (("W", "weight"), ("C", "bias"), ("RM", "running_mean"),
                                                          ("RV", "running_var"))}  # fmt: skip
    blocks = {"ST": acc_of(x), "BLOCK_D": BLOCK_D}  # the statistics dtype's Triton type
    nt = triton.cdiv(D + 2, BLOCK_D)
    with device_ctx(x):
        if B > 0:
            _mean_kernel[(2 * B,)](x, lx, y, ly, xa, ya, means, counts, B, Kx, Ky, D, **blocks, BLOCK_K=BLOCK_K,
                                   num_warps=4)  # fmt: skip
            nbx, nby = triton.cdiv(Kx, ROWS), triton.cdiv(Ky, ROWS)
            if nbx + nby > 0:
                _rows_kernel[(B * (nbx + nby),)](lx, ly, xa, ya, means, counts, delta, one["running_mean"], B, Kx, Ky,
                                                 D, nbx, nby, HAS_RM=has["HAS_RM"], **blocks, BLOCK_K=BLOCK_K,
                                                 ROWS=ROWS, num_warps=4)  # fmt: skip
            _gram_kernel[(2 * B * nt * nt,)](xa, ya, grams, B, Kx, Ky, D, nt, BLOCK_K=BLOCK_K, BLOCK_D=BLOCK_D,
                                             num_warps=GRAM_WARPS)  # fmt: skip
        _finish_kernel[(1,)](means, grams, counts, count, stats, one["weight"], one["bias"],
                             one["running_mean"], one["running_var"], B, D, *f64_bits(weight_value),
                             *f64_bits(bias_value), *f64_bits(eps), **has, **blocks, num_warps=4)  # fmt: skip
    return xa, ya, means, grams, counts, count, stats, delta


def compile_specs():
    """(kernel, pointer signature, constexprs, num_warps) for the offline GPU compile check."""
    specs = []
    for e in ("fp32", "fp64", "bf16", "fp16"):
        a = "fp64" if e == "fp64" else "fp32"
        blocks = {"ST": tl.float64 if a == "fp64" else tl.float32, "BLOCK_D": BLOCK_D}
        specs.append((_mean_kernel, {"x_ptr": "*" + e, "lx_ptr": "*i64", "y_ptr": "*" + e, "ly_ptr": "*i32",
                                     "xa_ptr": "*" + a, "ya_ptr": "*" + a, "means_ptr": "*" + a, "counts_ptr": "*i64"},
                      {**blocks, "BLOCK_K": BLOCK_K}, 4))  # fmt: skip
        if e not in ("fp32", "fp64"):
            continue  # the Gram and the finish read the statistics dtype only
        for has in (False, True):
            specs.append((_rows_kernel, {"lx_ptr": "*i64", "ly_ptr": "*i32", "xa_ptr": "*" + a, "ya_ptr": "*" + a,
                                         "means_ptr": "*" + a, "counts_ptr": "*i64", "delta_ptr": "*" + a,
                                         "rm_ptr": "*" + a},
                          {**blocks, "HAS_RM": has, "BLOCK_K": BLOCK_K, "ROWS": ROWS}, 4))  # fmt: skip
            if not has:
                specs.append((_gram_kernel, {"xa_ptr": "*" + a, "ya_ptr": "*" + a, "grams_ptr": "*fp64"},
                              {"BLOCK_K": BLOCK_K, "BLOCK_D": BLOCK_D}, GRAM_WARPS))  # fmt: skip
            flags = {"HAS_W": has, "HAS_C": has, "HAS_RM": has, "HAS_RV": has}
            specs.append((_finish_kernel, {"means_ptr": "*" + a, "grams_ptr": "*fp64", "counts_ptr": "*i64",
                                           "count_ptr": "*i64", "stats_ptr": "*" + a, "w_ptr": "*" + a,
                                           "c_ptr": "*" + a, "rm_ptr": "*" + a, "rv_ptr": "*" + a},
                          {**blocks, **flags}, 4))  # fmt: skip
    return specs

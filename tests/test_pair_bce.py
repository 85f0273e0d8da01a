"""pair_bce (csrc/common/pair_bce.h): the contract row (every backend against the materialising
reference, values and gradients of x and y), plus what is special to it: the gradients of scale
and bias as tensors on every backend, gradcheck through them, the loss's numerics where the
logits saturate, and memory that stays linear."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, WITH_EMULATED, on_backend, weighted_loss
from contract import Contract, pair_sides, suite
from fuzz import Choice, Floats, Labels

import pixelkernels as pk
from pixelkernels._dtypes import stats_dtype
from pixelkernels.reference.pair_bce import pair_bce
from pixelkernels.testing import assert_close


def _inp(B, Kx, Ky, D, C=3, *, layout="contiguous", seed=0, pad=0.25, scale=0.6, bias=-0.3, ignore_image=None):
    """x (B, Kx, D), y (B, Ky, D), labels in [0, C) with -1 at random rows (and other negatives);
    ignore_image: every label of that image -1 and its vectors NaN."""

    def make(device, dtype):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(B, Kx, D, generator=g, dtype=torch.float64)
        y = torch.randn(B, Ky, D, generator=g, dtype=torch.float64)
        xl = torch.randint(0, C, (B, Kx), generator=g)
        yl = torch.randint(0, C, (B, Ky), generator=g)
        xl[torch.rand(B, Kx, generator=g) < pad] = -1
        yl[torch.rand(B, Ky, generator=g) < pad] = -5
        if ignore_image is not None and B > ignore_image:
            xl[ignore_image], yl[ignore_image] = -1, -1
            x[ignore_image], y[ignore_image] = float("nan"), float("inf")
        if layout == "channels_last":  # the awkward layout of a (B, K, D) tensor: D-major
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
            y = y.transpose(1, 2).contiguous().transpose(1, 2)
        return {"x": x.to(device, dtype), "x_labels": xl.to(device), "y": y.to(device, dtype),
                "y_labels": yl.to(device), "scale": scale, "bias": bias}  # fmt: skip

    return make


def _call(inp, backend):
    return (pk.pair_bce(inp["x"], inp["x_labels"], inp["y"], inp["y_labels"], inp["scale"], inp["bias"],
                        backend=backend),)  # fmt: skip


def _bad(**kw):
    return _inp(2, 5, 6, 3)("cpu", torch.float32) | kw


ROW = Contract(
    op="pair_bce",
    fuzz=lambda d: {"x": Floats(("B", "K", "D")), "x_labels": Labels(("B", "K"), bounded=False), "y": Floats(("B", "H", "D")),
                    "y_labels": Labels(("B", "H"), bounded=False), "scale": Choice((1.0, -0.5), extreme=(1e4, -1e4)),
                    "bias": Choice((0.0, 0.25), extreme=(-1e4,))},  # fmt: skip
    make=_inp(2, 13, 11, 5),
    call=_call,
    shaped=lambda B, D, H, W, layout: _inp(B, *pair_sides(H, W), D, layout=layout),
    loss=weighted_loss,
    grad_inputs=("x", "y"),
    tiny=_inp(2, 3, 4, 3),
    zero_sizes={
        "B0": _inp(0, 3, 4, 2)("cpu", torch.float32),
        "Kx0": _inp(2, 0, 4, 2)("cpu", torch.float32),
        "Ky0": _inp(2, 3, 0, 2)("cpu", torch.float32),
        "D0": _inp(2, 3, 4, 0)("cpu", torch.float32),
    },
    bad_inputs={
        "x_rank": (_bad(x=torch.randn(5, 3)), ValueError, "x must have 3 dims"),
        "y_dtype": (_bad(y=torch.randn(2, 6, 3, dtype=torch.float64)), TypeError, "y must have x's dtype"),
        "y_dim": (_bad(y=torch.randn(2, 6, 4)), ValueError, "y must have (B, D)"),
        "x_labels_shape": (_bad(x_labels=torch.zeros(2, 4, dtype=torch.long)), ValueError, "x_labels must have shape"),
        "y_labels_float": (_bad(y_labels=torch.zeros(2, 6)), TypeError, "y_labels must have dtype"),
        "scale_shape": (_bad(scale=torch.ones(2)), ValueError, "scale must be a number or a 1-element float tensor"),
        "bias_nan": (_bad(bias=float("nan")), ValueError, "bias must be finite"),
    },
    interpreter_skip=frozenset({"tile_edges"}),
    cases={
        "image_ignored": _inp(3, 7, 9, 4, ignore_image=1),
        "one_each": _inp(2, 1, 1, 3, pad=0.0),
        "D130": _inp(2, 5, 6, 130),
        "D1_one_class": _inp(2, 6, 5, 1, C=1),
        "saturated": _inp(2, 9, 12, 6, scale=40.0, bias=3.0),
        # Triton's 16 x 32 blocks and D chunks of 32
        "block_edges": _inp(2, 17, 33, 33),
        # the CPU's 64 x 256 tiles (too slow for the Triton interpreter)
        "tile_edges": _inp(1, 70, 300, 33),
    },
    # the CUDA half kernels' 64 x 64 mma tiles and the backward's 64-dim chunks, both sides
    # and float32 dot_tile's 16-dim stages read as aligned 16-byte quads (D a multiple of 4)
    emulated_cases={"mma_chunks": _inp(1, 70, 67, 130), "quad_stages": _inp(2, 70, 67, 36)},
)

TestContract = suite(ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_scale_and_bias_gradients(backend, device):
    """scale and bias as 0-dim tensors: their gradients (Σ e Ψ and Σ e) on every backend."""
    inp = _inp(2, 21, 40, 7, seed=3)(device, torch.float64)
    a = torch.tensor(0.7, dtype=torch.float64, device=device, requires_grad=True)
    c = torch.tensor([-0.4], dtype=torch.float64, device=device, requires_grad=True)
    x, y = inp["x"].requires_grad_(), inp["y"].requires_grad_()
    g = torch.randn(2, 21, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    got = pk.pair_bce(x, inp["x_labels"], y, inp["y_labels"], a, c, backend=backend)
    want = pair_bce(x, inp["x_labels"], y, inp["y_labels"], a, c)
    assert_close(got, want)
    for gg, ww in zip(torch.autograd.grad(got, (x, y, a, c), g), torch.autograd.grad(want, (x, y, a, c), g)):
        assert_close(gg, ww)
        assert gg.shape == ww.shape


def test_gradcheck_cpu_scale_bias():
    inp = _inp(2, 3, 5, 2, seed=4)("cpu", torch.float64)
    xl, yl = inp["x_labels"], inp["y_labels"]
    args = (inp["x"].requires_grad_(), inp["y"].requires_grad_(),
            torch.tensor(0.8, dtype=torch.float64, requires_grad=True),
            torch.tensor(0.2, dtype=torch.float64, requires_grad=True))  # fmt: skip
    for backend in ("reference", "cpu"):
        assert torch.autograd.gradcheck(lambda x, y, a, c: pk.pair_bce(x, xl, y, yl, a, c, backend=backend), args)
    assert torch.autograd.gradgradcheck(lambda x, y, a, c: pk.pair_bce(x, xl, y, yl, a, c, backend="cpu"), args)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_saturated_logits_keep_their_relative_precision(backend, device):
    """|z| ~ 30-60: bce = log1p(exp(-|z|)) ~ 1e-14-1e-26 where the target agrees, |z| where it
    does not; the sum keeps full relative precision in float64 (log(1 + u) alone would not)."""
    x = torch.ones(1, 1, 1, dtype=torch.float64, device=device)
    y = torch.tensor([[[30.0], [45.0], [60.0]]], dtype=torch.float64, device=device)
    lab = torch.zeros(1, 1, dtype=torch.long, device=device)
    out = pk.pair_bce(x, lab, y, torch.zeros(1, 3, dtype=torch.long, device=device), backend=backend)
    want = sum(torch.log1p(torch.exp(-torch.tensor(v, dtype=torch.float64))) for v in (30.0, 45.0, 60.0))
    # relative only: SPEC §4's float64 atol would pass any value this small
    torch.testing.assert_close(out.cpu().reshape(()), want, rtol=1e-10, atol=0)


def test_op_memory_is_linear():
    """Kx = Ky = 6000: the float32 (Kx, Ky) matrix would be 137 MiB; the peak RSS grows by far less."""
    import resource

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 6000, 16, generator=g), torch.randn(1, 6000, 16, generator=g)
    xl, yl = torch.randint(-1, 3, (1, 6000), generator=g), torch.randint(-1, 3, (1, 6000), generator=g)
    x.requires_grad_()
    y.requires_grad_()
    pk.pair_bce(x[:, :100], xl[:, :100], y[:, :100], yl[:, :100], backend="cpu").sum().backward()  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pk.pair_bce(x, xl, y, yl, backend="cpu").sum().backward()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < 24, f"peak RSS grew by {grown:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Infinite and NaN values, zero sizes and the sizes a compiler specialises (issue 35), on every
# backend and on the CUDA kernels through the emulator.

INF, NAN = float("inf"), float("nan")


def _values_and_grads(request, backend, device, x, xl, y, yl, scale, bias, dtype, g=None):
    """out and the gradients of x, y, scale, bias (tensors) of Σ g·out on `backend`, on the CPU
    in float64, and the reference's on the same values in float64."""
    x, y = x.to(dtype), y.to(dtype)
    scale, bias = torch.as_tensor(scale, dtype=stats_dtype(dtype)), torch.as_tensor(bias, dtype=stats_dtype(dtype))
    results = []
    for be, dev, cast in ((backend, device, lambda t: t), ("reference", "cpu", lambda t: t.double())):
        leaves = [cast(t).to(dev).detach().requires_grad_() for t in (x, y, scale, bias)]

        def run(b, leaves=leaves, dev=dev):
            out = pk.pair_bce(leaves[0], xl.to(dev), leaves[1], yl.to(dev), leaves[2], leaves[3], backend=b)
            w = torch.ones_like(out) if g is None else g.to(out)
            return out, torch.autograd.grad((out * w).sum(), leaves)

        out, grads = on_backend(request, be, run)
        results.append([out.detach().cpu().double(), *(t.cpu().double() for t in grads)])
    return results


def _assert_agree(got, want, dtype, names=("out", "dx", "dy", "dscale", "dbias")):
    for name, a, b in zip(names, got, want):
        assert_close(a, b, dtype, msg=name)


# x (1, 2, 2), y (1, 3, 2): row 0 of x label 0, row 1 label 1; y labels 0, 1, -1
_X = [[[1.0, 0.5], [-1.0, 2.0]]]
_Y = [[[1.0, 0.0], [2.0, 1.0], [3.0, -1.0]]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "case",
    ["x_inf", "x_minus_inf", "y_inf", "scale_inf", "scale_minus_inf", "scale_huge"],
)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_infinite_logits_give_the_formulas_limits(request, backend, device, case, dtype):
    """bce at z = ±inf is 0 where the target agrees and inf where not (not inf - inf = NaN), its
    derivative 0 or ±1, and a 0·inf in a pair's product (a = inf where e = 0) NaN: every
    backend as the reference, values and gradients."""
    x, y = torch.tensor(_X, dtype=torch.float64), torch.tensor(_Y, dtype=torch.float64)
    xl, yl = torch.tensor([[0, 1]]), torch.tensor([[0, 1, -1]])
    scale = {"scale_inf": INF, "scale_minus_inf": -INF, "scale_huge": 1e300 if dtype == torch.float64 else 1e37}
    if case == "x_inf":
        x[0, 0, 0] = INF  # z = +inf against y row 0 (t = 1: 0) and y row 1 (t = 0: inf)
    elif case == "x_minus_inf":
        x[0, 0, 0] = -INF
    elif case == "y_inf":
        y[0, 1, 1] = INF  # z = +inf against x row 0 (t = 0: inf) and x row 1 (t = 1: 0)
    got, want = _values_and_grads(request, backend, device, x, xl, y, yl, scale.get(case, 0.7), -0.2, dtype)
    _assert_agree(got, want, dtype)
    out = want[0]
    if case == "x_inf":
        assert out[0, 0] == INF  # 0 (t = 1 at +inf) + inf (t = 0 at +inf)
    if case == "y_inf":
        assert out[0, 0] == INF and out[0, 1].isfinite()  # x row 1 meets +inf with t = 1: 0, not NaN
    assert not out[0].isnan().all()


@pytest.mark.parametrize("which", ["scale", "bias"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_scale_or_bias_leaves_rows_that_take_no_part_at_zero(request, backend, device, which):
    """A NaN scale or bias: every pair that takes part is NaN, and so are the gradients of its
    rows; a padding row, and a valid row whose image has no valid row on the other side, take
    part in nothing and get exactly 0."""
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randn(2, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xl, yl = torch.tensor([[0, -1, 1], [0, 1, 1]]), torch.tensor([[0, -1], [-1, -3]])  # image 1: no valid y
    scale, bias = (NAN, 0.0) if which == "scale" else (0.7, NAN)
    for dtype in (torch.float64, torch.float32):
        got, want = _values_and_grads(request, backend, device, x, xl, y, yl, scale, bias, dtype)
        _assert_agree(got, want, dtype)
        out, dx, dy = got[:3]
        assert out[0, 0].isnan() and out[0, 2].isnan() and (out[0, 1] == 0) and (out[1] == 0).all()
        assert dx[0, 0].isnan().all() and dx[0, 2].isnan().all() and dy[0, 0].isnan().all()
        assert (dx[0, 1] == 0).all() and (dx[1] == 0).all() and (dy[0, 1] == 0).all() and (dy[1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_and_inf_in_rows_that_take_no_part_reach_nothing(request, backend, device, dtype):
    """NaN and ±inf in padding rows of x and y, and in valid rows of an image whose other side
    is all padding: finite outputs and gradients, exactly 0 for those rows, the reference's
    values elsewhere; a NaN in a valid row reaches its pairs only (not the padding rows of the
    other side, whose zero coefficients meet it in the products)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 3, dtype=torch.float64, generator=g)
    y = torch.randn(3, 4, 3, dtype=torch.float64, generator=g)
    xl = torch.tensor([[0, -1, 1, 2, -1], [0, 1, 1, -1, 0], [1, 0, -1, 2, 2]])
    yl = torch.tensor([[1, 0, -1, 2], [-1, -1, -1, -1], [0, -2, 1, -1]])
    x[0, 1], x[0, 4, 0], y[0, 2, 1], y[2, 1] = NAN, INF, -INF, INF  # padding rows
    x[1] = NAN  # valid rows, but image 1 has no valid y row
    x[2, 0, 2] = NAN  # a valid row of image 2: its pairs are NaN, not the padding rows of y
    got, want = _values_and_grads(request, backend, device, x, xl, y, yl, 0.8, 0.1, dtype)
    _assert_agree(got, want, dtype)
    out, dx, dy = got[:3]
    assert out[:2].isfinite().all() and (out[1] == 0).all() and out[2, 0].isnan()
    assert (dx[0, [1, 4]] == 0).all() and (dx[1] == 0).all() and (dx[2, 2] == 0).all()
    assert (dy[0, 2] == 0).all() and (dy[1] == 0).all() and (dy[2, [1, 3]] == 0).all()
    assert dx[0].isfinite().all() and dy[0].isfinite().all() and dy[2, [0, 2]].isnan().any()


@pytest.mark.parametrize("shape", [(0, 3, 4, 2), (2, 0, 4, 2), (2, 3, 0, 2), (2, 3, 4, 0), (0, 0, 0, 0)],
                         ids=["B0", "Kx0", "Ky0", "D0", "all0"])  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_zero_sizes_give_empty_or_zero_values_and_gradients(request, backend, device, shape):
    """A zero size in every position: out (B, Kx) (0 where Ky or D is 0: z = bias), the
    gradients of x, y, scale and bias of their shapes, as the reference's."""
    B, Kx, Ky, D = shape
    x, y = torch.randn(B, Kx, D, dtype=torch.float64), torch.randn(B, Ky, D, dtype=torch.float64)
    xl, yl = torch.zeros(B, Kx, dtype=torch.long), torch.arange(Ky).remainder(2).expand(B, Ky).contiguous()
    for dtype in (torch.float64, torch.float32):
        got, want = _values_and_grads(request, backend, device, x, xl, y, yl, 0.6, 0.3, dtype)
        _assert_agree(got, want, dtype)
        assert got[0].shape == (B, Kx) and got[1].shape == x.shape and got[2].shape == y.shape


@pytest.mark.parametrize("sizes", [(1, 1, 1), (1, 16, 1), (16, 32, 16), (17, 1, 32), (32, 16, 48)],
                         ids=lambda s: "Kx{}-Ky{}-D{}".format(*s))  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_sizes_a_compiler_specialises(request, backend, device, sizes):
    """Sizes of 1 and multiples of 16 (Triton makes 1 a constant and assumes divisibility by 16
    for the others) in Kx, Ky and D, one image: values and gradients as the reference's."""
    Kx, Ky, D = sizes
    g = torch.Generator().manual_seed(Kx + 7 * Ky + 31 * D)
    x = torch.randn(1, Kx, D, dtype=torch.float64, generator=g)
    y = torch.randn(1, Ky, D, dtype=torch.float64, generator=g)
    xl, yl = torch.randint(0, 2, (1, Kx), generator=g), torch.randint(-1, 2, (1, Ky), generator=g)
    w = torch.randn(1, Kx, dtype=torch.float64, generator=g)
    for dtype in (torch.float64, torch.float32):
        got, want = _values_and_grads(request, backend, device, x, xl, y, yl, 0.6, -0.3, dtype, g=w)
        _assert_agree(got, want, dtype)


@pytest.mark.parametrize("which", ["scale_nan", "scale_inf", "scale_inf_one_partner", "padding_nan"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.values[0] in ("triton", "cuda", "emulated")])
def test_half_inputs_with_nan_and_inf(request, backend, device, dtype, which):
    """The half kernels (CUDA's tensor-core tiles, 64 x 64 and 64-dim chunks; Triton's blocks):
    a NaN or infinite scale, and NaN/inf in padding rows, as the reference on the same half values
    (the NaNs where its products have them), padding rows and partnerless rows exactly 0."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 70, 66, dtype=torch.float64, generator=g)
    y = torch.randn(2, 67, 66, dtype=torch.float64, generator=g)
    xl, yl = torch.randint(-1, 3, (2, 70), generator=g), torch.randint(-1, 3, (2, 67), generator=g)
    yl[1, :] = -1  # image 1: no valid y row
    scale = {"scale_nan": NAN, "scale_inf": INF, "scale_inf_one_partner": INF}.get(which, 0.3)
    if which == "scale_inf_one_partner":  # one valid y row, every target 0: a row's a·e is +inf
        yl[0] = -1  # (S > 0) or NaN (S < 0, e = 0), and its dx = inf·y exactly (± per dim)
        yl[0, 5] = 7
    if which == "padding_nan":
        x[xl < 0] = NAN
        y[(yl < 0) & (torch.arange(67) % 2 == 0)] = INF
    if backend == "emulated":  # the op takes half inputs on GPU backends only: the kernels directly
        emu = request.getfixturevalue("emu")
        xh, yh = x.to(dtype), y.to(dtype)
        a, c = torch.tensor(scale), torch.tensor(0.1)
        out = emu.pair_bce(xh, xl, yh, yl, a, c)
        got = [out.double(), *(t.double() for t in emu.pair_bce_backward(torch.ones_like(out), xh, xl, yh, yl, a, c))]
        want = _values_and_grads(request, "reference", "cpu", x, xl, y, yl, scale, 0.1, dtype)[1]
    else:
        got, want = _values_and_grads(request, backend, device, x, xl, y, yl, scale, 0.1, dtype)
    _assert_agree(got, want, dtype)
    assert (got[1][xl < 0] == 0).all() and (got[1][1] == 0).all() and (got[2][yl < 0] == 0).all()
    if which == "padding_nan":
        assert all(t.isfinite().all() for t in got)


@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.id in ("triton", "cuda-emulated", "cuda")])
@pytest.mark.parametrize("side", ["x", "y"])
def test_long_sums_do_not_drift(request, backend, device, side):
    """One row against 6528 rows whose values sum, tile by tile of 32, to 2^24, then 0.375 a
    tile 200 times, then -2^24; the row itself 0, so every logit is 0 and e = σ(0) = 1/2 (labels
    differ): its gradient is Σ / 2 = 37.5 exactly. A float32 running sum over the tiles loses
    every 0.375 (Triton's dy kernel did: the H200 run of 2026-11-28, dense_similarity_loss's
    grad y over 5.8M rows); the GPU kernels' sums are float64. The CPU backend's float32 GEMM
    tiles are not held to this (test_similarity_reduce's test of the same name)."""
    long = torch.tensor([2.0**19] * 32 + [3.0 / 256] * (32 * 200) + [-(2.0**19)] * 32)[None, :, None]
    one = torch.zeros(1, 1, 1)
    x, y = (one, long) if side == "x" else (long, one)
    x, y = x.to(device).requires_grad_(), y.to(device).requires_grad_()
    xl = torch.zeros(1, x.shape[1], dtype=torch.int64, device=device)
    yl = torch.ones(1, y.shape[1], dtype=torch.int64, device=device)

    def grad(b):
        out = pk.pair_bce(x, xl, y, yl, backend=b)
        return torch.autograd.grad(out.sum(), x if side == "x" else y)[0]

    got = on_backend(request, backend, grad)
    assert got.shape[1] == 1 and got.item() == 37.5

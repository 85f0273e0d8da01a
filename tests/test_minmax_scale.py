"""minmax_scale (prior_mask's min-max normalisation, csrc/common/minmax_scale.h): every backend
and the emulated CUDA kernels against the reference in float64 (values and gradients) on rows
of awkward lengths, ties at the minimum and the maximum, a NaN, infinities and constant rows;
gradcheck; opcheck. prior_mask's contract (tests/test_prior_mask.py) covers it through the
public function; tests/test_schemas.py its direct calls with bad arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import COMPILED_BACKENDS, WITH_EMULATED, on_backend

from pixelkernels import _op
from pixelkernels.ops import minmax_scale as _minmax
from pixelkernels.testing import assert_close


def _rows(kind: str, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if kind == "odd":
        return torch.randn(3, 37, generator=g, dtype=dtype)
    if kind == "negative":  # every value below 0 (a masked-out 0 must not pass for the maximum)
        return torch.rand(3, 37, generator=g, dtype=dtype) - 2.0
    if kind == "one":  # a single value: lo = hi, y = 0 / eps
        return torch.randn(4, 1, generator=g, dtype=dtype)
    if kind == "long":  # several of the kernels' blocks, a remainder
        return torch.randn(2, 2 * 1024 + 37, generator=g, dtype=dtype)
    x = torch.randn(3, 40, generator=g, dtype=dtype)
    if kind == "ties":  # two maxima in row 0, two minima and a constant run in row 1, a constant row 2
        x[0, 5] = x[0, 9] = x[0].max() + 1
        x[1, :] = 0.25
        x[1, 3] = x[1, 30] = -1.0
        x[2, :] = 2.0
    elif kind == "nan":
        x[1, 7] = float("nan")
    elif kind == "inf":
        x[0, 2] = float("inf")
        x[2, 4] = float("-inf")
    return x


KINDS = ["odd", "negative", "one", "long", "ties", "nan", "inf"]


def _run(request, backend, x, g, eps):
    def fn(be):
        xx = x.clone().requires_grad_()
        y = _op.run(_minmax.OP, be, xx, eps)
        (gx,) = torch.autograd.grad(y, xx, g)
        return y.detach(), gx

    return on_backend(request, backend, fn)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_matches_the_reference(request, backend, device, kind):
    for dtype in (torch.float64, torch.float32):
        x = _rows(kind, dtype).to(device)
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=dtype).to(device)
        for eps in (1e-7, 0.0):
            y, gx = _run(request, backend, x, g, eps)
            want_y, want_g = _run(request, "reference", x.double(), g.double(), eps)
            assert torch.equal(y.isnan().cpu(), want_y.isnan()) and torch.equal(gx.isnan().cpu(), want_g.isnan())
            assert_close(y.cpu().nan_to_num(), want_y.nan_to_num(), dtype, msg=f"{backend} y {kind} eps={eps}")
            assert_close(gx.cpu().nan_to_num(), want_g.nan_to_num(), dtype, msg=f"{backend} grad {kind} eps={eps}")


@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.values[0] != "reference"])
def test_extremes_gradient_to_working_precision(request, backend, device):
    """A row of two values is scaled to (0, r / (r + eps)): its gradient is only eps's,
    g_hi eps / den^2 on the maximum and its negative on the minimum, a difference of terms
    g / den that cancel (RowGrad). Held to the working precision relative to that value itself
    (atol 0): the form with y rounded missed it by 25-60 % in float32 with eps = 1e-7 (the
    prior of a 1 x 2 query map), by about 1e-9 relative in float64. The kernels only: the reference
    is that straightforward form (torch.amin/amax's backward)."""
    gen = torch.Generator().manual_seed(5)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x = torch.randn(64, 2, generator=gen, dtype=dtype)
        g = torch.randn(64, 2, generator=gen, dtype=dtype)
        for eps in (1e-7, 1e-3):
            _, gx = _run(request, backend, x.to(device), g.to(device), eps)
            xd, gd = x.double(), g.double()
            den = (xd.amax(1) - xd.amin(1)) + eps
            hi = torch.where(xd[:, 0] > xd[:, 1], gd[:, 0], gd[:, 1]) * eps / den**2
            want = torch.where(xd == xd.amax(1, keepdim=True), hi[:, None], -hi[:, None])
            torch.testing.assert_close(gx.cpu().double(), want, rtol=rtol, atol=0.0,
                                       msg=lambda m: f"{backend} {dtype} eps={eps}: {m}")  # fmt: skip


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_infinite_gradient(request, backend, device):
    """An infinite incoming gradient (at a middle value, the minimum, the maximum) makes its row's
    gradient NaN everywhere, as torch.amin/amax's backward does; the other rows stay finite."""
    for dtype in (torch.float64, torch.float32):
        x = _rows("odd", dtype)
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=dtype)
        middle = ((x[0] != x[0].max()) & (x[0] != x[0].min())).to(torch.uint8).argmax()
        g[0, middle], g[1, x[1].argmin()], g[2, x[2].argmax()] = float("inf"), float("-inf"), float("inf")
        x = torch.cat([x, _rows("negative", dtype)[:1]])  # a row with finite gradients
        g = torch.cat([g, torch.ones_like(x[:1])])
        _, gx = _run(request, backend, x.to(device), g.to(device), 1e-7)
        _, want = _run(request, "reference", x.double(), g.double(), 1e-7)
        assert torch.equal(gx.isnan().cpu(), want.isnan()) and bool(want[:3].isnan().all())
        assert_close(gx.cpu().nan_to_num(), want.nan_to_num(), dtype, msg=f"{backend} {dtype}")


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_empty(request, backend, device):
    for shape in ((0, 5), (3, 0)):
        x = torch.randn(shape, dtype=torch.float64, device=device)
        y, gx = _run(request, backend, x, torch.ones_like(x), 1e-7)
        assert y.shape == gx.shape == shape


def test_gradcheck_reference_and_cpu():
    x = _rows("odd").requires_grad_()
    for backend in ("reference", "cpu"):
        assert torch.autograd.gradcheck(lambda t, b=backend: _op.run(_minmax.OP, b, t, 1e-3), (x,))
    # double backward: the reference's graph, on every backend
    assert torch.autograd.gradgradcheck(lambda t: _op.run(_minmax.OP, "cpu", t, 1e-3), (x,))


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_opcheck(backend, device):
    op = torch.ops.pixelkernels.minmax_scale_triton if backend == "triton" else torch.ops.pixelkernels.minmax_scale
    x = _rows("ties").to(device)
    torch.library.opcheck(op, (x, 1e-7))
    bwd = torch.ops.pixelkernels.minmax_scale_backward_triton if backend == "triton" else torch.ops.pixelkernels.minmax_scale_backward
    torch.library.opcheck(bwd, (torch.randn_like(x), x, 1e-7))

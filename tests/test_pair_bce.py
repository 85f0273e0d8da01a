"""pair_bce (csrc/common/pair_bce.h): the contract row (every backend against the materialising
reference, values and gradients of x and y), plus what is special to it: the gradients of scale
and bias as tensors on every backend, gradcheck through them, the loss's numerics where the
logits saturate, and memory that stays linear."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, weighted_loss
from contract import Contract, pair_sides, suite
from fuzz import Choice, Floats, Labels

import pixelkernels as pk
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
                    "y_labels": Labels(("B", "H"), bounded=False), "scale": Choice((1.0, -0.5)), "bias": Choice((0.0, 0.25))},  # fmt: skip
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
    emulated_cases={"mma_chunks": _inp(1, 70, 67, 130)},
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

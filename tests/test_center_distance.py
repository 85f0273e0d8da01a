"""center_distance: the generic contract (tests/contract.py) on awkward inputs, squared and
not, with pixels exactly on the center (distance 0, gradient 0)."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, make_emb, weighted_loss
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, suite

import pixelkernels as pk
from pixelkernels._dtypes import stats_dtype


def _inp(B, D, H, W, layout="contiguous", squared=False, on_center=False, nan_channel=False):
    def make(device, dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
        if nan_channel:  # one channel of pixel (1, 2) of image 0 is NaN
            emb = emb.clone()
            emb[0, D // 2, 1, 2] = float("nan")
        g = torch.Generator().manual_seed(5)
        center = (torch.randn(B, D, generator=g, dtype=torch.float64) + 3.0).to(stats_dtype(dtype)).to(device)
        if on_center:  # pixel (0, 0) of every image sits on the center
            center = emb[:, :, 0, 0].to(stats_dtype(dtype)).clone()
        return {"emb": emb, "center": center, "squared": squared}

    return make


def _call(inp, backend):
    return (pk.center_distance(inp["emb"], inp["center"], squared=inp["squared"], backend=backend),)


def _bad(**kw):
    return {"emb": torch.randn(2, 3, 4, 5), "center": torch.randn(2, 3), "squared": False, **kw}


ROW = Contract(
    op="center_distance",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "center": Floats(("B", "D"), stats=True), "squared": Choice((False, True))},
    make=_inp(2, 5, 7, 9),
    call=_call,
    shaped=_inp,
    loss=weighted_loss,
    grad_inputs=("emb", "center"),
    tiny=_inp(2, 3, 3, 4),
    zero_sizes={
        f"{'x'.join(map(str, s))}": _inp(*s)("cpu", torch.float32)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]
    },
    bad_inputs={
        "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
        "center_rank": (_bad(center=torch.randn(2, 3, 1)), ValueError, "center must have 2 dims"),
        "center_shape": (
            _bad(center=torch.randn(2, 4)),
            ValueError,
            "center must have shape (B, D) = (2, 3)",
        ),
        "center_int": (_bad(center=torch.zeros(2, 3, dtype=torch.long)), TypeError, "center must have dtype"),
        "center_device": (_bad(center=torch.randn(2, 3, device="meta")), ValueError, "same device"),
    },
    cases={
        "odd_squared": _inp(2, 3, 7, 5, squared=True),
        "d1": _inp(1, 1, 9, 11),
        "d17_channels_last": _inp(3, 17, 5, 13, "channels_last"),
        "d64_on_center": _inp(2, 64, 8, 9, on_center=True),
        "on_center_squared": _inp(2, 4, 5, 6, "channels_last", squared=True, on_center=True),
        "d130_slice": _inp(1, 130, 3, 5, "slice"),
        "hw_transposed": _inp(2, 3, 6, 4, "transposed"),
        "one_pixel": _inp(1, 3, 1, 1),
        "batch7": _inp(7, 3, 5, 3),
        "long_image": _inp(1, 2, 3, 3001),
        # Several images of several 4096-pixel CPU chunks of 512-pixel tiles.
        "chunks": _inp(2, 3, 70, 71),
        # A NaN distance: every channel of that pixel's gradient is NaN (sqrt's NaN derivative),
        # not only the NaN channel's; the other pixels finite.
        "nan_channel": _inp(2, 5, 3, 4, nan_channel=True),
        "nan_channel_squared": _inp(2, 5, 3, 4, squared=True, nan_channel=True),
    },
)

TestContract = suite(ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_zero_distance_has_zero_gradient(backend, device):
    inp = _inp(1, 3, 2, 2, on_center=True)(device, torch.float64)
    emb = inp["emb"].clone().requires_grad_(True)
    d = pk.center_distance(emb, inp["center"], backend=backend)
    (g,) = torch.autograd.grad(d.sum(), emb)
    assert d[0, 0, 0] == 0 and (g[0, :, 0, 0] == 0).all() and g.isfinite().all()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_backward_acc_grad_is_the_unrounded_gradient(backend, device):
    """center_distance_backward(acc_grad=True) (menet_saliency's backward asks for it) returns
    emb's gradient in the accumulation dtype, float32 for half emb: the same values as the
    default call before its rounding to emb's dtype, and the same center gradient."""
    if backend == "reference":
        pytest.skip("a kernel option: the reference has no backward op")
    op = torch.ops.pixelkernels.center_distance_backward_triton if backend == "triton" else torch.ops.pixelkernels.center_distance_backward
    for dtype in ((torch.float32, torch.float64) if backend == "cpu" else (torch.float16, torch.bfloat16, torch.float32)):
        emb = make_emb(2, 5, 6, 7, dtype=dtype, device=device)
        center = torch.randn(2, 5, dtype=stats_dtype(dtype), device=device)
        g = torch.randn(2, 6, 7, dtype=dtype, device=device)
        plain, gc = op(g, emb, center, False)
        acc, gc_acc = op(g, emb, center, False, True)
        assert plain.dtype == dtype and acc.dtype == stats_dtype(dtype) and acc.stride() == plain.stride()
        assert torch.equal(gc_acc, gc)
        if device == "cpu" and dtype in (torch.float16, torch.bfloat16):
            # the Triton interpreter's half stores do not round to nearest: within one ulp
            ulp = torch.finfo(dtype).eps * acc.abs() + torch.finfo(dtype).tiny
            assert ((acc - plain.to(acc.dtype)).abs() <= ulp).all()
        else:
            assert torch.equal(acc.to(dtype), plain)


@pytest.mark.skipif(not pk._ext.HAVE_CPU_KERNELS, reason="extension not built")
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_backward_of_a_large_map_streams_its_stores(dtype, squared):
    """A gradient map of 8 MiB or more is written with non-temporal stores (csrc/cpu/pixel_tiles.h
    write_row) and grad_center summed in lanes: both equal the reference's, rows at every 16-byte
    offset (P odd) and a last tile shorter than the lanes."""
    from conftest import assert_close

    from pixelkernels.reference.center_distance import center_distance as reference

    B, D, H, W = 3, 16 if dtype == torch.float32 else 8, 257, 255
    assert B * D * H * W * dtype.itemsize >= 8 << 20
    gen = torch.Generator().manual_seed(9)
    emb = torch.randn(B, D, H, W, generator=gen, dtype=dtype)
    center = torch.randn(B, D, generator=gen, dtype=dtype)
    g = torch.randn(B, H, W, generator=gen, dtype=dtype)
    x, c = emb.clone().requires_grad_(True), center.clone().requires_grad_(True)
    got = torch.autograd.grad((pk.center_distance(x, c, squared=squared, backend="cpu") * g).sum(), (x, c))
    xr, cr = emb.double().requires_grad_(True), center.double().requires_grad_(True)
    want = torch.autograd.grad((reference(xr, cr, squared) * g.double()).sum(), (xr, cr))
    assert_close(got[0], want[0], dtype)
    # grad_center = -sum of the P terms of grad_emb: in float32 its error scales with their sum of
    # magnitudes (here up to 65535 terms that cancel), not with the result
    mag = want[0].abs().sum((2, 3))
    tol = 0.0 if dtype == torch.float64 else 2e-6
    assert ((got[1].double() - want[1]).abs() <= tol * mag + 1e-9 * mag).all()

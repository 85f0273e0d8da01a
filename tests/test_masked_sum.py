"""masked_sum: the generic contract (tests/contract.py) on awkward inputs: soft, binary and
all-zero masks, non-contiguous masks, a mask dtype other than feat's."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, assert_close, fixed_weights, make_emb, make_weights
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, suite

import pixelkernels as pk


def _inp(B, C, H, W, layout="contiguous", pattern="soft", mask_dtype=None):
    def make(device, dtype):
        return {
            "feat": make_emb(B, C, H, W, dtype=dtype, device=device, layout=layout),
            "mask": make_weights(B, H, W, dtype=mask_dtype or dtype, device=device, pattern=pattern),
        }

    return make


def _call(inp, backend):
    return pk.masked_sum(inp["feat"], inp["mask"], backend=backend)


def _loss(out, inp):
    """Positive weights on the sums: grad_mask = sum_c w_c feat_c + w_mass is then a sum without
    cancellation, so float32 rounding stays within SPEC §4's tolerance even at D = 130."""
    s, mass = out
    return (s * fixed_weights(s).abs()).sum() + (mass * fixed_weights(mass)).sum()


def _bad(**kw):
    return {"feat": torch.randn(2, 3, 4, 5), "mask": torch.rand(2, 4, 5), **kw}


ROW = Contract(
    op="masked_sum",
    fuzz=lambda d: {"feat": Floats(("B", "D", "H", "W")), "mask": Floats(("B", "H", "W"), positive=True)},
    make=_inp(2, 5, 7, 9),
    call=_call,
    shaped=_inp,
    loss=_loss,
    grad_inputs=("feat", "mask"),
    tiny=_inp(2, 3, 3, 4),
    zero_sizes={
        f"{'x'.join(map(str, s))}": _inp(*s)("cpu", torch.float32)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]
    },
    bad_inputs={
        "feat_rank": (_bad(feat=torch.randn(3, 4, 5)), ValueError, "feat must have 4 dims"),
        "mask_rank": (_bad(mask=torch.rand(2, 1, 4, 5)), ValueError, "mask must have 3 dims"),
        "mask_int": (_bad(mask=torch.ones(2, 4, 5, dtype=torch.long)), TypeError, "mask must have dtype"),
        "mask_shape": (_bad(mask=torch.rand(2, 5, 4)), ValueError, "mask must have shape"),
        "mask_device": (
            _bad(mask=torch.rand(2, 4, 5, device="meta")),
            ValueError,
            "mask must be on the same device",
        ),
        "cpu_half": (
            _bad(feat=torch.randn(2, 3, 4, 5, dtype=torch.half), backend="cpu"),
            TypeError,
            "not by cpu",
        ),
    },
    cases={
        "odd": _inp(2, 3, 7, 5),
        "d1_binary": _inp(1, 1, 9, 11, pattern="binary"),
        "d17_channels_last": _inp(3, 17, 5, 13, "channels_last"),
        "d64_zero_mask": _inp(2, 64, 8, 9, pattern="zero"),
        "d130_slice": _inp(1, 130, 3, 5, "slice"),
        "mask_transposed": _inp(2, 3, 6, 4, "transposed", pattern="transposed"),
        "one_pixel": _inp(1, 3, 1, 1),
        "batch7": _inp(7, 3, 5, 3, pattern="binary"),
        "mask_float64": _inp(2, 4, 5, 6, mask_dtype=torch.float64),
        "long_image": _inp(1, 2, 3, 3001),
        # Several images of several 4096-pixel CPU chunks of 512-pixel tiles.
        "chunks": _inp(2, 3, 70, 71),
    },
)

TestContract = suite(ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_mask_is_read_in_feats_dtype(backend, device):
    """A mask of another dtype is rounded to feat's before use, by every backend (the reference
    included): a weight one part in 2^12 (fp16) or 2^30 (float32) above 1 reads as exactly 1."""
    dtype = torch.float16 if backend in ("triton", "cuda", "reference") else torch.float32
    mask_dtype, eps = (torch.float32, 2.0**-12) if dtype == torch.float16 else (torch.float64, 2.0**-30)
    feat = make_emb(2, 3, 5, 7, dtype=dtype, device=device)
    mask = torch.full((2, 5, 7), 1.0 + eps, dtype=mask_dtype, device=device)
    _, mass = pk.masked_sum(feat, mask, backend=backend)
    assert torch.equal(mass.cpu(), torch.full((2,), 35.0, dtype=mass.dtype))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("eps,zero_empty", [(0.0, True), (1e-5, False), (0.25, True), (0.0, False)])
def test_masked_mean_eps_and_empty_images(backend, device, eps, zero_empty):
    """masked_mean (internal: masked_average_pool's and menet_saliency's division folded into the
    sums' merge) against the reference in float64, values and gradients, both forms of an empty
    image: zero_empty (0, zero gradient, where mass + eps is not > 0) and a plain division (0/0 is
    NaN at eps = 0, as the reference's)."""
    from pixelkernels.ops import masked_mean as _masked_mean
    from pixelkernels.reference.masked_mean import masked_mean as reference

    dtype = torch.float64 if backend != "triton" or device == "cpu" else torch.float32
    feat = make_emb(3, 5, 7, 6, dtype=dtype, device=device)
    mask = make_weights(3, 7, 6, dtype=dtype, device=device)
    mask[1] = 0  # an empty image
    got_in = [t.detach().clone().requires_grad_() for t in (feat, mask)]
    want_in = [t.detach().clone().cpu().double().requires_grad_() for t in (feat, mask)]
    got = _masked_mean.masked_mean(*got_in, eps, zero_empty, backend)
    want = reference(*want_in, eps, zero_empty)
    for g, w in zip(got, want):
        assert_close(g.cpu(), w.to(g.dtype), dtype)
    if eps == 0.0 and not zero_empty:
        assert torch.isnan(got[0][1]).all()
        return  # NaN gradients, as the reference's: nothing more to compare
    weights = fixed_weights(got[0])
    gf, gm = torch.autograd.grad((got[0] * weights).sum(), got_in)
    wf, wm = torch.autograd.grad((want[0] * weights.cpu().double()).sum(), want_in)
    assert_close(gf.cpu(), wf.to(gf.dtype), dtype)
    assert_close(gm.cpu(), wm.to(gm.dtype), dtype)
    if zero_empty and eps == 0.0:
        assert not gf[1].any() and not gm[1].any()  # the empty image: zero gradient


@pytest.mark.skipif(not pk._ext.HAVE_CPU_KERNELS, reason="extension not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_backward_of_a_large_map_streams_its_stores(dtype):
    """A gradient map of 8 MiB or more is written with non-temporal stores (csrc/cpu/pixel_tiles.h
    write_row): masked_sum's and masked_mean's gradients (the latter with grad_feat_in added, as
    menet_saliency's backward passes it) equal the reference's, rows at every 16-byte offset
    (P odd)."""
    from pixelkernels.reference.masked_mean import masked_mean as ref_mean
    from pixelkernels.reference.masked_sum import masked_sum as ref_sum

    B, C, H, W = 3, 16 if dtype == torch.float32 else 8, 257, 255
    assert B * C * H * W * dtype.itemsize >= 8 << 20
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    mask = torch.rand(B, H, W, generator=g, dtype=dtype)
    gs, gm = torch.randn(B, C, generator=g, dtype=dtype), torch.randn(B, generator=g, dtype=dtype)
    x = feat.clone().requires_grad_(True)
    s, m = pk.masked_sum(x, mask, backend="cpu")
    (got,) = torch.autograd.grad((s * gs).sum() + (m * gm).sum(), x)
    xr = feat.double().requires_grad_(True)
    sr, mr = ref_sum(xr, mask.double())
    (want,) = torch.autograd.grad((sr * gs.double()).sum() + (mr * gm.double()).sum(), xr)
    assert_close(got, want, dtype)
    op = torch.ops.pixelkernels
    mean, mass = op.masked_mean(feat, mask, 1e-3, False, None)
    gin = torch.randn(feat.shape, generator=g, dtype=dtype)
    got, _ = op.masked_mean_backward(gs, feat, mask, mean, mass, 1e-3, False, gin)
    xr = feat.double().requires_grad_(True)
    (want,) = torch.autograd.grad((ref_mean(xr, mask.double(), 1e-3, False)[0] * gs.double()).sum(), xr)
    assert_close(got, want + gin.double(), dtype)

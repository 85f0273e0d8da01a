"""prior_mask reference: equal (values and gradients) to PFENet's own formulation written out
here (cosine of masked support features by bmm, max over support pixels, min-max per image);
the all-zero support mask gives 0 without NaN; gradcheck."""

from __future__ import annotations

import pytest
import torch

from pixelkernels.reference.prior_mask import prior_mask
from pixelkernels.testing import assert_close

DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


def pfenet_prior(query_feat, supp_feat, mask, cosine_eps=1e-7, raw=False):
    """PFENet (Tian et al. 2020, model/PFENet.py, the prior of layer-4 features), with the mask
    given as (B, H, W) instead of (B, 1, H, W). raw=True: the max cosines before the min-max."""
    q = query_feat
    s = supp_feat * mask.to(supp_feat.dtype).unsqueeze(1)
    bsize, ch_sz, hq, wq = q.size()
    tmp_query = q.contiguous().view(bsize, ch_sz, -1)
    tmp_query_norm = torch.norm(tmp_query, 2, 1, True)
    tmp_supp = s.contiguous().view(bsize, ch_sz, -1).contiguous().permute(0, 2, 1)
    tmp_supp_norm = torch.norm(tmp_supp, 2, 2, True)
    similarity = torch.bmm(tmp_supp, tmp_query) / (torch.bmm(tmp_supp_norm, tmp_query_norm) + cosine_eps)
    similarity = similarity.max(1)[0].view(bsize, hq * wq)
    if raw:
        return similarity
    lo = similarity.min(1)[0].unsqueeze(1)
    hi = similarity.max(1)[0].unsqueeze(1)
    similarity = (similarity - lo) / (hi - lo + cosine_eps)
    return similarity.view(bsize, 1, hq, wq)


def make_mask(kind, B, H, W, g):
    if kind == "binary":
        return (torch.rand(B, H, W, generator=g) < 0.4).float()
    if kind == "bool":
        return torch.rand(B, H, W, generator=g) < 0.4
    if kind == "uint8":
        return (torch.rand(B, H, W, generator=g) < 0.6).to(torch.uint8)
    if kind == "soft":
        return torch.rand(B, H, W, generator=g, dtype=torch.float64)
    if kind == "ones":
        return torch.ones(B, H, W)
    raise ValueError(kind)


# name: (B, C, Hq, Wq, Hs, Ws, mask kind)
CASES = {
    "single_pixels": (1, 3, 1, 1, 1, 1, "ones"),
    "C130_odd": (3, 130, 5, 7, 6, 4, "binary"),
    "C1": (2, 1, 4, 3, 3, 5, "binary"),
    "square_soft": (2, 17, 9, 9, 9, 9, "soft"),
    "bool_mask": (1, 3, 4, 6, 2, 3, "bool"),
    "uint8_mask": (3, 8, 3, 5, 7, 2, "uint8"),
}


def make_case(name, dtype, seed=0):
    B, C, Hq, Wq, Hs, Ws, kind = CASES[name]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, C, Hq, Wq, generator=g, dtype=torch.float64).to(dtype)
    s = torch.randn(B, C, Hs, Ws, generator=g, dtype=torch.float64).to(dtype)
    m = make_mask(kind, B, Hs, Ws, g)
    if m.is_floating_point():
        m = m.to(dtype)
    return q, s, m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pfenet(case, dtype):
    q, s, m = make_case(case, dtype)
    out = prior_mask(q, s, m)
    assert out.shape == (q.shape[0], 1, *q.shape[2:]) and out.dtype == dtype
    want = pfenet_prior(q.double(), s.double(), m)
    if dtype == torch.float64:
        assert_close(out, want)
    else:
        # The min-max divides float32 rounding of the cosines by their spread max c - min c: ~1
        # for real features, ~eps for C = 1 (every cosine is ±1), where float32 says nothing.
        c = pfenet_prior(q.double(), s.double(), m, raw=True)
        spread = (c.amax(1) - c.amin(1)).clamp_min(1e-12)[:, None, None, None]
        assert ((out.double() - want).abs() <= 1e-5 * torch.clamp(1 / spread, min=1)).all()
    assert (out >= 0).all() and (out <= 1).all()


def test_gradient_matches_pfenet():
    q, s, m = make_case("C130_odd", torch.float64, seed=1)
    m = torch.rand(m.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w = torch.randn(
        q.shape[0], 1, *q.shape[2:], generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )

    def grads(f):
        qq, ss, mm = (t.clone().requires_grad_(True) for t in (q, s, m))
        return torch.autograd.grad((f(qq, ss, mm) * w).sum(), (qq, ss, mm))

    for got, want in zip(grads(prior_mask), grads(pfenet_prior)):
        assert_close(got, want)


def test_all_zero_mask_gives_zero():
    """Every masked support feature is 0: cosine 0 everywhere, min = max, 0 / (0 + eps) = 0."""
    q, s, m = make_case("C130_odd", torch.float64)
    m = torch.zeros_like(m)
    q.requires_grad_(True), s.requires_grad_(True)
    out = prior_mask(q, s, m)
    assert (out == 0).all()
    assert_close(out, pfenet_prior(q, s, m))
    gq, gs = torch.autograd.grad(out.sum(), (q, s))
    assert torch.isfinite(gq).all() and torch.isfinite(gs).all()


def test_one_image_masked_out_leaves_the_others():
    q, s, m = make_case("uint8_mask", torch.float64)
    m[1] = 0
    out = prior_mask(q, s, m)
    assert (out[1] == 0).all()
    assert_close(out, pfenet_prior(q, s, m))
    assert (out[0].amax() > 0.99) and (out[2].amax() > 0.99)


def test_half_inputs_compute_in_float32():
    q, s, m = make_case("square_soft", torch.float32)
    out = prior_mask(q.bfloat16(), s.bfloat16(), m)
    assert out.dtype == torch.float32
    assert torch.equal(out, prior_mask(q.bfloat16().float(), s.bfloat16().float(), m))


def test_channels_last():
    q, s, m = make_case("C130_odd", torch.float64)
    cl = prior_mask(
        q.contiguous(memory_format=torch.channels_last), s.contiguous(memory_format=torch.channels_last), m
    )
    assert_close(cl, prior_mask(q, s, m))


def test_gradcheck():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    m = (torch.rand(2, 3, 2, generator=g, dtype=torch.float64) + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(prior_mask, (q, s, m))


# ---------------------------------------------------------------------------------------------
# The op (pixelkernels.prior_mask): the contract on every backend, then PFENet's prior.

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

from conftest import BACKENDS, weighted_loss  # noqa: E402
from contract import Contract, suite  # noqa: E402
from fuzz import Choice, Floats  # noqa: E402

import pixelkernels as pk  # noqa: E402


def _pm_inp(name, *, layout="contiguous", seed=0):
    def make(device, dtype):
        q, s, m = make_case(name, torch.float64, seed=seed)
        if layout == "channels_last":
            q = q.contiguous(memory_format=torch.channels_last)
            s = s.contiguous(memory_format=torch.channels_last)
        m = m.to(dtype) if m.is_floating_point() else m
        return {"query_feat": q.to(device, dtype), "support_feat": s.to(device, dtype), "support_mask": m.to(device)}

    return make


def _pm_shaped(B, D, H, W, layout):
    """A (B, D, H, W) query against a small (B, D, 3, 2) support: with as many support pixels as
    query pixels and D = 3 the best cosine is ~1 everywhere and the min-max normalisation divides
    by ~0 (an ill-conditioned prior: float32 rounding amplified 1e3x, whatever the kernel).
    Every image is kept well conditioned, its prior spanning at least 1 before the min-max:
    support pixel 0 is in the mask and query pixel 0 is its copy (best cosine 1), every support
    vector has a positive first channel and query pixel 1 is (-1, 0, ...) (best cosine < 0);
    query vectors have norms in [1, 2).
    Random draws alone leave, among GPU_SHAPES' 65541 images, some whose span is ~1e-3, where
    float32 misses SPEC §4 in any kernel (the CPU backend's too: the first GPU run). Past 2^16
    query pixels the support is one pixel: among ~1e6 (pixel, support pair)s some best cosines
    tie to 1e-7 (seen there: 0.927161814 vs 0.927161889), where the gradient is discontinuous
    and float32 may take either side; there the queries' cosines to it are placed so that the
    prior's max and min are unique by a margin (see below)."""
    hs, ws = (3, 2) if B * H * W <= 2**16 else (1, 1)

    def make(device, dtype):
        g = torch.Generator().manual_seed(1)
        q = torch.randn(B, D, H, W, generator=g, dtype=torch.float64)
        s = torch.randn(B, D, hs, ws, generator=g, dtype=torch.float64)
        m = (torch.rand(B, hs, ws, generator=g) < 0.7).to(torch.float64)
        if D > 0 and H * W >= 2:
            # query norms in [1, 2): a cosine's gradient grows as 1 / |q|
            q = q / q.norm(dim=1, keepdim=True) * (1 + torch.rand(B, 1, H, W, generator=g, dtype=torch.float64))
            s[:, 0] = s[:, 0].abs() + 0.5
            m[:, 0, 0] = 1.0
            q = q.flatten(2)
            if hs * ws == 1 and D >= 2:
                # One support vector ŝ: query pixel 0's cosine to it 0.995, pixel 1's -0.995, every
                # other's drawn in [-0.99, 0.99]: the prior's only max and min, by a margin. Random
                # queries put millions of cosines within float32's 6e-8 of ±1 (0.99999982 against
                # a planted 1 on the CPU backend at wide_image), where the min-max's gradient goes
                # to whichever pixel float32 ranks first (a tie: no answer); and a planted copy of
                # ŝ (cosine 1) has a cosine gradient that is 0 by cancellation, which the min-max
                # multiplies by Σ_i g_i (c_i - min) / span² (~2e3 over 5.8M pixels): float32's
                # rounding of that 0 came out as 0.0099.
                u = s[:, :, 0, 0] / s[:, :, 0, 0].norm(dim=1, keepdim=True)  # (B, D)
                norm = q.norm(dim=1, keepdim=True)
                perp = q - (q * u[..., None]).sum(1, keepdim=True) * u[..., None]
                perp = perp / perp.norm(dim=1, keepdim=True).clamp_min(1e-30)
                cos = (torch.rand(B, 1, H * W, generator=g, dtype=torch.float64) * 2 - 1) * 0.99
                cos[:, :, 0], cos[:, :, 1] = 0.995, -0.995
                q = norm * (cos * u[..., None] + (1 - cos**2).sqrt() * perp)
            else:
                q[:, :, 0] = s[:, :, 0, 0]
                q[:, :, 1] = 0.0
                q[:, 0, 1] = -1.0
            q = q.view(B, D, H, W)
        if layout == "channels_last":
            q, s = (t.contiguous(memory_format=torch.channels_last) for t in (q, s))
        return {"query_feat": q.to(device, dtype), "support_feat": s.to(device, dtype),
                "support_mask": m.to(device, dtype)}  # fmt: skip

    return make


def _pm_call(inp, backend):
    kw = {"eps": inp["eps"]} if "eps" in inp else {}
    return (pk.prior_mask(inp["query_feat"], inp["support_feat"], inp["support_mask"], backend=backend, **kw),)


def _pm_bad(**kw):
    return {**_pm_inp("C1")("cpu", torch.float32), **kw}


def _pm_max_gaps(inp):
    """Contract.kink_gaps: the prior's max is similarity_reduce's cosine max of each query pixel
    over the masked support m_j s_j (one class). A support map expanded along C (stride 0: every
    channel the same) makes every support vector parallel to (1, ..., 1): its cosines tie but for
    eps, as with C = 1 (_pm_fuzz), and float32 and float64 break those ties apart. Then the
    min-max normalisation's own min and max over each image's query pixels, which are maxima
    too: where an image's largest (smallest) priors are apart by less than the working precision
    (nearly parallel query vectors), which pixels share the max's gradient is again its call."""
    from test_similarity_reduce import max_score_gaps

    q, s, m = inp["query_feat"], inp["support_feat"], inp["support_mask"]
    (B, C, Hq, Wq), (Hs, Ws) = q.shape, s.shape[2:]
    if q.numel() == 0 or s.numel() == 0:
        return None  # no max to take, or none over C = 0 dims (every cosine 0)
    ref = s.reshape(B, C, Hs * Ws).transpose(1, 2)
    labels = torch.zeros(B, Hs * Ws, dtype=torch.long, device=ref.device)
    gap, top = max_score_gaps(q.reshape(B, C, Hq * Wq).transpose(1, 2), ref, labels, 1, reduce="max", metric="cosine",
                              eps=inp.get("eps", 1e-7), ref_weight=m.reshape(B, Hs * Ws).double())  # fmt: skip
    # The gap from each image's max (min) prior to the nearest value not equal to it: values
    # equal in float64 are equal in every dtype (the same pixel vectors), and share alike. But an
    # image of two or more pixels whose priors are all equal (a query map expanded along H with
    # W = 1) counts as tied: every pixel is its min and its max, y = (x - lo) / eps, and the
    # gradient (g - mean g) / eps reaches the support and the mask as sums over the pixels that
    # cancel terms 1 / eps = 1e7 times larger than themselves (float64 kernels 7.9e-12 off an
    # exact 0 there). minmax_scale's own tests hold constant rows to the reference directly.
    prior = top[..., 0]  # (B, Hq Wq): what minmax_scale normalises
    hi, lo = prior.amax(1, keepdim=True), prior.amin(1, keepdim=True)
    below = torch.where(prior < hi, prior, float("-inf")).amax(1, keepdim=True)
    above = torch.where(prior > lo, prior, float("inf")).amin(1, keepdim=True)
    constant = (hi == lo) & (prior.shape[1] > 1)
    below, above = torch.where(constant, hi, below), torch.where(constant, lo, above)
    gaps = torch.cat([gap.flatten(), (hi - below).flatten(), (above - lo).flatten()])
    return gaps, torch.cat([top.flatten(), hi.flatten(), lo.flatten()])


def _pm_fuzz(d):
    """What prior_mask takes. D = 1 is drawn as 2: with one channel every cosine is ±1 (up to
    eps), so the min-max normalisation divides rounding noise by max - min ~ eps / (|q| |s|),
    which no tolerance survives in any implementation (the float64 reference against itself in
    float32 included); the other sizes Triton specialises (16, 32) stay. For the same reason the
    query map is never expanded along C: every query vector a multiple of (1, ..., 1) is D = 1 for
    the query side (each pixel's prior is ±max_j cos(1, s_j) up to eps; an image whose pixels share
    a sign has priors apart by eps's effect alone, about 1e-8, which the min-max scales to [0, 1]:
    the float64 CPU kernels and the float64 reference differed by 2.6e-8 relative there)."""
    C = 2 if d["D"] == 1 else "D"
    return {"query_feat": Floats(("B", C, "H", "W"), no_expand=(1,)), "support_feat": Floats(("B", C, "W", "H")),
            "support_mask": Floats(("B", "W", "H"), positive=True, integer_ok=True),
            "eps": Choice((1e-7,), extreme=(0.0,))}


PM_ROW = Contract(
    op="prior_mask",
    uses=("similarity_reduce", "minmax_scale"),
    fuzz=_pm_fuzz,
    make=_pm_inp("C130_odd"),
    call=_pm_call,
    shaped=_pm_shaped,
    loss=weighted_loss,
    grad_inputs=("query_feat", "support_feat"),
    kink_gaps=_pm_max_gaps,
    tiny=_pm_shaped(2, 3, 3, 2, "contiguous"),
    zero_sizes={
        "B0": _pm_shaped(0, 3, 4, 5, "contiguous")("cpu", torch.float32),
        "C0": _pm_shaped(2, 0, 4, 5, "contiguous")("cpu", torch.float32),
    },
    bad_inputs={
        "query_rank": (_pm_bad(query_feat=torch.randn(2, 1, 4)), ValueError, "query_feat must have 4 dims"),
        "support_dtype": (_pm_bad(support_feat=torch.randn(2, 1, 3, 5, dtype=torch.float64)), TypeError,
                          "support_feat must have query_feat's dtype"),  # fmt: skip
        "support_channels": (_pm_bad(support_feat=torch.randn(2, 2, 3, 5)), ValueError, "support_feat must have (B, C)"),
        "mask_shape": (_pm_bad(support_mask=torch.ones(2, 3, 4)), ValueError, "support_mask must have support_feat's (B, Hs, Ws)"),
        "eps": (_pm_bad(eps=-1.0), ValueError, "eps must be >= 0"),
    },
    cases={name: _pm_inp(name) for name in ("single_pixels", "square_soft", "bool_mask", "uint8_mask")},
)

TestContract = suite(PM_ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_matches_pfenet(backend, device):
    q, s, m = make_case("C130_odd", torch.float64, seed=3)
    got = pk.prior_mask(q.to(device), s.to(device), m.to(device), backend=backend)
    assert_close(got.cpu(), pfenet_prior(q, s, m))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_soft_mask_gradient(backend, device):
    """The contract differentiates both maps; a soft mask is differentiable too (the mask is
    similarity_reduce's ref_weight), against the reference in float64, with masked-out pixels."""
    q, s, m = make_case("square_soft", torch.float64, seed=4)
    m = m.clone()
    m.view(-1)[::3] = 0

    def grads(b, dev):
        x = [t.to(dev).requires_grad_(True) for t in (q, s, m)]
        out = pk.prior_mask(*x, backend=b)
        w = torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=dev).view_as(out)
        return torch.autograd.grad((out * w).sum(), x)

    for name, a, b in zip(("query_feat", "support_feat", "support_mask"), grads(backend, device), grads("reference", "cpu")):
        assert_close(a.cpu(), b, msg=name)


def test_op_memory_is_the_gradients():
    """On the CPU, forward+backward of a 64x64 query against a 64x64 support (C = 256) allocates
    little beyond the two feature-map gradients (8 MiB): both maps and their gradients are read
    and written in place (D-major), the mask applied inside the tiles; the (4096, 4096) cosine
    matrix would be 64 MiB, the masked support copy and its gradient 8 MiB."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    code = textwrap.dedent(
        """
        import os, torch, pixelkernels as pk
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 256, 64, 64, generator=g).requires_grad_()
        s = torch.randn(1, 256, 64, 64, generator=g).requires_grad_()
        m = (torch.rand(1, 64, 64, generator=g) < 0.4).float()
        pk.set_checks(False)
        def step():
            pk.prior_mask(q, s, m, backend="cpu").sum().backward()
            q.grad = s.grad = None
        def kib(key):
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
        step()
        open("/proc/self/clear_refs", "w").write("5")
        base = kib("VmRSS")
        step()
        print((kib("VmHWM") - base) * 1024)
        """
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # large buffers mapped: RSS follows what is live
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    grew = int(out.stdout.split()[-1])
    grads = 2 * 256 * 64 * 64 * 4
    assert grew < grads + 2 * 2**20, f"peak grew by {grew / 2**20:.1f} MiB for {grads / 2**20:.0f} MiB of gradients"


# ---------------------------------------------------------------------------------------------
# Inputs an adversarial user tried (issue 35), on every backend and the emulated CUDA kernels.

from conftest import WITH_EMULATED, on_backend  # noqa: E402
from test_similarity_reduce import agrees_with_reference  # noqa: E402


def _exact_maps(B, C, Hq, Wq, Hs, Ws, dtype, seed=0):
    """Feature maps in multiples of 1/8 (exact dots), a binary mask with zeros."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, C, Hq, Wq, generator=g, dtype=torch.float64) * 16).round() / 8
    s = (torch.randn(B, C, Hs, Ws, generator=g, dtype=torch.float64) * 16).round() / 8
    m = (torch.rand(B, Hs, Ws, generator=g) < 0.6).to(torch.float64)
    return q.to(dtype), s.to(dtype), m.to(dtype)


@pytest.mark.parametrize("mask_grad", [False, True], ids=["mask", "mask_grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_eps_zero_matches_reference(request, backend, device, dtype, mask_grad):
    """eps = 0 is valid (issue 35, 2): masked-out support pixels are zero vectors whose norm is
    clamped at sqrt(tiny) (cosine 0, as the reference's), and no tile lane divides 0 by 0
    (Triton's gradients were all NaN). A zero query pixel too. With mask_grad the mask is
    differentiated as well (at a masked-out pixel: Σ A (q·s) with |w s| at the floor). The
    reference in the same dtype: the floor is the dtype's."""
    q, s, m = _exact_maps(2, 5, 3, 4, 3, 3, dtype)
    q[0, :, 1, 2] = 0.0
    inp = {"query_feat": q, "support_feat": s, "support_mask": m, "eps": 0.0}
    keys = ("query_feat", "support_feat") + (("support_mask",) if mask_grad else ())
    got = agrees_with_reference(request, _pm_call, inp, keys, backend, device, same_dtype=True)
    assert all(torch.isfinite(t).all() for t in got)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_support_feature_gradient_matches_reference(request, backend, device):
    """A NaN support feature makes its image's best cosines NaN, and by torch.amax's rule every
    support pixel's gradient NaN (issue 35, 6: the kernels' `s == o` test gave them 0); the
    other image is untouched."""
    q, s, m = _exact_maps(2, 5, 3, 4, 3, 3, torch.float64)
    s[0, 2, 1, 1] = float("nan")
    m[0, 1, 1] = 1.0
    inp = {"query_feat": q, "support_feat": s, "support_mask": m}
    got = agrees_with_reference(request, _pm_call, inp, ("query_feat", "support_feat"), backend, device)
    assert got[0][0].isnan().all() and torch.isfinite(got[0][1]).all()
    assert got[2][0].isnan().all() and torch.isfinite(got[2][1]).all()


@pytest.mark.parametrize("size", [(0, 4), (3, 0)], ids=["Hq0", "Wq0"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_empty_query_map_gives_empty_prior_with_gradients(request, backend, device, size):
    """Hq·Wq = 0 is valid input (issue 35, 7: amin over no pixel raised IndexError): the empty
    prior (B, 1, Hq, Wq), and a backward through it gives zero gradients of both maps and the mask."""
    q, s, m = _exact_maps(2, 5, *size, 3, 3, torch.float32)

    def run(b):
        x = [t.to(device).requires_grad_(True) for t in (q, s, m)]
        out = pk.prior_mask(*x, backend=b)
        return (out, *torch.autograd.grad(out.sum(), x))

    out, *grads = on_backend(request, backend, run)
    assert out.shape == (2, 1, *size) and out.dtype == torch.float32
    for g, t in zip(grads, (q, s, m)):
        assert g.shape == t.shape and (g == 0).all()


@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.values[0] != "reference"])
def test_two_pixel_query_gradient_to_working_precision(request, backend, device):
    """A 1 x 2 query map: its prior is (0, r / (r + eps)), and the gradient is eps's alone,
    eps g / den^2 through the min-max (csrc/common/minmax_scale.h, RowGrad), about 1e-7 here.
    The kernels in float32 against the float64 reference on the same values: 0.1 % in norm (the
    cosines' own rounding), where the min-max's gradient with y rounded was 25 % off (fresh-seed
    fuzz, 2026-11-30). The reference in float32 is that straightforward form, so not held to it."""
    g = torch.Generator().manual_seed(11)
    q, s = torch.randn(3, 16, 1, 2, generator=g), torch.randn(3, 16, 2, 3, generator=g)
    m = torch.rand(3, 2, 3, generator=g)

    def run(b, dtype):
        def fn(be):
            x = [t.to(device if be != "reference" else "cpu", dtype).requires_grad_(True) for t in (q, s, m)]
            out = pk.prior_mask(*x, backend=be)
            w = torch.linspace(-1.0, 1.0, out.numel(), dtype=dtype, device=out.device).view_as(out)
            return torch.autograd.grad((out * w).sum(), x)

        return fn(b) if b == "reference" else on_backend(request, b, fn)

    want = run("reference", torch.float64)
    got = run(backend, torch.float32)
    for name, a, e in zip(("query_feat", "support_feat", "support_mask"), got, want):
        err = float((a.cpu().double() - e).norm() / e.norm())
        assert 0 < float(e.norm()) < 1e-5 and err < 1e-2, (backend, name, err, float(e.norm()))

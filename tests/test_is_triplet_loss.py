"""is_triplet_loss and nn.ISTripletLoss (SPEC §3.2, seed 000 eq. 4): every backend equals the
reference composition for the same generator state (values and gradients), eq. 4 on the drawn
sets equals torch's triplet_margin_loss halves, images without foreground or background are
left out, and bad masks and arguments are refused naming the argument."""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from conftest import BACKENDS, assert_close, make_emb
from fuzz import Choice, Floats, Labels, Seeds
from contract import FuzzRow, fuzz_suite
from contract import EmulateCuda

import pixelkernels as pk
from pixelkernels.reference.triplet_losses import draw_sets
from pixelkernels.reference.triplet_losses import is_triplet_loss as reference


def _mask(B, H, W, *, seed=0, device="cpu", ignore=-1):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r = torch.linspace(0.2, 0.4, B).view(B, 1, 1) * min(H, W)
    m = (((yy - H / 2) ** 2 + (xx - W / 2) ** 2) < r**2).long().expand(B, H, W).clone()
    m[torch.rand(B, H, W, generator=g) < 0.1] = ignore
    return m.to(device)


@pytest.mark.parametrize("mining", ["random", "hard"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_backends_equal_the_reference(backend, device, dtype, mining):
    emb = make_emb(3, 6, 11, 13, dtype=dtype, device=device, layout="channels_last")
    mask = _mask(3, 11, 13, device=device)
    mask[1] = 1  # no background: left out
    for K, squared in ((20, False), (200, True)):  # K above the class sizes (143 pixels an image) too
        e = emb.detach().requires_grad_(True)
        gen = torch.Generator(device).manual_seed(K)
        got = pk.is_triplet_loss(e, mask, num_samples=K, margin=1.0, squared=squared, mining=mining, generator=gen,
                                 backend=backend)  # fmt: skip
        (g_got,) = torch.autograd.grad(got, e)
        # The reference on the op's device: a CUDA generator draws other keys than a CPU one.
        r = emb.detach().double().requires_grad_(True)
        want = reference(r, mask, K, 1.0, squared, mining, torch.Generator(device).manual_seed(K))
        (g_want,) = torch.autograd.grad(want, r)
        assert_close(got.cpu(), want.cpu(), dtype, msg="loss")
        assert_close(g_got.cpu(), g_want.cpu(), dtype, msg="grad")
        assert (g_got[1] == 0).all()


def test_eq4_on_the_drawn_sets_is_torch_triplet_margin_loss():
    emb = make_emb(2, 5, 9, 10, dtype=torch.float64, device="cpu")
    mask = _mask(2, 9, 10)
    got = pk.is_triplet_loss(emb, mask, num_samples=30, margin=3.0, generator=torch.Generator().manual_seed(1))
    f1, f2, b1, b2 = draw_sets(mask, 30, torch.Generator().manual_seed(1), -1)
    per_image = []
    for b in range(2):
        x = emb[b].reshape(5, -1).T
        n = int(min((f1[b] >= 0).sum(), (b1[b] >= 0).sum()))
        t1 = F.triplet_margin_loss(x[f1[b, :n]], x[f2[b, :n]], x[b1[b, :n]], margin=3.0, eps=0.0)
        t2 = F.triplet_margin_loss(x[b1[b, :n]], x[b2[b, :n]], x[f2[b, :n]], margin=3.0, eps=0.0)
        per_image.append(0.5 * (t1 + t2))
    torch.testing.assert_close(got, torch.stack(per_image).mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_no_valid_image_gives_zero_with_zero_gradient(backend, device):
    emb = make_emb(2, 4, 5, 6, dtype=torch.float64, device=device).requires_grad_(True)
    mask = torch.zeros(2, 5, 6, dtype=torch.long, device=device)  # no foreground anywhere
    loss = pk.is_triplet_loss(emb, mask, num_samples=8, backend=backend)
    (g,) = torch.autograd.grad(loss, emb)
    assert float(loss.detach()) == 0.0 and (g == 0).all()


def test_bool_mask_and_the_module():
    emb = make_emb(2, 4, 8, 9, dtype=torch.float64, device="cpu")
    mask = _mask(2, 8, 9).clamp_min(0)
    a = pk.is_triplet_loss(emb, mask.bool(), num_samples=10, generator=torch.Generator().manual_seed(3))
    m = pk.nn.ISTripletLoss(num_samples=10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(m(emb, mask), a, rtol=0, atol=0)
    assert "num_samples=10" in repr(m)


@pytest.mark.skipif(importlib.util.find_spec("pytorch_metric_learning") is None, reason="pytorch-metric-learning not installed")
def test_pytorch_metric_learning_on_the_same_sets():
    """pytorch-metric-learning's TripletMarginLoss on explicit triplets equals one term of eq. 4
    with two of its defaults changed: the mean over all triplets (MeanReducer; its default
    divides by the non-zero ones) and unnormalised embeddings (its LpDistance normalises them)."""
    from pytorch_metric_learning import distances, losses, reducers

    emb = make_emb(1, 5, 9, 10, dtype=torch.float64, device="cpu")
    mask = _mask(1, 9, 10)
    f1, f2, b1, _ = draw_sets(mask, 25, torch.Generator().manual_seed(2), -1)
    n = int(min((f1 >= 0).sum(), (b1 >= 0).sum()))
    x = emb[0].reshape(5, -1).T
    ours = pk.triplet_hinge(emb, f1[:, :n], f2[:, :n], b1[:, :n], margin=3.0)[0]
    pml = losses.TripletMarginLoss(margin=3.0, reducer=reducers.MeanReducer(),
                                   distance=distances.LpDistance(normalize_embeddings=False))  # fmt: skip
    vecs = torch.cat([x[f1[0, :n]], x[f2[0, :n]], x[b1[0, :n]]])
    labels = torch.cat([torch.ones(2 * n), torch.zeros(n)]).long()
    idx = torch.arange(n)
    theirs = pml(vecs, labels, indices_tuple=(idx, idx + n, idx + 2 * n))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def _args(**kw):
    return {"emb": torch.randn(2, 3, 4, 5), "mask": torch.randint(0, 2, (2, 4, 5)), **kw}


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"mask": torch.full((2, 4, 5), 2)}, ValueError, "mask values must be in [0, 2)"),
        ({"mask": torch.zeros(2, 4, 5)}, TypeError, "mask must have dtype"),
        ({"mask": torch.zeros(2, 4, 6, dtype=torch.long)}, ValueError, "mask must have shape"),
        ({"num_samples": 0}, ValueError, "num_samples must be positive"),
        ({"margin": -1.0}, ValueError, "margin must be >= 0.0"),
        ({"mining": "semi"}, ValueError, "mining must be one of"),
        ({"squared": 1}, TypeError, "squared must be a bool"),
        ({"generator": "seed"}, TypeError, "generator must be a torch.Generator"),
        ({"emb": torch.randn(2, 3, 4)}, ValueError, "emb must have 4 dims"),
    ],
)
def test_bad_input(kwargs, exc, msg):
    a = _args(**kwargs)
    with pytest.raises(exc) as info:
        pk.is_triplet_loss(a.pop("emb"), a.pop("mask"), **a)
    assert msg in str(info.value)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_compiles_fullgraph(backend, device):
    """Sampling (torch.randint on the device) and both hinge calls trace without a graph break
    (triplet_hinge's contract compiles each mining mode)."""
    mining = "hard"
    emb = make_emb(2, 4, 8, 9, dtype=torch.float32, device=device).requires_grad_(True)
    mask = _mask(2, 8, 9, device=device)
    torch._dynamo.reset()
    fn = torch.compile(lambda e, m: pk.is_triplet_loss(e, m, num_samples=12, mining=mining, backend=backend),
                       fullgraph=True, backend="aot_eager")  # fmt: skip
    loss = fn(emb, mask)
    (g,) = torch.autograd.grad(loss, emb)
    assert loss.isfinite() and g.isfinite().all() and g.abs().sum() > 0


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """The CUDA dispatch path of the sampler and both hinge calls, traced on fake CUDA tensors."""
    if not pk._ext.HAVE_CUDA_KERNELS:
        pytest.skip("needs a CUDA build of pixelkernels (CI's cu130 wheel venv)")
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch._dynamo.reset()
    with FakeTensorMode(allow_non_fake_inputs=True):
        emb = torch.randn(2, 4, 8, 9).to("cuda").requires_grad_(True)
        mask = _mask(2, 8, 9).to("cuda")
        fn = torch.compile(lambda e, m: pk.is_triplet_loss(e, m, num_samples=12, mining="hard", backend=backend),
                           fullgraph=True, backend="eager")  # fmt: skip
        out = fn(emb, mask)
        idx = torch.compile(lambda m: pk.sample_pixels(m, 2, 5, backend=backend), fullgraph=True, backend="eager")(mask)
    assert out.device.type == "cuda" and out.shape == () and idx.shape == (2, 2, 5) and idx.device.type == "cuda"


# Every backend, and the CUDA kernels emulated on the CPU (tests/cuda_emu: the cpu backend's op
# calls replaced by the emulated CUDA kernels, autograd included).
IMPLS = [*(pytest.param(tuple(p.values), marks=p.marks, id=p.id) for p in BACKENDS),
         pytest.param(("emulated", "cpu"), marks=pytest.mark.emulated, id="emulated")]  # fmt: skip


@pytest.fixture(params=IMPLS)
def impl(request):
    """(backend to call, device, context of a call)."""
    backend, device = request.param
    if backend == "emulated":
        return "cpu", device, lambda: EmulateCuda(request.getfixturevalue("emu"))
    return backend, device, contextlib.nullcontext


@pytest.mark.parametrize("hw", [(0, 5), (4, 0)])
@pytest.mark.parametrize("mining", ["random", "hard"])
def test_empty_image_gives_zero_attached_to_the_graph(impl, mining, hw):
    """H*W = 0: no pixel to draw, the loss is 0 with zero gradient, still attached to the graph
    (SPEC §2; the reference returned a constant)."""
    backend, device, ctx = impl
    emb = torch.zeros(2, 3, *hw, dtype=torch.float64, device=device, requires_grad=True)
    mask = torch.zeros(2, *hw, dtype=torch.int64, device=device)
    with ctx():
        loss = pk.is_triplet_loss(emb, mask, num_samples=4, mining=mining, backend=backend)
        assert loss.requires_grad and loss.grad_fn is not None
        (g,) = torch.autograd.grad(loss, emb)
    assert float(loss.detach()) == 0.0 and g.shape == emb.shape


# Chi-square critical value at p = 0.001, df = 35 (6 x 6 pairs).
CHI2_001_DF35 = 66.619


def _chi2(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_per_image_seeds_draw_two_independent_pairs_of_sets(impl):
    """generator = per-image seeds: F1, B1 come from one draw and F2, B2 from another (streams
    0 and 1 of pixel_keys' hash, made by one sampler call). Over 7200 seeds the first pixels of F1 and F2 are jointly uniform
    over the 6 x 6 pairs of a 6-pixel foreground (chi-square, df = 35), and so are B1's and
    B2's (a second draw that reused the first's keys would give F2 = F1). The Triton interpreter
    (a Python loop per image: ~2 min of CI for 7200) draws 360 images instead, which must be
    exactly the CPU backend's draws (whose statistics its own case tests)."""
    backend, device, ctx = impl
    interpreted = backend == "triton" and torch.device(device).type == "cpu"
    n = 360 if interpreted else 7200
    mask = torch.arange(2).view(1, 2, 1).expand(n, 2, 6).contiguous().to(device)  # row 0 background
    seeds = torch.arange(n, dtype=torch.int64, device=device) * 7919

    def sampler_of(backend):
        def sampler(labels, seeds, C, k, ignore, check, draws):
            return pk._op.run(pk.ops.sample_pixels.OP, backend, labels, seeds, C, k, ignore, check, draws)

        return sampler

    with ctx():
        f1, f2, b1, b2 = (t.cpu() for t in draw_sets(mask, 2, seeds, -1, sampler_of(backend)))
    if interpreted:
        for got, want in zip((f1, f2, b1, b2), draw_sets(mask, 2, seeds, -1, sampler_of("cpu"))):
            assert torch.equal(got, want)
        return
    for first, second, base in ((f1, f2, 6), (b1, b2, 0)):
        a, b = first[:, 0] - base, second[:, 0] - base
        assert ((a >= 0) & (a < 6) & (b >= 0) & (b < 6)).all()
        joint = torch.bincount(a * 6 + b, minlength=36).double()
        assert _chi2(joint) < CHI2_001_DF35, joint.view(6, 6)


@pytest.mark.parametrize("mining", ["random", "hard"])
def test_per_image_seeds_every_backend_equals_the_reference(impl, mining):
    """The loss and its gradient with per-image seeds equal the reference composition with the
    same seeds; seeds that differ only in their high 32 bits (the training command's step)
    draw other sets, hence another loss."""
    backend, device, ctx = impl
    emb = make_emb(3, 4, 9, 10, dtype=torch.float64, device=device)
    mask = _mask(3, 9, 10, device=device)
    seeds = torch.tensor([5, 1 << 33, -7], dtype=torch.int64, device=device)
    losses = []
    for step in (0, 1):
        s = seeds + (step << 32)
        e = emb.detach().requires_grad_(True)
        with ctx():
            got = pk.is_triplet_loss(e, mask, num_samples=15, margin=2.0, mining=mining, generator=s, backend=backend)
            (g_got,) = torch.autograd.grad(got, e)
        r = emb.detach().cpu().requires_grad_(True)
        want = reference(r, mask.cpu(), 15, 2.0, False, mining, s.cpu())
        (g_want,) = torch.autograd.grad(want, r)
        assert_close(got.detach().cpu(), want.detach(), torch.float64, msg="loss")
        assert_close(g_got.cpu(), g_want, torch.float64, msg="grad")
        losses.append(float(want))
    assert losses[0] != losses[1]


# --- the property-based tests (tests/fuzz.py): NaN/inf in pixels no drawn slot can use (ignored
# ones), zero sizes, D = 1/16/32, one pixel per side, seeds

FUZZ = FuzzRow(
    op="is_triplet_loss",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "mask": Labels(("B", "H", "W"), regions=2),
                     "num_samples": Choice((1, 4, 50)), "margin": Choice((0.0, 3.0), extreme=(1e4,)),
                     "squared": Choice((False, True)), "mining": Choice(("random", "hard")), "generator": Seeds(),
                     "ignore_index": Choice((-1, 2))},  # fmt: skip
    call=lambda inp, be: (pk.is_triplet_loss(inp["emb"], inp["mask"], num_samples=inp["num_samples"], margin=inp["margin"],
                                              squared=inp["squared"], mining=inp["mining"], generator=inp["generator"],
                                              ignore_index=inp["ignore_index"], backend=be),),  # fmt: skip
    loss=lambda out, inp: out[0] * 1.3,
    grad_inputs=("emb",),
)
TestFuzz = fuzz_suite(FUZZ)

"""stochastic_pool reference (SPEC §3.3; seed 003 §2.2): each returned vector is the embedding of a
distinct pixel of its slot's class (found back in the map), up to k per class then padding
(label -1, vector 0), the same pixels as pixelkernels.sample_pixels for the same generator state,
reproducible, both layouts, and the gradient goes back to the sampled pixels."""

from __future__ import annotations

import pytest
import torch

import pixelkernels as pk
from pixelkernels.reference.stochastic_pool import stochastic_pool

F64 = torch.float64


def _inputs(B, D, H, W, C, pattern="random", seed=0, dtype=F64):
    """emb with distinct pixel vectors; labels random in [-1, C), or with image 0 all ignored,
    or one class only."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, D, H, W, generator=g, dtype=F64)
    emb[:, 0] = torch.arange(H * W, dtype=F64).reshape(H, W) + 1.0  # distinct even when D = 1
    labels = torch.randint(-1, C, (B, H, W), generator=g)
    if pattern == "image0_ignored":
        labels[0] = -1
    elif pattern == "one":
        labels = torch.full((B, H, W), C - 1)
    else:
        assert pattern == "random", pattern
    return emb.to(dtype), labels


# (B, D, H, W, C, k, pattern)
CASES = [
    (1, 1, 5, 7, 3, 4, "random"),
    (3, 130, 6, 5, 4, 3, "random"),
    (3, 4, 9, 11, 3, 50, "random"),  # k above every class size: padding in every class
    (3, 2, 4, 5, 2, 6, "image0_ignored"),
    (2, 3, 7, 3, 3, 8, "one"),  # classes 0 and 1 absent: all padding
    (1, 5, 1, 1, 2, 1, "random"),
]


@pytest.mark.parametrize("B,D,H,W,C,k,pattern", CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_vectors_come_from_distinct_pixels_of_their_class(B, D, H, W, C, k, pattern, layout):
    emb, labels = _inputs(B, D, H, W, C, pattern)
    if layout == "channels_last":
        emb = emb.contiguous(memory_format=torch.channels_last)
    vectors, vl = stochastic_pool(emb, labels, k, C, generator=torch.Generator().manual_seed(1))
    assert vectors.shape == (B, C * k, D) and vl.shape == (B, C * k)
    assert vectors.dtype == emb.dtype and vl.dtype == torch.int64
    pixels = emb.reshape(B, D, H * W).transpose(1, 2)
    lab = labels.reshape(B, H * W)
    for b in range(B):
        for c in range(C):
            n_c = int((lab[b] == c).sum())
            filled = min(k, n_c)
            slots = slice(c * k, (c + 1) * k)
            assert (vl[b, slots][:filled] == c).all() and (vl[b, slots][filled:] == -1).all()
            assert (vectors[b, slots][filled:] == 0).all()
            found = []
            for v in vectors[b, slots][:filled]:
                match = (pixels[b] == v).all(1).nonzero().flatten()
                assert len(match) == 1  # the vector is one pixel's embedding, exactly
                found.append(int(match))
            assert (lab[b, found] == c).all()  # ... a pixel of the slot's class
            assert len(set(found)) == len(found)  # ... drawn without replacement


def test_same_pixels_as_the_librarys_sampler_and_reproducible():
    emb, labels = _inputs(3, 4, 8, 9, 4)
    C, k = 4, 6
    v1, l1 = stochastic_pool(emb, labels, k, C, generator=torch.Generator().manual_seed(7))
    v2, l2 = stochastic_pool(emb, labels, k, C, generator=torch.Generator().manual_seed(7))
    v3, _ = stochastic_pool(emb, labels, k, C, generator=torch.Generator().manual_seed(8))
    assert torch.equal(v1, v2) and torch.equal(l1, l2) and not torch.equal(v1, v3)
    idx = pk.sample_pixels(labels, C, k, generator=torch.Generator().manual_seed(7)).reshape(3, C * k)
    pixels = emb.reshape(3, 4, -1).transpose(1, 2)
    want = torch.where(
        (idx >= 0)[..., None], pixels.gather(1, idx.clamp_min(0)[..., None].expand(-1, -1, 4)), 0
    )
    assert torch.equal(v1, want) and torch.equal(l1 >= 0, idx >= 0)


def test_ignore_index_other_than_minus_one():
    emb, labels = _inputs(2, 3, 6, 6, 3)
    labels[labels == -1] = 2  # class 2 becomes the ignore label
    vectors, vl = stochastic_pool(
        emb, labels, 40, 2, ignore_index=2, generator=torch.Generator().manual_seed(0)
    )
    lab = labels.reshape(2, -1)
    for b in range(2):
        for c in range(2):
            assert int((vl[b, c * 40 : (c + 1) * 40] == c).sum()) == int((lab[b] == c).sum())
    assert (vectors[vl < 0] == 0).all()


def test_non_contiguous_map_and_float32():
    emb, labels = _inputs(2, 6, 5, 7, 3, dtype=torch.float32)
    sliced = torch.stack([emb, -emb], 2).flatten(1, 2)[:, ::2]  # a strided view equal to emb
    assert not sliced.is_contiguous() and torch.equal(sliced, emb)
    a = stochastic_pool(emb, labels, 4, 3, generator=torch.Generator().manual_seed(3))
    b = stochastic_pool(sliced, labels, 4, 3, generator=torch.Generator().manual_seed(3))
    assert a[0].dtype == torch.float32 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gradient_goes_back_to_the_sampled_pixels():
    emb, labels = _inputs(2, 3, 5, 6, 3)
    emb.requires_grad_(True)
    vectors, vl = stochastic_pool(emb, labels, 4, 3, generator=torch.Generator().manual_seed(2))
    w = torch.linspace(-1.0, 1.0, vectors.numel(), dtype=F64).reshape(vectors.shape)
    (vectors * w).sum().backward()
    want = torch.zeros(2, 30, 3, dtype=F64)
    pixels = emb.detach().reshape(2, 3, 30).transpose(1, 2)
    for b in range(2):
        for s in range(vl.shape[1]):
            if vl[b, s] >= 0:
                p = int((pixels[b] == vectors[b, s].detach()).all(1).nonzero())
                want[b, p] += w[b, s]
    torch.testing.assert_close(emb.grad, want.transpose(1, 2).reshape(2, 3, 5, 6), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(layout):
    emb, labels = _inputs(2, 2, 3, 3, 2)
    if layout == "channels_last":
        emb = emb.contiguous(memory_format=torch.channels_last)
    emb.requires_grad_(True)

    def f(e):
        return stochastic_pool(e, labels, 3, 2, generator=torch.Generator().manual_seed(4))[0]

    assert torch.autograd.gradcheck(f, (emb,))


# ---------------------------------------------------------------------------------------------
# The op (pixelkernels.stochastic_pool, nn.StochasticPooling): the oracle's draw on every backend.

from conftest import BACKENDS, WITH_EMULATED, on_backend  # noqa: E402


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_equals_the_reference(backend, device, layout):
    """The same generator state gives the reference's vectors and labels on every backend; the
    gradient reaches the same pixels with the same values."""
    emb, labels = _inputs(2, 5, 7, 9, 4, pattern="image0_ignored")
    if layout == "channels_last":
        emb = emb.contiguous(memory_format=torch.channels_last)
    e1 = emb.to(device).requires_grad_()
    e2 = emb.clone().requires_grad_()
    g1 = torch.Generator(device=device).manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    v1, l1 = pk.stochastic_pool(e1, labels.to(device), 3, 4, generator=g1, backend=backend)
    v2, l2 = stochastic_pool(e2, labels, 3, 4, generator=g2)
    if device == "cpu":
        assert torch.equal(v1, v2) and torch.equal(l1, l2)
    w = torch.randn(v2.shape, dtype=F64)
    (gr1,) = torch.autograd.grad((v1 * w.to(device)).sum(), e1)
    (gr2,) = torch.autograd.grad((v2 * w).sum(), e2)
    if device == "cpu":
        assert torch.equal(gr1, gr2)


def test_module_and_errors():
    emb, labels = _inputs(2, 3, 5, 6, 3)
    m = pk.nn.StochasticPooling(4, 3, generator=torch.Generator().manual_seed(1))
    v, lab = m(emb, labels)
    v2, lab2 = stochastic_pool(emb, labels, 4, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(v, v2) and torch.equal(lab, lab2)
    assert "k=4" in repr(m)
    with pytest.raises(ValueError, match="k must be positive"):
        pk.stochastic_pool(emb, labels, 0, 3)
    with pytest.raises(ValueError, match="labels must have shape"):
        pk.stochastic_pool(emb, labels[:, :2], 2, 3)
    with pytest.raises(ValueError, match="emb must have 4 dims"):
        pk.stochastic_pool(emb[0], labels, 2, 3)


# ---------------------------------------------------------------------------------------------
# Zero sizes and values no slot takes (issue 35), on every backend and on the CUDA sampler
# through the emulator.


def _pool_on(request, backend, device, emb, labels, k, C, seed=0):
    """pk.stochastic_pool on `backend` ("emulated": the CPU backend's sampler calls replayed
    on the CUDA kernel run on the CPU): vectors, labels and the gradient of Σ w·vectors for
    fixed weights w."""

    def run(b):
        e = emb.to(device).detach().requires_grad_()
        v, lab = pk.stochastic_pool(e, labels.to(device), k, C, backend=b,
                                    generator=torch.Generator(device=device).manual_seed(seed))  # fmt: skip
        w = torch.linspace(-1.0, 1.0, v.numel(), dtype=v.dtype, device=device).reshape(v.shape)
        (grad,) = torch.autograd.grad((v * w).sum(), e)
        return v.detach().cpu(), lab.cpu(), grad.cpu()

    return on_backend(request, backend, run)



@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0), (1, 1, 1, 1)],
                         ids=["B0", "D0", "H0", "W0", "all1"])  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_zero_sizes_keep_the_graph_and_give_the_references_values(request, backend, device, shape):
    """A zero size in each position of emb (and a single pixel, D = 1): the vectors (zeros for
    H·W = 0, still attached to emb's graph: a loss on them has a gradient, of zeros) and labels
    of the reference."""
    B, D, H, W = shape
    if D > 0:
        emb, labels = _inputs(B, D, H, W, 2)
    else:
        emb, labels = torch.zeros(B, 0, H, W, dtype=F64), torch.randint(-1, 2, (B, H, W))
    got = _pool_on(request, backend, device, emb, labels, 3, 2)
    want = _pool_on(request, "reference", "cpu", emb, labels, 3, 2)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_and_inf_at_pixels_no_slot_takes_reach_nothing(request, backend, device):
    """NaN and ±inf at ignored pixels (and at pixel 0, which a padding slot's gather index
    points at when it is ignored): finite vectors and a gradient of exactly 0 there."""
    emb, labels = _inputs(2, 3, 5, 6, 3)
    labels[:, 0, 0] = -1
    ignored = (labels == -1)[:, None].expand_as(emb)
    emb = torch.where(ignored, torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=F64)[None, :, None, None]
                      .expand_as(emb), emb)  # fmt: skip
    v, lab, grad = _pool_on(request, backend, device, emb, labels, 9, 3)
    want = _pool_on(request, "reference", "cpu", emb, labels, 9, 3)
    assert v.isfinite().all() and (lab == -1).any()
    assert (grad[ignored] == 0).all() and grad.isfinite().all()
    if device == "cpu":
        for a, b in zip((v, lab, grad), want):
            assert torch.equal(a, b)


# --- the property-based tests (tests/fuzz.py): NaN/inf in pixels no class draws (ignored), zero
# sizes, D = 1/16/32, one pixel per class, per-image seeds

from contract import FuzzRow, fuzz_suite  # noqa: E402
from fuzz import Choice, Floats, Ignore, Labels, Seeds, Size  # noqa: E402

FUZZ = FuzzRow(
    op="stochastic_pool",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W"), bounded=False),
                     "k": Choice((1, 4), extreme=(50,)), "num_classes": Size("R"), "generator": Seeds(),
                     "ignore_index": Ignore()},  # fmt: skip
    call=lambda inp, be: pk.stochastic_pool(inp["emb"], inp["labels"], inp["k"], inp["num_classes"], generator=inp["generator"],
                                             ignore_index=inp["ignore_index"], backend=be),  # fmt: skip
    loss=lambda out, inp: (out[0] * 1.1).sum(),
    grad_inputs=("emb",),
)
TestFuzz = fuzz_suite(FUZZ)

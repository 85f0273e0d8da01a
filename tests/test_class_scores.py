"""class_scores (label_transfer's linear path, csrc/common/class_scores.h): every backend and the
emulated CUDA kernels against the reference in float64 and float32 (scores, labels, both
gradients) at awkward sizes: one class, the CUDA kernels' groups of 8 classes and past them,
pixels past the CPU's chunks and the emulated grid; contiguous, channels_last-like and strided
queries; empty classes whose means and gradients hold inf and NaN (they reach nothing), an
infinite query entry (an empty class still scores 0), ties and NaN scores for the labels;
half queries; gradcheck, double backward; opcheck. label_transfer's tests cover it through the
public function; tests/test_schemas.py its direct calls with bad arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import COMPILED_BACKENDS, WITH_EMULATED, compile_on_fake_cuda, on_backend

from pixelkernels import _op
from pixelkernels.ops import class_scores as _cs
from pixelkernels.testing import assert_close


def _inputs(B, C, D, N, dtype=torch.float64, *, layout="contiguous", seed=0, empty=(1,)):
    """query (B, D, N) in `layout`, means (B, C, D), counts (B, C) with the classes `empty` empty
    in image 0 (their means inf and NaN: an empty class's mean is never read)."""
    g = torch.Generator().manual_seed(seed)
    st = torch.float64 if dtype == torch.float64 else torch.float32
    q = torch.randn(B, D, N, generator=g, dtype=torch.float64)
    if layout == "channels_last":  # (B, N, D) storage seen as (B, D, N), as a channels_last map
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "strided":  # every other pixel of a wider map
        q = torch.randn(B, D, 2 * N, generator=g, dtype=torch.float64)[..., ::2]
    means = torch.randn(B, C, D, generator=g, dtype=torch.float64).to(st)
    counts = torch.randint(1, 9, (B, C), generator=g).to(st)
    for c in empty:
        if c < C:
            counts[0, c] = 0
            means[0, c, 0] = float("inf")
            means[0, c, -1] = float("nan")
    return q.to(dtype), means, counts


def _run(request, backend, q, means, counts, g, scale, bias, sum_):
    def fn(be):
        qq, mm = q.detach().clone().requires_grad_(), means.detach().clone().requires_grad_()
        qq = qq if q.is_contiguous() else q.detach().requires_grad_()  # keep the layout
        scores, labels = _op.run(_cs.OP, be, qq, mm, counts, scale, bias, sum_)
        gq, gm = torch.autograd.grad(scores, (qq, mm), g)
        return scores.detach(), labels, gq, gm

    return on_backend(request, backend, fn)


# (3, 5, 7, 300): past the CPU's 256-pixel chunks; (1, 3, 20, 1000) past the emulated grid's
# 3 x 256 threads (the forward's grid-stride loop, the backward's loop over a block's tiles) and
# its 16-dim chunks; 9 and 13 classes past the CUDA kernels' groups of 8 and Triton's BLOCK_C;
# D = 130 past Triton's BLOCK_D. The means' gradient sums 300 and 1000 pixels whose terms cancel:
# float32 meets its tolerance only by summing them in float64 (csrc/common/class_scores.h).
SHAPES = [(1, 1, 3, 5), (3, 5, 7, 300), (1, 3, 20, 1000), (3, 9, 4, 37), (1, 13, 130, 2), (2, 8, 1, 11)]


@pytest.mark.parametrize("sum_", [True, False], ids=["sum", "mean"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_matches_the_reference(request, backend, device, shape, sum_):
    B, C, D, N = shape
    for dtype in (torch.float64, torch.float32):
        q, means, counts = _inputs(B, C, D, N, dtype, seed=sum(shape))
        g = torch.randn(B, C, N, generator=torch.Generator().manual_seed(5), dtype=means.dtype)
        g[0, 1:2] = float("nan")  # an empty class's gradient reaches nothing
        # the reference in float64 on the same values (SPEC §4: the backend's dtype's tolerance)
        want = _run(request, "reference", q.double(), means.double(), counts.double(), g.double(), 0.7, -0.3, sum_)
        got = _run(request, backend, q.to(device), means.to(device), counts.to(device), g.to(device), 0.7, -0.3, sum_)
        names = ("scores", "labels", "grad query", "grad means")
        for name, a, b in zip(names, got, want):
            if name == "labels":
                assert torch.equal(a.cpu(), b), f"{backend} labels {shape}"
                continue
            assert torch.isfinite(a).all(), f"{backend} {name} {shape}"
            assert_close(a.cpu(), b, dtype, msg=f"{backend} {name} {shape} {dtype}")
        if C > 1:
            assert (got[0][0, 1] == 0).all() and (got[3][0, 1] == 0).all()  # the empty class


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_query_layouts(request, backend, device, layout):
    """A channels_last-like query is read in place and its gradient written in its layout; a
    strided one too."""
    q, means, counts = _inputs(2, 5, 6, 41, layout=layout, seed=3)
    g = torch.randn(2, 5, 41, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    want = _run(request, "reference", q, means, counts, g, 1.3, 0.2, True)
    got = _run(request, backend, q.to(device), means.to(device), counts.to(device), g.to(device), 1.3, 0.2, True)
    for a, b in zip(got, want):
        assert_close(a.cpu(), b) if a.is_floating_point() else torch.equal(a.cpu(), b)
    if layout == "channels_last" and backend != "reference":
        assert got[2].stride() == q.stride()


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_infinite_query_ties_and_nan_labels(request, backend, device):
    """An empty class scores exactly 0 against an infinite query entry; tied scores label the
    lowest class, a NaN score wins (torch.argmax's rule)."""
    q, means, counts = _inputs(1, 4, 3, 6, seed=8, empty=(2,))
    q[0, 1, 0] = float("inf")
    means[0, 3] = means[0, 1]  # classes 1 and 3 tie wherever their counts do (mean: everywhere)
    q[0, 0, 4] = float("nan")
    for sum_ in (True, False):
        got = on_backend(request, backend, lambda be: _op.run(_cs.OP, be, q.to(device), means.to(device),
                                                                counts.to(device), 0.5, 0.0, sum_))  # fmt: skip
        want = _op.run(_cs.OP, "reference", q, means, counts, 0.5, 0.0, sum_)
        assert (got[0][0, 2].cpu() == 0).all()
        assert torch.equal(got[0].cpu().isnan(), want[0].isnan())
        assert_close(got[0].cpu().nan_to_num(posinf=1e300, neginf=-1e300), want[0].nan_to_num(posinf=1e300,
                                                                                               neginf=-1e300))
        assert torch.equal(got[1].cpu(), want[1]), (got[1], want[1])


@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.values[0] != "cpu"])  # half: not the CPU
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_query(request, backend, device, dtype):
    """Half queries are read at their width and computed in float32 (the statistics dtype)."""
    q, means, counts = _inputs(2, 5, 7, 33, dtype, seed=4)
    g = torch.randn(2, 5, 33, generator=torch.Generator().manual_seed(2))
    want = _run(request, "reference", q.float(), means, counts, g, 0.7, -0.3, True)
    got = _run(request, backend, q.to(device), means.to(device), counts.to(device), g.to(device), 0.7, -0.3, True)
    assert got[2].dtype == dtype
    assert_close(got[0].cpu(), want[0], torch.float32)
    assert_close(got[2].cpu().float(), want[2], dtype)
    assert_close(got[3].cpu(), want[3], torch.float32)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_empty_sizes(request, backend, device):
    for B, C, D, N in ((0, 2, 3, 4), (2, 2, 3, 0), (2, 2, 0, 4)):
        q, means, counts = _inputs(B, C, D, N, empty=())
        g = torch.ones(B, C, N, dtype=torch.float64)
        s, lab, gq, gm = _run(request, backend, q.to(device), means.to(device), counts.to(device), g.to(device), 1.0,
                              0.5, True)  # fmt: skip
        want = _run(request, "reference", q, means, counts, g, 1.0, 0.5, True)
        assert s.shape == (B, C, N) and lab.shape == (B, N) and gq.shape == q.shape and gm.shape == means.shape
        assert_close(s.cpu(), want[0])
        assert torch.equal(lab.cpu(), want[1]) and torch.equal(gm.cpu(), want[3])


def test_gradcheck_reference_and_cpu():
    q, means, counts = _inputs(2, 3, 4, 5, seed=1, empty=(1,))
    means[0, 1] = 0.0  # gradcheck's finite differences need finite values
    q.requires_grad_()
    means.requires_grad_()
    for backend in ("reference", "cpu"):
        for sum_ in (True, False):
            f = lambda a, m, b=backend, s=sum_: _op.run(_cs.OP, b, a, m, counts, 0.6, 0.4, s)[0]  # noqa: E731
            assert torch.autograd.gradcheck(f, (q, means))
    # double backward: the reference's graph, on every backend
    assert torch.autograd.gradgradcheck(lambda a, m: _op.run(_cs.OP, "cpu", a, m, counts, 0.6, 0.4, True)[0],
                                        (q, means))  # fmt: skip


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_opcheck(backend, device):
    suffix = "_triton" if backend == "triton" else ""
    q, means, counts = _inputs(2, 3, 4, 9, empty=())
    q, means, counts = q.to(device), means.to(device), counts.to(device)
    torch.library.opcheck(getattr(torch.ops.pixelkernels, "class_scores" + suffix), (q, means, counts, 0.5, 0.1, True))
    bwd = getattr(torch.ops.pixelkernels, "class_scores_backward" + suffix)
    torch.library.opcheck(bwd, (torch.randn(2, 3, 9, dtype=torch.float64, device=device), q, means, counts, 0.5, 0.1,
                                False))  # fmt: skip


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """label_transfer's linear path (region_stats, class_scores) on fake CUDA tensors under
    torch.compile(fullgraph=True): the CUDA dispatch path traced without a GPU."""
    import pixelkernels as pk

    def make():
        q, r = torch.randn(2, 4, 3, 5, device="cuda"), torch.randn(2, 6, 4, device="cuda")
        return q.requires_grad_(), r, torch.randint(0, 3, (2, 6), device="cuda")

    labels, scores = compile_on_fake_cuda(
        lambda q, r, lab: pk.label_transfer(q, r, lab, 3, scale=0.5, bias=0.1, backend=backend), make)
    assert labels.shape == (2, 3, 5) and scores.shape == (2, 3, 3, 5) and scores.device.type == "cuda"

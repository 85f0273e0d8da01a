"""The KeOps peers of the dense-similarity family (pixelkernels/baselines/peers.py) against the
reference: values and the gradients of query and ref, on small awkward sizes with ignored refs
(-1 and a label >= C) and an empty class, for every reduce, both metrics, sigmoid on and off, in
float32 and float64. Skipped where pykeops (optional) is not installed, as in CI.

KeOps compiles every distinct formula once with the system g++ (about 10-20 s each on a 2-core
machine, ~70 formulas here: ~15 min for the first run), then loads it from ~/.cache/keops*: later
runs take seconds.
"""

import pytest
import torch

pytest.importorskip("pykeops")

from pixelkernels import reference  # noqa: E402
from pixelkernels.baselines import peers  # noqa: E402

B, N, K, D, C = 2, 37, 19, 5, 3
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
KW = dict(scale=0.7, bias=-0.3, temperature=0.8, eps=1e-7)


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    r = torch.randn(B, K, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    lab = torch.randint(0, C, (B, K), generator=g)
    lab[:, ::5] = -1  # stochastic_pool's padding
    lab[0, 3] = C + 2  # out of range: ignored like -1
    lab[1][lab[1] == 1] = 0  # class 1 empty in image 1
    with torch.no_grad():
        r[0, 5] = float("nan") if lab[0, 5] < 0 else r[0, 5]  # a NaN in a padding slot reaches nothing
    return q, r, lab


def _check(got, want, grads_of, dtype):
    assert got.shape == want.shape and got.dtype == want.dtype
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    assert torch.equal(got[~finite], want[~finite])  # -inf of the empty classes
    torch.testing.assert_close(got[finite], want[finite], **TOL[dtype])
    w = torch.randn(want.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
    gg = torch.autograd.grad(torch.where(finite, got * w, 0).sum(), grads_of[0])
    gw = torch.autograd.grad(torch.where(finite, want * w, 0).sum(), grads_of[1])
    for a, b in zip(gg, gw):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", [None, "sigmoid"])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "softmax"])
def test_similarity_reduce(reduce, metric, activation, dtype):
    q, r, lab = _inputs(dtype)
    kw = dict(metric=metric, activation=activation, reduce=reduce, **KW)
    got = peers.keops_similarity_reduce(q, r, lab, C, **kw)
    want = reference.similarity_reduce(q, r, lab, C, **kw)
    if reduce == "max":
        assert torch.isinf(want[1, :, 1]).all()  # the empty class
    else:
        assert (want[1, :, 1] == 0).all()
    _check(got, want, ((q, r), (q, r)), dtype)


def test_similarity_reduce_no_grad_and_no_valid_ref():
    q, r, lab = _inputs(torch.float32)
    lab[1] = -1  # image 1: every ref ignored
    for reduce in ("sum", "mean", "max", "softmax"):
        with torch.no_grad():
            got = peers.keops_similarity_reduce(q, r, lab, C, reduce=reduce, **KW)
            want = reference.similarity_reduce(q, r, lab, C, reduce=reduce, **KW)
        assert not got.requires_grad
        finite = torch.isfinite(want)
        assert torch.equal(finite, torch.isfinite(got)), reduce
        torch.testing.assert_close(got[finite], want[finite], **TOL[torch.float32])


@pytest.mark.parametrize(
    "kw",
    [
        dict(activation="sigmoid", reduce="mean"),
        dict(reduce="sum", scale=0.37, bias=-0.8),
        dict(activation="sigmoid", reduce="max"),
        dict(metric="cosine", reduce="softmax", temperature=0.1),
    ],
    ids=["W5", "W5-eq3", "W5-max", "W5-softmax"],
)
def test_label_transfer(kw):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, D, 9, 7, generator=g).requires_grad_(True)
    r = torch.randn(2, 12, D, generator=g).requires_grad_(True)
    lab = torch.arange(C).repeat_interleave(4).expand(2, 12).clone()
    lab[:, 3::4] = -1
    got_l, got = peers.keops_label_transfer(q, r, lab, C, **kw)
    want_l, want = reference.label_transfer(q, r, lab, C, **kw)
    assert torch.equal(got_l, want_l)
    _check(got, want, ((q, r), (q, r)), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_prior_mask(dtype):
    g = torch.Generator().manual_seed(2)
    # ReLU features as PFENet's, shifted off 0: a zero query ties every support pixel (cosine 0),
    # where the reference splits the gradient and KeOps' argmax picks one.
    qf = torch.randn(2, 6, 5, 4, generator=g, dtype=torch.float64).relu().add(0.05).to(dtype)
    sf = torch.randn(2, 6, 3, 5, generator=g, dtype=torch.float64).relu().add(0.05).to(dtype)
    qf.requires_grad_(True)
    sf.requires_grad_(True)
    m = (torch.rand(2, 3, 5, generator=g) < 0.5).to(dtype)
    got = peers.keops_prior_mask(qf, sf, m)
    want = reference.prior_mask(qf, sf, m)
    _check(got, want, ((qf, sf), (qf, sf)), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dense_similarity_loss(training, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    y = torch.randn(2, 8, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    xl, yl = torch.randint(0, C, (2, 11), generator=g), torch.randint(0, C, (2, 8), generator=g)
    xl[:, ::4], yl[0, 2] = -1, -1
    with torch.no_grad():
        x[0, 0] = float("nan")  # in a padding slot: reaches nothing
    w = torch.tensor(1.3, dtype=dtype, requires_grad=True)
    b = torch.tensor(-0.2, dtype=dtype, requires_grad=True)
    run = {}
    for name, fn in (("keops", peers.keops_dense_similarity_loss), ("ref", reference.dense_similarity_loss)):
        rm, rv = torch.tensor([0.3], dtype=dtype), torch.tensor([2.5], dtype=dtype)
        loss = fn(x, xl, y, yl, w, b, 1e-5, training, rm, rv, 0.1)
        run[name] = (loss, *torch.autograd.grad(loss, (x, y, w, b)), rm, rv)
    for got, want in zip(run["keops"], run["ref"]):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, **TOL[dtype])

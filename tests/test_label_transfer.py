"""label_transfer reference: seed 003's eq. 3 (dot, batch-norm folded into scale/bias, sum) and
the authors' code configurations (sigmoid + mean / max) against the label transfer written out
plainly here; ties to the lowest class; the linear class-sum path equals the direct one."""

from __future__ import annotations

import math

import pytest
import torch

from pixelkernels.reference.label_transfer import (
    class_sums,
    is_linear,
    label_transfer,
    label_transfer_linear,
)
from pixelkernels.testing import assert_close

DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


def make_inputs(B, D, H, W, C, k, dtype, seed=0, empty_class=True):
    """Refs as stochastic_pool lays them out: k slots per class, class-major, -1 padding; the
    last class absent (all padding) when empty_class."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, H, W, generator=g, dtype=torch.float64).to(dtype)
    r = torch.randn(B, C * k, D, generator=g, dtype=torch.float64).to(dtype)
    lab = torch.arange(C).repeat_interleave(k).expand(B, C * k).clone()
    lab[torch.rand(B, C * k, generator=g) < 0.25] = -1
    if empty_class:
        lab[:, (C - 1) * k :] = -1
    return q, r, lab, C


def plain(q, r, lab, C, *, pair_score, reduce):
    """Eq. 3 read literally: Ψ[i, j] for every query pixel and ref, the pair score, then per class
    the refs N_l' of that class, reduced; argmax over classes."""
    B, D, H, W = q.shape
    psi = torch.einsum("bdp,bkd->bpk", q.reshape(B, D, H * W), r)
    s = pair_score(psi)
    scores = torch.zeros(B, C, H * W, dtype=psi.dtype)
    for b in range(B):
        for c in range(C):
            refs = lab[b] == c
            if not refs.any():
                scores[b, c] = float("-inf") if reduce == "max" else 0.0
            elif reduce == "sum":
                scores[b, c] = s[b][:, refs].sum(1)
            elif reduce == "mean":
                scores[b, c] = s[b][:, refs].mean(1)
            else:
                scores[b, c] = s[b][:, refs].max(1).values
    scores = scores.reshape(B, C, H, W)
    return scores.argmax(1), scores


def check_labels(labels, scores, want_labels, want_scores, dtype):
    """Labels must agree wherever the top two classes are apart by more than rounding."""
    if dtype == torch.float64:
        assert_close(scores, want_scores)
        assert torch.equal(labels, want_labels)
        return
    scale = max(1.0, float(want_scores[torch.isfinite(want_scores)].abs().max()))
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-5 * scale)
    top2 = want_scores.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4 * scale
    assert torch.equal(labels[clear], want_labels[clear])


# Batch-norm statistics of Ψ and its affine (BatchNorm1d(1) in eval mode), folded into scale/bias.
BN = {"mean": 0.4, "var": 2.5, "weight": 1.3, "bias": -0.2, "eps": 1e-5}


def bn_folded():
    inv = BN["weight"] / math.sqrt(BN["var"] + BN["eps"])
    return inv, BN["bias"] - BN["mean"] * inv


def bn(psi):
    return (psi - BN["mean"]) / math.sqrt(BN["var"] + BN["eps"]) * BN["weight"] + BN["bias"]


# name: (B, D, H, W, C, k)
SHAPES = {
    "seed_like": (2, 16, 7, 9, 5, 6),
    "single_pixel": (1, 3, 1, 1, 3, 2),
    "D1_odd": (3, 1, 5, 3, 4, 3),
    "D130": (1, 130, 3, 4, 3, 4),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_eq3_batchnorm_folded(shape, dtype):
    q, r, lab, C = make_inputs(*SHAPES[shape], dtype=dtype)
    scale, bias = bn_folded()
    labels, scores = label_transfer(q, r, lab, C, metric="dot", scale=scale, bias=bias, reduce="sum")
    assert labels.dtype == torch.int64 and labels.shape == (q.shape[0], *q.shape[2:])
    assert scores.dtype == dtype and scores.shape == (q.shape[0], C, *q.shape[2:])
    want_labels, want_scores = plain(q.double(), r.double(), lab, C, pair_score=bn, reduce="sum")
    check_labels(labels, scores, want_labels, want_scores, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_authors_code_sigmoid(shape, reduce, dtype):
    q, r, lab, C = make_inputs(*SHAPES[shape], dtype=dtype, seed=1)
    scale, bias = bn_folded()
    labels, scores = label_transfer(q, r, lab, C, scale=scale, bias=bias, activation="sigmoid", reduce=reduce)
    want_labels, want_scores = plain(
        q.double(), r.double(), lab, C, pair_score=lambda p: torch.sigmoid(bn(p)), reduce=reduce
    )
    check_labels(labels, scores, want_labels, want_scores, dtype)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "softmax"])
def test_ties_go_to_the_lowest_class(reduce):
    """Classes 1 and 2 have identical refs, class 0 scores lower: every pixel ties 1 with 2 and
    is labelled 1. A zero query pixel ties every class (all 0, or sigmoid 0.5) and is labelled 0."""
    g = torch.Generator().manual_seed(4)
    q = torch.rand(2, 4, 3, 5, generator=g, dtype=torch.float64) + 0.1  # positive
    q[:, :, 1, 2] = 0.0
    v = torch.rand(2, 1, 4, generator=g, dtype=torch.float64) + 0.1
    r = torch.cat([-v, v, v, -v, v, v], dim=1)  # class 0: -v; classes 1 and 2: v; two refs each
    lab = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, 6)
    labels, scores = label_transfer(q, r, lab, 3, activation="sigmoid", reduce=reduce)
    assert torch.equal(scores[:, 1], scores[:, 2])
    want = torch.ones_like(labels)
    want[:, 1, 2] = 0
    assert torch.equal(labels, want)


def test_no_valid_ref_labels_zero():
    q, r, lab, C = make_inputs(2, 3, 4, 5, 3, 2, torch.float64)
    lab[:] = -1
    for reduce in ("sum", "max"):
        labels, scores = label_transfer(q, r, lab, C, reduce=reduce)
        assert (labels == 0).all()
        assert (scores == (float("-inf") if reduce == "max" else 0.0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_linear_path_equals_direct(shape, reduce, dtype):
    q, r, lab, C = make_inputs(*SHAPES[shape], dtype=dtype, seed=2)
    lab[0, 0] = C + 2  # out of range: ignored by both paths
    scale, bias = bn_folded()
    assert is_linear(metric="dot", activation=None, reduce=reduce)
    labels, scores = label_transfer(q, r, lab, C, metric="dot", scale=scale, bias=bias, reduce=reduce)
    lin_labels, lin_scores = label_transfer_linear(q, r, lab, C, scale=scale, bias=bias, reduce=reduce)
    if dtype == torch.float64:
        assert_close(lin_scores, scores)
        assert torch.equal(lin_labels, labels)
    else:
        want_labels, want_scores = label_transfer(
            q.double(), r.double(), lab, C, scale=scale, bias=bias, reduce=reduce
        )
        check_labels(lin_labels, lin_scores, want_labels, want_scores, dtype)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_linear_path_gradient_equals_direct(reduce):
    q, r, lab, C = make_inputs(2, 5, 3, 4, 4, 3, torch.float64, seed=6)
    w = torch.randn(2, C, 3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def grads(f, **kw):
        qq, rr = q.clone().requires_grad_(True), r.clone().requires_grad_(True)
        _, scores = f(qq, rr, lab, C, scale=0.7, bias=0.3, reduce=reduce, **kw)
        return torch.autograd.grad((scores * w).sum(), (qq, rr))

    for got, want in zip(grads(label_transfer_linear), grads(label_transfer)):
        assert_close(got, want)


def test_is_linear():
    assert is_linear(metric="dot", reduce="sum") and is_linear(metric="dot", reduce="mean")
    assert not is_linear(metric="cosine", reduce="sum")
    assert not is_linear(activation="sigmoid", reduce="sum")
    assert not is_linear(reduce="max") and not is_linear(reduce="softmax")


def test_class_sums():
    r = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0], [5.0, 6.0]]])
    lab = torch.tensor([[1, 1, -1, 0]], dtype=torch.int16)
    sums, counts = class_sums(r, lab, 3)
    assert torch.equal(sums, torch.tensor([[[5.0, 6.0], [4.0, 6.0], [0.0, 0.0]]]))
    assert torch.equal(counts, torch.tensor([[1.0, 2.0, 0.0]]))


def test_channels_last_and_half():
    q, r, lab, C = make_inputs(2, 8, 5, 7, 3, 4, torch.float32, seed=3)
    labels, scores = label_transfer(q, r, lab, C, activation="sigmoid", reduce="mean")
    cl_labels, cl_scores = label_transfer(
        q.contiguous(memory_format=torch.channels_last), r, lab, C, activation="sigmoid", reduce="mean"
    )
    assert torch.equal(cl_labels, labels)
    assert_close(cl_scores, scores)
    _, half_scores = label_transfer(q.bfloat16(), r.bfloat16(), lab, C, activation="sigmoid", reduce="mean")
    assert half_scores.dtype == torch.float32


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_gradcheck_scores(reduce):
    q, r, lab, C = make_inputs(2, 3, 2, 3, 3, 2, torch.float64, seed=8, empty_class=False)
    lab[:, 0] = 0  # every class present in both images: max has no -inf

    def fn(q, r):
        return label_transfer(q, r, lab, C, scale=0.9, bias=0.1, activation="sigmoid", reduce=reduce)[1]

    assert torch.autograd.gradcheck(fn, (q.requires_grad_(True), r.requires_grad_(True)))


# ---------------------------------------------------------------------------------------------
# The op (pixelkernels.label_transfer): the contract on every backend (the direct path through
# similarity_reduce, and the linear class-sum path), then the linear path against the direct.

from conftest import BACKENDS, weighted_loss  # noqa: E402
from contract import Contract, suite  # noqa: E402
from test_similarity_reduce import max_score_gaps  # noqa: E402
from fuzz import Choice, Floats, Labels, Size  # noqa: E402

import pixelkernels as pk  # noqa: E402

LT_KWARGS = ("metric", "scale", "bias", "activation", "reduce", "temperature", "eps")


def _lt_inp(B, D, H, W, C, k, *, layout="contiguous", seed=0, **kw):
    def make(device, dtype):
        q, r, lab, _ = make_inputs(B, D, H, W, C, k, torch.float64, seed=seed)
        if layout == "channels_last":
            q = q.contiguous(memory_format=torch.channels_last)
        opts = {"metric": "dot", "scale": 0.7, "bias": -0.3, "activation": "sigmoid", "reduce": "mean",
                "temperature": 1.0, "eps": 1e-7, **kw}  # fmt: skip
        return {"query_emb": q.to(device, dtype), "ref_emb": r.to(device, dtype), "ref_labels": lab.to(device),
                "num_classes": C, **opts}  # fmt: skip

    return make


def _lt_call(inp, backend):
    kw = {k: inp[k] for k in LT_KWARGS if k in inp}
    return pk.label_transfer(inp["query_emb"], inp["ref_emb"], inp["ref_labels"], inp["num_classes"], backend=backend, **kw)


def _lt_bad(**kw):
    return {**_lt_inp(2, 3, 4, 5, 3, 2)("cpu", torch.float32), **kw}


LT_ROW = Contract(
    op="label_transfer",
    uses=("similarity_reduce",),
    fuzz=lambda d: {"query_emb": Floats(("B", "D", "H", "W")), "ref_emb": Floats(("B", "K", "D")),
                     "ref_labels": Labels(("B", "K")), "num_classes": Size("R"),
                     # cosine with D = 1 is +-1 up to eps: its gradients are eps-small noise
                     "metric": Choice(("dot", "cosine") if d["D"] != 1 else ("dot",)),
                     "activation": Choice((None, "sigmoid")), "reduce": Choice(("sum", "mean", "max", "softmax")),
                     "scale": Choice((1.0, -0.5), extreme=(40.0,)), "temperature": Choice((1.0,), extreme=(2.0**-6,)),
                     "eps": Choice((1e-7,), extreme=(0.0,))},  # fmt: skip
    make=_lt_inp(2, 5, 7, 9, 3, 4),
    call=_lt_call,
    shaped=lambda B, D, H, W, layout: _lt_inp(B, D, H, W, 3, 2, layout=layout),
    loss=weighted_loss,
    grad_inputs=("query_emb", "ref_emb"),
    argmax_of={0: (1, 1)},  # labels (B, H, W) = argmax over C of scores (B, C, H, W)
    kink_gaps=lambda inp: max_score_gaps(inp["query_emb"].flatten(2).transpose(1, 2), inp["ref_emb"], inp["ref_labels"],
                                        inp["num_classes"], **{k: inp[k] for k in LT_KWARGS if k in inp}),
    tiny=_lt_inp(2, 3, 3, 2, 2, 2),
    zero_sizes={
        "B0": _lt_inp(0, 3, 4, 5, 2, 2)("cpu", torch.float32),
        "HW0": _lt_inp(2, 3, 0, 5, 2, 2)("cpu", torch.float32),
        "K0": _lt_inp(2, 3, 4, 5, 2, 0)("cpu", torch.float32),
        "K0_linear": _lt_inp(2, 3, 4, 5, 2, 0, activation=None, reduce="sum")("cpu", torch.float32),
    },
    bad_inputs={
        "query_rank": (_lt_bad(query_emb=torch.randn(2, 3, 4)), ValueError, "query_emb must have 4 dims"),
        "ref_dim": (_lt_bad(ref_emb=torch.randn(2, 6, 4)), ValueError, "ref_emb must have (B, D)"),
        "ref_dtype": (_lt_bad(ref_emb=torch.randn(2, 6, 3, dtype=torch.float64)), TypeError, "ref_emb must have"),
        "labels": (_lt_bad(ref_labels=torch.zeros(2, 5, dtype=torch.long)), ValueError, "ref_labels must have shape"),
        "reduce": (_lt_bad(reduce="median"), ValueError, "reduce must be one of"),
        "labels_range": (_lt_bad(ref_labels=torch.full((2, 6), 7)), ValueError, "ref_labels values must be in"),
    },
    # The linear path (dot, no activation, sum/mean: region_stats, then class_scores) here and in
    # test_op_linear_path_*; tests/test_class_scores.py the op itself.
    cases={
        "sigmoid_max": _lt_inp(2, 6, 5, 7, 4, 3, reduce="max", seed=3),
        "cosine_softmax": _lt_inp(1, 17, 6, 5, 3, 5, metric="cosine", activation=None, reduce="softmax", seed=4),
        "linear_sum_C11": _lt_inp(2, 6, 5, 7, 11, 3, activation=None, reduce="sum", seed=5),
        "linear_mean_channels_last": _lt_inp(2, 5, 4, 9, 3, 2, layout="channels_last", activation=None,
                                             reduce="mean", seed=6),
    },
)

TestContract = suite(LT_ROW)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_linear_path_equals_direct(backend, device, reduce):
    """The class-sum path (taken for dot, no activation, sum/mean) against similarity_reduce's
    direct path on the same backend: scores to float64 rounding, the same labels."""
    q, r, lab, _ = make_inputs(2, 9, 6, 7, 4, 5, torch.float64, seed=5)
    q, r, lab = q.to(device), r.to(device), lab.to(device)
    kw = {"scale": 1.3, "bias": -0.2, "reduce": reduce}
    labels, scores = pk.label_transfer(q, r, lab, 4, backend=backend, **kw)
    direct = pk.similarity_reduce(q.flatten(2).transpose(1, 2), r, lab, 4, backend=backend, **kw)
    assert_close(scores, direct.transpose(1, 2).reshape(scores.shape))
    assert torch.equal(labels, direct.argmax(-1).reshape(labels.shape))
    want_labels, want = label_transfer(q.cpu(), r.cpu(), lab.cpu(), 4, **kw)
    assert_close(scores.cpu(), want)
    assert torch.equal(labels.cpu(), want_labels)
    # and its gradients (autograd through the class sums and the product) against the reference's
    q1, r1 = q.detach().requires_grad_(), r.detach().requires_grad_()
    q2, r2 = q.detach().cpu().requires_grad_(), r.detach().cpu().requires_grad_()
    w = torch.randn(want.shape, dtype=torch.float64)
    s1 = pk.label_transfer(q1, r1, lab, 4, backend=backend, **kw)[1]
    g1 = torch.autograd.grad((s1 * w.to(q.device)).sum(), (q1, r1))
    g2 = torch.autograd.grad((label_transfer(q2, r2, lab.cpu(), 4, **kw)[1] * w).sum(), (q2, r2))
    for a, b in zip(g1, g2):
        assert_close(a.cpu(), b)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_linear_path_unchecked_labels_take_no_part(backend, device, reduce):
    """With the checks off, a ref label outside [0, C) other than -1 (below or above) takes no
    part on the class-sum path, as in the reference (valid_refs): its values, a NaN included,
    reach no class, and its gradient is exactly 0."""
    q, r, lab, _ = make_inputs(2, 5, 4, 3, 4, 5, torch.float64, seed=6)
    lab = lab.clone()
    lab[0, :3], lab[1, -2:] = torch.tensor([4, 9, -5]), torch.tensor([7, -2])
    r = r.clone()
    r[0, 1] = float("nan")  # labelled 9
    q, r, lab = q.to(device), r.to(device).requires_grad_(), lab.to(device)
    kw = {"scale": 1.3, "bias": -0.2, "reduce": reduce}
    with pk.use_checks("off"):
        labels, scores = pk.label_transfer(q, r, lab, 4, backend=backend, **kw)
    want_labels, want = label_transfer(q.cpu(), r.detach().cpu(), lab.cpu(), 4, **kw)
    assert_close(scores.detach().cpu(), want)
    assert torch.equal(labels.cpu(), want_labels)
    (g,) = torch.autograd.grad(scores.sum(), r)
    out = (lab < 0) | (lab >= 4)
    assert (g[out] == 0).all() and torch.isfinite(g[~out]).all()


# ---------------------------------------------------------------------------------------------
# Inputs an adversarial user tried (issue 35), on every backend and the emulated CUDA kernels.

from conftest import WITH_EMULATED  # noqa: E402
from test_similarity_reduce import agrees_with_reference  # noqa: E402


def _scores(inp, backend):
    return _lt_call(inp, backend)[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_softmax_padding_at_low_temperature_gives_finite_gradient(request, backend, device, dtype):
    """label_transfer(reduce="softmax") takes similarity_reduce's kernels (issue 35, 1): a valid
    ref scoring -1000 T next to a padding ref, T = 0.01, must leave the gradients finite."""
    q = torch.tensor([[1.0, 0.0], [0.5, -0.5]], dtype=dtype).T.reshape(1, 2, 1, 2)  # 2 pixels
    inp = {"query_emb": q, "ref_emb": torch.tensor([[[-10.0, 0.0], [5.0, 5.0], [-11.0, 1.0]]], dtype=dtype),
           "ref_labels": torch.tensor([[0, -1, 1]]), "num_classes": 2, "metric": "dot", "activation": None,
           "reduce": "softmax", "temperature": 0.01}  # fmt: skip
    got = agrees_with_reference(request, _scores, inp, ("query_emb", "ref_emb"), backend, device)
    assert all(torch.isfinite(t).all() for t in got)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_linear_path_empty_class_scores_zero_with_infinite_query(request, backend, device, reduce):
    """The linear path (dot, no activation, sum/mean) scores q·S_c + bias·n_c: an empty class has
    S_c = 0, and inf · 0 was NaN for a query pixel with an infinite entry (issue 35, 6); an empty
    class scores 0 (the direct path's, eq. 3's), and wins that pixel only as 0 does. (The refs'
    entries in the infinite dimension share a sign: else the direct sum is inf - inf = NaN where
    the linear path's inf · S_c is not, a reassociation no path can avoid.)"""
    q, r, lab, C = make_inputs(2, 3, 4, 5, 3, 2, torch.float64, seed=9)  # class 2 empty
    q[0, 1, 2, 3] = float("inf")
    q[1, 0, 0, 0] = -float("inf")
    r[0, :, 1], r[1, :, 0] = r[0, :, 1].abs() + 0.1, r[1, :, 0].abs() + 0.1
    inp = {"query_emb": q, "ref_emb": r, "ref_labels": lab, "num_classes": C, "metric": "dot", "activation": None,
           "reduce": reduce, "scale": 0.7, "bias": -0.3}  # fmt: skip
    got = agrees_with_reference(request, _scores, inp, ("query_emb", "ref_emb"), backend, device)
    assert (got[0][:, 2] == 0).all()
    labels = _lt_call({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inp.items()}, "cpu"
                      if backend == "emulated" else backend)[0]  # fmt: skip
    assert torch.equal(labels.cpu(), label_transfer(q, r, lab, C, reduce=reduce, scale=0.7, bias=-0.3)[0])


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_reference_linear_path_empty_class_with_infinite_query(reduce):
    """The reference's label_transfer_linear, as the direct path: an empty class scores 0."""
    q, r, lab, C = make_inputs(2, 3, 4, 5, 3, 2, torch.float64, seed=9)
    q[0, 1, 2, 3] = float("inf")
    r[0, :, 1] = r[0, :, 1].abs() + 0.1  # one sign in the infinite dimension (see above)
    want_labels, want = label_transfer(q, r, lab, C, reduce=reduce, scale=0.7, bias=-0.3)
    labels, scores = label_transfer_linear(q, r, lab, C, reduce=reduce, scale=0.7, bias=-0.3)
    assert_close(scores, want)
    assert torch.equal(labels, want_labels)

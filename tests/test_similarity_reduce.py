"""similarity_reduce reference: against a naive materialisation written here (per image, the valid
refs picked out by boolean indexing, one class at a time) for every metric x activation x
reduce on awkward sizes; gradients by gradcheck and against the naive one; the edge cases its
docstring promises (empty classes, every ref ignored, max ties, zero vectors, NaN padding)."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

# The module, not the function pixelkernels.reference re-exports under the same name.
sr_module = importlib.import_module("pixelkernels.reference.similarity_reduce")
from pixelkernels.reference.similarity_reduce import ACTIVATIONS, METRICS, REDUCES, similarity_reduce
from pixelkernels._dtypes import stats_dtype
from pixelkernels.testing import assert_close

KWARGS = {"scale": 0.7, "bias": -0.3, "temperature": 0.5, "eps": 1e-7}
DEFAULTS = {
    "metric": "dot",
    "scale": 1.0,
    "bias": 0.0,
    "activation": None,
    "reduce": "sum",
    "temperature": 1.0,
}


def naive(query, ref, labels, C, **kwargs):
    """The contract written out: per image, keep the valid refs, score every (query, ref) pair,
    then for each class pick its refs and reduce them (empty class: 0, or -inf for max)."""
    kw = {**DEFAULTS, "eps": 1e-7, **kwargs}
    metric, scale, bias, activation = kw["metric"], kw["scale"], kw["bias"], kw["activation"]
    reduce, temperature, eps = kw["reduce"], kw["temperature"], kw["eps"]
    B, N, _ = query.shape
    per_image = []
    for b in range(B):
        keep = [j for j in range(ref.shape[1]) if 0 <= int(labels[b, j]) < C]
        r, lab, q = ref[b, keep], [int(labels[b, j]) for j in keep], query[b]
        sim = q @ r.T  # (N, k)
        if metric == "cosine":
            sim = sim / (q.norm(dim=1)[:, None] * r.norm(dim=1)[None, :] + eps)
        s = scale * sim + bias
        if activation == "sigmoid":
            s = torch.sigmoid(s)
        if reduce == "softmax" and keep:
            s = torch.softmax(s / temperature, dim=1)
        cols = []
        for c in range(C):
            sel = [t for t, lt in enumerate(lab) if lt == c]
            if not sel:
                empty = float("-inf") if reduce == "max" else 0.0
                cols.append(torch.full((N,), empty, dtype=query.dtype))
            elif reduce in ("sum", "softmax"):
                cols.append(s[:, sel].sum(1))
            elif reduce == "mean":
                cols.append(s[:, sel].mean(1))
            else:
                cols.append(s[:, sel].amax(1))
        per_image.append(torch.stack(cols, dim=1))
    return torch.stack(per_image)


def make_labels(kind, B, K, C, g):
    if kind == "random":  # some -1
        lab = torch.randint(-1, C, (B, K), generator=g)
    elif kind == "empty_class":  # class C-1 never drawn, and one ignored ref per image
        lab = torch.randint(0, max(C - 1, 1), (B, K), generator=g)
        lab[:, 0] = -1
    elif kind == "all_ignored":
        lab = torch.full((B, K), -1)
    elif kind == "outside":  # labels outside [0, C) are ignored, like -1
        lab = torch.randint(-3, C + 3, (B, K), generator=g)
    elif kind == "one_image_ignored":
        lab = torch.randint(0, C, (B, K), generator=g)
        lab[0] = -1
    elif kind == "zero":
        lab = torch.zeros(B, K, dtype=torch.int64)
    return lab


# name: (B, N, K, D, C, label kind, label dtype)
CASES = {
    "single": (1, 1, 1, 1, 1, "zero", torch.int64),
    "D130_empty_class": (3, 7, 5, 130, 4, "empty_class", torch.int16),
    "N1": (3, 1, 9, 3, 3, "random", torch.int32),
    "K1": (1, 6, 1, 17, 2, "zero", torch.int64),
    "all_ignored": (3, 4, 6, 2, 3, "all_ignored", torch.int64),
    "D1_outside": (2, 5, 11, 1, 3, "outside", torch.int64),
    "uint8_outside": (2, 5, 11, 4, 2, "outside_uint8", torch.uint8),
    "one_image_ignored": (2, 4, 8, 5, 3, "one_image_ignored", torch.int64),
    "no_refs": (2, 3, 0, 4, 2, "random", torch.int64),
}


def make_case(name, dtype, seed=0):
    B, N, K, D, C, kind, ldtype = CASES[name]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, D, generator=g, dtype=torch.float64).to(dtype)
    r = torch.randn(B, K, D, generator=g, dtype=torch.float64).to(dtype)
    if kind == "outside_uint8":
        lab = torch.randint(0, C + 3, (B, K), generator=g)
    else:
        lab = make_labels(kind, B, K, C, g)
    return q, r, lab.to(ldtype), C


def close(actual, expected, dtype):
    if dtype == torch.float64:
        assert_close(actual, expected, torch.float64)
    else:
        finite = expected[torch.isfinite(expected)]
        scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
        torch.testing.assert_close(actual.double(), expected.double(), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "sigmoid"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_naive(case, metric, activation, reduce, dtype):
    q, r, lab, C = make_case(case, dtype)
    kw = dict(KWARGS, metric=metric, activation=activation, reduce=reduce)
    out = similarity_reduce(q, r, lab, C, **kw)
    assert out.shape == (q.shape[0], q.shape[1], C) and out.dtype == dtype
    expected = naive(q.double(), r.double(), lab, C, **kw)
    close(out, expected, dtype)


@pytest.mark.parametrize("reduce", REDUCES)
def test_defaults(reduce):
    q, r, lab, C = make_case("D130_empty_class", torch.float64, seed=3)
    close(similarity_reduce(q, r, lab, C, reduce=reduce), naive(q, r, lab, C, reduce=reduce), torch.float64)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "sigmoid"])
@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric, activation, reduce):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    # Image 0 has no class 2, image 1 no class 1; one ignored ref each, one out of range.
    lab = torch.tensor([[0, 1, -1, 0, 1, 1], [2, 0, -1, 5, 2, 0]])

    def fn(q, r, scale, bias):
        kw = {"metric": metric, "activation": activation, "reduce": reduce, "temperature": 0.6}
        out = similarity_reduce(q, r, lab, 3, scale=scale, bias=bias, **kw)
        # max's empty classes are -inf (no derivative to take); their gradient is checked below.
        return torch.where(torch.isfinite(out), out, 0.0)

    assert torch.autograd.gradcheck(fn, (q, r, scale, bias))


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "sigmoid"])
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_matches_naive(metric, activation, reduce):
    q, r, lab, C = make_case("D130_empty_class", torch.float64, seed=5)
    kw = dict(KWARGS, metric=metric, activation=activation, reduce=reduce)
    w = torch.randn(
        q.shape[0], q.shape[1], C, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )

    def grads(f):
        qq, rr = q.clone().requires_grad_(True), r.clone().requires_grad_(True)
        out = f(qq, rr, lab, C, **kw)
        loss = (torch.where(torch.isfinite(out), out, 0.0) * w).sum()
        return torch.autograd.grad(loss, (qq, rr))

    for got, want in zip(grads(similarity_reduce), grads(naive)):
        assert torch.isfinite(got).all()
        assert_close(got, want, torch.float64)


def test_max_ties_split_the_gradient():
    """Two refs of the class attain the max: each gets half of the gradient (torch.amax's rule)."""
    q = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    v = [0.5, -1.0]
    r = torch.tensor([[v, [-3.0, 0.0], v]], dtype=torch.float64, requires_grad=True)
    lab = torch.tensor([[0, 0, 0]])
    out = similarity_reduce(q, r, lab, 1, reduce="max", scale=2.0)
    (grad,) = torch.autograd.grad(out.sum(), r)
    half = 0.5 * 2.0 * q[0, 0]
    assert_close(grad[0], torch.stack([half, torch.zeros(2, dtype=torch.float64), half]))


def test_empty_class_gives_no_gradient():
    q, r, lab, C = make_case("D130_empty_class", torch.float64)
    for reduce in REDUCES:
        qq, rr = q.clone().requires_grad_(True), r.clone().requires_grad_(True)
        out = similarity_reduce(qq, rr, lab, C, reduce=reduce, activation="sigmoid")
        empty = out[..., C - 1]
        assert (empty == (float("-inf") if reduce == "max" else 0.0)).all()
        if reduce != "max":
            gq, gr = torch.autograd.grad(empty.sum(), (qq, rr))
            assert (gq == 0).all() and (gr == 0).all()


@pytest.mark.parametrize("reduce", REDUCES)
def test_all_ignored(reduce):
    """Every ref ignored: 0 (max: -inf), no NaN, zero gradient, still attached to the graph."""
    q, r, lab, C = make_case("all_ignored", torch.float64)
    q.requires_grad_(True), r.requires_grad_(True)
    out = similarity_reduce(q, r, lab, C, reduce=reduce, metric="cosine")
    assert (out == (float("-inf") if reduce == "max" else 0.0)).all()
    if reduce != "max":
        gq, gr = torch.autograd.grad(out.sum(), (q, r))
        assert (gq == 0).all() and (gr == 0).all()


@pytest.mark.parametrize("reduce", REDUCES)
def test_cosine_zero_vectors_are_finite(reduce):
    q, r, lab, C = make_case("D130_empty_class", torch.float64)
    q[0, 2] = 0.0
    r[1, 3] = 0.0
    lab[1, 3] = 0  # a valid zero ref
    q.requires_grad_(True), r.requires_grad_(True)
    out = similarity_reduce(q, r, lab, C, reduce=reduce, metric="cosine")
    assert not out.isnan().any()
    close(out, naive(q, r, lab, C, reduce=reduce, metric="cosine"), torch.float64)
    finite = torch.where(torch.isfinite(out), out, 0.0)
    gq, gr = torch.autograd.grad(finite.sum(), (q, r))
    assert torch.isfinite(gq).all() and torch.isfinite(gr).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_nan_in_ignored_ref_reaches_nothing(metric, reduce):
    q, r, lab, C = make_case("D130_empty_class", torch.float64)  # lab[:, 0] = -1
    clean = similarity_reduce(q, r, lab, C, reduce=reduce, metric=metric)
    r = r.clone()
    r[:, 0] = float("nan")
    q.requires_grad_(True), r.requires_grad_(True)
    out = similarity_reduce(q, r, lab, C, reduce=reduce, metric=metric)
    assert_close(out, clean)
    gq, gr = torch.autograd.grad(torch.where(torch.isfinite(out), out, 0.0).sum(), (q, r))
    assert torch.isfinite(gq).all() and torch.isfinite(gr).all() and (gr[:, 0] == 0).all()


def test_nan_in_query_propagates():
    q, r, lab, C = make_case("N1", torch.float64)
    q[1, 0, 0] = float("nan")
    out = similarity_reduce(q, r, lab, C, reduce="mean")
    nonempty = torch.stack([(lab[1] == c).any() for c in range(C)])
    assert out[1, 0, nonempty].isnan().all()
    assert not out[0].isnan().any()


@pytest.mark.parametrize("reduce", REDUCES)
def test_chunked_equals_whole(reduce, monkeypatch):
    q, r, lab, C = make_case("D130_empty_class", torch.float64)
    whole = similarity_reduce(q, r, lab, C, reduce=reduce, metric="cosine", activation="sigmoid")
    monkeypatch.setattr(sr_module, "_CHUNK_ELEMENTS", 2 * q.shape[0] * r.shape[1])  # 2 queries a chunk
    chunked = similarity_reduce(q, r, lab, C, reduce=reduce, metric="cosine", activation="sigmoid")
    # Equal to float64 rounding, not bitwise: the BLAS may take another kernel for a 2-row product
    # than for the whole (another summation order; seen on an AMD EPYC with torch 2.13's CPU wheel).
    # A chunk-boundary bug would be off by O(1).
    assert_close(chunked, whole)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    q, r, lab, C = make_case("D130_empty_class", torch.float32)
    q, r = q.to(dtype), r.to(dtype)
    out = similarity_reduce(q, r, lab, C, reduce="softmax")
    assert out.dtype == torch.float32
    assert torch.equal(out, similarity_reduce(q.float(), r.float(), lab, C, reduce="softmax"))


def test_softmax_rows_sum_to_one_over_classes():
    q, r, lab, C = make_case("one_image_ignored", torch.float64)
    out = similarity_reduce(q, r, lab, C, reduce="softmax", metric="cosine", temperature=0.1)
    assert_close(out[1].sum(-1), torch.ones(q.shape[1], dtype=torch.float64))
    assert (out[0] == 0).all()


def test_large_n_k_stays_light():
    """N·K ≈ 1e6 through the chunked path."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2000, 16, generator=g)
    r = torch.randn(1, 500, 16, generator=g)
    lab = torch.randint(-1, 5, (1, 500), generator=g)
    out = similarity_reduce(q, r, lab, 5, reduce="mean", activation="sigmoid")
    expected = naive(q.double(), r.double(), lab, 5, reduce="mean", activation="sigmoid")
    close(out, expected, torch.float32)


# ---------------------------------------------------------------------------------------------
# The op (pixelkernels.similarity_reduce): the contract on every backend, then what is special.

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

from conftest import BACKENDS, DIRECT_VARIANTS, TRITON_DEVICE, WITH_EMULATED, on_backend, weighted_loss  # noqa: E402
from contract import Contract, pair_sides, suite  # noqa: E402
from fuzz import Choice, Floats, Labels, Size  # noqa: E402

import pixelkernels as pk  # noqa: E402

OP_KWARGS = ("metric", "scale", "bias", "activation", "reduce", "temperature", "eps", "ref_weight")


def _op_inp(B, N, K, D, C, *, layout="contiguous", seed=0, pad=0.25, ties=False, ignore_image=None, weight=False,
            **kw):  # fmt: skip
    """query (B, N, D), ref (B, K, D), labels with -1 at random refs (and out-of-range values);
    weight: a ref_weight (B, K) in [-0.5, 1.5) with every fifth ref's weight 0 (prior_mask's
    masked-out pixels: cosine 0, and a large gradient of the weight, q·r / eps);
    ties: ref 1 a copy of ref 0 (same label), and ref K-1 of ref 2 (a tie across ref tiles), the
    vectors multiples of 1/8 so that every score is exact in any summation order (a GEMM can sum
    two equal columns in different orders when they fall in different panels: no tie then);
    ignore_image: every ref of that image -1, its vectors NaN."""

    def make(device, dtype):
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(B, N, D, generator=g, dtype=torch.float64)
        r = torch.randn(B, K, D, generator=g, dtype=torch.float64)
        lab = torch.randint(0, C, (B, K), generator=g)
        lab[torch.rand(B, K, generator=g) < pad] = -1
        if ties:
            q, r = (q * 8).round() / 8, (r * 8).round() / 8
        if ties and K > 2:
            r[:, 1], lab[:, 1] = r[:, 0], lab[:, 0].clamp_min(0)
            lab[:, 0] = lab[:, 1]
            r[:, K - 1], lab[:, K - 1] = r[:, 2], lab[:, 2]
        if ignore_image is not None and B > ignore_image:
            lab[ignore_image] = -1
            r[ignore_image] = float("nan")
        if weight:
            kw["ref_weight"] = torch.rand(B, K, generator=g, dtype=torch.float64) * 2 - 0.5
            kw["ref_weight"][:, ::5] = 0
        if layout == "channels_last":  # the awkward layout of a (B, N, D) tensor: D-major
            q = q.transpose(1, 2).contiguous().transpose(1, 2)
            r = r.transpose(1, 2).contiguous().transpose(1, 2)
        opts = {"metric": "dot", "scale": 0.7, "bias": -0.3, "activation": None, "reduce": "sum",
                "temperature": 0.5, "eps": 1e-7, **kw}  # fmt: skip
        if weight:  # in the statistics dtype, which the op computes in
            opts["ref_weight"] = opts["ref_weight"].to(device, stats_dtype(dtype))
        return {"query": q.to(device, dtype), "ref": r.to(device, dtype), "ref_labels": lab.to(device),
                "num_classes": C, **opts}  # fmt: skip

    return make


def _op_call(inp, backend):
    kw = {k: inp[k] for k in OP_KWARGS if k in inp}
    if kw.get("metric") == "cosine" and "ref_weight" in kw and inp.get("fuzz_dot_weights", False):
        # The fuzz differentiates the weights of the dot product only: the cosine is invariant to
        # a ref's scale but for eps, so d/dw is eps-small, a cancellation no float32 autograd
        # (the reference's) resolves; the weighted cosine's d/dw has its own tests
        # (test_ref_weight_*, prior_mask's support mask), where the kernels' exact form is checked.
        kw["ref_weight"] = kw["ref_weight"].detach()
    return (pk.similarity_reduce(inp["query"], inp["ref"], inp["ref_labels"], inp["num_classes"], backend=backend, **kw),)


def _finite_loss(out, inp):
    """weighted_loss over the finite outputs (an empty class's max is -inf)."""
    return weighted_loss(tuple(o.masked_fill(~torch.isfinite(o.detach()), 0) for o in out), inp)


def max_score_gaps(query, ref, ref_labels, num_classes, *, reduce="sum", metric="dot", scale=1.0, bias=0.0,
                   eps=1e-7, ref_weight=None, **_):  # fmt: skip
    """Contract.kink_gaps for the max: (gap, top) (B, N, C) in float64, the gap between each row
    and class's largest and second-largest logit (inf with fewer than two members) and the
    largest; None for the other reductions. The logits, not the scores: the max is decided on z
    (csrc/common/similarity_reduce.h, activates)."""
    if reduce != "max":
        return None
    mod = importlib.import_module("pixelkernels.reference.similarity_reduce")
    valid = mod.valid_refs(ref_labels, num_classes)
    q = query.double()
    r = torch.where(valid[..., None], ref.double(), 0.0)
    if ref_weight is not None:
        r = r * torch.where(valid, ref_weight.double(), 0.0)[..., None]
    qn = rn = None
    if metric == "cosine":
        qn, rn = mod._norm(q), mod._norm(r)
    z = mod._scores(q, r, metric, float(scale), float(bias), None, eps, qn, rn)  # (B, N, K)
    gaps, tops = [], []
    for c in range(num_classes):
        zc = torch.where((valid & (ref_labels.long() == c))[:, None, :], z, float("-inf"))
        two = torch.cat([zc, zc.new_full(zc.shape[:2] + (2,), float("-inf"))], -1).topk(2, dim=-1).values
        gaps.append(torch.where(two[..., 1] > float("-inf"), two[..., 0] - two[..., 1], float("inf")))
        tops.append(two[..., 0])
    if not gaps:
        return None
    return torch.stack(gaps, -1), torch.stack(tops, -1)


def _op_bad(**kw):
    inp = _op_inp(2, 5, 6, 3, 3)("cpu", torch.float32)
    return {**inp, **kw}


_CASES = {
    # past Triton's 16 x 32 blocks (the CPU's tiles: the tile_edges cases)
    f"{m}_{a or 'linear'}_{r}": _op_inp(2, 19, 37, 17, 4, metric=m, activation=a, reduce=r, seed=i)
    for i, (m, a, r) in enumerate(
        [("cosine", None, "sum"), ("dot", "sigmoid", "mean"), ("cosine", "sigmoid", "max"), ("dot", None, "max"),
         ("dot", None, "softmax"), ("cosine", "sigmoid", "softmax"), ("cosine", None, "mean")]
    )  # fmt: skip
}

ROW = Contract(
    op="similarity_reduce",
    fuzz=lambda d: {"ref": Floats(("B", "K", "D")), "ref_labels": Labels(("B", "K")), "query": Floats(("B", "H", "D")),
                     "num_classes": Size("R"), "metric": Choice(METRICS if d["D"] != 1 else ("dot",)),
                     "activation": Choice(ACTIVATIONS),
                     "reduce": Choice(REDUCES), "scale": Choice((1.0, -0.5), extreme=(40.0,)), "bias": Choice((0.0, 0.25)),
                     "temperature": Choice((1.0, 0.3), extreme=(2.0**-6,)), "eps": Choice((1e-7,), extreme=(0.0,)),
                     "ref_weight": Floats(("B", "K"), positive=True, integer_ok=True), "fuzz_dot_weights": True},  # fmt: skip
    make=_op_inp(2, 13, 11, 5, 3),
    call=_op_call,
    shaped=lambda B, D, H, W, layout: _op_inp(B, *pair_sides(H, W), D, 3, layout=layout, reduce="max", metric="cosine"),
    loss=_finite_loss,
    grad_inputs=("query", "ref"),
    kink_gaps=lambda inp: max_score_gaps(**inp),
    tiny=_op_inp(2, 3, 4, 3, 2, reduce="softmax", metric="cosine", activation="sigmoid"),
    zero_sizes={
        "B0": _op_inp(0, 3, 4, 2, 2)("cpu", torch.float32),
        "N0": _op_inp(2, 0, 4, 2, 2)("cpu", torch.float32),
        "K0": _op_inp(2, 3, 0, 2, 2, reduce="max")("cpu", torch.float32),
        "K0_softmax": _op_inp(2, 3, 0, 2, 2, reduce="softmax")("cpu", torch.float32),
        "D0": _op_inp(2, 3, 4, 0, 2, reduce="mean")("cpu", torch.float32),
    },
    bad_inputs={
        "query_rank": (_op_bad(query=torch.randn(5, 3)), ValueError, "query must have 3 dims"),
        "ref_dtype": (_op_bad(ref=torch.randn(2, 6, 3, dtype=torch.float64)), TypeError, "ref must have query's dtype"),
        "ref_dim": (_op_bad(ref=torch.randn(2, 6, 4)), ValueError, "ref must have (B, D)"),
        "labels_shape": (_op_bad(ref_labels=torch.zeros(2, 5, dtype=torch.long)), ValueError, "ref_labels must have shape"),
        "labels_float": (_op_bad(ref_labels=torch.zeros(2, 6)), TypeError, "ref_labels must have dtype"),
        "num_classes": (_op_bad(num_classes=0), ValueError, "num_classes must be positive"),
        "metric": (_op_bad(metric="l2"), ValueError, "metric must be one of"),
        "reduce": (_op_bad(reduce="median"), ValueError, "reduce must be one of"),
        "activation": (_op_bad(activation="relu"), ValueError, "activation must be one of"),
        "temperature": (_op_bad(temperature=0.0), ValueError, "temperature must be > 0"),
        "scale_tensor": (_op_bad(scale=torch.tensor(2.0)), TypeError, "scale and bias must be Python numbers"),
        "eps": (_op_bad(eps=-1.0), ValueError, "eps must be >= 0"),
        "labels_range": (_op_bad(ref_labels=torch.full((2, 6), 3)), ValueError, "ref_labels values must be in [0, 3)"),
    },
    interpreter_skip=frozenset({"tile_edges_softmax", "tile_edges_max", "query_groups", "weighted_tile_edges",
                                "weighted_query_groups"}),
    cases={
        **_CASES,
        "ties": _op_inp(2, 9, 70, 5, 3, ties=True, reduce="max", pad=0.0),
        "ties_sigmoid": _op_inp(2, 9, 70, 5, 3, ties=True, reduce="max", activation="sigmoid", pad=0.0),
        "image_ignored": _op_inp(3, 7, 9, 4, 3, ignore_image=1, reduce="softmax", metric="cosine"),
        "image_ignored_max": _op_inp(3, 7, 9, 4, 3, ignore_image=0, reduce="max"),
        "one_ref": _op_inp(2, 5, 1, 3, 2, reduce="softmax", pad=0.0),
        "one_query_D130": _op_inp(1, 1, 6, 130, 3, reduce="mean", metric="cosine"),
        "D1_C1": _op_inp(2, 6, 5, 1, 1, reduce="max", activation="sigmoid"),
        "many_classes": _op_inp(2, 9, 40, 6, 37, reduce="softmax"),
        # across the CPU's 64-query and 256-ref tiles (too slow for the Triton interpreter: 25 s
        # each) and Triton's 16 x 32 blocks and D chunks of 32 (block_edges: the same for Triton)
        "tile_edges_softmax": _op_inp(1, 70, 300, 33, 3, reduce="softmax", activation="sigmoid"),
        "tile_edges_max": _op_inp(1, 70, 300, 33, 3, reduce="max", metric="cosine"),
        "block_edges_max": _op_inp(2, 17, 33, 33, 3, reduce="max", metric="cosine", ties=True),
        # many query tiles for few refs: the CPU backward's groups of query tiles (G = 3 here),
        # each with its own dr partial, summed in group order (a CPU case: not the interpreter)
        "query_groups": _op_inp(2, 130, 2, 3, 2, reduce="sum", metric="cosine"),
        # ref_weight: applied inside the CPU tiles (and around the CUDA and Triton kernels)
        "weighted_cosine_max": _op_inp(2, 19, 37, 17, 3, reduce="max", metric="cosine", weight=True),
        "weighted_softmax": _op_inp(2, 19, 37, 17, 4, reduce="softmax", activation="sigmoid", weight=True),
        "weighted_tile_edges": _op_inp(1, 70, 300, 33, 3, reduce="max", metric="cosine", weight=True,
                                       layout="channels_last"),
        "weighted_query_groups": _op_inp(2, 130, 2, 3, 2, reduce="mean", metric="cosine", weight=True),
    },
    # the CUDA half kernels' 64 x 64 mma tiles and the backward's 64-dim chunks, both sides
    emulated_cases={
        "mma_chunks": _op_inp(1, 70, 67, 130, 3, reduce="mean", metric="cosine", activation="sigmoid"),
        "mma_chunks_max": _op_inp(1, 70, 67, 130, 3, reduce="max", metric="cosine", ties=True),
        "mma_weighted": _op_inp(1, 70, 67, 130, 3, reduce="sum", metric="cosine", weight=True),
        # D-major query and refs read in place, their gradients written along the rows (split
        # refs' last-block finish, partial tiles of both sides)
        "d_major_splits": _op_inp(2, 70, 300, 33, 3, reduce="mean", metric="cosine", activation="sigmoid",
                                  layout="channels_last"),
        # float32 dot_tile's 16-dim stages read as aligned 16-byte quads (D a multiple of 4: two
        # whole stages and a quad), ties across ref tiles whose bits the max's tests compare
        "quad_stages_max": _op_inp(2, 70, 67, 36, 3, reduce="max", metric="cosine", ties=True),
        "quad_stages_d_major": _op_inp(1, 70, 67, 36, 3, reduce="softmax", activation="sigmoid",
                                       layout="channels_last"),
    },
)

TestContract = suite(ROW)


def test_op_memory_is_linear():
    """N = 20000 queries x K = 2000 refs, D = 16 on the CPU: the reference's (chunked) scores
    and the autograd graph of a materialised (N, K) float32 matrix would be 160 MB; the op's
    forward + backward grow the peak resident memory by a few tiles and the (K, D) partials."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    code = textwrap.dedent(
        """
        import resource, torch, pixelkernels as pk
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 20000, 16, generator=g).requires_grad_()
        r = torch.randn(1, 2000, 16, generator=g).requires_grad_()
        lab = torch.randint(-1, 5, (1, 2000), generator=g)
        def step():
            out = pk.similarity_reduce(q, r, lab, 5, reduce="softmax", metric="cosine", backend="cpu")
            out.sum().backward()
        step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grew = int(out.stdout.split()[-1])
    assert grew < 16 * 2**20, f"peak memory grew by {grew / 2**20:.1f} MiB ((N, K) float32: 153 MiB)"


_WEIGHT_GRAD_CASES = [(m, r, torch.float64) for m in METRICS for r in REDUCES] + [
    (m, r, torch.float32) for m in METRICS for r in REDUCES if m == "dot" or r == "max"
]


def _weight_grads_agree(request, made, backend, device, dtype):
    """The op's output and the gradients of query, ref and ref_weight on `backend` (made: its
    inputs on the CPU in `dtype`) against the reference's on the same values in float64."""
    inp = {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in made.items()}
    keys = ("query", "ref", "ref_weight")

    def grads(backend):
        x = {k: v.detach().requires_grad_(True) if k in keys else v for k, v in inp.items()}
        (out,) = _op_call(x, backend)
        return (out, *torch.autograd.grad(_finite_loss((out,), x), [x[k] for k in keys]))

    want = grads("reference")
    inp = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in made.items()}
    for name, a, b in zip(("out",) + keys, on_backend(request, backend, grads), want):
        assert_close(a.cpu(), b, dtype, msg=f"{backend} {name}")


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
@pytest.mark.parametrize("metric,reduce,dtype", _WEIGHT_GRAD_CASES)
def test_ref_weight_gradient_on_every_backend(request, metric, reduce, dtype, backend, device):
    """The contract differentiates query and ref; here also ref_weight, on every backend against
    the reference in float64, with D-major refs (prior_mask's support map, read in place on the
    CPU) and weights of 0 (a masked-out ref: cosine 0, weight gradient Σ_i dZ_ij (q_i·r_j) / eps).
    In float32 too, where that gradient is well conditioned: dot; and cosine max (prior_mask's),
    where the CPU sums cosine's weight gradient per pair with its dots in double. Cosine's other
    reductions in float32 carry the relative error of the float32 dots q·r in the GEMM tiles
    (|q||r| / |q·r| times 2^-24: 1.3e-5 at one masked ref here, against 1.7e-2 for the float32
    reference); away from w = 0 that gradient is ~eps-small, the difference of two O(1) sums,
    which every backend forms per pair (CPU: its dots in double; CUDA float32: the tiles' float32
    dots, the pair's term and the sums in double) or in float64 (Triton)."""
    if backend == "reference":
        pytest.skip("the reference is what the others are compared with")
    made = _op_inp(2, 19, 37, 17, 3, metric=metric, reduce=reduce, activation="sigmoid", weight=True,
                   layout="channels_last")("cpu", dtype)  # fmt: skip
    _weight_grads_agree(request, made, backend, device, dtype)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_ref_weight_gradient_of_the_max_without_ties(request, backend, device):
    """The float32 max with a weight and no tied maximum (every weight nonzero, so no two refs of
    a class score the bias): on CUDA every image takes the sparse backward (a row's C maxima, not
    its N x K tiles), whose ref rows are w_j G_j and whose weight gradient is summed per pair
    there; against the reference in float64."""
    made = _op_inp(2, 19, 37, 17, 3, reduce="max", activation="sigmoid", weight=True)("cpu", torch.float32)
    made["ref_weight"] = made["ref_weight"].abs() + 0.25
    _weight_grads_agree(request, made, backend, device, torch.float32)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_ref_weight_matches_weighted_refs(request, backend, device):
    """ref_weight w is the refs w·r: the same output as passing them."""
    inp = _op_inp(2, 11, 23, 9, 3, metric="cosine", reduce="softmax", weight=True)(device, torch.float64)
    w = inp.pop("ref_weight")
    weighted = {**inp, "ref": inp["ref"] * w[..., None]}
    a = on_backend(request, backend, lambda be: _op_call({**inp, "ref_weight": w}, be)[0])
    b = on_backend(request, backend, lambda be: _op_call(weighted, be)[0])
    assert_close(a, b, torch.float64, msg=backend)


def test_ref_weight_errors():
    inp = _op_inp(2, 5, 6, 3, 3)("cpu", torch.float32)
    for w, err, msg in ((torch.ones(2, 5), ValueError, "ref_weight must have ref's"),
                        (torch.ones(12), ValueError, "ref_weight must have 2 dims"),
                        (torch.ones(2, 6, dtype=torch.complex64), TypeError, "ref_weight must have dtype")):  # fmt: skip
        with pytest.raises(err, match=msg):
            _op_call({**inp, "ref_weight": w}, "cpu" if "cpu" in pk.available_backends() else "reference")


# ---------------------------------------------------------------------------------------------
# Inputs an adversarial user tried (issue 35): padding next to scores far beyond exp's range,
# eps = 0, NaN and inf in padding, weights and valid inputs. Each runs on every backend and on
# the CUDA kernels under the emulator ("cuda-emulated"), against the reference on the same values.

from conftest import fixed_weights  # noqa: E402
F32_F64 = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
INF, NAN = float("inf"), float("nan")


def outputs_and_grads(call, inp: dict, keys, backend: str) -> tuple:
    """call(inp, backend)'s first output and the gradients of inp[keys] of a fixed weighting of
    it (non-finite outputs weighted 0: their gradient is what the op sends back for a 0)."""
    x = {k: v.detach().clone().requires_grad_(True) if k in keys else v for k, v in inp.items()}
    out = call(x, backend)
    out = out[0] if isinstance(out, tuple) else out
    loss = (out.nan_to_num(0.0, 0.0, 0.0) * fixed_weights(out)).sum()
    return (out.detach(), *torch.autograd.grad(loss, [x[k] for k in keys]))


@contextlib.contextmanager
def norm_floor_of(dtype):
    """Inside: the reference's cosine norms clamped at `dtype`'s smallest normal, whatever the
    dtype they are computed in (pixelkernels/reference/similarity_reduce.py _norm)."""
    mod = importlib.import_module("pixelkernels.reference.similarity_reduce")
    saved = mod._norm
    mod._norm = lambda t, tiny=None: t.square().sum(-1).clamp_min(torch.finfo(dtype).tiny).sqrt()
    try:
        yield
    finally:
        mod._norm = saved


def agrees_with_reference(request, call, inp: dict, keys, backend: str, device: str, *, same_dtype=False) -> tuple:
    """The backend's output and gradients equal the reference's on the same values in float64
    (same_dtype: with the norms clamped at inp's dtype's smallest normal, where the answer
    depends on it), to SPEC §4 for inp's dtype, NaN and inf in the same places. Returns the
    backend's. The reference in inp's dtype is no oracle there: a zero ref's gradient sums +-1e16
    terms (1 / sqrt(tiny)) that cancel, and float32's sum was 1.3e-5 off with AVX-512's MKL (the
    backends, summing in double, within 2.6e-7). So the reference backend itself, naive float32,
    is compared with its own float32 evaluation there (as every backend was before)."""
    dtype = next(v.dtype for v in inp.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    wide = dtype if same_dtype and backend == "reference" else torch.float64
    ref = {k: v.to(wide) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inp.items()}
    with norm_floor_of(dtype) if same_dtype else contextlib.nullcontext():
        want = outputs_and_grads(call, ref, keys, "reference")
    dev = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    got = on_backend(request, backend, lambda b: outputs_and_grads(call, dev, keys, b))
    for name, a, b in zip(("out", *keys), got, want):
        assert_close(a.cpu(), b, dtype, msg=f"{backend} {name}")
    return tuple(t.cpu() for t in got)


def _sr(inp, backend):
    kw = {k: inp[k] for k in OP_KWARGS if k in inp}
    return pk.similarity_reduce(inp["query"], inp["ref"], inp["ref_labels"], inp["num_classes"], backend=backend, **kw)


def _exact_inp(B, N, K, D, C, dtype, *, seed=0, pad=0.25, **kw):
    """Inputs whose dot products are exact in any summation order: entries multiples of 1/8,
    so scores are multiples of 1/64, and s / T exact for T a power of two (float32 and float64
    then differ only in exp and log's rounding)."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, N, D, generator=g, dtype=torch.float64) * 16).round() / 8
    r = (torch.randn(B, K, D, generator=g, dtype=torch.float64) * 16).round() / 8
    lab = torch.randint(0, C, (B, K), generator=g)
    lab[torch.rand(B, K, generator=g) < pad] = -1
    return {"query": q.to(dtype), "ref": r.to(dtype), "ref_labels": lab, "num_classes": C, **kw}


@F32_F64
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_softmax_padding_at_low_temperature_gives_finite_gradient(request, backend, device, dtype):
    """A valid ref scoring -1000 T next to a padding ref (issue 35, 1): the padding score (0
    before the mask) must not enter exp(s / T - lse), which overflows (0 · inf = NaN in dq)."""
    inp = {"query": torch.tensor([[[1.0, 0.0]]], dtype=dtype), "ref": torch.tensor([[[-10.0, 0.0], [5.0, 5.0]]], dtype=dtype),
           "ref_labels": torch.tensor([[0, -1]]), "num_classes": 2, "reduce": "softmax", "temperature": 0.01}  # fmt: skip
    got = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)
    assert all(torch.isfinite(t).all() for t in got)


@pytest.mark.parametrize("rows", ["positive", "negative", "mixed"])
@pytest.mark.parametrize("temperature", [2.0**-6, 2.0**-10])
@pytest.mark.parametrize("K", [37, 300])
@F32_F64
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_softmax_beyond_exp_range_matches_reference(request, backend, device, dtype, K, temperature, rows):
    """|s / T| in the thousands (few-shot training's T = 0.01-0.1 on unnormalised scores): rows of
    only very positive scores, only very negative ones, and both; padding and an empty class;
    across Triton's ref blocks (K = 37: rows with several refs near the top, where p is
    sensitive to the rounding of the row's statistics) and the CPU's 256-ref tiles (K = 300)."""
    if K == 300 and backend == "triton" and device == "cpu":
        pytest.skip("the CPU's tiles; too slow for the Triton interpreter")
    bias = {"positive": 40.0, "negative": -40.0, "mixed": 0.0}[rows]
    inp = _exact_inp(2, 19, K, 5, 4, dtype, reduce="softmax", temperature=temperature, bias=bias)
    inp["ref_labels"][:, :] = inp["ref_labels"].clamp_max(2)  # class 3 empty
    # ties across classes at the top of a row: the gradient is then O(1 / T), not ~0
    inp["ref"][:, 7], inp["ref_labels"][:, 7] = inp["ref"][:, 3], (inp["ref_labels"][:, 3] + 1) % 3
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


@pytest.mark.parametrize("variant", [("cosine", None), ("dot", "sigmoid"), ("cosine", "sigmoid")])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_softmax_beyond_exp_range_cosine_and_sigmoid(request, backend, device, variant):
    """The same in float64 for bounded scores (cosine, sigmoid) at T = 2^-12: |s / T| up to 4096."""
    metric, act = variant
    inp = _exact_inp(2, 19, 37, 5, 3, torch.float64, reduce="softmax", temperature=2.0**-12, metric=metric,
                     activation=act, scale=3.0, bias=-1.0)  # fmt: skip
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("padding", [False, True], ids=["all_valid", "padding"])
@F32_F64
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_cosine_eps_zero_matches_reference(request, backend, device, dtype, padding, reduce):
    """eps = 0 is valid (issue 35, 2): the norms are clamped at sqrt(tiny) as the reference's,
    so a zero vector's cosine is 0 (its gradient r / (|r| sqrt(tiny)) depends on the dtype: the
    reference in the same dtype); padding refs and masked tile lanes take no part (Triton's
    lanes had a zero denominator: all-NaN gradients; the CPU's padding sim q·r / 0)."""
    inp = _exact_inp(2, 19, 37, 5, 3, dtype, pad=0.3 if padding else 0.0, metric="cosine", eps=0.0,
                     reduce=reduce)  # fmt: skip
    inp["query"][0, 4] = 0.0  # zero vectors, valid: cosine 0
    inp["ref"][1, 5] = 0.0
    if padding:
        inp["ref"][:, 6] = INF  # padding: takes no part at all
        inp["ref_labels"][:, 6] = -1
    got = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device, same_dtype=True)
    assert all(torch.isfinite(t if reduce != "max" else t[1:]).all() for t in got)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_weight_on_padding_reaches_nothing(request, backend, device, metric, reduce):
    """A NaN (or inf) ref_weight and ref on padding slots (issue 35, 3): no output and no
    gradient sees it, the slots' own ref and weight gradients included (0)."""
    inp = _exact_inp(2, 11, 9, 4, 3, torch.float64, metric=metric, reduce=reduce, temperature=0.5)
    g = torch.Generator().manual_seed(3)
    w = torch.rand(2, 9, generator=g, dtype=torch.float64) + 0.5
    lab = inp["ref_labels"]
    lab[:, 2], lab[:, 5] = -1, -1
    clean = _sr({**inp, "ref_weight": w}, "reference")
    w[:, 2], w[:, 5] = NAN, INF
    inp["ref"][0, 2] = NAN
    inp["ref_weight"] = w
    got = agrees_with_reference(request, _sr, inp, ("query", "ref", "ref_weight"), backend, device)
    assert_close(got[0], clean)
    assert all(torch.isfinite(t).all() for t in got[1:])
    assert (got[2][:, [2, 5]] == 0).all() and (got[3][:, [2, 5]] == 0).all()


@pytest.mark.parametrize("reduce", REDUCES)
@F32_F64
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_argmax_labels_are_torch_argmax_of_out(request, backend, device, dtype, reduce):
    """argmax=True (label_transfer's labels): each row's label from the pass that writes out is
    torch.argmax of that out over the classes, exactly: ties to the lowest class (a ref and its
    copy alone in two classes), a NaN winning (a NaN ref in class 2 of image 0: NaN there in every row but
    the softmax's empty classes), an image with every class empty (image 1: 0 or -inf
    throughout, label 0), a row of many refs over tiles. argmax=False gives (0,)."""
    from pixelkernels import _op
    from pixelkernels.ops.similarity_reduce import OP

    inp = _exact_inp(3, 70, 75, 4, 4, dtype, reduce=reduce, temperature=0.5)
    lab = inp["ref_labels"]
    inp["ref"][0, 20, 1], lab[0, 20] = NAN, 2
    lab[1] = -1
    lab[2] = -1  # image 2: ref 3 alone in class 1, its copy alone in class 3: the same outs
    inp["ref"][2, 10], lab[2, 10], lab[2, 3] = inp["ref"][2, 3], 3, 1

    def call(b):
        args = (lab.to(device), 4, "dot", 1.0, 0.0, False, reduce, 0.5, 1e-7, None, None)
        q, r = inp["query"].to(device), inp["ref"].to(device)
        out, _, labels = _op.run(OP, b, q, r, *args, True)
        return out, labels, _op.run(OP, b, q, r, *args, False)[2]

    out, labels, none = (t.cpu() for t in on_backend(request, backend, call))
    assert labels.dtype == torch.int64 and labels.shape == (3, 70) and none.shape == (0,)
    assert torch.equal(labels, out.argmax(-1))
    assert (labels[1] == 0).all() and (labels[0] == 2).all() == (reduce != "softmax")
    assert (labels[2] == 1).any() and not (labels[2] == 3).any()  # ties: the lower class


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_max_of_minus_inf_class_splits_among_members(request, backend, device):
    """A class whose max is -inf (issue 35, 5): its two members share the gradient, 1/2 each (the
    other classes' refs are no ties: the reference's -inf fill counted them, 1/3)."""
    inp = {"query": torch.tensor([[[1.0, 0.0]]], dtype=torch.float64),
           "ref": torch.tensor([[[-INF, 0.0], [-INF, 0.0], [1.0, 0.0], [2.0, 1.0]]], dtype=torch.float64),
           "ref_labels": torch.tensor([[0, 0, 1, -1]]), "num_classes": 2, "reduce": "max"}  # fmt: skip

    def call(x, b):
        out = _sr(x, b)
        return out.masked_fill(torch.isnan(out), 0.0)

    def grads(b):
        r = inp["ref"].clone().requires_grad_(True)
        out = _sr({**inp, "ref": r}, b)
        return out.detach(), torch.autograd.grad((out * torch.tensor([1.0, 2.0], dtype=out.dtype)).sum(), r)[0]

    out, gr = on_backend(request, backend, grads)
    assert out.tolist() == [[[-INF, 1.0]]]
    assert gr.tolist() == [[[0.5, 0.0], [0.5, 0.0], [2.0, 0.0], [0.0, 0.0]]]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "sigmoid"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_max_nan_score_gives_nan_gradient_to_its_class(request, backend, device, activation):
    """A NaN score makes its class max NaN and, by torch.amax's rule, every member's gradient NaN
    (issue 35, 6); the other classes are untouched (`s == o` never holds for NaN: the kernels
    gave 0)."""
    inp = _exact_inp(2, 5, 9, 3, 3, torch.float64, pad=0.0, reduce="max", activation=activation)
    inp["ref_labels"][0] = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])
    inp["ref"][0, 1, 0] = NAN  # class 0 of image 0
    inp["query"][1, 2, 1] = NAN  # one query row of image 1
    got = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)
    assert got[2][0, [0, 1, 6]].isnan().all() and torch.isfinite(got[2][0, [2, 3, 4, 5, 7, 8]]).all()


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_softmax_empty_class_is_zero_in_a_nan_row(request, backend, device):
    """An empty class scores 0 under the softmax even in a row that a NaN makes NaN (issue 35, 6)."""
    inp = _exact_inp(2, 5, 9, 3, 4, torch.float64, reduce="softmax")
    inp["ref_labels"] = inp["ref_labels"].clamp_max(2)  # class 3 empty
    inp["ref_labels"][1] = -1  # image 1: no valid ref
    inp["query"][:, 1, 0] = NAN
    inp["ref"][0, 3, 2] = NAN
    got = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)
    assert (got[0][..., 3] == 0).all() and (got[0][1] == 0).all()


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_infinite_entry_in_a_valid_ref(request, backend, device, metric, reduce):
    """+inf and -inf entries in valid ref vectors, sum and mean (issue 35, 8): its scores are
    inf or NaN, the other classes' stay finite, and the gradients follow the reference's."""
    inp = _exact_inp(2, 7, 37, 3, 3, torch.float64, metric=metric, reduce=reduce)
    inp["ref_labels"][:, :4] = torch.tensor([0, 0, 1, -1])
    inp["ref"][0, 0, 1] = INF
    inp["ref"][1, 2, 0] = -INF
    inp["ref"][1, 3, 0] = INF  # padding
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_saturated_sigmoid_keeps_its_gradient(request, backend, device, reduce, metric):
    """Scale and bias that put every score at z in [18, 60], where float32's sigmoid rounds to 1:
    the gradient is the exact e^-z-small one, each element to 1e-4 of itself (the kernels formed
    s (1 - s) as 0 there: every element 100% off yet inside SPEC's absolute 1e-6); positive
    inputs, so no sum cancels. Not max (its float32 scores tie at 1.0f) nor softmax (its weights
    are uniform once float32's scores are all 1.0f: the differences float64 keeps are gone from
    the float32 reference too)."""
    inp = _exact_inp(2, 7, 9, 3, 3, torch.float64, reduce=reduce, metric=metric, activation="sigmoid", pad=0.2)
    inp["query"], inp["ref"] = inp["query"].abs() / 4 + 0.125, inp["ref"].abs() / 4 + 0.125
    # cosine: z = 40 cos + 18 (cos in (0, 1]); dot: z = q.r + 18 (q.r < 12)
    inp["scale"], inp["bias"] = (40.0, 18.0) if metric == "cosine" else (1.0, 18.0)
    for k in ("query", "ref"):
        inp[k] = inp[k].float()
    ref = {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inp.items()}
    want = outputs_and_grads(_sr, ref, ("query", "ref"), "reference")
    got = on_backend(request, backend, lambda b: outputs_and_grads(_sr, inp, ("query", "ref"), b))
    for a, b in zip(got[1:], want[1:]):
        assert (b.abs() > 0).any() and (b.abs() < 1e-7).any()  # saturated, not zero
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=0)


@F32_F64
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_max_infinite_entry_in_a_ref_that_is_no_maximum(request, backend, device, metric, dtype):
    """An inf entry in a valid ref whose scores are no maximum, among enough refs that the
    compiled backwards skip tiles whose dZ is 0 (the max's: nonzero at a row's maxima only):
    that skip is taken only where every dot of the tile is finite, so the ref's 0 * inf reaches
    dq as in the reference's, and the skipped tiles change nothing (a ref of 150 rows, one class)."""
    inp = _exact_inp(1, 70, 150, 5, 1, dtype, pad=0.0, metric=metric, reduce="max")
    inp["query"] = inp["query"].abs()
    inp["ref"][0, 130, 2] = -INF  # its scores are -inf (dot) or NaN-free cosine of -1 direction: no maximum
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "sigmoid"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_max_backward_over_many_tiles(request, backend, device, metric, activation):
    """float32 max over 3 classes, 150 queries x 200 refs (3 x 4 tiles of 64 each way, and the dr
    pass's query splits): the CUDA and Triton backwards skip a tile pair before its scores unless a
    row's only maximum lies in it (MaxArg), or the row has tied maxima, a NaN max or a non-finite
    dot. Image 0: random, with maxima tied across ref tiles (ref 140 a copy of ref 3, same class),
    a query with a NaN entry (all of its scores NaN) and padding. Images 1 and 2: positive queries
    and every maximum in the first tile of refs (its refs positive and larger, the others negative
    past it), so that every other tile pair is skipped unless the rule keeps it: in image 1 a valid
    ref (100) with a -inf entry, no maximum (its dots all -inf, never NaN), whose 0 * -inf puts NaN
    in every row's dq in the reference's product; in image 2 class 0's maximum in every row tied
    between ref 3 and ref 140, each taking half; against the reference on the same values."""
    # dot's sigmoid on z = q.r / 16: float32 would round the larger scores' sigmoids to 1 (ties)
    scale = 1.0 / 16 if metric == "dot" and activation == "sigmoid" else 1.0
    inp = _exact_inp(3, 150, 200, 5, 3, torch.float32, pad=0.1, metric=metric, reduce="max", activation=activation,
                     scale=scale)
    q, r, lab = inp["query"], inp["ref"], inp["ref_labels"]
    r[0, 140], lab[0, 140] = r[0, 3], lab[0, 3].clamp_min(0)
    lab[0, 3] = lab[0, 140]
    q[0, 70, 1] = NAN
    q[1:] = q[1:].abs() + 0.125
    r[1:, :64] = r[1:, :64].abs() + 4.0
    r[1:, 64:] = -r[1:, 64:].abs() - 0.125
    r[1, 100, 2], lab[1, 100] = -INF, 0
    lab[1] = lab[1].clamp_max(1)  # class 2 empty in image 1
    lab[1, :2] = torch.tensor([0, 1])
    r[2, 3], r[2, 140], lab[2, 3], lab[2, 140] = 16.0, 16.0, 0, 0
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_max_backward_takes_the_forwards_maxima(request, backend, device, metric):
    """float32 max, 2 images of 150 queries (3 row tiles of 64, 10 Triton blocks of 16) x 100 refs,
    2 classes: the CUDA and Triton forwards keep each row's only maximum in aux for the backward
    (MaxArg), which recomputes only the row tiles (blocks) with a kAny row. Image 0: one tie, row
    100's class-1 maximum shared by refs 5 and 81 (its tile or block recomputed and through the tile
    passes, the others taken from the forward); image 1: no tie (on CUDA the sparse backward, from
    the forward's maxima alone; on Triton no block recomputed).
    Every other maximum is unique by a relative gap of at least 1e-6 (asserted), so float32 and
    the float64 reference agree on which ref it is."""
    q, r, lab = _kept_max_inputs(metric)
    inp = {"query": q, "ref": r, "ref_labels": lab, "num_classes": 2, "metric": metric, "reduce": "max"}
    agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)


def _kept_max_inputs(metric="dot"):
    """float32 (query, ref, ref_labels): 2 images of 150 queries x 100 refs, 2 classes, entries
    multiples of 1/8. Image 0: row 100's class-1 maximum tied between refs 5 and 81; every other
    class maximum of both images unique by a relative gap of at least 1e-6 (asserted for `metric`)."""
    g = torch.Generator().manual_seed(2)
    q = (torch.rand(2, 150, 4, generator=g, dtype=torch.float64) * 32).round() / 8 + 0.125
    r = (torch.rand(2, 100, 4, generator=g, dtype=torch.float64) * 32).round() / 8 + 0.125
    lab = torch.arange(100).remainder(2).repeat(2, 1)
    q[0, :, 0], r[0, :, 0] = 0.0, 0.0
    r[0, 5] = r[0, 81] = torch.tensor([16.0, 0.0, 0.0, 0.0])
    q[0, 100] = torch.tensor([16.0, 0.125, 0.125, 0.125])
    s = q @ r.transpose(1, 2)
    if metric == "cosine":
        s = s / (q.norm(dim=-1)[..., None] * r.norm(dim=-1)[:, None, :])
    close = []
    for b in range(2):
        for c in range(2):
            top = s[b][:, lab[b] == c].topk(2, dim=1).values
            close += [(b, i, c) for i in torch.nonzero((top[:, 0] - top[:, 1]) < 1e-6 * top[:, 0].abs()).flatten().tolist()]
    assert close == [(0, 100, 1)]
    return q.float(), r.float(), lab


@pytest.mark.parametrize("variant", [p for p in DIRECT_VARIANTS if p.values[0] in ("triton", "emulated")])
def test_max_backward_takes_only_its_own_kept_maxima(request, variant):
    """The float32 max's forward on CUDA keeps each row's MaxArg in aux as -(j + 1), the Triton one as
    -(j + 1.5) (IEEE float32: a code per arithmetic, never an integer); each backward takes the
    maxima of the rows where it reads its own code from the forward's `out` instead of recomputing
    them (all but the tile or block of row 100, whose tie is a count), and recomputes every other row.
    Shown on CUDA with `out` one ulp off everywhere: with its own codes the gradient then misses
    the maxima of queries 0-63 (taken rows: the tile passes' `s == max` is against those bits) and
    not row 100's. Triton's gradient test reads a taken row's code itself (its only maximum takes
    the gradient by index, whatever `out` holds: with the sigmoid that is sigmoid(max z)), so there
    codes naming other refs send the taken rows' gradient astray and not row 100's. With the other
    variant's codes, or plain tie counts (the CPU's aux), every row is recomputed and the gradient
    is the CPU backend's."""
    q, r, lab = (t[:1] for t in _kept_max_inputs())  # image 0: the tie in row 100
    args = (2, "dot", 1.0, 0.0, False, "max", 1.0, 1e-7)
    ops = torch.ops.pixelkernels
    g = torch.rand(1, 150, 2, generator=torch.Generator().manual_seed(3)) + 0.5
    out_cpu, aux_cpu, _ = ops.similarity_reduce(q, r, lab, *args, None, None)
    want = ops.similarity_reduce_backward(g, q, r, lab, out_cpu, aux_cpu, *args, None)[:2]
    if variant == "emulated":
        emu = request.getfixturevalue("emu")
        out, aux, _ = emu.similarity_reduce(q, r, lab, *args, None, None)
        j = torch.where(aux < 0, -aux - 1, -1.0)

        def backward(o, a):
            return emu.similarity_reduce_backward(g, q, r, lab, o, a, *args, None)[:2]

        other = torch.where(j >= 0, -(j + 1.5), aux)  # Triton's codes
    else:
        dev = torch.device(TRITON_DEVICE)
        out, aux, _ = (t.cpu() for t in ops.similarity_reduce_triton(q.to(dev), r.to(dev), lab.to(dev), *args, None, None))
        j = torch.where(aux < 0, -aux - 1.5, -1.0)

        def backward(o, a):
            res = ops.similarity_reduce_backward_triton(g.to(dev), q.to(dev), r.to(dev), lab.to(dev), o.to(dev),
                                                        a.to(dev), *args, None)  # fmt: skip
            return [t.cpu() for t in res[:2]]

        other = torch.where(j >= 0, -(j + 1), aux)  # CUDA's codes
    assert torch.equal(out, out_cpu)  # exact dots
    kept = torch.ones_like(aux, dtype=torch.bool)
    kept[0, 100, 1] = False  # the tie: its count, 2
    assert torch.equal(j >= 0, kept) and torch.equal(j, j.round()) and aux[0, 100, 1] == 2
    for a, b in zip(backward(out, aux), want):
        assert_close(a, b, torch.float32)
    off = torch.nextafter(out, torch.full_like(out, float("inf")))
    if variant == "emulated":
        dq, _ = backward(off, aux)
        assert dq[0, :64].abs().max() == 0  # taken from `off`: no score equals its maximum
    else:
        K = r.shape[1]
        dq, _ = backward(off, torch.where(j >= 0, -(((j + 1) % K) + 1.5), aux))  # each code the next ref
        assert not torch.allclose(dq[0, :64], want[0][0, :64])  # taken: the named refs take the gradient
    assert_close(dq[0, 100], want[0][0, 100], torch.float32)  # recomputed
    for a_other in (other, aux_cpu):
        for a, b in zip(backward(off, a_other), want):
            assert_close(a, b, torch.float32)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("dtype,reduce,launches", [(torch.float32, "sum", 3), (torch.float32, "max", 4),
                                                   (torch.float64, "sum", 2), (torch.float64, "max", 3)])
def test_backward_launches_emulated(emu, metric, dtype, reduce, launches):
    """The CUDA backward is the tables launch, for max the recomputation of the rows the forward's
    kept maxima do not cover, and the gradient: float32 one launch a side, the max's images without
    a tied maximum (image 1 here) taking their sparse rows inside those launches (a warp a row or
    ref), the one with a tie (image 0) the tile passes; float64 one launch for both sides, summed in
    the gradients themselves (the query's D-major here). Against the CPU backend in float64."""
    q, r, lab = _kept_max_inputs()
    q = q.to(dtype).transpose(1, 2).contiguous().transpose(1, 2)  # D-major, as label_transfer's map
    r = r.to(dtype)
    args = (2, metric, 1.0, 0.0, False, reduce, 1.0, 1e-7)
    ops = torch.ops.pixelkernels
    g = (torch.rand(2, 150, 2, generator=torch.Generator().manual_seed(5)) + 0.5).to(dtype)
    wide = (g.double(), q.double(), r.double(), lab)
    want = ops.similarity_reduce_backward(*wide, *ops.similarity_reduce(*wide[1:], *args, None, None)[:2], *args,
                                          None)[:2]  # fmt: skip
    out, aux, _ = emu.similarity_reduce(q, r, lab, *args, None, None)
    before = int(emu.launch_count())
    got = emu.similarity_reduce_backward(g, q, r, lab, out, aux, *args, None)[:2]
    assert int(emu.launch_count()) - before == launches
    assert got[0].stride() == q.stride()  # written in the query's layout
    for a, b in zip(got, want):
        assert_close(a.double(), b, dtype)


@pytest.mark.parametrize("backend,device", [p for p in WITH_EMULATED if p.id in ("cpu", "triton", "cuda-emulated", "cuda")])
def test_long_sums_do_not_drift(request, backend, device):
    """dq = Σ_j r_j over 102 tiles of 32 refs (dot, sum, one class): a first tile that sums to
    2^24, 100 tiles of 0.375 each, a last of -2^24, every tile's sum exact in float32. A float32
    running sum loses each 0.375 against 2^24 (the Triton kernels did, 2026-11-28: pair_bce's
    grad y drifted 1.7e-3 over 5.8M rows on the H200); the answer is 37.5. The GPU kernels' running
    sums are float64 (CUDA's second product, Triton's accumulators), the CPU backend's every
    step (its float32 GEMM tiles gave 44 here until 2026-11-30)."""
    tiles = [2.0**19] * 32 + [3.0 / 256] * (32 * 100) + [-(2.0**19)] * 32
    ref = torch.tensor(tiles, dtype=torch.float32, device=device)[None, :, None]
    query = torch.ones(1, 1, 1, dtype=torch.float32, device=device, requires_grad=True)
    labels = torch.zeros(1, ref.shape[1], dtype=torch.int64, device=device)

    def grad(b):
        out = pk.similarity_reduce(query, ref, labels, 1, backend=b)
        return torch.autograd.grad(out.sum(), query)[0]

    got = on_backend(request, backend, grad)
    assert got.item() == 37.5


@pytest.mark.parametrize("reduce", ["sum", "max", "softmax"])
def test_cpu_float32_is_float64_rounded_once(reduce):
    """The CPU backend computes float32 inputs in float64 and rounds once, so the cases float32
    tiles cannot get within SPEC §4 meet it: cosine at scale 40, whose gradient
    (q - r̂ sim |q|) A subtracts two near-equal terms and whose class sums cancel (with float32
    tiles 7.3 % of these cases missed for sum, benchmarks/results/similarity_reduce_f32_scale40_2026-11-30.md;
    the fresh-seed fuzz found them). 200 random cases: 3 queries, 1-3 refs of one class, D = 2-4
    (that note's), then 2-5 refs of two classes, some ignored, a weighted loss."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        one = seed < 100
        K, D = int(torch.randint(1, 4, (1,), generator=g)) + (0 if one else 2), int(torch.randint(2, 5, (1,), generator=g))
        q, r = torch.randn(1, 3, D, generator=g), torch.randn(1, K, D, generator=g)
        lab = torch.zeros(1, K, dtype=torch.int64) if one else torch.randint(-1, 2, (1, K), generator=g)
        w = torch.ones(1, 3, 2, dtype=torch.float64) if one else torch.randn(1, 3, 2, generator=g, dtype=torch.float64)
        kw = dict(metric="cosine", scale=40.0, reduce=reduce, temperature=0.5)

        def run(qv, rv, b):
            qv, rv = qv.clone().requires_grad_(), rv.clone().requires_grad_()
            out = pk.similarity_reduce(qv, rv, lab, 2, backend=b, **kw)
            finite = torch.where(out.isfinite(), out, 0)  # max: an empty class is -inf
            return (out, *torch.autograd.grad((finite * w.to(out)).sum(), (qv, rv)))

        for got, want in zip(run(q, r, "cpu"), run(q.double(), r.double(), "reference")):
            assert_close(got.double(), want, torch.float32, msg=f"seed {seed}, K={K} D={D}")


@pytest.mark.parametrize("eps", [1e-7, 0.0])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_cosine_weight_gradient_does_not_cancel(request, backend, device, eps):
    """A weight's gradient through the cosine, w q·r / (|q| |w r| + eps), is q·r eps / (|q| |w r| +
    eps)^2 (scale-invariant in w but for eps): formed as ref·G, the difference of two terms
    |q| |w r| / eps times larger, it came out ~1e-12 off in float64 at w = 1e-3 (prior_mask's soft
    mask; the reference's autograd and the Triton backend did; the CPU and CUDA kernels sum it per
    pair), and not 0 with eps = 0. Float64, sum: against that formula summed directly, to 1e-14."""
    g = torch.Generator().manual_seed(1)
    q, r = torch.randn(1, 9, 3, generator=g, dtype=torch.float64), torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([[1e-3, 0.02, 0.5, 3.0]], dtype=torch.float64)
    lab = torch.tensor([[0, 1, 0, 1]])
    go = torch.randn(1, 9, 2, generator=g, dtype=torch.float64)

    def grad_w(b):
        wv = w.to(device).clone().requires_grad_()
        out = pk.similarity_reduce(q.to(device), r.to(device), lab.to(device), 2, metric="cosine", eps=eps,
                                   ref_weight=wv, backend=b)  # fmt: skip
        return torch.autograd.grad((out * go.to(device)).sum(), wv)[0].cpu()

    got = on_backend(request, backend, grad_w)
    dot = q @ r.transpose(1, 2)  # (1, 9, 4)
    den = q.norm(dim=-1)[..., None] * (w * r.norm(dim=-1))[:, None, :] + eps
    want = (go.gather(2, lab[:, None, :].expand(1, 9, 4)) * dot * eps / den**2).sum(1)
    assert float((got - want).abs().max()) <= 1e-14 * (1 + float(want.abs().max())), (backend, got, want)


def test_cpu_softmax_aux_normalises_its_own_m():
    """The softmax's aux (m, log l) on the CPU backend in float32: log l is taken against m as
    stored (rounded), so exp(s / T - m - log l) sums to 1 over a row's valid refs within log l's
    own rounding, not m's (half an ulp of |s / T|: 3.8e-6 at s / T = 80, which every weight read
    from the pair would carry). Cosine at scale 40, T = 0.5; the sum in float64 from the inputs."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(1, 200, 3, generator=g), torch.randn(1, 5, 3, generator=g)
    lab = torch.tensor([[0, 1, -1, 0, 1]])
    args = (2, "cosine", 40.0, 0.0, False, "softmax", 0.5, 1e-7)
    _, aux, _ = torch.ops.pixelkernels.similarity_reduce(q, r, lab, *args, None, None)
    qd, rd = q.double(), r.double()[:, lab[0] >= 0]
    den = qd.norm(dim=-1)[..., None] * rd.norm(dim=-1)[:, None, :] + 1e-7
    z = 40.0 * (qd @ rd.transpose(1, 2)) / den / 0.5
    total = (z - aux[..., :1].double() - aux[..., 1:].double()).exp().sum(-1)
    assert float((total - 1).abs().max()) < 5e-7, float((total - 1).abs().max())


def test_cpu_float32_softmax_gradient_reads_no_rounded_out():
    """The softmax's h = g - Σ_c g_c o_c on the CPU backend takes the class probabilities o in
    float64 (its backward's first pass), not from the float32 out: with equal refs in every class
    the query's gradient Σ_j p_j h_j r_j / T is 0 exactly (the terms cancel), and h from the rounded
    out left that rounding times |r| / T: 5e-6 at T = 1/64 (the fuzz's single kind found it,
    label_transfer). Random values, 2-5 classes a ref each, the refs of an image equal."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        C, D = int(torch.randint(2, 6, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
        q = torch.rand(2, 3, D, generator=g) + 0.5
        r = (torch.rand(2, 1, D, generator=g) * 3).expand(2, C, D)
        lab = torch.randperm(C, generator=g)[None].expand(2, C)
        w = torch.randn(2, 3, C, generator=g, dtype=torch.float64)

        def run(qv, rv, b):
            qv, rv = qv.clone().requires_grad_(), rv.clone().requires_grad_()
            out = pk.similarity_reduce(qv, rv, lab, C, reduce="softmax", temperature=1 / 64, backend=b)
            return (out, *torch.autograd.grad((out * w.to(out)).sum(), (qv, rv)))

        got, want = run(q, r, "cpu"), run(q.double(), r.double(), "reference")
        assert float(want[1].abs().max()) < 1e-12, (seed, want[1])
        for a, b in zip(got, want):
            assert_close(a.double(), b, torch.float32, msg=f"seed {seed}, C={C} D={D}")


@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.id in ("cpu", "cuda", "triton")])
def test_ref_gradient_over_many_queries(backend, device, reduce):
    """d ref sums over every query: 1e5 random queries against 2 refs (cosine, sigmoid for mean)
    within SPEC §4 of the float64 reference. The CPU backend's float32 group partials drifted
    to 1.6e-5 relative here (4.7e-5 for max; 7.9e-4 at 1e6 queries) before they were double."""
    if backend == "triton" and device == "cpu":
        pytest.skip("1e5 queries: too slow for the Triton interpreter")
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(1, 100_000, 3, generator=g), torch.randn(1, 2, 3, generator=g)
    lab = torch.tensor([[0, 1]])
    act = "sigmoid" if reduce == "mean" else None
    w = torch.randn(1, 100_000, 2, generator=g)

    def grad_ref(qv, rv, b):
        rv = rv.clone().requires_grad_()
        out = pk.similarity_reduce(qv, rv, lab.to(rv.device), 2, metric="cosine", activation=act, reduce=reduce,
                                   backend=b)  # fmt: skip
        return torch.autograd.grad((out * w.to(out)).sum(), rv)[0]

    got = grad_ref(q.to(device), r.to(device), backend)
    assert_close(got, grad_ref(q.double(), r.double(), "reference"), torch.float32)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_sigmoid_max_is_decided_on_the_logits(request, backend, device):
    """The max of sigmoid scores is the sigmoid of the max logit: in float32 s rounds to 1 past
    z ~ 18, so refs of z = 18 and z = 40 tie in s but not in z, and the gradient goes to the z = 40
    ref alone (the float64 answer: the z = 18 ref's share, e^-18 scale q / 2, was 2.4e-6 here
    where SPEC §4 allows 1e-6). Equal logits (class 1) still split it evenly; an empty class (2)
    stays -inf. The fuzz found it (a float16 map on Triton, max of sigmoid at scale 40)."""
    q = torch.tensor([[[8.0, 0.0], [8.0, 0.25]]])  # z of refs 0, 1: 18, 40 and 23, 30
    r = torch.tensor([[[18 / 320, 0.5], [40 / 320, -1.0], [0.05, 0.25], [0.05, 0.25]]])
    inp = {"query": q, "ref": r, "ref_labels": torch.tensor([[0, 0, 1, 1]]), "num_classes": 3, "metric": "dot",
           "scale": 40.0, "activation": "sigmoid", "reduce": "max"}  # fmt: skip
    out, gq, gr = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)
    assert float(gr[0, 0].abs().max()) == 0.0, (backend, gr[0, 0])  # not a maximum
    assert torch.equal(gr[0, 2], gr[0, 3]), (backend, gr)  # a tie of logits: equal shares
    assert bool((out[..., 0] == 1.0).all()), (backend, out)  # sigmoid(40) is 1 in float32
    assert bool((out[..., 2] == -float("inf")).all()), (backend, out)  # no ref: the max over nothing


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_sigmoid_max_backward_from_kept_maxima(request, backend, device):
    """The float32 max's forward keeps each row's only maximum (MaxArg) in aux and the backward
    takes those rows' maxima instead of recomputing them; with the sigmoid the forward's out is
    sigmoid(max z) while the gradient tests z: CUDA forms the kept max's z again from its one
    dot, Triton's test reads MaxArg (a mutant that compares with the kept out sends no gradient).
    Random scores (no tie), two 64-row tiles, every backend against the reference."""
    inp = _op_inp(2, 70, 40, 6, 3, metric="cosine", activation="sigmoid", reduce="max", scale=3.0, pad=0.0)(
        "cpu", torch.float32)  # fmt: skip
    got = agrees_with_reference(request, _sr, inp, ("query", "ref"), backend, device)
    assert float(got[1].abs().max()) > 1e-3 and float(got[2].abs().max()) > 1e-3, backend  # gradients, not zeros

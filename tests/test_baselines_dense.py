"""The best-PyTorch baselines of the dense-similarity family (pixelkernels/baselines:
similarity_reduce, label_transfer, prior_mask, dense_similarity_loss) against their references,
run in the same dtype: values and gradients (for a random grad_output) in float64 (rtol 1e-10)
and float32 (rtol 1e-5), on awkward inputs: empty classes, an image whose refs are all ignored,
labels outside [0, C), NaN/inf in ignored slots, N = K = 1, D = 1 and 130, B = 1 and 3, max
ties, zero vectors; for the loss, the running statistics over training steps and eval."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from pixelkernels import baselines
from pixelkernels import reference as ref
from pixelkernels.reference.similarity_reduce import in_row_dtype

DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}
METRICS, ACTIVATIONS, REDUCES = ("dot", "cosine"), (None, "sigmoid"), ("sum", "mean", "max", "softmax")
MODES = list(itertools.product(METRICS, ACTIVATIONS, REDUCES))
KW = {"scale": 0.7, "bias": -0.2, "temperature": 0.5}


def _randn(g, *shape, scale=1.0):
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _run(fn, make, dtype, kwargs):
    """-> outputs, gradients of the float leaves for a fixed random grad_output (zeros if unused)."""
    args = make(dtype)
    out = fn(*args, **kwargs)
    out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    leaves = [
        a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor) and a.requires_grad
    ]
    diff = [o for o in out if o.requires_grad]
    g = torch.Generator().manual_seed(123)
    gouts = [_randn(g, *o.shape).to(o.dtype) for o in diff]
    grads = torch.autograd.grad(diff, leaves, gouts, allow_unused=True) if diff and leaves else ()
    return out, [torch.zeros_like(t) if d is None else d for t, d in zip(leaves, grads)]


def _check(op, make, dtype, msg="", grads=True, **kwargs):
    """The baseline against the reference, both in `dtype` (arithmetic included), outputs then
    (unless not grads) gradients."""
    # a float32 baseline is a composition of float32 torch ops: compared with the reference's
    # arithmetic in the same dtype (it computes in float64 and rounds once by default)
    with in_row_dtype() if dtype != torch.float64 else contextlib.nullcontext():
        want, want_g = _run(getattr(ref, op), make, dtype, kwargs)
    got, got_g = _run(getattr(baselines, op), make, dtype, kwargs)
    assert len(got) == len(want) and len(got_g) == len(want_g)
    for what, pairs in (("output", zip(got, want)), ("gradient", zip(got_g, want_g) if grads else ())):
        for i, (a, b) in enumerate(pairs):
            assert a.dtype == b.dtype and a.shape == b.shape, f"{op} {msg} {what} {i}"
            assert not a.isnan().any(), f"{op} {msg} {what} {i}: NaN"
            torch.testing.assert_close(
                a, b, **TOL[dtype], msg=lambda m, at=f"{op} {msg} {what} {i}": f"{at}: {m}"
            )
    return got, want


# ------------------------------------------------------------------------------ similarity_reduce
def _sr_inputs(B, N, K, D, C, *, seed=0, awkward=True):
    """query, ref, labels, C. Awkward: ref 0 padding (-1) holding NaN, ref 1 out of range holding
    inf, class C-1 empty in image 0, the last image all ignored (B > 1), a zero query vector."""

    def make(dtype):
        g = torch.Generator().manual_seed(seed)
        s = D**-0.25  # scores of order 1 for any D
        q, r = _randn(g, B, N, D, scale=s), _randn(g, B, K, D, scale=s)
        lab = torch.randint(0, C, (B, K), generator=g)
        if awkward:
            q[0, 0] = 0.0
            lab[0][lab[0] == C - 1] = 0
            if K >= 3:
                lab[:, 0], r[:, 0] = -1, float("nan")
                lab[:, 1], r[:, 1, 0] = C + 2, float("inf")
            if B > 1:
                lab[-1] = -1
        return [q.to(dtype).requires_grad_(True), r.to(dtype).requires_grad_(True), lab, C]

    return make


@DTYPES
@pytest.mark.parametrize("metric,activation,reduce", MODES, ids=["-".join(map(str, m)) for m in MODES])
def test_similarity_reduce_modes(metric, activation, reduce, dtype):
    got, _ = _check(
        "similarity_reduce", _sr_inputs(3, 5, 11, 4, 4), dtype,
        metric=metric, activation=activation, reduce=reduce, **KW,
    )  # fmt: skip
    out = got[0]
    empty = {"sum": 0.0, "mean": 0.0, "max": float("-inf"), "softmax": 0.0}[reduce]
    assert (out[0, :, -1] == empty).all()  # the empty class
    assert (out[-1] == (float("-inf") if reduce == "max" else 0.0)).all()  # the all-ignored image


SHAPES = {
    "N1-K1": (3, 1, 1, 3, 2),
    "D1": (2, 4, 6, 1, 3),
    "D130": (3, 6, 10, 130, 3),
    "B1": (1, 5, 7, 4, 3),
    "K0": (2, 3, 0, 4, 2),
}


@DTYPES
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_similarity_reduce_shapes(shape, dtype):
    for metric, activation, reduce in MODES:
        kw = {"metric": metric, "activation": activation, "reduce": reduce}
        _check("similarity_reduce", _sr_inputs(*shape, seed=1), dtype, msg=str(kw), **kw)


@DTYPES
def test_similarity_reduce_max_ties(dtype):
    """Duplicated refs of one class tie exactly: the gradient is split evenly between them."""

    def make(dtype):
        q, r, lab, C = _sr_inputs(2, 4, 6, 3, 2, awkward=False)(torch.float64)
        r = r.detach().clone()
        r[:, 3], lab[:, 3] = r[:, 2], lab[:, 2]
        return [q.detach().to(dtype).requires_grad_(True), r.to(dtype).requires_grad_(True), lab, C]

    for metric, activation in itertools.product(METRICS, ACTIVATIONS):
        kw = {"metric": metric, "activation": activation, "reduce": "max"}
        _check("similarity_reduce", make, dtype, msg=str(kw), **kw)


@DTYPES
def test_similarity_reduce_tensor_affine(dtype):
    """scale and bias as tensors (a folded batch-norm): their gradients too."""
    make = _sr_inputs(2, 4, 7, 3, 3)
    for reduce in REDUCES:
        scale = torch.tensor(0.6, dtype=dtype, requires_grad=True)
        bias = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        _check(
            "similarity_reduce",
            make,
            dtype,
            msg=reduce,
            scale=scale,
            bias=bias,
            activation="sigmoid",
            reduce=reduce,
        )


# --------------------------------------------------------------------------------- label_transfer
def _transfer_inputs(B, D, H, W, K, C, *, channels_last=False):
    def make(dtype):
        q, r, lab, _ = _sr_inputs(B, H * W, K, D, C, seed=2)(torch.float64)
        q = q.detach().transpose(1, 2).reshape(B, D, H, W).to(dtype)
        if channels_last:
            q = q.contiguous(memory_format=torch.channels_last)
        return [q.requires_grad_(True), r.detach().to(dtype).requires_grad_(True), lab, C]

    return make


@DTYPES
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_label_transfer(channels_last, dtype):
    """Every mode (dot + sum/mean without activation: the baseline's class-sum path); labels equal
    wherever the reference's best class wins by more than the tolerance."""
    make = _transfer_inputs(3, 5, 3, 4, 12, 4, channels_last=channels_last)
    for metric, activation, reduce in MODES:
        kw = {"metric": metric, "activation": activation, "reduce": reduce, **KW}
        got, want = _check("label_transfer", make, dtype, msg=str(kw), **kw)
        (labels, _), (want_labels, scores) = got, want
        assert labels.dtype == torch.int64
        top2 = scores.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4
        assert torch.equal(labels[clear], want_labels[clear]), kw


# ------------------------------------------------------------------------------------- prior_mask
def _prior_inputs(B, C, Hq, Wq, Hs, Ws, *, relu=True, soft=False):
    """Features (non-negative like PFENet's, or signed), a binary or soft mask with grad; the last
    image's mask is all zero (B > 1), one query vector is zero."""

    def make(dtype):
        g = torch.Generator().manual_seed(3)
        q, s = _randn(g, B, C, Hq, Wq), _randn(g, B, C, Hs, Ws)
        if relu:
            q, s = q.relu(), s.relu()
        q[0, :, 0, 0] = 0.0
        m = torch.rand(B, Hs, Ws, generator=g, dtype=torch.float64)
        m = m if soft else (m < 0.5).double()
        if B > 1:
            m[-1] = 0.0
        return [t.to(dtype).requires_grad_(True) for t in (q, s, m)]

    return make


PRIORS = {
    "relu-binary": (3, 5, 4, 5, 3, 4),
    "signed-soft": (2, 4, 3, 3, 4, 2, {"relu": False, "soft": True}),
    "B1-C1": (1, 1, 3, 4, 2, 3),
    "B1-C2": (1, 2, 3, 4, 2, 3),
    "C130": (2, 130, 3, 2, 2, 3),
    "one-pixel": (2, 3, 1, 1, 1, 1, {"relu": False}),
}


@DTYPES
@pytest.mark.parametrize("case", PRIORS.values(), ids=PRIORS.keys())
def test_prior_mask(case, dtype):
    """With one channel the cosine is ±(1 - O(eps)) and its gradient O(eps), the difference of two
    O(1/||q||) terms: pure rounding in float32, where only the values are compared."""
    kw = case[6] if len(case) > 6 else {}
    grads = case[1] > 1 or dtype == torch.float64
    _check("prior_mask", _prior_inputs(*case[:6], **kw), dtype, grads=grads)


# -------------------------------------------------------------------------- dense_similarity_loss
def _loss_inputs(B, Kx, Ky, D, C, *, seed=4, ignore=0.3, tensor_affine=False, one_pair=False):
    """x, x_labels, y, y_labels (-1 ignored, NaN/inf in the ignored slots), and weight/bias as
    Python numbers or leaves. one_pair: only x[0, 0] and y[0, 0] are valid (n = 1)."""

    def make(dtype):
        g = torch.Generator().manual_seed(seed)
        x, y = _randn(g, B, Kx, D, scale=D**-0.25) + 0.3, _randn(g, B, Ky, D, scale=D**-0.25)
        xl, yl = torch.randint(0, C, (B, Kx), generator=g), torch.randint(0, C, (B, Ky), generator=g)
        xl[torch.rand(B, Kx, generator=g) < ignore] = -1
        yl[torch.rand(B, Ky, generator=g) < ignore] = -1
        if one_pair:
            xl[:, 1:], yl[:, 1:], xl[1:], yl[1:] = -1, -1, -1, -1
        x[xl < 0] = float("nan")
        y[yl < 0] = float("inf")
        args = [x.to(dtype).requires_grad_(True), xl, y.to(dtype).requires_grad_(True), yl]
        if tensor_affine:
            args += [
                torch.tensor([0.8], dtype=dtype, requires_grad=True),
                torch.tensor(-0.4, dtype=dtype, requires_grad=True),
            ]
        else:
            args += [0.8, -0.4]
        return args

    return make


LOSSES = {
    "B3": (3, 6, 5, 4, 3, {}),
    "B1-D1": (1, 7, 4, 1, 2, {}),
    "D130-affine": (2, 5, 6, 130, 3, {"tensor_affine": True}),
    "K1": (2, 1, 1, 3, 2, {"ignore": 0.0}),  # two valid pairs
    "one-pair": (2, 3, 2, 3, 2, {"one_pair": True}),  # n = 1, which F.batch_norm refuses
}


@DTYPES
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval-no-stats"])
@pytest.mark.parametrize("case", LOSSES.values(), ids=LOSSES.keys())
def test_dense_similarity_loss(case, training, dtype):
    _check("dense_similarity_loss", _loss_inputs(*case[:5], **case[5]), dtype, training=training)


STATS = ("running_mean", "running_var")


def _stats(dtype):
    return torch.tensor([0.5], dtype=dtype), torch.tensor([2.0], dtype=dtype)


@DTYPES
def test_dense_similarity_loss_running_stats(dtype):
    """Two training steps on different batches update running_mean/var in place like the
    reference's; eval then normalises with them."""
    stats = {"ref": _stats(dtype), "base": _stats(dtype)}
    steps = [(_loss_inputs(3, 6, 5, 4, 3, seed=5), True), (_loss_inputs(3, 6, 5, 4, 3, seed=6), True)]
    steps.append((_loss_inputs(2, 4, 5, 4, 3, seed=7), False))
    for k, (make, training) in enumerate(steps):
        # Each implementation updates its own copy of the stats.
        kw = {"training": training}
        got = _run(baselines.dense_similarity_loss, make, dtype, {**kw, **dict(zip(STATS, stats["base"]))})
        want = _run(ref.dense_similarity_loss, make, dtype, {**kw, **dict(zip(STATS, stats["ref"]))})
        for a, b in zip([*got[0], *got[1], *stats["base"]], [*want[0], *want[1], *stats["ref"]]):
            torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m, k=k: f"step {k}: {m}")
    assert not torch.equal(stats["base"][0], _stats(dtype)[0])  # the stats did move


@DTYPES
@pytest.mark.parametrize("pairs", [0, 1], ids=["no-pair", "one-pair"])
def test_dense_similarity_loss_degenerate_running_stats(pairs, dtype):
    """n = 0 leaves both stats; n = 1 moves running_mean only; the loss is BCE(bias, t)."""
    base = _loss_inputs(2, 3, 2, 3, 2, ignore=0.0)

    def make(dtype):
        args = base(dtype)
        args[1][:] = -1
        if pairs:
            args[1][1, 0], args[3][:, 1:] = 0, -1
        return args

    results = {}
    for name, fn in (("base", baselines.dense_similarity_loss), ("ref", ref.dense_similarity_loss)):
        rm, rv = _stats(dtype)
        out, grads = _run(fn, make, dtype, {"running_mean": rm, "running_var": rv})
        results[name] = [*out, *grads, rm, rv]
    for a, b in zip(results["base"], results["ref"]):
        torch.testing.assert_close(a, b, **TOL[dtype])
    assert torch.equal(results["base"][-1], _stats(dtype)[1])
    assert torch.equal(results["base"][-2], _stats(dtype)[0]) == (pairs == 0)

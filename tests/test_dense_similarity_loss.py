"""dense_similarity_loss (SPEC §3.3; seed 003 §2.2), the reference and the op on every backend: it
equals torch.nn.BatchNorm1d(1) on the valid entries of Ψ as one (n, 1) batch followed by
torch.nn.BCEWithLogitsLoss (values, gradients for x, y, weight and bias, running statistics over
several training steps, eval mode), and so does nn.DenseSimilarityLoss; the closed-form
pair_moments equal the materialised statistics; the edge cases of its docstring; the contract
row (opcheck, compile, fake CUDA, fuzz, ...) of the op."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import BACKENDS, WITH_EMULATED, on_backend
from contract import Contract, pair_sides, suite
from fuzz import Choice, Floats, Labels

import pixelkernels as pk
from pixelkernels.reference.dense_similarity_loss import (
    dense_similarity_loss,
    materialized_moments,
    pair_moments,
)
from pixelkernels.reference.stochastic_pool import stochastic_pool
from pixelkernels.testing import assert_close

F64 = torch.float64


def _case(B, Kx, Ky, D, C=3, pattern="random", seed=0, dtype=F64, offset=0.0):
    """x, x_labels, y, y_labels. pattern: random (some -1), one (a single class: every target 1),
    image0_ignored (every label of image 0 is -1), none (no label at all)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, Kx, D, generator=g, dtype=F64) + offset).to(dtype)
    y = (torch.randn(B, Ky, D, generator=g, dtype=F64) + offset).to(dtype)
    xl = torch.randint(-1, C, (B, Kx), generator=g)
    yl = torch.randint(-1, C, (B, Ky), generator=g)
    if pattern == "one":
        xl, yl = torch.zeros_like(xl), torch.zeros_like(yl)
    elif pattern == "image0_ignored":
        xl[0], yl[0] = -1, -1
    elif pattern == "none":
        xl, yl = torch.full_like(xl, -1), torch.full_like(yl, -1)
    else:
        assert pattern == "random", pattern
    return x, xl, y, yl


def _pipeline(x, xl, y, yl, bn):
    """What a user writes with torch.nn: the valid entries of Ψ as an (n, 1) batch, BatchNorm1d,
    BCEWithLogitsLoss on [x_label == y_label]."""
    valid = (xl >= 0)[:, :, None] & (yl >= 0)[:, None, :]
    psi = (x @ y.transpose(1, 2))[valid]
    target = (xl[:, :, None] == yl[:, None, :])[valid].to(x.dtype)
    return torch.nn.BCEWithLogitsLoss()(bn(psi[:, None])[:, 0], target)


def _bn(weight=1.0, bias=0.0):
    bn = torch.nn.BatchNorm1d(1, dtype=F64)
    with torch.no_grad():
        bn.weight.fill_(weight)
        bn.bias.fill_(bias)
    return bn


def _ours(x, xl, y, yl, bn, weight, bias, training, backend="reference", device="cpu"):
    """The op on `backend` (its inputs and running statistics on `device`); the reference by
    default. The running statistics are copied back into bn's."""
    d = torch.device(device)
    rm, rv = bn.running_mean.to(d), bn.running_var.to(d)
    to = (lambda t: t.to(d)) if d.type != "cpu" else (lambda t: t)
    w = to(weight) if isinstance(weight, torch.Tensor) else weight
    b = to(bias) if isinstance(bias, torch.Tensor) else bias
    out = pk.dense_similarity_loss(
        to(x), to(xl), to(y), to(yl), weight=w, bias=b, eps=bn.eps, training=training,
        running_mean=rm, running_var=rv, momentum=bn.momentum, backend=backend,
    )  # fmt: skip
    if d.type != "cpu":
        with torch.no_grad():
            bn.running_mean.copy_(rm)
            bn.running_var.copy_(rv)
    return out


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# (B, Kx, Ky, D, pattern): every case has at least two valid pairs (BatchNorm1d refuses one).
PIPELINE_CASES = [
    (1, 1, 5, 3, "one"),
    (1, 6, 1, 3, "one"),
    (3, 4, 1, 1, "one"),
    (3, 6, 7, 1, "random"),
    (1, 9, 8, 130, "random"),
    (3, 5, 7, 130, "random"),
    (3, 8, 6, 4, "image0_ignored"),
    (2, 13, 11, 17, "one"),
]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("B,Kx,Ky,D,pattern", PIPELINE_CASES)
def test_equals_batchnorm1d_then_bce_with_logits(B, Kx, Ky, D, pattern, backend, device):
    """Values and gradients (x, y, weight, bias) over three training steps with fresh inputs,
    the running statistics after each, then eval mode with the statistics it accumulated."""
    bn = _bn(weight=1.3, bias=-0.2)
    bn_ours = _bn()  # holds our running stats
    w = torch.tensor(1.3, dtype=F64, requires_grad=True)
    b = torch.tensor([-0.2], dtype=F64, requires_grad=True)  # 1-element, as a parameter is
    for step in range(4):
        training = step < 3
        bn.train(training)
        x, xl, y, yl = _case(B, Kx, Ky, D, pattern=pattern, seed=step)
        if pattern != "one" and (((xl >= 0).sum(1) * (yl >= 0).sum(1)).sum() < 2):
            xl[-1, :2], yl[-1, :2] = 0, 1  # keep at least two valid pairs
        x1, y1 = _leaf(x), _leaf(y)
        x2, y2 = _leaf(x.to(device)), _leaf(y.to(device))
        want = _pipeline(x1, xl, y1, yl, bn)
        got = _ours(x2, xl, y2, yl, bn_ours, w, b, training, backend, device)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-12)
        for t in (w, b, bn.weight, bn.bias):
            t.grad = None
        want.backward()
        got.backward()
        torch.testing.assert_close(x2.grad.cpu(), x1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y2.grad.cpu(), y1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(w.grad.reshape(1), bn.weight.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b.grad, bn.bias.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn_ours.running_mean, bn.running_mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(bn_ours.running_var, bn.running_var, rtol=1e-12, atol=1e-14)
    assert not torch.equal(bn.running_var, torch.ones(1, dtype=F64))  # the steps did move them


def test_stochastic_pool_into_the_loss_equals_the_pipeline():
    """The seed's training step: K vectors per class pooled from two maps, then the loss."""
    g = torch.Generator().manual_seed(3)
    ex = torch.randn(2, 8, 9, 10, generator=g, dtype=F64)
    ey = torch.randn(2, 8, 9, 10, generator=g, dtype=F64).contiguous(memory_format=torch.channels_last)
    lx = torch.randint(-1, 4, (2, 9, 10), generator=g)
    ly = torch.randint(-1, 3, (2, 9, 10), generator=g)  # class 3 absent from y: all padding
    x, xl = stochastic_pool(ex, lx, 7, 4, generator=torch.Generator().manual_seed(0))
    y, yl = stochastic_pool(ey, ly, 7, 4, generator=torch.Generator().manual_seed(1))
    bn, bn_ours = _bn(), _bn()
    torch.testing.assert_close(_ours(x, xl, y, yl, bn_ours, 1.0, 0.0, True), _pipeline(x, xl, y, yl, bn))
    torch.testing.assert_close(bn_ours.running_var, bn.running_var)


# ---------------------------------------------------------------------------------------------
# gradcheck


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "B,Kx,Ky,D,pattern", [(1, 1, 3, 2, "one"), (2, 3, 4, 3, "random"), (2, 2, 3, 1, "image0_ignored")]
)
def test_gradcheck(B, Kx, Ky, D, pattern, training):
    x, xl, y, yl = _case(B, Kx, Ky, D, pattern=pattern, seed=5)
    xl[-1, 0], yl[-1, :2] = 0, torch.tensor([0, 1])  # at least two valid pairs, both targets
    w = torch.tensor(0.7, dtype=F64)
    b = torch.tensor([0.3], dtype=F64)
    rm, rv = torch.tensor([0.4], dtype=F64), torch.tensor([2.5], dtype=F64)

    def f(x, y, w, b):
        # Training without running stats: gradcheck calls f many times and must not move them.
        stats = {} if training else {"running_mean": rm, "running_var": rv}
        return dense_similarity_loss(x, xl, y, yl, weight=w, bias=b, training=training, **stats)

    args = tuple(_leaf(t) for t in (x, y, w, b))
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


# ---------------------------------------------------------------------------------------------
# pair_moments: the closed form the kernels use


@pytest.mark.parametrize(
    "B,Kx,Ky,D,pattern",
    [(1, 1, 1, 1, "one"), (1, 1, 6, 130, "random"), (3, 7, 1, 1, "random"), (3, 9, 11, 17, "image0_ignored"),
     (2, 5, 4, 3, "none"), (3, 20, 30, 130, "random")],
)  # fmt: skip
def test_pair_moments_equal_the_materialised_statistics(B, Kx, Ky, D, pattern):
    x, xl, y, yl = _case(B, Kx, Ky, D, pattern=pattern, seed=9, offset=0.5)
    x, y = _leaf(x), _leaf(y)
    xv, yv = xl >= 0, yl >= 0
    got = pair_moments(x, xv, y, yv)
    want = materialized_moments(x @ y.transpose(1, 2), xv[:, :, None] & yv[:, None, :])
    assert got[0].dtype == torch.int64 and got[0] == want[0]
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[2], want[2], rtol=1e-10, atol=1e-12)
    # The same gradients too: a kernel may differentiate the closed form.
    gx1, gy1 = torch.autograd.grad(got[1] + 0.3 * got[2], (x, y))
    gx2, gy2 = torch.autograd.grad(want[1] + 0.3 * want[2], (x, y))
    torch.testing.assert_close(gx1, gx2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gy1, gy2, rtol=1e-10, atol=1e-12)


def test_pair_moments_are_stable_in_float32_when_the_mean_dwarfs_the_spread():
    """|mean| / std ~ 1e3: E[Ψ²] - mean² would lose every digit of the variance in float32."""
    x, xl, y, yl = _case(3, 40, 50, 64, seed=2, offset=4.0)
    x = x.to(torch.float32)
    y = y.to(torch.float32)
    xv, yv = xl >= 0, yl >= 0
    n, mean, var = pair_moments(x, xv, y, yv)
    n64, mean64, var64 = materialized_moments(
        x.double() @ y.double().transpose(1, 2), xv[:, :, None] & yv[:, None, :]
    )
    assert n == n64 and mean.dtype == torch.float32
    assert abs(mean.double() - mean64) <= 1e-5 * abs(mean64)
    assert abs(var.double() - var64) <= 1e-4 * var64
    # The naive form, for the record of why the centred one is used.
    xs = torch.where(xv[..., None], x, 0).sum(1)
    ys = torch.where(yv[..., None], y, 0).sum(1)
    gx = torch.where(xv[..., None], x, 0).transpose(1, 2) @ torch.where(xv[..., None], x, 0)
    gy = torch.where(yv[..., None], y, 0).transpose(1, 2) @ torch.where(yv[..., None], y, 0)
    naive = (gx * gy).sum() / n - ((xs * ys).sum() / n) ** 2
    assert abs(naive.double() - var64) > 10 * abs(var.double() - var64)



def test_statistics_over_millions_of_float32_rows():
    """4M float32 rows of x against 2 of y (GPU_SHAPES' wide_image on the CPU backend): the
    variance within 1e-5 of float64's, and the loss too. The augmented rows' Gram matrices are summed
    over K in float64; the CPU's float32 GEMM summed each entry along K in one accumulator,
    4e-3 off at 5.8M rows, the variance 4e-3 and the loss 7e-4."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(1, 1 << 22, 3, generator=g), torch.randn(1, 2, 3, generator=g)
    xl, yl = torch.randint(0, 2, (1, 1 << 22), generator=g), torch.tensor([[0, 1]])
    var = _moments("cpu", x, xl, y, yl)[6][1]
    var64 = _moments("cpu", x.double(), xl, y.double(), yl)[6][1]
    assert abs(var.double() - var64) <= 1e-5 * var64
    loss = pk.dense_similarity_loss(x, xl, y, yl, weight=1.3, bias=-0.2, backend="cpu")
    loss64 = pk.dense_similarity_loss(x.double(), xl, y.double(), yl, weight=1.3, bias=-0.2, backend="cpu")
    assert abs(loss.double() - loss64) <= 1e-5 * abs(loss64)

# ---------------------------------------------------------------------------------------------
# Edge cases and conventions


def test_no_valid_pair_is_zero_with_zero_gradient_and_leaves_running_stats():
    x, xl, y, yl = _case(3, 4, 5, 6, pattern="none")
    x, y = _leaf(x), _leaf(y)
    w, b = torch.tensor(1.0, dtype=F64, requires_grad=True), torch.tensor(0.0, dtype=F64, requires_grad=True)
    rm, rv = torch.tensor([0.25], dtype=F64), torch.tensor([3.0], dtype=F64)
    loss = dense_similarity_loss(x, xl, y, yl, weight=w, bias=b, running_mean=rm, running_var=rv)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for t in (x, y, w, b):
        assert torch.equal(t.grad, torch.zeros_like(t))
    assert rm.item() == 0.25 and rv.item() == 3.0


def test_a_single_valid_pair_normalises_to_zero_and_keeps_running_var():
    x, xl, y, yl = _case(2, 3, 4, 5, pattern="none")
    xl[1, 2], yl[1, 0] = 1, 1
    x, y = _leaf(x), _leaf(y)
    b = torch.tensor(0.4, dtype=F64, requires_grad=True)
    rm, rv = torch.tensor([0.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    loss = dense_similarity_loss(x, xl, y, yl, weight=2.0, bias=b, running_mean=rm, running_var=rv)
    want = torch.nn.functional.binary_cross_entropy_with_logits(b, torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(y.grad, torch.zeros_like(y))
    torch.testing.assert_close(rm, 0.1 * (x[1, 2] @ y[1, 0]).detach().reshape(1))
    assert rv.item() == 1.0
    with pytest.raises(ValueError, match="more than 1 value"):  # what BatchNorm1d does instead
        torch.nn.BatchNorm1d(1, dtype=F64)(torch.ones(1, 1, dtype=F64))


def test_statistics_are_over_all_images_together():
    """Two images with very different similarity scales: one batch-norm over both, not one per
    image (image 1 alone would normalise to the same logits as image 0)."""
    x, xl, y, yl = _case(2, 4, 5, 3, pattern="one")
    x[1] *= 10.0
    joint = dense_similarity_loss(x, xl, y, yl)
    apart = torch.stack(
        [dense_similarity_loss(x[i : i + 1], xl[i : i + 1], y[i : i + 1], yl[i : i + 1]) for i in range(2)]
    )
    torch.testing.assert_close(joint, _pipeline(x, xl, y, yl, _bn()))
    assert not torch.allclose(joint, apart.mean())


def test_running_stats_none_and_eval_without_them():
    x, xl, y, yl = _case(2, 5, 6, 4)
    train = dense_similarity_loss(x, xl, y, yl, weight=1.5, bias=0.1)
    # Eval without running stats normalises with the batch statistics (track_running_stats=False).
    evaluated = dense_similarity_loss(x, xl, y, yl, weight=1.5, bias=0.1, training=False)
    torch.testing.assert_close(evaluated, train)
    # Eval with running stats leaves them alone.
    rm, rv = torch.tensor([0.3], dtype=F64), torch.tensor([2.0], dtype=F64)
    dense_similarity_loss(x, xl, y, yl, training=False, running_mean=rm, running_var=rv)
    assert rm.item() == 0.3 and rv.item() == 2.0


def test_python_and_tensor_weight_and_bias_agree():
    x, xl, y, yl = _case(3, 4, 4, 2)
    a = dense_similarity_loss(x, xl, y, yl, weight=0.5, bias=-1.0)
    for w, b in [(torch.tensor(0.5), torch.tensor(-1.0)), (torch.tensor([0.5]), torch.tensor([-1.0]))]:
        got = dense_similarity_loss(x, xl, y, yl, weight=w.double(), bias=b.double())
        assert got.shape == () and torch.allclose(got, a, rtol=1e-12)


def test_nan_in_an_ignored_slot_reaches_nothing_and_in_a_valid_slot_propagates():
    x, xl, y, yl = _case(2, 4, 5, 3)
    xl[0, 1], yl[1, 2] = -1, -1
    xl[1, 0], yl[0, 0] = 0, 0
    x[0, 1], y[1, 2] = float("nan"), float("inf")
    x, y = _leaf(x), _leaf(y)
    loss = dense_similarity_loss(x, xl, y, yl)
    loss.backward()
    assert loss.isfinite() and x.grad.isfinite().all() and y.grad.isfinite().all()
    assert (x.grad[0, 1] == 0).all() and (y.grad[1, 2] == 0).all()
    x2 = x.detach().clone()
    x2[1, 0, 0] = float("nan")
    assert dense_similarity_loss(x2, xl, y.detach(), yl).isnan()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_inputs_compute_in_float32(dtype):
    x, xl, y, yl = _case(2, 6, 5, 8)
    got = dense_similarity_loss(x.to(dtype), xl, y.to(dtype), yl)
    assert got.dtype == torch.float32
    want = dense_similarity_loss(x.to(dtype).double(), xl, y.to(dtype).double(), yl)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_label_widths(request, backend, device, label_dtype):
    """Labels of every width on every backend (uint8: -1 wraps to 255, a class like any other; the
    kernels' loads past the last row must not read as labelled), the loss and gradients the
    reference's on the same labels as int64. 40 rows a side: past the Triton kernels' 32-row blocks."""
    x, xl, y, yl = _case(2, 40, 37, 3, seed=2)
    xl, yl = xl.to(label_dtype), yl.to(label_dtype)
    x2, y2 = _leaf(x), _leaf(y)
    want = dense_similarity_loss(x2, xl.long(), y2, yl.long())
    want = (want, *torch.autograd.grad(want, (x2, y2)))

    def run(be):
        x1, y1 = _leaf(x.to(device)), _leaf(y.to(device))
        got = pk.dense_similarity_loss(x1, xl.to(device), y1, yl.to(device), backend=be)
        return (got, *torch.autograd.grad(got, (x1, y1)))

    for a, b in zip(on_backend(request, backend, run), want, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The op on every backend, and nn.DenseSimilarityLoss


def test_module_equals_batchnorm1d_then_bce_with_logits():
    """nn.DenseSimilarityLoss against BatchNorm1d(1) + BCEWithLogitsLoss: parameters, buffers,
    three training steps (values, gradients of x, y, weight and bias, running statistics,
    num_batches_tracked), then .eval()."""
    bn = _bn()
    mod = pk.nn.DenseSimilarityLoss(dtype=F64)
    assert [n for n, _ in mod.named_parameters()] == ["weight", "bias"]
    assert {n: tuple(b.shape) for n, b in mod.named_buffers()} == {
        "running_mean": (1,), "running_var": (1,), "num_batches_tracked": ()}  # fmt: skip
    for step in range(4):
        training = step < 3
        bn.train(training)
        mod.train(training)
        x, xl, y, yl = _case(2, 9, 7, 5, seed=10 + step)
        x1, y1, x2, y2 = _leaf(x), _leaf(y), _leaf(x), _leaf(y)
        want = _pipeline(x1, xl, y1, yl, bn)
        got = mod(x2, xl, y2, yl)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        want.backward()
        got.backward()
        torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y2.grad, y1.grad, rtol=1e-10, atol=1e-12)
        for p_ours, p_bn in ((mod.weight, bn.weight), (mod.bias, bn.bias)):
            torch.testing.assert_close(p_ours.grad, p_bn.grad, rtol=1e-10, atol=1e-12)
            with torch.no_grad():  # one SGD step on both
                p_ours -= 0.5 * p_ours.grad
                p_bn -= 0.5 * p_bn.grad
            p_ours.grad = p_bn.grad = None
        torch.testing.assert_close(mod.running_mean, bn.running_mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(mod.running_var, bn.running_var, rtol=1e-12, atol=1e-14)
        assert mod.num_batches_tracked == bn.num_batches_tracked


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_cpu_backend(training):
    x, xl, y, yl = _case(2, 3, 4, 3, pattern="random", seed=5)
    xl[-1, 0], yl[-1, :2] = 0, torch.tensor([0, 1])
    rm, rv = torch.tensor([0.4], dtype=F64), torch.tensor([2.5], dtype=F64)

    def f(x, y, w, b):
        stats = {} if training else {"running_mean": rm, "running_var": rv}
        return pk.dense_similarity_loss(x, xl, y, yl, weight=w, bias=b, training=training, backend="cpu", **stats)

    args = (_leaf(x), _leaf(y), torch.tensor(0.7, dtype=F64, requires_grad=True),
            torch.tensor([0.3], dtype=F64, requires_grad=True))  # fmt: skip
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_edge_cases(backend, device):
    """No valid pair: 0 with zero gradient, running stats untouched; a NaN in an ignored slot
    reaches nothing; half inputs compute in float32."""
    op = functools.partial(pk.dense_similarity_loss, backend=backend)
    x, xl, y, yl = (t.to(device) for t in _case(3, 4, 5, 6, pattern="none"))
    x, y = _leaf(x), _leaf(y)
    rm, rv = torch.tensor([0.25], dtype=F64, device=device), torch.tensor([3.0], dtype=F64, device=device)
    loss = op(x, xl, y, yl, running_mean=rm, running_var=rv)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert not x.grad.any() and not y.grad.any()
    assert rm.item() == 0.25 and rv.item() == 3.0
    x, xl, y, yl = _case(2, 4, 5, 3)
    xl[0, 1], yl[1, 2] = -1, -1
    xl[1, 0], yl[0, 0] = 0, 0
    x[0, 1], y[1, 2] = float("nan"), float("inf")
    x, y = _leaf(x.to(device)), _leaf(y.to(device))
    loss = op(x, xl.to(device), y, yl.to(device))
    loss.backward()
    assert loss.isfinite() and x.grad.isfinite().all() and y.grad.isfinite().all()
    assert (x.grad[0, 1] == 0).all() and (y.grad[1, 2] == 0).all()
    torch.testing.assert_close(loss.cpu(), dense_similarity_loss(x.detach().cpu(), xl, y.detach().cpu(), yl))
    if backend != "cpu":
        x, xl, y, yl = _case(2, 6, 5, 8)
        got = op(x.to(device, torch.bfloat16), xl.to(device), y.to(device, torch.bfloat16), yl.to(device))
        assert got.dtype == torch.float32
        want = dense_similarity_loss(x.to(torch.bfloat16).double(), xl, y.to(torch.bfloat16).double(), yl)
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_running_statistics_and_affine_gradients(request, backend, device, training):
    """dense_moments with running statistics (eval: used in place of the batch's, in δ and s;
    training: updated from the op's count, mean and variance) and a (1,) weight and 0-dim bias
    taking gradients (each in its shape), every backend against the reference."""
    x, xl, y, yl = _case(3, 11, 9, 6, seed=3, offset=0.5)

    def run(be, dev):
        xs, ys = _leaf(x.to(dev)), _leaf(y.to(dev))
        w = torch.tensor([1.3], dtype=F64, device=dev, requires_grad=True)
        c = torch.tensor(-0.2, dtype=F64, device=dev, requires_grad=True)
        rm, rv = torch.tensor([0.3], dtype=F64, device=dev), torch.tensor([2.5], dtype=F64, device=dev)
        loss = pk.dense_similarity_loss(xs, xl.to(dev), ys, yl.to(dev), weight=w, bias=c, training=training,
                                        running_mean=rm, running_var=rv, momentum=0.2, backend=be)  # fmt: skip
        return (loss, *torch.autograd.grad(loss, (xs, ys, w, c)), rm, rv)

    got = on_backend(request, backend, lambda be: run(be, device))
    want = run("reference", "cpu")
    for name, a, b in zip(("loss", "dx", "dy", "dw", "dc", "running_mean", "running_var"), got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12, msg=name)


def test_op_memory_is_linear():
    """Every pixel of two 80 x 80 images (Kx = Ky = 6400, D = 16): the float32 (Kx, Ky) matrix
    alone would be 156 MiB; forward and backward grow the peak RSS by far less."""
    import resource

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 6400, 16, generator=g), torch.randn(1, 6400, 16, generator=g)
    xl, yl = torch.randint(-1, 3, (1, 6400), generator=g), torch.randint(-1, 3, (1, 6400), generator=g)
    x.requires_grad_()
    y.requires_grad_()
    pk.dense_similarity_loss(x[:, :99], xl[:, :99], y[:, :99], yl[:, :99], backend="cpu").backward()  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pk.dense_similarity_loss(x, xl, y, yl, backend="cpu").backward()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < 24, f"peak RSS grew by {grown:.0f} MiB"


def _op_inp(B, Kx, Ky, D, C=3, *, layout="contiguous", seed=0, training=True, **kw):
    def make(device, dtype):
        x, xl, y, yl = _case(B, Kx, Ky, D, C=C, seed=seed)
        if layout == "channels_last":
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
            y = y.transpose(1, 2).contiguous().transpose(1, 2)
        return {"x": x.to(device, dtype), "x_labels": xl.to(device), "y": y.to(device, dtype), "y_labels": yl.to(device),
                "weight": 1.3, "bias": -0.2, "training": training, **kw}  # fmt: skip

    return make


def _op_call(inp, backend):
    kw = {k: inp[k] for k in ("weight", "bias", "eps", "training", "momentum") if k in inp}
    return (pk.dense_similarity_loss(inp["x"], inp["x_labels"], inp["y"], inp["y_labels"], backend=backend, **kw),)


def _op_bad(**kw):
    return _op_inp(2, 5, 6, 3)("cpu", torch.float32) | kw


ROW = Contract(
    op="dense_similarity_loss",
    uses=("dense_moments", "pair_bce"),
    backward_uses=("dense_gradient",),
    gram_outputs=(("dense_moments", 3),),
    fuzz=lambda d: {"x": Floats(("B", "K", "D")), "x_labels": Labels(("B", "K"), bounded=False),
                    "y": Floats(("B", "H", "D")), "y_labels": Labels(("B", "H"), bounded=False),
                    "weight": Choice((1.0, -0.5), extreme=(50.0,)), "bias": Choice((0.0, 0.25)),
                    "eps": Choice((1e-5,), extreme=(0.0,)), "training": Choice((True, False))},  # fmt: skip
    make=_op_inp(2, 13, 11, 5),
    call=_op_call,
    shaped=lambda B, D, H, W, layout: _op_inp(B, *pair_sides(H, W), D, layout=layout),
    loss=lambda out, inp: out[0] * 1.7,
    grad_inputs=("x", "y"),
    tiny=_op_inp(2, 3, 4, 3),
    zero_sizes={
        "B0": _op_inp(0, 3, 4, 2)("cpu", torch.float32),
        "Kx0": _op_inp(2, 0, 4, 2)("cpu", torch.float32),
        "D0": _op_inp(2, 3, 4, 0)("cpu", torch.float32),
    },
    bad_inputs={
        "x_rank": (_op_bad(x=torch.randn(5, 3)), ValueError, "x must have 3 dims"),
        "y_dtype": (_op_bad(y=torch.randn(2, 6, 3, dtype=torch.float64)), TypeError, "y must have x's dtype"),
        "labels_shape": (_op_bad(y_labels=torch.zeros(2, 5, dtype=torch.long)), ValueError, "y_labels must have shape"),
        "eps": (_op_bad(eps=-1.0), ValueError, "eps must be >= 0"),
        "weight_shape": (_op_bad(weight=torch.ones(3)), ValueError, "weight must be a number or a 1-element"),
    },
    cases={
        "eval_batch_stats": _op_inp(2, 9, 12, 4, training=False),
        "D130_one_class": _op_inp(1, 5, 6, 130, C=1),
        "many_images": _op_inp(7, 3, 4, 2),
    },
)

TestContract = suite(ROW)


def _moments(backend, x, xl, y, yl, **kw):
    """dense_moments (the op's statistics and rows) with batch statistics, weight 1, bias 0."""
    from pixelkernels import _op
    from pixelkernels.ops import dense_moments

    args = dict(weight=None, bias=None, weight_value=1.0, bias_value=0.0, eps=1e-5, running_mean=None,
                running_var=None) | kw  # fmt: skip
    return _op.run(dense_moments.OP, backend, x, xl, y, yl, *args.values())


def _op_chain(backend, x, xl, y, yl):
    """[loss, dx, dy] by the three ops as dense_similarity_loss runs them (batch statistics)."""
    from pixelkernels import _op
    from pixelkernels.ops import dense_gradient, pair_bce

    xa, ya, means, grams, counts, _, stats, _ = _moments(backend, x, xl, y, yl)
    loss = _op.run(pair_bce.OP, backend, xa, xl, ya, yl, stats[3:4], stats[5:6]).sum() / stats[4]
    g = torch.ones((), dtype=stats.dtype)
    dx, dy, _, _ = _op.run(dense_gradient.OP, backend, g, xa, xl, ya, yl, means, grams, counts, stats, True)
    return [loss, dx, dy]


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_equal_rows_centre_exactly_in_float64(request, backend, device):
    """Equal rows of random float64 values (30 of x and 7 of y per image): dense_moments' means
    are exactly the rows (taken around the first row: a mean formed as (p n + Σ (t - p)) / n or
    Σ t / n rounds in float64), so the centred rows and the Grams' rows of the centred dims are
    exactly 0."""
    g = torch.Generator().manual_seed(11)
    B, D = 2, 5
    x = torch.randn(B, 1, D, generator=g, dtype=F64).expand(B, 30, D).clone()
    y = torch.randn(B, 1, D, generator=g, dtype=F64).expand(B, 7, D).clone()
    xl, yl = torch.zeros(B, 30, dtype=torch.long), torch.zeros(B, 7, dtype=torch.long)
    yl[:, 3] = 1
    on = (x.to(device), xl.to(device), y.to(device), yl.to(device))
    xa, ya, means, grams = (t.cpu() for t in on_backend(request, backend, lambda be: _moments(be, *on))[:4])
    assert torch.equal(means[0], x[:, 0]) and torch.equal(means[1], y[:, 0])
    assert not xa[..., :D].any() and not ya[..., :D].any() and not grams[:, :, :D].any()


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_moments_running_mean_alone_keeps_the_batch_variance(request, backend, device):
    """dense_moments given a running mean and no running variance (a direct call): the rows are
    centred at the running mean (δ_b = m_b - μ'), and σ² is still the batch's, the rows' second
    moment less S² / count (S = Σ_ij <x'_i, y'_j> = count (μ - μ'))."""
    x, xl, y, yl = _case(3, 11, 9, 6, seed=3, offset=0.5)
    rm = torch.tensor([0.3], dtype=F64)
    on = (x.to(device), xl.to(device), y.to(device), yl.to(device))
    got = on_backend(request, backend, lambda be: _moments(be, *on, running_mean=rm.to(device)))
    want = pair_moments(x, xl >= 0, y, yl >= 0)
    assert float(got[6][0]) == 0.3
    torch.testing.assert_close(got[6][1].cpu(), want[2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_few_pairs_float32_gradient_is_consistent(request, backend, device):
    """Few pairs in float32 (one x row against two y rows per image, ψ² >> eps): the
    batch-norm's Jacobian leaves eps / (σ² + eps) ~ 1e-3 of its terms, so the σ² term must see
    the very pair values the pair pass forms, around their own mean. The gradients against the
    float64 oracle on the same float32 values, each held to twice plain float32 PyTorch's own
    error (BatchNorm1d on the materialised Ψ) beyond SPEC §4: dense_moments' σ² from float32
    Grams and the σ² term around the means' rounded μ were 1 % off (the fuzz's blob
    AXicc2R0ZHRkcoSRDAwQAgW6SGc2aYDEAYYxBlE=)."""
    h = float.fromhex
    fuzzed = (torch.tensor([[[h("0x1.ec1ece0p-1"), h("0x1.cee8480p-1")], [0.0, 0.0]]]),
              torch.tensor([[[h("-0x1.e8b02c0p-1"), h("0x1.3c131a0p+1")],
                             [h("0x1.abba660p+0"), h("-0x1.21ad0e0p-1")]]]))

    def drawn(seed, B, D):  # seed 153 of 300 such draws: the means' rounding matters most there
        g = torch.Generator().manual_seed(seed)
        return torch.randn(B, 2, D, generator=g) + 0.5, torch.randn(B, 2, D, generator=g) * 1.5

    for x, y in (fuzzed, drawn(153, 1, 5), drawn(7, 3, 17)):
        x, y = x.float(), y.float()
        B = x.shape[0]
        xl = torch.tensor([[0, -1]] * B)
        yl = torch.zeros(B, 2, dtype=torch.long)

        def grads(fn, dtype, dev):
            xs, ys = (t.to(dev, dtype).requires_grad_() for t in (x, y))
            loss = fn(xs, xl.to(dev), ys, yl.to(dev))
            return [loss, *torch.autograd.grad(loss, (xs, ys))]

        want = grads(dense_similarity_loss, F64, "cpu")
        plain = grads(dense_similarity_loss, torch.float32, "cpu")
        if backend == "reference":  # the ops' references (the loss's is the materialised batch-norm)
            got = _op_chain("reference", x, xl, y, yl)
        else:
            got = on_backend(request, backend, lambda be: grads(
                functools.partial(pk.dense_similarity_loss, backend=be), torch.float32, device))  # fmt: skip
        for i, (a, p, w) in enumerate(zip(got, plain, want)):
            slack = 2 * (p.detach().double() - w.detach()).abs()
            assert_close(a.detach().cpu(), w.detach(), torch.float32, msg=f"{list(x.shape)} output {i}", slack=slack)


@pytest.mark.parametrize(
    "B,Kx,Ky,D,pattern", [(1, 1, 1, 1, "one"), (3, 7, 1, 1, "random"), (3, 9, 11, 17, "image0_ignored"),
                          (2, 5, 4, 3, "none"), (2, 4500, 30, 3, "random"), (2, 300, 70, 40, "random")],
)  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_op_statistics_equal_pair_moments(request, backend, device, B, Kx, Ky, D, pattern):
    """dense_moments' count, mean and variance (every backend, chunked: 4500 rows are past the
    emulated grid's chunks; D = 40 past the CUDA kernels' 32 x 32 Gram tiles) against the
    reference's pair_moments, and the loss and gradients there against the reference's."""
    if backend == "triton" and device == "cpu" and Kx > 1000:
        # 24 s of CI's interpreter for nothing the 300-row case lacks: Triton steps 32 rows at a
        # time (dense_moments.BLOCK_K) in one program an image; 4500 is the emulated grid's size
        pytest.skip("Triton under the interpreter: the 300-row case already takes ten row steps")
    x, xl, y, yl = _case(B, Kx, Ky, D, pattern=pattern, seed=9, offset=0.5)
    xv, yv = xl >= 0, yl >= 0
    on = (x.to(device), xl.to(device), y.to(device), yl.to(device))
    got = on_backend(request, backend, lambda be: _moments(be, *on))
    want = pair_moments(x, xv, y, yv)
    assert got[5].cpu() == want[0]
    torch.testing.assert_close(got[6][0].cpu(), want[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[6][1].cpu(), want[2], rtol=1e-10, atol=1e-12)

    def loss_and_grads(be):
        x1, y1 = _leaf(x.to(device)), _leaf(y.to(device))
        a = pk.dense_similarity_loss(x1, xl.to(device), y1, yl.to(device), weight=0.8, bias=0.1, backend=be)
        return (a, *torch.autograd.grad(a, (x1, y1)))

    x2, y2 = _leaf(x), _leaf(y)
    b = dense_similarity_loss(x2, xl, y2, yl, weight=0.8, bias=0.1)
    for g1, g2 in zip(on_backend(request, backend, loss_and_grads), (b, *torch.autograd.grad(b, (x2, y2)))):
        torch.testing.assert_close(g1.cpu(), g2, rtol=1e-10, atol=1e-12)


def test_op_double_backward():
    """Second derivatives (create_graph) through the op equal the reference's."""
    x, xl, y, yl = _case(2, 5, 6, 3, seed=4)
    w = torch.tensor(0.9, dtype=F64)
    outs = []
    for fn in (functools.partial(pk.dense_similarity_loss, backend="cpu"), dense_similarity_loss):
        xs, ys, ws = _leaf(x), _leaf(y), _leaf(w)
        gx, gy = torch.autograd.grad(fn(xs, xl, ys, yl, weight=ws), (xs, ys), create_graph=True)
        outs.append(torch.autograd.grad((gx * gx).sum() + gy.sum(), (xs, ys, ws)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Single pairs and equal values in float32, infinite and NaN values in rows that take no part,
# zero sizes, the sizes a compiler specialises (issue 35): every backend, and the CUDA kernels
# through the emulator.

NAN, INF = float("nan"), float("inf")


def _loss_and_grads(request, backend, device, x, xl, y, yl, weight=1.3, bias=0.0, **kw):
    """The loss and the gradients of x, y, weight and bias (as tensors) on `backend`."""
    st = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    leaves = [t.detach().to(device).requires_grad_() for t in (x, y, torch.tensor(weight, dtype=st),
                                                                torch.tensor(bias, dtype=st))]  # fmt: skip

    def run(b):
        loss = pk.dense_similarity_loss(leaves[0], xl.to(device), leaves[1], yl.to(device), weight=leaves[2],
                                        bias=leaves[3], backend=b, **kw)  # fmt: skip
        return [loss.detach().cpu(), *(g.cpu() for g in torch.autograd.grad(loss, leaves))]

    return on_backend(request, backend, run)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_one_valid_pair_in_float32_gives_the_bias_loss_and_zero_gradients(request, backend, device, seed):
    """One valid pair (among padding, values far from 0): Ψ̂ = 0 exactly, so the loss is exactly
    log 2 at bias 0 (BCEWithLogits(bias, t) otherwise) and the gradients of x, y and weight are
    exactly 0 (the closed-form mean and the pair pass rounded differently: 2e-5 in the loss,
    gradients up to 7.5e-6, amplified by 1/sqrt(eps))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, generator=g) * 3 + 1
    y = torch.randn(2, 4, 5, generator=g) * 3 - 2
    xl, yl = torch.full((2, 3), -1), torch.full((2, 4), -1)
    xl[1, 2], yl[1, 0] = 1, 1
    loss, dx, dy, dw, db = _loss_and_grads(request, backend, device, x, xl, y, yl)
    assert abs(loss.double().item() - math.log(2)) <= 1e-7
    for t in (dx, dy, dw):
        assert torch.equal(t, torch.zeros_like(t))
    assert db.item() == -0.5
    loss, *grads = _loss_and_grads(request, backend, device, x, xl, y, yl, bias=0.4)
    want = torch.nn.functional.softplus(torch.tensor(-0.4, dtype=F64))  # BCEWithLogits(0.4, 1)
    assert abs(loss.double().item() - want.item()) <= 1e-7
    assert all(torch.equal(t, torch.zeros_like(t)) for t in grads[:3])


# (Kx, Ky, images with the same rows): valid rows equal within each side
EQUAL_CASES = {"one_x_row": (1, 7, 1), "one_y_row": (6, 1, 1), "both_sides": (3, 5, 1), "two_images": (3, 5, 2),
               "thirty_y_rows": (1, 30, 1)}


@pytest.mark.parametrize("case", list(EQUAL_CASES))
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_equal_valid_pairs_are_centred_exactly_in_float32(request, backend, device, case):
    """Every valid Ψ the same number (one row against equal rows, equal rows on both sides,
    over one or two images), targets of both kinds: Ψ - μ is exactly 0 (μ taken around one of
    the values, the pair pass on centred rows), so the weight's gradient is exactly 0 and the loss
    and the other gradients are the float64 reference's (Σ Ψ / n rounds, and 1/sqrt(eps) blew
    that up); the float32 reference too."""
    Kx, Ky, B = EQUAL_CASES[case]
    if backend == "reference" and case == "thirty_y_rows":
        pytest.skip("the float32 matmul (MKL) gives 30 equal rows unequal Ψ: the reference centres Ψ as computed")
    g = torch.Generator().manual_seed(2)  # one_x_row: the 7 Ψ are equal and their Σ/7 is not Ψ
    rx, ry = torch.randn(5, generator=g) * 3 + 1, torch.randn(5, generator=g) * 2 - 3
    x, y = rx.expand(B, Kx, 5).clone(), ry.expand(B, Ky, 5).clone()
    xl, yl = torch.randint(0, 2, (B, Kx), generator=g), torch.randint(0, 2, (B, Ky), generator=g)
    xl[0, 0], yl[0, :2] = 0, torch.tensor([0, 1])[:Ky]
    if Kx > 1:
        xl[0, -1], x[0, -1] = -1, NAN  # and a padding row
    got = _loss_and_grads(request, backend, device, x, xl, y, yl, bias=0.2)
    want = _loss_and_grads(request, "reference", "cpu", x.double(), xl, y.double(), yl, bias=0.2)
    assert torch.equal(got[3], torch.zeros_like(got[3]))
    scale = max(float(want[1].abs().max()), float(want[2].abs().max()))
    for name, a, b in zip(("loss", "dx", "dy", "dweight", "dbias"), got, want):
        if backend == "reference" and name in ("dx", "dy"):
            # autograd sums (Ψ - μ)'s gradient, a·(e - ē), against equal rows: it cancels to
            # ε·a·|e|·|y| (a = weight/sqrt(eps) ~ 400), not to 0 as the kernels' centred rows do
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6 * scale)
            continue
        assert_close(a, b, torch.float32, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_and_inf_in_rows_that_take_no_part_reach_nothing(request, backend, device, dtype):
    """NaN and ±inf in padding rows of x and y and in valid rows of an image whose other side is
    all padding (they take part in no pair, nor in the statistics): the loss and gradients are
    those without them, and their gradients exactly 0."""
    x, xl, y, yl = _case(3, 6, 5, 4, seed=3, dtype=dtype)
    xl[0, 1], yl[0, 2], yl[2, 4] = -1, -1, -1
    xl[2, :2], yl[2, :2] = 0, 1
    yl[1] = -1  # image 1: no valid y row
    clean_x, clean_y = x.clone(), y.clone()
    x[0, 1, 0], y[0, 2], y[2, 4, 3], x[1] = NAN, INF, -INF, NAN
    x[1, 0, 0] = INF
    got = _loss_and_grads(request, backend, device, x, xl, y, yl, bias=0.3)
    want = _loss_and_grads(request, "reference", "cpu", clean_x.double(), xl, clean_y.double(), yl, bias=0.3)
    for name, a, b in zip(("loss", "dx", "dy", "dweight", "dbias"), got, want):
        assert_close(a, b, dtype, msg=name)
    dx, dy = got[1], got[2]
    assert (dx[0, 1] == 0).all() and (dx[1] == 0).all() and (dy[0, 2] == 0).all() and (dy[2, 4] == 0).all()


@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_nan_weight_or_bias_reaches_only_rows_that_take_part(request, backend, device):
    """A NaN weight or bias makes the loss and the gradients of the rows that take part NaN;
    padding rows and rows without a partner in their image keep exactly 0."""
    x, xl, y, yl = _case(2, 4, 3, 3, seed=4)
    xl[0], yl[0] = torch.tensor([0, -1, 1, 0]), torch.tensor([1, -1, 0])
    yl[1] = -1  # image 1: no valid y row
    for kw in ({"weight": NAN}, {"bias": NAN}):
        loss, dx, dy, dw, db = _loss_and_grads(request, backend, device, x, xl, y, yl, **kw)
        assert loss.isnan() and dx[0, [0, 2, 3]].isnan().all() and dy[0, [0, 2]].isnan().all()
        assert (dx[0, 1] == 0).all() and (dx[1] == 0).all() and (dy[0, 1] == 0).all() and (dy[1] == 0).all()


@pytest.mark.parametrize("shape", [(0, 3, 4, 2), (2, 0, 4, 2), (2, 3, 0, 2), (2, 3, 4, 0), (0, 0, 0, 0)],
                         ids=["B0", "Kx0", "Ky0", "D0", "all0"])  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_zero_sizes_give_the_reference_values_and_gradients(request, backend, device, shape):
    """A zero size in every position: no pair (0, zero gradients of every input's shape, still
    attached to the graph), or D = 0 (every Ψ 0: Ψ̂ = 0 and the loss the bias's BCE)."""
    B, Kx, Ky, D = shape
    x, xl, y, yl = _case(B, Kx, Ky, D, seed=6, pattern="one")
    for dtype in (F64, torch.float32):
        got = _loss_and_grads(request, backend, device, x.to(dtype), xl, y.to(dtype), yl, bias=0.3)
        want = _loss_and_grads(request, "reference", "cpu", x, xl, y, yl, bias=0.3)
        for name, a, b in zip(("loss", "dx", "dy", "dweight", "dbias"), got, want):
            assert a.shape == b.shape
            assert_close(a, b, dtype, msg=name)


@pytest.mark.parametrize("sizes", [(1, 1, 1), (16, 1, 14), (1, 16, 16), (17, 16, 30), (16, 17, 32)],
                         ids=lambda s: "Kx{}-Ky{}-D{}".format(*s))  # fmt: skip
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_sizes_a_compiler_specialises(request, backend, device, sizes):
    """Sizes of 1 and multiples of 16 (Triton makes 1 a constant and assumes divisibility by 16
    for the others) in Kx, Ky and D, and in the pair pass's D + 2 (D = 14, 30): values and
    gradients as the reference's, float64 and float32."""
    Kx, Ky, D = sizes
    x, xl, y, yl = _case(2, Kx, Ky, D, seed=Kx + 3 * Ky + 7 * D)
    xl[:, 0], yl[:, 0] = 0, 0  # a valid pair in each image
    want = _loss_and_grads(request, "reference", "cpu", x, xl, y, yl, bias=-0.2)
    for dtype in (F64, torch.float32):
        got = _loss_and_grads(request, backend, device, x.to(dtype), xl, y.to(dtype), yl, bias=-0.2)
        for name, a, b in zip(("loss", "dx", "dy", "dweight", "dbias"), got, want):
            assert_close(a, b, dtype, msg=name)


@pytest.mark.parametrize("case", ["huge_weight", "eps0", "eps0_one_pair"])
@pytest.mark.parametrize("backend,device", WITH_EMULATED)
def test_extreme_weight_and_eps(request, backend, device, case):
    """weight 1e30 (logits ~1e30: bce's derivative exactly 0 or ±1), eps = 0 with a spread
    (finite), and eps = 0 at one valid pair (Ψ̂ = 0/0: NaN, as BatchNorm1d gives): float64, as
    the reference. (In float32 a 1e30 weight's gradients cancel beyond SPEC §4's elementwise
    tolerance in the reference itself.)"""
    x, xl, y, yl = _case(2, 5, 4, 3, seed=1)
    kw = {"weight": 1e30} if case == "huge_weight" else {"eps": 0.0}
    if case == "eps0_one_pair":
        xl[:], yl[:] = -1, -1
        xl[1, 2], yl[1, 1] = 0, 0
    got = _loss_and_grads(request, backend, device, x, xl, y, yl, **kw)
    want = _loss_and_grads(request, "reference", "cpu", x, xl, y, yl, **kw)
    for name, a, b in zip(("loss", "dx", "dy", "dweight", "dbias"), got, want):
        assert_close(a, b, F64, msg=name)
    assert got[0].isnan() == (case == "eps0_one_pair")

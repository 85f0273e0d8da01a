"""dense_similarity_loss reference (SPEC §3.3; seed 003 §2.2): it equals torch.nn.BatchNorm1d(1) on
the valid entries of Ψ as one (n, 1) batch followed by torch.nn.BCEWithLogitsLoss (values,
gradients for x, y, weight and bias, running statistics over several training steps, eval mode);
the closed-form pair_moments equal the materialised statistics; the edge cases of its docstring."""

from __future__ import annotations

import pytest
import torch

from pixelkernels.reference.dense_similarity_loss import (
    dense_similarity_loss,
    materialized_moments,
    pair_moments,
)
from pixelkernels.reference.stochastic_pool import stochastic_pool

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


def _ours(x, xl, y, yl, bn, weight, bias, training):
    return dense_similarity_loss(
        x, xl, y, yl, weight=weight, bias=bias, eps=bn.eps, training=training,
        running_mean=bn.running_mean, running_var=bn.running_var, momentum=bn.momentum,
    )  # fmt: skip


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


@pytest.mark.parametrize("B,Kx,Ky,D,pattern", PIPELINE_CASES)
def test_equals_batchnorm1d_then_bce_with_logits(B, Kx, Ky, D, pattern):
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
        x1, y1, x2, y2 = _leaf(x), _leaf(y), _leaf(x), _leaf(y)
        want = _pipeline(x1, xl, y1, yl, bn)
        got = _ours(x2, xl, y2, yl, bn_ours, w, b, training)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for t in (w, b, bn.weight, bn.bias):
            t.grad = None
        want.backward()
        got.backward()
        torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y2.grad, y1.grad, rtol=1e-10, atol=1e-12)
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


@pytest.mark.parametrize("label_dtype", [torch.int16, torch.int32, torch.int64])
def test_label_widths(label_dtype):
    x, xl, y, yl = _case(2, 5, 4, 3)
    want = dense_similarity_loss(x, xl, y, yl)
    torch.testing.assert_close(dense_similarity_loss(x, xl.to(label_dtype), y, yl.to(label_dtype)), want)

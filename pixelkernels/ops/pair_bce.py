r"""The pass over every pair behind :func:`pixelkernels.dense_similarity_loss`: per row of x, the
binary cross-entropy with logits summed over the rows of y of the same image, tile by tile,
without the (Kx, Ky) matrix (memory :math:`O((K_x + K_y) D)`).

The pair loss is eq. (1) of Najafi, Kulharia, Ajanthan and Torr, *Similarity Learning for Dense
Label Transfer*, 2018 DAVIS Challenge on Video Object Segmentation (CVPR workshops, 2018), with
:math:`\mathcal{L}` the binary cross-entropy on the inner products of pixel embeddings;
``scale`` and ``bias`` are the batch-norm affine of their §2.2 folded in (the loss function
computes them from the batch statistics on the device, so no host sync).

**Infinite and NaN values** follow the formula and its limits: at a logit of :math:`\pm\infty`
the BCE is 0 where the target agrees and :math:`+\infty` where it does not (never
:math:`\infty - \infty`); NaN where the logit is NaN. The gradients are the chain rule's sums of
per-pair products, :math:`\partial x_i = \sum_j (s\, e_{ij})\, y_j` with
:math:`e_{ij} = g_i(\sigma(z_{ij}) - t_{ij})`, so a :math:`0 \cdot \infty` in one product (an
infinite scale where :math:`e = 0`) makes that sum NaN, as in the reference. Rows that take no
part give 0 and get exactly 0 gradient, whatever they hold.

**Backends.** CPU: tiles through ATen's GEMM, the backward contracted in double (a float32 GEMM
over thousands of mixed-sign products missed the float32 tolerance at Ky = 300). CUDA:
``similarity_reduce``'s pair tiles, by tensor cores for float16/bfloat16 and by FMA for float32
(the losses summed in double per row; the float32 backward in double), a thread per row with
double sums for float64. Triton: ``tl.dot`` tiles (tensor cores for float16/bfloat16; float32
in IEEE unless ``torch.backends.cuda.matmul.allow_tf32``). No float atomics: every backend is
deterministic. The formulas and edge cases in torch ops: ``pixelkernels.reference.pair_bce``.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype

_ref = importlib.import_module("pixelkernels.reference.pair_bce")


def _fake(x, x_labels, y, y_labels, scale, bias):
    return x.new_empty(x.shape[:2], dtype=stats_dtype(x.dtype))


def _fake_backward(grad_out, x, x_labels, y, y_labels, scale, bias):
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(scale), torch.empty_like(bias)


OP = _op.define(
    "pair_bce",
    reference=_ref.pair_bce,
    fake=_fake,
    outputs=("out",),
    backward_fake=_fake_backward,
    grad_inputs=("x", "y", "scale", "bias"),
)


def as_scalar(v, name: str, like: torch.Tensor) -> torch.Tensor:
    """A Python number, or a 1-element float tensor on like's device, as a 0-dim tensor of the
    statistics dtype (a tensor keeps its graph: gradients flow to it)."""
    st = stats_dtype(like.dtype)
    v = check_scalar(v, name, like)
    if isinstance(v, torch.Tensor):
        return v.to(st).reshape(())
    return torch.full((), v, dtype=st, device=like.device)


def check_scalar(v, name: str, like: torch.Tensor):
    """A Python number (returned as a float) or a 1-element float tensor on like's device
    (returned as it is); anything else is refused, naming `name`."""
    if isinstance(v, torch.Tensor):
        _checks.strided(v, name)
        if v.numel() != 1 or not v.is_floating_point():
            raise ValueError(f"{name} must be a number or a 1-element float tensor, got {tuple(v.shape)} {v.dtype}")
        _checks.same_device(("x", like), (name, v))
        return v
    return _checks.real(v, name)


def check_args(x, x_labels, y, y_labels, names=("x", "x_labels", "y", "y_labels")):
    xn, xln, yn, yln = names
    _checks.tensor(x, xn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, Kx, D)")
    _checks.tensor(y, yn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, Ky, D)")
    _checks.tensor(x_labels, xln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, Kx)")
    _checks.tensor(y_labels, yln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, Ky)")
    _checks.same_device((xn, x), (xln, x_labels), (yn, y), (yln, y_labels))
    if y.dtype != x.dtype:
        raise TypeError(f"{yn} must have {xn}'s dtype ({x.dtype}), got {y.dtype}")
    _checks.dims_match(yn, (y.shape[0], y.shape[2]), (x.shape[0], x.shape[2]), f"(B, D) = {xn}'s")
    _checks.dims_match(xln, x_labels.shape, x.shape[:2], f"shape (B, Kx) = {xn}'s")
    _checks.dims_match(yln, y_labels.shape, y.shape[:2], f"shape (B, Ky) = {yn}'s")


def pair_bce(x, x_labels, y, y_labels, scale=1.0, bias=0.0, *, backend: str | None = None) -> torch.Tensor:
    r"""Per-row sum of the pairwise BCE with logits between two labelled sets of vectors.

    .. math::

        \mathrm{out}_{b,i} = \sum_{j \,:\, \ell^y_{bj} \ge 0}
            \mathrm{BCE}\big(s \langle x_{bi}, y_{bj} \rangle + c,\;
            [\ell^x_{bi} = \ell^y_{bj}]\big),
        \qquad \mathrm{BCE}(z, t) = \log(1 + e^z) - t z

    for rows with :math:`\ell^x_{bi} \ge 0`; 0 for the others (a negative label, e.g.
    :func:`pixelkernels.stochastic_pool`'s -1 padding, takes part in no pair). Najafi et al.
    (2018), eq. (1), summed over j.

    Parameters
    ----------
    x : Tensor
        (B, Kx, D): float32, float64, float16 or bfloat16.
    x_labels : Tensor
        (B, Kx): integer labels (uint8 to int64); negative: no part.
    y : Tensor
        (B, Ky, D): ``x``'s dtype, on its device.
    y_labels : Tensor
        (B, Ky): integer labels; negative: no part.
    scale : float or Tensor
        s (default 1): a Python number or a 1-element float tensor on ``x``'s device (a tensor
        keeps its graph: gradients flow to it).
    bias : float or Tensor
        c (default 0), likewise.
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, Kx) in the statistics dtype: float32 for half inputs, else the inputs' dtype.

    Notes
    -----
    Half inputs compute in float32 (float16/bfloat16 run on ``cuda``, ``triton`` and
    ``reference``). Refused, naming the argument: tensors of the wrong rank, a float label or an
    integer ``x`` (``TypeError``), ``y`` of another dtype, shapes that disagree on B, D, Kx or Ky
    (``ValueError``), tensors on two devices, a ``scale`` or ``bias`` tensor with more than one
    element. Differentiable in ``x``, ``y``, ``scale`` and ``bias``, double backward included.

    Examples
    --------
    >>> x, y = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    >>> x_labels, y_labels = torch.tensor([[0, 1, -1]]), torch.tensor([[0, 0, 1, 1, 1]])
    >>> out = pk.pair_bce(x, x_labels, y, y_labels, scale=0.5, bias=0.1)
    >>> out.shape
    torch.Size([1, 3])
    >>> z = 0.5 * x @ y.transpose(1, 2) + 0.1
    >>> t = (x_labels[:, :, None] == y_labels[:, None, :]).float()
    >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none").sum(-1)
    >>> torch.allclose(out[:, :2], ref[:, :2]), out[0, 2].item()  # row 2 takes no part
    (True, 0.0)
    """
    check_args(x, x_labels, y, y_labels)
    a, c = as_scalar(scale, "scale", x), as_scalar(bias, "bias", x)
    backend = _op.backend_for(OP, backend, x, "x")
    return _op.run(OP, backend, x, x_labels, y, y_labels, a, c)

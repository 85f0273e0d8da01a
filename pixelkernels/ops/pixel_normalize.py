"""Per-pixel L2 normalisation of a ``(B, D, H, W)`` map.

MEnet's released code normalises each pixel's feature vector before its metric loss (Zeng et
al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object Segmentation*, arXiv
preprint (2018)); :func:`pixelkernels.menet_metric_loss` does so with ``normalize=True``, through
this op. It gives the values and gradients of ``torch.nn.functional.normalize(emb, dim=1,
eps=eps)`` in one read and one write of the map (channels-last stays channels-last).

``upcast=True`` returns float32 for half ``emb`` (the statistics dtype; other dtypes are
unchanged), so that a loss reducing the normalised map sees no half rounding of it: the only
rounding to half is the final write of ``emb``'s gradient. It writes twice the bytes of a half
map.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.pixel_normalize import pixel_normalize as _reference


def _fake(emb, eps, upcast):
    return torch.empty_like(emb, dtype=stats_dtype(emb.dtype) if upcast else emb.dtype)


def _fake_backward(grad_normalized, emb, eps, upcast):
    return torch.empty_like(emb)


OP = _op.define(
    "pixel_normalize",
    reference=_reference,
    fake=_fake,
    outputs=("normalized",),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
)


def pixel_normalize(
    emb: torch.Tensor, *, eps: float = 1e-12, upcast: bool = False, backend: str | None = None
) -> torch.Tensor:
    r"""Divide every pixel's ``D``-vector by its L2 norm.

    .. math::

        \mathrm{out}_{b,:,p} = \frac{\mathrm{emb}_{b,:,p}}
                                    {\max(\lVert \mathrm{emb}_{b,:,p} \rVert_2,\ \varepsilon)}

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64 (every backend); float16 or bfloat16 (cuda, triton,
        reference).
    eps : float, optional
        ``ε > 0`` (default ``1e-12``, as ``torch.nn.functional.normalize``).
    upcast : bool, optional
        Return float32 for a half ``emb`` (default ``False``: ``emb``'s dtype).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    Tensor
        ``emb``'s shape and memory format (contiguous or channels-last); ``emb``'s dtype, or
        float32 for half ``emb`` with ``upcast=True``.

    Notes
    -----
    *Layouts.* Read in place when contiguous, channels-last or a view whose ``H, W`` collapse into
    one axis; other strides are copied once.

    *Errors.* Wrong rank: ``ValueError``; ``eps ≤ 0``: ``ValueError``; integer ``emb``, a non-bool
    ``upcast``, half ``emb`` with ``backend="cpu"``: ``TypeError``.

    *Gradient.* Differentiable in ``emb`` (the same gradient as ``torch.nn.functional.normalize``);
    double backward differentiates the reference. Elementwise per pixel, hence deterministic on
    every backend.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[3., 0.]], [[4., 0.]]]])     # (B, D, H, W) = (1, 2, 1, 2)
    >>> pk.pixel_normalize(emb)
    tensor([[[[0.6000, 0.0000]],
    <BLANKLINE>
             [[0.8000, 0.0000]]]])
    >>> x = torch.randn(2, 8, 5, 5)
    >>> torch.allclose(pk.pixel_normalize(x), torch.nn.functional.normalize(x, dim=1))
    True
    """
    _checks.dense_map(emb, "emb")
    eps = _checks.real(eps, "eps", minimum=0.0, strict=True)
    backend = _op.backend_for(OP, backend, emb, "emb")
    return _op.run(OP, backend, emb, eps, _checks.boolean(upcast, "upcast"))

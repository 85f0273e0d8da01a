r"""Stochastic pooling: ``k`` reference vectors per class, drawn without replacement from the pixels
of that class.

Najafi, Kulharia, Ajanthan and Torr, *Similarity Learning for Dense Label Transfer*, 2018 DAVIS
Challenge on Video Object Segmentation (CVPR workshops, 2018), §2.2, eq. (2), approximate the
dense similarity of two pixel embeddings by that of K pixels drawn uniformly at random per
class present:

.. math::

    \Psi = \langle \Phi_x, \Phi_y \rangle \approx \langle \Phi_x^K, \Phi_y^K \rangle

:func:`pixelkernels.stochastic_pool` returns :math:`\Phi^K` with each slot's class, in the form
that :func:`pixelkernels.similarity_reduce`, :func:`pixelkernels.label_transfer` and
:func:`pixelkernels.dense_similarity_loss` take (reference vectors ``(B, K, D)`` and their
labels ``(B, K)``); :class:`pixelkernels.nn.StochasticPooling` wraps it as a module.

How it is computed: the pixels are :func:`pixelkernels.sample_pixels`'s (on ``backend``), so the
same generator state gives the same vectors on every backend and in the reference; the gather
is plain torch (``B·C·k·D`` values). No host sync.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks
from .sample_pixels import sample_pixels

_ref = importlib.import_module("pixelkernels.reference.stochastic_pool")


def stochastic_pool(
    emb: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    num_classes: int,
    *,
    ignore_index: int = -1,
    generator: torch.Generator | torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw up to ``k`` pixels of each class per image and gather their vectors, class-major.

    With ``idx = sample_pixels(labels, C, k)`` (``(B, C, k)``, ``-1`` padding):

    .. math::

        \mathrm{vectors}_{b,\, ck + j} = \mathrm{emb}_{b,:,\mathrm{idx}_{b,c,j}}, \qquad
        \mathrm{labels}_{b,\, ck + j} = c

    and 0 and ``-1`` for padding slots: a class with :math:`n_c < k` pixels fills its first
    :math:`n_c` slots, an absent class is all padding.

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32, float64, float16 or bfloat16, on any device (the gather is plain
        torch).
    labels : Tensor
        ``(B, H, W)`` uint8, int8, int16, int32 or int64. Pixels labelled ``ignore_index`` or
        outside ``[0, C)`` are never drawn (no value check).
    k : int
        Slots per class, ``k ≥ 1``.
    num_classes : int
        ``C ≥ 1``.
    ignore_index : int, optional
        Default ``-1``.
    generator : torch.Generator, Tensor or None, optional
        A generator on ``labels``' device, or a ``(B,)`` int64 tensor of per-image seeds (each
        image's draw then depends on its seed alone: the same on every DDP rank and batch).
    backend : str or None, optional
        The sampler's backend, as for :func:`pixelkernels.region_stats`.

    Returns
    -------
    vectors : Tensor
        ``(B, C·k, D)`` in ``emb``'s dtype (a gather rounds nothing).
    labels : Tensor
        ``(B, C·k)`` int64: the slot's class, ``-1`` for padding.

    Notes
    -----
    Contiguous and channels-last maps are both read in place. Wrong rank or shape: ``ValueError``;
    float labels, a generator on another device or of the wrong kind: ``TypeError`` or
    ``ValueError`` naming it. Differentiable in ``emb``: a slot's gradient goes to its pixel
    (padding sends none, so a NaN at a pixel no slot takes reaches nothing).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.randn(1, 4, 3, 3)
    >>> labels = torch.tensor([[[0, 0, 0], [0, 0, 0], [0, 0, 1]]])    # class 1: one pixel
    >>> seeds = torch.tensor([7])                                     # per-image seed
    >>> vectors, slot_labels = pk.stochastic_pool(emb, labels, 2, 2, generator=seeds)
    >>> vectors.shape, slot_labels
    (torch.Size([1, 4, 4]), tensor([[ 0,  0,  1, -1]]))
    >>> torch.equal(vectors[0, 2], emb[0, :, 2, 2]), vectors[0, 3].abs().sum().item()
    (True, 0.0)
    """
    _checks.dense_map(emb, "emb")
    _checks.label_map(labels, "labels", emb, "emb")
    idx = sample_pixels(labels, num_classes, k, generator=generator, ignore_index=ignore_index, backend=backend)
    return _ref.gather_slots(emb, idx)

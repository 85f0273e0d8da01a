r"""Uniform sampling of pixels per image and class, without replacement: the sampler of the
IS-Triplet loss (:func:`pixelkernels.is_triplet_loss`) and of stochastic pooling
(:func:`pixelkernels.stochastic_pool`).

Li and Liu, *Improving Image Co-segmentation via Deep Metric Learning*, preprint,
§3.2, draw K foreground and K background pixels of each image at random (fewer when a class has
fewer pixels); Najafi et al., *Similarity Learning for Dense Label Transfer*, 2018 DAVIS
Challenge on Video Object Segmentation (CVPR workshops, 2018), §2.2, eq. (2), subsample K pixels
uniformly at random for each class present. This op is that draw for every (image, class) at
once.

**How it draws.** One random key per pixel is the only random step: ``torch.randint`` of 42 bits
with the given generator, on the labels' device. The op then keeps, for each (image, class), the
``k`` pixels with the smallest keys, in increasing key order (a tie, about one per
:math:`2^{42} / P^2` images of P pixels, goes to the lower pixel index). Independent uniform keys
make the first :math:`\min(k, n_c)` entries a uniform sample without replacement, in uniformly
random order. The keys decide everything, so every backend returns the same pixels for the same
generator state:

- CPU: per class, the keys below a bound that k uniform keys meet with overwhelming probability,
  sorted (a class with fewer than k keys below it is collected again in full: exact for any
  keys);
- CUDA and Triton: a kernel forms the (class, key) sort keys, ATen's segmented radix sort orders
  them on the device, a kernel picks each class's first k: three launches for the batch;
- reference: the same selection in torch ops (``pixelkernels.reference.sample_pixels``).

No host sync: a draw can be captured in a CUDA graph.

**Per-image seeds.** ``generator`` may be a ``(B,)`` int64 tensor of seeds instead: image b's
keys are then a counter-based hash of (seed_b, draw, pixel), one bijective 32-bit mixing round
per pixel (so an image's keys are distinct), bit for bit the reference's, hashed where they are
read (the CUDA and Triton sort-key kernels; the CPU launcher before each draw): no launch of
their own. The op can also make several draws (streams 0, 1, ...) in one call, as
:func:`pixelkernels.is_triplet_loss` does. The draw then depends neither on the rest of the
batch nor on torch's RNG state: a data-parallel rank draws for its images what one process
draws for them. The tests
check uniformity (a chi-square test over 6000 draws), independence of two draws, distinctness,
empty classes, ``k`` above the class size, ignored labels and seeds differing only in their high
32 bits.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.sample_pixels import MAX_CLASSES
from ..reference.sample_pixels import sample_pixels as _reference
from . import pixel_keys as _keys


def _fake(labels, keys, num_classes, k, ignore_index, check=None, draws=0):
    shape = (labels.shape[0], num_classes, k)
    return labels.new_empty((draws, *shape) if draws > 0 else shape, dtype=torch.int64)


OP = _op.define("sample_pixels", reference=_reference, fake=_fake, outputs=("indices",))


def sample_pixels(
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    *,
    generator: torch.Generator | torch.Tensor | None = None,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Draw up to ``k`` distinct pixels of each class of each image, uniformly at random.

    For image b and class c with :math:`n_c` pixels, ``out[b, c, :min(k, n_c)]`` is a uniform
    sample without replacement of the class's pixels, in random order, as flat indices
    :math:`y W + x`; the remaining entries are -1.

    Parameters
    ----------
    labels : Tensor
        (B, H, W): class of each pixel: uint8, int8, int16, int32 or int64, read at its own width.
        Pixels labelled ``ignore_index``, or outside ``[0, num_classes)``, are never drawn.
    num_classes : int
        C, the number of classes (``1 <= C < 2**20``).
    k : int
        Pixels drawn per (image, class), ``k >= 1``.
    generator : torch.Generator or Tensor, optional
        A generator on the labels' device (``None``: torch's default one); two calls draw
        independently. Or a ``(B,)`` int64 tensor of per-image seeds: image b's draw is then a
        function of its seed alone (the same seeds draw the same pixels, whatever else is in the
        batch), no RNG state is read, and ``torch.compile`` traces the call without a graph break.
    ignore_index : int
        The label of pixels that belong to no class (default -1).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, C, k) int64: flat pixel indices, -1 after the first :math:`\min(k, n_c)` entries.

    Notes
    -----
    Contiguous labels are read in place, others copied once. Refused: labels that are not a
    ``(B, H, W)`` integer tensor (``TypeError``/``ValueError`` naming ``labels``),
    ``num_classes`` or ``k`` below 1, a generator on another device or seeds of another shape or
    dtype. Every backend returns the same pixels for the same generator state or seeds. Inside a
    CUDA graph capture, a user's CUDA generator must be registered first
    (``graph.register_generator_state(generator)``, torch's rule); the default one needs nothing.
    The output is an integer tensor: no gradient.

    Examples
    --------
    >>> labels = torch.tensor([[[0, 0, 1],
    ...                         [1, 1, -1]]])
    >>> idx = pk.sample_pixels(labels, num_classes=2, k=3, generator=torch.tensor([7]))
    >>> idx.shape, idx.dtype
    (torch.Size([1, 2, 3]), torch.int64)
    >>> sorted(idx[0, 0].tolist()), sorted(idx[0, 1].tolist())  # class 0 has two pixels
    ([-1, 0, 1], [2, 3, 4])
    >>> torch.equal(idx, pk.sample_pixels(labels, 2, 3, generator=torch.tensor([7])))
    True
    """
    _checks.tensor(labels, "labels", ndim=3, dtypes=_checks.LABEL_TYPES, shape_doc="(B, H, W)")
    C = _checks.positive_int(num_classes, "num_classes")
    if C >= MAX_CLASSES:
        raise ValueError(f"num_classes must be < {MAX_CLASSES}, got {C}")
    k = _checks.positive_int(k, "k")
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    _checks.generator(generator, labels, "labels", "the labels'")
    backend = _op.backend_for(OP, backend, labels, "labels")
    if isinstance(generator, torch.Tensor):  # the keys hashed where the sort-key kernel reads them
        return _op.run(OP, backend, labels, generator, C, k, ignore_index, None, 1)[0]
    keys = _keys.draw_keys(labels, generator, 0, backend)
    return _op.run(OP, backend, labels, keys, C, k, ignore_index)

r"""The IS-Triplet loss of Li and Liu, *Improving Image Co-segmentation via Deep Metric Learning*,
preprint, §3.2, eqs. (2)-(4): two draws of foreground and background pixels per
image, and two triplet-hinge terms over them.

The paper's sampling strategy: from each image draw K foreground pixels twice (sets F1, F2) and
K background pixels twice (B1, B2), with :func:`pixelkernels.sample_pixels`; K becomes the
smaller class size when a class has fewer pixels. The sets may share pixels. The 2K triplets
(F1, F2, B1) and (B1, B2, F2) give the two terms of eq. (4). The paper uses K = 5000 and
m = 3.0, the defaults here; :class:`pixelkernels.nn.ISTripletLoss` wraps the function as a
module.

**How it computes.** One :func:`pixelkernels.sample_pixels` call makes both draws from the
per-image seeds (F1/B1 from stream 0, F2/B2 from stream 1; the keys hashed where the sort-key
kernel reads them, which also checks the mask), then with random mining one
:func:`pixelkernels.triplet_hinge` call over 2K slots [B1 | F1] (its mean over the 2 n_b slots
is eq. (4)'s half sum of the two means, and one backward writes one gradient map; the anchors
and positives are the draws as they are, the negatives one copy; ``reduction="mean"`` takes
the batch mean in the same kernels): on the CUDA path 7 launches forward and backward with
per-image seeds (3 for the sampler, the copy, 1 + 2 for the hinge), 8 with a Generator (its
seeds' draw). Hard mining is the same one call: batch-hard mining draws each term's candidates
from its own sets (for anchor F1_k the farthest of F2 and the nearest of B1; for B1_k the
farthest of B2 and the nearest of F2: Hermans, Beyer and Leibe, *In Defense of the Triplet
Loss for Person Re-Identification*, arXiv:1703.07737, 2017, the paper's reference [30]), and
the call's two halves of slots mine as two groups (``groups=2``): the gather and the mining
add 2 launches forward (CUDA), 9 in all with per-image seeds.

**Next to the usual implementations** (same sets, same numbers where they agree; tested):
``torch.nn.functional.triplet_margin_loss`` (``eps=0``) gives each of the two means, and eq. (4)
halves their sum; pytorch-metric-learning's ``TripletMarginLoss`` divides by the number of
non-zero triplets by default (``AvgNonZeroReducer``) where the paper divides by all n_b, and its
default distance L2-normalises the embeddings first (``LpDistance(normalize_embeddings=True)``).
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.triplet_losses import draws
from . import sample_pixels as _sample
from . import triplet_hinge as _triplet


def is_triplet_loss(
    emb: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_samples: int = 5000,
    margin: float = 3.0,
    squared: bool = False,
    mining: str = "random",
    generator: torch.Generator | torch.Tensor | None = None,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""The IS-Triplet loss (Li and Liu, eq. (4)) of a batch of foreground/background masks.

    .. math::

        \mathcal{L}_b = \tfrac{1}{2} \Big(
            \operatorname{mean}_k \big[ d(F1_k, F2_k) - d(F1_k, B1_k) + m \big]_+
          + \operatorname{mean}_k \big[ d(B1_k, B2_k) - d(B1_k, F2_k) + m \big]_+ \Big)

    over :math:`n_b = \min(K, n_{fg}, n_{bg})` slots k, where F1, F2 are two independent uniform
    draws of K foreground pixels of image b and B1, B2 of K background pixels, and d is the
    Euclidean distance between their embeddings (squared with ``squared=True``: eqs. (2)-(3)). The
    loss is the mean of :math:`\mathcal{L}_b` over the images with :math:`n_b > 0` (0, with zero
    gradient, when there is none).

    Parameters
    ----------
    emb : Tensor
        (B, D, H, W): pixel embeddings: float32 or float64 on every backend, float16/bfloat16 on ``cuda``,
        ``triton`` and ``reference``.
    mask : Tensor
        (B, H, W): 0 for background, 1 for foreground, ``ignore_index`` for pixels that take no part: bool or
        an integer dtype (uint8 to int64, read at its own width).
    num_samples : int
        K, pixels drawn per set (default 5000, the paper's).
    margin : float
        m, ``>= 0`` (default 3.0, the paper's).
    squared : bool
        Use squared distances (default ``False``).
    mining : str
        ``"random"`` (default): the drawn triplets; ``"hard"``: batch-hard positives and negatives
        among the drawn sets.
    generator : torch.Generator or Tensor, optional
        A ``(B,)`` int64 tensor of per-image seeds: each image's sets (F1/B1 from stream 0,
        F2/B2 from stream 1) are then a function of its seed alone. Or a generator on the mask's
        device (``None``: torch's default; pass a seeded one for a reproducible loss), which
        draws those seeds first (one ``torch.randint`` of B values in [0, 2^62)).
    ignore_index : int
        Mask value of the pixels that take no part (default -1).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor, 0-dim
        float32 for half ``emb``, else ``emb``'s dtype.

    Notes
    -----
    Accepts and refuses what :func:`pixelkernels.triplet_hinge` and
    :func:`pixelkernels.sample_pixels` do; mask values other than 0, 1 and ``ignore_index`` are
    refused (``ValueError`` naming ``mask`` on the CPU, a device-side assert on a GPU, made by the
    first draw's sort-key kernel: no launch of its own).
    Differentiable in ``emb`` (double backward too). Every backend draws the same sets for the same
    generator state or seeds; the determinism of the backward is ``triplet_hinge``'s. No host sync.

    Examples
    --------
    >>> emb = torch.randn(2, 8, 6, 6, requires_grad=True)
    >>> mask = torch.zeros(2, 6, 6, dtype=torch.long)
    >>> mask[:, 2:5, 1:4] = 1  # a 3 x 3 foreground square
    >>> seeds = torch.tensor([3, 4])  # one per image
    >>> loss = pk.is_triplet_loss(emb, mask, num_samples=16, margin=1.0, generator=seeds)
    >>> loss.shape, loss.dtype
    (torch.Size([]), torch.float32)
    >>> torch.equal(loss, pk.is_triplet_loss(emb, mask, num_samples=16, margin=1.0, generator=seeds))
    True
    >>> loss.backward()
    """
    _checks.dense_map(emb, "emb")
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.to(torch.uint8)
    _checks.label_map(mask, "mask", emb, "emb")
    K = _checks.positive_int(num_samples, "num_samples")
    margin = _checks.real(margin, "margin", minimum=0.0)
    squared = _checks.boolean(squared, "squared")
    hard = _triplet.check_mining(mining)
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    _checks.generator(generator, mask, "mask", "the mask's")
    backend = _op.backend_for(_triplet.OP, backend, emb, "emb")
    # Both draws in one sampler call (the keys hashed from the per-image seeds where they are
    # read), which also checks the mask as it reads it: no launch of its own on a GPU.
    check = _checks.label_values_in_kernel(mask, "mask", 2, ignore_index, backend)

    def sampler(*args):
        return _op.run(_sample.OP, backend, *args)

    s1, s2 = draws(mask, K, generator, ignore_index, sampler, check)  # (B, 2, K) each: background, foreground
    f2, b1 = s2[:, 1], s1[:, 0]
    # Both terms in one call: its mean over the 2 n_b slots is eq. 4's half sum of the two means
    # (each term has n_b slots), and one backward writes one gradient map, not two to be added.
    # Slots [B1 | F1] of each image: the anchors and positives are the draws themselves (views,
    # no copy); the negatives F2 (for B1) and B1 (for F1) take the one copy. triplet_hinge's mean
    # over the images with slots is combine's over those with n_b > 0, reduced by its own
    # kernels: no op of its own. Batch-hard mining draws each term's candidates from its own
    # sets (for B1_k the farthest of B2 and the nearest of F2; for F1_k of F2 and B1): the two
    # halves are its two groups of slots.
    B = s1.shape[0]
    anchor, positive, negative = s1.reshape(B, 2 * K), s2.reshape(B, 2 * K), torch.cat([f2, b1], 1)
    return _op.run(_triplet.OP, backend, emb, anchor, positive, negative, margin, squared, hard, True, 2)[0]

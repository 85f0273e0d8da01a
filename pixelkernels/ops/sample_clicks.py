r"""Random positive and negative training clicks simulated from a ground-truth mask, after Xu et
al., *Deep Interactive Object Selection*, CVPR 2016 (as described in Bhatia, *Few-Shot
Interactive Segmentation*, thesis, IIT Bombay, 2021, §1.2), in the click format of
:func:`pixelkernels.click_maps`, for a batch of images on their device.

With O the object, :math:`f(p \mid A) = \min_{q \in A} \lVert p - q \rVert` and
:math:`G = O \cup \{p : f(p \mid O) \ge d\}`, the complement :math:`G^c` is the band of
background pixels within d of the object. Positive clicks are drawn from O, at least
:math:`d_m` from the background and :math:`d_s` apart. Negative clicks follow one of three
strategies: (1) random band pixels, at least :math:`d_m` from the object and :math:`d_s`
apart; (2) random pixels of the other objects; (3) a random band pixel, then each next one
:math:`p_{next} = \arg\max_{p \in G^c} f(p \mid S^0 \cup G)`, with :math:`S^0` the negative
clicks so far. The decisions behind each rule (a strict band, distances to background pixels
only, strategy 2 anywhere in the image, strategy 3 without :math:`d_m` or :math:`d_s`, ties)
are in ``pixelkernels.reference.sample_clicks``.

**Randomness.** "Random" is one key per pixel drawn with ``generator`` on ``gt``'s device
(``torch.randint`` of 42 bits, the only random step, as in :func:`pixelkernels.sample_pixels`):
a click is the qualifying pixel of smallest (key, pixel), after which every pixel within
:math:`d_s` of it stops qualifying. The keys decide everything, so every backend returns the
same clicks for the same generator state or per-image seeds.

**Backends.** Reference: a torch loop over the clicks, batched over images. CPU: a task per
image, the distances by :func:`pixelkernels.distance_transform`'s kernel, the candidates sorted
once by (key, pixel) and taken greedily. CUDA and Triton: ``distance_transform``'s kernels, then
a block (program) per image, per click one pass for the smallest (key, pixel) and one dropping
the pixels within :math:`d_s`. No host sync.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference.sample_clicks import STRATEGIES, sample_clicks_from_keys
from . import pixel_keys as _keys


def _fake(gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin):
    return gt.new_empty((gt.shape[0], 2 * max(num_positive, num_negative), 3), dtype=torch.float32)


OP = _op.define("sample_clicks", reference=sample_clicks_from_keys, fake=_fake, outputs=("points",))


def sample_clicks(
    gt: torch.Tensor,
    *,
    num_positive: int,
    num_negative: int,
    strategy: int,
    d_band: float = 40,
    d_step: float = 10,
    d_margin: float = 5,
    other: torch.Tensor | None = None,
    generator: torch.Generator | torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Simulate Xu et al.'s (2016) positive and negative training clicks from ground-truth masks.

    Positives: object pixels with :math:`D^2_{bg} \ge d_m^2`, pairwise at least :math:`d_s` apart,
    with :math:`D^2_{bg}` and :math:`D^2_{obj}` the squared distances to the background and to the
    object. Negatives come from the band :math:`G^c`, the background pixels with
    :math:`D^2_{obj} < d_b^2`:

    - strategy 1: random band pixels with :math:`D^2_{obj} \ge d_m^2`, pairwise :math:`\ge d_s`
      apart;
    - strategy 2: random pixels of ``other`` outside the object, pairwise :math:`\ge d_s` apart;
    - strategy 3: a random band pixel first, then each time the band pixel farthest from
      :math:`G` and the clicks so far.

    Parameters
    ----------
    gt : Tensor
        (B, H, W) bool or integer, the object where nonzero; :math:`H W < 2^{31}`.
    num_positive, num_negative : int
        Clicks wanted of each kind, in ``[0, 2**31)``.
    strategy : int
        1, 2 or 3: how negatives are drawn.
    d_band : float
        :math:`d_b`, the band's width (default 40, Xu et al.'s).
    d_step : float
        :math:`d_s`, the least distance between two clicks of a kind (default 10).
    d_margin : float
        :math:`d_m`, the least distance to the other side's pixels (default 5).
    other : Tensor, optional
        (B, H, W) bool or integer mask of the other objects; required by strategy 2, checked and
        unused otherwise.
    generator : torch.Generator or Tensor, optional
        A generator on ``gt``'s device, or a ``(B,)`` int64 tensor of per-image seeds (each image's
        clicks then depend on its seed alone, not on the rest of the batch).
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, 2N, 3) float32, N = ``max(num_positive, num_negative)``, rows (y, x, order): rows
        0..N-1 positive, N..2N-1 negative, each half's clicks in sampling order, then
        (-1, -1, -1) padding. Fewer clicks than asked only where no pixel qualifies.

    Notes
    -----
    Refused: masks that are not 3-d bool or integer tensors of ``gt``'s shape and device (naming
    the argument), a ``strategy`` other than 1, 2, 3 (``TypeError`` for a non-int), negative
    distances, strategy 2 without ``other`` (``ValueError``), a generator on another device. No
    gradient. Inside a CUDA graph capture a user's CUDA generator must be registered first
    (``graph.register_generator_state(generator)``, torch's rule).

    Examples
    --------
    >>> gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    >>> gt[0, 8:24, 8:24] = True
    >>> points = pk.sample_clicks(gt, num_positive=2, num_negative=1, strategy=1,
    ...                           d_band=6, d_step=4, d_margin=2, generator=torch.tensor([5]))
    >>> points.shape, points.dtype
    (torch.Size([1, 4, 3]), torch.float32)
    >>> [bool(gt[0, int(y), int(x)]) for y, x, _ in points[0, :3]]  # two inside, one outside
    [True, True, False]
    >>> points[0, 3].tolist()  # only one negative was asked: padding
    [-1.0, -1.0, -1.0]
    >>> pk.click_maps(points, (32, 32)).shape
    torch.Size([1, 2, 32, 32])
    """
    _checks.tensor(gt, "gt", ndim=3, dtypes=_checks.MASK_TYPES, shape_doc="(B, H, W) bool or integer")
    num_positive = _checks.plain_int(num_positive, "num_positive")
    num_negative = _checks.plain_int(num_negative, "num_negative")
    for name, v in (("num_positive", num_positive), ("num_negative", num_negative)):
        if not 0 <= v < 2**31:
            raise ValueError(f"{name} must be in [0, 2^31), got {v}")
    strategy = _checks.choice(strategy, "strategy", STRATEGIES)
    d_band = _checks.real(d_band, "d_band", minimum=0.0)
    d_step = _checks.real(d_step, "d_step", minimum=0.0)
    d_margin = _checks.real(d_margin, "d_margin", minimum=0.0)
    if strategy == 2:
        if other is None:
            raise ValueError("strategy 2 samples from `other`: pass the other objects' mask")
        _checks.mask_like(other, "other", gt, "gt")
    elif other is not None:
        _checks.mask_like(other, "other", gt, "gt")
        other = None  # only strategy 2 reads it
    H, W = gt.shape[1:]
    if H * W >= 2**31:
        raise ValueError(f"gt must have H * W < 2^31 pixels, got {H} x {W}")
    _checks.generator(generator, gt, "gt", "gt's")
    backend = _op.backend_for(OP, backend, gt, "gt")
    keys = _keys.draw_keys(gt, generator, 0, backend)
    return _op.run(OP, backend, gt, keys, other, num_positive, num_negative, strategy, d_band, d_step, d_margin)

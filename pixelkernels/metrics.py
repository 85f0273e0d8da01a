r"""The evaluation metrics of the five papers' benchmarks, batched and on the device.

Every function takes a batch of ``(B, H, W)`` maps and returns tensors on the same device: no
Python loop over images, no host sync (no ``.item()``, ``nonzero()``, boolean-mask indexing or
``torch.bincount``, whose CUDA form reads its maximum back to size the output; histograms are
``scatter_add_`` into tensors of a fixed size). Counts are int64 and exact; ratios are float64,
so that each per-image value equals the published evaluation code's bit for bit.

- Region similarity: :func:`jaccard` (per image; the DAVIS convention :math:`J = 1` when
  prediction and ground truth are both empty), :func:`confusion_matrix` and :func:`miou`
  (PASCAL VOC's mean intersection over union).
- Salient object detection: :func:`mae`, :func:`f_measure` (precision, recall and
  :math:`F_\beta` curves over the 256 thresholds of an 8-bit map, max, mean and adaptive F), with
  the conventions of the ``pysodmetrics`` toolkit (Pang et al.), which the papers' tables use.
- Video object segmentation: :func:`davis_j` and :func:`davis_f` (region similarity
  :math:`\mathcal{J}` and boundary accuracy :math:`\mathcal{F}` of Perazzi et al., *A Benchmark
  Dataset and Evaluation Methodology for Video Object Segmentation*, CVPR 2016), the boundary
  match computed with :func:`pixelkernels.distance_transform` instead of a morphological
  dilation; :func:`boundary_map` is their ``seg2bmap``.
- Interactive segmentation: :func:`noc`, the number of clicks to reach an IoU (NoC@85, NoC@90)
  and the mean IoU after each click, from the per-click IoU table of the standard clicker
  (:func:`pixelkernels.next_clicks`).

**Over a data set, and under DDP.** A benchmark's number is an average over its images (or its
sequences' objects, or its classes' pixels). The accumulators :class:`ConfusionMatrix`,
:class:`SaliencyMetrics`, :class:`DavisMetrics` and :class:`NoCMetrics` keep sums and counts of
fixed shapes on the device; ``update`` adds a batch, ``reduce(group)`` all-reduces the sums
across the processes of a ``torch.distributed`` group (each process having evaluated its own
shard), and ``compute`` turns them into the benchmark's numbers. Integer counts are exact in any
split; float64 sums of per-image values equal one process's within float64 rounding (the order
of the additions differs), about 1e-15 relative. A sampler that pads the last shard with
repeated images (``DistributedSampler(drop_last=False)``) counts those images twice: shard
without padding for evaluation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _checks
from .ops.distance_transform import distance_transform

__all__ = [
    "BoundaryF",
    "ConfusionMatrix",
    "DavisMetrics",
    "FMeasure",
    "NoC",
    "NoCMetrics",
    "SaliencyMetrics",
    "boundary_map",
    "confusion_matrix",
    "davis_f",
    "davis_j",
    "f_measure",
    "jaccard",
    "mae",
    "miou",
    "noc",
]

_F64 = torch.float64
_SHAPE = "(B, H, W) bool or integer"


# ----------------------------------------------------------------------------- validation


def _mask(t, name: str, like: torch.Tensor | None = None, like_name: str = "") -> torch.Tensor:
    """A (B, H, W) bool or integer mask as bool (true where nonzero)."""
    if like is None:
        _checks.tensor(t, name, ndim=3, dtypes=_checks.MASK_TYPES, shape_doc=_SHAPE)
    else:
        _checks.mask_like(t, name, like, like_name)
    return t if t.dtype == torch.bool else t != 0


def _void(void, like: torch.Tensor, like_name: str) -> torch.Tensor | None:
    return None if void is None else _mask(void, "void", like, like_name)


def _counts(index: torch.Tensor, size: int) -> torch.Tensor:
    """int64 histogram of `index` (values in [0, size)) without a host sync (no bincount)."""
    index = index.reshape(-1)
    ones = torch.ones((), dtype=torch.int64, device=index.device).expand(index.numel())
    return torch.zeros(size, dtype=torch.int64, device=index.device).scatter_add_(0, index, ones)


# ----------------------------------------------------------------------------- region similarity


def jaccard(pred: torch.Tensor, gt: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    r"""Intersection over union of each image's binary prediction and ground truth.

    .. math::

        J = \frac{|P \cap G \cap V|}{|(P \cup G) \cap V|}, \qquad J = 1 \text{ when }
        (P \cup G) \cap V = \emptyset,

    with :math:`V` the valid pixels (all of them by default). The empty-union convention is the
    DAVIS evaluation's (Perazzi et al., CVPR 2016); RITM's ``get_iou`` returns NaN there.

    Parameters
    ----------
    pred, gt : Tensor
        (B, H, W) bool or integer masks (true where nonzero), the same shape and device.
    valid : Tensor, optional
        (B, H, W) bool or integer: the pixels that count (e.g. ``gt_labels != 255``).

    Returns
    -------
    Tensor
        (B,) float64.

    Examples
    --------
    >>> pred = torch.tensor([[[1, 1, 0]], [[0, 0, 0]]], dtype=torch.bool)
    >>> gt = torch.tensor([[[0, 1, 1]], [[0, 0, 0]]], dtype=torch.bool)
    >>> pk.metrics.jaccard(pred, gt)
    tensor([0.3333, 1.0000], dtype=torch.float64)
    """
    p = _mask(pred, "pred")
    g = _mask(gt, "gt", pred, "pred")
    inter, union = p & g, p | g
    if valid is not None:
        v = _mask(valid, "valid", pred, "pred")
        inter, union = inter & v, union & v
    inter, union = inter.sum((1, 2)), union.sum((1, 2))
    return torch.where(union > 0, inter.to(_F64) / union.clamp_min(1).to(_F64), 1.0)


def davis_j(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None) -> torch.Tensor:
    r"""DAVIS region similarity :math:`\mathcal{J}` per frame: :func:`jaccard` of the object's
    masks outside the void pixels (``db_eval_iou`` of the DAVIS 2017 evaluation; Perazzi et al.,
    *A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation*, CVPR 2016).

    .. math::

        \mathcal{J} = \frac{|M \cap G \setminus V|}{|(M \cup G) \setminus V|}
        \quad (1 \text{ when the union is empty}).

    Parameters
    ----------
    pred, gt : Tensor
        (B, H, W) bool or integer masks of one object (true where nonzero).
    void : Tensor, optional
        (B, H, W) bool or integer, true at void pixels (label 255 in the annotations).

    Returns
    -------
    Tensor
        (B,) float64.

    Examples
    --------
    >>> gt = torch.zeros(1, 4, 4, dtype=torch.bool); gt[0, 1:3, 1:3] = True
    >>> pk.metrics.davis_j(gt, gt), pk.metrics.davis_j(~gt, gt)
    (tensor([1.], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    v = _void(void, pred, "pred")
    return jaccard(pred, gt, valid=None if v is None else ~v)


def _confusion(pred, gt, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(B, C, C + 1) int64: rows the gt class, columns the predicted class, column C a
    prediction outside [0, C). Pixels whose gt is outside [0, C) (ignore_index too) are left out."""
    _checks.tensor(pred, "pred", ndim=3, dtypes=_checks.LABEL_TYPES, shape_doc="(B, H, W) integer")
    _checks.tensor(gt, "gt", ndim=3, dtypes=_checks.LABEL_TYPES, shape_doc="(B, H, W) integer")
    _checks.same_device(("pred", pred), ("gt", gt))
    _checks.dims_match("gt", gt.shape, pred.shape, "pred's shape")
    C = _checks.positive_int(num_classes, "num_classes")
    ignore_index = _checks.plain_int(ignore_index, "ignore_index")
    B = pred.shape[0]
    g, p = gt.long(), pred.long()
    g_ok = (g >= 0) & (g < C) & (g != ignore_index)
    p = torch.where((p >= 0) & (p < C), p, C)
    b = torch.arange(B, device=pred.device).view(B, 1, 1)
    # left-out pixels go to one extra bin past the end, dropped below
    idx = torch.where(g_ok, (b * C + g) * (C + 1) + p, B * C * (C + 1))
    return _counts(idx, B * C * (C + 1) + 1)[:-1].view(B, C, C + 1)


def _iou_from_confusion(cm: torch.Tensor):
    """(..., C, C + 1) -> per-class IoU (..., C) float64 (NaN where the union is empty) and the
    mean over the classes with a non-empty union (NaN when there is none)."""
    C = cm.shape[-2]
    inter = torch.diagonal(cm[..., :C], dim1=-2, dim2=-1)
    union = cm.sum(-1) + cm[..., :C].sum(-2) - inter
    present = union > 0
    iou = torch.where(present, inter.to(_F64) / union.clamp_min(1).to(_F64), math.nan)
    mean = torch.where(present, iou, 0.0).sum(-1) / present.sum(-1).to(_F64)
    return iou, mean


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, *,
                     ignore_index: int = 255) -> torch.Tensor:  # fmt: skip
    r"""Per-image confusion matrix of integer label maps, by one on-device histogram.

    .. math::

        M_{b,i,j} = \#\{p : \mathrm{gt}_b(p) = i,\ \mathrm{pred}_b(p) = j\}

    Pixels whose ground truth is outside :math:`[0, C)` (``ignore_index``, e.g. PASCAL VOC's 255
    void boundary) are left out. A prediction outside :math:`[0, C)` is in no column (it still
    counts, in :func:`miou`, against its ground-truth class).

    Parameters
    ----------
    pred, gt : Tensor
        (B, H, W) integer label maps (uint8 to int64), the same shape and device.
    num_classes : int
        :math:`C`.
    ignore_index : int
        The void label, left out (default 255; it may also be a class, e.g. 0 to leave out the
        background). Any gt value outside :math:`[0, C)` is left out as well.

    Returns
    -------
    Tensor
        (B, C, C) int64, rows the ground-truth class, columns the predicted class.

    Examples
    --------
    >>> gt = torch.tensor([[[0, 0, 1, 255]]])
    >>> pred = torch.tensor([[[0, 1, 1, 1]]])
    >>> pk.metrics.confusion_matrix(pred, gt, 2)
    tensor([[[1, 1],
             [0, 1]]])
    """
    cm = _confusion(pred, gt, num_classes, ignore_index)
    return cm[..., :-1]


def miou(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, *, ignore_index: int = 255):
    r"""Per-class IoU and mean IoU over the whole batch (PASCAL VOC's segmentation measure,
    Everingham et al., *The PASCAL Visual Object Classes Challenge*, IJCV 2010), pooled over the
    images of the batch as over a data set (the :class:`ConfusionMatrix` accumulator does the same
    batch by batch).

    .. math::

        \mathrm{IoU}_c = \frac{M_{cc}}{\sum_j M_{cj} + \sum_i M_{ic} - M_{cc}}, \qquad
        \mathrm{mIoU} = \frac{1}{|\mathcal{P}|} \sum_{c \in \mathcal{P}} \mathrm{IoU}_c

    with :math:`M` the :func:`confusion_matrix` summed over the batch and :math:`\mathcal{P}` the
    classes present (non-empty union). A prediction outside :math:`[0, C)` counts as a miss of
    its ground-truth class.

    Parameters
    ----------
    pred, gt : Tensor
        (B, H, W) integer label maps.
    num_classes : int
        :math:`C`.
    ignore_index : int
        The void ground-truth label, left out (default 255).

    Returns
    -------
    iou : Tensor
        (C,) float64, NaN for a class absent from both prediction and ground truth.
    miou : Tensor
        () float64, the mean over the present classes (NaN if none).

    Examples
    --------
    >>> gt = torch.tensor([[[0, 0, 1, 255]]])
    >>> pred = torch.tensor([[[0, 1, 1, 1]]])
    >>> iou, m = pk.metrics.miou(pred, gt, 3)
    >>> iou, m
    (tensor([0.5000, 0.5000,    nan], dtype=torch.float64), tensor(0.5000, dtype=torch.float64))
    """
    return _iou_from_confusion(_confusion(pred, gt, num_classes, ignore_index).sum(0))


# ----------------------------------------------------------------------------- saliency


def _saliency(sal, gt, normalize: bool):
    """pysodmetrics' prepare_data, batched: -> (pred (B,H,W) float64 in [0, 1], gt (B,H,W) bool)."""
    _checks.tensor(sal, "sal", ndim=3, dtypes=(torch.uint8, torch.float32, torch.float64),
                   shape_doc="(B, H, W) uint8 or float")  # fmt: skip
    _checks.tensor(gt, "gt", ndim=3, dtypes=(*_checks.MASK_TYPES, torch.float32, torch.float64),
                   shape_doc="(B, H, W) bool, integer or float")  # fmt: skip
    _checks.same_device(("sal", sal), ("gt", gt))
    _checks.dims_match("gt", gt.shape, sal.shape, "sal's shape")
    normalize = _checks.boolean(normalize, "normalize")
    s = sal.to(_F64)
    if sal.dtype == torch.uint8:
        s = s / 255
    if normalize:  # MATLAB's mapminmax, per image, unless the map is constant
        lo, hi = s.amin((1, 2), keepdim=True), s.amax((1, 2), keepdim=True)
        s = torch.where(hi != lo, (s - lo) / (hi - lo), s)
    if gt.dtype == torch.bool:
        g = gt
    elif gt.is_floating_point():  # an 8-bit map scaled to [0, 1]
        g = torch.round(gt.to(_F64) * 255) > 128
    else:
        g = gt > 128
    return s, g


def mae(sal: torch.Tensor, gt: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    r"""Mean absolute error of each saliency map (Perazzi et al., *Saliency Filters: Contrast Based
    Filtering for Salient Region Detection*, CVPR 2012), as ``pysodmetrics.MAE`` computes it.

    .. math::

        \mathrm{MAE} = \frac{1}{HW} \sum_p |S(p) - G(p)|

    with :math:`S` the map in :math:`[0, 1]` (see ``normalize``) and :math:`G` the binary ground
    truth. The data-set MAE is the mean over images (:class:`SaliencyMetrics`).

    Parameters
    ----------
    sal : Tensor
        (B, H, W) saliency: uint8 (0..255, divided by 255) or float in :math:`[0, 1]`.
    gt : Tensor
        (B, H, W) ground truth: bool; integer, binarised as ``gt > 128`` (8-bit masks); float,
        read as an 8-bit map scaled to :math:`[0, 1]` (``round(255 gt) > 128``).
    normalize : bool
        Min-max normalise each map to :math:`[0, 1]` first, unless it is constant (MATLAB's
        ``mapminmax``, pysodmetrics' default ``normalize=True``).

    Returns
    -------
    Tensor
        (B,) float64.

    Examples
    --------
    >>> sal = torch.tensor([[[0, 255, 255, 0]]], dtype=torch.uint8)
    >>> gt = torch.tensor([[[0, 255, 0, 0]]], dtype=torch.uint8)
    >>> pk.metrics.mae(sal, gt)
    tensor([0.2500], dtype=torch.float64)
    """
    s, g = _saliency(sal, gt, normalize)
    return (s - g.to(_F64)).abs().mean((1, 2))


class FMeasure(NamedTuple):
    """What :func:`f_measure` returns: the curves (B, 256), index :math:`k` for the threshold
    :math:`255 - k` (pysodmetrics' order), and the per-image summaries (B,)."""

    precision: torch.Tensor
    recall: torch.Tensor
    f: torch.Tensor
    max_f: torch.Tensor
    mean_f: torch.Tensor
    adaptive_f: torch.Tensor


def _f_beta(p: torch.Tensor, r: torch.Tensor, beta2: float) -> torch.Tensor:
    num = (1 + beta2) * p * r
    return num / torch.where(num == 0, 1.0, beta2 * p + r)


def f_measure(sal: torch.Tensor, gt: torch.Tensor, *, beta2: float = 0.3, normalize: bool = True) -> FMeasure:
    r"""Precision, recall and :math:`F_\beta` of each saliency map at the 256 thresholds of its
    8-bit quantisation, and its max, mean and adaptive F-measure (Achanta et al.,
    *Frequency-tuned Salient Region Detection*, CVPR 2009), with ``pysodmetrics.Fmeasure``'s
    conventions, from one histogram per image (no pass per threshold).

    The map :math:`S \in [0, 1]` (see ``normalize``) is quantised as
    :math:`q = \lfloor 255 S \rfloor`; at threshold :math:`t` the prediction is :math:`q \ge t`:

    .. math::

        P_t = \frac{|\{q \ge t\} \cap G|}{\max(|\{q \ge t\}|, 1)}, \quad
        R_t = \frac{|\{q \ge t\} \cap G|}{\max(|G|, 1)}, \quad
        F_t = \frac{(1 + \beta^2) P_t R_t}{\beta^2 P_t + R_t} \quad (0 \text{ if } P_t R_t = 0).

    The adaptive F-measure thresholds the unquantised map at :math:`\min(2\,\overline{S}, 1)`
    (Achanta et al.). Over a data set the benchmarks average the curves over images first, then
    take the max and mean of the mean curve (:class:`SaliencyMetrics`), which is not the mean of
    the per-image ``max_f``.

    Parameters
    ----------
    sal : Tensor
        (B, H, W) saliency: uint8 (0..255, divided by 255) or float in :math:`[0, 1]` (computed in
        float64, values outside clamped into the 256 bins).
    gt : Tensor
        (B, H, W) ground truth: bool; integer, binarised as ``gt > 128``; float, as
        ``round(255 gt) > 128``.
    beta2 : float
        :math:`\beta^2` (0.3, which the saliency literature uses to weigh precision more).
    normalize : bool
        Min-max normalise each map first unless it is constant (pysodmetrics' default).

    Returns
    -------
    FMeasure
        ``precision``, ``recall``, ``f``: (B, 256) float64, index :math:`k` for threshold
        :math:`t = 255 - k` (pysodmetrics' order: recall grows with :math:`k`); ``max_f``,
        ``mean_f`` (max and mean of ``f`` over thresholds), ``adaptive_f``: (B,) float64.

    Examples
    --------
    >>> sal = torch.tensor([[[0, 100, 200, 255]]], dtype=torch.uint8)
    >>> gt = torch.tensor([[[0, 0, 255, 255]]], dtype=torch.uint8)
    >>> out = pk.metrics.f_measure(sal, gt)
    >>> out.precision[0, [0, 55, 155, 255]]  # thresholds 255, 200, 100, 0
    tensor([1.0000, 1.0000, 0.6667, 0.5000], dtype=torch.float64)
    >>> out.max_f, out.adaptive_f  # adaptive: threshold min(2 * 0.544, 1) keeps only 255
    (tensor([1.], dtype=torch.float64), tensor([0.8125], dtype=torch.float64))
    """
    beta2 = _checks.real(beta2, "beta2", minimum=0.0, strict=True)
    s, g = _saliency(sal, gt, normalize)
    B = s.shape[0]
    q = (s * 255).floor().clamp(0, 255).long()
    b = torch.arange(B, device=s.device).view(B, 1, 1)
    hist = _counts((b * 2 + g.long()) * 256 + q, B * 512).view(B, 2, 256)
    above = hist.flip(-1).cumsum(-1)  # [..., k]: pixels with q >= 255 - k
    tp, fp = above[:, 1], above[:, 0]
    positives = tp + fp
    fg = g.sum((1, 2))
    precision = tp.to(_F64) / torch.where(positives == 0, 1, positives).to(_F64)
    recall = tp.to(_F64) / fg.clamp_min(1).to(_F64)[:, None]
    f = _f_beta(precision, recall, beta2)
    # adaptive threshold: twice the mean saliency, at most 1
    thr = (2 * s.mean((1, 2), keepdim=True)).clamp_max(1.0)
    binary = s >= thr
    inter = (binary & g).sum((1, 2))
    pre = inter.to(_F64) / binary.sum((1, 2)).clamp_min(1).to(_F64)
    rec = inter.to(_F64) / fg.clamp_min(1).to(_F64)
    adaptive = torch.where(inter == 0, 0.0, (1 + beta2) * pre * rec / (beta2 * pre + rec))
    return FMeasure(precision, recall, f, f.amax(1), f.mean(1), adaptive)


# ----------------------------------------------------------------------------- DAVIS boundaries


def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    r"""One-pixel-wide boundary of each binary mask: ``seg2bmap`` of the DAVIS evaluation (after
    Martin et al.'s Berkeley benchmark), batched.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour, the
    neighbours beyond the image being background; on the last row only the east neighbour
    counts, on the last column only the south one, and the bottom-right pixel is never on it.
    The boundary is so offset by half a pixel towards the origin.

    .. math::

        b(y, x) = m(y, x) \oplus m(y, x{+}1) \;\lor\; m(y, x) \oplus m(y{+}1, x) \;\lor\;
        m(y, x) \oplus m(y{+}1, x{+}1)

    Parameters
    ----------
    mask : Tensor
        (B, H, W) bool or integer (true where nonzero).

    Returns
    -------
    Tensor
        (B, H, W) bool.

    Examples
    --------
    >>> m = torch.zeros(1, 4, 5, dtype=torch.bool); m[0, 1:3, 1:4] = True
    >>> pk.metrics.boundary_map(m).int()
    tensor([[[1, 1, 1, 1, 0],
             [1, 0, 0, 1, 0],
             [1, 1, 1, 1, 0],
             [0, 0, 0, 0, 0]]], dtype=torch.int32)
    """
    m = _mask(mask, "mask")
    e = torch.zeros_like(m)
    s = torch.zeros_like(m)
    se = torch.zeros_like(m)
    e[:, :, :-1] = m[:, :, 1:]
    s[:, :-1, :] = m[:, 1:, :]
    se[:, :-1, :-1] = m[:, 1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[:, -1, :] = m[:, -1, :] ^ e[:, -1, :]
    b[:, :, -1] = m[:, :, -1] ^ s[:, :, -1]
    b[:, -1, -1] = False
    return b


class BoundaryF(NamedTuple):
    """What :func:`davis_f` returns, each (B,) float64."""

    f: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor


def _bound_pix(H: int, W: int, bound_th: float) -> float:
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.sqrt(float(H * H + W * W))))


def davis_f(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None, *,
            bound_th: float = 0.008) -> BoundaryF:  # fmt: skip
    r"""DAVIS boundary accuracy :math:`\mathcal{F}` per frame (Perazzi et al., *A Benchmark
    Dataset and Evaluation Methodology for Video Object Segmentation*, CVPR 2016; ``f_measure`` of
    the DAVIS 2017 evaluation): the F-measure of the boundary pixels of prediction and ground
    truth matched within a tolerance.

    With :math:`B_M, B_G` the :func:`boundary_map` of the prediction and the ground truth (void
    pixels set to background first), :math:`d_X(p)` the Euclidean distance from :math:`p` to the
    nearest pixel of :math:`X` (:func:`pixelkernels.distance_transform`) and
    :math:`r = \lceil \theta \sqrt{H^2 + W^2} \rceil` pixels (:math:`r = \theta` if
    :math:`\theta \ge 1`):

    .. math::

        P = \frac{|\{p \in B_M : d_{B_G}(p) \le r\}|}{|B_M|}, \quad
        R = \frac{|\{p \in B_G : d_{B_M}(p) \le r\}|}{|B_G|}, \quad
        \mathcal{F} = \frac{2 P R}{P + R}

    with :math:`P = 1` when :math:`B_M = \emptyset`, :math:`R = 1` when :math:`B_G = \emptyset`
    (so both empty gives :math:`\mathcal{F} = 1`, one empty gives 0) and :math:`\mathcal{F} = 0`
    when :math:`P + R = 0`. The DAVIS code dilates each boundary by skimage's ``disk(r)``
    (offsets :math:`x^2 + y^2 \le r^2`); :math:`d \le r` is the same set for integral :math:`r`,
    which the default gives (8 pixels at 480p). A non-integral :math:`r \ge 1` is taken as the
    disc :math:`x^2 + y^2 \le r^2` on the pixel grid (skimage's ``disk`` then samples a
    half-integer grid instead).

    Parameters
    ----------
    pred, gt : Tensor
        (B, H, W) bool or integer masks of one object (true where nonzero).
    void : Tensor, optional
        (B, H, W) bool or integer, true at void pixels.
    bound_th : float
        :math:`\theta`: a fraction of the image diagonal if < 1, else pixels (default 0.008).

    Returns
    -------
    BoundaryF
        ``f``, ``precision``, ``recall``: (B,) float64.

    Examples
    --------
    >>> gt = torch.zeros(1, 20, 20, dtype=torch.bool); gt[0, 5:15, 5:15] = True
    >>> pred = torch.zeros_like(gt); pred[0, 6:15, 5:15] = True  # top edge one row low
    >>> pk.metrics.davis_f(pred, gt).f  # r = ceil(0.008 * 28.3) = 1: every boundary matches
    tensor([1.], dtype=torch.float64)
    >>> pk.metrics.davis_f(pred, gt, bound_th=0.001).f  # r = 1 as well (ceil)
    tensor([1.], dtype=torch.float64)
    """
    p = _mask(pred, "pred")
    g = _mask(gt, "gt", pred, "pred")
    v = _void(void, pred, "pred")
    bound_th = _checks.real(bound_th, "bound_th", minimum=0.0, strict=True)
    if v is not None:
        p, g = p & ~v, g & ~v
    B, H, W = p.shape
    r = _bound_pix(H, W, bound_th)
    bounds = boundary_map(torch.cat([p, g]))  # (2B, H, W): the prediction's, then the gt's
    # squared distance to the nearest boundary pixel (+inf without one): exact small integers
    near = distance_transform(~bounds, squared=True) <= r * r
    bp, bg = bounds[:B], bounds[B:]
    n_p, n_g = bp.sum((1, 2)), bg.sum((1, 2))
    match_p = (bp & near[B:]).sum((1, 2))  # prediction boundary near the gt's
    match_g = (bg & near[:B]).sum((1, 2))
    precision = torch.where(n_p == 0, 1.0, match_p.to(_F64) / n_p.clamp_min(1).to(_F64))
    recall = torch.where(n_g == 0, 1.0, match_g.to(_F64) / n_g.clamp_min(1).to(_F64))
    total = precision + recall
    f = torch.where(total == 0, 0.0, 2 * precision * recall / torch.where(total == 0, 1.0, total))
    return BoundaryF(f, precision, recall)


# ----------------------------------------------------------------------------- number of clicks


class NoC(NamedTuple):
    """What :func:`noc` returns."""

    noc: torch.Tensor
    miou: torch.Tensor


def noc(ious: torch.Tensor, thresholds=(0.85, 0.90), max_clicks: int | None = None) -> NoC:
    r"""Number of clicks to reach each IoU threshold, per image, and the mean IoU after each
    click: the interactive-segmentation protocol (Xu et al., *Deep Interactive Object Selection*,
    CVPR 2016) as RITM's ``compute_noc_metric`` counts it (Sofiiuk et al., *Reviving Iterative
    Training with Mask Guidance for Interactive Segmentation*, 2021).

    .. math::

        \mathrm{NoC}@\tau = \min\{k \le K : \mathrm{IoU}_k \ge \tau\}
        \quad (K \text{ if there is none}),
        \qquad \mathrm{mIoU}@k = \frac{1}{B} \sum_b \mathrm{IoU}_{b,k}

    with :math:`K` = ``max_clicks``. The table comes from the clicker on
    :func:`pixelkernels.next_clicks` (the IoU after click :math:`k` in column :math:`k - 1`). A
    NaN IoU (RITM's empty union) never reaches a threshold.

    Parameters
    ----------
    ious : Tensor
        (B, N) float: the IoU after clicks 1..N.
    thresholds : sequence of float
        The IoU thresholds :math:`\tau` (default 0.85 and 0.90).
    max_clicks : int, optional
        :math:`K` (default N). Only the first :math:`K` columns count; with :math:`K > N` the
        missing clicks reach nothing.

    Returns
    -------
    NoC
        ``noc``: (B, T) int64, one column per threshold; ``miou``: (N,) the mean IoU over the
        images after each click, in the dtype of ``ious``.

    Examples
    --------
    >>> ious = torch.tensor([[0.5, 0.86, 0.91], [0.2, 0.3, 0.4]])
    >>> out = pk.metrics.noc(ious, max_clicks=3)
    >>> out.noc
    tensor([[2, 3],
            [3, 3]])
    >>> out.miou
    tensor([0.3500, 0.5800, 0.6550])
    """
    _checks.tensor(ious, "ious", ndim=2, dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
                   shape_doc="(B, max_clicks) float")  # fmt: skip
    thr = tuple(_checks.real(t, "thresholds[]") for t in thresholds)
    if not thr:
        raise ValueError("thresholds must name at least one IoU threshold, got none")
    N = ious.shape[1]
    K = N if max_clicks is None else _checks.positive_int(max_clicks, "max_clicks")
    table = ious[:, :K]
    clicks = torch.arange(1, table.shape[1] + 1, device=ious.device)
    t = torch.tensor(thr, dtype=ious.dtype, device=ious.device)
    hit = table[:, None, :] >= t[None, :, None]  # (B, T, K)
    if table.shape[1]:
        first = torch.where(hit, clicks, K).amin(-1)
    else:
        first = torch.full(hit.shape[:2], K, device=ious.device)
    return NoC(first.long(), ious.mean(0))


# ----------------------------------------------------------------------------- accumulators


class _Accumulator:
    """Sums and counts of fixed shapes on one device; reduce() all-reduces them (SUM)."""

    def __init__(self, device=None):
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self.reset()

    def _init(self) -> dict:  # name -> (shape, dtype)
        raise NotImplementedError

    def reset(self) -> None:
        """Zero the sums."""
        dev = self._device
        self.state = {k: torch.zeros(shape, dtype=dt, device=dev) for k, (shape, dt) in self._init().items()}

    def _add(self, device: torch.device, **values) -> None:
        if device != self._device:  # the sums follow the batches' device (moved, not lost)
            self._device = device
            self.state = {k: v.to(device) for k, v in self.state.items()}
        for k, v in values.items():
            self.state[k] += v

    def reduce(self, group=None) -> None:
        """Sum the state over the processes of ``group`` (``torch.distributed.all_reduce``), in
        place; then every process's :meth:`compute` gives the whole data set's numbers. The state
        lives on the device of the updates (construct with ``device=`` so that a process that saw
        no batch holds it on the device its backend needs, e.g. CUDA for NCCL)."""
        import torch.distributed as dist

        for v in self.state.values():
            dist.all_reduce(v, op=dist.ReduceOp.SUM, group=group)


class ConfusionMatrix(_Accumulator):
    r"""Accumulated confusion matrix and the data set's per-class IoU and mIoU (PASCAL VOC;
    :func:`miou` over all the batches seen, the same numbers as one call on them all).

    Parameters
    ----------
    num_classes : int
        :math:`C`.
    ignore_index : int
        The void ground-truth label (default 255).
    device : torch.device, optional
        Where the sums live before the first update (default CPU; then the updates' device).

    Examples
    --------
    >>> acc = pk.metrics.ConfusionMatrix(2)
    >>> acc.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    >>> acc.update(torch.tensor([[[1, 1]]]), torch.tensor([[[1, 255]]]))
    >>> acc.compute()["miou"]
    tensor(0.5000, dtype=torch.float64)
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 255, device=None):
        self.num_classes = _checks.positive_int(num_classes, "num_classes")
        self.ignore_index = _checks.plain_int(ignore_index, "ignore_index")
        super().__init__(device)

    def _init(self):
        C = self.num_classes
        return {"confusion": ((C, C + 1), torch.int64)}

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch of (B, H, W) integer label maps."""
        cm = _confusion(pred, gt, self.num_classes, self.ignore_index).sum(0)
        self._add(pred.device, confusion=cm)

    def compute(self) -> dict:
        """-> {"confusion": (C, C) int64, "iou": (C,) float64 (NaN for an absent class), "miou":
        () float64}."""
        cm = self.state["confusion"]
        iou, mean = _iou_from_confusion(cm)
        return {"confusion": cm[:, :-1].clone(), "iou": iou, "miou": mean}


class SaliencyMetrics(_Accumulator):
    r"""The salient-object-detection table over a data set: MAE, max / mean / adaptive F-measure
    and the precision-recall curve, averaged over images as ``pysodmetrics`` does (per-image
    curves averaged, then the max and mean of the mean F curve). See :func:`mae` and
    :func:`f_measure` for the per-image definitions.

    Parameters
    ----------
    beta2 : float
        :math:`\beta^2` (0.3).
    normalize : bool
        Min-max normalise each map first (pysodmetrics' default).
    device : torch.device, optional
        Where the sums live before the first update (default CPU; then the updates' device).

    Examples
    --------
    >>> acc = pk.metrics.SaliencyMetrics()
    >>> gt = torch.tensor([[[0, 0, 255, 255]]], dtype=torch.uint8)
    >>> acc.update(torch.tensor([[[0, 100, 200, 255]]], dtype=torch.uint8), gt)
    >>> acc.update(torch.tensor([[[255, 0, 0, 255]]], dtype=torch.uint8), gt)
    >>> out = acc.compute()
    >>> round(out["mae"].item(), 4), round(out["max_f"].item(), 4), int(out["count"])
    (0.326, 0.75, 2)
    """

    def __init__(self, *, beta2: float = 0.3, normalize: bool = True, device=None):
        self.beta2 = _checks.real(beta2, "beta2", minimum=0.0, strict=True)
        self.normalize = _checks.boolean(normalize, "normalize")
        super().__init__(device)

    def _init(self):
        return {"count": ((), torch.int64), "mae": ((), _F64), "adaptive_f": ((), _F64),
                "precision": ((256,), _F64), "recall": ((256,), _F64), "f": ((256,), _F64)}  # fmt: skip

    def update(self, sal: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch of (B, H, W) saliency maps and their ground truth."""
        out = f_measure(sal, gt, beta2=self.beta2, normalize=self.normalize)
        err = mae(sal, gt, normalize=self.normalize)
        self._add(sal.device, count=sal.shape[0], mae=err.sum(), adaptive_f=out.adaptive_f.sum(),
                  precision=out.precision.sum(0), recall=out.recall.sum(0), f=out.f.sum(0))  # fmt: skip

    def compute(self) -> dict:
        """-> {"mae", "max_f", "mean_f", "adaptive_f": () float64; "precision", "recall", "f":
        (256,) float64 mean curves, index k for threshold 255 - k; "count": () int64}."""
        s = self.state
        n = s["count"].to(_F64)
        f = s["f"] / n
        return {"mae": s["mae"] / n, "max_f": f.amax(), "mean_f": f.mean(),
                "adaptive_f": s["adaptive_f"] / n, "precision": s["precision"] / n,
                "recall": s["recall"] / n, "f": f, "count": s["count"].clone()}  # fmt: skip


def _decay_bins(frame: torch.Tensor, frames: torch.Tensor):
    """Whether frame t of N is in the DAVIS evaluation's first and last of four bins (bounds
    round(1 + k (N - 1) / 4) - 1, each bin inclusive of both bounds)."""
    n = frames.to(_F64)
    b1 = torch.round(1 + (n - 1) / 4 + 1e-10) - 1
    b3 = torch.round(1 + 3 * (n - 1) / 4 + 1e-10) - 1
    t = frame.to(_F64)
    return (t >= 0) & (t <= b1) & (t < n), (t >= b3) & (t <= n - 1) & (t >= 0)


class DavisMetrics(_Accumulator):
    r"""DAVIS's table over a data set: :math:`\mathcal{J}` and :math:`\mathcal{F}` mean and
    recall, and :math:`\mathcal{J}\&\mathcal{F}`-mean (Perazzi et al., CVPR 2016; Pont-Tuset et
    al., *The 2017 DAVIS Challenge on Video Object Segmentation*, 2017).

    Each frame of each object (a *track*: one object of one sequence, numbered
    :math:`0 \ldots T-1` by the caller) gives one :math:`\mathcal{J}` and one
    :math:`\mathcal{F}` (:func:`davis_j`, :func:`davis_f`); a track's mean is over its frames
    and its recall the fraction of its frames above 0.5; the data set's numbers are the means over
    the tracks seen. The semi-supervised protocol leaves out each sequence's first frame (given)
    and last frame: pass only the frames that count.

    The decay, given each frame's position ``frame`` among its track's ``frames`` counted ones:
    with the DAVIS evaluation's four bins, bounds
    :math:`i_k = \mathrm{round}(1 + k (N - 1) / 4) - 1` for :math:`k = 0..4`, bin :math:`k` holds
    the frames :math:`i_k \le t \le i_{k+1}` (neighbouring bins share a frame), and a track's
    decay is the mean over bin 0 minus the mean over bin 3; the data set's is the mean over the
    tracks that gave one.

    Parameters
    ----------
    num_tracks : int
        :math:`T`, the number of (sequence, object) pairs.
    bound_th : float
        The boundary tolerance of :func:`davis_f` (0.008 of the diagonal).
    device : torch.device, optional
        Where the sums live before the first update (default CPU; then the updates' device).

    Examples
    --------
    >>> acc = pk.metrics.DavisMetrics(2)
    >>> gt = torch.zeros(3, 8, 8, dtype=torch.bool); gt[:, 2:6, 2:6] = True
    >>> pred = gt.clone(); pred[2] = False  # track 1's second frame is missed
    >>> acc.update(torch.tensor([0, 1, 1]), pred, gt)
    >>> out = acc.compute()
    >>> [round(out[k].item(), 4) for k in ("J_mean", "J_recall", "F_mean", "JF_mean")]
    [0.75, 0.75, 0.75, 0.75]
    """

    def __init__(self, num_tracks: int, *, bound_th: float = 0.008, device=None):
        self.num_tracks = _checks.positive_int(num_tracks, "num_tracks")
        self.bound_th = _checks.real(bound_th, "bound_th", minimum=0.0, strict=True)
        super().__init__(device)

    def _init(self):
        T = self.num_tracks
        return {"frames": ((T,), torch.int64), "j": ((T,), _F64), "f": ((T,), _F64),
                "j_recall": ((T,), torch.int64), "f_recall": ((T,), torch.int64),
                "first_n": ((T,), torch.int64), "last_n": ((T,), torch.int64),
                "j_first": ((T,), _F64), "j_last": ((T,), _F64), "f_first": ((T,), _F64),
                "f_last": ((T,), _F64)}  # fmt: skip

    def update(self, track: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor,
               void: torch.Tensor | None = None, *, frame: torch.Tensor | None = None,
               frames: torch.Tensor | None = None) -> None:  # fmt: skip
        """Add frames: ``track`` (B,) integer track index of each, ``pred``, ``gt``, ``void`` as
        in :func:`davis_f`. A track index outside [0, T) takes no part. ``frame`` and ``frames``
        (B,) integers, each frame's position among its track's counted frames and their number,
        give the decay (frames without them take no part in it)."""
        _checks.tensor(track, "track", ndim=1, dtypes=_checks.LABEL_TYPES, shape_doc="(B,) integer")
        _checks.same_device(("pred", pred), ("track", track))
        _checks.dims_match("track", track.shape, pred.shape[:1], "pred's batch size")
        j = davis_j(pred, gt, void)
        f = davis_f(pred, gt, void, bound_th=self.bound_th).f
        T = self.num_tracks
        t = track.long()
        t = torch.where((t >= 0) & (t < T), t, T)

        def per_track(v):
            return torch.zeros(T + 1, dtype=v.dtype, device=v.device).index_add_(0, t, v)[:T]

        values = dict(frames=per_track(torch.ones_like(t)), j=per_track(j), f=per_track(f),
                      j_recall=per_track((j > 0.5).long()), f_recall=per_track((f > 0.5).long()))  # fmt: skip
        if (frame is None) != (frames is None):
            raise ValueError("frame and frames go together (the decay needs both)")
        if frame is not None:
            for name, v in (("frame", frame), ("frames", frames)):
                _checks.tensor(v, name, ndim=1, dtypes=_checks.LABEL_TYPES, shape_doc="(B,) integer")
                _checks.dims_match(name, v.shape, pred.shape[:1], "pred's batch size")
            first, last = _decay_bins(frame.to(pred.device).long(), frames.to(pred.device).long())
            values |= dict(first_n=per_track(first.long()), last_n=per_track(last.long()),
                           j_first=per_track(torch.where(first, j, 0.0)), j_last=per_track(torch.where(last, j, 0.0)),
                           f_first=per_track(torch.where(first, f, 0.0)), f_last=per_track(torch.where(last, f, 0.0)))  # fmt: skip
        self._add(pred.device, **values)

    def compute(self) -> dict:
        """-> {"J_mean", "J_recall", "F_mean", "F_recall", "JF_mean", "J_decay", "F_decay": ()
        float64 means over the tracks seen (the decays over those that gave one, else NaN); "J_track", "F_track": (T,) float64 per-track means (NaN for a track not
        seen); "tracks": () int64 the number seen}."""
        s = self.state
        seen = s["frames"] > 0
        n = s["frames"].clamp_min(1).to(_F64)
        k = seen.sum().to(_F64)

        def over_tracks(per):
            return torch.where(seen, per, 0.0).sum() / k

        j_track, f_track = s["j"] / n, s["f"] / n
        out = {"J_mean": over_tracks(j_track), "J_recall": over_tracks(s["j_recall"] / n),
               "F_mean": over_tracks(f_track), "F_recall": over_tracks(s["f_recall"] / n)}  # fmt: skip
        out["JF_mean"] = (out["J_mean"] + out["F_mean"]) / 2
        has = (s["first_n"] > 0) & (s["last_n"] > 0)
        nd = has.sum().to(_F64)
        for m in ("j", "f"):
            d = s[m + "_first"] / s["first_n"].clamp_min(1).to(_F64) - s[m + "_last"] / s["last_n"].clamp_min(1).to(_F64)
            out[m.upper() + "_decay"] = torch.where(has, d, 0.0).sum() / nd  # NaN where no track gave one
        out["J_track"] = torch.where(seen, j_track, math.nan)
        out["F_track"] = torch.where(seen, f_track, math.nan)
        out["tracks"] = seen.sum()
        return out


class NoCMetrics(_Accumulator):
    r"""The interactive-segmentation table over a data set: mean NoC at each threshold, the
    number of images that needed ``max_clicks`` (RITM's "≥20" column: never reached, or reached
    only at the last click) and the mean IoU after each click. See :func:`noc`.

    Parameters
    ----------
    max_clicks : int
        :math:`K` (20).
    thresholds : sequence of float
        The IoU thresholds (0.85, 0.90); the keys are ``"NoC@85"``, ``"NoC@90"``.
    device : torch.device, optional
        Where the sums live before the first update (default CPU; then the updates' device).

    Examples
    --------
    >>> acc = pk.metrics.NoCMetrics(max_clicks=3)
    >>> acc.update(torch.tensor([[0.5, 0.86, 0.91]]))
    >>> acc.update(torch.tensor([[0.2, 0.3, 0.4]]))
    >>> out = acc.compute()
    >>> out["NoC@85"], out["NoC@90"], out["over_max@90"]
    (tensor(2.5000, dtype=torch.float64), tensor(3., dtype=torch.float64), tensor(2))
    """

    def __init__(self, *, max_clicks: int = 20, thresholds=(0.85, 0.90), device=None):
        self.max_clicks = _checks.positive_int(max_clicks, "max_clicks")
        self.thresholds = tuple(_checks.real(t, "thresholds[]") for t in thresholds)
        super().__init__(device)

    def _init(self):
        T, K = len(self.thresholds), self.max_clicks
        return {"count": ((), torch.int64), "noc": ((T,), torch.int64), "over_max": ((T,), torch.int64),
                "iou": ((K,), _F64), "clicks": ((K,), torch.int64)}  # fmt: skip

    def update(self, ious: torch.Tensor) -> None:
        """Add a (B, N) per-click IoU table (N ≤ max_clicks columns are averaged per click)."""
        out = noc(ious, self.thresholds, self.max_clicks)
        K = self.max_clicks
        table = ious[:, :K].to(_F64)
        pad = K - table.shape[1]
        iou = torch.nn.functional.pad(table.sum(0), (0, pad))
        seen = torch.full((table.shape[1],), ious.shape[0], dtype=torch.int64, device=ious.device)
        clicks = torch.nn.functional.pad(seen, (0, pad))
        self._add(ious.device, count=ious.shape[0], noc=out.noc.sum(0), over_max=(out.noc == K).sum(0),
                  iou=iou, clicks=clicks)  # fmt: skip

    def compute(self) -> dict:
        """-> {"NoC@85", ...: () float64 mean NoC; "over_max@85", ...: () int64 images at
        max_clicks; "miou": (max_clicks,) float64 mean IoU after each click; "count"}."""
        s = self.state
        n = s["count"].to(_F64)
        out = {}
        for i, t in enumerate(self.thresholds):
            out[f"NoC@{round(t * 100)}"] = s["noc"][i] / n
            out[f"over_max@{round(t * 100)}"] = s["over_max"][i].clone()
        out["miou"] = s["iou"] / s["clicks"].to(_F64)
        out["count"] = s["count"].clone()
        return out

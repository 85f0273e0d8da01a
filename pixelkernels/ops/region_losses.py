"""Region losses: the MEnet metric loss and saliency map, the CAS loss, the discriminative loss,
and masked average pooling.

Papers: MEnet (Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient
Object Segmentation*, preprint), CAS (Sharma et al., *Class-Agnostic Segmentation
Loss and Its Application to Salient Object Detection and Segmentation*, IJCAI 2021 workshop),
the discriminative loss (De Brabandere, Neven and Van Gool, CVPR 2017 workshop) and PANet's
masked average pooling (Wang et al., ICCV 2019).

``backend="reference"`` runs the straightforward oracles of pixelkernels/reference/region_losses.py
(one-hot masks, a (B, R, D, H·W) broadcast); every other backend runs the fused path: each
loss is a composition of registered ops, which do all the per-pixel work (region_stats,
centroid_hinge, pixel_normalize, masked_mean, center_distance): O(B·D·H·W) time, no one-hot
mask, no (B, R, D, H·W) broadcast, no per-pixel PyTorch op. menet_metric_loss, cas_loss and
discriminative_loss are one op each (region_loss: region_stats' pass, or centroid_hinge's two,
then the loss and its gradient with respect to the statistics in one more launch; backward, the
statistics op's backward alone, which rounds emb's whole gradient once).

Conventions shared by the losses: statistics and losses are float32 for half inputs, else the
input dtype; pixels labelled ignore_index take part in nothing; an empty region contributes
nothing; a loss averaged over images leaves out the images with no valid term, and is 0 with
zero gradient (still attached to the graph) when no image has one.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from ..reference import region_losses as _reference
from . import masked_mean as _masked_mean
from . import menet_saliency as _menet_saliency
from . import region_loss as _region_loss
from .pixel_normalize import pixel_normalize


# region_loss' weights (alpha, beta, gamma, delta_v, delta_d) where a loss takes none of them
_NO_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 0.0)


def _run(module, backend, x, name, *args):
    """A registered op on arguments the loss has already validated (labels included, so the
    label-value check happens once per loss)."""
    return _op.run(module.OP, _op.backend_for(module.OP, backend, x, name), x, *args)


def menet_metric_loss(
    emb: torch.Tensor,
    mask: torch.Tensor,
    *,
    form: str = "centroid",
    normalize: bool = False,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""MEnet's metric loss of a pixel embedding under a binary saliency mask.

    Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
    Segmentation*, preprint, §III-B. Per image, with :math:`n_\pm, c_\pm, v_\pm` the
    pixel count, centroid and variance (as :func:`pixelkernels.region_stats`) of the salient set
    (``mask == 1``) and the background (``mask == 0``), and :math:`N = n_+ + n_-`:

    .. math::

        \text{eq. (3), } \texttt{form="centroid"}: \quad
        \frac{1}{N} \sum_i \lVert f_i - c_{\text{own}} \rVert^2 - \lVert f_i - c_{\text{other}} \rVert^2
        = -\lVert c_+ - c_- \rVert^2

        \text{eq. (2), } \texttt{form="pairwise"}: \quad
        \frac{1}{N} \sum_i \operatorname*{mean}_{k \in \text{own}} \lVert f_i - f_k \rVert^2
            - \operatorname*{mean}_{k \in \text{other}} \lVert f_i - f_k \rVert^2
        = -\lVert c_+ - c_- \rVert^2 + \frac{(n_+ - n_-)(v_+ - v_-)}{N}

    The cross terms of eq. (3) vanish because :math:`\sum_{i \in S} (f_i - c_S) = 0`; eq. (2)
    equals eq. (3) only when both regions have the same size. Both come from region statistics in
    one pass over the pixels (never pairwise), then the mean over images.

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64; float16 or bfloat16 on cuda, triton and reference.
    mask : Tensor
        ``(B, H, W)`` integer: 1 salient, 0 background, ``ignore_index`` left out.
    form : str, optional
        ``"centroid"`` (eq. (3), the default) or ``"pairwise"`` (eq. (2)).
    normalize : bool, optional
        L2-normalise each pixel's vector first, as the authors' released code does (with
        :func:`pixelkernels.pixel_normalize`, whose float32 output for half ``emb`` keeps the
        centroids free of half rounding).
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`; ``"reference"`` runs a one-hot PyTorch oracle.

    Returns
    -------
    Tensor
        A scalar: float32 for half ``emb``, else ``emb``'s dtype. An image whose salient or
        background region is empty is left out of the mean; 0 with zero gradient when none remains.

    Notes
    -----
    Accepts, copies and refuses what :func:`pixelkernels.region_stats` does with ``R = 2``: a mask
    value other than 0, 1 and ``ignore_index`` is refused while the checks are on. Differentiable
    in ``emb``; deterministic on cpu and cuda. With ``form="centroid"`` no variance is computed.

    Switching from the authors' Caffe layer: it substitutes a zero centroid for an empty region and
    reports the loss plus a constant 4 (which keeps its printed loss positive for unit vectors);
    here such images are left out and no constant is added, so values differ by 4 and, on images
    with an empty region, gradients differ too. Module form: :class:`pixelkernels.nn.MEnetMetricLoss`.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]], requires_grad=True)
    >>> mask = torch.tensor([[[0, 0], [1, 1]]])           # c- = (0.5, 1), c+ = (3, 0)
    >>> loss = pk.menet_metric_loss(emb, mask)
    >>> round(loss.item(), 4)                             # -(2.5² + 1²)
    -7.25
    >>> mask = torch.tensor([[[0, 0], [1, -1]]])          # unequal sizes: eq. (2) != eq. (3)
    >>> [round(pk.menet_metric_loss(emb, mask, form=f).item(), 4) for f in ("centroid", "pairwise")]
    [-3.25, -3.1667]
    >>> loss.backward()
    """
    _, ignore_index = _checks.labelled_map(emb, "emb", mask, "mask", 2, "num_regions", ignore_index)
    form = _checks.choice(form, "form", ("centroid", "pairwise"))
    normalize = _checks.boolean(normalize, "normalize")
    backend = _op.backend_for(_region_loss.OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(mask, "mask", 2, ignore_index, backend)  # by region_stats' pass
    if backend == "reference":
        return _reference.menet_metric_loss(emb, mask, form, normalize, ignore_index)
    # upcast: the normalised map of a half emb is float32, so its centroids see no half rounding.
    x = pixel_normalize(emb, upcast=True, backend=backend) if normalize else emb
    # One op: region_stats' pass (the centroid form without its variance sweep on the CPU), the
    # head and the mean over images in one more launch, region_stats' backward pass.
    kind = _region_loss.MENET_PAIRWISE if form == "pairwise" else _region_loss.MENET_CENTROID
    return _run(_region_loss, backend, x, "emb", mask, 2, ignore_index, kind, *_NO_WEIGHTS, check)[0]


def cas_loss(
    scores: torch.Tensor,
    regions: torch.Tensor,
    num_regions: int,
    *,
    alpha: float = 0.5,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Class-agnostic segmentation (CAS) loss of the network's scores under a region map.

    Sharma, Khan, Mubashar, Sundaramoorthi and Torr, *Class-Agnostic Segmentation Loss and Its
    Application to Salient Object Detection and Segmentation*, IJCAI 2021 Workshop on Weakly
    Supervised Representation Learning (arXiv:2010.14793), eq. (1). Per image, over its non-empty
    regions :math:`r_i` with mean score :math:`\hat s(r_i)`:

    .. math::

        \mathrm{CAS} = \sum_i \alpha\, \frac{1}{|r_i|} \sum_{x \in r_i}
            \lVert s(x) - \hat s(r_i) \rVert^2
        \;-\; (1 - \alpha) \sum_i \sum_{j \ne i} \lVert \hat s(r_i) - \hat s(r_j) \rVert^2

    (the "uniformer" is each region's variance, :func:`pixelkernels.region_stats`; the
    "discriminator" sums ordered pairs, as eq. (1) does); then the mean over images.

    Parameters
    ----------
    scores : Tensor
        ``(B, M, H, W)`` float: the network's softmax output, used as given (no softmax is applied
        here). float32 or float64; float16 or bfloat16 on cuda, triton and reference.
    regions : Tensor
        ``(B, H, W)`` integer region ids in ``[0, num_regions)``, or ``ignore_index``.
    num_regions : int
        ``R ≥ 1``.
    alpha : float, optional
        :math:`\alpha \in [0, 1]` (default 0.5, the authors' setting); outside: ``ValueError``.
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`; ``"reference"`` runs a one-hot PyTorch oracle.

    Returns
    -------
    Tensor
        A scalar: float32 for half ``scores``, else their dtype. Images without a valid pixel are
        left out of the mean (0 with zero gradient when none has one).

    Notes
    -----
    Accepts, copies and refuses what :func:`pixelkernels.region_stats` does (ids outside
    ``[0, num_regions)`` refused while the checks are on, inside the kernel). One
    ``region_stats`` pass, then the loss from the ``(B, R, M)`` statistics in one more launch (the
    pair sum in its centred form, :math:`\sum_{i \ne j} \lVert \hat s_i - \hat s_j \rVert^2 =
    2 |P| \sum_i \lVert \hat s_i - m \rVert^2` over the :math:`|P|` non-empty regions with mean
    :math:`m`: no cancellation, :math:`O(R M)`); the backward is one pass. Differentiable in
    ``scores``; deterministic on cpu and cuda.

    Switching from the authors' code: they average the per-image sums over the batch including
    images with no region, compute only the foreground uniformer and one foreground–background
    pair for a 2-class network, and take region ids from the mask values; here ids
    ``≥ num_regions`` are an error (or ignored with the checks off). Module form:
    :class:`pixelkernels.nn.CASLoss`.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> logits = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                         [[1., 1.], [0., 0.]]]], requires_grad=True)
    >>> regions = torch.tensor([[[0, 0], [1, 1]]])
    >>> loss = pk.cas_loss(logits.softmax(1), regions, 2)
    >>> round(loss.item(), 4)
    -0.5824
    >>> loss.backward()
    """
    R, ignore_index = _checks.labelled_map(
        scores, "scores", regions, "regions", num_regions, "num_regions", ignore_index
    )
    alpha = _checks.real(alpha, "alpha", minimum=0.0)
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    backend = _op.backend_for(_region_loss.OP, backend, scores, "scores")
    check = _checks.label_values_in_kernel(regions, "regions", R, ignore_index, backend)  # by region_stats' pass
    if backend == "reference":
        return _reference.cas_loss(scores, regions, R, alpha, ignore_index)
    weights = (alpha, *_NO_WEIGHTS[1:])
    return _run(_region_loss, backend, scores, "scores", regions, R, ignore_index, _region_loss.CAS, *weights, check)[0]


def discriminative_loss(
    emb: torch.Tensor,
    instances: torch.Tensor,
    num_instances: int,
    *,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
    ignore_index: int = -1,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Discriminative loss of a pixel embedding under instance ids.

    De Brabandere, Neven and Van Gool, *Semantic Instance Segmentation with a Discriminative Loss
    Function*, CVPR 2017 Workshop on Deep Learning for Robotic Vision (arXiv:1708.02551). Per image,
    over its :math:`C \ge 1` non-empty instances with means :math:`\mu_c` and pixel counts
    :math:`n_c`, with :math:`[x]_+ = \max(x, 0)`:

    .. math::

        L = \frac{\alpha}{C} \sum_{c} \frac{1}{n_c} \sum_{i \in c}
                \bigl[\lVert \mu_c - x_i \rVert - \delta_v\bigr]_+^2
          + \frac{\beta}{C(C-1)} \sum_{A \ne B} \bigl[2\delta_d - \lVert \mu_A - \mu_B \rVert\bigr]_+^2
          + \frac{\gamma}{C} \sum_c \lVert \mu_c \rVert

    (variance, distance and regularisation terms; the distance term is 0 when :math:`C = 1`), then
    the mean over the images with :math:`C \ge 1`.

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64; float16 or bfloat16 on cuda, triton and reference.
    instances : Tensor
        ``(B, H, W)`` integer instance ids in ``[0, num_instances)``; background and unlabelled
        pixels are ``ignore_index``. An id with no pixel takes part in nothing.
    num_instances : int
        ``R ≥ 1``, the id range.
    delta_v, delta_d : float, optional
        The margins :math:`\delta_v \ge 0` (default 0.5) and :math:`\delta_d \ge 0` (default 1.5).
    alpha, beta, gamma : float, optional
        The terms' weights (defaults 1, 1, 0.001, the paper's).
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`; ``"reference"`` runs a one-hot PyTorch oracle.

    Returns
    -------
    Tensor
        A scalar: float32 for half ``emb``, else ``emb``'s dtype; 0 with zero gradient when no
        image has an instance.

    Notes
    -----
    The centroids and the variance term come from :func:`pixelkernels.centroid_hinge`
    (``region_stats``' pass, then the fused second pass of ``region_hinge``), which rounds
    ``emb``'s whole gradient once; the rest is one launch on the ``(B, R, D)`` statistics. Accepts, copies and
    refuses what :func:`pixelkernels.region_stats` does; negative margins: ``ValueError``. Norms
    have gradient 0 where they are 0 (two identical centroids, a pixel on its centroid), where
    codes that add an eps inside the square root get a tiny nonzero one.

    Switching from the usual implementations: the distance term sums ordered pairs over
    :math:`C(C-1)`, as the paper (unordered pairs give the same value); codes that take a fixed
    number of instances per batch count empty slots in :math:`C`, and some average the variance
    term over all instances' pixels at once. Here it is per instance, then over instances, as the
    paper. Module form: :class:`pixelkernels.nn.DiscriminativeLoss`.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]], requires_grad=True)
    >>> instances = torch.tensor([[[0, 0], [1, 1]]])
    >>> loss = pk.discriminative_loss(emb, instances, 2)
    >>> round(loss.item(), 4)                 # 0.125 + 0.0945 + 0.0021
    0.2216
    >>> loss.backward()
    """
    R, ignore_index = _checks.labelled_map(
        emb, "emb", instances, "instances", num_instances, "num_instances", ignore_index
    )
    delta_v = _checks.real(delta_v, "delta_v", minimum=0.0)
    delta_d = _checks.real(delta_d, "delta_d", minimum=0.0)
    alpha, beta, gamma = (_checks.real(v, k) for k, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)))
    backend = _op.backend_for(_region_loss.OP, backend, emb, "emb")
    check = _checks.label_values_in_kernel(instances, "instances", R, ignore_index, backend)  # by region_stats'
    if backend == "reference":
        return _reference.discriminative_loss(
            emb, instances, R, delta_v, delta_d, alpha, beta, gamma, ignore_index
        )
    # One op: centroid_hinge's two passes, the head and the mean over images in one more launch;
    # backward, centroid_hinge's, which rounds emb's whole gradient (hinge + centroids) once.
    weights = (alpha, beta, gamma, delta_v, delta_d)
    return _run(_region_loss, backend, emb, "emb", instances, R, ignore_index, _region_loss.DISCRIMINATIVE, *weights,
                check)[0]  # fmt: skip


def masked_average_pool(
    feat: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-5, backend: str | None = None
) -> torch.Tensor:
    r"""Masked average pooling: one prototype vector per image from a feature map and a soft mask.

    Wang, Liew, Zou, Zhou and Feng, *PANet: Few-Shot Image Semantic Segmentation with Prototype
    Alignment*, ICCV 2019, eq. (1), as used for the support prototype by Bhatia, *Few-Shot
    Interactive Segmentation*, thesis, IIT Bombay (2021), §1.1:

    .. math::

        \mathrm{proto}_{b,c} = \frac{\sum_p \mathrm{feat}_{b,c,p}\, \mathrm{mask}_{b,p}}
                                   {\sum_p \mathrm{mask}_{b,p} + \varepsilon}

    PANet first resizes the features to the mask's size; do that before calling.

    Parameters
    ----------
    feat : Tensor
        ``(B, C, H, W)`` float32 or float64; float16 or bfloat16 on cuda, triton and reference.
    mask : Tensor
        ``(B, H, W)`` float, binary or soft, rounded to ``feat``'s dtype before use.
    eps : float, optional
        :math:`\varepsilon \ge 0` (default ``1e-5``).
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    Tensor
        ``(B, C)``: float32 for half ``feat``, else ``feat``'s dtype.

    Notes
    -----
    One op forward (the sums' pass of :func:`pixelkernels.masked_sum` with the division in its
    merge) and one pass backward. Accepts, copies and refuses what
    :func:`pixelkernels.masked_sum` does; ``eps < 0``: ``ValueError``. Differentiable in ``feat``
    and ``mask``; deterministic on cpu and cuda. Known limitation: on a one-pixel image the
    ``mask`` gradient (of the order of ``eps``) is lost to float32 rounding (exact in float64).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> feat = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                       [[1., 1.], [0., 0.]]]])
    >>> mask = torch.tensor([[[1., 0.5], [0., 0.]]])
    >>> pk.masked_average_pool(feat, mask).round(decimals=4)     # (0.5, 1.5) / 1.5
    tensor([[0.3333, 1.0000]])
    """
    eps = _checks.real(eps, "eps", minimum=0.0)
    _checks.dense_map(feat, "feat")
    _checks.float_map(mask, "mask", feat, "feat")
    backend = _op.backend_for(_masked_mean.OP, backend, feat, "feat")
    if backend == "reference":
        return _reference.masked_average_pool(feat, mask, eps)
    return _masked_mean.masked_mean(feat, mask, eps, False, backend)[0]


def menet_saliency(
    emb: torch.Tensor, background_weights: torch.Tensor, *, squared: bool = False, backend: str | None = None
) -> torch.Tensor:
    r"""MEnet's saliency map: each pixel's distance to the weighted mean of the background features.

    Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
    Segmentation*, preprint, eq. (5), with background weights :math:`w \ge 0`:

    .. math::

        S_i = \Bigl\lVert f_i - \frac{\sum_j w_j f_j}{\sum_j w_j} \Bigr\rVert_2

    Parameters
    ----------
    emb : Tensor
        ``(B, D, H, W)`` float32 or float64; float16 or bfloat16 on cuda, triton and reference.
    background_weights : Tensor
        ``(B, H, W)`` float, ``≥ 0``: a background indicator or probability (e.g. from the
        cross-entropy branch), rounded to ``emb``'s dtype before use.
    squared : bool, optional
        Return :math:`S_i^2` (default ``False``). The authors' test-time code uses the squared
        distance, then min-max scales it.
    backend : str or None, optional
        As for :func:`pixelkernels.region_stats`.

    Returns
    -------
    Tensor
        ``(B, H, W)`` in ``emb``'s dtype. An image whose weights sum to 0 has center 0
        (:math:`S_i = \lVert f_i \rVert`).

    Notes
    -----
    Accepts, copies and refuses what :func:`pixelkernels.center_distance` does; a negative weight
    is refused while the checks are on, by the forward kernel's own read of the weights (no launch
    of its own, no host sync). Differentiable in ``emb`` and the weights. Known limitation: in
    half precision, ``emb``'s gradient near a pixel's own center is the difference of two nearly
    equal terms and may exceed the elementwise half tolerance.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> emb = torch.tensor([[[[0., 1.], [2., 4.]],
    ...                      [[1., 1.], [0., 0.]]]])
    >>> background = torch.tensor([[[1., 1.], [0., 0.]]])       # center (0.5, 1)
    >>> pk.menet_saliency(emb, background).round(decimals=4)
    tensor([[[0.5000, 0.5000],
             [1.8028, 3.6401]]])
    """
    _checks.dense_map(emb, "emb")
    _checks.float_map(background_weights, "background_weights", emb, "emb")
    squared = _checks.boolean(squared, "squared")
    backend = _op.backend_for(_menet_saliency.OP, backend, emb, "emb")
    if backend == "reference":
        _checks.nonnegative_values(background_weights, "background_weights")
        return _reference.menet_saliency(emb, background_weights, squared)
    # the weights' check is made by masked_mean's read of them (no launch, no sync of its own)
    check = _checks.nonnegative_in_kernel(background_weights, "background_weights")
    return _op.run(_menet_saliency.OP, backend, emb, background_weights, squared, check)[0]

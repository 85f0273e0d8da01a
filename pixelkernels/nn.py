"""The losses, pooling and click maps as ``torch.nn.Module`` objects.

Each loss module's constructor takes its functional's keyword arguments, and ``forward`` takes
the functional's positional arguments in the same order, so
``pixelkernels.nn.CASLoss(alpha=0.3)(scores, regions, 2)`` is
``pixelkernels.cas_loss(scores, regions, 2, alpha=0.3)``. The functional's page has the formula,
the shapes, what it accepts and refuses, and its backends; the module adds only the state it
keeps (:class:`DenseSimilarityLoss`'s affine parameters and running statistics) and its
``repr``. A ``generator`` given to a constructor is used by every call and is not part of the
module's ``state_dict``.
"""

from __future__ import annotations

import torch

from .ops.click_maps import click_maps
from .ops.dense_similarity_loss import dense_similarity_loss
from .ops.region_losses import cas_loss, discriminative_loss, menet_metric_loss
from .ops.stochastic_pool import stochastic_pool
from .ops.triplet_losses import is_triplet_loss


class _Loss(torch.nn.Module):
    _fields: tuple[str, ...] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)


class MEnetMetricLoss(_Loss):
    r"""MEnet's metric loss as a module: :func:`pixelkernels.menet_metric_loss`.

    Zeng et al., *Ro-SOS: Metric Expression Network (MEnet) for Robust Salient Object
    Segmentation*, preprint, eq. (3) (``form="centroid"``:
    :math:`-\lVert c_+ - c_- \rVert^2` per image) or eq. (2) (``form="pairwise"``). Called as
    ``loss_fn(emb, mask)`` with ``emb`` ``(B, D, H, W)`` and ``mask`` ``(B, H, W)`` in
    ``{0, 1, ignore_index}``; returns a scalar.

    Parameters
    ----------
    form : str, optional
        ``"centroid"`` (default) or ``"pairwise"``.
    normalize : bool, optional
        L2-normalise each pixel's vector first, as the authors' code does (default ``False``).
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        The backend of every call (``None``: the global choice).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> loss_fn = pk.nn.MEnetMetricLoss(normalize=True)
    >>> emb = torch.randn(2, 16, 8, 8, requires_grad=True)
    >>> mask = torch.randint(0, 2, (2, 8, 8))
    >>> loss = loss_fn(emb, mask)
    >>> loss.backward()
    >>> loss.shape, emb.grad.shape
    (torch.Size([]), torch.Size([2, 16, 8, 8]))
    """

    _fields = ("form", "normalize", "ignore_index", "backend")

    def __init__(self, *, form: str = "centroid", normalize: bool = False, ignore_index: int = -1,
                 backend: str | None = None):  # fmt: skip
        super().__init__()
        self.form, self.normalize, self.ignore_index, self.backend = form, normalize, ignore_index, backend

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return menet_metric_loss(
            emb,
            mask,
            form=self.form,
            normalize=self.normalize,
            ignore_index=self.ignore_index,
            backend=self.backend,
        )


class CASLoss(_Loss):
    r"""The class-agnostic segmentation loss as a module: :func:`pixelkernels.cas_loss`.

    Sharma et al., *Class-Agnostic Segmentation Loss and Its Application to Salient Object
    Detection and Segmentation*, IJCAI 2021 workshop, eq. (1): per image
    :math:`\sum_i \alpha\, \mathrm{var}_i
    - (1 - \alpha) \sum_{i \ne j} \lVert \hat s(r_i) - \hat s(r_j) \rVert^2`
    over its non-empty regions. Called as ``loss_fn(scores, regions, num_regions)`` with the
    softmax ``scores`` ``(B, M, H, W)`` and integer ``regions`` ``(B, H, W)``; returns a scalar.

    Parameters
    ----------
    alpha : float, optional
        :math:`\alpha \in [0, 1]` (default 0.5).
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        The backend of every call (``None``: the global choice).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> regions = torch.randint(0, 4, (2, 8, 8))
    >>> loss = pk.nn.CASLoss(alpha=0.5)(logits.softmax(1), regions, 4)
    >>> loss.backward()
    >>> logits.grad.shape
    torch.Size([2, 3, 8, 8])
    """

    _fields = ("alpha", "ignore_index", "backend")

    def __init__(self, *, alpha: float = 0.5, ignore_index: int = -1, backend: str | None = None):
        super().__init__()
        self.alpha, self.ignore_index, self.backend = alpha, ignore_index, backend

    def forward(self, scores: torch.Tensor, regions: torch.Tensor, num_regions: int) -> torch.Tensor:
        return cas_loss(scores, regions, num_regions, alpha=self.alpha, ignore_index=self.ignore_index,
                        backend=self.backend)  # fmt: skip


class DiscriminativeLoss(_Loss):
    r"""The discriminative loss as a module: :func:`pixelkernels.discriminative_loss`.

    De Brabandere, Neven and Van Gool, *Semantic Instance Segmentation with a Discriminative Loss
    Function*, CVPR 2017 workshop: :math:`\alpha L_{var} + \beta L_{dist} + \gamma L_{reg}` over
    each image's non-empty instances. Called as ``loss_fn(emb, instances, num_instances)`` with
    ``emb`` ``(B, D, H, W)`` and integer ``instances`` ``(B, H, W)`` (background:
    ``ignore_index``); returns a scalar.

    Parameters
    ----------
    delta_v, delta_d : float, optional
        The pull and push margins (defaults 0.5 and 1.5).
    alpha, beta, gamma : float, optional
        The weights of the variance, distance and regularisation terms (defaults 1, 1, 0.001).
    ignore_index : int, optional
        Default ``-1``.
    backend : str or None, optional
        The backend of every call (``None``: the global choice).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> loss_fn = pk.nn.DiscriminativeLoss(delta_v=0.5, delta_d=1.5)
    >>> emb = torch.randn(2, 8, 16, 16, requires_grad=True)
    >>> instances = torch.randint(-1, 5, (2, 16, 16))         # -1: background
    >>> loss_fn(emb, instances, 5).backward()
    >>> emb.grad.shape
    torch.Size([2, 8, 16, 16])
    """

    _fields = ("delta_v", "delta_d", "alpha", "beta", "gamma", "ignore_index", "backend")

    def __init__(self, *, delta_v: float = 0.5, delta_d: float = 1.5, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 0.001, ignore_index: int = -1, backend: str | None = None):  # fmt: skip
        super().__init__()
        self.delta_v, self.delta_d = delta_v, delta_d
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.ignore_index, self.backend = ignore_index, backend

    def forward(self, emb: torch.Tensor, instances: torch.Tensor, num_instances: int) -> torch.Tensor:
        return discriminative_loss(
            emb, instances, num_instances, delta_v=self.delta_v, delta_d=self.delta_d, alpha=self.alpha,
            beta=self.beta, gamma=self.gamma, ignore_index=self.ignore_index, backend=self.backend,
        )  # fmt: skip


class ISTripletLoss(_Loss):
    r"""The IS-Triplet loss as a module: :func:`pixelkernels.is_triplet_loss`.

    Li and Liu, *Improving Image Co-segmentation via Deep Metric Learning*, preprint,
    eq. (4), over sets F1, F2 (foreground) and B1, B2 (background) of sampled pixels:

    .. math::

        \tfrac12 \bigl( [d(F1, F2) - d(F1, B1) + m]_+ + [d(B1, B2) - d(B1, F2) + m]_+ \bigr)

    Called as ``loss_fn(emb, mask)`` with ``emb`` ``(B, D, H, W)`` and ``mask`` ``(B, H, W)`` in
    ``{0, 1, ignore_index}``; returns a scalar.

    Parameters
    ----------
    num_samples : int, optional
        K, the pixels drawn per set and image (default 5000, the paper's).
    margin : float, optional
        m (default 3.0, the paper's).
    squared : bool, optional
        Use squared distances (default ``False``).
    mining : str, optional
        ``"random"`` (default) or ``"hard"`` (batch-hard positives and negatives).
    ignore_index : int, optional
        Default ``-1``.
    generator : torch.Generator, Tensor or None, optional
        A generator on the mask's device, or a ``(B,)`` int64 tensor of per-image seeds, for
        reproducible sampling. Not a parameter or buffer (not in the ``state_dict``).
    backend : str or None, optional
        The backend of every call (``None``: the global choice).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> mask = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> mask[:, :, :2] = 1                                    # left half foreground
    >>> emb = torch.zeros(1, 3, 4, 4)
    >>> emb[:, 0] = 1 - mask.float()                          # d(fg, bg) = 1, d(fg, fg) = 0
    >>> loss_fn = pk.nn.ISTripletLoss(num_samples=4, margin=3.0, generator=torch.tensor([0]))
    >>> loss_fn(emb, mask).item()                             # [0 - 1 + 3]_+ for both terms
    2.0
    """

    _fields = ("num_samples", "margin", "squared", "mining", "ignore_index", "backend")

    def __init__(self, *, num_samples: int = 5000, margin: float = 3.0, squared: bool = False,
                 mining: str = "random", ignore_index: int = -1, generator: torch.Generator | None = None,
                 backend: str | None = None):  # fmt: skip
        super().__init__()
        self.num_samples, self.margin, self.squared, self.mining = num_samples, margin, squared, mining
        self.ignore_index, self.generator, self.backend = ignore_index, generator, backend

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return is_triplet_loss(emb, mask, num_samples=self.num_samples, margin=self.margin, squared=self.squared,
                               mining=self.mining, generator=self.generator, ignore_index=self.ignore_index,
                               backend=self.backend)  # fmt: skip


class StochasticPooling(_Loss):
    """Stochastic pooling as a module: :func:`pixelkernels.stochastic_pool`.

    Najafi et al., *Similarity Learning for Dense Label Transfer*, 2018 DAVIS Challenge (CVPR
    workshops, 2018), eq. (2): up to ``k`` pixels drawn uniformly without replacement per class.
    Called as ``pool(emb, labels)`` with ``emb`` ``(B, D, H, W)`` and integer ``labels``
    ``(B, H, W)``; returns ``vectors`` ``(B, C·k, D)`` and their classes ``(B, C·k)`` int64
    (``-1``: padding), class-major.

    Parameters
    ----------
    k : int
        Slots per class.
    num_classes : int
        C.
    ignore_index : int, optional
        Default ``-1``.
    generator : torch.Generator, Tensor or None, optional
        As :class:`ISTripletLoss`'s.
    backend : str or None, optional
        The sampler's backend (``None``: the global choice).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> pool = pk.nn.StochasticPooling(3, 2, generator=torch.tensor([5, 6]))
    >>> emb = torch.randn(2, 8, 6, 6)
    >>> labels = (torch.arange(36).reshape(6, 6) % 6 < 3).long().expand(2, 6, 6)
    >>> vectors, classes = pool(emb, labels)
    >>> vectors.shape, classes[0]
    (torch.Size([2, 6, 8]), tensor([0, 0, 0, 1, 1, 1]))
    """

    _fields = ("k", "num_classes", "ignore_index", "backend")

    def __init__(self, k: int, num_classes: int, *, ignore_index: int = -1, generator: torch.Generator | None = None,
                 backend: str | None = None):  # fmt: skip
        super().__init__()
        self.k, self.num_classes, self.ignore_index = k, num_classes, ignore_index
        self.generator, self.backend = generator, backend

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return stochastic_pool(emb, labels, self.k, self.num_classes, ignore_index=self.ignore_index,
                               generator=self.generator, backend=self.backend)  # fmt: skip


class DenseSimilarityLoss(_Loss):
    r"""The dense similarity loss with its batch-norm as a module: :func:`pixelkernels.dense_similarity_loss`.

    Najafi et al., *Similarity Learning for Dense Label Transfer*, 2018 DAVIS Challenge (CVPR
    workshops, 2018), eq. (1): one batch-norm over every valid
    :math:`\Psi_{ij} = \langle x_i, y_j \rangle`, then the binary cross-entropy with logits
    against :math:`[\ell_{x_i} = \ell_{y_j}]`, as ``torch.nn.BatchNorm1d(1)`` followed by
    ``torch.nn.BCEWithLogitsLoss`` would, without forming :math:`\Psi`. Called as
    ``loss_fn(x, x_labels, y, y_labels)`` with ``x`` ``(B, Kx, D)``, ``y`` ``(B, Ky, D)`` and
    integer labels ``(B, Kx)``, ``(B, Ky)`` (negative: no part); returns a scalar.

    It owns ``weight`` (1) and ``bias`` (0), of shape ``(1,)``, and the buffers ``running_mean``
    (0), ``running_var`` (1) and ``num_batches_tracked``, as ``torch.nn.BatchNorm1d(1)`` does;
    ``.train()`` uses and tracks the batch statistics, ``.eval()`` the running ones.

    Parameters
    ----------
    momentum : float, optional
        The running statistics' momentum (default 0.1).
    eps : float, optional
        Added to the variance (default ``1e-5``).
    backend : str or None, optional
        The backend of every call (``None``: the global choice).
    device, dtype : optional
        Of the parameters and buffers.

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> loss_fn = pk.nn.DenseSimilarityLoss()
    >>> x, y = torch.randn(2, 5, 4), torch.randn(2, 7, 4)
    >>> x_labels, y_labels = torch.randint(0, 2, (2, 5)), torch.randint(0, 2, (2, 7))
    >>> loss = loss_fn(x, x_labels, y, y_labels)
    >>> loss.shape, loss_fn.num_batches_tracked.item()
    (torch.Size([]), 1)
    """

    _fields = ("momentum", "eps", "backend")

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, *, backend: str | None = None,
                 device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.momentum, self.eps, self.backend = momentum, eps, backend
        f = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.ones(1, **f))
        self.bias = torch.nn.Parameter(torch.zeros(1, **f))
        self.register_buffer("running_mean", torch.zeros(1, **f))
        self.register_buffer("running_var", torch.ones(1, **f))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def forward(self, x: torch.Tensor, x_labels: torch.Tensor, y: torch.Tensor, y_labels: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return dense_similarity_loss(
            x, x_labels, y, y_labels, weight=self.weight, bias=self.bias, eps=self.eps, training=self.training,
            running_mean=self.running_mean, running_var=self.running_var, momentum=self.momentum,
            backend=self.backend,
        )  # fmt: skip


class ClickMaps(torch.nn.Module):
    r"""Click maps as a module: a drop-in for the ``DistMaps`` module of f-BRS and RITM.

    The click encoding of Sofiiuk et al., *f-BRS: Rethinking Backpropagating Refinement for
    Interactive Segmentation*, CVPR 2020, used by Bhatia, *Few-Shot Interactive Segmentation*,
    thesis, IIT Bombay (2021), §2.4.1. With :math:`d` the distance of a pixel to its channel's
    nearest click and :math:`R` = ``norm_radius * spatial_scale``:

    .. math::

        \text{disk: } [d \le R], \qquad \text{otherwise: } \tanh(2 d / R)

    Called as ``maps(x, coords)``: ``coords`` ``(B, 2N, 3)`` rows ``(y, x, order)``, the first
    ``N`` positive, a row with ``max(y, x) < 0`` padding; ``x`` is only read for its
    ``(H, W) = x.shape[2:]``. Returns ``(B, 2, H, W)`` float32, channel 0 positive: that is
    ``click_maps(coords, (H, W), mode="disk" if use_disks else "tanh", radius=norm_radius,
    spatial_scale=spatial_scale)`` (:func:`pixelkernels.click_maps`), the same values as
    ``DistMaps`` (tested against its formula).

    What differs: one pass over the pixels instead of a ``(B·2N, 2, H, W)`` coordinate tensor; a
    channel without a valid click is exactly 0 (disks) or 1 (tanh), where ``DistMaps`` puts its
    padding at squared distance 1e6 (which a disk of radius ≥ 1000 px would cover); ``cpu_mode``
    is accepted and ignored (the backend follows the tensors' device).

    Parameters
    ----------
    norm_radius : float
        The disk radius, or the tanh scale, in pixels before ``spatial_scale``.
    spatial_scale : float, optional
        Multiplies the click coordinates and the radius (default 1.0).
    cpu_mode : bool, optional
        Ignored.
    use_disks : bool, optional
        Binary disks instead of the tanh map (default ``False``).

    Examples
    --------
    >>> import torch, pixelkernels as pk
    >>> maps = pk.nn.ClickMaps(norm_radius=1, use_disks=True)
    >>> coords = torch.tensor([[[1., 1., 0.], [-1., -1., -1.]]])    # one positive click, no negative
    >>> out = maps(torch.zeros(1, 3, 3, 3), coords)
    >>> out[0, 0]
    tensor([[0., 1., 0.],
            [1., 1., 1.],
            [0., 1., 0.]])
    >>> out[0, 1].sum().item()
    0.0
    """

    def __init__(self, norm_radius: float, spatial_scale: float = 1.0, cpu_mode: bool = False, use_disks: bool = False):
        super().__init__()
        self.norm_radius, self.spatial_scale, self.use_disks = norm_radius, spatial_scale, use_disks

    def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        mode = "disk" if self.use_disks else "tanh"
        return click_maps(coords, tuple(x.shape[2:]), mode=mode, radius=self.norm_radius, spatial_scale=self.spatial_scale)

    def extra_repr(self) -> str:
        return f"norm_radius={self.norm_radius!r}, spatial_scale={self.spatial_scale!r}, use_disks={self.use_disks!r}"


__all__ = ["CASLoss", "ClickMaps", "DenseSimilarityLoss", "DiscriminativeLoss", "ISTripletLoss", "MEnetMetricLoss", "StochasticPooling"]

"""Drop-in ``torch.nn.Module`` losses (SPEC §3.1): each constructor takes its functional's
keyword arguments and ``forward`` takes the functional's positional arguments in the same
order; see the functionals in pixelkernels/ops/region_losses.py for formulas and conventions.
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
    """``MEnetMetricLoss(form="centroid", normalize=False, ignore_index=-1)(emb, mask)``:
    seed 001 eq. 3 (or eq. 2 with ``form="pairwise"``); see ``menet_metric_loss``."""

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
    """``CASLoss(alpha=0.5, ignore_index=-1)(scores, regions, num_regions)``: seed 002 eq. 1;
    see ``cas_loss``."""

    _fields = ("alpha", "ignore_index", "backend")

    def __init__(self, *, alpha: float = 0.5, ignore_index: int = -1, backend: str | None = None):
        super().__init__()
        self.alpha, self.ignore_index, self.backend = alpha, ignore_index, backend

    def forward(self, scores: torch.Tensor, regions: torch.Tensor, num_regions: int) -> torch.Tensor:
        return cas_loss(scores, regions, num_regions, alpha=self.alpha, ignore_index=self.ignore_index,
                        backend=self.backend)  # fmt: skip


class DiscriminativeLoss(_Loss):
    """``DiscriminativeLoss(delta_v=0.5, delta_d=1.5, alpha=1.0, beta=1.0, gamma=0.001,
    ignore_index=-1)(emb, instances, num_instances)``: De Brabandere et al. 2017; see
    ``discriminative_loss``."""

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
    """``ISTripletLoss(num_samples=5000, margin=3.0, squared=False, mining="random",
    ignore_index=-1)(emb, mask)``: seed 000 eq. 4; see ``is_triplet_loss``. ``generator``
    (optional, on the mask's device; or a (B,) int64 tensor of per-image seeds) makes the
    sampling reproducible; it is not a parameter or buffer of the module (not saved in its
    state_dict)."""

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
    """``StochasticPooling(k, num_classes, ignore_index=-1)(emb, labels)`` -> (vectors (B, C·k, D),
    labels (B, C·k)): seed 003 eq. 2; see ``stochastic_pool``. ``generator`` as ISTripletLoss's."""

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
    """``DenseSimilarityLoss(momentum=0.1, eps=1e-5)(x, x_labels, y, y_labels)``: seed 003's
    training objective, batch-norm over every valid entry of Ψ = <x_i, y_j> then BCE with logits
    (see ``dense_similarity_loss``). Owns ``weight`` (1) and ``bias`` (0), shape (1,), and the
    buffers ``running_mean`` (0), ``running_var`` (1), ``num_batches_tracked`` as
    ``torch.nn.BatchNorm1d(1)`` does; ``.train()`` uses and tracks the batch statistics,
    ``.eval()`` the running ones."""

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
    """``ClickMaps(norm_radius, spatial_scale=1.0, use_disks=False)(x, coords)``: a drop-in for
    the ``DistMaps`` module of f-BRS/RITM: coords (B, 2N, 3) rows (y, x, order), the first N
    positive, a row with max(y, x) < 0 padding; x is only read for its (H, W) = x.shape[2:]. ->
    (B, 2, H, W) float32: ``click_maps(coords, (H, W), mode="disk" if use_disks else "tanh",
    radius=norm_radius, spatial_scale=spatial_scale)``, the same values as DistMaps (tested
    against its formula). What differs: one pass over the pixels instead of a (B·2N, 2, H, W)
    coordinate tensor; a channel without a valid click is exactly 0 (disks) and 1 (tanh), where
    DistMaps puts its padding at squared distance 1e6 (a disk of radius >= 1000 px would cover
    it); ``cpu_mode`` is accepted and ignored (the backend follows the tensors' device)."""

    def __init__(self, norm_radius: float, spatial_scale: float = 1.0, cpu_mode: bool = False, use_disks: bool = False):
        super().__init__()
        self.norm_radius, self.spatial_scale, self.use_disks = norm_radius, spatial_scale, use_disks

    def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        mode = "disk" if self.use_disks else "tanh"
        return click_maps(coords, tuple(x.shape[2:]), mode=mode, radius=self.norm_radius, spatial_scale=self.spatial_scale)

    def extra_repr(self) -> str:
        return f"norm_radius={self.norm_radius!r}, spatial_scale={self.spatial_scale!r}, use_disks={self.use_disks!r}"


__all__ = ["CASLoss", "ClickMaps", "DenseSimilarityLoss", "DiscriminativeLoss", "ISTripletLoss", "MEnetMetricLoss", "StochasticPooling"]

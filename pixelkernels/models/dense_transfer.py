"""Dense label transfer by similarity learning (Najafi et al., *Similarity Learning for Dense
Label Transfer*, 2018 DAVIS Challenge on Video Object Segmentation, CVPR workshops, 2018, §2):
:class:`DenseTransferNet`."""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel
from .backbone import make_backbone


class DenseTransferNet(PixelModel):
    r"""A Siamese pixel embedding trained to tell whether two pixels of two frames share a label.

    After Najafi, Kulharia, Ajanthan and Torr, *Similarity Learning for Dense Label Transfer*,
    2018 DAVIS Challenge on Video Object Segmentation (CVPR workshops, 2018), §2. One embedding
    network runs over both frames and gives pixel embeddings at half the input's size (the
    paper's :math:`h = H/2, w = W/2`). Stochastic pooling keeps k pixels of each class of each
    frame (:func:`pixelkernels.stochastic_pool`; eq. (2), k = 100 in the paper's experiments),
    and the loss is the binary cross-entropy of the batch-normalised inner products of the pooled
    pairs against "same class" (eq. (1) with the batch-norm of the paper's Fig. 2;
    :class:`pixelkernels.nn.DenseSimilarityLoss`, which never forms the pairs' matrix). Trains on
    ``"frames"`` samples: ``image_a``, ``image_b`` (B, 3, H, W) and ``labels_a``, ``labels_b``
    (B, H, W), class ids ``0 .. num_classes - 1``.

    Inference (§2.2.1, eq. (3)) transfers a reference frame's labels to a query frame
    (:func:`pixelkernels.label_transfer`): its pooled pixels score every query pixel with the
    batch-norm (eval statistics) folded into a scale and a bias and a sigmoid, averaged per class
    (the authors' code's mean; the printed eq. (3) sums, which favours the class with more
    pooled pixels), and each query pixel takes the best class:

    .. math::

        l_i = \arg\max_c \; \operatorname{mean}_{j \in R_c} \,
        \sigma\big(a \, \langle q_i, r_j \rangle + b\big).

    Parameters
    ----------
    backbone : str
        ``"unet"`` (default) or ``"resnet18"`` / ``"resnet34"`` (need torchvision).
    width : int
        Channels of the backbone's full-resolution features, doubled at each coarser level
        (default 32).
    depth : int
        The U-Net's stride-2 stages (default 4; ``"unet"`` only).
    emb_dim : int
        The embedding's channels (default 32).
    k : int
        Pixels pooled per class and frame (default 100, the paper's).
    num_classes : int
        Label ids run over ``0 .. num_classes - 1`` (default 5, the synthetic data's).
    sync_statistics : bool
        Under DistributedDataParallel, let the loss's batch-norm see the global batch: the pooled
        pixels (k·C·D numbers an image) are gathered from every process by a differentiable
        all-gather, so a DDP step equals one process's (default ``True``; ``False`` keeps the
        statistics per process).

    Notes
    -----
    ``forward(image)`` returns the embedding (B, D, ceil(H/2), ceil(W/2));
    ``transfer(ref_image, ref_labels, query_image, generator=None)`` returns the query's labels
    (B, ceil(H/2), ceil(W/2)) int64 and their scores (B, C, ceil(H/2), ceil(W/2)); call
    ``eval()`` first, so that the batch-norm uses its running statistics (in train mode only its
    affine part is folded in). ``predict(batch)`` transfers ``labels_a`` to ``image_b``.
    """

    task = "frames"

    def __init__(self, *, backbone: str = "unet", width: int = 32, depth: int = 4, emb_dim: int = 32,
                 k: int = 100, num_classes: int = 5, sync_statistics: bool = True):  # fmt: skip
        super().__init__()
        self.net = make_backbone(backbone, 3, width, depth)
        self.embed = nn.Conv2d(self.net.channels, emb_dim, 3, stride=2, padding=1)
        self.similarity = pk.nn.DenseSimilarityLoss()
        self.k, self.num_classes, self.sync_statistics = k, num_classes, sync_statistics

    def _global(self, t: torch.Tensor) -> torch.Tensor:
        """t concatenated over the DDP processes along the batch, differentiably (the gradient of
        each process's copy summed back to its owner), when ``sync_statistics`` and a process
        group of several is running; else t."""
        import torch.distributed as dist

        if not self.sync_statistics or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return t
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(t.contiguous()), 0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> embedding (B, D, ceil(H/2), ceil(W/2))."""
        return self.embed(self.net(image))

    @staticmethod
    def half(labels: torch.Tensor) -> torch.Tensor:
        """Labels at the embedding's size (the pixel each embedding's window is centred on)."""
        return labels[:, ::2, ::2].contiguous()

    def loss(self, batch: dict, generator: torch.Generator | None = None, step: int = 0) -> torch.Tensor:
        ex, ey = self(batch["image_a"]), self(batch["image_b"])
        # Per-image seeds: frame b draws with other seeds than frame a (bit 62 set; seeds are < 2^62).
        gen_b = generator ^ (1 << 62) if isinstance(generator, torch.Tensor) else generator
        x, xl = pk.stochastic_pool(ex, self.half(batch["labels_a"]), self.k, self.num_classes, generator=generator)
        y, yl = pk.stochastic_pool(ey, self.half(batch["labels_b"]), self.k, self.num_classes, generator=gen_b)
        # Under DDP every process takes the loss of the global batch's pooled pixels: the
        # batch-norm's statistics are the global batch's, as in one process (SyncBatchNorm's
        # answer). Each process's gradient to its own pixels is then the sum over the P
        # identical losses, P times one loss's, which DDP's mean over processes divides back.
        x, xl, y, yl = (self._global(t) for t in (x, xl, y, yl))
        return self.similarity(x, xl, y, yl)

    @torch.no_grad()
    def transfer(self, ref_image, ref_labels, query_image, generator: torch.Generator | None = None):
        """The query frame's labels (B, H/2, W/2) and scores (B, C, H/2, W/2), transferred from
        the reference frame's labels (see the class's notes)."""
        s = self.similarity
        ref = self(ref_image)
        x, xl = pk.stochastic_pool(ref, self.half(ref_labels), self.k, self.num_classes, generator=generator)
        w, b = s.weight.double(), s.bias.double()
        if not s.training:
            inv = torch.rsqrt(s.running_var.double() + s.eps)
            w, b = w * inv, b - s.running_mean.double() * w * inv
        # label_transfer takes Python numbers: this one host read is inference only, not training.
        scale, bias = float(w), float(b)
        return pk.label_transfer(self(query_image), x, xl, self.num_classes, scale=scale, bias=bias,
                                 activation="sigmoid", reduce="mean")  # fmt: skip

    def predict(self, batch: dict):
        return self.transfer(batch["image_a"], batch["labels_a"], batch["image_b"])[0]

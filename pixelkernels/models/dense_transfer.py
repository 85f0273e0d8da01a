"""Dense label transfer by similarity learning (seed 003 §2): a Siamese embedding net over two
frames gives pixel embeddings at half the input's size (the paper's h = H/2, w = W/2); stochastic
pooling keeps k pixels per object class of each frame (eq. 2, k = 100 in §3), and the loss is
binary cross-entropy on the batch-normalised inner products of the pooled pairs, the target
being "same class" (eq. 1 with Fig. 2's batch-norm) — ``DenseSimilarityLoss``, which never forms
the pairs' matrix. Inference (§2.2.1): the reference frame's pooled pixels and their labels are
transferred to every query pixel with ``label_transfer``, the batch-norm (eval statistics)
folded into its scale and bias, scored with a sigmoid and averaged per class (the authors'
code's reduce="mean"; eq. 3's plain sum favours the class with more pooled pixels). Under DDP
the loss's batch-norm takes the global batch's statistics (``sync_statistics``, the pooled
pixels gathered from every process: k·C·D numbers an image), so a DDP step is one process's.
"""

from __future__ import annotations

import torch
from torch import nn

import pixelkernels as pk

from ._base import PixelModel
from .backbone import make_backbone


class DenseTransferNet(PixelModel):
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
        """image (B, 3, H, W) -> embedding (B, D, ceil(H/2), ceil(W/2))."""
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
        """-> labels (B, H/2, W/2) of the query frame and their scores (B, C, H/2, W/2), from the
        reference frame's labels. Uses the running batch-norm statistics (call ``eval()`` first
        for a model's inference; in train mode the batch-norm's affine part alone)."""
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

"""Triton backend of triplet_hinge: placeholder (the reference) until the kernels land."""

import torch

from .._schema import triton_variant
from ..reference.triplet_hinge import triplet_hinge as _reference


@triton_variant("triplet_hinge")
def triplet_hinge_op(emb, anchor, positive, negative, margin, squared, hard):
    loss, p, n = _reference(emb, anchor, positive, negative, margin, squared, hard)
    return loss.contiguous(), p.contiguous(), n.contiguous()


@triton_variant("triplet_hinge_backward")
def triplet_hinge_backward_op(grad_loss, emb, anchor, positive_used, negative_used, margin, squared):
    e = emb.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, _, _ = _reference(e, anchor, positive_used, negative_used, margin, squared, False)
        (g,) = torch.autograd.grad(loss, e, grad_loss)
    return g

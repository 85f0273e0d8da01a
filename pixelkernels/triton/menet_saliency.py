"""menet_saliency on Triton: no kernel of its own, masked_mean's and center_distance's Triton
launchers composed as csrc/menet_saliency.cpp composes the C++ ops: the backward hands
center_distance's emb gradient to masked_mean's backward kernel, which adds it (ADD) before its
one rounding."""

from .._schema import triton_variant
from . import center_distance, masked_mean


@triton_variant("menet_saliency")
def menet_saliency_op(emb, weights, squared, check):
    # the weights' check (`check`) is masked_mean's: its forward reads them
    center, mass = masked_mean.masked_mean_op(emb, weights, 0.0, True, check)
    return center_distance.center_distance_op(emb, center, squared), center, mass


@triton_variant("menet_saliency_backward")
def menet_saliency_backward_op(grad_saliency, emb, weights, center, mass, squared):
    # emb's first gradient unrounded (the accumulation type), rounded once with the second
    grad_emb, grad_center = center_distance.center_distance_backward_op(grad_saliency, emb, center, squared, True)
    return masked_mean.masked_mean_backward_op(grad_center, emb, weights, center, mass, 0.0, True, grad_emb)

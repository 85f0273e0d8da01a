"""pixel_normalize: per-pixel L2 normalisation of a (B, D, H, W) map (SPEC §3.1,
menet_metric_loss ``normalize=True``, as the MEnet authors' code normalises each pixel's
feature vector before the metric loss).

    normalized[b, :, p] = emb[b, :, p] / max(||emb[b, :, p]||, eps)

the same values and gradients as ``torch.nn.functional.normalize(emb, dim=1, eps=eps)``, in
one read and one write of the map (channels_last stays channels_last). ``upcast=True``
returns float32 for half emb (the statistics dtype; other dtypes are unchanged), so a loss
that reduces the normalised map (menet_metric_loss) sees no half rounding of it: the only
rounding to half is the final write of emb's gradient. It writes twice the bytes of a half map.
"""

from __future__ import annotations

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype
from ..reference.pixel_normalize import pixel_normalize as _reference


def _fake(emb, eps, upcast):
    return torch.empty_like(emb, dtype=stats_dtype(emb.dtype) if upcast else emb.dtype)


def _fake_backward(grad_normalized, emb, eps, upcast):
    return torch.empty_like(emb)


OP = _op.define(
    "pixel_normalize",
    reference=_reference,
    fake=_fake,
    outputs=("normalized",),
    backward_fake=_fake_backward,
    grad_inputs=("emb",),
)


def pixel_normalize(
    emb: torch.Tensor, *, eps: float = 1e-12, upcast: bool = False, backend: str | None = None
) -> torch.Tensor:
    """emb (B, D, H, W) -> emb / max(||emb||_2 over D, eps), same shape and layout; emb's
    dtype, or float32 for half emb with ``upcast``."""
    _checks.dense_map(emb, "emb")
    eps = _checks.real(eps, "eps", minimum=0.0, strict=True)
    backend = _op.backend_for(OP, backend, emb, "emb")
    return _op.run(OP, backend, emb, eps, _checks.boolean(upcast, "upcast"))

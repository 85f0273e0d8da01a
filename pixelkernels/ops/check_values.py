"""check_values (csrc/common/check_values.h): the value check of labels and index sets that
pixelkernels/_checks.py runs before the kernels, in one pass and one launch.

    values: a list of value sets (any shape, one integer dtype, one device), what: a message per set;
    every v must satisfy low <= v < high or v == ignore_index

CPU: ValueError "<what[i]>; found <v> at flat index <i> (<n> bad values in all). <hint>" from the pass itself (no extra
sync: the CPU has the verdict at hand), for the first set in list order that holds one. CUDA: one
launch for up to four sets (triplet_hinge's three index sets); the failing thread prints <what[i]>,
the value and its index, and fails a device-side assert (the stream stops; the host never waits). Triton's variant
and the torch.compile path: aminmax and torch._assert_async (pixelkernels/triton/check_values.py).
Internal: the public ops call it through _checks.label_values / index_values.
"""

from __future__ import annotations

from .. import _op
from ..reference.check_values import check_values as _reference


def _fake(values, low, high, ignore_index, what, hint):
    return None


OP = _op.define("check_values", reference=_reference, fake=_fake, outputs=())

"""Reference of check_values (csrc/common/check_values.h): the value check of labels and index
sets, in torch, with the precise message (one host sync).

    bad(v) = not (low <= v < high) and v != ignore_index      for every value v of each set values[i]

The sets are checked in list order; the first holding a bad value raises ValueError "<what[i]>; found <v> at flat index <i> (<n> bad values in all).
<hint>", with v the first bad value in flat (row-major) order, i its index and n the count of
every bad value (not only of those equal to v). Bounds are compared as Python ints: a uint8 tensor checked
against high = 256 must not wrap.
"""

from __future__ import annotations

import torch


def check_values(values, low: int, high: int, ignore_index: int, what, hint: str) -> None:
    """values: a list of tensors (or one tensor), what: a message per tensor (or one): the sets are
    checked in list order, the first holding a bad value raises."""
    if isinstance(values, torch.Tensor):
        values, what = [values], [what]
    if len(what) != len(values):
        raise ValueError(f"check_values: what must name each of the {len(values)} value sets, got {len(what)} messages")
    for t, w in zip(values, what):
        _check_one(t, low, high, ignore_index, w, hint)


def _check_one(values: torch.Tensor, low: int, high: int, ignore_index: int, what: str, hint: str) -> None:
    if values.numel() == 0:
        return
    mn, mx = (int(x) for x in torch.aminmax(values))
    if low <= mn and mx < high:
        return
    v = values.reshape(-1).long()
    bad = ((v < low) | (v >= high)) & (v != ignore_index)
    n = int(bad.sum())
    if n:
        i = int(bad.to(torch.int8).argmax())
        raise ValueError(f"{what}; found {int(v[i])} at flat index {i} ({n} bad value{'' if n == 1 else 's'} in all). "
                         f"{hint}")  # fmt: skip

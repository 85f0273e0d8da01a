"""Reference of check_values (csrc/common/check_values.h): the value check of labels and index
sets, in torch, with the precise message (one host sync).

    bad(v) = not (low <= v < high) and v != ignore_index      for every value v of `values`

A bad value raises ValueError "<what>; found <first bad value> (<n> such values). <hint>", the
first in flat (row-major) order. Bounds are compared as Python ints: a uint8 tensor checked
against high = 256 must not wrap.
"""

from __future__ import annotations

import torch


def check_values(values: torch.Tensor, low: int, high: int, ignore_index: int, what: str, hint: str) -> None:
    if values.numel() == 0:
        return
    mn, mx = (int(x) for x in torch.aminmax(values))
    if low <= mn and mx < high:
        return
    v = values.reshape(-1).long()
    bad = ((v < low) | (v >= high)) & (v != ignore_index)
    n = int(bad.sum())
    if n:
        first = int(v[bad][0])
        raise ValueError(f"{what}; found {first} ({n} such value{'' if n == 1 else 's'}). {hint}")

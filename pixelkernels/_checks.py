"""The one validation layer (SPEC §2 Errors). Kernels trust what passes here.

Messages name the argument, the expected and the actual value. Label *values* are
checked only when ``checks_enabled()`` (one host sync); with checks off, or while
compiling / capturing a CUDA graph, bad labels are treated as ignored by every kernel.
"""

from __future__ import annotations

import contextlib
import numbers
import operator

import torch

from ._dtypes import FLOAT_TYPES, HALF_TYPES, LABEL_TYPES
from ._dtypes import name as _dtype_name

_checks = True


def _numpy_bool(v) -> bool:
    return type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_")


def set_checks(enabled: bool) -> None:
    """Turn the host-syncing label-value checks on or off (default on). Only a bool is taken:
    bool("false") is True, so a string would silently leave the checks on."""
    global _checks
    ok = isinstance(enabled, bool) or _numpy_bool(enabled)
    if not ok and isinstance(enabled, int) and enabled in (0, 1):
        ok = True
    if not ok:
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    _checks = bool(enabled)


def checks_enabled() -> bool:
    return _checks


@contextlib.contextmanager
def use_checks(enabled: bool):
    """``set_checks(enabled)`` inside the block, the previous setting restored after (as
    ``use_backend`` does for the backend)."""
    prev = _checks
    set_checks(enabled)
    try:
        yield
    finally:
        set_checks(prev)


def _is_fake(t: torch.Tensor) -> bool:
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:  # pragma: no cover - very old torch
        return False
    return is_fake(t)


def _value_checks_active(t: torch.Tensor) -> bool:
    """Value checks need real data and one host sync: not while tracing, on meta or fake
    tensors, or while a CUDA graph is being captured."""
    if not _checks or torch.compiler.is_compiling() or t.device.type == "meta" or _is_fake(t):
        return False
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    return True


def strided(t: torch.Tensor, name: str, shape_doc: str = "") -> torch.Tensor:
    """A dense tensor: sparse and other layouts are refused here, not by a kernel's stride math."""
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor{' ' + shape_doc if shape_doc else ''}, got layout {t.layout}")
    return t


def tensor(t, name: str, *, ndim: int, dtypes, shape_doc: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    strided(t, name, shape_doc)
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims {shape_doc}, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(_dtype_name(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {_dtype_name(t.dtype)}")
    return t


MASK_TYPES = (torch.bool, *LABEL_TYPES)


def mask_like(t, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """A (B, H, W) bool or integer mask (true where nonzero) of `like`'s shape, on its device."""
    tensor(t, name, ndim=3, dtypes=MASK_TYPES, shape_doc="(B, H, W) bool or integer")
    same_device((like_name, like), (name, t))
    dims_match(name, t.shape, like.shape, f"{like_name}'s shape")
    return t


def dense_map(t, name: str) -> torch.Tensor:
    """A (B, D, H, W) float map."""
    return tensor(t, name, ndim=4, dtypes=FLOAT_TYPES, shape_doc="(B, D, H, W)")


def label_map(t, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """(B, H, W) integer labels for the (B, ·, H, W) map `like`, on its device."""
    tensor(t, name, ndim=3, dtypes=LABEL_TYPES, shape_doc="(B, H, W)")
    same_device((like_name, like), (name, t))
    B, H, W = like.shape[0], like.shape[2], like.shape[3]
    dims_match(name, t.shape, (B, H, W), "shape (B, H, W) =")
    return t


def labelled_map(
    emb, emb_name: str, labels, labels_name: str, R, R_name: str, ignore_index
) -> tuple[int, int]:
    """A (B, D, H, W) float map with its (B, H, W) labels of R regions: -> (R, ignore_index).
    The label values are checked separately (label_values: a scan of the labels)."""
    dense_map(emb, emb_name)
    label_map(labels, labels_name, emb, emb_name)
    return positive_int(R, R_name), plain_int(ignore_index, "ignore_index")


def same_device(*named: tuple[str, torch.Tensor]) -> None:
    (n0, t0), *rest = named
    for n, t in rest:
        if t.device != t0.device:
            raise ValueError(f"{n} must be on the same device as {n0} ({t0.device}), got {t.device}")


def dims_match(name: str, got, want, what: str) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{name} must have {what} {tuple(want)}, got {tuple(got)}")


def _index(v, name: str) -> int:
    """An integer (int, numpy or 0-dim integer tensor: anything operator.index takes), not a bool."""
    if isinstance(v, bool) or _numpy_bool(v):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(v).__name__}") from None


def boolean(v, name: str) -> bool:
    """A flag: a bool (or numpy bool). Anything else is refused: bool("false") is True and
    bool(0.5) is True, so a string or a number would silently pick a branch."""
    if isinstance(v, bool) or _numpy_bool(v):
        return bool(v)
    raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")


def choice(v, name: str, allowed: tuple):
    """One of `allowed` (ints or strings), compared by type as well as value: 1.0 and True equal
    1 in Python, and "1" is not the int 1."""
    kinds = {type(a) for a in allowed}
    if kinds == {int}:
        v = _index(v, name)
    elif kinds == {str} and not isinstance(v, str):
        raise TypeError(f"{name} must be one of {allowed}, got {type(v).__name__} {v!r}")
    if v not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {v!r}")
    return v


def positive_int(v, name: str) -> int:
    """A size that shapes an output and indexes inside kernels: 1 <= v < 2^31."""
    v = _index(v, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {v}")
    if v >= 2**31:
        raise ValueError(f"{name} must be < 2^31, got {v}")
    return v


def plain_int(v, name: str) -> int:
    """Any int64 value."""
    v = _index(v, name)
    if not -(2**63) <= v < 2**63:
        raise ValueError(f"{name} must fit in int64, got {v}")
    return v


def real(v, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite float (an int is accepted), at least `minimum` (greater if `strict`)."""
    if isinstance(v, bool) or _numpy_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {v}")
    return v


def float_map(t, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """(B, H, W) float values (a mask, weights) for the (B, ·, H, W) map `like`, on its device."""
    tensor(t, name, ndim=3, dtypes=FLOAT_TYPES, shape_doc="(B, H, W)")
    same_device((like_name, like), (name, t))
    dims_match(name, t.shape, (like.shape[0], like.shape[2], like.shape[3]), "shape (B, H, W) =")
    return t


def nonnegative_values(t: torch.Tensor, name: str) -> None:
    """No negative value (NaN passes: it propagates). Costs one host sync, like label_values."""
    if t.numel() == 0 or not _value_checks_active(t):
        return
    if bool((t < 0).any()):
        raise ValueError(
            f"{name} must be >= 0, found {float(t.min())}. pixelkernels.set_checks(False) skips this check."
        )


def backend_dtype(t: torch.Tensor, name: str, backend: str) -> None:
    """float16/bfloat16 run on the GPU backends (cuda, triton) and the reference only."""
    if t.dtype in HALF_TYPES and backend == "cpu":
        raise TypeError(
            f"{name} dtype {_dtype_name(t.dtype)} is supported by the cuda, triton and "
            "reference backends, not by cpu; cast to float32"
        )


def label_values(labels: torch.Tensor, name: str, num: int, ignore_index: int) -> None:
    """Labels must lie in [0, num) or equal ignore_index. Costs one host sync."""
    if labels.numel() == 0 or not _value_checks_active(labels):
        return
    # When ignore_index touches [0, num) the valid values form one interval, so a single
    # min/max pass (one sync) settles it; the full mask runs only when that fails.
    lo, hi = 0, num
    if -1 <= ignore_index <= num:
        lo, hi = min(lo, ignore_index), max(hi, ignore_index + 1)
    # Compare in int64: bounds such as num = 256 would wrap in the labels' own dtype (uint8).
    mn, mx = (t.long() for t in torch.aminmax(labels))
    if bool((mn >= lo) & (mx < hi)):
        return
    labels = labels.long()
    bad = ((labels < 0) | (labels >= num)) & (labels != ignore_index)
    if bool(bad.any()):
        first = labels[bad][0]
        raise ValueError(
            f"{name} values must be in [0, {num}) or equal ignore_index={ignore_index}; "
            f"found {int(first)} ({int(bad.sum())} such pixels). "
            "pixelkernels.set_checks(False) skips this check (bad labels are then ignored)."
        )


def index_set(t, name: str, emb: torch.Tensor, emb_name: str, K: int | None = None) -> torch.Tensor:
    """(B, K) int64 flat pixel indices (-1: padding) for the (B, ·, H, W) map `emb`, on its device;
    K, when given, is the size the other index sets have."""
    tensor(t, name, ndim=2, dtypes=(torch.int64,), shape_doc="(B, K) of flat pixel indices")
    same_device((emb_name, emb), (name, t))
    if t.shape[0] != emb.shape[0]:
        raise ValueError(f"{name} must have B = {emb.shape[0]} rows ({emb_name}'s batch), got shape {tuple(t.shape)}")
    if K is not None and t.shape[1] != K:
        raise ValueError(f"{name} must have shape {(emb.shape[0], K)} (as the other index sets), got {tuple(t.shape)}")
    return t


def index_values(t: torch.Tensor, name: str, P: int) -> None:
    """Indices must lie in [0, P) or equal -1 (padding). Costs one host sync."""
    if t.numel() == 0 or not _value_checks_active(t):
        return
    mn, mx = (int(v) for v in torch.aminmax(t))
    if mn >= -1 and mx < P:
        return
    bad = t[(t < -1) | (t >= P)][0]
    raise ValueError(
        f"{name} values must be pixel indices in [0, {P}) or -1 (padding); found {int(bad)}. "
        "pixelkernels.set_checks(False) skips this check (out-of-range slots then take no part)."
    )


def generator(g, like: torch.Tensor, like_name: str, owner: str) -> None:
    """A sampler's `generator`: None, a torch.Generator on like's device type, or a (B,) int64
    tensor of per-image seeds on like's device (B = like.shape[0]; reference/sample_pixels.py
    draw_keys). `owner`: like's possessive in messages ("the labels'")."""
    if g is None:
        return
    if isinstance(g, torch.Generator):
        if g.device.type != like.device.type:
            raise ValueError(f"generator must be on {owner} device ({like.device}), got {g.device}")
        return
    if isinstance(g, torch.Tensor):
        strided(g, "generator (per-image seeds)")
        if g.dtype != torch.int64 or g.ndim != 1 or g.shape[0] != like.shape[0]:
            raise ValueError(
                f"generator as per-image seeds must be an int64 tensor of shape ({like.shape[0]},) (one per image of "
                f"{like_name}), got {_dtype_name(g.dtype)} of shape {tuple(g.shape)}"
            )
        same_device(("generator", g), (like_name, like))
        return
    raise TypeError(f"generator must be a torch.Generator or a tensor of per-image seeds, got {type(g).__name__}")

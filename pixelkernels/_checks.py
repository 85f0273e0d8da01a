"""The one validation layer (the conventions page of the docs). Kernels trust what passes here.

Messages name the argument, the expected and the actual value. Label, index and weight *values*
are checked in one of three modes (``set_checks``; docs, conventions, "Checks"):

- ``"async"`` (the default; ``True``): on a GPU the verdict stays on the device, labels and
  indices in one pass of the extension's check_values kernel (without it, and for weights: a
  reduction and ``torch._assert_async``): a bad value stops the stream with a device-side
  assert (as ``nll_loss`` does with a bad target), and the host never waits. CPU tensors, which
  cost no device sync, get the precise ``ValueError`` at once. Under CUDA-graph capture and
  ``torch.compile`` every device takes the async form: the check is captured and compiled too.
- ``"sync"``: the precise ``ValueError`` (offending value, count) on every device, at one host
  sync per check; for debugging. Under capture or compilation it falls back to ``"async"``.
- ``"off"`` (``False``): no value check; bad labels are then treated as ignored by every
  kernel, and no kernel reads or writes out of bounds either way.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator

import torch

from ._dtypes import FLOAT_TYPES, HALF_TYPES, LABEL_TYPES
from ._dtypes import name as _dtype_name

MODES = ("async", "sync", "off")
_mode = "async"
# Tests set this to route CPU tensors through the async form, so that a patched Tensor.item
# proves the GPU path makes no host sync without a GPU (tests/test_host_sync.py).
_ASYNC_ON_CPU = False


def _numpy_bool(v) -> bool:
    return type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_")


def _as_mode(mode) -> str:
    if isinstance(mode, str):
        if mode in MODES:
            return mode
    elif isinstance(mode, bool) or _numpy_bool(mode) or (isinstance(mode, int) and mode in (0, 1)):
        return "async" if mode else "off"
    # bool("false") is True: a string or number outside the list would silently pick a mode
    raise TypeError(f"checks must be a bool or one of {', '.join(map(repr, MODES))}, got {mode!r}")


def set_checks(mode) -> None:
    """The value checks' mode: "async" (default; True), "sync" or "off" (False); see the module
    docstring. Anything else is refused."""
    global _mode
    _mode = _as_mode(mode)


def checks_enabled() -> bool:
    """Whether values are checked (the mode is "async" or "sync")."""
    return _mode != "off"


def checks_mode() -> str:
    return _mode


@contextlib.contextmanager
def use_checks(mode):
    """``set_checks(mode)`` inside the block, the previous mode restored after (as
    ``use_backend`` does for the backend)."""
    prev = _mode
    set_checks(mode)
    try:
        yield
    finally:
        set_checks(prev)


_fake_test = None


def _is_fake(t: torch.Tensor) -> bool:
    global _fake_test
    if type(t) is torch.Tensor:  # a fake tensor is a subclass: the common case in 0.05 us, not 1
        return False
    if _fake_test is None:  # imported once: an import statement per check cost ~0.5 us
        try:
            from torch._subclasses.fake_tensor import is_fake as _fake_test
        except ImportError:  # pragma: no cover - very old torch
            _fake_test = lambda t: False  # noqa: E731
    return _fake_test(t)


def _value_check_form(t: torch.Tensor) -> str | None:
    """How to check t's values: "sync" (the precise ValueError), "async" (on the device, no
    host sync), "traced" (the async form, inside torch.compile's trace) or None (no check: the
    checks are off, or t holds no data)."""
    if _mode == "off" or t.numel() == 0 or t.device.type == "meta":
        return None
    if torch.compiler.is_compiling():
        return "traced"  # torch._assert_async lands in the graph
    if _is_fake(t):
        return None  # a fake/meta pass outside compilation (opcheck, shape propagation)
    if t.is_cuda and torch.cuda.is_current_stream_capturing():
        return "async"  # captured with the graph, run at every replay
    if _mode == "sync" or (t.device.type == "cpu" and not _ASYNC_ON_CPU):
        return "sync"
    return "async"


def _assert_on_device(ok: torch.Tensor, message: str) -> None:
    """ok: a one-element bool tensor on the device; stops the stream when false (no host sync).
    No double quote in `message`: inductor's C++ code pastes it into a string literal unescaped."""
    assert '"' not in message
    torch._assert_async(ok, message)


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
    if type(v) is int:  # the common case first (a bool's type is bool): every op call checks a few
        return v
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
    if type(v) is str and v in allowed:  # the common case first; a str matches only a str
        return v
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
    if type(v) is not float and type(v) is not int:  # a bool's type is bool: refused below
        if isinstance(v, bool) or _numpy_bool(v) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    v = float(v)
    # v - v is 0 exactly for a finite v (inf - inf and NaN give NaN); not math.isfinite, which
    # dynamo under torch.compile(dynamic=True) does not trace ("torch.* op returned non-Tensor")
    if v - v != 0.0:
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
    """No negative value (NaN passes: it propagates). See the module docstring for the modes."""
    form = _value_check_form(t)
    if form is None:
        return
    hint = "pixelkernels.set_checks('off') skips this check."
    if form != "sync":
        # NaN passes: amin(NaN) is NaN and NaN >= 0 is false, so compare the negation
        _assert_on_device(~(torch.amin(t) < 0), f"{name} must be >= 0 (checked on the device). {hint}")
        return
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, found {float(t.min())}. {hint}")


def nonnegative_in_kernel(t: torch.Tensor, name: str) -> str | None:
    """nonnegative_values for an op whose kernels check t's values as they read them (masked_mean's
    `check`): `name`, for the kernels to check, where that is the form the mode asks for (CPU
    tensors in every form: the CPU kernel raises the precise ValueError at no sync; the async and
    traced forms on a device: a device-side assert, no launch of its own); else None, the check
    already made here (the "sync" form on a device, or no check at all)."""
    form = _value_check_form(t)
    if form is None:
        return None
    if form != "sync" or t.device.type == "cpu":
        return name
    nonnegative_values(t, name)
    return None


def backend_dtype(t: torch.Tensor, name: str, backend: str) -> None:
    """float16/bfloat16 run on the GPU backends (cuda, triton) and the reference only."""
    if t.dtype in HALF_TYPES and backend == "cpu":
        raise TypeError(
            f"{name} dtype {_dtype_name(t.dtype)} is supported by the cuda, triton and "
            "reference backends, not by cpu; cast to float32"
        )


_LABEL_HINT = "pixelkernels.set_checks('off') skips this check (bad labels are then ignored)."
_INDEX_HINT = "pixelkernels.set_checks('off') skips this check (out-of-range slots then take no part)."
_MESSAGES: dict[tuple, str] = {}  # a check's message by (template, arguments): formatted once


def _message(template: str, *args) -> str:
    key = (template, *args)
    what = _MESSAGES.get(key)
    if what is None:
        if len(_MESSAGES) > 4096:  # bounded, for sizes that change at every call
            _MESSAGES.clear()
        what = _MESSAGES[key] = template.format(*args)
    return what


def label_values(labels: torch.Tensor, name: str, num: int, ignore_index: int) -> None:
    """Labels must lie in [0, num) or equal ignore_index. See the module docstring for the modes."""
    what = _message("{} values must be in [0, {}) or equal ignore_index={}", name, num, ignore_index)
    _values_in_range(labels, 0, num, ignore_index, what, _LABEL_HINT)


def label_values_in_kernel(labels: torch.Tensor, name: str, num: int, ignore_index: int, backend: str) -> str | None:
    """label_values for an op that folds the check into its forward (`check`: region_stats,
    region_hinge, centroid_hinge; csrc/label_check.h): the message, for the op to check the
    labels as it reads them, where that is the form the mode asks for on a compiled backend (CPU
    tensors in every form: the op's CPU pass raises the precise ValueError at no sync; async and
    traced on a device: a device-side assert, no launch of its own); else None, the check made
    here (the reference backend; the "sync" form on a device; no check at all)."""
    form = _value_check_form(labels)
    if form is None:
        return None
    what = _message("{} values must be in [0, {}) or equal ignore_index={}", name, num, ignore_index)
    if backend != "reference" and (form != "sync" or labels.device.type == "cpu"):
        return what
    _values_in_range(labels, 0, num, ignore_index, what, _LABEL_HINT)
    return None


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


def index_values(sets, names, P: int) -> None:
    """Indices must lie in [0, P) or equal -1 (padding): each tensor of `sets` (one dtype, one
    device) named by the same position of `names`, all in one check (one launch of check_values
    on a GPU). See the module docstring for the modes."""
    # Under torch.compile P may be a symbol (dynamic shapes), which cannot go into the message (a
    # constant for torch._assert_async; dynamo sees a symbol's type as int): the bound is named
    bound = "H W" if torch.compiler.is_compiling() else P
    whats = tuple(_message("{} values must be pixel indices in [0, {}) or -1 (padding)", n, bound) for n in names)
    _values_in_range(tuple(sets), 0, P, -1, whats, _INDEX_HINT)


# The extension's one-pass check (pixelkernels/ops/check_values.py) by device type, looked up once.
_KERNELS: dict[str, object] = {}


def _check_kernel(device_type: str):
    k = _KERNELS.get(device_type, 0)
    if k == 0:
        from . import _ext

        have = {"cpu": _ext.HAVE_CPU_KERNELS, "cuda": _ext.HAVE_CUDA_KERNELS}.get(device_type, False)
        k = _KERNELS[device_type] = torch.ops.pixelkernels.check_values.default if have else None
    return k


def _values_in_range(ts, low: int, high: int, ignore_index: int, whats, hint: str) -> None:
    """Every value of each tensor of ts (a tensor, or a tuple of them on one device) in [low,
    high) or equal to ignore_index, its message the same position of whats (a string, or a tuple),
    in the form _value_check_form picks: the extension's check_values kernel where it is loaded for
    their device (one pass, one launch for all of them; on the CPU it names the value at no sync,
    so the "sync" form takes it too), else the torch forms: range_on_device (async; torch.compile
    traces this one) or the reference (sync)."""
    if isinstance(ts, torch.Tensor):
        ts, whats = (ts,), (whats,)
    forms = [_value_check_form(t) for t in ts]
    ts = [t for t, f in zip(ts, forms) if f is not None]
    whats = [w for w, f in zip(whats, forms) if f is not None]
    if not ts:
        return
    form = next(f for f in forms if f is not None)  # the mode, device and trace state are the sets'
    if form == "async" or (form == "sync" and ts[0].device.type == "cpu"):
        kernel = _check_kernel(ts[0].device.type)
        if kernel is not None:
            kernel(ts, low, high, ignore_index, whats, hint)
            return
    if form != "sync":
        for t, what in zip(ts, whats):
            range_on_device(t, low, high, ignore_index, what, hint)
        return
    from .reference.check_values import check_values

    check_values(ts, low, high, ignore_index, whats, hint)


def range_on_device(t: torch.Tensor, low: int, high: int, ignore_index: int, what: str, hint: str) -> None:
    """check_values' verdict in torch ops on t's device (aminmax, torch._assert_async): no host
    sync, a device-side assert on a bad value. The form torch.compile traces, and the Triton
    variant's where the extension's kernels are not loaded."""
    if t.numel() == 0:
        return
    # When ignore_index touches [low, high) the valid values form one interval, so a single
    # min/max pass settles it.
    lo, hi = low, high
    if low - 1 <= ignore_index <= high:
        lo, hi = min(lo, ignore_index), max(hi, ignore_index + 1)
    v = t
    info = torch.iinfo(t.dtype)
    # e.g. 255 (VOC) with 21 classes: moved into the interval, one pass. An ignore_index the dtype
    # cannot hold matches nothing (int8 == 255 would compare against the wrapped -1).
    if not lo <= ignore_index < hi and info.min <= ignore_index <= info.max:
        v = t.masked_fill(t == ignore_index, low)
    mn, mx = torch.aminmax(v)
    if lo < info.min or hi > info.max:  # num = 256 would wrap in uint8: cast the 0-dim results
        mn, mx = mn.long(), mx.long()
    _assert_on_device(
        (mn >= lo) & (mx < hi),
        f"{what} (checked on the device; pixelkernels.set_checks('sync') names the value). {hint}",
    )


def generator(g, like: torch.Tensor, like_name: str, owner: str) -> None:
    """A sampler's `generator`: None, a torch.Generator on like's device type, or a (B,) int64
    tensor of per-image seeds on like's device (B = like.shape[0]; reference/sample_pixels.py
    draw_keys). `owner`: like's possessive in messages ("the labels'")."""
    if g is None:
        return
    # Tensor first: torch 2.14's dynamo refuses isinstance(tensor, torch.Generator) (a graph break
    # where per-image seeds must trace)
    if isinstance(g, torch.Tensor):
        strided(g, "generator (per-image seeds)")
        if g.dtype != torch.int64 or g.ndim != 1 or g.shape[0] != like.shape[0]:
            raise ValueError(
                f"generator as per-image seeds must be an int64 tensor of shape ({like.shape[0]},) (one per image of "
                f"{like_name}), got {_dtype_name(g.dtype)} of shape {tuple(g.shape)}"
            )
        same_device(("generator", g), (like_name, like))
        return
    if isinstance(g, torch.Generator):
        if g.device.type != like.device.type:
            raise ValueError(f"generator must be on {owner} device ({like.device}), got {g.device}")
        return
    raise TypeError(f"generator must be a torch.Generator or a tensor of per-image seeds, got {type(g).__name__}")

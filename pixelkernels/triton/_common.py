"""Helpers shared by the Triton kernels: pixel addressing of (B, D, H, W) maps, label loads
at their own width, grids that take any batch size, the statistics dtype, and the tl.dot
precision of the GEMM-tile kernels (similarity_reduce, pair_bce).

Grids: Triton's axes 1 and 2 stop at 65535, so the batch never goes there. Kernels that work
on (item, image) pairs run on a flat axis 0 of ``n_items * B`` programs (``grid_items``) and
recover the pair with ``split_pid``.
"""

from __future__ import annotations

import contextlib
import struct

import torch
import triton
import triton.language as tl

from .._dtypes import FLOAT_TYPES, LABEL_TYPES
from .._dtypes import stats_dtype  # noqa: F401  (re-exported for the kernel modules)

_MAX_AXIS0 = 2**31 - 1


def grid_items(n_items: int, B: int, *rest: int) -> tuple[int, ...]:
    """Grid of one program per (item, image) on axis 0, then `rest` (each < 65536)."""
    n = n_items * B
    if n > _MAX_AXIS0:
        raise ValueError(f"{n_items} blocks x {B} images exceed the {_MAX_AXIS0} programs of a Triton grid")
    return (max(n, 1), *rest)


# About what fills a GPU: a reduction over many rows into few outputs (similarity_reduce's dr
# over the queries, pair_bce's dy over x's rows) splits the rows until its grid has this many
# programs.
SPLIT_PROGRAMS = 1024


def row_splits(rows: int, block: int, out_blocks: int, B: int) -> tuple[int, int]:
    """(splits, per) of `rows` reduced into `out_blocks` blocks of outputs for each of B images:
    split s takes rows [s per, (s + 1) per), per a multiple of `block` (only the last split's last
    tile passes `rows`), about SPLIT_PROGRAMS programs in all, at least one split."""
    nblk = triton.cdiv(rows, block)
    splits = max(1, min(triton.cdiv(SPLIT_PROGRAMS, max(out_blocks * B, 1)), nblk))
    per = max(triton.cdiv(nblk, splits), 1) * block
    return max(1, triton.cdiv(rows, per)), per


@triton.jit
def split_pid(n_items):
    """(image b as int64, item) of this program on a `grid_items` grid."""
    pid = tl.program_id(0)
    b = pid // n_items
    return b.to(tl.int64), pid - b * n_items


@triton.jit
def load_regions(lab_ptr, offs, mask, R, ignore_index):
    """Labels at offs (any integer width), as (valid, region): valid iff in bounds, in [0, R)
    and not ignore_index; region is the label where valid, else 0 (always a safe index).
    Masked lanes load 0, never a sentinel that would wrap in narrow unsigned types."""
    lab = tl.load(lab_ptr + offs, mask=mask, other=0).to(tl.int64)
    valid = mask & (lab >= 0) & (lab < R) & (lab != ignore_index)
    return valid, tl.where(valid, lab, 0)


@triton.jit
def pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p):
    """64-bit element offsets of the [BLOCK_P, BLOCK_D] tile (pixels offs_p, dims offs_d) of
    image b of a (B, D, P) map with those strides: x[b, d, p] = ptr[b*sb + d*sd + p*sp]."""
    p = offs_p.to(tl.int64)[:, None]
    d = offs_d.to(tl.int64)[None, :]
    return b * stride_b + p * stride_p + d * stride_d


def pixel_stride(t: torch.Tensor):
    """Stride between flat pixels p = h*W + w of a (B, D, H, W) tensor, or None if H, W
    cannot be flattened into one strided axis. A size-1 dim may carry any stride."""
    H, W = t.shape[2], t.shape[3]
    if W == 1:
        return t.stride(2)
    if H == 1 or t.stride(2) == W * t.stride(3):
        return t.stride(3)
    return None


def overlaps(t: torch.Tensor) -> bool:
    """Whether two indices of t may address one element (an expanded stride-0 view, an
    overlapping as_strided): sufficient test, dims sorted by stride, each stride past the
    largest offset of the smaller ones."""
    reach = 0
    for stride, size in sorted((abs(st), s) for s, st in zip(t.shape, t.stride()) if s > 1):
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def pixel_view(t: torch.Tensor):
    """(t or a contiguous copy, (stride_b, stride_d, stride_p)): contiguous and channels_last
    maps are read in place; other strides are copied once. Outputs are laid out with the
    returned strides (with_strides_of), so an overlapping map (expanded, as_strided) is copied:
    its strides would make several writes land on one element."""
    sp = None if overlaps(t) else pixel_stride(t)
    if sp is None:
        # An empty tensor counts as contiguous whatever its strides (contiguous() returns it
        # unchanged); its values are never read, so a fresh layout will do.
        t = torch.empty(t.shape, dtype=t.dtype, device=t.device) if t.numel() == 0 else t.contiguous()
        sp = pixel_stride(t)
    return t, (t.stride(0), t.stride(1), sp)


def device_ctx(t: torch.Tensor):
    """Launch on t's GPU (the current device may be another one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def warps(block_elems: int) -> int:
    return 8 if block_elems >= 2048 else 4


@triton.jit
def load_tile(ptr, b, offs_p, offs_d, pmask, dmask, stride_b, stride_d, stride_p, ACC: tl.constexpr):
    """The [BLOCK_P, BLOCK_D] tile of image b in the accumulation type (0 outside the masks)."""
    offs = pixel_offsets(b, offs_p, offs_d, stride_b, stride_d, stride_p)
    return tl.load(ptr + offs, mask=pmask[:, None] & dmask[None, :], other=0.0).to(ACC)


def acc_of(t: torch.Tensor):
    """The Triton accumulation type for a tensor of t's dtype (float64 stays float64)."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def pixel_blocks(P: int, D: int, tile: int = 4096, max_d: int = 64):
    """(BLOCK_P, BLOCK_D) powers of two with BLOCK_P * BLOCK_D <= tile."""
    block_d = min(triton.next_power_of_2(max(D, 1)), max_d)
    block_p = min(max(16, tile // block_d), max(16, triton.next_power_of_2(max(P, 1))))
    return block_p, block_d


def with_strides_of(t, x: torch.Tensor) -> torch.Tensor:
    """t (shaped like x) laid out with x's strides, so one set of offsets addresses both; t
    itself when it already is. (empty_like would not keep the strides of a sliced x.)"""
    if t is not None and t.stride() == x.stride():
        return t
    out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype if t is None else t.dtype, device=x.device)
    return out if t is None else out.copy_(t)


# --------------------------------------------------------------------------------------
# Direct calls (torch.ops.pixelkernels.<op>_triton) skip the Python validation of
# pixelkernels/_checks.py. The launchers check what the C++ side checks with PK_EXPECT
# (csrc/torch_utils.h) — the invariants that keep a kernel in bounds — and fail the same way:
# a RuntimeError "<op>: ...".
# --------------------------------------------------------------------------------------

INT32_MAX = 2**31 - 1


def f64_bits(v: float) -> tuple[int, int]:
    """A float64 as the high and low 32 bits of its IEEE pattern (non-negative ints), for
    `f64_from_bits` in a kernel: the exact double reaches it without a device tensor (a Python float
    argument arrives as float32, and a tensor made from host values costs a copy that synchronises
    the host, which no op may do)."""
    (u,) = struct.unpack("<Q", struct.pack("<d", float(v)))
    return u >> 32, u & 0xFFFFFFFF


@triton.jit
def f64_from_bits(hi, lo):
    """The float64 of `f64_bits` (hi, lo: runtime ints, or constants where Triton specialised them)."""
    bits = (tl.full([], hi, tl.int64) << 32) | tl.full([], lo, tl.int64)
    return bits.to(tl.float64, bitcast=True)


def mask_bytes(m: torch.Tensor) -> torch.Tensor:
    """A mask (bool or integer, true where nonzero) as one contiguous byte a pixel, zero where the
    mask is: bool, uint8 and int8 as they are (csrc/torch_utils.h mask_bytes)."""
    m = m if m.dtype in (torch.bool, torch.uint8, torch.int8) else m != 0
    return m.contiguous().view(torch.uint8)


def checked_labels(labels: torch.Tensor, num: int, ignore_index: int, check) -> None:
    """The label check a compiled op folds into its forward (`check`: the message, or None), in
    the Triton variant: Triton has no device-side assert outside debug builds, so the check runs
    before the kernels in the form _checks picks (check_values' one launch, or the torch form)."""
    if check is not None:
        from .. import _checks

        _checks._values_in_range(labels, 0, num, ignore_index, check, _checks._LABEL_HINT)


def expect(cond: bool, op: str, *message) -> None:
    if not cond:
        raise RuntimeError(f"{op}: " + "".join(str(m) for m in message))


def expect_map(emb: torch.Tensor, op: str, name: str = "emb") -> None:
    """A (B, D, H, W) map of a float dtype the kernels read."""
    expect(emb.dim() == 4, op, name, " must be (B, D, H, W), got ", list(emb.shape))
    expect(emb.dtype in FLOAT_TYPES, op, name, " must have a float dtype, got ", emb.dtype)


def expect_labels_match(emb: torch.Tensor, labels: torch.Tensor, op: str) -> None:
    """(B, H, W) labels of an integer dtype the kernels read, for the (B, D, H, W) map emb."""
    expect_map(emb, op)
    B, _, H, W = emb.shape
    expect(labels.dim() == 3 and tuple(labels.shape) == (B, H, W), op, "labels ", list(labels.shape),
           " do not match emb ", list(emb.shape))  # fmt: skip
    expect(labels.dtype in LABEL_TYPES, op, "labels must have an integer dtype, got ", labels.dtype)


def expect_row_labels(labels: torch.Tensor, rows: torch.Tensor, op: str, name: str) -> None:
    """(B, K) labels of an integer dtype for the (B, K, ...) rows."""
    expect_sizes(labels, rows.shape[:2], op, name)
    expect(labels.dtype in LABEL_TYPES, op, name, " must have an integer dtype, got ", labels.dtype)


def expect_sizes(t: torch.Tensor, sizes, op: str, name: str) -> None:
    """A tensor of exactly `sizes` (what the kernels index it with)."""
    expect(tuple(t.shape) == tuple(sizes), op, name, " must have shape ", list(sizes), ", got ",
           list(t.shape))  # fmt: skip


def expect_same_device(op: str, *ts: torch.Tensor) -> None:
    for t in ts:
        expect(t.device == ts[0].device, op, "all tensors must be on one device, got ", t.device, " and ",
               ts[0].device)  # fmt: skip


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """PREC of the GEMM-tile kernels for inputs of `dtype`: "tf32" or "ieee" for float32 (TF32
    only where torch allows it, torch.backends.cuda.matmul.allow_tf32), "widen" for bfloat16 on
    the CPU (the interpreter's tl.dot reads bfloat16 as raw uint16), "" otherwise (half types on
    the tensor cores, float64 as is)."""
    if dtype == torch.bfloat16 and device.type == "cpu":
        return "widen"
    if dtype == torch.float32:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return ""


@triton.jit
def dot_inputs(a, b, PREC: tl.constexpr, ACC: tl.constexpr):
    """a @ b of two tiles of the inputs' dtype, accumulated in ACC, at PREC (dot_precision)."""
    # if/elif/else, not early returns: the compiler generates the statements after a constexpr
    # `if ...: return` too, and tl.dot rejects input_precision=""
    if PREC == "widen":
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee", out_dtype=ACC)
    elif PREC == "":
        out = tl.dot(a, b, out_dtype=ACC)
    else:
        out = tl.dot(a, b, input_precision=PREC, out_dtype=ACC)
    return out


@triton.jit
def dot_acc(a, b, PREC: tl.constexpr, ACC: tl.constexpr):
    """a @ b of two tiles of the accumulation type (a backward's): IEEE float32 unless TF32 is
    allowed (PREC "tf32"); float64 as is."""
    if PREC == "tf32":
        out = tl.dot(a, b, input_precision="tf32", out_dtype=ACC)
    elif ACC == tl.float32:
        out = tl.dot(a, b, input_precision="ieee", out_dtype=ACC)
    else:
        out = tl.dot(a, b, out_dtype=ACC)
    return out

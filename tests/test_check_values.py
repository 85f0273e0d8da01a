"""check_values: the value check of labels and index sets in one pass and one launch (issue 36
part 1; pixelkernels/ops/check_values.py).

Every variant against the reference, on values of every integer width, sizes around the CPU
chunk and the CUDA kernel's 16-byte words (misaligned starts included), with bounds at the ends
of each dtype: the CPU kernel raises the reference's ValueError word for word; the CUDA kernel
(run on the CPU by tests/cuda_emu) fails with a device-side assert that names a bad value and
its index; the torch form (Triton's variant, torch.compile's) fails on the device. And how
_checks uses it: one launch per check and no host sync.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from conftest import DIRECT_VARIANTS, HAS_CUDA, TRITON_DEVICE, compile_on_fake_cuda

import pixelkernels as pk
from pixelkernels import _checks
from pixelkernels.bench.host import ops_per_call, syncs_per_call
from pixelkernels.reference.check_values import check_values as reference

HAVE_CPP = pk._ext.HAVE_CPU_KERNELS
WHAT, HINT = "labels values must be in [lo, hi)", "a hint."
# LABELS with its 1s made 7: the first bad value and the count of every bad value
FOUND_7 = r"found 7 at flat index 1 \(3 bad values in all\)"
INT_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# sizes: empty, below one 16-byte word of every width, one uint8 word +- 1, a few words with a
# tail, past the emulator's grid (3 blocks of 256 threads: the grid-stride loop), past the CPU
# kernel's chunk (65536)
SIZES = (0, 1, 7, 15, 16, 17, 100, 4097, 70001)


def _values(n, dtype, seed, *, lo, hi):
    g = torch.Generator().manual_seed(seed)
    info = torch.iinfo(dtype)
    a, b = max(lo, info.min), min(hi, info.max + 1, 2**63 - 1)
    b = max(b, a + 1)  # an interval empty in this dtype (uint8 below 0): every value is bad
    return torch.randint(a, b, (n,), generator=g, dtype=torch.int64).to(dtype)


def _bounds(dtype):
    """(low, high, ignore_index) cases for dtype: the check's interval inside the dtype, at its
    ends, past them (uint8 against 256) and an ignore_index inside, next to and away from it."""
    info = torch.iinfo(dtype)
    top = min(info.max + 1, 2**63 - 1)  # the schema's ints are int64
    # an empty interval (high <= low): every value but ignore_index is bad (the CPU scan's unsigned
    # range test must not wrap it into a full one)
    return [(0, 5, -1), (0, 5, 255), (2, 9, 2), (0, top, -1), (info.min, 0, 7), (-3, 4, info.max), (3, 3, -1),
            (4, 1, 2)]


VARIANTS = DIRECT_VARIANTS


# A bad value on a real GPU stops the process's CUDA context (a device-side assert): the triton
# variant on CUDA tensors checks good values only here; test_the_gpu_kernel_stops_the_stream_and_
# prints_the_value sends the bad ones to a child process.
def _bad_values_refusable(variant) -> bool:
    return not (variant == "triton" and TRITON_DEVICE == "cuda")


def _run(variant, request, values, low, high, ignore, what, hint):
    """values and what: one set and its message, or lists of them."""
    if isinstance(values, torch.Tensor):
        values, what = [values], [what]
    args = (low, high, ignore, list(what), hint)
    if variant == "emulated":
        request.getfixturevalue("emu").check_values(list(values), *args)
    elif variant == "triton":
        torch.ops.pixelkernels.check_values_triton([v.to(TRITON_DEVICE) for v in values], *args)
        if TRITON_DEVICE == "cuda":
            torch.cuda.synchronize()
    else:
        torch.ops.pixelkernels.check_values(list(values), *args)


def _bad(values, low, high, ignore_index):
    v = values.long()
    return ((v < low) | (v >= high)) & (v != ignore_index)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", INT_TYPES, ids=str)
def test_agrees_with_the_reference(request, variant, dtype):
    for case, (low, high, ignore) in enumerate(_bounds(dtype)):
        for n in SIZES:
            if variant != "cpu" and n > 4097:
                continue  # the emulator and the interpreter: the grid-stride path is reached at 4097
            for seed, spread in enumerate((0, 1, 40)):  # all good; a few bad; many bad
                # values in [low - spread, high + spread): spread 0 gives only good values
                v = _values(n, dtype, 100 * case + 10 * seed + n, lo=low - spread, hi=high + spread)
                if spread == 1 and n > 2:
                    v[: n // 2] = v[: n // 2].clamp(max(low, torch.iinfo(dtype).min), max(low, high - 1))
                bad = _bad(v, low, high, ignore)
                try:
                    reference(v, low, high, ignore, WHAT, HINT)
                    want = None
                except ValueError as e:
                    want = str(e)
                assert (want is None) == (not bool(bad.any()))
                args = (low, high, ignore, WHAT, HINT)
                if want is None:
                    _run(variant, request, v, *args)
                    continue
                if not _bad_values_refusable(variant):
                    continue
                if variant == "cpu":
                    with pytest.raises(ValueError) as info:
                        _run(variant, request, v, *args)
                    assert str(info.value) == want
                elif variant == "emulated":
                    with pytest.raises(RuntimeError, match="device-side assert") as info:
                        _run(variant, request, v, *args)
                    m = re.search(r"labels values must be in \[lo, hi\); found (-?\d+) at flat index (\d+)", str(info.value))
                    assert m, str(info.value)
                    value, index = int(m.group(1)), int(m.group(2))
                    assert bool(bad[index]) and int(v[index]) == value  # a bad value, where it is
                else:
                    with pytest.raises(RuntimeError, match=r"labels values must be in \[lo, hi\) \(checked on the device"):
                        _run(variant, request, v, *args)


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_layout_and_offset(request, variant):
    """Non-contiguous values and starts off a 16-byte boundary (the kernel's head and tail)."""
    base = torch.arange(3 * 40, dtype=torch.int16).reshape(3, 40) % 5
    for t in (base[:, ::3], base.t(), base.reshape(-1)[1:], base.reshape(-1)[3:-5]):
        _run(variant, request, t, 0, 5, -1, WHAT, HINT)
        if not _bad_values_refusable(variant):
            continue
        bad = t.clone()
        bad[tuple(d - 1 for d in bad.shape)] = 9  # the last value in flat order (the tail)
        # the torch form cannot name the value
        with pytest.raises((ValueError, RuntimeError), match="checked on the device" if variant == "triton" else "found 9"):
            _run(variant, request, bad, 0, 5, -1, WHAT, HINT)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_refuses_non_integer_values(dtype):
    with pytest.raises(RuntimeError, match="check_values: values must have an integer dtype"):
        torch.ops.pixelkernels.check_values([torch.zeros(3, dtype=dtype)], 0, 1, -1, [WHAT], HINT)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_refuses_sets_it_cannot_read_in_one_pass():
    op = torch.ops.pixelkernels.check_values
    v = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="check_values: values must have one dtype, got Long and Int"):
        op([v, v.int()], 0, 1, -1, [WHAT, WHAT], HINT)
    with pytest.raises(RuntimeError, match="check_values: what must name each of the 2 value sets, got 1 messages"):
        op([v, v], 0, 1, -1, [WHAT], HINT)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_opcheck():
    v = torch.tensor([[0, 1, 2], [2, -1, 0]])
    torch.library.opcheck(torch.ops.pixelkernels.check_values.default, ([v], 0, 3, -1, [WHAT], HINT))
    torch.library.opcheck(torch.ops.pixelkernels.check_values.default, ([v, v[:, 1:], v.t()], 0, 3, -1, ["a", "b", "c"], HINT))


# --- several sets in one call ---------------------------------------------------------------------

# Sets of awkward sizes (empty, below a word, misaligned views, past the emulator's grid) and more
# than one launch's worth (the CUDA launcher takes 4 per launch).
SET_SIZES = (5, 0, 17, 4097, 3, 100)


def _sets(dtype):
    g = torch.Generator().manual_seed(7)
    base = [torch.randint(0, 5, (n + 3,), generator=g).to(dtype) for n in SET_SIZES]
    return [b[3:] if i % 2 else b[: b.numel() - 3] for i, b in enumerate(base)]  # views, some off a 16-byte boundary


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64], ids=str)
def test_several_sets_each_named_by_its_own_message(request, variant, dtype):
    """Each set is checked against its own message; a bad value in any one (the first, a middle
    one, the last of a second launch) is reported with that set's message; on the CPU the first
    set in list order that holds one raises, as one call per set would."""
    whats = [f"set{i} values must be in [lo, hi)" for i in range(len(SET_SIZES))]
    _run(variant, request, _sets(dtype), 0, 5, -1, whats, HINT)
    if not _bad_values_refusable(variant):
        return
    for bad_sets in ([0], [2, 4], [5], [3], [4]):  # [4]: the fourth set of the first launch
        sets = _sets(dtype)
        for i in bad_sets:
            sets[i][-1] = 9
        first = bad_sets[0]
        if variant == "cpu":
            want = None
            try:
                reference(sets, 0, 5, -1, whats, HINT)
            except ValueError as e:
                want = str(e)
            assert want is not None and want.startswith(whats[first] + "; found 9 at flat index")
            with pytest.raises(ValueError) as info:
                _run(variant, request, sets, 0, 5, -1, whats, HINT)
            assert str(info.value) == want
        elif variant == "emulated":
            with pytest.raises(RuntimeError, match="device-side assert") as info:
                _run(variant, request, sets, 0, 5, -1, whats, HINT)
            m = re.search(r"set(\d) values must be in \[lo, hi\); found 9 at flat index (\d+)", str(info.value))
            assert m, str(info.value)
            i, index = int(m.group(1)), int(m.group(2))
            assert i in bad_sets and index == sets[i].numel() - 1
        else:
            with pytest.raises(RuntimeError, match=rf"set{first} values must be in \[lo, hi\) \(checked on the device"):
                _run(variant, request, sets, 0, 5, -1, whats, HINT)


def test_one_launch_for_up_to_four_sets(emu):
    """The CUDA launcher: one kernel for 1-4 non-empty sets, two for 5-8; empty sets cost none."""
    v = torch.arange(50) % 5
    for sets, launches in (([v], 1), ([v, v, v], 1), ([v] * 4, 1), ([v] * 5, 2), ([v[:0], v[:0]], 0), ([v[:0]] * 4 + [v], 1)):
        before = int(emu.launch_count())
        emu.check_values(sets, 0, 5, -1, ["w"] * len(sets), HINT)
        assert int(emu.launch_count()) - before == launches, len(sets)


# --- how _checks uses it --------------------------------------------------------------------------

LABELS = torch.tensor([[[0, 1, 2, 255]] * 3], dtype=torch.uint8)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
@pytest.mark.parametrize("on_device_form", [False, True], ids=["cpu-form", "gpu-form"])
def test_a_label_check_is_one_launch_and_no_sync(on_device_form, monkeypatch):
    monkeypatch.setattr(_checks, "_ASYNC_ON_CPU", on_device_form)
    check = lambda: _checks.label_values(LABELS, "labels", 3, 255)  # noqa: E731
    assert ops_per_call(check) == 1  # the torch form took 5 (aminmax, 2 compares, and, assert)
    assert syncs_per_call(check) == 0


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_the_kernel_names_the_value_on_the_cpu_in_every_mode():
    bad = LABELS.masked_fill(LABELS == 1, 7)
    for mode in ("async", "sync"):
        with pk.use_checks(mode), pytest.raises(ValueError, match=FOUND_7):
            _checks.label_values(bad, "labels", 3, 255)
    with pk.use_checks("off"):
        _checks.label_values(bad, "labels", 3, 255)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_the_message_counts_every_bad_value_not_those_equal_to_the_first():
    """Issue 39's newcomer read "found 7 (3 such pixels)" as three 7s: the count is of all bad
    values, and the message says so, with the first one's flat index."""
    bad = LABELS.clone()
    bad[0, 1, 1], bad[0, 2, 0] = 9, 8  # flat 5 and 8; the first bad one is flat 5
    want = r"; found 9 at flat index 5 \(2 bad values in all\)\. "
    with pytest.raises(ValueError, match=want):
        _checks.label_values(bad, "labels", 3, 255)
    for check in (torch.ops.pixelkernels.check_values, reference):
        with pytest.raises(ValueError, match=re.escape(WHAT) + want + re.escape(HINT)):
            check([bad], 0, 3, 255, [WHAT], HINT)


def test_without_the_kernel_the_torch_forms_refuse_the_same_values(monkeypatch):
    """An install without the extension's kernels (Triton only, or no _C): aminmax and
    torch._assert_async on the device, the reference in "sync" mode."""
    monkeypatch.setattr(_checks, "_KERNELS", {"cpu": None, "cuda": None})
    bad = LABELS.masked_fill(LABELS == 1, 7)
    monkeypatch.setattr(_checks, "_ASYNC_ON_CPU", True)
    with pytest.raises(RuntimeError, match="checked on the device"):
        _checks.label_values(bad, "labels", 3, 255)
    _checks.label_values(LABELS, "labels", 3, 255)
    monkeypatch.setattr(_checks, "_ASYNC_ON_CPU", False)
    with pytest.raises(ValueError, match=FOUND_7):
        _checks.label_values(bad, "labels", 3, 255)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_checked_op_traces_on_fake_cuda(backend):
    """A checked op under torch.compile(fullgraph=True) on fake CUDA tensors: the check is
    traced in its torch form (aminmax, torch._assert_async), next to the op."""
    out = compile_on_fake_cuda(
        lambda e, lab: pk.region_stats(e, lab, 3, backend=backend)[1],
        lambda: (torch.zeros(1, 2, 3, 4, device="cuda"), torch.zeros(1, 3, 4, dtype=torch.long, device="cuda")),
    )
    assert out.device.type == "cuda" and out.shape == (1, 3, 2)


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_CUDA and pk._ext.HAVE_CUDA_KERNELS), reason="needs a CUDA device and the CUDA kernels")
def test_the_gpu_kernel_stops_the_stream_and_prints_the_value():
    """A device-side assert leaves the process's CUDA context unusable: in a child process."""
    good = "import torch, pixelkernels as pk; v = torch.arange(1000, device='cuda') % 5; "
    code = good + (
        "torch.ops.pixelkernels.check_values([v], 0, 5, -1, ['labels values must be in [0, 5)'], 'h'); "
        "torch.cuda.synchronize(); v[1:][777] = 9; "
        "torch.ops.pixelkernels.check_values([v[:5], v[1:]], 0, 5, -1, ['x', 'labels values must be in [0, 5)'], 'h'); "
        "print('no sync before this', flush=True); torch.cuda.synchronize()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "no sync before this" in out  # the host went on: the verdict stayed on the device
    assert "labels values must be in [0, 5); found 9 at flat index 777" in out
    assert "device-side assert" in out

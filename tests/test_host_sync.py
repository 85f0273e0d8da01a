"""No op synchronises the host on its default path (issue 36 part 1; SPEC §1: no .item(),
nonzero() or other host sync in forward or backward), checks on.

Without a GPU: every public op's calls (.ci/gpu_smoke.py's list: each variant, forward and
backward) on the cpu and Triton backends, with the checks routed through their on-device form
(`_checks._ASYNC_ON_CPU`: what a CUDA tensor takes), under a Tensor whose item, tolist,
__bool__, __int__, __float__, __index__ and nonzero raise. On a GPU (marked cuda): the same
calls on CUDA tensors under torch.cuda.set_sync_debug_mode("error").

And the checks still refuse bad values without a sync: by the extension's check_values kernel
(one pass: on the CPU it names the value, on a GPU a device-side assert), by the torch form
without it (torch._assert_async), under torch.compile(fullgraph=True), and in "sync" mode with
the precise message.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import AVAILABLE, HAS_CUDA, TRITON_DEVICE

import pixelkernels as pk
from pixelkernels import _checks
from pixelkernels.bench.host import on_host_syncs

ROOT = Path(__file__).resolve().parents[1]


def _smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke_calls", ROOT / ".ci" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SMOKE = _smoke()
CALLS = {f"{op}[{variant}]" if variant else op: (fn, floats, grads) for op, variant, fn, floats, grads in SMOKE._calls("cpu")}


def _in_triton_interpreter() -> bool:
    """The Triton interpreter (the CPU stand-in for a GPU launch) reads scalars on the host
    itself; on a GPU that is the launch, not a sync."""
    f = sys._getframe(3)
    while f is not None:
        if f.f_globals.get("__name__", "").startswith("triton.runtime.interpreter"):
            return True
        f = f.f_back
    return False


@contextlib.contextmanager
def no_host_sync():
    """Tensor methods that read a value on the host raise (torch.nonzero too); the value checks
    take their GPU form."""

    def refuse(name):
        if not _in_triton_interpreter():
            raise AssertionError(f"host sync: {name}")

    with on_host_syncs(refuse):
        yield


def _inputs(floats, grads, device):
    return {k: v.to(device=device, dtype=torch.float32).requires_grad_(k in grads) for k, v in floats.items()}


def _forward_backward(fn, t, grads, backend):
    outs = fn(t, backend)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    flo = [o for o in outs if o.is_floating_point() and o.requires_grad]
    if flo and grads:
        y = sum(o.sum() for o in flo)
        torch.autograd.grad(y, [t[k] for k in grads], allow_unused=True)
    return outs


@pytest.mark.parametrize("backend", ["cpu", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("call", list(CALLS))
def test_no_host_sync_forward_and_backward(call, backend):
    if backend not in pk.available_backends():
        pytest.skip(f"{backend} is not available here")
    fn, floats, grads = CALLS[call]
    device = "cuda" if backend == "triton" and HAS_CUDA else "cpu"
    if device == "cuda":
        pytest.skip("on a GPU: test_no_sync_on_the_gpu")
    t = _inputs(floats, grads, device)
    with no_host_sync():
        assert pk.checks_mode() == "async"
        _forward_backward(fn, t, grads, backend)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("call", list(CALLS))
def test_no_sync_on_the_gpu(call, backend):
    """torch's own sync detector on the real device: any synchronising CUDA call raises."""
    if backend not in pk.available_backends():
        pytest.skip(f"{backend} is not available here")
    fn, floats, grads = SMOKE._calls("cuda")[list(CALLS).index(call)][2:]
    _forward_backward(fn, _inputs(floats, grads, "cuda"), grads, backend)  # warm-up: Triton compiles
    t = _inputs(floats, grads, "cuda")  # the copies to the GPU before the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _forward_backward(fn, t, grads, backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- the checks without a sync still refuse bad values ------------------------------------------

BAD = {
    "labels": lambda be=None: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 5), 3, backend=be),
    "labels_255": lambda be=None: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 254), 3,
                                                  ignore_index=255, backend=be),  # fmt: skip
    # int8 cannot hold 255: comparing int8 labels with 255 matched the wrapped -1, and -1 passed
    "labels_int8_255": lambda be=None: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), -1, dtype=torch.int8),
                                                       3, ignore_index=255, backend=be),  # fmt: skip
    "hinge_labels": lambda be=None: pk.region_hinge(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 3),
                                                    torch.zeros(1, 3, 2), backend=be),  # fmt: skip
    "instances": lambda be=None: pk.discriminative_loss(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 4), 3, backend=be),
    "ref_labels": lambda be=None: pk.similarity_reduce(torch.randn(1, 4, 3), torch.randn(1, 5, 3), torch.full((1, 5), 7), 3,
                                                       backend=be),  # fmt: skip
    "anchor": lambda be=None: pk.triplet_hinge(torch.randn(1, 2, 3, 4), torch.tensor([[0, 12]]), torch.tensor([[1, 2]]),
                                               torch.tensor([[3, 4]]), margin=1.0, backend=be),  # fmt: skip
    "background_weights": lambda be=None: pk.menet_saliency(torch.randn(1, 2, 3, 4), -torch.rand(1, 3, 4), backend=be),
}
GOOD = {
    "labels_255": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.tensor([[[0, 1, 2, 255]] * 3]), 3,
                                          ignore_index=255),  # fmt: skip
    "uint8_256": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 255, dtype=torch.uint8), 256),
    "nan_weight": lambda: pk.menet_saliency(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), float("nan"))),
}


# The checks the extension's kernels run where they are loaded: check_values (one pass, one
# launch) for triplet_hinge's indices; the forward's own read of the values (no launch of its own)
# for the region ops' and similarity_reduce's labels and menet_saliency's weights (`check` in
# their schemas). On the CPU they name the value from that pass, still without a sync.
BY_KERNEL = set(BAD)
# The checks folded into a compiled op's forward: without the extension (a Triton-only install)
# the Triton variant makes them, in the torch form.
FOLDED = {"labels", "labels_255", "labels_int8_255", "hinge_labels", "instances", "background_weights", "ref_labels"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_refused_on_the_device_without_a_sync(case):
    if case in BY_KERNEL and pk._ext.HAVE_CPU_KERNELS:
        with no_host_sync(), pytest.raises(ValueError, match="found"):
            BAD[case]()
    else:
        with no_host_sync(), pytest.raises(RuntimeError, match="checked on the device"):
            BAD[case]()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_refused_by_the_torch_form_without_a_sync(case, monkeypatch):
    """Without the extension's kernels (a Triton-only install): aminmax and torch._assert_async."""
    monkeypatch.setattr(_checks, "_KERNELS", {"cpu": None, "cuda": None})
    be = None
    if case in FOLDED and pk._ext.HAVE_CPU_KERNELS:
        if "triton" not in AVAILABLE or TRITON_DEVICE != "cpu":
            pytest.skip("needs the Triton backend on CPU tensors (TRITON_INTERPRET=1, no GPU)")
        be = "triton"
    with no_host_sync(), pytest.raises(RuntimeError, match="checked on the device"):
        BAD[case](be)


def test_weights_are_checked_by_masked_means_cuda_kernel(emu):
    """menet_saliency's weight check on CUDA is the partials kernel's read of them: a device-side
    assert naming the weight (the emulator's launch error), no launch of its own."""
    e, w = torch.randn(2, 3, 4, 5), torch.rand(2, 4, 5)
    w[1, 2, 3] = -0.25
    with pytest.raises(RuntimeError, match=r"background_weights must be >= 0.*found -0.25 at flat index 33"):
        emu.masked_mean(e, w, 0.0, True, "background_weights")
    w[1, 2, 3] = float("nan")  # NaN passes (it propagates)
    emu.masked_mean(e, w, 0.0, True, "background_weights")
    w[1, 2, 3] = -0.25
    emu.masked_mean(e, w, 0.0, True, None)  # no check asked: the value is used as given


@pytest.mark.parametrize("op", ["region_stats", "region_hinge", "centroid_hinge", "sample_pixels"])
def test_labels_are_checked_by_the_forward_cuda_kernel(emu, op):
    """The region ops' label check on CUDA is their forward's read of the labels (region_stats'
    partials, region_hinge's forward; centroid_hinge's region_stats; sample_pixels' sort-key
    kernel, which checks is_triplet_loss' mask): a device-side assert with check_values'
    message, no launch of its own; labels equal to ignore_index pass."""
    e, lab = torch.randn(2, 3, 5, 7), torch.randint(0, 3, (2, 5, 7))
    lab[1, 2, 3] = 7
    lab[0, 0, 0] = 255
    what = "labels values must be in [0, 3) or equal ignore_index=255"
    calls = {
        "region_stats": lambda c: emu.region_stats(e, lab, 3, 255, True, c),
        "region_hinge": lambda c: emu.region_hinge(e, lab, torch.zeros(2, 3, 3), 0.5, 255, c),
        "centroid_hinge": lambda c: emu.centroid_hinge(e, lab, 3, 0.5, 255, c),
        "sample_pixels": lambda c: emu.sample_pixels(lab, torch.randint(0, 1 << 42, lab.shape), 3, 4, 255, c),
    }
    with pytest.raises(RuntimeError, match=r"labels values must be in \[0, 3\) or equal ignore_index=255; found 7 at "
                                           r"flat index 52 \(checked on the device\)"):  # fmt: skip
        calls[op](what)
    calls[op](None)  # no check asked: the bad label is ignored
    lab[1, 2, 3] = 1
    calls[op](what)


def test_ref_labels_are_checked_by_similarity_reduces_tables_kernel(emu):
    """similarity_reduce's label check on CUDA is its tables kernel's read of the ref labels (the
    forward's first launch; label_transfer's too): a device-side assert naming the value, no
    launch of its own; -1 passes, and so does every label with no check asked."""
    q, r, lab = torch.randn(2, 9, 4), torch.randn(2, 6, 4), torch.randint(0, 3, (2, 6))
    lab[0, 1], lab[1, 4] = -1, 7
    what = "ref_labels values must be in [0, 3) or equal ignore_index=-1"

    def call(check):
        return emu.similarity_reduce(q, r, lab, 3, "dot", 1.0, 0.0, False, "mean", 1.0, 1e-7, None, check)

    with pytest.raises(RuntimeError, match=r"ref_labels values must be in \[0, 3\) or equal ignore_index=-1; found 7 "
                                           r"at flat index 10 \(checked on the device\)"):  # fmt: skip
        call(what)
    call(None)  # no check asked: the bad label is ignored
    lab[1, 4] = 2
    call(what)


def test_weights_are_checked_under_torch_compile():
    torch._dynamo.reset()
    f = torch.compile(lambda e, w: pk.menet_saliency(e, w, backend="cpu"), fullgraph=True)
    e = torch.randn(1, 2, 3, 4)
    f(e, torch.rand(1, 3, 4))
    with pytest.raises(ValueError, match="background_weights must be >= 0"):
        f(e, -torch.rand(1, 3, 4))


@pytest.mark.parametrize("case", list(GOOD))
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "torch-form"])
def test_good_values_pass_the_device_check(case, kernel, monkeypatch):
    if not kernel:
        monkeypatch.setattr(_checks, "_KERNELS", {"cpu": None, "cuda": None})
    with no_host_sync():
        GOOD[case]()


@pytest.mark.parametrize("case", list(BAD))
def test_the_cpu_kernels_messages_are_the_sync_forms(case):
    """The CPU kernels raise check_values' and masked_mean's messages, whose hints are copies of
    pixelkernels._checks' (csrc/label_check.h kLabelHint, csrc/masked_sum.cpp kHint): word for
    word the sync form's, where the extension's CPU kernels are built."""
    if not pk._ext.HAVE_CPU_KERNELS:
        pytest.skip("needs the extension's CPU kernels")
    said = []
    for mode in ("async", "sync"):
        torch.manual_seed(0)
        with pk.use_checks(mode), pytest.raises(ValueError) as info:
            BAD[case]()
        said.append(str(info.value))
    assert said[0] == said[1]


@pytest.mark.parametrize("case", list(BAD))
def test_sync_mode_names_the_value(case):
    with pk.use_checks("sync"), pytest.raises(ValueError, match="must be") as info:
        BAD[case]()
    assert "found" in str(info.value)


def test_off_mode_lets_bad_labels_through_as_ignored():
    e = torch.randn(1, 2, 3, 4)
    lab = torch.tensor([[[0, 1, 9, 1]] * 3])
    with pk.use_checks("off"):
        got = pk.region_stats(e, lab, 2)
    want = pk.region_stats(e, lab.masked_fill(lab == 9, -1), 2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_the_checks_run_under_torch_compile():
    """Traced, the check is part of the graph (before, compilation skipped it): the op's folded
    check (its `check` argument, in the graph with it; on the CPU its precise ValueError)."""
    torch._dynamo.reset()
    f = torch.compile(lambda e, lab: pk.region_stats(e, lab, 3, backend="cpu")[0], fullgraph=True)
    e = torch.randn(1, 2, 3, 4)
    f(e, torch.ones(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels values must be in"):
        f(e, torch.full((1, 3, 4), 5))
    g = torch.compile(lambda q, r, lab: pk.similarity_reduce(q, r, lab, 3, backend="cpu")[0], fullgraph=True)
    q, r = torch.randn(1, 4, 3), torch.randn(1, 5, 3)
    g(q, r, torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels values must be in"):
        g(q, r, torch.full((1, 5), 7))


def test_checks_trace_with_dynamic_shapes():
    """torch.compile(dynamic=True): the float checks and the index sets' messages trace when sizes
    are symbols (math.isfinite, max(key=list.count) and a message holding H W as a symbol broke
    the graph), and a bad index still stops the call."""
    torch._dynamo.reset()
    f = torch.compile(lambda q, r, lab: pk.label_transfer(q, r, lab, 2, scale=0.5, bias=0.1, backend="cpu")[1],
                      fullgraph=True, dynamic=True)  # fmt: skip
    for h in (3, 5):
        q, r = torch.randn(2, 4, h, 3), torch.randn(2, 5, 4)
        torch.testing.assert_close(f(q, r, torch.zeros(2, 5, dtype=torch.long)),
                                   pk.label_transfer(q, r, torch.zeros(2, 5, dtype=torch.long), 2, scale=0.5, bias=0.1,
                                                     backend="cpu")[1])  # fmt: skip
    g = torch.compile(lambda e, a, p, n: pk.triplet_hinge(e, a, p, n, margin=0.3, backend="cpu"), fullgraph=True,
                      dynamic=True)  # fmt: skip
    for h in (3, 4):
        e, idx = torch.randn(2, 3, h, 4), torch.zeros(2, 6, dtype=torch.long)
        g(e, idx, idx + 1, idx + 2)
    with pytest.raises(Exception, match="values must be pixel indices"):
        g(e, idx, idx + 1, idx + 99)


def test_modes_are_named_or_bools():
    assert pk.checks_mode() == "async" and pk.checks_enabled()
    for given, want in ((False, "off"), (True, "async"), ("sync", "sync"), ("off", "off"), ("async", "async")):
        with pk.use_checks(given):
            assert pk.checks_mode() == want and pk.checks_enabled() == (want != "off")
    for bad in ("false", "on", 2, 0.5, None):
        with pytest.raises(TypeError, match="must be a bool or one of 'async', 'sync', 'off'"):
            pk.set_checks(bad)
    assert pk.checks_mode() == "async"


def test_the_patch_catches_a_sync():
    t = torch.ones(3)
    with no_host_sync():
        for sync in (lambda: t.sum().item(), lambda: bool(t.any()), lambda: t.tolist(), lambda: torch.nonzero(t),
                     lambda: int(t[0]), lambda: float(t[0]), lambda: [0, 1][t[0].long()]):  # fmt: skip
            with pytest.raises(AssertionError, match="host sync"):
                sync()

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
from conftest import HAS_CUDA

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
    "labels": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 5), 3),
    "labels_255": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 254), 3, ignore_index=255),
    # int8 cannot hold 255: comparing int8 labels with 255 matched the wrapped -1, and -1 passed
    "labels_int8_255": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), -1, dtype=torch.int8), 3,
                                               ignore_index=255),  # fmt: skip
    "ref_labels": lambda: pk.similarity_reduce(torch.randn(1, 4, 3), torch.randn(1, 5, 3), torch.full((1, 5), 7), 3),
    "anchor": lambda: pk.triplet_hinge(torch.randn(1, 2, 3, 4), torch.tensor([[0, 12]]), torch.tensor([[1, 2]]),
                                       torch.tensor([[3, 4]]), margin=1.0),  # fmt: skip
    "background_weights": lambda: pk.menet_saliency(torch.randn(1, 2, 3, 4), -torch.rand(1, 3, 4)),
}
GOOD = {
    "labels_255": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.tensor([[[0, 1, 2, 255]] * 3]), 3,
                                          ignore_index=255),  # fmt: skip
    "uint8_256": lambda: pk.region_stats(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), 255, dtype=torch.uint8), 256),
    "nan_weight": lambda: pk.menet_saliency(torch.randn(1, 2, 3, 4), torch.full((1, 3, 4), float("nan"))),
}


# The checks the extension's check_values kernel runs where it is loaded (one pass, one launch):
# on the CPU it names the value from that pass, still without a sync.
BY_KERNEL = {"labels", "labels_255", "labels_int8_255", "ref_labels", "anchor"}


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
    with no_host_sync(), pytest.raises(RuntimeError, match="checked on the device"):
        BAD[case]()


@pytest.mark.parametrize("case", list(GOOD))
@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "torch-form"])
def test_good_values_pass_the_device_check(case, kernel, monkeypatch):
    if not kernel:
        monkeypatch.setattr(_checks, "_KERNELS", {"cpu": None, "cuda": None})
    with no_host_sync():
        GOOD[case]()


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
    """Traced, the check is part of the graph (before, compilation skipped it)."""
    torch._dynamo.reset()
    f = torch.compile(lambda e, lab: pk.region_stats(e, lab, 3, backend="cpu")[0], fullgraph=True)
    e = torch.randn(1, 2, 3, 4)
    f(e, torch.ones(1, 3, 4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="labels values must be in"):
        f(e, torch.full((1, 3, 4), 5))


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

"""Host time per op (issue 36 part 4, first form): `python -m pixelkernels bench --host`.

For each bench case with a small input (`Case.small`) that runs on the CPU: forward+backward
(forward for ops without a backward) of each pixelkernels backend, the baseline and the
reference, on the CPU with one thread and the checks at their default, measured as

- host time per call, in units of one tiny `torch.add` (two 1-element tensors, `u`) measured
  in the same run, and as a ratio to the baseline's (the best plain PyTorch);
- ATen ops per call: every operator the dispatcher runs, views and metadata excluded, each
  pixelkernels op counted once (on a GPU each would be at least one launch; a pixelkernels op
  may launch more than one kernel). A CPU count, by a TorchDispatchMode;
- host syncs per call, with the checks in the form a GPU tensor takes: calls of Tensor.item,
  tolist, __bool__, __int__, __float__, __index__ and nonzero (tests/test_host_sync.py holds
  the op paths to zero; the reference and the baseline may sync);
- launches per call on the CUDA path (`cuda_launches`, the pixelkernels row, from a source
  tree): the same step with every pixelkernels op run by its CUDA launcher under tests/cuda_emu
  (the CUDA kernels compiled for the CPU), counting the kernels it launches plus the ATen
  compute ops dispatched around them (the loss, autograd's seeds, glue: each a launch on a
  GPU). A lower bound: fills and copies that the launchers' C++ side makes with ATen are not
  seen. Counted after the timings, in a second pass: loading the emulator puts its checking
  allocator under every CPU tensor.

At a small input the kernels' own time is a few microseconds: what is left is the host path
(argument checks, dispatch, autograd) that an H100 would wait on at every call.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pixelkernels as pk
from pixelkernels import _checks

from . import cases as _cases
from .cases import BASELINE, REFERENCE
from .steps import forward, forward_backward

SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")
# Operators that move no data: not counted as work the device would launch.
_FREE = {"detach", "alias", "view", "_unsafe_view", "as_strided", "expand", "t", "transpose", "permute", "unsqueeze",
         "squeeze", "select", "slice", "split", "unbind", "empty", "empty_like", "empty_strided", "lift_fresh",
         "_reshape_alias", "reshape", "view_as", "unflatten", "flatten", "sym_size", "sym_stride", "sym_numel",
         "is_same_size", "_to_copy_noop", "set_", "resolve_conj", "resolve_neg"}  # fmt: skip


def per_call_s(fn, *, budget_s: float = 0.25, rounds: int = 5) -> float:
    """Median over `rounds` of the mean wall time of fn() in a loop of about budget_s/rounds."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(budget_s / rounds / one))
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n)
    return statistics.median(out)


def unit_s(budget_s: float = 0.25) -> float:
    a, b = torch.ones(1), torch.ones(1)
    return per_call_s(lambda: torch.add(a, b), budget_s=budget_s)


class _Counter(TorchDispatchMode):
    """Counts the operators that do work: ATen ops other than views and metadata, and each
    pixelkernels op once; with `emu`, pixelkernels ops run by their CUDA launchers under the
    emulator instead (their kernels then counted by the emulator, not here)."""

    def __init__(self, emu=None):
        super().__init__()
        self.emu, self.n = emu, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "pixelkernels" and self.emu is not None:
            func = getattr(getattr(self.emu, func._opname), func._overloadname)
        elif func.namespace != "aten" or (func._schema.name.split("::")[-1] not in _FREE and not func.is_view):
            self.n += 1
        return func(*args, **(kwargs or {}))


def ops_per_call(fn) -> int:
    with _Counter() as c:
        fn()
    return c.n


@contextlib.contextmanager
def on_host_syncs(hook):
    """Inside: hook(name) runs before every Tensor method of SYNCS and torch.nonzero (it may
    raise), and the value checks take the form a GPU tensor takes (_checks._ASYNC_ON_CPU)."""
    saved = {n: getattr(torch.Tensor, n) for n in SYNCS}
    saved_nonzero = torch.nonzero

    def wrap(orig, name):
        def f(*a, **k):
            hook(name)
            return orig(*a, **k)

        return f

    prev = _checks._ASYNC_ON_CPU
    try:
        for n, orig in saved.items():
            setattr(torch.Tensor, n, wrap(orig, f"Tensor.{n}"))
        torch.nonzero = wrap(saved_nonzero, "torch.nonzero")
        _checks._ASYNC_ON_CPU = True
        yield
    finally:
        for n, orig in saved.items():
            setattr(torch.Tensor, n, orig)
        torch.nonzero = saved_nonzero
        _checks._ASYNC_ON_CPU = prev


def load_emulator():
    """torch.ops.pixelkernels_emu from the source tree's tests/cuda_emu, or None (an installed
    package, no CUDA headers)."""
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parents[2] / "tests"
    if not (tests / "cuda_emu" / "__init__.py").exists():
        return None
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import cuda_emu

    return None if cuda_emu.load() is not None else torch.ops.pixelkernels_emu


def cuda_launches_per_call(fn, emu) -> int:
    before = int(emu.launch_count())
    with _Counter(emu) as mode:
        fn()
    return int(emu.launch_count()) - before + mode.n


def syncs_per_call(fn) -> int:
    calls = []
    with on_host_syncs(calls.append):
        fn()
    return len(calls)


def host_rows(ops=None, workloads=None, backends=None, *, budget_s: float = 0.25, launches: bool = True,
              log=print) -> list[dict]:  # fmt: skip
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = _timed_rows(ops, workloads, backends, budget_s, log)
        emu = load_emulator() if launches else None
        for r in rows:
            r["cuda_launches"] = None
            if emu is not None and r["backend"] == "cpu":
                case = _cases.find(r["op"], r["workload"])
                inp = case.small(cpu)  # made after the emulator loaded: its allocator knows it
                step = forward_backward(case, inp, "cpu") if case.loss else forward(case, inp, "cpu")
                step()  # first-call work (caches) out of the count
                r["cuda_launches"] = cuda_launches_per_call(step, emu)
        return rows
    finally:
        torch.set_num_threads(threads)


def _timed_rows(ops, workloads, backends, budget_s, log) -> list[dict]:
    cpu = torch.device("cpu")
    u = unit_s(budget_s)
    rows = []
    for case in _cases.select(ops, workloads, "cpu"):
        if case.small is None:
            continue
        inp = case.small(cpu)
        names = [b for b in (backends or pk.available_backends()) if b != REFERENCE] + [BASELINE, REFERENCE]
        got = {}
        for n in names:
            step = forward_backward(case, inp, n) if case.loss else forward(case, inp, n)
            try:
                got[n] = (per_call_s(step, budget_s=budget_s), ops_per_call(step), syncs_per_call(step))
            except Exception as e:  # noqa: BLE001 - a row that cannot run says why
                log(f"# {case.key} {n}: {type(e).__name__}: {e}")
        base = got.get(BASELINE, (float("nan"),))[0]
        for n, (s, ops_n, syncs) in got.items():
            rows.append({"op": case.op, "workload": case.id, "kind": "fwdbwd" if case.loss else "fwd",
                         "backend": n, "host_us": s * 1e6, "host_u": s / u, "vs_baseline": s / base,
                         "aten_ops": ops_n, "syncs": syncs, "unit_us": u * 1e6})  # fmt: skip
    return rows


def header() -> str:
    return (f"{'op':<22}{'workload':<24}{'kind':<7}{'backend':<10}{'host us':>9}{'host u':>8}{'x baseline':>11}"
            f"{'ops':>6}{'syncs':>6}{'CUDA launches':>14}")  # fmt: skip


def _launches(r: dict) -> str:
    return "–" if r.get("cuda_launches") is None else str(r["cuda_launches"])


def format_row(r: dict) -> str:
    return (f"{r['op']:<22}{r['workload']:<24}{r['kind']:<7}{r['backend']:<10}{r['host_us']:>9.1f}{r['host_u']:>8.0f}"
            f"{r['vs_baseline']:>11.2f}{r['aten_ops']:>6}{r['syncs']:>6}{_launches(r):>14}")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = ["| op | workload | kind | backend | host µs | host u | × baseline | ATen ops | syncs | CUDA launches |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['op']} | {r['workload']} | {r['kind']} | {r['backend']} | {r['host_us']:.1f} | "
                     f"{r['host_u']:.0f} | {r['vs_baseline']:.2f} | {r['aten_ops']} | {r['syncs']} | {_launches(r)} |")  # fmt: skip
    return "\n".join(lines) + "\n"

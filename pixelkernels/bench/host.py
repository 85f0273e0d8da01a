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
  compute ops dispatched around them (the loss, autograd's seeds, glue) and inside the
  launchers' C++ side (fills, copies, dtype conversions, an ATen composition such as the CUDA
  sampler's sort): on a GPU each is a launch. Counted after the timings, in a second pass:
  loading the emulator puts its checking allocator under every CPU tensor;
- launches per call on the Triton path (`triton_launches`, the triton row: with
  TRITON_INTERPRET=1 on the CPU, or on a GPU): every Triton kernel launch plus every ATen
  compute op, the Triton variants' glue inside their custom ops included. The triton row's host
  time under the interpreter is the interpreter's, not a GPU host path's;
- of those launches, the op's own (in parentheses): the total less the ATen ops of the step's
  loss and its backward alone (`loss_ops`: the case's loss on the op's outputs as leaves), the
  count issue 36 part 3's targets are stated in.

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
         "squeeze", "select", "slice", "split", "unbind", "empty", "empty_like", "empty_strided", "new_empty",
         "new_empty_strided", "lift_fresh",
         "_reshape_alias", "reshape", "view_as", "unflatten", "flatten", "sym_size", "sym_stride", "sym_numel",
         "is_same_size", "_to_copy_noop", "set_", "resolve_conj", "resolve_neg"}  # fmt: skip
# Of those, the ones that copy where no view can express the result (counted then: _is_launch).
_MAY_COPY = {"reshape", "flatten", "unflatten"}


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


def _does_work(func) -> bool:
    """An operator a device would launch: any non-ATen op, or an ATen op that moves data."""
    return func.namespace != "aten" or (func._schema.name.split("::")[-1] not in _FREE and not func.is_view)


def _storages(x) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves(x) if isinstance(t, torch.Tensor)}


def _is_launch(func, args, kwargs, out) -> bool:
    """Whether func(*args, **kwargs) -> out was a launch: _does_work's, and an operator that
    returns a view where it can (``contiguous``, ``reshape``: a view by their schema) where it
    returned new memory instead, i.e. copied (a D-major map made contiguous is one launch)."""
    if _does_work(func):
        return True
    if not (func.is_view or func._schema.name.split("::")[-1] in _MAY_COPY):
        return False
    return not _storages(out) <= _storages((args, kwargs))


_CPU_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


class _Counter(TorchDispatchMode):
    """Counts the operators that do work: ATen ops other than views and metadata, and each
    pixelkernels op once; with `emu`, pixelkernels ops run by their CUDA launchers under the
    emulator instead (their kernels then counted by the emulator, not here), with this mode
    pushed again around them so that the ATen ops their C++ side dispatches (fills, copies,
    dtype conversions, an ATen composition) are counted too: on a GPU each is a launch."""

    def __init__(self, emu=None, on_launch=None):
        super().__init__()
        self.emu, self.n = emu, 0
        self.on_launch = on_launch  # called as (operator, bytes in, bytes out) for each launch counted here

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.emu is not None and func.namespace in ("pixelkernels", "pixelkernels_emu"):
            # an emulated launcher, or one a composite launcher calls (its kernels are the
            # emulator's count, not an op here): straight to its CPU kernel, as through the
            # dispatcher it would come back here; this mode pushed again for the ATen ops it calls
            launcher = getattr(getattr(self.emu, func._opname), func._overloadname)
            with self:
                return launcher.redispatch(_CPU_KEY, *args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        launch = _is_launch(func, args, kwargs, out)
        self.n += launch
        if launch and self.on_launch is not None:
            self.on_launch(str(func), _tensor_bytes((args, kwargs)), _tensor_bytes(out))
        return out


def _tensor_bytes(x) -> int:
    """Bytes of the distinct tensors of x (what an elementwise launch moves)."""
    seen = {(t.data_ptr(), t.numel(), t.element_size()) for t in torch.utils._pytree.tree_leaves(x)
            if isinstance(t, torch.Tensor)}  # fmt: skip
    return sum(n * size for _, n, size in seen)


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


@contextlib.contextmanager
def cuda_backend_on_cpu():
    """Inside: backend "cuda" accepted for CPU tensors, so that a step built with it takes the
    Python path of the cuda backend (prior_mask branches on it) while its ops, on CPU tensors,
    reach _Counter's emulated launchers (cuda_launches_per_call)."""
    from .. import _backend

    saved = _backend.missing

    def missing(name, device, op=None, dtype=None):
        return None if name == "cuda" and device.type == "cpu" else saved(name, device, op, dtype)

    _backend.missing = missing
    try:
        yield
    finally:
        _backend.missing = saved


def cuda_launches_per_call(fn, emu) -> int:
    """Launches of one call on the emulated CUDA path, after one emulated call (first-call work,
    e.g. the ticket counters' one allocation, csrc/tickets.cpp, is not per call)."""
    with _Counter(emu):
        fn()
    before = int(emu.launch_count())
    with _Counter(emu) as mode:
        fn()
    return int(emu.launch_count()) - before + mode.n


class _TritonCounter(TorchDispatchMode):
    """Launches on the Triton path: every Triton kernel launch (JITFunction.run, or the
    interpreter's InterpretedFunction.run, patched to count) plus every ATen compute op,
    the Triton variants' own glue inside them included (their Python bodies are run with the
    mode on, instead of the opaque custom op)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.in_kernel = 0  # inside a Triton launch: the interpreter's own copies are not launches

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.in_kernel:
            return func(*args, **(kwargs or {}))
        if func.namespace == "pixelkernels" and func._opname.endswith("_triton"):
            from .. import _schema

            body = _schema.TRITON_OPS[func._opname[: -len("_triton")]]._init_fn
            with self:
                return body(*args, **(kwargs or {}))
        out = func(*args, **(kwargs or {}))
        self.n += _is_launch(func, args, kwargs, out)
        return out


@contextlib.contextmanager
def _counting_triton_runs(counter):
    from triton.runtime import jit

    classes = [jit.JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:  # pragma: no cover - a Triton without the interpreter
        pass
    saved = {c: c.__dict__["run"] for c in classes if "run" in c.__dict__}

    def wrap(orig):
        def run(self, *a, **k):
            if not k.get("warmup", False):
                counter.n += 1
            counter.in_kernel += 1
            try:
                return orig(self, *a, **k)
            finally:
                counter.in_kernel -= 1

        return run

    try:
        for c, orig in saved.items():
            c.run = wrap(orig)
        yield
    finally:
        for c, orig in saved.items():
            c.run = orig


def triton_launches_per_call(fn) -> int:
    """Launches of one call on the Triton path (_TritonCounter), Triton kernels and ATen ops."""
    counter = _TritonCounter()
    with _counting_triton_runs(counter), counter:
        fn()
    return counter.n


def loss_ops_per_call(case, inp, backend: str) -> int:
    """ATen ops of the step's own loss around the op (the case's loss on the op's outputs, as
    leaves, and its backward to them): what the step adds to the op's launches on any path."""
    outs = case.run(inp, backend)  # with its graph: which outputs carry a gradient
    many = isinstance(outs, (tuple, list))
    leaves = tuple(o.detach().requires_grad_(o.requires_grad) if isinstance(o, torch.Tensor) else o
                   for o in (outs if many else (outs,)))  # fmt: skip
    wrt = [o for o in leaves if isinstance(o, torch.Tensor) and o.requires_grad]

    def step():
        return torch.autograd.grad(case.loss(leaves if many else leaves[0], inp), wrt, allow_unused=True)

    step()
    return ops_per_call(step)


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
            r["cuda_launches"] = r["triton_launches"] = r["loss_ops"] = None
            if launches and r["backend"] in ("cpu", "triton") and r["kind"] == "fwdbwd":
                case = _cases.find(r["op"], r["workload"])
                r["loss_ops"] = loss_ops_per_call(case, case.small(cpu), r["backend"])
            if launches and r["backend"] == "triton":
                case = _cases.find(r["op"], r["workload"])
                inp = case.small(cpu)
                step = forward_backward(case, inp, "triton") if case.loss else forward(case, inp, "triton")
                step()  # compiles (or traces) first: not a launch of the call
                r["triton_launches"] = triton_launches_per_call(step)
            if emu is not None and r["backend"] == "cpu":
                case = _cases.find(r["op"], r["workload"])
                inp = case.small(cpu)  # made after the emulator loaded: its allocator knows it
                with cuda_backend_on_cpu():  # the cuda backend's Python path, its ops emulated
                    step = forward_backward(case, inp, "cuda") if case.loss else forward(case, inp, "cuda")
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
            f"{'ops':>6}{'syncs':>6}{'GPU launches (op)':>19}")  # fmt: skip


def _launches(r: dict) -> str:
    """The cpu row: launches on the CUDA path; the triton row: on the Triton path; "total (op)",
    the op's own being the total less the step's loss (loss_ops)."""
    n = r.get("cuda_launches") if r.get("cuda_launches") is not None else r.get("triton_launches")
    if n is None:
        return "–"
    return str(n) if r.get("loss_ops") is None else f"{n} ({n - r['loss_ops']})"


def format_row(r: dict) -> str:
    return (f"{r['op']:<22}{r['workload']:<24}{r['kind']:<7}{r['backend']:<10}{r['host_us']:>9.1f}{r['host_u']:>8.0f}"
            f"{r['vs_baseline']:>11.2f}{r['aten_ops']:>6}{r['syncs']:>6}{_launches(r):>19}")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = ["| op | workload | kind | backend | host µs | host u | × baseline | ATen ops | syncs | GPU launches (op) |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['op']} | {r['workload']} | {r['kind']} | {r['backend']} | {r['host_us']:.1f} | "
                     f"{r['host_u']:.0f} | {r['vs_baseline']:.2f} | {r['aten_ops']} | {r['syncs']} | {_launches(r)} |")  # fmt: skip
    return "\n".join(lines) + "\n"

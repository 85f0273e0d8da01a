"""`python -m pixelkernels bench`: the paper workloads of SPEC §5 — the rows of the one case
table, `pixelkernels.bench_cases.CASES` — every usable backend against the reference on the
same device, side by side in one run. `benchmarks/bench_<op>.py` read the same table
(`pytest_benchmarks`).

Method
- Checks off: every timed region runs with `pixelkernels.set_checks(False)` (the hot-loop
  setting; the previous setting is restored afterwards). The checks-on overhead is its own
  measurement: per row, a forward with checks on and one with checks off on the row's small
  input (`Case.small`, else the workload input), timed in 40 short alternating rounds without
  cache flushing; `checks_us` is the difference of their medians, per call, in µs.
- Side by side: the backends of a row are timed in alternating rounds (4), so a burst of load
  on a shared machine hits all of them; each round warms up twice, then repeats the call until
  its share of the time budget is spent (at least 5 times). The statistics over all repeats are
  p50 (the median: speedups, bandwidth) and p20/p80 (in the JSON/CSV rows).
- CPU: `time.perf_counter` around each call; before each call, outside the timed region, a
  buffer of four times the last-level cache (sysfs; 128 MiB if unknown) is read, so every call
  reads its inputs from DRAM (W2's 16 MB map fits a 32 MB L3: unflushed, ours ran at
  105-165 % of the copy bandwidth; after reading 2x the L3 a 16 MB sum still took 10-35 % less
  time than after 4x, 8x or 16x, which agree). A read, not a write: no dirty lines left to be
  written back inside the timed call. The flush also evicts the interpreter's and the
  dispatcher's state, which a training loop keeps cached (it added 0.4 ms to our 1.1 ms W2
  forward, 0.7 ms to the 2.6 ms forward+backward), so the same call on the row's small input
  (`Case.small`) follows it, untimed.
- CUDA: CUDA events around each call; before each call, outside the timed region, a buffer of
  twice the L2 size (256 MiB if unknown) is zeroed, so every call reads its inputs from DRAM.
  Eager times, and CUDA-graph replay times: the forward and the forward+backward captured with
  `torch.cuda.graph` after warm-up on a side stream, each replay timed the same way — kernel
  time without host overhead. A backend that cannot be captured (e.g. it syncs) gets NaN and
  the reason in the row's `note`.
- Speedup: the reference's eager median over the backend's (forward, and forward+backward).
- Bandwidth: the copy bandwidth is `y.copy_(x)` (read + write) on buffers far larger than the
  caches (64 MiB on the CPU; max(256 MiB, 4x L2) on CUDA), measured in the same run;
  `bw_frac_*` = the row's minimal DRAM bytes / its median time / copy bandwidth, with the
  graph-replay median on CUDA and the eager median on the CPU.
- Peak memory above the inputs, for one forward+backward (forward for ops without backward):
  the CUDA caching allocator's peak; on the CPU a fresh interpreter (every large buffer its own
  mmap) reports its peak RSS growth (VmHWM after clear_refs) over the call.
- Error: max over outputs and gradients of max|out - ref| / max|ref|.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import pixelkernels as pk
from pixelkernels import bench_cases, testing
from pixelkernels.bench_cases import Case, Inputs

NAN = float("nan")
NAN3 = (NAN, NAN, NAN)
ROUNDS = 4

# ------------------------------------------------------------------------ what is timed


@contextlib.contextmanager
def checks(enabled: bool):
    """`pixelkernels.set_checks(enabled)` inside the block, the previous setting restored after."""
    prev = pk.checks_enabled()
    pk.set_checks(enabled)
    try:
        yield
    finally:
        pk.set_checks(prev)


def with_checks(enabled: bool, fn):
    def run():
        with checks(enabled):
            return fn()

    return run


def forward(case: Case, inp: Inputs, backend: str):
    def fwd():
        with torch.no_grad():
            return case.run(inp, backend)

    return fwd


def forward_backward(case: Case, inp: Inputs, backend: str):
    def step():
        return torch.autograd.grad(case.loss(case.run(inp, backend), inp), inp.grad)

    return step


def memory_step(case: Case, inp: Inputs, backend: str):
    """What peak memory is measured on: forward+backward, or forward for ops without backward."""
    return forward_backward(case, inp, backend) if case.loss else forward(case, inp, backend)


# ------------------------------------------------------------------------------- timing


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _l2_bytes(device: torch.device) -> int:
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0


def _cpu_llc_bytes() -> int:
    """The largest CPU cache in bytes (Linux sysfs), 0 if unknown."""
    best = 0
    for f in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            txt = open(f).read().strip().upper()
            best = max(best, int(txt.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(txt[-1], 1))
        except (OSError, ValueError, IndexError):
            continue
    return best


def _flush_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return 2 * _l2_bytes(device) or 256 * 2**20
    return 4 * _cpu_llc_bytes() or 128 * 2**20


def cache_flush_buffer(device: torch.device) -> torch.Tensor:
    """A buffer larger than the last-level cache (2x the GPU's L2, 4x the CPU's L3): zeroing
    (GPU) or reading (CPU) it before a call evicts that call's inputs."""
    dtype = torch.uint8 if device.type == "cuda" else torch.float32
    return torch.ones(_flush_bytes(device) // dtype.itemsize, dtype=dtype, device=device)


def flush_cache(flush: torch.Tensor) -> None:
    if flush.is_cuda:
        flush.zero_()
    else:
        flush.sum()


def evicting(flush: torch.Tensor, prime=None):
    """What runs before a timed call: the cache flush, then `prime()` (on the CPU, the same call
    on a small input: the flush also evicts the interpreter's and the dispatcher's state, whose
    misses would otherwise be charged to the timed call; a training loop keeps them cached)."""

    def before():
        flush_cache(flush)
        if prime is not None:
            prime()

    return before


def samples_ms(fn, device: torch.device, *, budget_s: float, before=None, warmup=2, min_reps=5, max_reps=100):
    """Times of fn() in ms: CUDA events on the GPU, perf_counter on the CPU; `before()` (e.g. a
    cache flush) before each call, outside the timed region."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        if before is not None:
            before()
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentiles(times) -> tuple[float, float, float]:
    """(p50, p20, p80)."""
    if len(times) < 2:
        return (times[0],) * 3 if times else NAN3
    q = statistics.quantiles(times, n=5, method="inclusive")
    return statistics.median(times), q[0], q[3]


def time_side_by_side(fns: dict, device: torch.device, *, budget_s: float, rounds=ROUNDS, before=None, **kw):
    """{name: (p50, p20, p80)} in ms, the candidates timed in alternating rounds; `before`:
    {name: what runs before each of that candidate's calls}, if anything."""
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            pre = (before or {}).get(name)
            samples[name] += samples_ms(fn, device, budget_s=budget_s / rounds, before=pre, **kw)
    return {name: percentiles(t) for name, t in samples.items()}


def capture_graph(fn, device: torch.device) -> torch.cuda.CUDAGraph:
    """fn() captured as a CUDA graph on a side stream, after three warm-up calls there (the
    pattern of torch.cuda.graphs' docs). Where fn cannot be captured (a host sync, a CPU op)
    this raises fn's error, with the capture ended and the current stream restored."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
        torch.cuda.synchronize(device)
        graph.capture_begin()
        try:
            fn()
        except BaseException:
            with contextlib.suppress(Exception):
                graph.capture_end()
            raise
        graph.capture_end()
    torch.cuda.current_stream(device).wait_stream(side)
    return graph


def graph_times(fns: dict, device: torch.device, *, budget_s: float, flush):
    """({name: (p50, p20, p80)} of CUDA-graph replays, {name: why}): NaN, and why, where fn
    cannot be captured."""
    graphs, notes = {}, {}
    for name, fn in fns.items():
        try:
            graphs[name] = capture_graph(fn, device)
        except Exception as e:  # noqa: BLE001 - a failed capture is reported, never fatal
            notes[name] = "graph capture failed: " + _reason(e)
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(device)
    times = time_side_by_side(
        {n: g.replay for n, g in graphs.items()},
        device,
        budget_s=budget_s,
        before={n: evicting(flush) for n in graphs},
    )
    del graphs
    return {n: times.get(n, NAN3) for n in fns}, notes


def copy_bandwidth_gbs(device: torch.device) -> float:
    """Bytes/s of y.copy_(x) (read + write), on buffers far larger than the caches."""
    size = max(256 * 2**20, 4 * _l2_bytes(device)) if device.type == "cuda" else 64 * 2**20
    x = torch.empty(size // 4, device=device).uniform_()
    y = torch.empty_like(x)
    med = percentiles(samples_ms(lambda: y.copy_(x), device, budget_s=0.5))[0]
    return 2 * size / (med * 1e-3) / 1e9


# ------------------------------------------------------------------ memory, errors, names

_PEAK_RSS = """
import sys, torch, pixelkernels as pk
from pixelkernels import bench, bench_cases
case = bench_cases.find(sys.argv[1], sys.argv[2])
pk.set_checks(False)
step = bench.memory_step(case, case.make(torch.device("cpu")), sys.argv[3])
step()
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
base = kib("VmRSS")
step()
print((kib("VmHWM") - base) / 1024)
"""


def peak_mib(case: Case, inp: Inputs, backend: str, device: torch.device) -> float:
    if device.type == "cuda":
        step = memory_step(case, inp, backend)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    # A fresh interpreter where every large buffer is its own mmap (so RSS follows what is
    # live), with the kernel's peak-RSS mark reset just before one call.
    env = dict(os.environ, PIXELKERNELS_BACKEND="auto", MALLOC_MMAP_THRESHOLD_="65536")
    try:
        r = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, case.op, case.id, backend],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        return float(r.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return NAN


def _tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def max_rel_error(got, ref) -> float:
    """The largest `pixelkernels.testing.max_rel_error` over the tensors of got and ref."""
    pairs = [(a, b) for a, b in zip(_tuple(got), _tuple(ref)) if isinstance(b, torch.Tensor)]
    return max((testing.max_rel_error(a, b) for a, b in pairs), default=0.0)


def _reason(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def backend_names(case: Case, device: torch.device, requested=None, log=print) -> list[str]:
    """The reference first, then the pixelkernels backends that run on `device` (`requested`,
    or every usable one but the Triton interpreter on the CPU), then the case's baselines."""
    if requested is None:
        pick = [b for b in pk.available_backends() if not (b == "triton" and device.type == "cpu")]
    else:
        pick = [b for b in requested if b not in case.baselines]
    names = ["reference"]
    for b in pick:
        if b in names:
            continue
        why = pk._backend.missing(b, device)
        if why is None:
            names.append(b)
        elif requested is not None:
            log(f"# {case.key}: skipping backend {b}: {why}")
    return names + [b for b in case.baselines if requested is None or b in requested]


def _dtype(inp: Inputs) -> str:
    t = next((a for a in inp.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    return str(t.dtype).replace("torch.", "") if t is not None else ""


# ---------------------------------------------------------------------------------- rows


def run_case(case: Case, device: torch.device, names, *, budget_s, memory, flush, copy_gbs, log=print):
    """The rows of one case, one per backend. Call with checks off (run_bench does)."""
    inp = case.make(device)
    outs, grads, notes = {}, {}, {}
    for name in names:  # one call of each: outputs and gradients for the error column
        try:
            outs[name] = _tuple(forward(case, inp, name)())
            if case.loss:
                grads[name] = forward_backward(case, inp, name)()
        except Exception as e:  # noqa: BLE001 - a failing backend is a row with a note
            what = "forward+backward" if name in outs else "forward"
            notes[name] = f"{what} failed: {_reason(e)}"
            log(f"# {case.key} {name}: {notes[name]} (not timed)")
    ok = [n for n in names if n in outs]
    small = case.small(device) if case.small else inp

    def before(step, which):
        # On the CPU the flush is followed by the same call on the small input (see evicting);
        # a case without one is only flushed.
        prime = device.type == "cpu" and case.small is not None
        return {n: evicting(flush, step(case, small, n) if prime else None) for n in which}

    fwd = time_side_by_side(
        {n: forward(case, inp, n) for n in ok}, device, budget_s=budget_s, before=before(forward, ok)
    )
    fb = time_side_by_side(
        {n: forward_backward(case, inp, n) for n in grads},
        device,
        budget_s=budget_s,
        before=before(forward_backward, grads),
    )
    peak = {n: peak_mib(case, inp, n, device) for n in (grads if case.loss else ok)} if memory else {}
    chk = {}
    for n in ok:
        if n not in case.baselines:
            f = forward(case, small, n)
            # Many short rounds: a drift in the machine's load hits both settings alike.
            t = time_side_by_side(
                {"on": with_checks(True, f), "off": with_checks(False, f)},
                device,
                budget_s=budget_s / 2,
                rounds=10 * ROUNDS,
                warmup=1,
                min_reps=1,
                max_reps=50,
            )
            chk[n] = (t["on"][0] * 1e3, t["off"][0] * 1e3)
    gf, gfb = {}, {}
    if device.type == "cuda":
        for kind, fn, names_k, out in (("fwd", forward, ok, gf), ("fwd+bwd", forward_backward, grads, gfb)):
            fns = {n: fn(case, inp, n) for n in names_k}
            times, why = graph_times(fns, device, budget_s=budget_s, flush=flush)
            out.update(times)
            for n, w in why.items():
                log(f"# {case.key} {n}: {kind} {w} (graph times NaN)")
                notes[n] = "; ".join(filter(None, [notes.get(n), f"{kind} {w}"]))

    def ratio(times, name):
        return times.get("reference", NAN3)[0] / times.get(name, NAN3)[0]

    def bw(nbytes, eager, graph):
        t = (graph if device.type == "cuda" else eager)[0]
        return nbytes(inp) / (t * 1e-3) / 1e9 / copy_gbs if nbytes else NAN

    ref = outs.get("reference", ()) + grads.get("reference", ())
    rows = []
    for n in names:
        t_f, t_fb = fwd.get(n, NAN3), fb.get(n, NAN3)
        g_f, g_fb = gf.get(n, NAN3), gfb.get(n, NAN3)
        on, off = chk.get(n, (NAN, NAN))
        row = {
            "op": case.op,
            "workload": case.id,
            "shape": case.shape,
            "dtype": _dtype(inp),
            "device": device_name(device),
            "backend": n,
        }
        for prefix, t in (("fwd", t_f), ("fwdbwd", t_fb), ("graph_fwd", g_f), ("graph_fwdbwd", g_fb)):
            row.update({f"{prefix}_ms": t[0], f"{prefix}_p20_ms": t[1], f"{prefix}_p80_ms": t[2]})
        row.update(
            speedup_fwd=ratio(fwd, n),
            speedup_fwdbwd=ratio(fb, n),
            peak_mib=peak.get(n, NAN),
            max_rel_err=max_rel_error(outs[n] + grads.get(n, ()), ref) if n in outs and ref else NAN,
            checks_on_us=on,
            checks_off_us=off,
            checks_us=on - off,
            bw_frac_fwd=bw(case.bytes_fwd, t_f, g_f),
            bw_frac_fwdbwd=bw(case.bytes_fwdbwd, t_fb, g_fb),
            copy_gbs=copy_gbs,
            note=notes.get(n, ""),
        )
        rows.append(row)
    return rows


def run_bench(device, ops=None, workloads=None, backends=None, memory=True, log=print, budget_s=2.0):
    """Every selected case on `device`, timed with checks off; the rows, each also logged."""
    copy_gbs = copy_bandwidth_gbs(device)
    flush = cache_flush_buffer(device)
    log(f"# device: {device_name(device)}; torch {torch.__version__}; copy bandwidth {copy_gbs:.1f} GB/s")
    what = "L2 flushed" if device.type == "cuda" else "last-level cache flushed (read)"
    log(f"# {what} before every timed call ({_flush_bytes(device) / 2**20:.0f} MiB buffer)")
    cases = bench_cases.select(ops, workloads, device.type)
    cols = _columns(device, cases)
    log(_header(cols))
    rows = []
    with checks(False):
        for case in cases:
            names = backend_names(case, device, backends, log)
            for row in run_case(
                case, device, names, budget_s=budget_s, memory=memory, flush=flush, copy_gbs=copy_gbs, log=log
            ):
                rows.append(row)
                log(_fmt_row(row, cols))
    return rows


# ----------------------------------------------------------------------------- printing

# (header, key, width, format); the graph columns only on CUDA.
_COLUMNS = [
    ("op", "op", 0, "<"),  # text widths 0: from the cases printed
    ("workload", "workload", 0, "<"),
    ("backend", "backend", 10, "<"),
    ("fwd ms", "fwd_ms", 9, ".3f"),
    ("f+b ms", "fwdbwd_ms", 9, ".3f"),
    ("graph fwd", "graph_fwd_ms", 10, ".3f"),
    ("graph f+b", "graph_fwdbwd_ms", 10, ".3f"),
    ("x fwd", "speedup_fwd", 7, ".1f"),
    ("x f+b", "speedup_fwdbwd", 7, ".1f"),
    ("peak MiB", "peak_mib", 9, ".1f"),
    ("max err", "max_rel_err", 9, ".1e"),
    ("BW fwd", "bw_frac_fwd", 7, ".0%"),
    ("BW f+b", "bw_frac_fwdbwd", 7, ".0%"),
    ("checks us", "checks_us", 10, "+.1f"),
]


def _columns(device, cases=()):
    widths = {"op": max([len(c.op) for c in cases] + [12]), "workload": max([len(c.id) for c in cases] + [8])}
    return [
        (h, key, w or widths[key] + 2, f)
        for h, key, w, f in _COLUMNS
        if device.type == "cuda" or not key.startswith("graph")
    ]


def _header(cols):
    return "".join(f"{h:{'<' if f == '<' else '>'}{w}}" for h, _, w, f in cols)


def _fmt_row(row, cols):
    out = []
    for _, key, w, f in cols:
        v = row[key]
        if f == "<":
            out.append(f"{v:<{w}}")
        else:
            out.append(f"{'-' if isinstance(v, float) and math.isnan(v) else format(v, f):>{w}}")
    return "".join(out)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return
    rows = [r for r in rows if r["backend"] != "reference"]
    labels = [f"{r['op']}\n{r['workload']}\n{r['backend']}" for r in rows]
    vals = [r["speedup_fwd"] if math.isnan(r["speedup_fwdbwd"]) else r["speedup_fwdbwd"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, len(vals) * 0.9), 3))
    ax.bar(labels, vals)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("speedup vs reference\n(fwd+bwd, else fwd)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------ pytest-benchmark


def pytest_benchmarks(op: str):
    """(test_fwd, test_fwd_bwd) for pytest-benchmark: the table's cases of `op` on the best
    device, every usable backend and the reference, timed with checks off. A whole
    `benchmarks/bench_<op>.py` is

        from pixelkernels.bench import pytest_benchmarks
        test_<op>_fwd, test_<op>_fwd_bwd = pytest_benchmarks("<op>")
    """
    import pytest

    device = default_device()
    params = [
        pytest.param(c, n, id=f"{c.id}-{n}")
        for c in bench_cases.select([op], None, device.type)
        for n in backend_names(c, device)
    ]

    def bench(benchmark, case, backend, kind):
        inp = case.make(device)
        fn = (forward if kind == "fwd" else forward_backward)(case, inp, backend)
        benchmark.group = f"{case.op} {case.id} {kind}"
        benchmark.extra_info.update(device=device_name(device), shape=case.shape, backend=backend)

        def run():
            fn()
            _sync(device)

        with checks(False):
            benchmark(run)

    @pytest.mark.parametrize("case,backend", params)
    def test_fwd(benchmark, case, backend):
        bench(benchmark, case, backend, "fwd")

    @pytest.mark.parametrize("case,backend", [p for p in params if p.values[0].loss is not None])
    def test_fwd_bwd(benchmark, case, backend):
        bench(benchmark, case, backend, "fwd+bwd")

    return test_fwd, test_fwd_bwd


# ---------------------------------------------------------------------------------- CLI


def _list_cases():
    for c in bench_cases.CASES:
        kind = "fwd+bwd" if c.loss else "fwd only"
        bw = "memory-bound" if c.bytes_fwd else ""
        print(f"{c.key:<28}{c.shape:<34}{kind:<10}{','.join(c.devices):<10}{bw}")


def main(argv=None):
    argv = sys.argv[2:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m pixelkernels bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if present, else cpu")
    p.add_argument("--op", action="append", help="op(s) to run (default: all)")
    p.add_argument("--workload", action="append", help="workload id(s), e.g. W2 (default: all)")
    p.add_argument("--backend", action="append", help="backend(s) besides the reference (default: usable)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", help="write the rows (and how they were measured) as JSON here")
    p.add_argument("--csv", help="write the rows as CSV here")
    p.add_argument("--plot", help="draw speedup bars to this PNG (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="short timing budget (smoke runs, not for numbers)")
    p.add_argument("--list", action="store_true", help="list the cases of the table and exit")
    a = p.parse_args(argv)
    if a.list:
        _list_cases()
        return 0
    device = torch.device(a.device) if a.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    for flag, given, known in (
        ("op", a.op, {c.op for c in bench_cases.CASES}),
        ("workload", a.workload, {c.id for c in bench_cases.CASES}),
        (
            "backend",
            a.backend,
            set(pk.BACKENDS) - {"auto"} | {b for c in bench_cases.CASES for b in c.baselines},
        ),
    ):
        if given and not set(given) <= known:
            p.error(f"unknown {flag}(s) {sorted(set(given) - known)}; known: {sorted(known)}")
    if not bench_cases.select(a.op, a.workload, device.type):
        p.error(f"no case of op {a.op or 'any'} and workload {a.workload or 'any'} runs on {device.type}")
    budget_s = 0.2 if a.quick else 2.0
    rows = run_bench(device, a.op, a.workload, a.backend, memory=not a.no_memory, budget_s=budget_s)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(device),
        "torch": torch.__version__,
        "build": pk.build_info(),
        "command": " ".join(["python -m pixelkernels bench", *argv]),
        "method": {
            "timer": "cuda events" if device.type == "cuda" else "time.perf_counter",
            "cache_flush_mib": _flush_bytes(device) / 2**20,
            "rounds": ROUNDS,
            "budget_s_per_kind": budget_s,
            "checks": "off in timed regions; checks_us = forward median with checks on - off, small input",
            "bw_frac_time": "graph replay median" if device.type == "cuda" else "eager median",
            "copy_gbs": rows[0]["copy_gbs"] if rows else NAN,
        },
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1, default=str)
    if a.csv and rows:
        with open(a.csv, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    if a.plot and rows:
        _plot(rows, a.plot)
    return 0

"""The rows of a run: for each case, one row per candidate (the reference, the best-PyTorch
baseline, the installed peers, the pixelkernels backends), timed side by side `repeat` times.

A run of a case (`run_case`):
1. one call of each candidate, forward and forward+backward: outputs and gradients for the
   error column (max over outputs and gradients of max|out - ref| / max|ref|, against the
   reference row); a candidate that fails is a row with a note, not timed;
2. `repeat` runs, each timing every candidate side by side in alternating rounds
   (timing.side_by_side), forward then forward+backward (then the CUDA-graph replays), with
   checks off; every run's median is kept, and the speedup over each comparison is taken run
   by run (the comparison's median over the candidate's, both from the same run);
3. once: the peak memory (memory.py), and the checks-on overhead of each pixelkernels backend
   at the workload's size: forward with checks on against forward with checks off, in 40 short
   alternating rounds (fewer with --quick), each call after the same cache flush as the timed
   ones.

Row fields (JSON/CSV): `<kind>_ms` / `_p20_ms` / `_p80_ms` over all runs' samples and `<kind>_ms_runs`
(each run's median), for kind fwd, fwdbwd and on CUDA graph_fwd, graph_fwdbwd;
`speedup_<comparison>_<fwd|fwdbwd>` (median over runs) with `_min`, `_max` and `_runs`;
`bw_frac_*` = the row's minimal DRAM bytes / its median time / copy bandwidth (graph replay on
CUDA, eager on the CPU); `peak_mib`, `max_rel_err`, `checks_on_us`, `checks_off_us`, `checks_us`
(on - off, per call) and `checks_frac` ((on - off) / off); `note`.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

import pixelkernels as pk
from pixelkernels import testing

from . import cases as _cases
from .cases import Case, Inputs
from .memory import peak_mib
from .steps import forward, forward_backward
from .timing import (
    NAN,
    ROUNDS,
    cache_flush_buffer,
    copy_bandwidth_gbs,
    evicting,
    flush_bytes,
    graph_samples,
    percentiles,
    reason,
    side_by_side,
    time_side_by_side,
    with_checks,
)

KINDS = ("fwd", "fwdbwd", "graph_fwd", "graph_fwdbwd")


class Progress:
    """Progress lines on stderr (`python -m pixelkernels bench`), each with the time since the
    run began: ``progress(msg)`` always prints; ``progress(msg, seconds)`` reports a step that
    took `seconds` and prints only when it took at least `min_s` (the long rows' details: one
    line per candidate or timing pass, the short rows stay at their start and finish lines)."""

    def __init__(self, stream=None, min_s: float = 1.0):
        self.stream, self.min_s, self.t0 = stream, min_s, time.perf_counter()

    def __call__(self, msg: str, seconds: float | None = None) -> None:
        if seconds is not None:
            if seconds < self.min_s:
                return
            msg = f"{msg} ({seconds:.1f} s)"
        m, s = divmod(int(time.perf_counter() - self.t0), 60)
        print(f"[bench {m:3d}m{s:02d}s] {msg}", file=self.stream or sys.stderr, flush=True)


def _quiet(msg: str, seconds: float | None = None) -> None:
    """No progress output (the default of run_case and run_bench when called as functions)."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def backend_names(case: Case, device: torch.device, requested=None, log=print) -> list[str]:
    """The comparisons first (the reference, the baseline, the peers installed here), then the
    pixelkernels backends that run on `device`: `requested`, or every usable one but the
    Triton interpreter on the CPU."""
    names = [_cases.REFERENCE, _cases.BASELINE]
    for p in case.peers:
        why = p.missing()
        if why is None:
            names.append(p.name)
        else:
            log(f"# {case.key}: peer {p.name} skipped: {why}")
    if requested is None:
        pick = [b for b in pk.available_backends() if not (b == "triton" and device.type == "cpu")]
    else:
        pick = [b for b in requested if b not in names]
    for b in pick:
        if b in names or b == _cases.REFERENCE:
            continue
        why = pk._backend.missing(b, device)
        if why is None:
            names.append(b)
        elif requested is not None:
            log(f"# {case.key}: skipping backend {b}: {why}")
    return names


def _tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def max_rel_error(got, ref) -> float:
    """The largest `pixelkernels.testing.max_rel_error` over the tensors of got and ref."""
    pairs = [(a, b) for a, b in zip(_tuple(got), _tuple(ref)) if isinstance(b, torch.Tensor)]
    return max((testing.max_rel_error(a, b) for a, b in pairs), default=0.0)


def dtype_name(inp: Inputs) -> str:
    t = next((a for a in inp.args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    return str(t.dtype).replace("torch.", "") if t is not None else ""


def _median(xs) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else NAN


def _spread(xs) -> dict:
    """Median, min and max of per-run values (NaN when no run has one)."""
    ok = [x for x in xs if x == x]
    return {"": _median(ok), "_min": min(ok) if ok else NAN, "_max": max(ok) if ok else NAN}


def _checks_overhead(case, inp, names, device, before, budget_s, progress=_quiet) -> dict:
    """{backend: (on, off)} in µs per forward at the workload's size, for the pixelkernels
    backends. Many short alternating rounds: a drift in the machine's load hits both alike."""
    out = {}
    for n in names:
        t0 = time.perf_counter()
        f = forward(case, inp, n)
        t = time_side_by_side(
            {"on": with_checks(True, f), "off": with_checks(False, f)},
            device,
            budget_s=budget_s / 2,
            rounds=max(ROUNDS, min(10 * ROUNDS, int(20 * budget_s))),  # 40 at the default budget
            before={"on": before[n], "off": before[n]},
            warmup=1,
            min_reps=1,
            max_reps=50,
        )
        out[n] = (t["on"][0] * 1e3, t["off"][0] * 1e3)
        progress(f"  {case.key} {n}: checks-on overhead timed", time.perf_counter() - t0)
    return out


def _cuda_generators(inp) -> tuple:
    """The CUDA generators among a case's arguments (a seeded sampler's), for graph capture."""
    vals = [*getattr(inp, "args", ()), *getattr(inp, "kwargs", {}).values()]
    return tuple(v for v in vals if isinstance(v, torch.Generator) and v.device.type == "cuda")


def run_case(
    case: Case,
    device: torch.device,
    names,
    *,
    budget_s,
    memory,
    flush,
    copy_gbs,
    repeat=1,
    min_reps=5,
    log=print,
    progress=_quiet,
):
    """The rows of one case, one per candidate (at least `min_reps` timed calls of each a round,
    fewer for calls longer than the round's budget). Call with checks off (run_bench does).
    `progress(msg, seconds)`: each step's time (a candidate's first calls, a timing pass, a peak
    memory, a checks-on overhead), see Progress."""
    t0 = time.perf_counter()
    inp = case.make(device)
    progress(f"  {case.key}: inputs made", time.perf_counter() - t0)
    outs, grads, notes = {}, {}, {}
    for name in names:  # one call of each: outputs and gradients for the error column
        t0 = time.perf_counter()
        try:
            outs[name] = _tuple(forward(case, inp, name)())
            if case.loss:
                grads[name] = forward_backward(case, inp, name)()
        except Exception as e:  # noqa: BLE001 - a failing candidate is a row with a note
            what = "forward+backward" if name in outs else "forward"
            notes[name] = f"{what} failed: {reason(e)}"
            log(f"# {case.key} {name}: {notes[name]} (not timed)")
        progress(f"  {case.key} {name}: first calls (outputs and gradients for the error column)",
                 time.perf_counter() - t0)  # fmt: skip
    ok = [n for n in names if n in outs]
    small = case.small(device) if case.small else None

    def before(step, which):
        # On the CPU the flush is followed by the same call on the small input (see evicting).
        prime = device.type == "cpu" and small is not None
        return {n: evicting(flush, step(case, small, n) if prime else None) for n in which}

    before_fwd, before_fb = before(forward, ok), before(forward_backward, grads)
    samples = {k: {n: [] for n in names} for k in KINDS}  # kind -> name -> every sample
    runs = {k: {n: [] for n in names} for k in KINDS}  # kind -> name -> each run's median
    rounds = {} if case.rounds is None else {"rounds": case.rounds}
    for r in range(repeat):
        run = f" (run {r + 1}/{repeat})" if repeat > 1 else ""
        t0 = time.perf_counter()
        got = {}
        got["fwd"] = side_by_side(
            {n: forward(case, inp, n) for n in ok}, device, budget_s=budget_s, before=before_fwd,
            min_reps=min_reps, **rounds,
        )  # fmt: skip
        progress(f"  {case.key}: forward timed, {', '.join(ok)} side by side{run}", time.perf_counter() - t0)
        t0 = time.perf_counter()
        got["fwdbwd"] = side_by_side(
            {n: forward_backward(case, inp, n) for n in grads}, device, budget_s=budget_s, before=before_fb,
            min_reps=min_reps, **rounds,
        )  # fmt: skip
        if grads:
            progress(f"  {case.key}: forward+backward timed, {', '.join(grads)} side by side{run}",
                     time.perf_counter() - t0)  # fmt: skip
        if device.type == "cuda":
            for kind, step, which in (("graph_fwd", forward, ok), ("graph_fwdbwd", forward_backward, grads)):
                t0 = time.perf_counter()
                got[kind], why = graph_samples(
                    {n: step(case, inp, n) for n in which}, device, budget_s=budget_s, flush=flush,
                    generators=_cuda_generators(inp),
                )
                for n, w in why.items():
                    if w not in notes.get(n, ""):
                        log(f"# {case.key} {n}: {kind} {w} (graph times NaN)")
                        notes[n] = "; ".join(filter(None, [notes.get(n), f"{kind} {w}"]))
                progress(f"  {case.key}: {kind} replays timed{run}", time.perf_counter() - t0)
        for kind, by_name in got.items():
            for n in names:
                t = by_name.get(n, [])
                samples[kind][n] += t
                runs[kind][n].append(percentiles(t)[0])
    peak = {}
    for n in (grads if case.loss else ok) if memory else ():
        t0 = time.perf_counter()
        try:
            peak[n] = peak_mib(case, inp, n, device)
        except Exception as e:  # noqa: BLE001 - a row without its peak, never a lost op
            peak[n] = NAN
            log(f"# {case.key} {n}: peak memory not measured: {reason(e)}")
        progress(f"  {case.key} {n}: peak memory measured", time.perf_counter() - t0)
    ours = [n for n in ok if n not in case.comparisons()]
    chk = _checks_overhead(case, inp, ours, device, before_fwd, budget_s, progress)

    def bw(nbytes, t_ms):
        return nbytes(inp) / (t_ms * 1e-3) / 1e9 / copy_gbs if nbytes else NAN

    ref = outs.get(_cases.REFERENCE, ()) + grads.get(_cases.REFERENCE, ())
    compared = [c for c in case.comparisons() if c in names]
    rows = []
    for n in names:
        row = {
            "op": case.op,
            "workload": case.id,
            "shape": case.shape,
            "dtype": dtype_name(inp),
            "device": device_name(device),
            "backend": n,
            "runs": repeat,
        }
        for kind in KINDS:
            p50, p20, p80 = percentiles(samples[kind][n])
            row.update(
                {
                    f"{kind}_ms": p50,
                    f"{kind}_p20_ms": p20,
                    f"{kind}_p80_ms": p80,
                    f"{kind}_ms_runs": runs[kind][n],
                }
            )
        for c in compared:
            for kind in ("fwd", "fwdbwd"):
                per_run = [a / b for a, b in zip(runs[kind][c], runs[kind][n])]
                for suffix, v in _spread(per_run).items():
                    row[f"speedup_{c}_{kind}{suffix}"] = v
                row[f"speedup_{c}_{kind}_runs"] = per_run
        on, off = chk.get(n, (NAN, NAN))
        eager = "graph_" if device.type == "cuda" else ""
        row.update(
            peak_mib=peak.get(n, NAN),
            max_rel_err=max_rel_error(outs[n] + grads.get(n, ()), ref) if n in outs and ref else NAN,
            checks_on_us=on,
            checks_off_us=off,
            checks_us=on - off,
            checks_frac=(on - off) / off,
            bw_frac_fwd=bw(case.bytes_fwd, row[f"{eager}fwd_ms"]),
            bw_frac_fwdbwd=bw(case.bytes_fwdbwd, row[f"{eager}fwdbwd_ms"]),
            copy_gbs=copy_gbs,
            note=notes.get(n, ""),
        )
        rows.append(row)
    return rows


def run_bench(
    device,
    ops=None,
    workloads=None,
    backends=None,
    memory=True,
    log=print,
    budget_s=2.0,
    repeat=1,
    min_reps=5,
    progress=_quiet,
    on_case=None,
):
    """Every selected case on `device`, timed with checks off, `repeat` runs each; the rows
    (each case's also logged as a table as soon as it is done). `progress`: e.g. Progress(),
    a line as each row starts and finishes, and the long rows' steps (see run_case).
    `on_case(rows)`: called with the rows so far as each case finishes (the CLI rewrites its
    --json there, so a run cut at a deadline keeps its finished cases)."""
    from . import report

    flush = cache_flush_buffer(device)
    copy_gbs = copy_bandwidth_gbs(device, flush)
    log(f"# device: {device_name(device)}; torch {torch.__version__}; copy bandwidth {copy_gbs:.1f} GB/s")
    what = "L2 flushed" if device.type == "cuda" else "last-level cache flushed (read)"
    mib = flush_bytes(device) / 2**20
    log(f"# {what} before every timed call ({mib:.0f} MiB buffer); {repeat} run(s) per row")
    selected = _cases.select(ops, workloads, device.type)
    table = report.Table(device, selected, repeat)
    log(table.header())
    rows = []
    with pk.use_checks(False):
        for i, case in enumerate(selected, 1):
            names = backend_names(case, device, backends, log)
            progress(f"{i}/{len(selected)} {case.key} [{case.shape}]: start ({', '.join(names)})")
            t0 = time.perf_counter()
            case_rows = run_case(
                case, device, names, budget_s=budget_s, memory=memory, flush=flush, copy_gbs=copy_gbs,
                repeat=repeat, min_reps=min_reps, log=log, progress=progress,
            )  # fmt: skip
            progress(f"{i}/{len(selected)} {case.key}: done in {time.perf_counter() - t0:.1f} s")
            for row in case_rows:
                log(table.line(row))
            rows += case_rows
            if on_case is not None:
                on_case(rows)
    return rows

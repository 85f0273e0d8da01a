"""The site's speed pages, generated from ``benchmarks/results/`` (issue 39 item 5).

``generate(results, out)`` reads every committed result and writes, under ``out``:

- ``index.md``: every run (date, device, machine, command, method, a link to its page), one
  table per device, then the files it could not read and the notes and logs without a JSON;
- ``<run>.md`` per run: the run's facts, its tables and a plot (``<run>.png``). A run is one
  JSON file with ``meta`` and ``rows``: what ``python -m pixelkernels bench --json`` writes (op
  rows, ``bench --host`` rows or ``bench --models`` rows), found at any depth; a GPU session's
  folder adds its ``verdict.json`` (stages) and ``tests.json`` (test outcomes) to the page of
  the bench JSON beside them;
- ``gpu.md``: the per-op GPU table and the GPU test table (``tools/gpu_tables.py``).

Every number on a run page is that run's: the page is the run, and a speedup cell shows its
spread over the run's repeats (``median (worst–best, N runs)``) when there were several. A file
in a format the generator does not know is listed with a note, never a failure. The output is
deterministic (same results, same pages) and plots are only redrawn when their rows change (a
key file beside each PNG), so a rebuild costs well under a second; a first build draws every
plot.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import gpu_tables

NAN = float("nan")
PLOT_VERSION = "3"  # bump to redraw every plot
REFERENCE, BASELINE = "reference", "baseline"
_SPEEDUP = re.compile(r"^speedup_(.+)_(fwd|fwdbwd)$")
_SESSION = ("verdict.json", "tests.json")

# The pages' fixed prose.
_OLDER = (
    "An older result format: its speedups are over the reference only, from one run, with no spread recorded."
)
_SPEEDUPS_TEXT = (
    "Forward / forward+backward, the comparison's median time over ours, run by run; "
    "`median× (worst–best, N runs)` over the run's repeats. Above 1 is faster than the "
    "comparison."
)
_HOST_TEXT = (
    "Host time per call in units `u` of one tiny `torch.add` measured in this run (u = {u}); "
    "× baseline: that time over the best plain PyTorch's (below 1 is less host time); launches: "
    "on the CUDA path and on the Triton path, the op's own in parentheses (the total less the ATen "
    "ops of the step's loss and its backward). The Triton rows' host times are the interpreter's "
    "when `TRITON_INTERPRET=1`."
)
_MODELS_TEXT = (
    "One training step (forward, backward, Adam update) of each model at its paper's size; "
    "× reference: the reference backend's median step over this backend's, run by run, "
    "`median× (worst–best, N runs)`; ops share: the profiled share of the step spent in "
    "pixelkernels' ops; saved: (reference − backend) / reference."
)
_INDEX_TEXT = (
    "Every committed result under `benchmarks/results/`, newest first, one table per device. "
    "Each run has its own page: what ran, on what, how it was measured, and its numbers; a "
    "number on these pages belongs to the run on whose page it is. How the numbers are taken: "
    "[the method](../method.md)."
)
_GPU_LINK = (
    "The newest GPU measurement of every op row, and the GPU test outcomes per test module: "
    "[GPU tables](gpu.md)."
)


# --- reading ------------------------------------------------------------------------------------


class Run:
    """One result file with ``meta`` and ``rows``, and what the generator makes of it."""

    def __init__(self, path: Path, results: Path, data: dict):
        self.path = path
        self.results = results
        self.rel = path.relative_to(results).as_posix()
        self.shown = f"benchmarks/results/{self.rel}"
        self.meta: dict = data["meta"] if isinstance(data.get("meta"), dict) else {}
        self.rows: list = data["rows"]
        self.name = re.sub(r"[^A-Za-z0-9_-]+", "-", self.rel.removesuffix(".json")).strip("-")
        self.kind = _kind(self.rows)
        self.verdict: dict | None = None
        self.tests: list | None = None

    @property
    def date(self) -> str:
        return str(self.meta.get("date") or "undated")

    @property
    def device(self) -> str:
        return str(self.meta.get("device") or "device not recorded")

    @property
    def gpu(self) -> bool:
        return gpu_tables._is_gpu(self.meta)


def _kind(rows: list) -> str:
    """What the rows are: ``ops`` (bench), ``host`` (bench --host), ``models`` (bench --models),
    ``kernel_model`` (bench --model-gpu --kernels)."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return "unknown"
    keys = set().union(*rows)
    if {"op", "workload", "kernel", "predicted_us"} <= keys:
        return "kernel_model"
    if {"op", "workload", "backend", "host_u"} <= keys:
        return "host"
    if {"model", "backend", "step_ms"} <= keys:
        return "models"
    if {"op", "workload", "backend", "fwd_ms"} <= keys:
        return "ops"
    return "unknown"


def _read(results: Path):
    """(runs, unreadable [(path, why)], other files without a JSON run)."""
    runs, bad, used = [], [], set()
    for path in sorted(results.rglob("*.json")):
        rel = path.relative_to(results).as_posix()
        if path.name in ("verdict.json", "tests.json"):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            bad.append((rel, f"not JSON: {type(e).__name__}: {e}".splitlines()[0][:160]))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "meta" not in data:
            bad.append((rel, "not a result (no `meta` and `rows`)"))
            continue
        run = Run(path, results, data)
        runs.append(run)
        used.add(path)
    # a GPU session's folder: its verdict (and tests) go on the page of the bench JSON beside them
    for verdict in sorted(results.rglob("verdict.json")):
        try:
            v = json.loads(verdict.read_text())
            tests = (
                json.loads(verdict.with_name("tests.json").read_text())
                if verdict.with_name("tests.json").exists()
                else None
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            bad.append((verdict.relative_to(results).as_posix(), f"not JSON: {type(e).__name__}"))
            continue
        for run in runs:
            if run.path.parent == verdict.parent:
                run.verdict, run.tests = v, tests
                used |= {verdict, verdict.with_name("tests.json")}
    stems = {r.path.with_suffix("") for r in runs}
    others = []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        base = (
            Path(str(path).removesuffix(".tar.gz")).with_suffix("")
            if path.name.endswith(".tar.gz")
            else path.with_suffix("")
        )
        if path in used or base in stems or path.suffix == ".json" or path.name.startswith("."):
            continue
        if any(r.path.parent == path.parent and r.path.parent != results for r in runs):
            continue  # a session folder's logs and notes: listed on its runs' pages
        others.append(path.relative_to(results).as_posix())
    seen: set[str] = set()
    for run in runs:  # two paths that spell the same page name (a/b.json, a-b.json): the second gets -2
        base, n = run.name, 1
        while run.name in seen or run.name in ("index", "gpu"):
            n += 1
            run.name = f"{base}-{n}"
        seen.add(run.name)
    runs.sort(key=lambda r: (r.date, r.rel), reverse=True)
    return runs, bad, others


# --- formatting ---------------------------------------------------------------------------------


def _missing(x) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x) or math.isinf(x)


def _sig(x, unit: str = "") -> str:
    if _missing(x):
        return "–"
    a = abs(x)
    s = f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3f}"
    return s + unit


def _ms(x) -> str:
    return _sig(x)


def _pct(x) -> str:
    if _missing(x):
        return "–"
    return f"{100 * x:.1f} %" if abs(x) < 0.01 and x else f"{100 * x:.0f} %"


# The papers the results cite by their number in the project's notes ("seed 00N"), as a reader
# finds them.
_PAPERS = {
    "0": "Li and Liu, Improving Image Co-segmentation via Deep Metric Learning",
    "1": "Zeng et al., Ro-SOS: Metric Expression Network for Robust Salient Object Segmentation",
    "2": "Sharma et al., Class-Agnostic Segmentation Loss (2021)",
    "3": "Najafi et al., Similarity Learning for Dense Label Transfer (2018)",
    "4": "Bhatia, Few-Shot Interactive Segmentation (thesis, IIT Bombay, 2021)",
}


def _cite(text: str) -> str:
    return re.sub(r"\bseed 00([0-4])\b", lambda m: _PAPERS[m.group(1)], text)


def _cell(text) -> str:
    return _cite(str(text)).replace("|", "\\|").replace("\n", " ")


def speedup(row: dict, key: str) -> str:
    """``median×`` or ``median× (worst–best, N runs)`` of a speedup column over the run's repeats."""
    med = row.get(key)
    if _missing(med):
        return "–"
    runs = row.get(key + "_runs")
    n = len(runs) if isinstance(runs, list) else int(row.get("runs") or 1)
    lo, hi = row.get(key + "_min"), row.get(key + "_max")
    if n > 1 and not _missing(lo) and not _missing(hi):
        return f"{_sig(med)}× ({_sig(lo)}–{_sig(hi)}, {n} runs)"
    return f"{_sig(med)}×"


def _pair(row: dict, a: str, b: str, fmt) -> str:
    x, y = fmt(row, a), fmt(row, b)
    return "–" if x == y == "–" else f"{x} / {y}"


def _table(head: list[str], body: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    return out + [""]


def comparisons(rows: list[dict]) -> list[str]:
    """The reference, the best-PyTorch baseline and the peers the rows' speedups are over."""
    found = []
    for r in rows:
        for k in r:
            m = _SPEEDUP.match(k)
            if m and m.group(1) not in found:
                found.append(m.group(1))
    return sorted(found, key=lambda c: (c != REFERENCE, c != BASELINE, c))


def _title(c: str) -> str:
    return {REFERENCE: "× reference", BASELINE: "× best PyTorch"}.get(c, f"× {c}")


# --- the modelled floor -------------------------------------------------------------------------

_MODEL: dict = {}


def _case_model(op: str, workload: str, *, traffic: bool = False) -> dict | None:
    """The bench case's FLOPs (and, with `traffic`, its minimal DRAM bytes), forward and
    forward+backward, from its inputs built on the CPU; None where the case has no such model.
    Building inputs costs up to seconds for the largest workloads, so only the compute-bound
    cases (and, for GPU rows whose traffic their run did not record, the others) are built."""
    key = (op, workload, traffic)
    if key not in _MODEL:
        _MODEL[key] = None
        try:
            import torch

            from pixelkernels.bench import cases as _cases

            case = next((c for c in _cases.CASES if c.op == op and c.id == workload), None)
            if case is not None and (case.flops_fwd is not None or (traffic and case.bytes_fwd is not None)):
                inp = case.make(torch.device("cpu"))
                half = any(
                    t.dtype in (torch.float16, torch.bfloat16)
                    for t in inp.args
                    if isinstance(t, torch.Tensor)
                )
                m = {
                    "flops_fwd": case.flops_fwd(inp) if case.flops_fwd else 0.0,
                    "flops_fwdbwd": case.flops_fwdbwd(inp) if case.flops_fwdbwd else 0.0,
                    "half": half,
                }
                if traffic and case.bytes_fwd is not None:
                    m["bytes_fwd"] = case.bytes_fwd(inp)
                    m["bytes_fwdbwd"] = case.bytes_fwdbwd(inp) if (case.bytes_fwdbwd and case.loss) else None
                _MODEL[key] = m
        except Exception:  # noqa: BLE001 - a case that cannot be built has no model here
            _MODEL[key] = None
    return _MODEL[key]


def floor_us(row: dict, meta: dict, kind: str = "fwdbwd") -> float:
    """The row's modelled H100 floor in µs: its minimal DRAM bytes (recovered from the run's own
    bandwidth column: fraction × time × the run's copy bandwidth; for a GPU row without one, the
    case's current traffic model) and, for the compute-bound cases, their FLOPs, at an H100
    SXM's peak rates (``pixelkernels.bench.gpu_model``)."""
    from pixelkernels.bench import gpu_model

    frac = row.get(f"bw_frac_{kind}")
    method = meta.get("method") if isinstance(meta.get("method"), dict) else {}
    gpu = gpu_tables._is_gpu(meta)
    graph = "graph" in str(method.get("bw_frac_time", "")) or (gpu and "bw_frac_time" not in method)
    t = row.get(f"graph_{kind}_ms" if graph else f"{kind}_ms")
    gbs = row.get("copy_gbs", method.get("copy_gbs"))
    op, workload = str(row.get("op")), str(row.get("workload"))
    if not any(_missing(x) for x in (frac, t, gbs)):
        nbytes, model = frac * (t * 1e-3) * (gbs * 1e9), _case_model(op, workload)
    elif gpu:
        model = _case_model(op, workload, traffic=True)
        nbytes = (model or {}).get(f"bytes_{kind}")
        if nbytes is None:
            return NAN
    else:
        return NAN
    f, half = (0.0, False) if model is None else (model[f"flops_{kind}"], model["half"])
    return gpu_model.floor_us(nbytes, f, half)


# --- a run's page -------------------------------------------------------------------------------


def _machine(run: Run) -> str:
    b = run.meta.get("build") if isinstance(run.meta.get("build"), dict) else {}
    torch_v = run.meta.get("torch") or b.get("torch")
    parts = [
        f"torch {torch_v}" if torch_v else None,
        f"CUDA {b['cuda']}" if b.get("cuda") else None,
        f"Triton {b['triton']}" if b.get("triton") else None,
    ]
    facts = run.verdict.get("facts") if isinstance(run.verdict, dict) else None
    host = facts.get("host") if isinstance(facts, dict) else None
    if isinstance(host, dict):
        parts.append(
            f"host {host.get('machine', '?')}, {host.get('cpus', '?')} CPUs, Python {host.get('python', '?')}"
        )
    return ", ".join(p for p in parts if p) or "not recorded"


def _method_short(run: Run) -> str:
    m = run.meta.get("method")
    if not isinstance(m, dict):
        return "not recorded (older format)"
    bits = [m.get("timer")]
    if run.kind == "host":
        bits.append("host time in units of a tiny `torch.add`")
    if m.get("runs"):
        plural = "s" if m["runs"] != 1 else ""
        bits.append(f"{m['runs']} run{plural} × {m.get('rounds_per_run', '?')} rounds")
    elif m.get("rounds"):
        bits.append(f"{m['rounds']} rounds, 1 run")
    flush = m.get("cache_flush_mib", m.get("l2_flush_mib"))
    if flush is not None:
        bits.append(f"{flush:g} MiB flush" if flush else "no cache flush")
    if not _missing(m.get("copy_gbs")):
        bits.append(f"copy {m['copy_gbs']:.1f} GB/s")
    return ", ".join(str(b) for b in bits if b)


def _command(run: Run) -> str:
    return str(run.meta.get("command") or "not recorded")


def _facts(run: Run) -> list[str]:
    out = [
        f"- **File:** `{run.shown}`",
        f"- **Date:** {run.date}",
        f"- **Device:** {run.device}",
        f"- **Machine and build:** {_machine(run)}",
        "- **Command:**",
        "",
        "  ```text",
        f"  {_command(run)}",
        "  ```",
        "",
    ]
    m = run.meta.get("method")
    if isinstance(m, dict):
        out.append("- **Method** (as the run recorded it):")
        out.append("")
        for k in sorted(m):
            v = m[k]
            if isinstance(v, str) and "\n" in v:
                continue  # the long `what` texts: the method page says it
            if isinstance(v, float):
                v = f"{v:.4g}"
            out.append(f"  - `{k}`: {_cell(v)}")
        out.append("")
    else:
        out += ["- **Method:** not recorded (an older format; see the method page for what changed).", ""]
    if run.meta.get("note"):
        out += [f"- **Note:** {_cell(run.meta['note'])}", ""]
    out += _beside(run)
    return out


def _beside(run: Run) -> list[str]:
    """The files that go with the run: same name, other suffix (the printed table, CSV, plot);
    in a session's folder, the folder's other files and the session's notes above it."""
    stem, folder = run.path.with_suffix(""), run.path.parent
    session = folder != run.results
    near = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p != run.path
        and (p.with_suffix("") == stem or (session and (p.suffix != ".json" or p.name in _SESSION)))
    )
    notes = []
    for up in list(run.path.parents)[1:]:
        if up == run.results or run.results not in up.parents:
            break
        notes += sorted(up.glob("README*"))
    out = []
    if near:
        out += ["- **Files beside it:** " + ", ".join(f"`{p.name}`" for p in near), ""]
    if notes:
        out += [
            "- **The session's notes:** "
            + ", ".join(f"`benchmarks/results/{p.relative_to(run.results).as_posix()}`" for p in notes),
            "",
        ]
    return out


def _ops_tables(run: Run, page: list[str]) -> None:
    """The op rows: speedups, then times, bandwidth and floors."""
    rows = [dict(r) for r in run.rows]
    older = False
    for r in rows:  # the first format: `speedup_fwd`/`speedup_fwdbwd`, over the reference only
        for kind in ("fwd", "fwdbwd"):
            if f"speedup_{kind}" in r and f"speedup_{REFERENCE}_{kind}" not in r:
                r[f"speedup_{REFERENCE}_{kind}"] = r.pop(f"speedup_{kind}")
                older = True
    comps = comparisons(rows)
    theirs = {REFERENCE, BASELINE, *comps}
    ours = [r for r in rows if r.get("backend") not in theirs]
    cuda = any(not _missing(r.get("graph_fwdbwd_ms")) or not _missing(r.get("graph_fwd_ms")) for r in rows)
    if older:
        page += ["```{note}", _OLDER, "```", ""]
    if ours and comps:
        page += ["## Speedups", "", _SPEEDUPS_TEXT, ""]
        head = ["op", "workload", "backend"] + [f"{_title(c)} fwd / f+b" for c in comps]
        body = [
            [r.get("op"), r.get("workload"), r.get("backend")]
            + [_pair(r, f"speedup_{c}_fwd", f"speedup_{c}_fwdbwd", speedup) for c in comps]
            for r in ours
        ]
        page += _table(head, body)
    page += [
        "## Times, bandwidth and floors",
        "",
        "Every candidate of the run, the comparisons included. ms: the median over all the run's "
        "samples; % copy: the row's minimal DRAM bytes / its time / the copy bandwidth measured in "
        "the run" + (" (graph-replay time)" if cuda else "") + "; floor here: the time those bytes take at "
        "that copy bandwidth; H100 floor: those bytes (and the case's FLOPs where modelled) at an H100 "
        "SXM's peak rates.",
        "",
    ]
    head = ["op", "workload", "shape", "backend", "fwd / f+b ms"]
    if cuda:
        head.append("graph fwd / f+b ms")
    head += [
        "% copy fwd / f+b",
        "floor here f+b ms",
        "H100 floor f+b µs",
        "peak MiB",
        "max rel err",
        "checks µs",
    ]
    body = []
    m = run.meta
    for r in rows:
        cells = [
            r.get("op"),
            r.get("workload"),
            r.get("shape", "–"),
            r.get("backend"),
            _pair(r, "fwd_ms", "fwdbwd_ms", lambda x, k: _ms(x.get(k))),
        ]
        if cuda:
            cells.append(_pair(r, "graph_fwd_ms", "graph_fwdbwd_ms", lambda x, k: _ms(x.get(k))))
        t = r.get("graph_fwdbwd_ms") if cuda else r.get("fwdbwd_ms")
        here = (
            r.get("bw_frac_fwdbwd", NAN) * t
            if not _missing(t) and not _missing(r.get("bw_frac_fwdbwd"))
            else NAN
        )
        err = r.get("max_rel_err")
        cells += [
            _pair(r, "bw_frac_fwd", "bw_frac_fwdbwd", lambda x, k: _pct(x.get(k))),
            _ms(here),
            _sig(floor_us(r, m)),
            _sig(r.get("peak_mib")),
            "–" if _missing(err) else f"{err:.1e}",
            _sig(r.get("checks_us")),
        ]
        body.append(cells)
    page += _table(head, body)
    notes = [(r.get("op"), r.get("workload"), r.get("backend"), r["note"]) for r in rows if r.get("note")]
    if notes:
        page += ["Notes the run recorded:", ""]
        page += [f"- {op} {w} {b}: {_cell(n)}" for op, w, b, n in notes] + [""]


def _host_tables(run: Run, page: list[str]) -> None:
    units = sorted({r.get("unit_us") for r in run.rows if not _missing(r.get("unit_us"))})
    u = f"{units[0]:.2f} µs" if len(units) == 1 else ", ".join(f"{x:.2f}" for x in units) + " µs"
    page += ["## Host path per op", "", _HOST_TEXT.format(u=u), ""]

    def own(r, k):
        n = r.get(k)
        if _missing(n):
            return "–"
        lo = r.get("loss_ops")
        return (
            f"{n} ({n - lo})"
            if not _missing(lo) and r.get("backend") not in (REFERENCE, BASELINE) and n != n - lo
            else f"{n}"
        )

    head = [
        "op",
        "workload",
        "kind",
        "backend",
        "host u",
        "host µs",
        "× baseline",
        "ATen ops",
        "CUDA-path launches",
        "Triton-path launches",
        "syncs",
    ]
    body = [
        [
            r.get("op"),
            r.get("workload"),
            r.get("kind", "–"),
            r.get("backend"),
            _sig(r.get("host_u")),
            _sig(r.get("host_us")),
            _sig(r.get("vs_baseline")),
            r.get("aten_ops", "–"),
            own(r, "cuda_launches"),
            own(r, "triton_launches"),
            r.get("syncs", "–"),
        ]
        for r in run.rows
    ]
    page += _table(head, body)


_KERNEL_MODEL_TEXT = (
    "Each row's CUDA path emulated on the CPU (the real kernels, launched with a GPU's grids): "
    "the bytes of the distinct 32-byte sectors each launch reads and writes, and its predicted "
    "time from its SASS facts (occupancy, load bytes in flight; `pixelkernels/bench/gpu_model.py`). "
    "Minimal: the row's traffic model; floor: minimal bytes at the datasheet bandwidth. "
    "Measured: a GPU run's `bench --kernels`, where given (`--measured`)."
)


def _kernel_model_tables(run: Run, page: list[str]) -> None:
    page += ["## Per row", "", _KERNEL_MODEL_TEXT, ""]
    totals = [r for r in run.rows if r.get("kernel") == "(all)"]
    head = ["op", "workload", "launches", "MB moved", "MB minimal", "floor µs", "predicted µs", "measured µs", "÷"]
    body = [[r.get("op"), r.get("workload"), r.get("launches", "–"),
             _sig((r.get("read", 0) + r.get("written", 0)) / 1e6), _sig(r.get("minimal", float("nan")) / 1e6),
             _sig(r.get("floor_us")), _sig(r.get("predicted_us")), _sig(r.get("measured_us")), _sig(r.get("ratio"))]
            for r in totals]  # fmt: skip
    page += _table(head, body)
    page += ["## Per launch", ""]
    head = ["op", "workload", "kernel", "blocks", "fill", "occupancy", "B in flight", "MB read", "MB written",
            "predicted µs", "bound", "measured µs", "÷"]  # fmt: skip
    body = [[r.get("op"), r.get("workload"), f"`{(r.get('sass') or r.get('kernel', ''))[:90]}`", r.get("blocks", "–"),
             _sig(r.get("fill")), _sig(r.get("occupancy")), r.get("bytes_in_flight") or "–", _sig(r.get("read", 0) / 1e6),
             _sig(r.get("written", 0) / 1e6), _sig(r.get("predicted_us")), r.get("bound", "–"),
             _sig(r.get("measured_us")), _sig(r.get("ratio"))]
            for r in run.rows if r.get("kernel") != "(all)"]  # fmt: skip
    page += _table(head, body)


def _models_tables(run: Run, page: list[str]) -> None:
    page += ["## Training steps", "", _MODELS_TEXT, ""]

    def x(r):
        n = int(r.get("runs") or 1)
        med, lo, hi = r.get("speedup"), r.get("speedup_min"), r.get("speedup_max")
        if _missing(med):
            return "–"
        return (
            f"{_sig(med)}× ({_sig(lo)}–{_sig(hi)}, {n} runs)"
            if n > 1 and not _missing(lo)
            else f"{_sig(med)}×"
        )

    head = [
        "model",
        "batch",
        "size",
        "backend",
        "step ms (p20–p80)",
        "× reference",
        "ops share",
        "saved",
        "setting",
    ]
    body = [
        [
            r.get("model"),
            r.get("batch", "–"),
            r.get("size", "–"),
            r.get("backend"),
            f"{_ms(r.get('step_ms'))} ({_ms(r.get('step_ms_p20'))}–{_ms(r.get('step_ms_p80'))})",
            x(r),
            _pct(r.get("ops_share")),
            _pct(r.get("saved")),
            r.get("paper", "–"),
        ]
        for r in run.rows
    ]
    page += _table(head, body)


def _verdict(run: Run, page: list[str]) -> None:
    facts = run.verdict.get("facts", {}) if isinstance(run.verdict, dict) else {}
    stages = run.verdict.get("stages", []) if isinstance(run.verdict, dict) else []
    page += [
        "## The GPU session's verdict",
        "",
        f"`verdict.json` beside this file (`bash .ci/gpu verdict`), started {facts.get('started', '?')}"
        + (" (a dry rehearsal)" if facts.get("dry") else "")
        + ":",
        "",
    ]
    if isinstance(stages, list) and stages:
        page += _table(
            ["stage", "status", "seconds", "passed", "failed", "why"],
            [
                [
                    s.get("name"),
                    s.get("status"),
                    _sig(s.get("seconds")),
                    s.get("passed"),
                    s.get("failed"),
                    s.get("why") or "",
                ]
                for s in stages
                if isinstance(s, dict)
            ],
        )
    if isinstance(run.tests, list) and run.tests:
        c = Counter(t.get("outcome", "?") for t in run.tests if isinstance(t, dict))
        page += [
            "Tests it ran on the GPU (`tests.json`): "
            + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
            + ". Per test module: the [GPU tables](gpu.md).",
            "",
        ]
        failed = sorted(
            t["test"] for t in run.tests if isinstance(t, dict) and t.get("outcome") in ("failed", "error")
        )
        if failed:
            page += ["Failed:", ""] + [f"- `{_cell(t)}`" for t in failed[:60]]
            page += [f"- … and {len(failed) - 60} more" if len(failed) > 60 else "", ""]


def _page(run: Run, drawn: bool) -> str:
    what = {
        "ops": "ops",
        "host": "host path per op (`bench --host`)",
        "models": "training steps (`bench --models`)",
        "kernel_model": "predicted time per CUDA kernel (`bench --model-gpu --kernels`)",
        "unknown": "unknown format",
    }[run.kind]
    page = [f"# {run.date}: {run.device}, {what}", ""]
    page += _facts(run)
    if run.kind == "ops":
        _ops_tables(run, page)
    elif run.kind == "host":
        _host_tables(run, page)
    elif run.kind == "models":
        _models_tables(run, page)
    elif run.kind == "kernel_model":
        _kernel_model_tables(run, page)
    else:
        keys = sorted(set().union(*(r for r in run.rows if isinstance(r, dict)))) if run.rows else []
        page += [
            "```{note}",
            "This file's rows are in a format the generator does not know"
            + (f" (keys: {', '.join(keys[:12])}{', …' if len(keys) > 12 else ''})" if keys else " (no rows)")
            + "; it is listed, not tabulated.",
            "```",
            "",
        ]
    if run.verdict is not None:
        _verdict(run, page)
    if drawn:
        alt = {
            "ops": "Speedups and bandwidth",
            "host": "Host time against the baseline's",
            "models": "Training-step speedups",
        }[run.kind]
        page += ["## Plot", "", f"![{alt}, run of {run.date} on {_cell(run.device)}]({run.name}.png)", ""]
    return "\n".join(page).rstrip() + "\n"


# --- plots --------------------------------------------------------------------------------------


def _plot_rows(run: Run) -> list[dict]:
    """The rows the run's plot draws (none: no plot)."""
    if run.kind == "ops":
        rows = [_plottable(r) for r in run.rows]
        comps = set(comparisons(rows))
        has = any(r.get("backend") not in comps | {REFERENCE, BASELINE} for r in rows) and (
            {REFERENCE, BASELINE} & comps
        )  # plot.py draws these two
        return rows if has else []
    if run.kind == "host":
        skip = {REFERENCE, BASELINE} | (set() if run.gpu else {"triton"})  # on a CPU: the interpreter's times
        return [r for r in run.rows if r.get("backend") not in skip and not _missing(r.get("vs_baseline"))]
    if run.kind == "models":
        return [r for r in run.rows if r.get("backend") != REFERENCE and not _missing(r.get("speedup"))]
    return []


def _key(run: Run) -> str:
    return hashlib.sha256(
        json.dumps(
            [PLOT_VERSION, run.kind, run.date, run.device, run.rows], sort_keys=True, default=str
        ).encode()
    ).hexdigest()


def _fresh(run: Run, png: Path) -> bool:
    stamp = png.with_name(png.name + ".key")
    return png.exists() and stamp.exists() and stamp.read_text() == _key(run)


def _draw_all(jobs: list) -> set[str]:
    """Draw the plots of [(run, png)] whose rows changed, two or more at a time where the
    platform forks; return the names of the runs whose plot is there."""
    todo = [j for j in jobs if not _fresh(*j)]
    done = {run.name for run, png in jobs if (run, png) not in todo}
    results = None
    if len(todo) > 1:
        try:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1), mp_context=ctx) as ex:
                results = list(ex.map(_plot_job, todo))
        except Exception:  # noqa: BLE001 - no fork, or a broken pool: draw them here
            results = None
    if results is None:
        results = [_plot_job(j) for j in todo]
    return done | {run.name for (run, _), ok in zip(todo, results) if ok}


def _plot_job(job) -> bool:
    return _plot(*job)


def _plot(run: Run, png: Path) -> bool:
    """Draw the run's plot to `png` and its key beside it. False where there is nothing to draw,
    no matplotlib, or the drawing failed (the page then has no plot)."""
    key = _key(run)
    stamp = png.with_name(png.name + ".key")
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return False
    title = f"{run.shown} ({run.date}, {run.device})"
    rows = _plot_rows(run)
    if not rows:
        return False
    try:
        if run.kind == "ops":
            import contextlib
            import io

            from pixelkernels.bench import plot

            with contextlib.redirect_stdout(io.StringIO()):
                ok = plot.plot(rows, str(png), title)
        else:
            ok = _bars(run, rows, png, title)
    except Exception:  # noqa: BLE001 - a plot that cannot be drawn leaves the page without one
        ok = False
    if ok:
        stamp.write_text(key)
    return ok


def _plottable(row: dict) -> dict:
    """The row as bench/plot.py draws it: the first format's speedups as the reference's, and no
    whisker that would point the wrong way (a median over all samples can lie outside the range
    of the per-run medians)."""
    r = dict(row)
    for kind in ("fwd", "fwdbwd"):
        if f"speedup_{kind}" in r and f"speedup_{REFERENCE}_{kind}" not in r:
            r[f"speedup_{REFERENCE}_{kind}"] = r.pop(f"speedup_{kind}")
        t, runs = (
            r.get(f"{kind}_ms"),
            [x for x in r.get(f"{kind}_ms_runs") or [] if not _missing(x) and x > 0],
        )
        runs = [x for x in runs if not _missing(t) and abs(x - t) > 1e-9 * t]  # t/t may round below 1
        r[f"{kind}_ms_runs"] = runs if len(runs) >= 2 and min(runs) < t < max(runs) else []
    for k in list(r):
        if _SPEEDUP.match(k) and not _missing(r[k]):
            lo, hi = r.get(k + "_min"), r.get(k + "_max")
            r[k + "_min"] = NAN if _missing(lo) else min(lo, r[k])
            r[k + "_max"] = NAN if _missing(hi) else max(hi, r[k])
    return r


def _bars(run: Run, rows: list[dict], png: Path, title: str) -> bool:
    """The host run's host time over the baseline's, or the models run's × reference, a bar a row."""
    from matplotlib.figure import Figure

    if run.kind == "host":
        label, value = "host time ÷ baseline's\n(below 1: less host time)", "vs_baseline"
        names = [f"{r['op']} {r['workload']} ({r['backend']})" for r in rows]
    else:
        label, value = "× reference\n(median, worst–best)", "speedup"
        names = [f"{r['model']} ({r['backend']})" for r in rows]
    if not rows:
        return False
    fig = Figure(figsize=(7.5, 0.6 + 0.22 * len(rows)))
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    vals = [r[value] for r in rows]
    err = None
    if run.kind == "models":
        err = [
            [max(0.0, r[value] - r.get("speedup_min", r[value])) for r in rows],
            [max(0.0, r.get("speedup_max", r[value]) - r[value]) for r in rows],
        ]
    ax.barh(ys, vals, xerr=err, capsize=2, color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    if max(vals) / max(min(vals), 1e-12) > 8:
        ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel(label, fontsize=8)
    ax.set_title(title, fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100, metadata={"Software": None})
    return True


# --- the index ----------------------------------------------------------------------------------


def _index(runs: list[Run], bad, others, out: Path) -> str:
    page = (
        ["# Runs", "", _INDEX_TEXT, "", "```{toctree}", ":hidden:", ":maxdepth: 1", "", "gpu"]
        + [r.name for r in runs]
        + ["```", "", _GPU_LINK, ""]
    )
    devices: dict[str, list[Run]] = {}
    for r in runs:
        devices.setdefault(r.device, []).append(r)
    order = sorted(devices, key=lambda d: (not devices[d][0].gpu, d))
    for dev in order:
        page += [f"## {'GPU' if devices[dev][0].gpu else 'CPU'}: {dev}", ""]
        body = [
            [
                r.date,
                f"[{r.kind}]({r.name}.md)",
                _safe(lambda r=r: _machine(r)),
                f"`{_command(r)}`",
                _safe(lambda r=r: _method_short(r)),
                f"`{r.shown}`",
            ]
            for r in devices[dev]
        ]
        page += _table(["date", "run", "machine and build", "command", "method", "file"], body)
    if bad:
        page += ["## Files that could not be read", ""]
        page += [f"- `benchmarks/results/{p}`: {_cell(why)}" for p, why in bad] + [""]
    if others:
        page += [
            "## Notes and logs without a JSON result",
            "",
            "Kept as they were written (text tables, session notes, device logs); not tabulated here:",
            "",
        ]
        page += [f"- `benchmarks/results/{p}`" for p in others] + [""]
    return "\n".join(page).rstrip() + "\n"


def _gpu_page(results: Path) -> str:
    body = gpu_tables.tables(results, floors=lambda row, meta: floor_us(row, meta))
    return (
        "# GPU tables\n\nGenerated by `tools/gpu_tables.py` from every committed GPU result: each row's "
        "newest GPU measurement, with its device, date and file (a row no GPU has measured says so), and "
        "each test module's outcomes in the newest GPU verdict that ran it.\n\n" + body
    )


def generate(results: Path, out: Path, *, plots: bool = True) -> list[str]:
    """Write the speed pages for every result under `results` into `out`; return the run names.
    Pages of runs no longer there are removed; plots are kept while their rows are unchanged."""
    results, out = Path(results), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, bad, others = _read(results) if results.is_dir() else ([], [("", "no results folder")], [])
    wanted = {"index.md", "gpu.md"}
    drawn = _draw_all([(run, out / f"{run.name}.png") for run in runs if _plot_rows(run)]) if plots else set()
    for run in runs:
        wanted |= {f"{run.name}.md"} | (
            {f"{run.name}.png", f"{run.name}.png.key"} if run.name in drawn else set()
        )
        try:
            text = _page(run, run.name in drawn)
        except Exception as e:  # noqa: BLE001 - a result the generator misreads is a note, not a failed build
            text = (
                f"# {_safe(lambda r=run: r.date)}: {_safe(lambda r=run: r.device)}\n\n"
                f"- **File:** `{run.shown}`\n\n"
                f"```{{note}}\nThis file could not be tabulated ({type(e).__name__}: {_cell(e)}).\n```\n"
            )
        _write(out / f"{run.name}.md", text)
    _write(out / "index.md", _index(runs, bad, others, out))
    _write(out / "gpu.md", _gpu_page(results))
    for old in out.iterdir():
        if old.is_file() and old.name not in wanted:
            old.unlink()
    return [r.name for r in runs]


def _safe(fn) -> str:
    try:
        return str(fn())
    except Exception:  # noqa: BLE001 - a field in an unexpected form reads as unknown
        return "?"


def _write(path: Path, text: str) -> None:
    """Write only on change, so Sphinx re-reads only the pages whose content changed."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    t = time.perf_counter()
    names = generate(
        root / "benchmarks" / "results",
        Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs" / "speed" / "generated",
    )
    print(f"{len(names)} runs in {time.perf_counter() - t:.1f} s")

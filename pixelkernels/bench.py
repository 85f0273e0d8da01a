"""`python -m pixelkernels bench`: the paper workloads of SPEC §5, every usable backend
against the reference on the same device, side by side in one run.

Columns: op, workload, backend, forward and forward+backward median (ms), speedup of
forward+backward over the reference, peak memory above the inputs (MiB), max relative
error vs the reference, and for memory-bound ops the fraction of the measured copy
bandwidth achieved (minimal bytes moved / time, over the bytes/s of `y.copy_(x)`).

Timing: CUDA events around each call after warm-up (perf_counter on the CPU), the
backends of a workload timed in alternating rounds so that load bursts on a shared machine
hit all of them; median of all repeats (p20/p80 kept in the JSON/CSV rows). Peak memory: the CUDA
caching allocator's peak on GPU; on the CPU a fresh interpreter (every large buffer its own
mmap) runs one forward+backward and reports its peak RSS growth (VmHWM after clear_refs).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import pixelkernels as pk
from pixelkernels.reference.region_stats import region_stats as _ref_region_stats


@dataclasses.dataclass
class Workload:
    id: str
    op: str
    shape: str
    make: Callable[[torch.device], dict]  # -> inputs
    run: Callable[[dict, str], tuple]  # (inputs, backend) -> outputs; backend "reference" = oracle
    loss: Callable[[tuple, dict], torch.Tensor]
    grad_inputs: Callable[[dict], list]
    bytes_fwd: Callable[[dict], int]  # minimal DRAM traffic of the forward
    bytes_fwdbwd: Callable[[dict], int]
    devices: tuple = ("cpu", "cuda")


def _region_stats_inputs(B, D, H, W, R):
    def make(device):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(B, D, H, W, generator=g).to(device).requires_grad_(True)
        # Two-region masks as in MEnet (salient object vs background): a disc per image.
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        r2 = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2).float()
        radii = torch.linspace(0.2, 0.45, B).view(B, 1, 1) * min(H, W)
        labels = (r2.unsqueeze(0) < radii**2).long() % R
        gc = torch.randn(B, R, D, generator=g).to(device)
        gv = torch.randn(B, R, generator=g).to(device)
        return {"emb": emb, "labels": labels.to(device), "R": R, "gc": gc, "gv": gv}

    return make


def _region_stats_run(inp, backend):
    if backend == "reference":
        return _ref_region_stats(inp["emb"], inp["labels"], inp["R"])
    return pk.region_stats(inp["emb"], inp["labels"], inp["R"], backend=backend)


def _region_stats_loss(out, inp):
    _, c, v = out
    return (c * inp["gc"]).sum() + (v * inp["gv"]).sum()


def _rs_bytes(inp, backward):
    e, lab = inp["emb"], inp["labels"]
    eb = e.numel() * e.element_size()
    lb = lab.numel() * lab.element_size()
    fwd = eb + lb
    return fwd + (2 * eb + lb if backward else 0)  # backward reads emb + labels, writes grad


def _rs_workload(wid, B, D, H, W, R, devices=("cpu", "cuda")):
    return Workload(
        id=wid,
        op="region_stats",
        shape=f"B={B} D={D} {H}x{W} R={R}",
        make=_region_stats_inputs(B, D, H, W, R),
        run=_region_stats_run,
        loss=_region_stats_loss,
        grad_inputs=lambda inp: [inp["emb"]],
        bytes_fwd=lambda inp: _rs_bytes(inp, False),
        bytes_fwdbwd=lambda inp: _rs_bytes(inp, True),
        devices=devices,
    )


WORKLOADS = [
    _rs_workload("W2", 5, 16, 224, 224, 2),
    _rs_workload("W2-large", 8, 64, 512, 512, 2, devices=("cuda",)),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _samples_ms(fn: Callable[[], object], device: torch.device, *, warmup=2, min_reps=5, budget_s=0.5):
    """Times of fn() in milliseconds: CUDA events on the GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < 100):
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


def _stats(times):
    times = sorted(times)
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return statistics.median(times), q(0.2), q(0.8)


def time_ms(fn: Callable[[], object], device: torch.device, *, budget_s=1.0):
    """Median, p20 and p80 of fn() in milliseconds."""
    return _stats(_samples_ms(fn, device, budget_s=budget_s))


def time_side_by_side(fns: dict, device: torch.device, *, rounds=4, budget_s=2.0):
    """{name: (median, p20, p80)} with the candidates timed in alternating rounds, so a burst
    of load on a shared machine lands on all of them rather than on one."""
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += _samples_ms(fn, device, budget_s=budget_s / rounds)
    return {name: _stats(t) for name, t in samples.items()}


def copy_bandwidth_gbs(device: torch.device) -> float:
    """Bytes/s of y.copy_(x) (read + write), on a buffer far larger than the caches."""
    n = (256 if device.type == "cuda" else 64) * 2**20 // 4
    x = torch.empty(n, device=device).uniform_()
    y = torch.empty_like(x)
    med, _, _ = time_ms(lambda: y.copy_(x), device, budget_s=0.5)
    return 2 * x.numel() * 4 / (med * 1e-3) / 1e9


def _fwd_bwd(w: Workload, inp: dict, backend: str):
    def step():
        out = w.run(inp, backend)
        loss = w.loss(out, inp)
        torch.autograd.grad(loss, w.grad_inputs(inp))

    return step


def _max_rel_error(out, ref) -> float:
    err = 0.0
    for a, b in zip(out, ref):
        a, b = a.detach().double(), b.detach().double()
        scale = b.abs().max().item() if b.numel() else 0.0
        if b.numel():
            err = max(err, (a - b).abs().max().item() / (scale if scale > 0 else 1.0))
    return err


def _peak_mib(w: Workload, inp: dict, backend: str, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _fwd_bwd(w, inp, backend)()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    # A fresh interpreter where every large buffer is its own mmap (so RSS follows what is
    # live), with the kernel's peak-RSS mark reset just before one forward+backward.
    code = (
        "import sys, torch, pixelkernels.bench as b\n"
        f"w = next(x for x in b.WORKLOADS if x.id == {w.id!r})\n"
        "inp = w.make(torch.device('cpu'))\n"
        "step = b._fwd_bwd(w, inp, sys.argv[1])\n"
        "step()\n"
        "def kib(key):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = kib('VmRSS')\n"
        "step()\n"
        "print((kib('VmHWM') - base) / 1024)\n"
    )
    env = dict(os.environ, PIXELKERNELS_BACKEND="auto", MALLOC_MMAP_THRESHOLD_="65536")
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, backend], capture_output=True, text=True, timeout=300, env=env
        )
        return float(r.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return float("nan")


def run_bench(device: torch.device, workloads=None, backends=None, memory=True, log=print, budget_s=2.0):
    rows = []
    bw = copy_bandwidth_gbs(device)
    log(f"# device: {device_name(device)}; copy bandwidth {bw:.1f} GB/s; torch {torch.__version__}")
    # Triton on CPU tensors is the interpreter: a correctness tool, timed only when asked for.
    usable = [
        b
        for b in pk.available_backends()
        if b != "reference" and not (b == "triton" and device.type == "cpu" and not backends)
    ]
    for w in WORKLOADS:
        if workloads and w.id not in workloads:
            continue
        if device.type not in w.devices:
            continue
        inp = w.make(device)
        with torch.no_grad():
            ref_out = w.run(inp, "reference")
        names = ["reference"] + [b for b in usable if backends is None or b in backends]
        names = [n for n in names if pk._backend.missing(n, device) is None]

        def fwd_fn(name):
            def run():
                with torch.no_grad():
                    w.run(inp, name)

            return run

        fwd = time_side_by_side({n: fwd_fn(n) for n in names}, device, budget_s=budget_s)
        fb = time_side_by_side({n: _fwd_bwd(w, inp, n) for n in names}, device, budget_s=budget_s)
        ref_fb = fb["reference"][0]
        for name in names:
            with torch.no_grad():
                out = w.run(inp, name)
            row = {
                "op": w.op,
                "workload": w.id,
                "shape": w.shape,
                "dtype": str(inp["emb"].dtype).replace("torch.", ""),
                "device": device_name(device),
                "backend": name,
                "fwd_ms": fwd[name][0],
                "fwd_p20_ms": fwd[name][1],
                "fwd_p80_ms": fwd[name][2],
                "fwdbwd_ms": fb[name][0],
                "fwdbwd_p20_ms": fb[name][1],
                "fwdbwd_p80_ms": fb[name][2],
                "speedup_fwdbwd": ref_fb / fb[name][0],
                "peak_mib": _peak_mib(w, inp, name, device) if memory else float("nan"),
                "max_rel_err": _max_rel_error(out, ref_out),
                "bw_frac_fwd": w.bytes_fwd(inp) / (fwd[name][0] * 1e-3) / 1e9 / bw,
                "bw_frac_fwdbwd": w.bytes_fwdbwd(inp) / (fb[name][0] * 1e-3) / 1e9 / bw,
                "copy_gbs": bw,
            }
            rows.append(row)
            log(_fmt_row(row))
    return rows


HEADER = (
    f"{'op':<14}{'workload':<10}{'backend':<10}{'fwd ms':>9}{'fwd+bwd ms':>12}{'speedup':>9}"
    f"{'peak MiB':>10}{'max err':>10}{'BW fwd':>8}{'BW f+b':>8}"
)


def _fmt_row(r):
    return (
        f"{r['op']:<14}{r['workload']:<10}{r['backend']:<10}{r['fwd_ms']:>9.3f}{r['fwdbwd_ms']:>12.3f}"
        f"{r['speedup_fwdbwd']:>8.1f}x{r['peak_mib']:>10.1f}{r['max_rel_err']:>10.1e}"
        f"{100 * r['bw_frac_fwd']:>7.0f}%{100 * r['bw_frac_fwdbwd']:>7.0f}%"
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return
    labels = [f"{r['workload']}\n{r['backend']}" for r in rows if r["backend"] != "reference"]
    vals = [r["speedup_fwdbwd"] for r in rows if r["backend"] != "reference"]
    fig, ax = plt.subplots(figsize=(max(4, len(vals) * 0.9), 3))
    ax.bar(labels, vals)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("fwd+bwd speedup vs reference")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pixelkernels bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best present)")
    p.add_argument(
        "--workload", action="append", help="workload id(s), e.g. W2 (default: all for the device)"
    )
    p.add_argument(
        "--backend", action="append", help="backend(s) besides the reference (default: all usable)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", help="write the rows as JSON here")
    p.add_argument("--csv", help="write the rows as CSV here")
    p.add_argument("--plot", help="draw speedup bars to this PNG (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="short timing budget (smoke runs, not for numbers)")
    a = p.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    known = {w.id for w in WORKLOADS}
    if a.workload and not set(a.workload) <= known:
        p.error(f"unknown workload(s) {sorted(set(a.workload) - known)}; known: {sorted(known)}")
    print(HEADER)
    rows = run_bench(device, a.workload, a.backend, memory=not a.no_memory, budget_s=0.2 if a.quick else 2.0)
    if not rows:
        print(f"no workload of {sorted(a.workload or known)} runs on {device.type}", file=sys.stderr)
        return 2
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(device),
        "torch": torch.__version__,
        "build": pk.build_info(),
        "command": "python -m pixelkernels bench " + " ".join(argv or sys.argv[2:]),
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

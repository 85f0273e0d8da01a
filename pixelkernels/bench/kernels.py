"""Where a row's time goes: one forward+backward of each pixelkernels backend on the case's
workload input, after two warm-up steps, under torch.profiler, as device time per kernel
(`python -m pixelkernels bench --kernels`). On CUDA the kernels' own device time (CUDA activity);
on the CPU the ATen ops' self time (what the CPU paths run). The timed rows (bench/rows.py)
say how slow a row is; this says which kernel to look at (the H100 run of 2026-11-27 timed
label_transfer's backward at 13 ms without saying which of its kernels took it)."""

from __future__ import annotations

import collections

import torch

from . import cases as _cases
from .steps import forward, forward_backward


def kernel_rows(ops=None, workloads=None, backends=None, device=None, top: int = 12) -> list[dict]:
    """One row per (case, backend, kernel): the `top` kernels by device time of one step, with
    calls, total and share of the step's kernel time; a row named "(all)" with the total."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    rows = []
    for case in _cases.select(ops, workloads, device.type):
        inp = case.make(device)
        for backend in backends or _ours(case, device):
            step = forward_backward(case, inp, backend) if case.loss else forward(case, inp, backend)
            try:
                for _ in range(2):
                    step()
                if cuda:
                    torch.cuda.synchronize(device)
                with profile(activities=activities) as prof:
                    step()
                    if cuda:
                        torch.cuda.synchronize(device)
            except Exception as e:  # noqa: BLE001 - a backend that cannot run is a row with its reason
                rows.append(_row(case, backend, f"(failed: {type(e).__name__}: {str(e).splitlines()[0][:200]})", 0, 0.0, 0.0))
                continue
            per = collections.defaultdict(lambda: [0, 0.0])
            for name, us in _timed(prof.events(), cuda):
                per[name][0] += 1
                per[name][1] += us
            total = sum(us for _, us in per.values())
            rows.append(_row(case, backend, "(all)", sum(n for n, _ in per.values()), total, 1.0))
            for name, (n, us) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top]:
                rows.append(_row(case, backend, name, n, us, us / total if total else 0.0))
    return rows


def _timed(events, cuda: bool):
    """(name, µs) of each kernel on CUDA: the device-side events (their interval), else the
    kernels the CPU-side events launched (torch versions differ in which they list); on the CPU,
    each ATen or pixelkernels op's self time."""
    if not cuda:
        return [(ev.name, float(ev.self_cpu_time_total)) for ev in events
                if ev.name.startswith(("aten::", "pixelkernels::"))]  # fmt: skip
    cuda_type = torch.autograd.DeviceType.CUDA
    device_side = [(ev.name, float(ev.time_range.elapsed_us())) for ev in events
                   if getattr(ev, "device_type", None) == cuda_type]  # fmt: skip
    if device_side:
        return device_side
    return [(k.name, float(k.duration)) for ev in events for k in getattr(ev, "kernels", ())]


def _ours(case, device) -> list[str]:
    from .rows import backend_names

    comps = set(case.comparisons())
    return [n for n in backend_names(case, device, None, lambda *_: None) if n not in comps]


def _row(case, backend, kernel, calls, us, share) -> dict:
    return {"op": case.op, "workload": case.id, "backend": backend, "kernel": kernel, "calls": calls,
            "us": round(us, 2), "share": round(share, 4)}  # fmt: skip


def header() -> str:
    return f"{'op':<20} {'workload':<12} {'backend':<8} {'calls':>5} {'us':>11} {'share':>6}  kernel"


def format_row(r: dict) -> str:
    name = r["kernel"] if len(r["kernel"]) <= 110 else r["kernel"][:107] + "..."
    return (f"{r['op']:<20} {r['workload']:<12} {r['backend']:<8} {r['calls']:>5} {r['us']:>11.1f} "
            f"{100 * r['share']:>5.1f}%  {name}")  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = ["| op | workload | backend | kernel | calls | µs | share |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['workload']} | {r['backend']} | `{r['kernel'][:80]}` | {r['calls']} | "
                     f"{r['us']:.1f} | {100 * r['share']:.1f}% |")  # fmt: skip
    return "\n".join(lines) + "\n"

"""A modelled GPU floor per bench row, and a predicted time per CUDA kernel, without a GPU
(`python -m pixelkernels bench --model-gpu [--kernels]`).

Each row's traffic model (the minimal DRAM bytes of one call, `Case.bytes_fwd/bytes_fwdbwd`,
the numerator of the CPU bandwidth column) and its floating-point work (`Case.flops_fwd/
flops_fwdbwd`, 0 where not modelled: the memory-bound rows) give the time an H100 SXM would
need at its peak rates, t = max(bytes / bandwidth, flops / throughput): the GPU target of every
family as a number on the page. A floor, not a prediction: real kernels reach some fraction of
it (the project's bar: ≥ 60 % of copy bandwidth on the memory-bound rows).

With `--kernels`, per CUDA kernel: what it actually moves and how long it should take.
- **Bytes**: the row's forward+backward on the CUDA path, its kernels run on the CPU by the
  emulator of tests/cuda_emu (the real .cu code), which records each launch's grid, block and
  distinct 32-byte sectors read and written (`traffic()`); each ATen launch the path makes
  (fills, copies) counted with the bytes of its tensors. Distinct sectors are the DRAM traffic
  when nothing is fetched twice within a launch and nothing comes from an earlier launch's L2:
  over the row's minimal bytes (its traffic model), what the design costs beyond the floor.
- **Predicted time** (`predict_us`), from those and the kernel's SASS facts for sm_90
  (`tools/sass_report.py`'s build/sass-facts.json: occupancy, and the global-load bytes a thread
  has in flight per iteration of its hot loop):
      t = launch + max((R + W) / copy bandwidth, R / latency-bound bandwidth)
  where the latency-bound bandwidth is Little's law: SMs the grid occupies × bytes in flight per
  SM (resident threads × bytes in flight per thread) / DRAM latency. Small grids and scalar
  loads show up as exactly the two debts of issue 37 items 1 and 2. What it cannot see: L1/L2
  hits on re-read data (the emulator's requested bytes show how much there is), bank conflicts,
  atomics' contention, instruction-bound loops. A GPU run's `bench --kernels --json` given
  as `--measured` puts measured ÷ predicted next to each kernel.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from . import cases as _cases

# NVIDIA H100 Tensor Core GPU datasheet (SXM5): 3.35 TB/s HBM3; 67 TFLOP/s FP32 (non-tensor);
# 989 TFLOP/s dense FP16/BF16 tensor core (1979 with sparsity).
H100_BYTES_PER_S = 3.35e12
H100_FP32_FLOPS = 67e12
H100_HALF_TENSOR_FLOPS = 989e12


def floor_us(nbytes: int, flops: float = 0.0, tensor_cores: bool = False) -> float:
    """Microseconds an H100 needs to move `nbytes` and do `flops` at its peak rates."""
    rate = H100_HALF_TENSOR_FLOPS if tensor_cores else H100_FP32_FLOPS
    return max(nbytes / H100_BYTES_PER_S, flops / rate) * 1e6


def rows(ops=None, ids=None) -> list[dict]:
    """One dict per memory-modelled case: bytes and the H100 floor, forward and forward+backward.
    Inputs are built on the CPU (their sizes are what the model reads)."""
    out = []
    for c in _cases.select(ops, ids):
        if c.bytes_fwd is None:
            continue
        inp = c.make(torch.device("cpu"))
        half = any(t.dtype in (torch.float16, torch.bfloat16) for t in inp.args if isinstance(t, torch.Tensor))
        fwd = c.bytes_fwd(inp)
        fb = c.bytes_fwdbwd(inp) if (c.bytes_fwdbwd and c.loss) else None
        flops_f = c.flops_fwd(inp) if c.flops_fwd else 0.0
        flops_fb = c.flops_fwdbwd(inp) if c.flops_fwdbwd else 0.0
        out.append({
            "op": c.op, "workload": c.id, "shape": c.shape, "bytes_fwd": fwd, "bytes_fwdbwd": fb,
            "h100_us_fwd": floor_us(fwd, flops_f, half),
            "h100_us_fwdbwd": floor_us(fb, flops_fb, half) if fb is not None else float("nan"),
        })  # fmt: skip
    return out


def table(rs: list[dict]) -> str:
    lines = [f"{'op':<20}{'workload':<24}{'MB fwd':>10}{'MB f+b':>10}{'H100 us fwd':>14}{'H100 us f+b':>14}"]
    for r in rs:
        fb = r["bytes_fwdbwd"]
        lines.append(
            f"{r['op']:<20}{r['workload']:<24}{r['bytes_fwd'] / 1e6:>10.1f}{(fb or 0) / 1e6 if fb else float('nan'):>10.1f}"
            f"{r['h100_us_fwd']:>14.1f}{r['h100_us_fwdbwd']:>14.1f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Per kernel (--kernels)


@dataclasses.dataclass(frozen=True)
class Gpu:
    """What the prediction needs of a GPU. copy: the bandwidth of a device copy measured on it
    (what a streaming kernel can reach, below the datasheet's); latency: loaded DRAM latency,
    the model's one assumed figure (~1000 cycles at 1.75 GHz; microbenchmarks put the idle
    figure at 500-700 ns on Hopper); launch: the shortest kernel duration the profiler shows."""

    name: str
    sms: int
    copy_bytes_per_s: float
    latency_s: float = 600e-9
    launch_s: float = 1.0e-6
    threads_per_sm: int = 2048


# copy: benchmarks/results/h100_first_run_2026-11-25.md (2830 GB/s), h200_2026-11-28b (3.79-4.03
# TB/s; the median of its processes). launch: FillFunctor and Memset at 0.8-1.0 µs in
# h200_2026-11-28/verdict/kernels.log.
GPUS = {
    "h100": Gpu("NVIDIA H100 SXM (132 SMs)", 132, 2.83e12),
    "h200": Gpu("NVIDIA H200 (132 SMs)", 132, 3.9e12),
}

FACTS = Path(__file__).resolve().parents[2] / "build" / "sass-facts.json"


def load_facts(path=None) -> dict:
    """tools/sass_report.py's sm_90 facts by kernel signature ({} when absent: every kernel then
    predicted with the defaults of predict_us)."""
    path = Path(path) if path else FACTS
    return json.loads(path.read_text()) if path.is_file() else {}


def resident_blocks(fact: dict, threads: int, gpu: Gpu) -> int:
    """Blocks of `threads` threads an SM holds at the kernel's occupancy."""
    return max(1, int(fact["occupancy"] * gpu.threads_per_sm) // threads)


def fill(launch: dict, fact: dict | None, gpu: Gpu) -> float | None:
    """The share of the GPU's resident-block slots the grid fills in its first wave (1: every
    SM as full as its occupancy allows; issue 37 item 2's measure of a grid)."""
    if fact is None or not launch["blocks"]:
        return None
    return min(1.0, launch["blocks"] / (gpu.sms * resident_blocks(fact, launch["threads"], gpu)))


def predict_us(launch: dict, fact: dict | None, gpu: Gpu) -> float:
    """Microseconds `gpu` should take for one launch (a traffic record: blocks, threads, read
    and written bytes) given its SASS facts (None: an ATen launch or an unknown kernel, taken
    as a streaming kernel at full bandwidth). The formula is the module docstring's."""
    read, moved = launch["read"], launch["read"] + launch["written"]
    t = moved / gpu.copy_bytes_per_s
    if fact is not None and read:
        blocks, threads = launch["blocks"], launch["threads"]
        per_sm = resident_blocks(fact, threads, gpu)
        sms = min(gpu.sms, blocks)
        resident = threads * min(per_sm, math.ceil(blocks / gpu.sms))
        in_flight = sms * resident * max(fact["bytes_in_flight"], 1)
        t = max(t, read * gpu.latency_s / in_flight)
    return (gpu.launch_s + t) * 1e6


def _parse(log: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        name, grid, block, smem, r, w, rq, wq, atomics = line.split("\t")
        g, b = [int(x) for x in grid.split()], [int(x) for x in block.split()]
        out.append({"kernel": name, "grid": grid, "blocks": g[0] * g[1] * g[2], "threads": b[0] * b[1] * b[2],
                    "read": int(r), "written": int(w), "requested": int(rq) + int(wq), "atomics": int(atomics)})  # fmt: skip
    return out


def launches(case, inp, emu) -> list[dict]:
    """The launches of one forward(+backward) of `case` on the CUDA path, in order, emulated:
    each kernel's traffic record (grids as a GPU's), and each ATen launch with its tensors'
    bytes (inputs read, outputs written)."""
    from . import host
    from .steps import forward, forward_backward

    with host.cuda_backend_on_cpu():
        step = forward_backward(case, inp, "cuda") if case.loss else forward(case, inp, "cuda")
        aten = []  # (kernels launched before it, its record)
        emu.traffic(True)
        try:
            with host._Counter(emu):
                step()  # first-call work (ticket counters) is not per call: its record dropped
            emu.traffic(True)
            start = int(emu.launch_count())

            def on_launch(op, read, written):
                aten.append((int(emu.launch_count()) - start, {
                    "kernel": op, "grid": "-", "blocks": 0, "threads": 0, "read": read, "written": written,
                    "requested": read + written, "atomics": 0}))  # fmt: skip

            with host._Counter(emu, on_launch=on_launch):
                step()
        finally:
            records = _parse(emu.traffic(False))
    out, k = [], 0
    for before, rec in aten:  # each ATen launch after the kernels launched before it
        out += records[k:before]
        k = max(k, before)
        out.append(rec)
    return out + records[k:]


def kernel_rows(ops=None, ids=None, gpu: str = "h100", facts=None, measured=None, emu=None) -> list[dict]:
    """One row per launch of each memory-modelled case's CUDA path (module docstring), then a
    row "(all)" per case with the sums, the case's minimal bytes and its floor. `measured`: rows
    of a GPU run's `bench --kernels --json` (device time per kernel name, summed over its calls),
    added as measured_us and ratio (measured ÷ predicted) where the names match; ATen kernels'
    names differ from their operators', so they count in the row's "(all)" sum only."""
    from . import host

    emu = emu or host.load_emulator()
    if emu is None:
        raise RuntimeError("bench --model-gpu --kernels needs the CUDA emulator (a source tree with CUDA headers)")
    g = GPUS[gpu]
    facts = load_facts() if facts is None else facts
    seen = {}
    for r in measured or ():
        if r.get("backend") == "cuda" and r["kernel"] != "(all)":
            seen.setdefault((r["op"], r["workload"]), {})[r["kernel"]] = r["us"]
    out = []
    for case in _cases.select(ops, ids):
        if case.bytes_fwd is None:
            continue
        inp = case.make(torch.device("cpu"))
        minimal = case.bytes_fwdbwd(inp) if (case.bytes_fwdbwd and case.loss) else case.bytes_fwd(inp)
        rows = []
        for rec in launches(case, inp, emu):
            fact = facts.get(rec["kernel"])
            t = predict_us(rec, fact, g)
            rows.append({"op": case.op, "workload": case.id, **rec, "sass": fact["key"] if fact else None,
                         "occupancy": fact["occupancy"] if fact else None,
                         "bytes_in_flight": fact["bytes_in_flight"] if fact else None, "fill": fill(rec, fact, g),
                         "predicted_us": t,
                         # latency: too few bytes in flight for the copy rate (small grid, narrow loads)
                         "bound": "latency" if t > predict_us(rec, None, g) * 1.001 else "copy"})  # fmt: skip
        got = seen.get((case.op, case.id), {})
        for r in rows:  # a kernel's measured time is its calls' sum: spread over its launches here
            calls = sum(1 for x in rows if x["kernel"] == r["kernel"])
            if r["kernel"] in got:
                r["measured_us"] = got[r["kernel"]] / calls
                r["ratio"] = r["measured_us"] / r["predicted_us"]
        total = {"op": case.op, "workload": case.id, "kernel": "(all)", "launches": len(rows),
                 "read": sum(r["read"] for r in rows), "written": sum(r["written"] for r in rows),
                 "requested": sum(r["requested"] for r in rows), "minimal": minimal,
                 "floor_us": floor_us(minimal), "predicted_us": sum(r["predicted_us"] for r in rows)}  # fmt: skip
        if got:
            total["measured_us"] = sum(got.values())
            total["ratio"] = total["measured_us"] / total["predicted_us"]
        out += [total, *rows]
    return out


def kernel_table(rs: list[dict], gpu: str = "h100") -> str:
    g = GPUS[gpu]
    lines = [f"# {g.name}: copy {g.copy_bytes_per_s / 1e12:.2f} TB/s, DRAM latency {g.latency_s * 1e9:.0f} ns, "
             f"launch {g.launch_s * 1e6:.1f} us",
             f"{'op':<20}{'workload':<12}{'blocks':>7}{'fill':>6}{'occ':>6}{'B/thr':>6}{'MB read':>9}{'MB wrt':>8}"
             f"{'pred us':>9}{'bound':>8}{'meas us':>9}{'÷':>7}  kernel"]  # fmt: skip
    for r in rs:
        meas = f"{r['measured_us']:>9.1f}{r['ratio']:>6.1f}x" if "measured_us" in r else f"{'-':>9}{'':>7}"
        if r["kernel"] == "(all)":
            lines.append(f"{r['op']:<20}{r['workload']:<12}{r['launches']:>7}{'':>6}{'':>6}{'':>6}{r['read'] / 1e6:>9.2f}"
                         f"{r['written'] / 1e6:>8.2f}{r['predicted_us']:>9.1f}{'':>8}{meas}  (all: {r['launches']} launches; "
                         f"minimal {r['minimal'] / 1e6:.1f} MB, floor {r['floor_us']:.1f} us at the datasheet rate)")  # fmt: skip
            continue
        occ = f"{r['occupancy']:>6.2f}" if r["occupancy"] is not None else f"{'-':>6}"
        occ = (f"{r['fill']:>6.2f}" if r.get("fill") is not None else f"{'-':>6}") + occ
        bif = f"{r['bytes_in_flight']:>6}" if r["bytes_in_flight"] is not None else f"{'-':>6}"
        name = r["sass"] or r["kernel"]
        lines.append(f"{r['op']:<20}{r['workload']:<12}{r['blocks']:>7}{occ}{bif}{r['read'] / 1e6:>9.2f}"
                     f"{r['written'] / 1e6:>8.2f}{r['predicted_us']:>9.1f}{r['bound']:>8}{meas}  {name[:90]}")  # fmt: skip
    return "\n".join(lines)

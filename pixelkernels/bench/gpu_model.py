"""A modelled GPU floor per bench row, without a GPU (`python -m pixelkernels bench --model-gpu`).

Each row's traffic model (the minimal DRAM bytes of one call, `Case.bytes_fwd/bytes_fwdbwd`,
the numerator of the CPU bandwidth column) and its floating-point work (`Case.flops_fwd/
flops_fwdbwd`, 0 where not modelled: the memory-bound rows) give the time an H100 SXM would
need at its peak rates, t = max(bytes / bandwidth, flops / throughput): the GPU target of every
family as a number on the page. A floor, not a prediction: real kernels reach some fraction of
it (the project's bar: ≥ 60 % of copy bandwidth on the memory-bound rows).
"""

from __future__ import annotations

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

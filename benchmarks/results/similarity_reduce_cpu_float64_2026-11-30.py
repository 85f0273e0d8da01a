"""Time one bench row's CPU backend (or its baseline) forward and forward+backward, median of
`calls` calls after one warm-up, for comparing two builds side by side: run it alternately with
each build's package first on PYTHONPATH (the note beside this file).

    python similarity_reduce_cpu_float64_2026-11-30.py <op> <workload> <calls> [cpu|baseline]
"""

import statistics
import sys
import time

import torch

import pixelkernels as pk
from pixelkernels.bench.cases import CASES, best_pytorch


def main() -> None:
    op, wl, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    who = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    case = next(c for c in CASES if c.op == op and c.id == wl)
    inp = case.make(torch.device("cpu"))
    call = case.call or (lambda i, b: getattr(pk, op)(*i.args, backend=b, **i.kwargs))
    fn = (lambda: call(inp, "cpu")) if who == "cpu" else (lambda: (case.baseline or best_pytorch(op))(inp))

    def fwd():
        with torch.no_grad():
            fn()

    def fwd_bwd():
        torch.autograd.grad(case.loss(fn(), inp), inp.grad)

    for name, f in (("fwd", fwd), ("f+b", fwd_bwd)):
        f()
        ts = []
        for _ in range(calls):
            t = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t) * 1e3)
        print(f"{who} {op} {wl} {name}: median {statistics.median(ts):8.1f} ms  min {min(ts):8.1f}  "
              f"max {max(ts):8.1f}  ({calls} calls)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

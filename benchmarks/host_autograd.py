"""The compiled variants' C++ autograd against the Python one it replaced (issue 36 part 2), on
the host alone.

    python benchmarks/host_autograd.py [--runs 3]

CPU backend, one thread, tiny inputs (the kernels take a few microseconds), forward+backward
including torch.autograd.grad, and forward under no_grad; in units of one tiny torch.add (u)
measured in the same run. "cpp": the C++ kernel at the Autograd key (csrc/autograd.cpp), the
path now. "python": the lean Python autograd.Function of the same formula (_op._function, the
eager path before it), built here for each compiled op and put in run()'s way. Each run
alternates the two paths per row; reported: the median over runs (min-max).
"""

from __future__ import annotations

import argparse
import statistics

import torch

import pixelkernels as pk
from pixelkernels import _op
from pixelkernels.bench.host import per_call_s, unit_s


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    e = torch.randn(1, 2, 4, 4, requires_grad=True)
    lab = torch.randint(0, 2, (1, 4, 4))
    c = torch.randn(1, 2)

    def grad_of(outs):
        return torch.autograd.grad(sum(o.sum() for o in outs if o.requires_grad), e)

    rows = {
        "region_stats f+b": lambda: grad_of(pk.region_stats(e, lab, 2, backend="cpu")),
        "centroid_hinge f+b": lambda: grad_of(pk.centroid_hinge(e, lab, 2, delta=0.5, backend="cpu")),
        "center_distance f+b": lambda: grad_of((pk.center_distance(e, c, backend="cpu"),)),
    }

    def no_grad_row():
        with torch.no_grad():
            pk.region_stats(e, lab, 2, backend="cpu")

    rows["region_stats fwd, no_grad"] = no_grad_row
    python = {}
    for k, op in _op.OPS.items():
        if op.compiled is not None and op.grad_inputs:
            bwd = getattr(torch.ops.pixelkernels, f"{k}_backward")
            formula = _op._Formula(op, op.compiled, bwd)
            python[k] = _op._function(formula, op.compiled.default, bwd.default, "compiled")
    got: dict = {}
    for checks in ("off", "async"):
        with pk.use_checks(checks):
            for _ in range(a.runs):
                u = unit_s()
                for name, fn in rows.items():
                    for path in ("python", "cpp"):
                        for k, f in python.items():
                            if path == "python":
                                _op.OPS[k].functions["compiled"] = f
                            else:
                                _op.OPS[k].functions.pop("compiled", None)
                        got.setdefault((checks, name, path), []).append(per_call_s(fn) / u)
    for k in python:
        _op.OPS[k].functions.pop("compiled", None)
    print(f"# {torch.__version__}, 1 thread, {a.runs} runs; u = one torch.add of two 1-element tensors")
    for (checks, name, path), us in got.items():
        print(f"checks={checks:<6}{name:<28}{path:<11}{statistics.median(us):7.1f}u ({min(us):.1f}-{max(us):.1f})")


if __name__ == "__main__":
    main()

"""Peak memory above the inputs of one forward+backward (forward for ops without a backward):
the CUDA caching allocator's peak; on the CPU a fresh interpreter, where every large buffer is
its own mmap (so the resident set follows what is live), reports its peak RSS growth (VmHWM
after clear_refs) over one call."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from .cases import Case, Inputs
from .steps import memory_step

NAN = float("nan")

_PEAK_RSS = """
import sys, torch, pixelkernels as pk
from pixelkernels.bench import cases, steps
case = cases.find(sys.argv[1], sys.argv[2])
pk.set_checks(False)
step = steps.memory_step(case, case.make(torch.device("cpu")), sys.argv[3])
step()
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
base = kib("VmRSS")
step()
print((kib("VmHWM") - base) / 1024)
"""


def peak_mib(case: Case, inp: Inputs, backend: str, device: torch.device) -> float:
    """MiB above the inputs at the peak of one step of `backend`; NaN if it could not be measured."""
    if device.type == "cuda":
        step = memory_step(case, inp, backend)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
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

"""What one host-side step costs on the lent GPU machine (issue 36, part 5): the floor under
every eager-vs-graph figure of the bench.

The H100 run of 2026-11-26 (benchmarks/results/h100_2026-11-26/) found eager forward+backward
0.14-2 ms above the CUDA-graph replay of the same step, for the plain-PyTorch baselines too
(masked_sum's 0.70 ms, pixel_normalize's 0.22 ms), and 0.5-2 ms for the Triton backend. This
probe times, per call, host side (perf_counter over many calls, one sync at the end; medians
of 5 repeats):

  torch_cpu_op        torch.empty(0): the dispatcher, no CUDA call
  cuda_launch         x.add_(1) on a 1-element CUDA tensor: one cudaLaunchKernel
  cuda_empty          torch.empty(16, device="cuda"): the caching allocator, no CUDA call
  device_ctx          `with torch.cuda.device(0)`: what the Triton backend's device_ctx costs
  autograd_roundtrip  y = x * 2 (x requires grad), torch.autograd.grad(y, x, g): two launches and
                      the autograd engine's hand-off to its CUDA device thread
  cu_pointer_attr     libcuda's cuPointerGetAttribute on a device pointer: Triton's launcher calls
                      it once per tensor argument of every launch (triton/backends/nvidia/driver.py,
                      getPointer), on top of cuLaunchKernelEx
  triton_1ptr         a Triton kernel of one tensor argument (store one value)
  triton_8ptr         the same kernel with 8 tensor arguments (7 unused)

    python .ci/gpu_host_probe.py [--json OUT]   one JSON object per line, and a table
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time


def per_call_us(fn, n: int = 2000, repeats: int = 5, sync=None) -> tuple[float, float, float]:
    """(median, min, max) over `repeats` of the mean host time of fn() over n calls, in us."""
    for _ in range(50):
        fn()
    if sync:
        sync()
    means = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if sync:
            sync()
        means.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(means), min(means), max(means)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to probe")
        return 0
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    x = torch.zeros(1, device=dev)
    probes = {
        "torch_cpu_op": (lambda: torch.empty(0), None),
        "cuda_launch": (lambda: x.add_(1), sync),
        "cuda_empty": (lambda: torch.empty(16, device=dev), sync),
    }

    def ctx():
        with torch.cuda.device(0):
            pass

    probes["device_ctx"] = (ctx, None)
    xg = torch.ones(4, device=dev, requires_grad=True)
    gy = torch.ones(4, device=dev)

    def roundtrip():
        torch.autograd.grad(xg * 2, xg, gy)

    probes["autograd_roundtrip"] = (roundtrip, sync)
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        out = ctypes.c_uint64()
        ptr = ctypes.c_uint64(x.data_ptr())

        def attr():
            cuda.cuPointerGetAttribute(ctypes.byref(out), 6, ptr)  # CU_POINTER_ATTRIBUTE_DEVICE_POINTER

        probes["cu_pointer_attr"] = (attr, None)
    except OSError as e:
        print(f"libcuda not loadable: {e}")
    try:
        import triton
        import triton.language as tl

        @triton.jit
        def one(p0):
            tl.store(p0, 1.0)

        @triton.jit
        def eight(p0, p1, p2, p3, p4, p5, p6, p7):
            tl.store(p0, 1.0)

        bufs = [torch.zeros(1, device=dev) for _ in range(8)]
        probes["triton_1ptr"] = (lambda: one[(1,)](bufs[0]), sync)
        probes["triton_8ptr"] = (lambda: eight[(1,)](*bufs), sync)
    except Exception as e:  # noqa: BLE001 - report, do not fail the verdict
        print(f"triton probes skipped: {type(e).__name__}: {e}")
    rows = []
    for name, (fn, s) in probes.items():
        n = 200 if name.startswith(("autograd", "triton")) else 2000
        med, lo, hi = per_call_us(fn, n=n, sync=s)
        rows.append({"probe": name, "us_median": round(med, 2), "us_min": round(lo, 2), "us_max": round(hi, 2),
                     "calls": n, "device": torch.cuda.get_device_name()})  # fmt: skip
        print(f"{name:20s} {med:9.2f} us/call  (min {lo:.2f}, max {hi:.2f}; {n} calls x 5)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

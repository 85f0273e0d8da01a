"""region_stats under pytest-benchmark: W2 (and W2-large on CUDA), forward+backward, every
usable backend and the reference, on the best device present.

    pytest benchmarks/bench_region_stats.py --benchmark-only --benchmark-columns=median,iqr
"""

import pytest
import torch

import pixelkernels as pk
from pixelkernels import bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
WORKLOADS = [w for w in bench.WORKLOADS if w.op == "region_stats" and DEVICE.type in w.devices]
BACKENDS = ["reference"] + [
    b for b in pk.available_backends() if b != "reference" and not (b == "triton" and DEVICE.type == "cpu")
]


def _synced(fn):
    def run():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    return run


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.id for w in WORKLOADS])
def test_region_stats_fwd_bwd(benchmark, workload, backend):
    inp = workload.make(DEVICE)
    benchmark.group = f"region_stats {workload.id} fwd+bwd"
    benchmark.extra_info.update(device=bench.device_name(DEVICE), shape=workload.shape, backend=backend)
    benchmark(_synced(bench._fwd_bwd(workload, inp, backend)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=[w.id for w in WORKLOADS])
def test_region_stats_fwd(benchmark, workload, backend):
    inp = workload.make(DEVICE)
    benchmark.group = f"region_stats {workload.id} fwd"
    benchmark.extra_info.update(device=bench.device_name(DEVICE), shape=workload.shape, backend=backend)
    with torch.no_grad():
        benchmark(_synced(lambda: workload.run(inp, backend)))

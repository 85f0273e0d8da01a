"""The case table under pytest-benchmark: `benchmarks/bench_<op>.py` is

from pixelkernels.bench import pytest_benchmarks
test_<op>_fwd, test_<op>_fwd_bwd = pytest_benchmarks("<op>")

PIXELKERNELS_BENCH_INPUTS=small runs every row on its small input (`Case.small`) instead of the
workload's: the glue's test (tests/test_bench.py) checks that every row runs, which the paper
sizes only make slower (the W7 and W9 rows took seconds a call on the CPU).
"""

from __future__ import annotations

import os

import pixelkernels as pk

from . import cases as _cases
from .rows import backend_names, default_device, device_name
from .steps import forward, forward_backward
from .timing import sync


def pytest_benchmarks(op: str):
    """(test_fwd, test_fwd_bwd) for pytest-benchmark: the table's cases of `op` on the best
    device, every usable backend, the reference and the baseline (and the peers installed),
    timed with checks off."""
    import pytest

    device = default_device()
    params = [
        pytest.param(c, n, id=f"{c.id}-{n}")
        for c in _cases.select([op], None, device.type)
        for n in backend_names(c, device, log=lambda _: None)
    ]

    def bench(benchmark, case, backend, kind):
        small = os.environ.get("PIXELKERNELS_BENCH_INPUTS") == "small"
        inp = (case.small if small else case.make)(device)
        fn = (forward if kind == "fwd" else forward_backward)(case, inp, backend)
        benchmark.group = f"{case.op} {case.id} {kind}"
        benchmark.extra_info.update(device=device_name(device), shape=case.shape, backend=backend)

        def run():
            fn()
            sync(device)

        with pk.use_checks(False):
            benchmark(run)

    @pytest.mark.parametrize("case,backend", params)
    def test_fwd(benchmark, case, backend):
        bench(benchmark, case, backend, "fwd")

    @pytest.mark.parametrize("case,backend", [p for p in params if p.values[0].loss is not None])
    def test_fwd_bwd(benchmark, case, backend):
        bench(benchmark, case, backend, "fwd+bwd")

    return test_fwd, test_fwd_bwd

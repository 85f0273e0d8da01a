"""A training step of each model of pixelkernels.models (forward, backward, Adam) at its paper's
size under pytest-benchmark: the reference backend and every usable compiled backend, checks off
(the cases of `python -m pixelkernels bench --models`, pixelkernels/bench/models.py).

    pytest benchmarks/bench_models.py --benchmark-only --benchmark-columns=median,iqr
"""

import pytest

from pixelkernels.bench import models as mb
from pixelkernels.bench.rows import default_device, device_name
from pixelkernels.bench.timing import sync

DEVICE = default_device()


@pytest.mark.parametrize(
    "case,backend",
    [pytest.param(c, b, id=f"model_step-{c.name}-{b}") for c in mb.CASES for b in ["reference", *mb.compiled_backends(DEVICE)]],
)
def test_model_step(benchmark, case, backend):
    step = mb.training_step(case, DEVICE)(backend)
    benchmark.group = f"model step {case.name} {case.batch}x{case.size[0]}x{case.size[1]}"
    benchmark.extra_info.update(device=device_name(DEVICE), backend=backend)

    def run():
        step()
        sync(DEVICE)

    benchmark(run)

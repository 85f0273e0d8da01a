"""click_maps under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward only (no gradient), every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_click_maps.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_click_maps_fwd, test_click_maps_fwd_bwd = pytest_benchmarks("click_maps")

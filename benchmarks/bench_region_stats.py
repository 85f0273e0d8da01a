"""region_stats under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward and forward+backward, every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_region_stats.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_region_stats_fwd, test_region_stats_fwd_bwd = pytest_benchmarks("region_stats")

"""center_distance under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward and forward+backward, every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_center_distance.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_center_distance_fwd, test_center_distance_fwd_bwd = pytest_benchmarks("center_distance")

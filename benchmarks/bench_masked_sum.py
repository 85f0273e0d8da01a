"""masked_sum under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward and forward+backward, every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_masked_sum.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_masked_sum_fwd, test_masked_sum_fwd_bwd = pytest_benchmarks("masked_sum")

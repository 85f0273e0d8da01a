"""pixel_normalize under pytest-benchmark: its rows of the case table (pixelkernels/bench_cases.py),
forward and forward+backward, every usable backend and the reference, on the best device.

    pytest benchmarks/bench_pixel_normalize.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_pixel_normalize_fwd, test_pixel_normalize_fwd_bwd = pytest_benchmarks("pixel_normalize")

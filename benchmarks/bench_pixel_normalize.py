"""pixel_normalize under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward and forward+backward, every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_pixel_normalize.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_pixel_normalize_fwd, test_pixel_normalize_fwd_bwd = pytest_benchmarks("pixel_normalize")

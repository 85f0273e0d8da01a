"""centroid_hinge under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward and forward+backward, every usable backend, the reference and the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_centroid_hinge.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_centroid_hinge_fwd, test_centroid_hinge_fwd_bwd = pytest_benchmarks("centroid_hinge")

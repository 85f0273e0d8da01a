"""prior_mask (W7: PFENet's prior of layer-4 features; W7-C512-B1 on a CPU) under pytest-benchmark:
its rows of the case table (pixelkernels/bench/cases.py), forward and forward+backward, every
usable backend, the reference and the best-PyTorch baseline.

    pytest benchmarks/bench_prior_mask.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_prior_mask_fwd, test_prior_mask_fwd_bwd = pytest_benchmarks("prior_mask")

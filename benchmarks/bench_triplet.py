"""is_triplet_loss (W1: random and batch-hard mining, sampling included) under pytest-benchmark:
its rows of the case table (pixelkernels/bench/cases.py), forward and forward+backward, every
usable backend, the per-image loop a user writes first (the reference column), the batched
best-PyTorch baseline and pytorch-metric-learning's batch-hard when installed.

    pytest benchmarks/bench_triplet.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_is_triplet_loss_fwd, test_is_triplet_loss_fwd_bwd = pytest_benchmarks("is_triplet_loss")

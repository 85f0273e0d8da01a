"""dense_similarity_loss (W6a: pooled vectors; W6b, W6c: every pixel of both images) under pytest-benchmark:
its rows of the case table (pixelkernels/bench/cases.py), forward and forward+backward, every
usable backend, the reference and the best-PyTorch baseline.

    pytest benchmarks/bench_dense_similarity_loss.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_dense_similarity_loss_fwd, test_dense_similarity_loss_fwd_bwd = pytest_benchmarks("dense_similarity_loss")

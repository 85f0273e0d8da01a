"""label_transfer under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py):
W5 (seed 003's sigmoid + mean), W5-eq3 (eq. 3's linear form), W5-max and W5-softmax (the other
two reductions); forward and forward+backward, every usable backend, the reference and the
best-PyTorch baseline.

    pytest benchmarks/bench_label_transfer.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_label_transfer_fwd, test_label_transfer_fwd_bwd = pytest_benchmarks("label_transfer")

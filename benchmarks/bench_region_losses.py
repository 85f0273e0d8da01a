"""The region losses under pytest-benchmark: their rows of the case table
(pixelkernels/bench/cases.py), forward and forward+backward, every usable backend and the
reference (the straightforward one-hot PyTorch), the best-PyTorch baseline
(pixelkernels/baselines), on the best device.

    pytest benchmarks/bench_region_losses.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_menet_metric_loss_fwd, test_menet_metric_loss_fwd_bwd = pytest_benchmarks("menet_metric_loss")
test_cas_loss_fwd, test_cas_loss_fwd_bwd = pytest_benchmarks("cas_loss")
test_discriminative_loss_fwd, test_discriminative_loss_fwd_bwd = pytest_benchmarks("discriminative_loss")
test_masked_average_pool_fwd, test_masked_average_pool_fwd_bwd = pytest_benchmarks("masked_average_pool")
test_menet_saliency_fwd, test_menet_saliency_fwd_bwd = pytest_benchmarks("menet_saliency")

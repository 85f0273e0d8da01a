"""sample_clicks under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward only (no gradient), every usable backend, the reference and the baseline (the reference
itself: baselines/sample_clicks.py), on the best device.

    pytest benchmarks/bench_sample_clicks.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_sample_clicks_fwd, test_sample_clicks_fwd_bwd = pytest_benchmarks("sample_clicks")

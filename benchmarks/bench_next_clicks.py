"""next_clicks under pytest-benchmark: its rows of the case table (pixelkernels/bench/cases.py),
forward only (no gradient), every usable backend, the reference, the baseline and the peers
installed (the f-BRS clicker on scipy, the RITM clicker on OpenCV), on the best device.

    pytest benchmarks/bench_next_clicks.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_next_clicks_fwd, test_next_clicks_fwd_bwd = pytest_benchmarks("next_clicks")

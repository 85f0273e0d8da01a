"""distance_transform under pytest-benchmark: its rows of the case table
(pixelkernels/bench/cases.py), forward only (no gradient), every usable backend, the reference,
the baseline and the peers installed (scipy, OpenCV, edt), on the best device.

    pytest benchmarks/bench_distance_transform.py --benchmark-only --benchmark-columns=median,iqr
"""

from pixelkernels.bench import pytest_benchmarks

test_distance_transform_fwd, test_distance_transform_fwd_bwd = pytest_benchmarks("distance_transform")

"""pytest-benchmark cases: `pytest benchmarks/ --benchmark-only`. Every `bench_<op>.py` takes
its cases from the one table, `pixelkernels/bench/cases.py` (the rows of
`python -m pixelkernels bench`), through `pixelkernels.bench.pytest_benchmarks(op)`:

    from pixelkernels.bench import pytest_benchmarks
    test_<op>_fwd, test_<op>_fwd_bwd = pytest_benchmarks("<op>")

Timed calls run with `pixelkernels.set_checks(False)`; on CUDA each call ends with a sync
(pytest-benchmark times the wall clock).
"""

"""`python -m pixelkernels bench`: the papers' workloads, the rows of one case table,
every usable backend timed side by side on one device against the reference and against the
best PyTorch a competent user would write (and against peer libraries where installed), with
every run reported. `benchmarks/bench_<op>.py` run the same table under pytest-benchmark.

One job per module:

    cases.py        the table: workloads, inputs, losses, minimal traffic, what each row is
                    compared with (reference in the row's dtype, baseline, peers)
    steps.py        the calls that are timed: forward, forward+backward
    timing.py       timers (perf_counter / CUDA events), cache flushing, alternating rounds,
                    CUDA-graph replays, copy bandwidth
    memory.py       peak memory (CUDA allocator; a fresh interpreter's RSS on the CPU)
    rows.py         a case's rows: `repeat` side-by-side runs, speedups run by run, errors,
                    the checks-on overhead at the workload's size
    report.py       the printed table, JSON, CSV, Markdown
    plot.py         `--plot`: speedups over reference and baseline, bandwidth fraction
    cli.py          the command line
    pytest_glue.py  pytest-benchmark tests from the table

Timed regions run with `pixelkernels.set_checks(False)` (the hot-loop setting); the checks-on
overhead is its own column.
"""

from . import cases
from .cli import main
from .pytest_glue import pytest_benchmarks
from .rows import backend_names, default_device, device_name, run_bench, run_case

__all__ = [
    "backend_names",
    "cases",
    "default_device",
    "device_name",
    "main",
    "pytest_benchmarks",
    "run_bench",
    "run_case",
]

"""pytest-benchmark cases: `pytest benchmarks/ --benchmark-only` (same workloads as
`python -m pixelkernels bench`)."""

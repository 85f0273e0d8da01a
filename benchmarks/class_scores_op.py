"""class_scores' forward and backward ops alone at W5-eq3's size (1 image of 240 x 427 pixels,
D = 128, C = 5, "sum"), float32 on the CPU: the median, min and max of `calls` timed calls after
3 warm-up calls each. Run it from two trees in turn to compare builds side by side:

    python benchmarks/class_scores_op.py [calls]
"""

import statistics
import sys
import time

import torch

import pixelkernels  # noqa: F401 - registers the ops


def main(calls: int) -> None:
    torch.manual_seed(0)
    B, C, D, N = 1, 5, 128, 240 * 427
    q, means, g = torch.randn(B, D, N), torch.randn(B, C, D), torch.randn(B, C, N)
    counts = torch.full((B, C), 100.0)
    ops = torch.ops.pixelkernels
    for name, fn in (("forward", lambda: ops.class_scores(q, means, counts, 0.5, -0.1, True)),
                     ("backward", lambda: ops.class_scores_backward(g, q, means, counts, 0.5, -0.1, True))):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(calls):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        print(f"{name} median {statistics.median(ts):.2f} ms  min {min(ts):.2f}  max {max(ts):.2f}  ({calls} calls)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)

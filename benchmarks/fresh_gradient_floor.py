"""What a backward that returns a fresh gradient map costs on this CPU before any arithmetic, next
to the bench's byte floor: is_triplet_loss W1 (issue 37 item 6, the bar of 30 % of the floor).

The bench's floor for W1 forward+backward is (two reads of the mask + one write of emb's
gradient) / copy bandwidth. A gradient the op allocates is fresh memory each call (glibc maps
blocks of this size anew and unmaps them on free), so the kernel clears every page as it faults
in, before the op's own writes: the write happens twice. This times, with the last-level cache
flushed before each call as the bench does:

- ``fresh zeroed``: allocate and zero a map of emb's size, without and with the
  transparent-huge-page advice the CPU kernels give their outputs (``csrc/cpu/pixel_tiles.h``
  advise_huge_pages)
- ``read emb``: one streaming read of emb (the forward reads most of its lines: W1's 20000
  distinct pixels per image touch about 82 % of the 64-byte lines of each channel row)
- ``is_triplet_loss f+b``: the CPU backend, as the bench times it

    python benchmarks/fresh_gradient_floor.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch

import pixelkernels as pk
from pixelkernels.bench import cases
from pixelkernels.bench.timing import cache_flush_buffer, copy_bandwidth_gbs


def _advise_huge(t: torch.Tensor) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    huge, p = 1 << 21, t.data_ptr()
    b, e = (p + huge - 1) & ~(huge - 1), (p + t.numel() * t.element_size()) & ~(huge - 1)
    if e > b:
        libc.madvise(b, e - b, 14)  # MADV_HUGEPAGE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    case = cases.find("is_triplet_loss", "W1")
    inp = case.make(torch.device("cpu"))
    emb, mask = inp.args
    flush = torch.empty(1 << 28)  # 1 GiB: more than the last-level caches this runs on

    def fresh_zeroed(advise):
        t = torch.empty_like(emb)
        if advise:
            _advise_huge(t)
        t.zero_()

    def triplet():
        emb.grad = None
        pk.is_triplet_loss(emb, mask, **inp.kwargs, backend="cpu").backward()

    def timed(fn):
        ts = []
        for _ in range(args.repeat):
            flush.add_(1)
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return ts

    triplet()  # first call: the sampler's and the kernels' one-time work
    rows = {
        "fresh zeroed": timed(lambda: fresh_zeroed(False)),
        "fresh zeroed, THP": timed(lambda: fresh_zeroed(True)),
        "read emb": timed(lambda: emb.detach().sum()),
        "is_triplet_loss f+b": timed(triplet),
    }
    bw = copy_bandwidth_gbs(torch.device("cpu"), cache_flush_buffer(torch.device("cpu")))  # the bench's figure
    floor = case.bytes_fwdbwd(inp) / bw / 1e6  # ms
    print(f"# {torch.get_num_threads()} threads; copy bandwidth {bw:.1f} GB/s; W1 f+b floor {floor:.2f} ms")
    for name, ts in rows.items():
        med = statistics.median(ts)
        print(f"{name:22s} median {med:7.2f} ms  (min {min(ts):.2f}, max {max(ts):.2f})  floor / time {floor / med:5.1%}")


if __name__ == "__main__":
    main()

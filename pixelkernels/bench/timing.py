"""What a timed call sees: the checks setting, the caches flushed before it, the timer (CUDA
events or perf_counter), candidates in alternating rounds, CUDA-graph replays, and the copy
bandwidth the bandwidth fractions are relative to.

- CPU: `time.perf_counter` around each call; before each call, outside the timed region, a
  buffer of four times the last-level cache (sysfs; 128 MiB if unknown) is read, so every call
  reads its inputs from DRAM (W2's 16 MB map fits a 32 MB L3: unflushed, ours ran at
  105-165 % of the copy bandwidth; after reading 2x the L3 a 16 MB sum still took 10-35 % less
  time than after 4x, 8x or 16x, which agree). A read, not a write: no dirty lines left to be
  written back inside the timed call. The flush also evicts the interpreter's and the
  dispatcher's state, which a training loop keeps cached (it added 0.4 ms to our 1.1 ms W2
  forward, 0.7 ms to the 2.6 ms forward+backward), so the same call on the row's small input
  (`Case.small`) follows it, untimed (`evicting`).
- CUDA: CUDA events around each call; before each call, outside the timed region, a buffer of
  twice the L2 size (256 MiB if unknown) is zeroed. Eager times, and CUDA-graph replay times:
  the call captured with `torch.cuda.graph` after warm-up on a side stream, each replay timed
  the same way (kernel time without host overhead); a candidate that cannot be captured (it
  syncs) gets NaN and the reason.
- Side by side: the candidates are timed in alternating rounds (`ROUNDS`), so a burst of load on
  a shared machine hits all of them; each round warms up twice, then repeats the call until
  its share of the time budget is spent (at least 5 times). Statistics over all repeats: p50,
  p20 and p80.
- Copy bandwidth: `y.copy_(x)` (read + write) on buffers far larger than the caches (64 MiB on
  the CPU, with the same flush before each copy: a large L3 holds 64 MiB; max(256 MiB, 4x L2)
  on CUDA).
"""

from __future__ import annotations

import contextlib
import glob
import os
import statistics
import time

import torch

import pixelkernels as pk

NAN = float("nan")
NAN3 = (NAN, NAN, NAN)
ROUNDS = 4


def with_checks(enabled: bool, fn):
    def run():
        with pk.use_checks(enabled):
            return fn()

    return run


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def l2_bytes(device: torch.device) -> int:
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0


def cpu_llc_bytes() -> int:
    """The largest CPU cache in bytes (Linux sysfs), 0 if unknown."""
    best = 0
    for f in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            txt = open(f).read().strip().upper()
            best = max(best, int(txt.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(txt[-1], 1))
        except (OSError, ValueError, IndexError):
            continue
    return best


def flush_bytes(device: torch.device) -> int:
    """The cache-flush buffer's size. PIXELKERNELS_BENCH_FLUSH_MIB overrides it: the tests set it
    small, since they check the machinery and never a time, and on a host whose L3 reads as 480
    MiB (this project's CI) each flush of four times that took 85 ms."""
    env = os.environ.get("PIXELKERNELS_BENCH_FLUSH_MIB")
    if env:
        return max(1, int(float(env) * 2**20))
    if device.type == "cuda":
        return 2 * l2_bytes(device) or 256 * 2**20
    return 4 * cpu_llc_bytes() or 128 * 2**20


def cache_flush_buffer(device: torch.device) -> torch.Tensor:
    """A buffer larger than the last-level cache (2x the GPU's L2, 4x the CPU's L3): zeroing
    (GPU) or reading (CPU) it before a call evicts that call's inputs."""
    dtype = torch.uint8 if device.type == "cuda" else torch.float32
    return torch.ones(flush_bytes(device) // dtype.itemsize, dtype=dtype, device=device)


def flush_cache(flush: torch.Tensor) -> None:
    if flush.is_cuda:
        flush.zero_()
    else:
        flush.sum()


def evicting(flush: torch.Tensor, prime=None):
    """What runs before a timed call: the cache flush, then `prime()` (on the CPU, the same call
    on a small input: the flush also evicts the interpreter's and the dispatcher's state, whose
    misses would otherwise be charged to the timed call; a training loop keeps them cached)."""

    def before():
        flush_cache(flush)
        if prime is not None:
            prime()

    return before


def samples_ms(fn, device: torch.device, *, budget_s: float, before=None, warmup=2, min_reps=5, max_reps=100):
    """Times of fn() in ms: CUDA events on the GPU, perf_counter on the CPU; `before()` (e.g. a
    cache flush) before each call, outside the timed region. At least `min_reps` calls, fewer
    (at least one) where the warm-up shows that they would take more than the budget: the
    one-hot references take seconds a call."""
    t0 = time.perf_counter()
    for i in range(warmup):
        fn()
        sync(device)
        if time.perf_counter() - t0 > budget_s:  # one warm-up of a slow call is enough
            break
    if warmup:
        per_call = (time.perf_counter() - t0) / (i + 1)
        min_reps = max(1, min(min_reps, int(budget_s / per_call)))
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        if before is not None:
            before()
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentiles(times) -> tuple[float, float, float]:
    """(p50, p20, p80)."""
    if len(times) < 2:
        return (times[0],) * 3 if times else NAN3
    q = statistics.quantiles(times, n=5, method="inclusive")
    return statistics.median(times), q[0], q[3]


def side_by_side(
    fns: dict,
    device: torch.device,
    *,
    budget_s: float,
    rounds=ROUNDS,
    before=None,
    warmup=2,
    min_reps=5,
    **kw,
) -> dict:
    """{name: [times in ms]}, the candidates timed in alternating rounds (warm-up calls in the
    first only); `before`: {name: what runs before each of that candidate's calls}, if anything."""
    samples = {name: [] for name in fns}
    share = budget_s / rounds
    for r in range(rounds):
        for name, fn in fns.items():
            prev = samples[name]
            # A call that takes longer than its share of the budget: fewer calls a round.
            need = (
                max(1, min(min_reps, int(share * 1e3 / max(statistics.median(prev), 1e-6))))
                if prev
                else min_reps
            )
            samples[name] += samples_ms(
                fn, device, budget_s=share, before=(before or {}).get(name), warmup=warmup if r == 0 else 0,
                min_reps=need, **kw,
            )  # fmt: skip
    return samples


def time_side_by_side(fns: dict, device: torch.device, **kw) -> dict:
    """{name: (p50, p20, p80)} in ms of `side_by_side`."""
    return {name: percentiles(t) for name, t in side_by_side(fns, device, **kw).items()}


def capture_graph(fn, device: torch.device, generators=()) -> torch.cuda.CUDAGraph:
    """fn() captured as a CUDA graph on a side stream, after three warm-up calls there (the
    pattern of torch.cuda.graphs' docs). `generators`: the CUDA generators fn draws from besides
    the default one, registered with the graph so that each replay draws fresh numbers (without
    it capture fails: "Attempt to increase offset for a CUDA generator not in capture mode", the
    H100 run of 2026-11-26 for is_triplet_loss). Each capture gets fresh generator states (its
    seed, offset 0), the default generator's too, that no other graph holds: a capture that
    fails (a host sync, a CPU op; this then raises fn's error, with the capture ended and the
    current stream restored) leaves the states it registered marked as capturing, and a graph
    that shared one then raised "Offset increment outside graph capture" at every replay (the
    H200 run of 2026-11-28, is_triplet_loss W1-hard: the case's bench died there; the H100
    run of 2026-11-27: every later draw, captured or not)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    graph = torch.cuda.CUDAGraph()
    default = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    for gen in (default, *generators):
        _fresh_state(gen)
    for gen in generators:
        graph.register_generator_state(gen)
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
        torch.cuda.synchronize(device)
        graph.capture_begin()
        try:
            fn()
        except BaseException:
            with contextlib.suppress(Exception):
                graph.capture_end()
            for gen in (default, *generators):
                _fresh_state(gen)
            raise
        graph.capture_end()
    torch.cuda.current_stream(device).wait_stream(side)
    return graph


def _fresh_state(gen: torch.Generator) -> None:
    """gen on a new state (its seed, offset 0), registered with no graph."""
    fresh = torch.Generator(gen.device)
    fresh.manual_seed(gen.initial_seed())
    gen.graphsafe_set_state(fresh.graphsafe_get_state())


def reason(e: BaseException) -> str:
    """One line for a failure: the exception's type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def graph_samples(fns: dict, device: torch.device, *, budget_s: float, flush, generators=()):
    """({name: [times in ms] of CUDA-graph replays}, {name: why}): no times, and why, where fn
    cannot be captured. `generators`: as capture_graph's."""
    graphs, notes = {}, {}
    for name, fn in fns.items():
        try:
            graphs[name] = capture_graph(fn, device, generators)
        except Exception as e:  # noqa: BLE001 - a failed capture is reported, never fatal
            notes[name] = "graph capture failed: " + reason(e)
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(device)
    times = side_by_side(
        {n: g.replay for n, g in graphs.items()},
        device,
        budget_s=budget_s,
        before={n: evicting(flush) for n in graphs},
    )
    del graphs
    return times, notes


def copy_bandwidth_gbs(device: torch.device, flush: torch.Tensor | None = None) -> float:
    """Bytes/s of y.copy_(x) (read + write), on buffers far larger than the caches; with `flush`
    (cache_flush_buffer), it is read before each copy on the CPU, as before every timed call.
    Without it a CPU's 64 MiB copy runs partly in a large L3: on this project's CI host (an L3
    that reads as 480 MiB) 37-42 GB/s unflushed against about 23 GB/s flushed, which made every
    bandwidth fraction of a flushed call look half as high as it was."""
    size = max(256 * 2**20, 4 * l2_bytes(device)) if device.type == "cuda" else 64 * 2**20
    x = torch.empty(size // 4, device=device).uniform_()
    y = torch.empty_like(x)
    before = evicting(flush) if flush is not None and device.type == "cpu" else None
    med = percentiles(samples_ms(lambda: y.copy_(x), device, budget_s=0.5, before=before))[0]
    return 2 * size / (med * 1e-3) / 1e9

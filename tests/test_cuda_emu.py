"""The CUDA emulator's sanitizer can fail: for each check a deliberately broken kernel
(tests/cuda_emu/selftest.cu) is reported with the check, the kernel, the thread, the block and
where, and its correct twin passes. Every emulated test of the ops runs under the same checks."""

from __future__ import annotations

import pytest

CASES = {
    # name: (what the report must say, in order)
    "global_read_past_end": ("memcheck: invalid read of 4 bytes", "4 bytes past the end of a 64-byte allocation"),
    "global_read_before_start": ("memcheck: invalid read of 4 bytes", "4 bytes before the start of a 64-byte"),
    "global_write_past_end": ("memcheck: invalid write of 4 bytes", "4 bytes past the end of a 64-byte allocation"),
    "global_read_unknown": ("memcheck: invalid read of 4 bytes", "outside any allocation"),
    "shared_past_end": ("memcheck: invalid write of 4 bytes of dynamic shared memory at byte 64", "has 64 bytes"),
    # warp 1 overwrites before warp 0 reads (the emulator runs the last to arrive at a barrier on)
    "race_two_warps": ("racecheck: read of static shared memory", "races with the write by thread (33,0,0)",
                       "of the same block: no __syncthreads()", "(the byte is pk_emu_selftest::race_kernel(float*, int, bool)::s)"),
    "race_one_warp": ("racecheck: write of static shared memory", "races with the read by thread (0,0,0)",
                      "of the same warp: no __syncwarp()", "::s)"),
    "race_lockstep": ("racecheck: read of dynamic shared memory byte 0", "races with the write by thread (0,0,0)",
                      "of the same warp"),
    "race_shuffle_is_no_barrier": ("racecheck: read of dynamic shared memory", "of the same warp"),
    "uninit_shared": ("initcheck: read of 4 bytes of dynamic shared memory at byte", "before any write",
                      "(and 15 more reports in this launch)"),
    "uninit_workspace": ("initcheck: read of 4 bytes", "of the op's workspace, 64 bytes) before any write"),
    "grid_y_limit": ("invalid configuration argument (grid)",),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_check_reports_the_broken_kernel(emu, name):
    with pytest.raises(RuntimeError) as info:
        emu.sanitizer_selftest(name, True, 16)
    msg = str(info.value)
    pos = 0
    for fragment in CASES[name]:
        assert fragment in msg[pos:], (fragment, msg)
        pos = msg.index(fragment, pos) + len(fragment)
    if name != "grid_y_limit":
        assert "thread (" in msg and "of block (0,0,0) in kernel pk_emu_selftest::" in msg, msg


@pytest.mark.parametrize("name", list(CASES))
def test_correct_twin_passes(emu, name):
    emu.sanitizer_selftest(name, False, 16)


@pytest.mark.parametrize("n", [1, 31, 64, 100])
def test_syncthreads_votes(emu, n):
    """__syncthreads_count, _or and _and as a GPU gives them, to every thread of the block."""
    y = emu.sanitizer_selftest("syncthreads_vote", False, n)
    want = (n + 2) // 3 + 1000 + 10000 + (20000 if n <= 5 else 0)
    assert y.tolist() == [float(want)] * n


def test_traffic_counts_distinct_sectors_and_requested_bytes(emu):
    """traffic(): a line per launch with its grid, block, the distinct 32-byte sectors read and
    written (the DRAM bytes bench --model-gpu --kernels takes) and the bytes requested."""
    emu.traffic(True)
    y = emu.sanitizer_selftest("traffic", False, 64)
    log = emu.traffic(False)
    assert emu.traffic(False) == ""  # handed out once
    emu.sanitizer_selftest("traffic", False, 64)
    assert emu.traffic(False) == ""  # off
    (line,) = log.splitlines()
    name, grid, block, smem, *counts = line.split("\t")
    assert name.startswith("pk_emu_selftest::traffic_kernel"), name
    assert (grid, block, smem) == ("1 1 1", "64 1 1", "0")
    # x: 8 sectors, plus y[0]'s read by the atomic; y: 64 floats = 8 sectors written;
    # requested: 64 loads + the atomic's read, 64 stores + its write
    assert [int(c) for c in counts] == [9 * 32, 8 * 32, 65 * 4, 65 * 4, 1]
    assert y[0].item() == 1.0 and y[1:].tolist() == [8.0 * (i % 8) for i in range(1, 64)]


def test_traffic_launches_as_a_gpu(emu):
    """While traffic records, the launchers see a GPU's limits (grids as an H100's); after, the
    emulator's lowered ones again (a grid 4 tall fails)."""
    emu.traffic(True)
    try:
        emu.sanitizer_selftest("grid_y_limit", True, 16)
    finally:
        emu.traffic(False)
    with pytest.raises(RuntimeError, match="invalid configuration argument"):
        emu.sanitizer_selftest("grid_y_limit", True, 16)

"""tools/sass_report.py and tools/kernel_expectations.py: the occupancy rules, the SASS counts,
and that a deliberately weakened kernel fails its expectation (a vectorised load split into
scalar loads; a register cap that forces spills inside the hot loop), compiled by nvcc for
sm_90 and read back by cuobjdump as the check reads every kernel of the library."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import kernel_expectations as ke  # noqa: E402
import sass_report as sr  # noqa: E402


@pytest.mark.parametrize(
    "arch,regs,threads,smem,want",
    [
        (80, 32, 256, 0, 1.0),  # 8 blocks of 8 warps: the 64-warp limit
        (80, 64, 256, 0, 0.5),  # 64 regs x 32 = 2048 per warp: 32 warps
        (90, 255, 256, 0, 0.125),  # 8192 per warp: 8 warps, one block
        (80, 40, 256, 0, 0.75),  # 1280 per warp: 51 warps -> 48 (granularity 4) -> 6 blocks
        (90, 32, 128, 100 * 1024, 0.125),  # shared: 228 KiB / (100 + 1) KiB = 2 blocks of 4 warps
        (80, 32, 128, 100 * 1024, 0.0625),  # 164 KiB: one block
        (80, 16, 32, 0, 0.5),  # 32 blocks of one warp: the block limit
    ],
)
def test_occupancy(arch, regs, threads, smem, want):
    assert sr.occupancy(arch, regs, threads, smem) == pytest.approx(want)


SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   STL [R1+0x4], R5 ;
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/              @!P0 LDG.E.U16.CONSTANT R8, desc[UR4][R6.64] ;
        /*0040*/                   LDL R9, [R1+0x4] ;
        /*0050*/                   STG.E.64 desc[UR4][R2.64], R4 ;
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0070*/               @P1 BRA 0x30 ;
        /*0080*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0090*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR4][R2.64], R0 ;
        /*00a0*/                   EXIT ;
"""


def test_sass_counts():
    c = sr.sass_counts(SASS.splitlines())
    # in flight: the loop's loads (the 16-bit one at 0x30), not the 128-bit one before the loop
    assert c == {"local": 2, "local_in_loop": 1, "ldg128": 1, "ldg16": 1, "stg64": 1, "barrier": 1, "mma": 1,
                 "atomic": 1, "bytes_in_flight": 2}  # fmt: skip
    # no loop: every load of the function; nested loops: the innermost one's
    assert sr.sass_counts([ln for ln in SASS.splitlines() if "BRA" not in ln])["bytes_in_flight"] == 18
    nested = SASS.replace("EXIT", "BRA 0x10")  # an outer loop 0x10-0xa0 around 0x30-0x70
    assert sr.sass_counts(nested.splitlines())["bytes_in_flight"] == 2


def test_every_kernel_needs_a_row():
    row = sr.Row(source="new_op", kernel="forward_kernel<float>", arch=90, regs=32)
    assert any("no row in tools/kernel_expectations.py" in f for f in sr.apply_expectations([row]))


# ---------------------------------------------------------------------------------------------
# Weakened kernels: the check fails on them, naming the kernel and the expectation

KERNELS = r"""
// A contiguous path that loads four floats at once, and the same with the load split up.
__global__ void __launch_bounds__(256) copy_vector(const float4* __restrict__ x, float4* __restrict__ y, int n) {
  for (int i = blockIdx.x * 256 + threadIdx.x; i < n; i += gridDim.x * 256) y[i] = x[i];
}
__global__ void __launch_bounds__(256) copy_scalar(const float* __restrict__ x, float* __restrict__ y, int n) {
  for (int i = blockIdx.x * 256 + threadIdx.x; i < n; i += gridDim.x * 256)
    for (int k = 0; k < 4; ++k) y[4 * i + k] = x[4 * i + k];
}
// K accumulators per thread in the hot loop; MIN_BLOCKS = 8 caps registers at 32 per thread.
template <int MIN_BLOCKS>
__global__ void __launch_bounds__(256, MIN_BLOCKS) accumulate(const float* __restrict__ x, float* __restrict__ y, int n) {
  constexpr int K = 48;
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.f;
  for (int i = blockIdx.x * 256 + threadIdx.x; i < n; i += gridDim.x * 256) {
    const float v = x[i];
#pragma unroll
    for (int k = 0; k < K; ++k) acc[k] = fmaf(acc[k], v, float(k + 1));
  }
#pragma unroll
  for (int k = 0; k < K; ++k) y[k * n + blockIdx.x * 256 + threadIdx.x] = acc[k];
}
template __global__ void accumulate<1>(const float*, float*, int);
template __global__ void accumulate<8>(const float*, float*, int);
"""


@pytest.fixture(scope="module")
def weakened(tmp_path_factory):
    """{kernel: Row} of the kernels above, built for sm_90 as the library's are."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).is_file() or sr.tool("cuobjdump") is None:
        pytest.skip("needs nvcc and cuobjdump (make venv installs nvidia-cuda-cuobjdump)")
    d = tmp_path_factory.mktemp("sass")
    (d / "weak.cu").write_text(KERNELS)
    subprocess.run([nvcc, "-O3", "-arch=sm_90", "-cubin", "-o", str(d / "weak.cubin"), str(d / "weak.cu")],
                   check=True, capture_output=True)  # fmt: skip
    return {r.kernel: r for r in sr.rows_of(d / "weak.cubin", "weak", arch=90)}


def _check(row, expect):
    row.threads = expect.threads
    row.occupancy = sr.occupancy(row.arch, row.regs, row.threads, row.smem)
    return expect.violations(row)


def test_vector_load_split_into_scalar_loads_fails(weakened):
    expect = ke.Expect("weak:.*", wide_loads=(128, 1))
    assert _check(weakened["copy_vector"], expect) == []
    failures = _check(weakened["copy_scalar"], expect)
    assert failures and "global loads of 128 bits or wider" in failures[0], failures


def test_vector_store_split_into_scalar_stores_fails(weakened):
    expect = ke.Expect("weak:.*", wide_stores=(128, 1))
    assert _check(weakened["copy_vector"], expect) == []
    failures = _check(weakened["copy_scalar"], expect)
    assert failures and "global stores of 128 bits or wider" in failures[0], failures


def test_spills_in_the_hot_loop_fail(weakened):
    expect = ke.Expect("weak:.*", min_occupancy=0.125)
    assert _check(weakened["accumulate<1>"], expect) == []
    failures = _check(weakened["accumulate<8>"], expect)
    assert any("stack frame" in f for f in failures), failures
    assert any("inside a loop" in f for f in failures), failures


def test_triton_compile_specs_use_the_launchers_num_warps():
    """The offline Triton compile (.ci/triton_compile_check.py, the SASS check's Triton rows) builds
    each pixel-tile kernel at the num_warps its launcher passes, warps(BLOCK_P * BLOCK_D): the
    256 x 16 tiles of masked_sum and pixel_normalize (and center_distance's 128 x 16) were built at
    4 warps while every launch runs 8, and the table budgeted spills (up to 696 B) no launch has."""
    pytest.importorskip("triton")
    import importlib
    import pkgutil

    import pixelkernels.triton as pkt
    from pixelkernels.triton._common import warps

    checked = 0
    for info in pkgutil.iter_modules(pkt.__path__):
        mod = importlib.import_module(f"pixelkernels.triton.{info.name}")
        for kernel, _, constexprs, num_warps, *_ in getattr(mod, "compile_specs", list)():
            bp, bd = constexprs.get("BLOCK_P"), constexprs.get("BLOCK_D")
            if bp is None or bd is None:
                continue
            if info.name == "similarity_reduce":
                # BLOCK_P there is a chunk of dims of the gradients' second product, not pixels: its
                # launcher and compile_specs both take the gradient kernels' warps from _grad_warps
                assert num_warps == mod._grad_warps(constexprs), constexprs
                continue
            name = getattr(kernel, "fn", kernel).__name__
            assert num_warps == warps(bp * bd), f"{info.name}.{name} {constexprs}: {num_warps} warps"
            checked += 1
    assert checked >= 20

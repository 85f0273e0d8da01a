"""region_hinge: the generic contract (tests/contract.py) on awkward inputs: hinges that are
all active, all zero (large delta) and mixed; empty regions, ignored pixels, label widths,
pixels on their centroid. The backward without emb's gradient (emb_grad=False) on the same
inputs, against the default call."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, COMPILED_BACKENDS, dtypes_for, make_emb, make_labels, weighted_loss
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, suite

import pixelkernels as pk
from pixelkernels._dtypes import stats_dtype


def _inp(B, D, H, W, R, layout="contiguous", pattern="random", ignore=-1, delta=0.5, on_centroid=False,
         label_dtype=torch.int64, float64=False):  # fmt: skip
    def make(device, dtype):
        dtype = torch.float64 if float64 else dtype
        emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
        labels = make_labels(B, H, W, R, device=device, pattern=pattern, ignore_index=ignore).to(label_dtype)
        g = torch.Generator().manual_seed(7)
        centroid = (torch.randn(B, R, D, generator=g, dtype=torch.float64) * 0.5 + 3.0).to(stats_dtype(dtype))
        centroid = centroid.to(device)
        if on_centroid:  # pixel (0, 0) sits on its own centroid where it takes part
            lab0 = labels[:, 0, 0].long()
            for b in range(B):
                if 0 <= lab0[b] < R and lab0[b] != ignore:
                    centroid[b, lab0[b]] = emb[b, :, 0, 0].to(centroid.dtype)
        return {"emb": emb, "labels": labels, "centroid": centroid, "delta": delta, "ignore_index": ignore}

    return make


def _call(inp, backend):
    return (
        pk.region_hinge(
            inp["emb"], inp["labels"], inp["centroid"], delta=inp["delta"], ignore_index=inp["ignore_index"],
            backend=backend,
        ),
    )  # fmt: skip


def _bad(**kw):
    inp = {
        "emb": torch.randn(2, 3, 4, 5),
        "labels": torch.randint(0, 2, (2, 4, 5)),
        "centroid": torch.randn(2, 2, 3),
    }
    return {"delta": 0.5, "ignore_index": -1, **inp, **kw}


# id -> ((B, D, H, W, R), options of _inp): the awkward inputs, shared with
# tests/test_centroid_hinge.py (which computes its own centroids: no on_centroid there).
CASES = {
    "odd": ((2, 3, 7, 5, 3), {}),
    "d1_uint8": ((1, 1, 9, 11, 2), {"ignore": 255, "label_dtype": torch.uint8}),
    "d17_channels_last": ((3, 17, 5, 13, 4), {"layout": "channels_last", "delta": 2.0}),
    "d64_blobs": ((2, 64, 8, 9, 5), {"pattern": "blobs", "delta": 10.0}),
    "d130_slice": ((1, 130, 3, 5, 2), {"layout": "slice"}),
    "hw_transposed": ((2, 3, 6, 4, 3), {"layout": "transposed", "label_dtype": torch.int32}),
    "one_pixel": ((1, 3, 1, 1, 2), {"pattern": "one"}),
    "all_one_label": ((2, 4, 5, 5, 3), {"pattern": "one"}),
    "all_ignored": ((2, 4, 5, 5, 3), {"pattern": "ignored"}),
    "empty_regions": ((7, 5, 6, 7, 6), {"layout": "channels_last", "pattern": "gaps"}),
    "ignore_inside_range": ((2, 3, 7, 9, 4), {"ignore": 1, "label_dtype": torch.int8}),
    "all_inactive": ((2, 3, 5, 6, 3), {"delta": 100.0}),
    "delta0_on_centroid": ((2, 4, 5, 6, 3), {"delta": 0.0, "on_centroid": True}),
    "on_centroid": ((3, 5, 4, 7, 2), {"layout": "channels_last", "on_centroid": True}),
    "many_regions": ((1, 3, 16, 17, 40), {}),
    "r1": ((2, 5, 7, 9, 1), {}),
    "long_image": ((1, 2, 3, 3001, 3), {}),
    "r300": ((1, 3, 30, 31, 300), {}),
    # Several images of several chunks, each chunk of several tiles: the CPU's 16384-pixel
    # chunks of 252-pixel tiles at D = 130 in float64; the CUDA kernels' 4096-pixel chunks.
    # In float64 whatever the dtype asked: the centroids' gradient is a sum of ~10^4 centred
    # terms that cancel, below float32's rtol at that length (the reference's float32 misses too).
    "chunks_d130": ((2, 130, 130, 131, 3), {"float64": True}),
    "chunks_d3": ((2, 3, 70, 71, 3), {"layout": "channels_last", "float64": True}),
}

ROW = Contract(
    op="region_hinge",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W")), "centroid": Floats(("B", "R", "D"), stats=True),
                     "delta": Choice((0.0, 0.5), extreme=(100.0,)), "ignore_index": Ignore()},
    make=_inp(2, 5, 7, 9, 3, label_dtype=torch.int16),
    call=_call,
    shaped=lambda B, D, H, W, layout: _inp(B, D, H, W, 3, layout),
    loss=weighted_loss,
    grad_inputs=("emb", "centroid"),
    tiny=_inp(2, 3, 3, 4, 3, delta=1.0),
    zero_sizes={
        f"{'x'.join(map(str, s))}": _inp(*s, 2)("cpu", torch.float32)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]
    },
    bad_inputs={
        "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
        "labels_float": (_bad(labels=torch.zeros(2, 4, 5)), TypeError, "labels must have dtype"),
        "centroid_rank": (_bad(centroid=torch.randn(2, 3)), ValueError, "centroid must have 3 dims"),
        "centroid_shape": (
            _bad(centroid=torch.randn(2, 2, 4)),
            ValueError,
            "centroid must have shape (B, R, D)",
        ),
        "centroid_no_regions": (_bad(centroid=torch.randn(2, 0, 3)), ValueError, "R) must be positive"),
        "label_too_big": (
            _bad(labels=torch.full((2, 4, 5), 2)),
            ValueError,
            "labels values must be in [0, 2)",
        ),
        "delta_negative": (_bad(delta=-0.1), ValueError, "delta must be >= 0.0"),
        "ignore_float": (_bad(ignore_index=0.5), TypeError, "ignore_index must be an int"),
        "device_mismatch": (_bad(centroid=torch.randn(2, 2, 3, device="meta")), ValueError, "same device"),
    },
    cases={k: _inp(*shape, **kw) for k, (shape, kw) in CASES.items()},
    interpreter_skip=frozenset({"r300", "chunks_d130"}),
)

TestContract = suite(ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_delta_zero_is_region_sum_of_squares(backend, device):
    """With delta = 0 and the region's own centroid, the hinge is count * variance."""
    inp = _inp(2, 6, 9, 11, 4)(device, torch.float64)
    count, centroid, variance = pk.region_stats(inp["emb"], inp["labels"], 4, backend="reference")
    h = pk.region_hinge(inp["emb"], inp["labels"], centroid, delta=0.0, backend=backend)
    torch.testing.assert_close(h, count * variance, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_propagates_to_its_region_only(backend, device):
    inp = _inp(1, 3, 4, 5, 3)(device, torch.float64)
    inp["labels"][:] = torch.arange(20, device=device).view(1, 4, 5) % 3
    inp["emb"][0, 1, 0, 1] = float("nan")  # pixel 1: region 1
    h = pk.region_hinge(inp["emb"], inp["labels"], inp["centroid"], delta=0.1, backend=backend).cpu()
    assert h[0, 1].isnan() and not h[0, [0, 2]].isnan().any()


# ---------------------------------------------------------------------------------------------
# The backward without emb's gradient (emb_grad=False, centroid_hinge's first pass): an empty
# first output and, bitwise, the default call's centroid gradient, on every compiled kernel.


def _channel_slice(make):
    """make's emb as a channel slice of a wider channels_last map: dim-inner strides that a
    gradient of its own shape cannot share, so the kernels read a contiguous copy."""

    def made(device, dtype):
        inp = make(device, dtype)
        e = inp["emb"]
        wide = torch.cat([e, e[:, :2]], 1).contiguous(memory_format=torch.channels_last)
        return {**inp, "emb": wide[:, : e.shape[1]]}

    return made


NO_EMB_GRAD_CASES = {
    **ROW.cases,
    "channels_last_channel_slice": _channel_slice(_inp(3, 17, 5, 13, 4, layout="channels_last")),
    "workspace_bins": _inp(1, 7, 12, 13, 200),  # R * D beyond the CUDA kernel's shared-memory bins
}


def _check_no_emb_grad(op, inp):
    emb, centroid = inp["emb"], inp["centroid"]
    g = torch.Generator().manual_seed(3)
    grad_hinge = torch.randn(centroid.shape[:2], generator=g, dtype=torch.float64).to(centroid)
    offset = torch.randn(centroid.shape, generator=g, dtype=torch.float64).to(centroid)
    args = (grad_hinge, emb, inp["labels"], centroid, inp["delta"], inp["ignore_index"])
    grad_emb, want = op(*args)
    assert grad_emb.shape == emb.shape
    for extra in ((None, False), (offset, False)):  # the offset only adds to emb's gradient
        none, got = op(*args, *extra)
        assert none.shape == (0,) and none.dtype == emb.dtype and none.device == emb.device
        assert torch.equal(got, want), (emb.dtype, extra[0] is not None)


def _backward_op(backend):
    name = "region_hinge_backward" + ("_triton" if backend == "triton" else "")
    return getattr(torch.ops.pixelkernels, name)


@pytest.mark.parametrize("case", list(NO_EMB_GRAD_CASES))
@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_backward_without_emb_grad(backend, device, case):
    if backend == "triton" and device == "cpu" and case in ROW.interpreter_skip:
        pytest.skip("too slow for the Triton interpreter")
    for dtype in dtypes_for(backend):
        _check_no_emb_grad(_backward_op(backend), NO_EMB_GRAD_CASES[case](device, dtype))


@pytest.mark.parametrize("case", [k for k in NO_EMB_GRAD_CASES if k not in ROW.interpreter_skip])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_backward_without_emb_grad_cuda_emulated(emu, dtype, case):
    _check_no_emb_grad(emu.region_hinge_backward, NO_EMB_GRAD_CASES[case]("cpu", dtype))


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_opcheck_without_emb_grad(backend, device):
    inp = ROW.make(device, torch.float64)
    grad_hinge = torch.randn(inp["centroid"].shape[:2], generator=torch.Generator().manual_seed(3))
    grad_hinge = grad_hinge.to(inp["centroid"])
    args = (grad_hinge, inp["emb"], inp["labels"], inp["centroid"], inp["delta"], inp["ignore_index"])
    torch.library.opcheck(_backward_op(backend), (*args, None, False))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_triton_gradient_tiles_are_the_compiled_ones(dtype):
    """The Triton gradient kernel's tiles at a paper-size map (D = 16 and 64) are those its
    compile_specs builds, the ones the SASS check holds to "no spill": float64 takes 32 x 64
    (at 64 x 64 the fused variants with grad_emb hit 255 registers and spilled up to 168 B,
    74 local accesses in the pixel loop)."""
    rh = pytest.importorskip("pixelkernels.triton.region_hinge")
    built = {(sig["x_ptr"], c["BLOCK_P"], c["BLOCK_D"]) for k, sig, c, *_ in rh.compile_specs() if k is rh._rh_grad_kernel}
    ptr = {torch.float64: "*fp64", torch.float32: "*fp32", torch.float16: "*fp16"}[dtype]
    for D in (16, 64):
        bp, bd, _ = rh._backward_blocks(224 * 224, D, 2, stats_dtype(dtype))
        assert bp * bd == (2048 if dtype == torch.float64 else 4096)
        if D == 64:
            assert (ptr, bp, bd) in built, (bp, bd)

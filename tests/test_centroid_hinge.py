"""centroid_hinge: the generic contract (tests/contract.py) on the awkward inputs of
region_hinge (its CASES), with the centroids its own; the same values and gradients as
region_stats then region_hinge. The contract's half-precision gradients, elementwise, on
long_image (where the two parts of emb's gradient cancel) are the reason it exists."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, make_emb, make_labels, weighted_loss
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, suite
from test_region_hinge import CASES as HINGE_CASES

import pixelkernels as pk


def _inp(B, D, H, W, R, layout="contiguous", pattern="random", ignore=-1, delta=0.5, label_dtype=torch.int64,
         float64=False):  # fmt: skip
    def make(device, dtype):
        dtype = torch.float64 if float64 else dtype
        emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
        labels = make_labels(B, H, W, R, device=device, pattern=pattern, ignore_index=ignore).to(label_dtype)
        return {"emb": emb, "labels": labels, "num_regions": R, "delta": delta, "ignore_index": ignore}

    return make


def _call(inp, backend):
    return pk.centroid_hinge(
        inp["emb"], inp["labels"], inp["num_regions"], delta=inp["delta"], ignore_index=inp["ignore_index"],
        backend=backend,
    )  # fmt: skip


def _bad(**kw):
    inp = {"emb": torch.randn(2, 3, 4, 5), "labels": torch.randint(0, 2, (2, 4, 5)), "num_regions": 2}
    return {"delta": 0.5, "ignore_index": -1, **inp, **kw}


ROW = Contract(
    op="centroid_hinge",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W")), "num_regions": Size("R"), "delta": Choice((0.0, 0.5), extreme=(100.0,)),
                     "ignore_index": Ignore()},
    make=_inp(2, 5, 7, 9, 3, label_dtype=torch.int16),
    call=_call,
    shaped=lambda B, D, H, W, layout: _inp(B, D, H, W, 3, layout),
    loss=weighted_loss,
    grad_inputs=("emb",),
    tiny=_inp(2, 3, 3, 4, 3, delta=0.2),
    zero_sizes={
        f"{'x'.join(map(str, s))}": _inp(*s, 2)("cpu", torch.float32)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]
    },
    bad_inputs={
        "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
        "labels_float": (_bad(labels=torch.zeros(2, 4, 5)), TypeError, "labels must have dtype"),
        "no_regions": (_bad(num_regions=0), ValueError, "num_regions must be positive"),
        "label_too_big": (_bad(labels=torch.full((2, 4, 5), 2)), ValueError, "labels values must be in [0, 2)"),
        "delta_negative": (_bad(delta=-0.1), ValueError, "delta must be >= 0.0"),
        "delta_nan": (_bad(delta=float("nan")), ValueError, "delta"),
        "ignore_float": (_bad(ignore_index=0.5), TypeError, "ignore_index must be an int"),
        "labels_device": (_bad(labels=torch.zeros(2, 4, 5, dtype=torch.long, device="meta")), ValueError, "device"),
    },
    cases={
        **{k: _inp(*shape, **kw) for k, (shape, kw) in HINGE_CASES.items() if "on_centroid" not in kw},
        "delta0": _inp(2, 4, 5, 6, 3, delta=0.0),
    },
    interpreter_skip=frozenset({"r300", "chunks_d130"}),
)

TestContract = suite(ROW)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_is_region_stats_then_region_hinge(backend, device):
    """Values and float64 gradients equal the two-op composition's."""
    inp = _inp(2, 6, 9, 11, 4, pattern="gaps", delta=0.3)(device, torch.float64)
    emb = inp["emb"].requires_grad_()
    got = pk.centroid_hinge(emb, inp["labels"], 4, delta=0.3, backend=backend)
    n, c, _ = pk.region_stats(emb, inp["labels"], 4, with_variance=False, backend=backend)
    want = (n, c, pk.region_hinge(emb, inp["labels"], c, delta=0.3, backend=backend))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    w = [torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(i)).to(o.device)
         for i, o in enumerate(got)]  # fmt: skip
    g_got = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(got[1:], w[1:])), emb)[0]
    g_want = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(want[1:], w[1:])), emb)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("R,fused", [(5, True), (5000, False)])
def test_cuda_merges_in_the_last_blocks_where_partials_are_few_emulated(emu, R, fused):
    """The CUDA kernels of region_hinge (forward, backward) and centroid_hinge's backward merge
    their partials in each image's last block (csrc/cuda/common.cuh last_to_arrive) up to 2^15
    partial values per image, one launch fewer each (the backwards with float accumulators
    only); beyond it a kernel of its own merges them. float32 against the CPU kernels in
    float64; the emulated launcher fails a call that leaves the ticket counters nonzero."""
    g = torch.Generator().manual_seed(7)
    emb = make_emb(1, 16, 64, 64, dtype=torch.float64, device="cpu")
    labels = make_labels(1, 64, 64, R, device="cpu", pattern="random").to(torch.int32)
    cpu = torch.ops.pixelkernels
    count, centroid, _ = cpu.region_stats(emb, labels, R, -1, False)
    centroid = centroid + 0.1 * torch.randn(centroid.shape, generator=g, dtype=torch.float64)
    gh = torch.randn(1, R, generator=g, dtype=torch.float64)
    gc = torch.randn(1, R, 16, generator=g, dtype=torch.float64)
    calls = {
        "region_hinge": ((emb, labels, centroid, 0.5, -1), (1, 2)),
        "region_hinge_backward": ((gh, emb, labels, centroid, 0.5, -1), (1, 2)),
        "centroid_hinge_backward": ((gc, gh, emb, labels, count, centroid, 0.5, -1), (2, 3)),
    }
    f32 = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    for name, (args, launches) in calls.items():
        before = int(emu.launch_count())
        got = getattr(emu, name)(*map(f32, args))
        assert int(emu.launch_count()) - before == launches[0 if fused else 1], name
        want = getattr(cpu, name)(*args)
        for a, b in zip(*((got, want) if isinstance(got, tuple) else ((got,), (want,)))):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4, msg=name)

"""region_stats: the generic contract (tests/contract.py) plus its own cases: values and
gradients on awkward inputs, label widths, numerics, NaN policy, determinism, and the paths
the GPU kernels take (marked cuda, skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    BACKENDS,
    COMPILED_BACKENDS,
    GPU_BACKENDS,
    assert_close,
    backend_params,
    dtypes_for,
    fixed_weights,
    make_emb,
    make_labels,
)
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, suite

import pixelkernels as pk
from pixelkernels.reference.region_stats import region_stats as reference_region_stats

# ---------------------------------------------------------------------------------------------
# The contract row


def _shaped(B, D, H, W, layout):
    def make(device, dtype):
        return {
            "emb": make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout),
            "labels": make_labels(B, H, W, 3, device=device).to(torch.int16),
            "num_regions": 3,
            "ignore_index": -1,
        }

    return make


def _tiny(device, dtype):
    return {
        "emb": make_emb(2, 3, 3, 4, dtype=dtype, device=device),
        "labels": make_labels(2, 3, 4, 3, device=device),
        "num_regions": 3,
        "ignore_index": -1,
    }


def _call(inp, backend):
    return pk.region_stats(
        inp["emb"],
        inp["labels"],
        inp["num_regions"],
        ignore_index=inp["ignore_index"],
        with_variance=inp.get("with_variance", True),
        backend=backend,
    )


def _centroids_only(B, D, H, W, R, layout, pattern):
    """with_variance=False: variance is a constant 0 that takes no gradient (the loss still
    weights it), count and centroid as usual; one case per CPU kernel path."""

    def make(device, dtype):
        return {
            "emb": make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout),
            "labels": make_labels(B, H, W, R, device=device, pattern=pattern),
            "num_regions": R,
            "ignore_index": -1,
            "with_variance": False,
        }

    return make


def _loss(out, inp):
    # fixed_weights: exact in every dtype. Weights made in the output's dtype gave a float32
    # backward an incoming gradient ~1e-7 off the float64 reference's (linspace's rounding at
    # 65541 images), enough to miss SPEC §4 at the first GPU run's many_images shape.
    _, centroid, variance = out
    return (centroid * fixed_weights(centroid)).sum() + (variance * fixed_weights(variance)).sum()


def _zero(B, D, H, W, transposed=False):
    emb = torch.randn(B, D, W, H).transpose(2, 3) if transposed else torch.randn(B, D, H, W)
    return {
        "emb": emb,
        "labels": torch.zeros(B, H, W, dtype=torch.long),
        "num_regions": 2,
        "ignore_index": -1,
    }


def _bad(**kw):
    inp = {"emb": torch.randn(2, 3, 4, 5), "labels": torch.randint(0, 2, (2, 4, 5)), "num_regions": 2}
    return {"ignore_index": -1, **inp, **kw}


ROW = Contract(
    op="region_stats",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W")), "num_regions": Size("R"),
                     "ignore_index": Ignore(), "with_variance": Choice((True, False))},
    make=_shaped(2, 5, 7, 9, "contiguous"),
    call=_call,
    shaped=_shaped,
    loss=_loss,
    grad_inputs=("emb",),
    tiny=_tiny,
    cases={
        "centroids_only_r2": _centroids_only(2, 5, 7, 9, 2, "contiguous", "random"),
        "centroids_only_r6": _centroids_only(2, 3, 9, 7, 6, "contiguous", "gaps"),
        "centroids_only_channels_last": _centroids_only(3, 17, 5, 7, 4, "channels_last", "random"),
        # The CPU backward's emb-free paths: 4 selected bins, 2 gathered, strided rows, no pixel.
        "centroids_only_r3_gaps": _centroids_only(2, 4, 5, 11, 3, "contiguous", "gaps"),
        "centroids_only_r1": _centroids_only(2, 3, 6, 5, 1, "contiguous", "random"),
        "centroids_only_slice": _centroids_only(2, 6, 5, 7, 2, "slice", "random"),
        "centroids_only_ignored": _centroids_only(2, 3, 4, 5, 2, "transposed", "ignored"),
        # Row passes of the select kernels (D = 7: full passes, then single rows; a padded tail).
        "centroids_only_r2_rows": _centroids_only(2, 7, 13, 37, 2, "contiguous", "random"),
        "centroids_only_r3_rows": _centroids_only(1, 7, 11, 29, 3, "contiguous", "blobs"),
    },
    zero_sizes={
        f"{'x'.join(map(str, s))}{'_t' if t else ''}": _zero(*s, transposed=t)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)]
        for t in (False, True)
    },
    bad_inputs={
        "emb_not_tensor": (_bad(emb=[1.0]), TypeError, "emb must be a torch.Tensor"),
        "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
        "emb_int": (_bad(emb=torch.zeros(2, 3, 4, 5, dtype=torch.int32)), TypeError, "emb must have dtype"),
        "labels_rank": (
            _bad(labels=torch.zeros(2, 20, dtype=torch.long)),
            ValueError,
            "labels must have 3 dims",
        ),
        "labels_float": (_bad(labels=torch.zeros(2, 4, 5)), TypeError, "labels must have dtype"),
        "labels_bool": (
            _bad(labels=torch.zeros(2, 4, 5, dtype=torch.bool)),
            TypeError,
            "labels must have dtype",
        ),
        "labels_shape": (
            _bad(labels=torch.zeros(2, 5, 4, dtype=torch.long)),
            ValueError,
            "labels must have shape",
        ),
        "labels_batch": (
            _bad(labels=torch.zeros(3, 4, 5, dtype=torch.long)),
            ValueError,
            "labels must have shape",
        ),
        "regions_zero": (_bad(num_regions=0), ValueError, "num_regions must be positive, got 0"),
        "regions_negative": (_bad(num_regions=-3), ValueError, "num_regions must be positive, got -3"),
        "regions_float": (_bad(num_regions=2.0), TypeError, "num_regions must be an int"),
        "regions_huge": (_bad(num_regions=2**31), ValueError, "num_regions must be < 2^31"),
        "label_too_big": (
            _bad(labels=torch.full((2, 4, 5), 2)),
            ValueError,
            "labels values must be in [0, 2)",
        ),
        "label_negative": (_bad(labels=torch.full((2, 4, 5), -2)), ValueError, "found -2"),
        "device_mismatch": (
            _bad(labels=torch.zeros(2, 4, 5, dtype=torch.long, device="meta")),
            ValueError,
            "labels must be on the same device as emb",
        ),
        "ignore_index_float": (_bad(ignore_index=0.5), TypeError, "ignore_index must be an int"),
        "unknown_backend": (_bad(backend="tpu"), ValueError, "backend must be one of"),
        "cpu_backend_half": (
            _bad(emb=torch.randn(2, 3, 4, 5, dtype=torch.float16), backend="cpu"),
            TypeError,
            "not by cpu",
        ),
        "cuda_backend_cpu_tensors": (_bad(backend="cuda"), RuntimeError, "cuda backend needs CUDA tensors"),
    },
)

TestContract = suite(ROW)

# ---------------------------------------------------------------------------------------------
# Values and gradients on awkward inputs

# id: (B, D, H, W, R, layout, label pattern, ignore_index)
CASES = {
    "odd": (2, 3, 7, 5, 3, "contiguous", "random", -1),
    "d1": (1, 1, 9, 11, 2, "contiguous", "random", -1),
    "d17_channels_last": (3, 17, 5, 13, 4, "channels_last", "random", -1),
    "d64_blobs": (2, 64, 8, 9, 5, "contiguous", "blobs", -1),
    "d130_slice": (1, 130, 3, 5, 2, "slice", "random", -1),
    "hw_transposed": (2, 3, 6, 4, 3, "transposed", "random", -1),
    "w1_transposed": (2, 3, 5, 1, 2, "transposed", "random", -1),
    "one_pixel": (1, 3, 1, 1, 2, "contiguous", "one", -1),
    "all_one_label": (2, 4, 5, 5, 3, "contiguous", "one", -1),
    "all_ignored": (2, 4, 5, 5, 3, "contiguous", "ignored", -1),
    "empty_regions": (7, 5, 6, 7, 6, "channels_last", "gaps", -1),
    "batch7": (7, 3, 5, 3, 2, "contiguous", "random", -1),
    "ignore_inside_range": (2, 3, 7, 9, 4, "contiguous", "random", 1),
    "ignore_255": (2, 3, 7, 9, 4, "channels_last", "random", 255),
    "many_regions": (1, 3, 16, 17, 40, "contiguous", "random", -1),
    "r9_blobs": (2, 6, 33, 35, 9, "contiguous", "blobs", -1),
    # the CPU's runs path with runs of 20 pixels: a tail past the 8 lanes of each run's sum
    "r9_blobs_runs_of_20": (2, 5, 11, 29, 9, "contiguous", "blobs", -1),
    "d17_r6": (2, 17, 9, 13, 6, "contiguous", "random", -1),
    "r1_odd": (2, 1, 1, 16, 1, "contiguous", "random", -1),
    "r1_d5": (3, 5, 7, 9, 1, "slice", "random", -1),
    "d24_r5_slice": (3, 24, 7, 11, 5, "slice", "random", -1),
    "long_image": (1, 2, 3, 3001, 3, "contiguous", "random", -1),
    "r1024": (1, 3, 40, 41, 1024, "contiguous", "random", -1),
    # The CPU select kernels' row passes (4 or 2 dim rows per pass, then single rows) and
    # their padded last block of pixels, for 2 and 3 regions.
    "r2_rows": (2, 7, 13, 37, 2, "contiguous", "random", -1),
    "r3_rows": (1, 5, 11, 29, 3, "contiguous", "blobs", -1),
    # Several images of several CPU chunks (512 KiB of emb: 3855 pixels at D = 17 in float64)
    # of several 512-pixel tiles.
    "chunks_d17": (2, 17, 70, 71, 4, "contiguous", "random", -1),
}
INTERPRETER_TOO_SLOW = {"r1024", "chunks_d17"}
BACKWARD_CASES = [
    "odd", "d17_channels_last", "d130_slice", "empty_regions", "ignore_inside_range", "w1_transposed",
    "many_regions", "all_ignored", "d17_r6", "d24_r5_slice", "r1_odd", "r1_d5", "r9_blobs", "r9_blobs_runs_of_20", "long_image",
    "r2_rows", "r3_rows", "chunks_d17",
]  # fmt: skip


def _inputs(case, dtype, device):
    B, D, H, W, R, layout, pattern, ignore = case
    emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
    labels = make_labels(B, H, W, R, device=device, pattern=pattern, ignore_index=ignore)
    return emb, labels, R, ignore


def _reference(emb, labels, R, ignore):
    """The oracle in float64 on the CPU, whatever the input dtype."""
    out = reference_region_stats(emb.detach().double().cpu(), labels.cpu(), R, ignore)
    return [t.to(emb.device) for t in out]


def _skip_slow(backend, device, case_id):
    if backend == "triton" and device == "cpu" and case_id in INTERPRETER_TOO_SLOW:
        pytest.skip("too slow for the Triton interpreter")


@pytest.mark.parametrize("case_id", list(CASES))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_forward_matches_reference(backend, device, case_id):
    _skip_slow(backend, device, case_id)
    for dtype in dtypes_for(backend):
        emb, labels, R, ignore = _inputs(CASES[case_id], dtype, device)
        got = pk.region_stats(emb, labels, R, ignore_index=ignore, backend=backend)
        want = _reference(emb, labels, R, ignore)
        stats = pk._dtypes.stats_dtype(dtype)
        B, D = emb.shape[:2]
        for t, name, shape in zip(got, ("count", "centroid", "variance"), ((B, R), (B, R, D), (B, R))):
            assert t.dtype == stats and t.is_contiguous() and t.shape == shape, name
        for t, ref, name in zip(got, want, ("count", "centroid", "variance")):
            assert_close(t, ref, dtype, msg=f"{name} {dtype}")
        assert (got[2] >= 0).all()


@pytest.mark.parametrize("case_id", BACKWARD_CASES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_backward_matches_reference(backend, device, case_id):
    for dtype in dtypes_for(backend):
        emb, labels, R, ignore = _inputs(CASES[case_id], dtype, device)
        B, D = emb.shape[:2]
        g = torch.Generator().manual_seed(5)
        gc = torch.randn(B, R, D, generator=g, dtype=torch.float64)
        gv = torch.randn(B, R, generator=g, dtype=torch.float64)

        x = emb.detach().requires_grad_(True)
        _, c, v = pk.region_stats(x, labels, R, ignore_index=ignore, backend=backend)
        (got,) = torch.autograd.grad((c * gc.to(c)).sum() + (v * gv.to(v)).sum(), x)

        xr = emb.detach().double().cpu().requires_grad_(True)
        _, cr, vr = reference_region_stats(xr, labels.cpu(), R, ignore)
        (want,) = torch.autograd.grad((cr * gc).sum() + (vr * gv).sum(), xr)

        assert got.dtype == emb.dtype and got.shape == emb.shape
        if emb.is_contiguous(memory_format=torch.channels_last) and not emb.is_contiguous():
            assert got.is_contiguous(memory_format=torch.channels_last)
        assert_close(got, want, dtype)


@pytest.mark.skipif(not pk._ext.HAVE_CPU_KERNELS, reason="extension not built")
@pytest.mark.parametrize("pick", ["centroid", "both"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_backward_of_a_large_map_streams_its_stores(pick, dtype):
    """A gradient of 8 MiB or more is written with non-temporal stores (csrc/cpu/pixel_tiles.h
    stream_output): the same values as the reference, x-free (centroid only) and reading x (the
    variance too), with rows at every 16-byte offset (P odd: the misaligned vectors take plain
    stores) and with two and three regions (the few-bin paths)."""
    for R, (B, H, W) in ((2, (3, 257, 255)), (3, (2, 300, 301))):
        D = 16 if dtype == torch.float32 else 8
        assert B * D * H * W * dtype.itemsize >= 8 << 20
        g = torch.Generator().manual_seed(R)
        emb = torch.randn(B, D, H, W, generator=g, dtype=dtype)
        labels = torch.randint(-1, R, (B, H, W), generator=g)
        gc = torch.randn(B, R, D, generator=g, dtype=torch.float64)
        gv = torch.randn(B, R, generator=g, dtype=torch.float64) if pick == "both" else torch.zeros(B, R, dtype=torch.float64)
        x = emb.clone().requires_grad_(True)
        _, c, v = pk.region_stats(x, labels, R, backend="cpu")
        (got,) = torch.autograd.grad((c * gc.to(c)).sum() + (v * gv.to(v)).sum(), x)
        xr = emb.double().requires_grad_(True)
        _, cr, vr = reference_region_stats(xr, labels, R, -1)
        (want,) = torch.autograd.grad((cr * gc).sum() + (vr * gv).sum(), xr)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradient_of_one_output_only(backend, device):
    """A loss on the variance alone (grad_centroid arrives as zeros) and on the centroid alone."""
    emb, labels, R, _ = _inputs(CASES["odd"], torch.float64, device)
    for pick in (1, 2):
        x = emb.detach().requires_grad_(True)
        (got,) = torch.autograd.grad(pk.region_stats(x, labels, R, backend=backend)[pick].sum(), x)
        xr = emb.detach().cpu().requires_grad_(True)
        (want,) = torch.autograd.grad(reference_region_stats(xr, labels.cpu(), R)[pick].sum(), xr)
        assert_close(got, want, torch.float64)


def test_centroid_alone_costs_no_zeros_emulated(emu):
    """grad_variance is Tensor? (issue 36 part 2): for a loss on the centroids alone the C++
    autograd hands region_stats_backward None, not a zeros of the variance's shape (a launch on a
    GPU): the backward step launches no ATen op besides the op's own kernels, and its gradient
    is the reference's. The op also takes None directly (with_variance or not)."""
    from pixelkernels.bench import host

    emb, labels, R, _ = _inputs(CASES["odd"], torch.float64, "cpu")
    x = emb.detach().requires_grad_(True)
    g = torch.randn(emb.shape[0], R, emb.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with host.cuda_backend_on_cpu():
        _, centroid, _ = pk.region_stats(x, labels, R, backend="cuda")
    with host._Counter(emu) as mode:  # the ATen ops that launch (the op's own: the emulator's)
        (got,) = torch.autograd.grad(centroid, x, g)
    assert mode.n == 0
    xr = emb.detach().requires_grad_(True)
    (want,) = torch.autograd.grad(reference_region_stats(xr, labels, R)[1], xr, g)
    assert_close(got, want, torch.float64)
    count, centroid, _ = emu.region_stats(emb, labels, R, -1)
    for with_variance in (True, False):
        grad = emu.region_stats_backward(g, None, emb, labels, count, centroid, -1, with_variance)
        assert_close(grad, want, torch.float64)


def _some_regions_weights(R, dtype, device):
    """Variance weights that are 0 for the even regions: those pixels' gradients need no emb
    (the CUDA and Triton backward kernels then skip its load)."""
    odd = torch.arange(R, dtype=dtype, device=device) % 2
    return odd * torch.linspace(0.5, 2.0, R, dtype=dtype, device=device)


@pytest.mark.parametrize("case_id", ["odd", "d17_channels_last", "d24_r5_slice"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_variance_gradient_in_some_regions_only(backend, device, case_id):
    _skip_slow(backend, device, case_id)
    emb, labels, R, ignore = _inputs(CASES[case_id], torch.float64, device)
    wv = _some_regions_weights(R, torch.float64, device)
    x = emb.detach().requires_grad_(True)
    _, c, v = pk.region_stats(x, labels, R, ignore_index=ignore, backend=backend)
    (got,) = torch.autograd.grad((c * fixed_weights(c)).sum() + (v * wv).sum(), x)
    xr = emb.detach().cpu().requires_grad_(True)
    _, cr, vr = reference_region_stats(xr, labels.cpu(), R, ignore)
    (want,) = torch.autograd.grad((cr * fixed_weights(cr)).sum() + (vr * wv.cpu()).sum(), xr)
    assert_close(got, want.to(device), torch.float64)


@pytest.mark.parametrize("case_id", ["odd", "d17_channels_last", "d24_r5_slice"])
def test_cuda_backward_emulated_some_regions_only(emu, case_id):
    """The CUDA backward with grad_variance 0 in some regions (no emb load there)."""
    emb, labels, R, ignore = _inputs(CASES[case_id], torch.float64, "cpu")
    count, centroid, _ = emu.region_stats(emb, labels, R, ignore)
    g = torch.Generator().manual_seed(3)
    gc = torch.randn(emb.shape[0], R, emb.shape[1], generator=g, dtype=torch.float64)
    gv = _some_regions_weights(R, torch.float64, "cpu").expand(emb.shape[0], R).contiguous()
    grad = emu.region_stats_backward(gc, gv, emb, labels, count, centroid, ignore)
    xr = emb.detach().requires_grad_(True)
    _, cr, vr = reference_region_stats(xr, labels, R, ignore)
    (want,) = torch.autograd.grad((cr * gc).sum() + (vr * gv).sum(), xr)
    assert_close(grad, want, torch.float64)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_label_widths(backend, device):
    """uint8, int8, int16, int32 and int64 labels give the same statistics (read in place)."""
    emb = make_emb(2, 3, 6, 7, dtype=torch.float64, device=device)
    labels = make_labels(2, 6, 7, 5, device=device)  # -1 = ignored
    want = _reference(emb, labels, 5, -1)
    for dt in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        lab, ignore = (
            (labels.masked_fill(labels < 0, 255).to(dt), 255) if dt == torch.uint8 else (labels.to(dt), -1)
        )
        got = pk.region_stats(emb, lab, 5, ignore_index=ignore, backend=backend)
        for a, b in zip(got, want):
            assert_close(a, b, torch.float64, msg=str(dt))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_numerically_stable_large_offset(backend, device):
    """Mean 1e3, spread 1 in float32: E[x^2]-E[x]^2 would be off by ~1e-1 relative
    (ulp(1e6) = 0.06); the chunked two-pass/Chan scheme stays at float32 rounding."""
    g = torch.Generator().manual_seed(0)
    emb = (1e3 + torch.randn(2, 4, 64, 64, generator=g, dtype=torch.float64)).float()
    labels = make_labels(2, 64, 64, 2, device="cpu")
    want = reference_region_stats(emb.double(), labels, 2)[2]
    _, _, var = pk.region_stats(emb.to(device), labels.to(device), 2, backend=backend)
    torch.testing.assert_close(var.cpu(), want.float(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_stays_in_its_region(backend, device):
    emb = make_emb(1, 3, 4, 5, dtype=torch.float32, device=device)
    labels = torch.zeros(1, 4, 5, dtype=torch.long)
    labels[0, 2:] = 1
    labels[0, 0, 0] = -1
    labels = labels.to(device)
    emb[0, 1, 0, 1] = float("nan")  # region 0
    emb[0, 2, 0, 0] = float("inf")  # ignored pixel: must not show anywhere
    _, centroid, variance = pk.region_stats(emb, labels, 2, backend=backend)
    assert torch.isnan(centroid[0, 0, 1]) and torch.isnan(variance[0, 0])
    assert torch.isfinite(centroid[0, 1]).all() and torch.isfinite(variance[0, 1])
    assert torch.isfinite(centroid[0, 0, [0, 2]]).all()
    x = emb.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(pk.region_stats(x, labels, 2, backend=backend)[1][0, 1].sum(), x)
    assert torch.isfinite(g).all() and (g[0, :, 0, 0] == 0).all()


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_checks_off_bad_labels_are_ignored(backend, device):
    emb = make_emb(2, 3, 6, 7, dtype=torch.float64, device=device)
    labels = make_labels(2, 6, 7, 3, device=device)
    bad = labels.clone()
    bad[0, 0, :4] = torch.tensor([3, 10**9, -5, -(2**40)])
    bad[1, 5, 6] = 2**62
    cleaned = torch.where((bad >= 0) & (bad < 3), bad, torch.full_like(bad, -1))
    pk.set_checks(False)
    try:
        got = pk.region_stats(emb, bad, 3, backend=backend)
    finally:
        pk.set_checks(True)
    for a, b in zip(got, _reference(emb, cleaned, 3, -1)):
        assert_close(a, b, torch.float64)


# Many chunks per image and many programs / thread blocks / OpenMP tasks, and R above the
# Triton atomic threshold: a scheduling-dependent sum would show here.
# The Triton interpreter runs programs one after another, so its row is about the chunked
# deterministic path only, at a size it runs in seconds.
DETERMINISM_SHAPE = {"cpu": (3, 64, 60, 61, 40), "cuda": (4, 40, 200, 201, 40), "interpreter": (2, 17, 30, 31, 40)}


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_deterministic_bitwise(backend, device):
    """Same bits on every run with deterministic algorithms on, and (cpu) for any thread count."""
    B, D, H, W, R = DETERMINISM_SHAPE["interpreter" if backend == "triton" and device == "cpu" else device]
    emb = make_emb(B, D, H, W, dtype=torch.float32, device=device)
    labels = make_labels(B, H, W, R, device=device, pattern="random")
    prev, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [pk.region_stats(emb, labels, R, backend=backend) for _ in range(3)]
        if backend == "cpu":
            torch.set_num_threads(1)
            runs.append(pk.region_stats(emb, labels, R, backend=backend))
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_double_backward_formula(backend, device):
    """create_graph=True differentiates the reference: second derivatives match it."""
    emb, labels, R, _ = _inputs(CASES["d17_r6"], torch.float64, device)
    out = []
    for b, x in ((backend, emb.detach()), ("reference", emb.detach().cpu())):
        x = x.requires_grad_(True)
        _, c, v = pk.region_stats(x, labels.to(x.device), R, backend=b)
        (g,) = torch.autograd.grad(c.square().sum() + v.square().sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        out.append((g, gg))
    assert_close(out[0][0], out[1][0], torch.float64)
    assert_close(out[0][1], out[1][1], torch.float64)


def test_label_check_in_int64():
    """Bounds beyond the label dtype's range must not wrap: uint8 labels with R = 256 are valid."""
    for dtype, hi in ((torch.uint8, 255), (torch.int8, 127), (torch.int16, 30000)):
        labels = torch.full((1, 2, 3), hi, dtype=dtype)
        pk.region_stats(torch.randn(1, 2, 2, 3), labels, hi + 1, backend="reference")
        with pytest.raises(ValueError, match="labels values must be in"):
            pk.region_stats(torch.randn(1, 2, 2, 3), labels, hi, ignore_index=-1, backend="reference")


def test_auto_uses_reference_for_half_on_cpu():
    emb = torch.randn(1, 2, 3, 3, dtype=torch.bfloat16)
    count, centroid, _ = pk.region_stats(emb, torch.zeros(1, 3, 3, dtype=torch.long), 1)
    assert centroid.dtype == torch.float32 and count[0, 0] == 9


def test_cpp_op_rejects_bad_shapes_without_crashing():
    """Direct calls skip the Python checks; the C++ side still refuses what would go out of bounds."""
    if not pk._ext.HAVE_CPU_KERNELS:
        pytest.skip("extension not built")
    op, bwd = torch.ops.pixelkernels.region_stats, torch.ops.pixelkernels.region_stats_backward
    long = torch.long
    with pytest.raises(RuntimeError, match="do not match emb"):
        op(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=long), 2, -1)
    with pytest.raises(RuntimeError, match=r"num_regions must be in \[1, 2\^31\)"):
        op(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=long), 0, -1)
    with pytest.raises(RuntimeError, match="labels must have an integer dtype"):
        op(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3), 2, -1)
    with pytest.raises(RuntimeError, match="cpu kernels take float32 and float64"):
        op(torch.randn(1, 2, 3, 3, dtype=torch.half), torch.zeros(1, 3, 3, dtype=long), 2, -1)
    with pytest.raises(RuntimeError, match="inconsistent shapes"):
        bwd(torch.zeros(1, 2, 5), torch.zeros(1, 2), torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=long),
            torch.ones(1, 2), torch.zeros(1, 2, 2), -1)  # fmt: skip


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_backward_op_ignores_regions_with_count_zero(backend, device):
    """A hand-made count of 0 for a region that has pixels: those pixels get 0, never inf/NaN."""
    bwd = getattr(
        torch.ops.pixelkernels, "region_stats_backward" + ("_triton" if backend == "triton" else "")
    )
    emb = make_emb(2, 3, 5, 6, dtype=torch.float32, device=device)
    labels = make_labels(2, 5, 6, 3, device=device, pattern="one")  # every pixel in region 2
    count = torch.zeros(2, 3, device=device)
    centroid, gc = torch.zeros(2, 3, 3, device=device), torch.ones(2, 3, 3, device=device)
    gv = torch.ones(2, 3, device=device)
    grad = bwd(gc, gv, emb, labels, count, centroid, -1)
    assert torch.equal(grad, torch.zeros_like(emb))


def test_backward_op_ignores_regions_with_count_zero_emulated(emu):
    """The same on the CUDA kernel (emulated): its `count > 0` guard."""
    emb = make_emb(2, 3, 5, 6, dtype=torch.float32, device="cpu")
    labels = make_labels(2, 5, 6, 3, device="cpu", pattern="one")
    count, centroid, gc, gv = torch.zeros(2, 3), torch.zeros(2, 3, 3), torch.ones(2, 3, 3), torch.ones(2, 3)
    grad = emu.region_stats_backward(gc, gv, emb, labels, count, centroid, -1)
    assert torch.equal(grad, torch.zeros_like(emb))


@pytest.mark.parametrize("R,D,launches", [(5, 16, 1), (64, 520, 2)])
def test_cuda_forward_merges_in_its_last_blocks_where_partials_are_few_emulated(emu, R, D, launches):
    """The CUDA forward is one launch (the last block of each image merges its partials,
    csrc/cuda/common.cuh last_to_arrive) up to 2^15 partial values per image, two beyond; the
    same values both ways, and the ticket counters handed back zeroed (the emulated launcher
    fails a call that leaves them otherwise). 64 regions x 520 dims: above 2^15 in one chunk."""
    emb = make_emb(2, D, 8, 8, dtype=torch.float32, device="cpu")
    labels = make_labels(2, 8, 8, R, device="cpu", pattern="blobs").to(torch.int32)
    before = int(emu.launch_count())
    got = emu.region_stats(emb, labels, R, -1, True, None)
    assert int(emu.launch_count()) - before == launches
    for a, b in zip(got, _reference(emb, labels, R, -1)):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("path", ["chunked", "atomic", "multi_tile"])
@pytest.mark.parametrize("backend,device", backend_params(("triton",)))
def test_triton_paths(backend, device, path):
    """Each forward path of the Triton kernels against the reference (auto picks by R)."""
    from pixelkernels.triton import region_stats as tr

    emb = make_emb(2, 5, 19, 23, dtype=torch.float32, device=device, layout="channels_last")
    labels = make_labels(2, 19, 23, 7, device=device).to(torch.uint8)
    labels[labels == 255] = 7  # out of range: ignored by every path
    kw = {"path": "chunked", "max_partial_rows": 7} if path == "multi_tile" else {"path": path}
    got = tr.region_stats_forward(emb, labels, 7, -1, **kw)
    for a, b in zip(got, _reference(emb, labels, 7, -1)):
        assert_close(a, b, torch.float32, msg=path)


# ---------------------------------------------------------------------------------------------
# The paths of the GPU kernels (skipped without a GPU; all of them run in `bash .ci/gpu`). The
# GPU-shaped tests every op has (many images, 64-bit offsets, side stream, CUDA graph capture,
# determinism) are in tests/contract.py.
# id: (B, D, H, W, R, layout, dtype); the CUDA kernel's paths named in its header.
GPU_CASES = {
    "smem_accumulators": (3, 24, 33, 35, 5, "contiguous", torch.float32),
    "global_accumulators": (2, 3, 64, 65, 4000, "contiguous", torch.float32),  # R above the smem limit
    "global_accumulators_f64": (1, 5, 50, 51, 2100, "channels_last", torch.float64),
    "multi_chunk_merge": (2, 16, 100, 101, 3, "contiguous", torch.float32),
    "channels_last": (2, 40, 47, 53, 6, "channels_last", torch.float32),
    "float16": (2, 17, 45, 49, 4, "contiguous", torch.float16),
    "bfloat16": (2, 17, 45, 49, 4, "channels_last", torch.bfloat16),
    "d_zero_dims": (2, 0, 9, 9, 3, "contiguous", torch.float32),
    # chunks x R x D above the CUDA forward's fused merge (kMaxFusedMerge): its merge kernel
    "merge_kernel": (1, 16, 64, 64, 1100, "contiguous", torch.float32),
    "slice": (2, 9, 21, 22, 3, "slice", torch.float32),
    # the backward's contiguous fast path (csrc/cuda/region_stats.cu region_backward_vec_kernel):
    # pixel-inner rows of whole 16-byte vectors (H W a multiple of 16 / element size)
    "vec16_float32": (2, 7, 12, 20, 5, "contiguous", torch.float32),
    "vec16_float64": (2, 3, 10, 10, 4, "contiguous", torch.float64),
    "vec16_float16": (2, 5, 16, 24, 3, "contiguous", torch.float16),
    "vec16_bfloat16": (1, 9, 8, 40, 6, "contiguous", torch.bfloat16),
    # 2048 vectors an image: more than the emulator's 3 x 256-thread grid, so its stride loop turns
    "vec16_grid_stride": (2, 8, 32, 32, 5, "contiguous", torch.float32),
}
SANITIZED = {"smem_accumulators", "global_accumulators", "channels_last", "float16", "vec16_float16"}


@pytest.mark.parametrize(
    "case_id", [pytest.param(k, marks=(pytest.mark.sanitize,) if k in SANITIZED else ()) for k in GPU_CASES]
)
@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
def test_gpu_paths(backend, device, case_id):
    B, D, H, W, R, layout, dtype = GPU_CASES[case_id]
    emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout).requires_grad_(True)
    labels = make_labels(B, H, W, R, device=device, pattern="random").to(torch.int32)
    got = pk.region_stats(emb, labels, R, backend=backend)
    for a, b in zip(got, _reference(emb, labels, R, -1)):
        assert_close(a, b, dtype, msg=case_id)
    (g,) = torch.autograd.grad(got[1].sum() + got[2].sum(), emb)
    xr = emb.detach().double().cpu().requires_grad_(True)
    ref = reference_region_stats(xr, labels.cpu(), R)
    (gr,) = torch.autograd.grad(ref[1].sum() + ref[2].sum(), xr)
    assert_close(g, gr, dtype, msg=f"{case_id} grad")


# The same paths, and the awkward CASES, on the CUDA kernels run on the CPU (tests/cuda_emu),
# with the labels at several widths. The emulation lowers the grid's y limit to 3, so every
# batch above 3 walks the kernels' loops over images.
def _label_type(R, ignore, i):
    if ignore == 255:
        return torch.uint8
    widths = [
        t for t in (torch.int32, torch.int16, torch.int64, torch.int8) if torch.iinfo(t).max >= max(R, ignore)
    ]
    return widths[i % len(widths)]


EMULATED_CASES = {
    **{k: (B, D, H, W, R, layout, "random", -1, dt) for k, (B, D, H, W, R, layout, dt) in GPU_CASES.items()},
    **{
        k: (B, D, H, W, R, layout, pat, ign, torch.float32)
        for k, (B, D, H, W, R, layout, pat, ign) in CASES.items()
    },
}


@pytest.mark.parametrize("case_id", list(EMULATED_CASES))
def test_cuda_kernels_emulated_paths(emu, case_id):
    B, D, H, W, R, layout, pattern, ignore, dtype = EMULATED_CASES[case_id]
    emb = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout)
    labels = make_labels(B, H, W, R, device="cpu", pattern=pattern, ignore_index=ignore)
    labels = labels.to(_label_type(R, ignore, list(EMULATED_CASES).index(case_id)))
    g = torch.Generator().manual_seed(5)
    gc = torch.randn(B, R, D, generator=g, dtype=torch.float64)
    gv = torch.randn(B, R, generator=g, dtype=torch.float64)
    stats = pk._dtypes.stats_dtype(dtype)

    got = emu.region_stats(emb, labels, R, ignore)
    grad = emu.region_stats_backward(gc.to(stats), gv.to(stats), emb, labels, got[0], got[1], ignore)

    xr = emb.double().requires_grad_(True)
    want = reference_region_stats(xr, labels.long(), R, ignore)
    (want_grad,) = torch.autograd.grad((want[1] * gc).sum() + (want[2] * gv).sum(), xr)
    for a, b, name in zip(got, want, ("count", "centroid", "variance")):
        assert a.dtype == stats
        assert_close(a, b, dtype, msg=f"{case_id} {name}")
    assert grad.dtype == dtype and grad.stride() == torch.empty_like(emb).stride()
    assert_close(grad, want_grad, dtype, msg=f"{case_id} grad")


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
def test_gpu_deterministic_mode(backend, device):
    """torch.use_deterministic_algorithms(True) takes the chunked Triton path for R > 32."""
    emb = make_emb(2, 8, 64, 67, dtype=torch.float32, device=device)
    labels = make_labels(2, 64, 67, 50, device=device)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [pk.region_stats(emb, labels, 50, backend=backend) for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(prev)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))
    for a, b in zip(runs[0], _reference(emb, labels, 50, -1)):
        assert_close(a, b, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
def test_gpu_64bit_index_backward(backend, device):
    """More than 2^32 elements in one image: the backward's 64-bit index path (float16, one
    dim, ~8.6 GB per map). Checked in closed form at the far end of the image."""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs a GPU with 40 GiB")
    H, W = 65536, 65540  # P = H * W > 2^32
    emb = torch.empty(1, 1, H, W, dtype=torch.float16, device=device).uniform_(-1, 1).requires_grad_(True)
    labels = torch.ones(1, H, W, dtype=torch.uint8, device=device)
    labels[0, :, : W // 2] = 0
    labels[0, -1, -7:] = 255  # ignored
    count, centroid, variance = pk.region_stats(emb, labels, 2, ignore_index=255, backend=backend)
    assert count[0].tolist() == [H * (W // 2), H * (W - W // 2) - 7]
    (g,) = torch.autograd.grad(variance.sum(), emb)
    tail = emb.detach()[0, 0, -1, -64:].double()
    want = 2 * (tail - centroid[0, 1, 0].double()) / count[0, 1].double()
    want[-7:] = 0
    assert_close(g[0, 0, -1, -64:], want, torch.float16)


@pytest.mark.parametrize(
    "path,R,layout",
    [("select", 2, "contiguous"), ("runs", 40, "contiguous"), ("pixel_major", 40, "contiguous"),
     ("dim_inner", 40, "channels_last")],
)  # fmt: skip
def test_cpu_float32_centroids_of_large_regions_round_once(path, R, layout):
    """Regions of 100k-4M float32 pixels at a mean of 3 (one 2048 x 2048 image; D = 1 for the
    select path, whose chunks then hold 128k pixels, 8k a float lane and bin; else D = 2): the CPU
    centroids are within 2 ulps of the float64 mean on every sum path (the few-bin select, the
    runs of blob labels, the pixel-major copy of noisy labels, channels_last's dim-inner loop).
    No float accumulator adds more than 512 pixels (csrc/cpu/region_stats_kernels.h kSumBlock);
    summed in float per chunk, they were up to 1.3e-5 off (50 ulps; channels_last, 40 stripes),
    which centroid_hinge's gradient carried past SPEC §4 at pixels whose distance is near delta
    (GPU_SHAPES' wide_image on the CPU backend)."""
    g = torch.Generator().manual_seed(3)
    H = W = 2048
    x = 3 + torch.randn(1, 1 if path == "select" else 2, H, W, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if path in ("select", "pixel_major"):
        labels = torch.randint(0, R, (1, H, W), generator=g)
    else:  # 40 horizontal stripes: long runs of one label
        labels = (torch.arange(H) * R // H)[:, None].expand(H, W)[None].contiguous()
    _, centroid, _ = pk.region_stats(x, labels, R, backend="cpu")
    want = torch.stack([x[0].double().permute(1, 2, 0)[labels[0] == r].mean(0) for r in range(R)])
    ulp = torch.finfo(torch.float32).eps * 2  # one ulp in [2, 4)
    assert (centroid[0].double() - want).abs().max() <= 2 * ulp

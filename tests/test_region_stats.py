"""region_stats: every backend against the reference (values, gradients), opcheck,
torch.compile, determinism, NaN policy and every error path."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, COMPILED_BACKENDS, assert_close, dtypes_for, make_emb, make_labels

import pixelkernels as pk
from pixelkernels.reference.region_stats import region_stats as reference_region_stats

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
    "d17_r6": (2, 17, 9, 13, 6, "contiguous", "random", -1),
    "r1_odd": (2, 1, 1, 16, 1, "contiguous", "random", -1),
    "r1_d5": (3, 5, 7, 9, 1, "slice", "random", -1),
    "d24_r5_slice": (3, 24, 7, 11, 5, "slice", "random", -1),
    "long_image": (1, 2, 3, 3001, 3, "contiguous", "random", -1),
}
CPU_ONLY_CASES = {"r1024": (1, 3, 40, 41, 1024, "contiguous", "random", -1)}


def _inputs(case, dtype, device):
    B, D, H, W, R, layout, pattern, ignore = case
    emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
    labels = make_labels(B, H, W, R, device=device, pattern=pattern, ignore_index=ignore)
    return emb, labels, R, ignore


def _reference(emb, labels, R, ignore):
    """The oracle in float64 on the CPU, whatever the input dtype."""
    out = reference_region_stats(emb.detach().double().cpu(), labels.cpu(), R, ignore_index=ignore)
    return [t.to(emb.device) for t in out]


def _cases_for(backend):
    cases = dict(CASES)
    if backend in ("reference", "cpu", "cuda"):
        cases.update(CPU_ONLY_CASES)
    return cases


@pytest.mark.parametrize("case_id", list(CASES) + list(CPU_ONLY_CASES))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_forward_matches_reference(backend, device, case_id):
    cases = _cases_for(backend)
    if case_id not in cases:
        pytest.skip("too slow for the Triton interpreter")
    for dtype in dtypes_for(backend):
        emb, labels, R, ignore = _inputs(cases[case_id], dtype, device)
        count, centroid, variance = pk.region_stats(emb, labels, R, ignore_index=ignore, backend=backend)
        want = _reference(emb, labels, R, ignore)
        stats = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        for got, name in zip((count, centroid, variance), ("count", "centroid", "variance")):
            assert got.dtype == stats, name
            assert got.is_contiguous(), name
        B, D = emb.shape[:2]
        assert count.shape == (B, R) and centroid.shape == (B, R, D) and variance.shape == (B, R)
        tol_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else stats
        for got, ref, name in zip((count, centroid, variance), want, ("count", "centroid", "variance")):
            assert_close(got, ref, tol_dtype, msg=f"{name} {dtype}")
        assert (variance >= 0).all()


@pytest.mark.parametrize(
    "case_id",
    [
        "odd",
        "d17_channels_last",
        "d130_slice",
        "empty_regions",
        "ignore_inside_range",
        "w1_transposed",
        "many_regions",
        "all_ignored",
        "d17_r6",
        "d24_r5_slice",
        "r1_odd",
        "r1_d5",
        "r9_blobs",
        "long_image",
    ],
)
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
        _, cr, vr = reference_region_stats(xr, labels.cpu(), R, ignore_index=ignore)
        (want,) = torch.autograd.grad((cr * gc).sum() + (vr * gv).sum(), xr)

        assert got.dtype == emb.dtype and got.shape == emb.shape
        if emb.is_contiguous(memory_format=torch.channels_last) and not emb.is_contiguous():
            assert got.is_contiguous(memory_format=torch.channels_last)
        assert_close(got.cpu(), want, dtype if dtype != torch.float32 else torch.float32)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradient_of_one_output_only(backend, device):
    """A loss on the variance alone (grad_centroid arrives as None) and on the centroid alone."""
    emb, labels, R, ignore = _inputs(CASES["odd"], torch.float64, device)
    for pick in (1, 2):
        x = emb.detach().requires_grad_(True)
        (got,) = torch.autograd.grad(pk.region_stats(x, labels, R, backend=backend)[pick].sum(), x)
        xr = emb.detach().cpu().requires_grad_(True)
        (want,) = torch.autograd.grad(reference_region_stats(xr, labels.cpu(), R)[pick].sum(), xr)
        assert_close(got.cpu(), want, torch.float64)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_gradcheck(backend, device):
    if backend == "cuda":
        pytest.skip("gradcheck runs on the reference and the cpu backend (SPEC §4); cuda is compared to them")
    emb = make_emb(2, 3, 3, 4, dtype=torch.float64, device=device).requires_grad_(True)
    labels = make_labels(2, 3, 4, 3, device=device)

    def f(x):
        _, c, v = pk.region_stats(x, labels, 3, backend=backend)
        return c, v

    assert torch.autograd.gradcheck(f, (emb,), eps=1e-6, atol=1e-7)
    # create_graph=True: the backward is differentiable again.
    assert torch.autograd.gradgradcheck(f, (emb,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_opcheck(backend, device):
    op = torch.ops.pixelkernels.region_stats.default
    bwd = torch.ops.pixelkernels.region_stats_backward.default
    if backend == "triton":
        from pixelkernels.triton import region_stats as tr

        op, bwd = tr.region_stats_op, tr.region_stats_backward_op
    for layout, rg in (("contiguous", False), ("channels_last", True), ("slice", True)):
        emb = make_emb(2, 5, 4, 3, dtype=torch.float64, device=device, layout=layout).requires_grad_(rg)
        labels = make_labels(2, 4, 3, 3, device=device)
        torch.library.opcheck(op, (emb, labels, 3, -1))
        count, centroid, variance = op(emb.detach(), labels, 3, -1)
        gc, gv = torch.randn_like(centroid), torch.randn_like(variance)
        torch.library.opcheck(bwd, (gc, gv, emb.detach(), labels, count, centroid, -1))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_torch_compile_fullgraph(backend, device):
    emb = make_emb(2, 3, 5, 6, dtype=torch.float32, device=device).requires_grad_(True)
    labels = make_labels(2, 5, 6, 3, device=device)

    def loss(x):
        _, c, v = pk.region_stats(x, labels, 3, backend=backend)
        return c.square().sum() + v.sum()

    torch._dynamo.reset()
    with pk.use_backend(backend):
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        got = compiled(emb)
        (g,) = torch.autograd.grad(got, emb)
    want = loss(emb)
    (gw,) = torch.autograd.grad(want, emb)
    assert_close(got, want, torch.float32)
    assert_close(g, gw, torch.float32)


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_deterministic_bitwise(backend, device):
    """Same bits on every run with deterministic algorithms on (no float atomics)."""
    emb, labels, R, ignore = _inputs(CASES["many_regions"], torch.float32, device)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [pk.region_stats(emb, labels, R, backend=backend) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_stays_in_its_region(backend, device):
    emb = make_emb(1, 3, 4, 5, dtype=torch.float32, device=device)
    labels = torch.zeros(1, 4, 5, dtype=torch.long)
    labels[0, 2:] = 1
    labels[0, 0, 0] = -1
    emb[0, 1, 0, 1] = float("nan")  # region 0
    emb[0, 2, 0, 0] = float("inf")  # ignored pixel: must not show anywhere
    count, centroid, variance = pk.region_stats(emb, labels.to(device), 2, backend=backend)
    assert torch.isnan(centroid[0, 0, 1]) and torch.isnan(variance[0, 0])
    assert torch.isfinite(centroid[0, 1]).all() and torch.isfinite(variance[0, 1])
    assert torch.isfinite(centroid[0, 0, [0, 2]]).all()
    x = emb.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(pk.region_stats(x, labels.to(device), 2, backend=backend)[1][0, 1].sum(), x)
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
    want = _reference(emb, cleaned, 3, -1)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_integer_label_dtypes(backend, device):
    emb = make_emb(2, 3, 6, 7, dtype=torch.float64, device=device)
    labels = make_labels(2, 6, 7, 3, device=device, pattern="gaps")
    want = _reference(emb, labels, 3, -1)
    for dt in (torch.int32, torch.uint8, torch.int16):
        got = pk.region_stats(emb, labels.to(dt), 3, backend=backend)
        for a, b in zip(got, want):
            assert_close(a, b, torch.float64)


def test_numerically_stable_large_offset():
    """Mean 1e3, spread 1 in float32: E[x^2]-E[x]^2 would be off by ~1e-1 relative
    (ulp(1e6) = 0.06); the chunked two-pass/Chan scheme stays at float32 rounding."""
    g = torch.Generator().manual_seed(0)
    x64 = 1e3 + torch.randn(2, 4, 64, 64, generator=g, dtype=torch.float64)
    emb = x64.float()
    labels = make_labels(2, 64, 64, 2, device="cpu")
    want = reference_region_stats(emb.double(), labels, 2)
    for backend in ("reference", "cpu") + (("triton",) if "triton" in pk.available_backends() else ()):
        if backend not in pk.available_backends():
            continue
        _, _, var = pk.region_stats(emb, labels, 2, backend=backend)
        torch.testing.assert_close(var, want[2].float(), rtol=1e-4, atol=0)


def _bad(**kw):
    emb = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 2, (2, 4, 5))
    args = {"emb": emb, "labels": labels, "num_regions": 2}
    args.update(kw)
    return args


# id: (arguments, exception, message fragment)
BAD_INPUTS = {
    "emb_not_tensor": (_bad(emb=[1.0]), TypeError, "emb must be a torch.Tensor"),
    "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
    "emb_int": (_bad(emb=torch.zeros(2, 3, 4, 5, dtype=torch.int32)), TypeError, "emb must have dtype"),
    "labels_rank": (_bad(labels=torch.zeros(2, 20, dtype=torch.long)), ValueError, "labels must have 3 dims"),
    "labels_float": (_bad(labels=torch.zeros(2, 4, 5)), TypeError, "labels must have dtype"),
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
    "label_too_big": (_bad(labels=torch.full((2, 4, 5), 2)), ValueError, "labels values must be in [0, 2)"),
    "label_negative": (_bad(labels=torch.full((2, 4, 5), -2)), ValueError, "found -2"),
    "device_mismatch": (
        _bad(labels=torch.zeros(2, 4, 5, dtype=torch.long, device="meta")),
        ValueError,
        "labels must be on the same device as emb",
    ),
    "ignore_index_float": (_bad(ignore_index=0.5), TypeError, "ignore_index must be an int"),
    "unknown_backend": (_bad(backend="tpu"), ValueError, "backend must be one of"),
}


@pytest.mark.parametrize("case_id", list(BAD_INPUTS))
def test_bad_input(case_id):
    args, exc, fragment = BAD_INPUTS[case_id]
    args = dict(args)
    emb, labels, R = args.pop("emb"), args.pop("labels"), args.pop("num_regions")
    with pytest.raises(exc) as info:
        pk.region_stats(emb, labels, R, **args)
    assert fragment in str(info.value)


def test_half_on_cpu_backend_is_refused():
    if "cpu" not in pk.available_backends():
        pytest.skip("cpu backend not built")
    with pytest.raises(TypeError, match="not by cpu"):
        pk.region_stats(
            torch.randn(1, 2, 3, 3, dtype=torch.float16),
            torch.zeros(1, 3, 3, dtype=torch.long),
            1,
            backend="cpu",
        )


def test_unavailable_backend_says_why():
    with pytest.raises(RuntimeError, match="cuda backend needs CUDA tensors"):
        pk.region_stats(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), 1, backend="cuda")


def test_cpp_op_rejects_bad_shapes_without_crashing():
    if "cpu" not in pk.available_backends():
        pytest.skip("cpu backend not built")
    with pytest.raises(RuntimeError, match="does not match"):
        torch.ops.pixelkernels.region_stats(
            torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long), 2, -1
        )
    with pytest.raises(RuntimeError, match=r"num_regions must be in \[1, 2\^31\)"):
        torch.ops.pixelkernels.region_stats(
            torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), 0, -1
        )
    with pytest.raises(RuntimeError, match="labels must have an integer dtype"):
        torch.ops.pixelkernels.region_stats(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3), 2, -1)
    with pytest.raises(RuntimeError, match="inconsistent shapes"):
        torch.ops.pixelkernels.region_stats_backward(
            torch.zeros(1, 2, 5),
            torch.zeros(1, 2),
            torch.randn(1, 2, 3, 3),
            torch.zeros(1, 3, 3, dtype=torch.long),
            torch.ones(1, 2),
            torch.zeros(1, 2, 2),
            -1,
        )


@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "hw_transposed"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_zero_sizes(backend, device, shape, transposed):
    B, D, H, W = shape
    emb = (
        torch.randn(B, D, W, H, device=device).transpose(2, 3)
        if transposed
        else torch.randn(shape, device=device)
    )
    labels = torch.zeros(B, H, W, dtype=torch.long, device=device)
    count, centroid, variance = pk.region_stats(emb, labels, 2, backend=backend)
    assert count.shape == (B, 2) and centroid.shape == (B, 2, D) and variance.shape == (B, 2)
    assert (centroid == 0).all() and (variance == 0).all()
    assert (count == H * W * torch.tensor([1.0, 0.0], device=device)).all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_label_check_in_int64(dtype):
    """Bounds beyond the label dtype's range must not wrap: uint8 labels with R = 256 are valid."""
    hi = {torch.uint8: 255, torch.int8: 127, torch.int16: 30000}[dtype]
    labels = torch.full((1, 2, 3), hi, dtype=dtype)
    pk.region_stats(torch.randn(1, 2, 2, 3), labels, hi + 1, backend="reference")
    with pytest.raises(ValueError, match="labels values must be in"):
        pk.region_stats(torch.randn(1, 2, 2, 3), labels, hi, ignore_index=-1, backend="reference")


def test_meta_tensors_skip_the_value_check():
    if "cpu" not in pk.available_backends():
        pytest.skip("cpu backend not built")
    emb = torch.empty(2, 3, 4, 5, device="meta")
    labels = torch.empty(2, 4, 5, dtype=torch.long, device="meta")
    count, centroid, variance = pk.region_stats(emb, labels, 3, backend="cpu")
    assert count.shape == (2, 3) and centroid.shape == (2, 3, 3) and count.device.type == "meta"


def test_auto_uses_reference_for_half_on_cpu():
    emb = torch.randn(1, 2, 3, 3, dtype=torch.bfloat16)
    count, centroid, _ = pk.region_stats(emb, torch.zeros(1, 3, 3, dtype=torch.long), 1)
    assert centroid.dtype == torch.float32 and count[0, 0] == 9

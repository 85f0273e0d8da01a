"""click_maps' oracle (pixelkernels/reference/click_maps.py): against a per-click loop in plain
Python arithmetic on small maps, and against the DistMaps encoding of f-BRS/RITM (written here
from its published formula: per click ((i - y·s)/(r·s))² + ((j - x·s)/(r·s))² in float32, 1e6
for padding rows, the minimum over the channel's clicks, then disks or tanh(2·sqrt)), for float
clicks, padding rows, N = 0 and channels with no valid click.

The op pk.click_maps: every backend (and the CUDA kernel, emulated) against the oracle in
every mode, on awkward sizes (1 x N, N x 1, odd, more clicks than a shared-memory tile, N = 0,
NaN coordinates), float32 and float64 points; opcheck, torch.compile, zero sizes, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import BACKENDS, compile_on_fake_cuda
from fuzz import Choice, Clicks
from contract import FuzzRow, fuzz_suite

import pixelkernels as pk
from pixelkernels import baselines
from pixelkernels.reference.click_maps import MODES, click_maps


def _points(B, N, H, W, seed, pad_every=3):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, 2 * N, 3, generator=g, dtype=torch.float64)
    p[..., 0] *= H - 1
    p[..., 1] *= W - 1
    p[..., 2] = torch.arange(2 * N, dtype=torch.float64)
    if N:
        p[:, ::pad_every, :2] = -1  # padding rows
        p[0, N:, :2] = -1  # image 0: no negative click
    return p.float()


def _loop(points, H, W, mode, radius, s, max_distance):
    B, twoN, _ = points.shape
    N = twoN // 2
    out = torch.empty(B, 2, H, W, dtype=torch.float32)
    for b in range(B):
        for ch in range(2):
            clicks = [(float(y) * s, float(x) * s) for y, x, _ in points[b, ch * N : (ch + 1) * N].tolist()
                      if max(y, x) >= 0]  # fmt: skip
            for i in range(H):
                for j in range(W):
                    d2 = min(((i - y) ** 2 + (j - x) ** 2 for y, x in clicks), default=math.inf)
                    if mode == "distance":
                        v = min(math.sqrt(d2), max_distance)
                    elif mode == "disk":
                        v = float(d2 <= (radius * s) ** 2)
                    else:
                        v = math.tanh(2 * math.sqrt(d2 / (radius * s) ** 2))
                    out[b, ch, i, j] = v
    return out


def _dist_maps(points, H, W, radius, s, use_disks):
    """The DistMaps encoding (f-BRS/RITM), float32, from its formula."""
    B, twoN, _ = points.shape
    N = twoN // 2
    p = points.reshape(B * twoN, 3)[:, :2]
    invalid = p.amax(1) < 0
    ii, jj = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    c = torch.stack([ii, jj])[None] - (p * s)[:, :, None, None]
    if not use_disks:
        c = c / (radius * s)
    c = (c * c).sum(1)
    c[invalid] = 1e6
    c = c.reshape(B, 2, N, H, W).amin(2)
    return (c <= (radius * s) ** 2).float() if use_disks else torch.tanh(2 * c.sqrt())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("N", [0, 1, 4])
def test_equals_per_click_loop(mode, N):
    H, W = 7, 9
    pts = _points(2, N, H, W, seed=N)
    got = click_maps(pts, (H, W), mode, radius=2.5, spatial_scale=0.75, max_distance=4.0)
    want = _loop(pts, H, W, mode, 2.5, 0.75, 4.0)
    assert got.shape == (2, 2, H, W) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("use_disks", [False, True], ids=["tanh", "disk"])
def test_equals_dist_maps(use_disks):
    H, W = 33, 47
    pts = _points(3, 5, H, W, seed=7)
    got = click_maps(pts, (H, W), "disk" if use_disks else "tanh", radius=5.0, spatial_scale=1.0)
    want = _dist_maps(pts, H, W, 5.0, 1.0, use_disks)
    # DistMaps' float32 arithmetic against our float64: equal to float32 rounding (a disk's edge
    # could flip on a pixel exactly at the radius; the random float clicks put none there)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-7)


def test_no_click_values():
    pts = torch.full((1, 4, 3), -1.0)
    assert (click_maps(pts, (3, 4), "distance", max_distance=255.0) == 255.0).all()
    assert (click_maps(pts, (3, 4), "disk") == 0).all()
    assert (click_maps(pts, (3, 4), "tanh") == 1).all()


# ---------------------------------------------------------------------------------------------
# The op


# (B, N, H, W): odd sizes, a single row and column, N = 0, and more clicks per channel than the
# CUDA kernel's shared-memory tile (256), so its tile loop takes a second, partial tile; 84 x 100
# crosses the CPU kernel's row blocks (8192 pixels a task) and Triton's 1024-pixel programs.
SHAPES = [(2, 4, 17, 23), (1, 3, 1, 40), (3, 2, 29, 1), (2, 0, 5, 6), (1, 300, 9, 11), (7, 1, 3, 3), (1, 3, 84, 100)]
KW = dict(radius=2.5, spatial_scale=1.25, max_distance=6.0)


def _awkward_points(B, N, H, W, seed, dtype):
    p = _points(B, N, H, W, seed).double()
    p[..., :2] /= KW["spatial_scale"] * 0.9  # some clicks land outside the map once scaled
    if N:
        p[-1, 0, 0] = float("nan")  # a NaN coordinate: padding
        p[0, 1, :2] = torch.tensor([3.0, 2.0])  # an integer click: exact squared distances
    return p.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_backends_equal_the_reference(backend, device, mode, shape, dtype):
    if dtype == torch.float16 and backend == "cpu":
        pytest.skip("the CPU backend refuses half points")
    B, N, H, W = shape
    pts = _awkward_points(B, N, H, W, seed=sum(shape), dtype=dtype)
    got = pk.click_maps(pts.to(device), (H, W), mode=mode, backend=backend, **KW)
    want = click_maps(pts.double(), (H, W), mode, **KW)
    assert got.shape == (B, 2, H, W) and got.dtype == torch.float32 and got.device.type == device
    # float32 arithmetic in the kernels: SPEC §4's float32 tolerance on maps
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_emulated_cuda_kernel_equals_the_cpu_kernel(emu, mode, dtype):
    """The kernels read the points themselves (float32, float64; half ones widened first) and
    scale each click as they stage it."""
    for B, N, H, W in SHAPES:
        pts = _awkward_points(B, N, H, W, seed=B + N, dtype=dtype)
        args = (pts, H, W, mode, KW["radius"], KW["spatial_scale"], KW["max_distance"])
        torch.testing.assert_close(emu.click_maps(*args), torch.ops.pixelkernels.click_maps(*args), rtol=1e-6, atol=1e-6)


def test_emulated_cuda_kernel_more_images_than_the_grid(emu):
    """The emulation's lowered grid limits: the kernel's loops over images and pixel blocks."""
    pts = _awkward_points(9, 3, 37, 41, seed=5, dtype=torch.float32)
    args = (pts, 37, 41, "distance", 2.0, 1.0, 255.0)
    torch.testing.assert_close(emu.click_maps(*args), torch.ops.pixelkernels.click_maps(*args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_disk_edge_is_inclusive(backend, device):
    """Integer clicks: a pixel exactly at the radius is inside (d² <= r², exact in float32)."""
    pts = torch.tensor([[[4.0, 4.0, 0.0], [-1.0, -1.0, -1.0]]])
    got = pk.click_maps(pts.to(device), (9, 9), mode="disk", radius=3.0, backend=backend).cpu()
    assert got[0, 0, 4, 7] == 1 and got[0, 0, 4, 8] == 0 and got[0, 0, 1, 4] == 1
    assert got[0, 0].sum() == 29  # lattice points with y² + x² <= 9
    assert (got[0, 1] == 0).all()


# SPEC §3.4: a row is padding when max(y, x) < 0, so a click whose larger coordinate is exactly
# 0 (or -0.0) is a click on the map's border, and a click with one negative coordinate is a valid
# click off the map whose distances still count. (B, 2N, 3), N = 3.
BORDER_POINTS = [
    [[0.0, -2.0, 0], [-3.0, 5.0, 1], [-1, -1, -1],  # (0, -2): max exactly 0; (-3, 5): above the map
     [2.0, -7.0, 0], [-0.0, -0.5, 1], [-1, -1, -1]],  # (2, -7): left of it; max = -0.0: valid
    [[-0.5, 0.0, 0], [-1e-9, -1e-9, -1], [-0.25, -4.0, -1],  # (-0.5, 0) valid; two padding rows near (0, 0)
     [-1, -1, -1], [-1.5, 3.0, 0], [6.0, -2.5, 1]],  # above and left of the map, both valid
]  # fmt: skip
BORDER_SCALES = [0.5, 1.0, 1.75]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("s", BORDER_SCALES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_clicks_at_zero_and_negative_coordinates_are_not_padding(backend, device, mode, s, dtype):
    pts = torch.tensor(BORDER_POINTS, dtype=dtype)
    got = pk.click_maps(pts.to(device), (6, 7), mode=mode, radius=2.5, spatial_scale=s, max_distance=6.0,
                        backend=backend).cpu()  # fmt: skip
    want = _loop(pts.double(), 6, 7, mode, 2.5, s, 6.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("s", BORDER_SCALES)
@pytest.mark.parametrize("mode", MODES)
def test_emulated_clicks_at_zero_and_negative_coordinates_are_not_padding(emu, mode, s):
    pts = torch.tensor(BORDER_POINTS, dtype=torch.float32)
    got = emu.click_maps(pts, 6, 7, mode, 2.5, s, 6.0)
    torch.testing.assert_close(got, _loop(pts.double(), 6, 7, mode, 2.5, s, 6.0), rtol=1e-5, atol=1e-6)


# Valid clicks (max(y, x) >= 0) too far to reach any pixel: +-inf or beyond int64 once a kernel
# works out the columns a click can reach. Every pixel gets the mode's no-click value.
FAR_POINTS = [[[3.0, 1e30, 0], [3.0, float("inf"), 1], [float("-inf"), 2.0, 2], [1e20, -1.0, 3],
               [2.0, float("-inf"), 0], [-1e30, 4.0, 1], [1e19, 1e19, 2], [-1, -1, -1]]]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_far_valid_clicks_reach_no_pixel(backend, device, mode):
    pts = torch.tensor(FAR_POINTS)
    got = pk.click_maps(pts.to(device), (5, 6), mode=mode, max_distance=255.0, backend=backend).cpu()
    assert torch.equal(got, click_maps(torch.full((1, 2, 3), -1.0), (5, 6), mode, 5.0, 1.0, 255.0))


@pytest.mark.parametrize("mode", MODES)
def test_emulated_far_valid_clicks_reach_no_pixel(emu, mode):
    pts = torch.tensor(FAR_POINTS)
    got = emu.click_maps(pts, 5, 6, mode, 5.0, 1.0, 255.0)
    assert torch.equal(got, click_maps(torch.full((1, 2, 3), -1.0), (5, 6), mode, 5.0, 1.0, 255.0))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_points_requiring_grad_give_maps_without_grad(backend, device):
    """SPEC §3.4: click maps take no gradient. Points that require grad give the same maps, and an
    output that does not require grad on every backend: eagerly, through nn.ClickMaps, compiled
    (fullgraph, through AOT autograd) and on meta and fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    pts = _awkward_points(2, 3, 5, 7, seed=4, dtype=torch.float64).to(device).requires_grad_()
    for mode in MODES:
        out = pk.click_maps(pts, (5, 7), mode=mode, backend=backend, **KW)
        assert not out.requires_grad and out.grad_fn is None, mode
        torch.testing.assert_close(out.cpu(), click_maps(pts.detach().cpu(), (5, 7), mode, **KW), rtol=1e-5, atol=1e-6)
    with pk.use_backend(backend):
        out = pk.nn.ClickMaps(norm_radius=2.0)(torch.zeros(2, 3, 5, 7, device=device), pts)
    assert not out.requires_grad
    fn = torch.compile(lambda p: pk.click_maps(p, (5, 7), mode="disk", backend=backend), fullgraph=True,
                       backend="aot_eager")  # fmt: skip
    out = fn(pts)
    assert not out.requires_grad
    torch.testing.assert_close(out, pk.click_maps(pts.detach(), (5, 7), mode="disk", backend=backend))
    meta = torch.empty(3, 4, 3, device="meta", requires_grad=True)
    assert not pk.click_maps(meta, (5, 6), backend=backend).requires_grad
    with FakeTensorMode():
        fake = torch.empty(2, 6, 3, device=device, requires_grad=True)
        out = pk.click_maps(fake, (5, 6), mode="tanh", backend=backend)
        assert not out.requires_grad and out.shape == (2, 2, 5, 6)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a registered op")
    op = pk.ops.click_maps.OP
    func = op.triton if backend == "triton" else op.compiled
    pts = _awkward_points(2, 3, 5, 7, seed=1, dtype=torch.float32).to(device)
    torch.library.opcheck(func, (pts, 5, 7, "tanh", 2.0, 1.0, 255.0))


def test_compiles_fullgraph():
    pts = _awkward_points(2, 3, 5, 7, seed=2, dtype=torch.float32)
    fn = torch.compile(lambda p: pk.click_maps(p, (5, 7), mode="disk") * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(pts), pk.click_maps(pts, (5, 7), mode="disk") * 2)


def test_meta_tensors():
    out = pk.click_maps(torch.empty(3, 4, 3, device="meta"), (5, 6), mode="tanh")
    assert out.shape == (3, 2, 5, 6) and out.dtype == torch.float32 and out.device.type == "meta"


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_zero_sizes(backend, device):
    for B, N, H, W in [(0, 2, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)]:
        pts = torch.zeros(B, 2 * N, 3, device=device)
        got = pk.click_maps(pts, (H, W), mode="distance", backend=backend)
        assert got.shape == (B, 2, H, W)
        if got.numel():
            assert (got == 255.0).all()


def _pts(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(points=_pts(2, 4)), ValueError, "points must have 3 dims"),
        (dict(points=_pts(2, 3, 3)), ValueError, r"points must have shape \(B, 2N, 3\)"),
        (dict(points=_pts(2, 4, 2)), ValueError, r"points must have shape \(B, 2N, 3\)"),
        (dict(points=torch.zeros(2, 4, 3, dtype=torch.int64)), TypeError, "points must have dtype"),
        (dict(points=[[0.0, 0.0, 0.0]]), TypeError, "points must be a torch.Tensor"),
        (dict(size=(4,)), TypeError, "size must be a pair"),
        (dict(size=(4, -1)), ValueError, r"size\[1\] \(W\) must be in"),
        (dict(size=(4.0, 5)), TypeError, r"size\[0\] \(H\) must be an int"),
        (dict(size=(2**16, 2**16)), ValueError, "H \\* W < 2\\^31"),
        (dict(mode="gauss"), ValueError, "mode must be one of"),
        (dict(radius=-1.0), ValueError, "radius must be >= 0"),
        (dict(radius=0.0, mode="tanh"), ValueError, "radius must be > 0"),
        (dict(spatial_scale=0.0), ValueError, "spatial_scale must be > 0"),
        (dict(max_distance=-2.0), ValueError, "max_distance must be >= 0"),
        (dict(radius=float("nan")), ValueError, "radius must be finite"),
    ],
)
def test_bad_input(kwargs, exc, msg):
    args = {"points": _pts(2, 4, 3), "size": (4, 5), **kwargs}
    points, size = args.pop("points"), args.pop("size")
    with pytest.raises(exc, match=msg):
        pk.click_maps(points, size, **args)


def test_baseline_equals_the_reference():
    for mode in MODES:
        pts = _awkward_points(3, 5, 13, 17, seed=3, dtype=torch.float32)
        got = baselines.click_maps(pts, (13, 17), mode, **KW)
        torch.testing.assert_close(got, click_maps(pts.double(), (13, 17), mode, **KW), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_disks", [False, True], ids=["tanh", "disk"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_module_is_a_dist_maps_drop_in(backend, device, use_disks):
    H, W = 21, 30
    pts = _points(2, 3, H, W, seed=11)
    x = torch.zeros(2, 3, H, W, device=device)
    with pk.use_backend(backend):
        got = pk.nn.ClickMaps(norm_radius=4.0, spatial_scale=1.0, use_disks=use_disks)(x, pts.to(device))
    torch.testing.assert_close(got.cpu(), _dist_maps(pts, H, W, 4.0, 1.0, use_disks), rtol=2e-6, atol=2e-7)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """The CUDA dispatch path traced on fake CUDA tensors (no GPU)."""
    out = compile_on_fake_cuda(lambda p: pk.click_maps(p, (8, 9), mode="tanh", backend=backend),
                               lambda: (torch.rand(2, 6, 3).to("cuda"),))  # fmt: skip
    assert out.device.type == "cuda" and out.shape == (2, 2, 8, 9) and out.dtype == torch.float32


# --- the property-based tests (tests/fuzz.py): clicks on and off the map, on its edges, padding,
# zero sizes, requires_grad on the points (no backend differentiates them)

FUZZ = FuzzRow(
    op="click_maps",
    fuzz=lambda d: {"points": Clicks(), "size": (d["H"], d["W"]), "mode": Choice(MODES),
                     "radius": Choice((5.0, 1.5), extreme=(1e-3,)), "spatial_scale": Choice((1.0, 0.5), extreme=(3.0,)),
                     "max_distance": Choice((255.0, 2.0), extreme=(0.0,))},  # fmt: skip
    call=lambda inp, be: (pk.click_maps(inp["points"], inp["size"], mode=inp["mode"], radius=inp["radius"],
                                         spatial_scale=inp["spatial_scale"], max_distance=inp["max_distance"], backend=be),),  # fmt: skip
)
TestFuzz = fuzz_suite(FUZZ)

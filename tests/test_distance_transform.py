"""distance_transform's oracle (pixelkernels/reference/distance_transform.py) against
scipy.ndimage.distance_transform_edt: exactly equal (float32 of scipy's float64) on every mask of
the table, isotropic and anisotropic, squared or not, and indices that point at a target pixel
at exactly the returned distance.

The op pk.distance_transform: every backend (and the CUDA path, emulated) the same way on every
mask of the table, in a batch with an image without target; integer masks; opcheck,
torch.compile, zero sizes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BACKENDS, COMPILED_BACKENDS, GPU_BACKENDS, compile_on_fake_cuda
from fuzz import Choice, Mask
from contract import FuzzRow, fuzz_suite

import pixelkernels as pk
from pixelkernels.reference.distance_transform import distance_transform

try:  # the tests against scipy skip without it; the others (fake CUDA in the wheel's venv) run
    from scipy import ndimage
except ImportError:
    ndimage = None
needs_scipy = pytest.mark.skipif(ndimage is None, reason="scipy not installed")


def _blobs(h, w, seed, density=0.02, radius=6):
    """Random discs of ones (features) on zeros (targets)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    m = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(max(1, int(density * h * w / radius))):
        cy, cx = torch.randint(0, h, (1,), generator=g).item(), torch.randint(0, w, (1,), generator=g).item()
        r = torch.randint(1, radius + 1, (1,), generator=g).item()
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


def _few_targets(h, w, n, seed):
    m = torch.ones(h, w, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    m.view(-1)[torch.randperm(h * w, generator=g)[:n]] = False
    return m


def _line(h, w):
    m = torch.ones(h, w, dtype=torch.bool)
    m[:, w // 3] = False  # a thin vertical line of targets
    m[h // 2, :] = False  # and a horizontal one
    return m


MASKS = {
    "blobs": lambda: _blobs(37, 53, 0),
    "dense_blobs": lambda: ~_blobs(41, 29, 1, density=0.2),
    "single_feature_pixel": lambda: torch.zeros(9, 11, dtype=torch.bool).index_put_((torch.tensor([4]), torch.tensor([5])), torch.tensor(True)),
    "one_target_pixel": lambda: _few_targets(23, 31, 1, 2),
    "few_targets": lambda: _few_targets(64, 48, 5, 3),
    "all_targets": lambda: torch.zeros(7, 5, dtype=torch.bool),
    "thin_lines": lambda: _line(30, 44),
    "row_1xN": lambda: _few_targets(1, 57, 3, 4),
    "col_Nx1": lambda: _few_targets(61, 1, 2, 5),
    "tall_1000x3": lambda: _few_targets(1000, 3, 4, 6),
    "single_pixel_target": lambda: torch.zeros(1, 1, dtype=torch.bool),
}
SAMPLINGS = {"iso": None, "aniso": (1.7, 0.4), "aniso_int": (2.0, 3.0)}


def _scipy(mask: torch.Tensor, sampling):
    d, idx = ndimage.distance_transform_edt(mask.numpy(), sampling=sampling, return_indices=True)
    return d, idx


@needs_scipy
@pytest.mark.parametrize("sampling", list(SAMPLINGS), ids=list(SAMPLINGS))
@pytest.mark.parametrize("case", list(MASKS), ids=list(MASKS))
def test_equals_scipy(case, sampling):
    m = MASKS[case]()
    s = SAMPLINGS[sampling]
    want, _ = _scipy(m, s)
    mask = torch.stack([m, m.flip(0)])  # batch of 2: the images are independent
    dist, idx = distance_transform(mask, s, return_indices=True)
    assert dist.dtype == torch.float32 and idx.shape == (2, 2) + m.shape
    assert np.array_equal(dist[0].numpy(), want.astype(np.float32))
    assert np.array_equal(dist[1].numpy(), np.flip(want, 0).astype(np.float32))
    sq = distance_transform(mask[:1], s, squared=True)
    want_sq = ndimage.distance_transform_edt(m.numpy(), sampling=s) ** 2
    np.testing.assert_allclose(sq[0].numpy(), want_sq.astype(np.float32), rtol=1e-6)
    if s is None:  # integers: exact
        assert np.array_equal(sq[0].numpy(), np.rint(want_sq).astype(np.float32))
    # every index points at a target at exactly the (exact, float64) distance
    sy, sx = (1.0, 1.0) if s is None else s
    for b in range(2):
        iy, ix = idx[b, 0], idx[b, 1]
        assert not mask[b][iy, ix].any()
        yy, xx = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
        d = torch.sqrt((sy * (yy - iy).double()) ** 2 + (sx * (xx - ix).double()) ** 2).to(torch.float32)
        if s is None:
            assert torch.equal(d, dist[b])
        else:  # (s·dy)² here, s²·dy² there: the float64 sums may differ in the last bit
            torch.testing.assert_close(d, dist[b], rtol=1.2e-7, atol=0)


def test_no_target_is_inf():
    mask = torch.ones(2, 5, 6, dtype=torch.uint8)
    mask[1, 2, 3] = 0
    dist, idx = distance_transform(mask, return_indices=True)
    assert torch.isinf(dist[0]).all() and (idx[0] == -1).all()
    assert torch.isfinite(dist[1]).all() and (idx[1, :, 2, 3] == torch.tensor([2, 3])).all()


def test_empty_shapes():
    for shape in [(0, 4, 5), (2, 0, 5), (2, 4, 0)]:
        dist, idx = distance_transform(torch.ones(shape, dtype=torch.bool), return_indices=True)
        assert dist.shape == shape and idx.shape == (shape[0], 2) + shape[1:]


# ---------------------------------------------------------------------------------------------
# The op


def _check_indices(mask, dist, idx, sampling):
    """Every index is a target at exactly the returned distance (float64, rounded once)."""
    sy, sx = (1.0, 1.0) if sampling is None else sampling
    H, W = mask.shape[1:]
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    for b in range(mask.shape[0]):
        if not (mask[b] == 0).any():
            assert torch.isinf(dist[b]).all() and (idx[b] == -1).all()
            continue
        iy, ix = idx[b, 0], idx[b, 1]
        assert (mask[b][iy, ix] == 0).all()
        d2 = (yy - iy).double() ** 2 * sy**2 + (xx - ix).double() ** 2 * sx**2
        torch.testing.assert_close(d2.sqrt().float(), dist[b], rtol=1.2e-7, atol=0)


@needs_scipy
@pytest.mark.parametrize("sampling", list(SAMPLINGS), ids=list(SAMPLINGS))
@pytest.mark.parametrize("case", list(MASKS), ids=list(MASKS))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_equals_scipy(backend, device, case, sampling):
    m = MASKS[case]()
    s = SAMPLINGS[sampling]
    want, _ = _scipy(m, s)
    mask = torch.stack([m, m.flip(1), torch.ones_like(m)])  # the last image has no target
    dist, idx = pk.distance_transform(mask.to(device), sampling=s, return_indices=True, backend=backend)
    dist, idx = dist.cpu(), idx.cpu()
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64 and idx.shape == (3, 2) + m.shape
    assert np.array_equal(dist[0].numpy(), want.astype(np.float32))
    assert np.array_equal(dist[1].numpy(), np.flip(want, 1).astype(np.float32))
    _check_indices(mask, dist, idx, s)
    sq = pk.distance_transform(mask.to(device), sampling=s, squared=True, backend=backend).cpu()
    assert torch.equal(sq, distance_transform(mask, s, squared=True))


# One axis spaced and the other 1 (a kernel that tests one factor for the exact path, or applies a
# spacing to the other axis, is wrong only here), below and above 1, and very anisotropic.
ONE_AXIS = {"1_0.3": (1.0, 0.3), "0.3_1": (0.3, 1.0), "1_2.5": (1.0, 2.5), "2.5_1": (2.5, 1.0),
            "1_100": (1.0, 100.0), "0.01_1": (0.01, 1.0), "1e3_0.02": (1e3, 0.02)}  # fmt: skip
ONE_AXIS_MASKS = {
    "blobs_13x17": lambda: _blobs(13, 17, 30, density=0.1, radius=3),
    "few_16x11": lambda: _few_targets(16, 11, 3, 31),
    "row_1x19": lambda: _few_targets(1, 19, 2, 32),
    "col_21x1": lambda: _few_targets(21, 1, 2, 33),
    "target_1x1": lambda: torch.zeros(1, 1, dtype=torch.bool),
}


def _brute_squared(m: torch.Tensor, sampling) -> np.ndarray:
    """(H, W) -> float64 d² by brute force over every target, in the kernels' order
    (dy²·sy² + dx²·sx², each product rounded): what they take the minimum of."""
    H, W = m.shape
    sy2, sx2 = sampling[0] ** 2, sampling[1] ** 2
    yy, xx = np.mgrid[:H, :W]
    ty, tx = np.nonzero(~m.numpy())
    dy2 = ((yy.reshape(-1, 1) - ty) ** 2).astype(np.float64) * sy2
    dx2 = ((xx.reshape(-1, 1) - tx) ** 2).astype(np.float64) * sx2
    return (dy2 + dx2).min(1).reshape(H, W)


def _check_one_axis(mask, dist, idx, sq, s):
    """dist equals scipy (cast to float32) and the brute-force minimum; sq the brute-force d²;
    every index a target at the returned distance."""
    for b in range(mask.shape[0]):
        want, _ = _scipy(mask[b], s)
        d2 = _brute_squared(mask[b], s)
        assert np.array_equal(dist[b].numpy(), want.astype(np.float32)), b
        assert np.array_equal(dist[b].numpy(), np.sqrt(d2).astype(np.float32)), b
        assert np.array_equal(sq[b].numpy(), d2.astype(np.float32)), b
    _check_indices(mask, dist, idx, s)


@needs_scipy
@pytest.mark.parametrize("sampling", list(ONE_AXIS), ids=list(ONE_AXIS))
@pytest.mark.parametrize("case", list(ONE_AXIS_MASKS), ids=list(ONE_AXIS_MASKS))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_one_axis_spacing_equals_scipy(backend, device, case, sampling):
    m = ONE_AXIS_MASKS[case]()
    s = ONE_AXIS[sampling]
    mask = torch.stack([m, m.flip(0).flip(1)])
    dist, idx = pk.distance_transform(mask.to(device), sampling=s, return_indices=True, backend=backend)
    sq = pk.distance_transform(mask.to(device), sampling=s, squared=True, backend=backend)
    _check_one_axis(mask, dist.cpu(), idx.cpu(), sq.cpu(), s)


@needs_scipy
@pytest.mark.parametrize("sampling", list(ONE_AXIS), ids=list(ONE_AXIS))
@pytest.mark.parametrize("case", list(ONE_AXIS_MASKS), ids=list(ONE_AXIS_MASKS))
def test_emulated_one_axis_spacing_equals_scipy(emu, case, sampling):
    m = ONE_AXIS_MASKS[case]()
    s = ONE_AXIS[sampling]
    mask = torch.stack([m, m.flip(0).flip(1)])
    dist, idx = emu.distance_transform(mask, *s, False, True)
    sq, _ = emu.distance_transform(mask, *s, True, False)
    _check_one_axis(mask, dist, idx, sq, s)


@needs_scipy
@pytest.mark.parametrize("sampling", [None, (1.0, 0.3), (2.5, 1.0)], ids=["iso", "1_0.3", "2.5_1"])
def test_cpu_fewer_images_than_threads(sampling):
    """Two and three images on four threads: the two-phase path (column strips, then row blocks)
    with every image's own workspace."""
    s = (1.0, 1.0) if sampling is None else sampling
    ms = [_blobs(40, 30, 40 + i, density=0.05, radius=4) for i in range(3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        for n in (2, 3):
            mask = torch.stack(ms[:n])
            dist, idx = pk.distance_transform(mask, sampling=sampling, return_indices=True, backend="cpu")
            sq = pk.distance_transform(mask, sampling=sampling, squared=True, backend="cpu")
            _check_one_axis(mask, dist, idx, sq, s)
    finally:
        torch.set_num_threads(threads)


@needs_scipy
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_integer_masks(backend, device, dtype):
    m = _blobs(19, 27, 3).to(dtype) * 3  # nonzero values other than 1
    got = pk.distance_transform(m[None].to(device), backend=backend).cpu()
    assert np.array_equal(got[0].numpy(), _scipy(m != 0, None)[0].astype(np.float32))


def _far_corner(h, w):
    m = torch.ones(h, w, dtype=torch.bool)
    m[0, 0] = False
    return m


# Shapes that take the CPU kernel's other paths: several column strips (256 columns a task) and
# row blocks (16 rows) when there are fewer images than threads; d² >= 2^24 (distances of 4096 px
# and more, rounded through double); W > 2^16 (128-bit cross products, integer crossings); long
# gaps between a row's targets and rows without any.
CPU_PATHS = {
    "strips_700": lambda: _blobs(40, 700, 7),
    "few_300x520": lambda: _few_targets(300, 520, 6, 8),
    "far_5000x3": lambda: _few_targets(5000, 3, 2, 9),
    "far_corner": lambda: _far_corner(4500, 9),
    "wide_1x70000": lambda: _few_targets(1, 70000, 3, 10),
    "wide_3x70000": lambda: _few_targets(3, 70000, 2, 11),
}


@needs_scipy
@pytest.mark.parametrize("images", [1, 2], ids=["two_phase", "per_image"])
@pytest.mark.parametrize("case", list(CPU_PATHS), ids=list(CPU_PATHS))
def test_cpu_paths(case, images):
    """With 2 threads, one image takes the two-phase path (column strips, then row blocks), two
    images one task each; both equal scipy (cast to float32), squared too."""
    m = CPU_PATHS[case]()
    want = ndimage.distance_transform_edt(m.numpy())
    mask = torch.stack([m, m.flip(1)][:images])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dist, idx = pk.distance_transform(mask, return_indices=True, backend="cpu")
        sq = pk.distance_transform(mask, squared=True, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(dist[0].numpy(), want.astype(np.float32))
    assert np.array_equal(sq[0].numpy(), (want.astype(np.float64) ** 2).round().astype(np.float32))
    if images == 2:
        assert np.array_equal(dist[1].numpy(), np.flip(want, 1).astype(np.float32))
    _check_indices(mask, dist, idx, None)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_non_contiguous(backend, device):
    m = torch.stack([_blobs(23, 19, 12), _few_targets(23, 19, 2, 13)]).to(torch.int8)
    view = m.transpose(1, 2).contiguous().transpose(1, 2)[:, 1:, ::2]  # strided in both dims
    got = pk.distance_transform(view.to(device), return_indices=True, backend=backend)
    want = distance_transform(view.contiguous(), None, True)
    assert torch.equal(got[0].cpu(), want[0])
    _check_indices(view, got[0].cpu(), got[1].cpu(), None)


@pytest.mark.parametrize("sampling", list(SAMPLINGS), ids=list(SAMPLINGS))
@pytest.mark.parametrize("case", list(MASKS), ids=list(MASKS))
def test_emulated_cuda_path(emu, case, sampling):
    """The CUDA kernels (emulated) on every mask of the table, next to an image without target."""
    s = SAMPLINGS[sampling]
    sy, sx = (1.0, 1.0) if s is None else s
    m = MASKS[case]()
    mask = torch.stack([m, m.flip(1), torch.ones_like(m)])
    for squared in (False, True):
        dist, idx = emu.distance_transform(mask, sy, sx, squared, True)
        assert torch.equal(dist, distance_transform(mask, s, squared=squared)), (case, squared)
        if not squared:
            _check_indices(mask, dist, idx, s)


# The GPU kernels' own boundaries. CUDA: columns_kernel's 32-column tiles (more than the
# emulator's 3 blocks of them: the grid-stride loop) and 8 bands (H not a multiple of 8, H < 8,
# targets only in some bands), compact_kernel's 32-column steps and 8 images a block,
# rows_kernel's grid-stride loops over pixels and images (B > 3), the 64-bit arithmetic of
# H or W >= 32768 (emulated only). Triton: 32 x 16 column tiles, 1024-column compaction chunks,
# 128 pixels a program.
KERNEL_SHAPES = {
    "tiles_130x7": lambda: torch.stack([_blobs(7, 130, i, density=0.05, radius=3) for i in range(10)]),
    "bands_37x40": lambda: torch.stack([_few_targets(37, 40, n, i) for i, n in enumerate((1, 2, 3, 5, 40))]),
    "short_5x70": lambda: torch.stack([_few_targets(5, 70, 2, 14), _blobs(5, 70, 15)]),
    "chunks_3x1100": lambda: torch.stack([_few_targets(3, 1100, 2, 17), _blobs(3, 1100, 18, density=0.1, radius=2)]),
}
EMU_SHAPES = {**KERNEL_SHAPES, "wide_1x33000": lambda: _few_targets(1, 33000, 3, 16)[None]}


@pytest.mark.parametrize("case", list(EMU_SHAPES), ids=list(EMU_SHAPES))
def test_emulated_cuda_shapes(emu, case):
    mask = EMU_SHAPES[case]()
    dist, idx = emu.distance_transform(mask, 1.0, 1.0, False, True)
    want = torch.ops.pixelkernels.distance_transform(mask, 1.0, 1.0, False, False)[0]  # the CPU kernel
    assert torch.equal(dist, want)
    _check_indices(mask, dist, idx, None)


@needs_scipy
@pytest.mark.parametrize("case", list(KERNEL_SHAPES), ids=list(KERNEL_SHAPES))
@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_kernel_shapes(backend, device, case):
    mask = KERNEL_SHAPES[case]()
    dist, idx = pk.distance_transform(mask.to(device), return_indices=True, backend=backend)
    dist, idx = dist.cpu(), idx.cpu()
    for b in range(mask.shape[0]):
        assert np.array_equal(dist[b].numpy(), ndimage.distance_transform_edt(mask[b].numpy()).astype(np.float32))
    _check_indices(mask, dist, idx, None)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a registered op")
    op = pk.ops.distance_transform.OP
    func = op.triton if backend == "triton" else op.compiled
    m = _blobs(9, 11, 4)[None].expand(2, 9, 11).contiguous().to(device)
    for args in ((m, 1.0, 1.0, False, True), (m, 1.5, 0.5, True, False)):
        torch.library.opcheck(func, args)


def test_compiles_fullgraph():
    m = _blobs(9, 11, 5)[None]
    fn = torch.compile(lambda x: pk.distance_transform(x, return_indices=True), fullgraph=True, backend="eager")
    got, want = fn(m), pk.distance_transform(m, return_indices=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_meta_tensors():
    d, i = pk.distance_transform(torch.empty(3, 5, 6, dtype=torch.bool, device="meta"), return_indices=True)
    assert d.shape == (3, 5, 6) and d.dtype == torch.float32 and i.shape == (3, 2, 5, 6) and i.dtype == torch.int64


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_op_zero_sizes(backend, device):
    for shape in [(0, 4, 5), (2, 0, 5), (2, 4, 0)]:
        d, i = pk.distance_transform(torch.zeros(shape, dtype=torch.bool, device=device), return_indices=True,
                                     backend=backend)  # fmt: skip
        assert d.shape == shape and i.shape == (shape[0], 2) + shape[1:]


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(mask=torch.zeros(4, 5, dtype=torch.bool)), ValueError, "mask must have 3 dims"),
        (dict(mask=torch.zeros(2, 4, 5)), TypeError, "mask must have dtype"),
        (dict(mask=[[0, 1]]), TypeError, "mask must be a torch.Tensor"),
        (dict(sampling=(1.0,)), TypeError, "sampling must be a pair"),
        (dict(sampling=(1.0, -2.0)), ValueError, r"sampling\[1\] \(sx\) must be > 0"),
        (dict(sampling=(0.0, 1.0)), ValueError, r"sampling\[0\] \(sy\) must be > 0"),
        (dict(sampling=(float("inf"), 1.0)), ValueError, "must be finite"),
        (dict(return_indices=1), TypeError, "return_indices must be a bool"),
    ],
)
def test_op_bad_input(kwargs, exc, msg):
    args = {"mask": torch.zeros(2, 4, 5, dtype=torch.bool), **kwargs}
    mask = args.pop("mask")
    with pytest.raises(exc, match=msg):
        pk.distance_transform(mask, **args)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """The CUDA dispatch path traced on fake CUDA tensors (no GPU)."""
    d, i = compile_on_fake_cuda(lambda x: pk.distance_transform(x, return_indices=True, backend=backend),
                                lambda: (torch.zeros(2, 8, 9, dtype=torch.bool).to("cuda"),))  # fmt: skip
    assert d.device.type == "cuda" and d.shape == (2, 8, 9) and i.shape == (2, 2, 8, 9)


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("sampling", [None, (1.7, 0.4)], ids=["iso", "aniso"])
def test_no_host_sync(backend, device, sampling):
    """No call syncs the host (the spacings reach the Triton kernel as bits, not as a tensor made
    from host values): capturable in a CUDA graph."""
    mask = torch.stack([_blobs(37, 53, 20), _few_targets(37, 53, 3, 21)]).to(device)
    want = pk.distance_transform(mask.cpu(), sampling=sampling, return_indices=True, backend="cpu")
    pk.distance_transform(mask, sampling=sampling, backend=backend)  # warm-up (Triton compiles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = pk.distance_transform(mask, sampling=sampling, return_indices=True, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(got[0].cpu(), want[0])
    _check_indices(mask.cpu(), got[0].cpu(), got[1].cpu(), sampling)


# --- the property-based tests (tests/fuzz.py): masks of every dtype and pattern (all zero, none,
# one pixel), zero sizes, one-axis spacings

FUZZ = FuzzRow(
    op="distance_transform",
    fuzz=lambda d: {"mask": Mask(), "sampling": Choice((None, (1.0, 2.5), (0.5, 1.0))), "return_indices": Choice((False, True)),
                     "squared": Choice((False, True))},  # fmt: skip
    call=lambda inp, be: (lambda o: o if isinstance(o, tuple) else (o,))(
        pk.distance_transform(inp["mask"], sampling=inp["sampling"], return_indices=inp["return_indices"],
                              squared=inp["squared"], backend=be)),  # fmt: skip
)
TestFuzz = fuzz_suite(FUZZ)


# --- indices on ties: the same nearest zero on every backend (fuzz found CUDA and Triton taking
# the pixel's own column where the reference, the CPU and scipy take the smallest one)


def _tie_masks():
    g = torch.Generator().manual_seed(11)
    out = [torch.ones(2, 2, dtype=torch.bool) for _ in range(4)]
    for i, m in enumerate(out):  # one nonzero pixel of four: every neighbour at distance 1
        m.zero_()
        m.view(-1)[i] = True
    out.append(torch.rand(7, 9, generator=g) < 0.6)
    out.append(torch.rand(5, 12, generator=g) < 0.8)
    return torch.stack([torch.nn.functional.pad(m, (0, 12 - m.shape[1], 0, 7 - m.shape[0]), value=True) for m in out])


TIE_SAMPLING = {"none": None, "1_2": (1.0, 2.0), "3_1.5": (3.0, 1.5)}


def _check_tie_indices(mask, sampling, idx):
    want = distance_transform(mask, sampling, return_indices=True)[1]
    assert torch.equal(idx.cpu(), want)
    if ndimage is not None:
        for b in range(mask.shape[0]):
            _, i = ndimage.distance_transform_edt(mask[b].numpy(), sampling=sampling, return_indices=True)
            assert torch.equal(torch.from_numpy(i), want[b])


@pytest.mark.parametrize("sampling", list(TIE_SAMPLING))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_indices_on_ties_are_the_smallest_column_on_every_backend(backend, device, sampling):
    mask = _tie_masks()
    s = TIE_SAMPLING[sampling]
    _, idx = pk.distance_transform(mask.to(device), sampling=s, return_indices=True, backend=backend)
    _check_tie_indices(mask, s, idx)


@pytest.mark.parametrize("sampling", list(TIE_SAMPLING))
def test_emulated_indices_on_ties_are_the_smallest_column(emu, sampling):
    mask = _tie_masks()
    s = TIE_SAMPLING[sampling]
    _, idx = emu.distance_transform(mask, *(s or (1.0, 1.0)), False, True)
    _check_tie_indices(mask, s, idx)

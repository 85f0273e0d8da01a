"""next_clicks on every backend (the reference: pixelkernels/reference/next_clicks.py; cpu, triton,
cuda, and the CUDA kernels emulated) against a per-image port of the
f-BRS/RITM clicker (`Clicker._get_next_click`, isegm/inference/clicker.py: error masks ANDed with
not_ignore, padded by one zero pixel, scipy's exact EDT, cropped, multiplied by not_clicked, the
false-negative maximum strictly larger -> positive, the first np.where hit), the clicker's
(0, 0, negative) for "no error left" mapped to (-1, -1, -1): random masks of awkward sizes,
ignore masks, simulated 20-click sessions, and directed cases for the conventions (clicked
pixels excluded after the transform, ignore before it, ties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKENDS, HAS_CUDA, compile_on_fake_cuda
from fuzz import Mask
from contract import FuzzRow, fuzz_suite

import pixelkernels as pk

ndimage = pytest.importorskip("scipy.ndimage")


def _clicker(pred, gt, clicked, ignore):
    """One image, numpy bool (H, W) each -> (y, x, is_positive), the clicker's rule."""
    keep = ~ignore
    fn = gt & ~pred & keep
    fp = ~gt & pred & keep
    fn_dt = ndimage.distance_transform_edt(np.pad(fn, 1))[1:-1, 1:-1] * ~clicked
    fp_dt = ndimage.distance_transform_edt(np.pad(fp, 1))[1:-1, 1:-1] * ~clicked
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    if max(fn_max, fp_max) == 0:
        return (-1, -1, -1)  # the clicker: a negative click at (0, 0)
    pos = fn_max > fp_max
    dt = fn_dt if pos else fp_dt
    k = int(np.argmax(dt))  # first in raster order
    return (k // dt.shape[1], k % dt.shape[1], int(pos))


def _expected(pred, gt, clicked=None, ignore=None):
    B, H, W = gt.shape
    z = torch.zeros(B, H, W, dtype=torch.bool)
    clicked = z if clicked is None else clicked
    ignore = z if ignore is None else ignore
    rows = [_clicker(*(t[b].numpy() for t in (pred, gt, clicked, ignore))) for b in range(B)]
    return torch.tensor(rows, dtype=torch.int64).reshape(B, 3)


def _blobs(B, H, W, g, n=4, rmax=5):
    """(B, H, W) bool: unions of random discs."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    m = torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        for _ in range(n):
            cy = torch.randint(0, H, (1,), generator=g).item()
            cx = torch.randint(0, W, (1,), generator=g).item()
            r = torch.randint(0, rmax + 1, (1,), generator=g).item()
            m[b] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


# Every backend, and the CUDA kernels emulated on the CPU: nc(pred, gt, clicked=, ignore=) on CPU
# tensors, the rows back on the CPU.
IMPLS = [*(pytest.param(tuple(p.values), marks=p.marks, id=p.id) for p in BACKENDS),
         pytest.param(("emulated", "cpu"), marks=pytest.mark.emulated, id="emulated")]  # fmt: skip


@pytest.fixture(params=IMPLS)
def nc(request):
    backend, device = request.param
    if backend == "emulated":
        emu = request.getfixturevalue("emu")
        call = lambda pred, gt, clicked=None, ignore=None: emu.next_clicks(pred, gt, clicked, ignore)  # noqa: E731
        call.interpreted = False
        return call

    def call(pred, gt, clicked=None, ignore=None):
        on = lambda t: None if t is None else t.to(device)  # noqa: E731
        return pk.next_clicks(on(pred), on(gt), clicked=on(clicked), ignore=on(ignore), backend=backend).cpu()

    call.interpreted = backend == "triton" and device == "cpu"  # the Triton interpreter: seconds a call
    return call


SHAPES = [(1, 1), (1, 17), (23, 1), (2, 2), (5, 7), (13, 31), (32, 19), (41, 40)]


@pytest.mark.parametrize("H,W", SHAPES)
def test_random_masks(nc, H, W):
    g = torch.Generator().manual_seed(H * 1000 + W)
    B = 6
    gt = _blobs(B, H, W, g)
    pred = _blobs(B, H, W, g)
    pred[0] = gt[0]  # no error
    pred[1] = torch.rand(H, W, generator=g) < 0.5  # salt and pepper: distances 1 and ties
    gt[2] = True  # one big false negative
    pred[3], gt[3] = True, False  # one big false positive
    assert torch.equal(nc(pred, gt), _expected(pred, gt))
    clicked = torch.rand(B, H, W, generator=g) < 0.2
    ignore = torch.rand(B, H, W, generator=g) < 0.1
    for kw in ({"clicked": clicked}, {"ignore": ignore}, {"clicked": clicked, "ignore": ignore}):
        assert torch.equal(nc(pred, gt, **kw), _expected(pred, gt, **kw)), kw


@pytest.mark.parametrize("H,W,radius", [(1, 40, 2), (37, 1, 3), (33, 45, 4), (48, 48, 6)])
def test_session(nc, H, W, radius):
    """20 clicks: pred starts empty; a positive click paints a disk into pred, a negative one
    erases one; the disks spill over gt's border, so both error kinds keep appearing. Under the
    Triton interpreter the two cheaper sessions only (the others took 30 s of CI)."""
    if nc.interpreted and (H, W) in ((37, 1), (48, 48)):
        pytest.skip("the Triton interpreter runs the 1x40 and 33x45 sessions")
    g = torch.Generator().manual_seed(H * 7 + W)
    B = 5
    gt = _blobs(B, H, W, g, n=3, rmax=max(2, min(H, W) // 3))
    gt[-1] = False  # nothing to segment: every click stays -1
    pred = torch.zeros(B, H, W, dtype=torch.bool)
    clicked = torch.zeros(B, H, W, dtype=torch.bool)
    ignore = torch.rand(B, H, W, generator=g) < 0.05
    ignore[0] = False
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    kinds = set()
    for _ in range(20):
        got = nc(pred, gt, clicked=clicked, ignore=ignore)
        assert torch.equal(got, _expected(pred, gt, clicked, ignore))
        for b, (y, x, pos) in enumerate(got.tolist()):
            kinds.add(pos)
            if pos < 0:
                continue
            assert not clicked[b, y, x] and not ignore[b, y, x]
            clicked[b, y, x] = True
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
            pred[b] = pred[b] | disk if pos else pred[b] & ~disk
    assert kinds == {-1, 0, 1}


def test_no_error(nc):
    g = torch.Generator().manual_seed(0)
    gt = _blobs(3, 9, 11, g)
    assert torch.equal(nc(gt.clone(), gt), torch.full((3, 3), -1, dtype=torch.int64))
    # errors only where ignored: none left
    ignore = torch.rand(3, 9, 11, generator=g) < 0.3
    pred = gt ^ ignore
    assert torch.equal(nc(pred, gt, ignore=ignore), torch.full((3, 3), -1, dtype=torch.int64))
    z = torch.zeros(2, 4, 5, dtype=torch.bool)
    assert torch.equal(nc(z, z), torch.full((2, 3), -1, dtype=torch.int64))
    o = torch.ones(2, 4, 5, dtype=torch.bool)
    assert torch.equal(nc(o, o), torch.full((2, 3), -1, dtype=torch.int64))


def test_empty_shapes(nc):
    for shape in ((0, 4, 5), (2, 0, 5), (2, 4, 0)):
        z = torch.zeros(shape, dtype=torch.bool)
        out = nc(z, z)
        assert out.shape == (shape[0], 3) and out.dtype == torch.int64 and bool((out == -1).all())


def test_all_clicked(nc):
    """Errors left but every pixel already clicked: nothing can be chosen."""
    gt = torch.zeros(2, 6, 7, dtype=torch.bool)
    gt[:, 1:5, 1:6] = True
    pred = torch.zeros_like(gt)
    pred[1, 0, :] = True
    clicked = torch.ones_like(gt)
    assert torch.equal(nc(pred, gt, clicked=clicked), torch.full((2, 3), -1, dtype=torch.int64))
    # only the error pixels clicked: the same
    assert torch.equal(nc(pred, gt, clicked=gt | pred), torch.full((2, 3), -1, dtype=torch.int64))


def test_clicked_excluded_after_transform(nc):
    """A clicked pixel still counts as an error pixel for its neighbours' distances (the
    clickers multiply not_clicked_map onto the distance maps after the transform)."""
    gt = torch.ones(1, 7, 7, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    assert nc(pred, gt).tolist() == [[3, 3, 1]]  # d² = min(y+1, 7-y, x+1, 7-x)², 16 there
    clicked = torch.zeros_like(gt)
    clicked[0, 3, 3] = True
    # after the transform the ring at d² = 9 is untouched: (2, 2); removing the clicked pixel
    # from the mask first would make it a zero to measure to, and give (1, 1) at d² = 4 (as
    # ignoring it does, test_ignore_before_transform)
    got = nc(pred, gt, clicked=clicked)
    assert torch.equal(got, _expected(pred, gt, clicked=clicked))
    assert got.tolist() == [[2, 2, 1]]


def test_ignore_before_transform(nc):
    """An ignored pixel leaves both error masks before the transform: distances are measured to
    it, and it is never chosen."""
    gt = torch.ones(1, 7, 7, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    assert nc(pred, gt).tolist() == [[3, 3, 1]]
    ignore = torch.zeros_like(gt)
    ignore[0, 3, 3] = True
    # d² = min(frame², to-centre²): (2, 2) drops from 9 to 2, the maximum is 4 on the ring
    # 2 from the frame, first at (1, 1)
    got = nc(pred, gt, ignore=ignore)
    assert torch.equal(got, _expected(pred, gt, ignore=ignore))
    assert got.tolist() == [[1, 1, 1]]
    # everything ignored: no error
    assert nc(pred, gt, ignore=torch.ones_like(gt)).tolist() == [[-1, -1, -1]]


def test_ties(nc):
    # two equal 3x3 false-negative squares side by side: the first in raster order wins
    gt = torch.zeros(1, 5, 9, dtype=torch.bool)
    gt[0, 1:4, 1:4] = True
    gt[0, 1:4, 5:8] = True
    pred = torch.zeros_like(gt)
    assert nc(pred, gt).tolist() == [[2, 2, 1]]
    # the same, stacked with the lower one to the left: the upper one (earlier row) wins
    gt = torch.zeros(1, 9, 9, dtype=torch.bool)
    gt[0, 1:4, 5:8] = True
    gt[0, 5:8, 1:4] = True
    assert nc(torch.zeros_like(gt), gt).tolist() == [[2, 6, 1]]
    # equal false-negative and false-positive maxima: negative, at the false positive's centre
    gt = torch.zeros(1, 5, 9, dtype=torch.bool)
    gt[0, 1:4, 5:8] = True
    pred = torch.zeros_like(gt)
    pred[0, 1:4, 1:4] = True
    out = nc(pred, gt)
    assert out.tolist() == [[2, 2, 0]]
    assert torch.equal(out, _expected(pred, gt))
    # swap the roles: still negative, now at the right square
    assert nc(gt, pred).tolist() == [[2, 6, 0]]
    # a larger false negative (5x5, centre 3 from the frame) beats it: positive
    gt = torch.zeros(1, 5, 11, dtype=torch.bool)
    gt[0, :, 5:10] = True
    pred = torch.zeros_like(gt)
    pred[0, 1:4, 1:4] = True
    assert nc(pred, gt).tolist() == [[2, 7, 1]]


@pytest.mark.parametrize("H,W", [(1, 1), (1, 6), (6, 1), (4, 5)])
def test_error_at_pixel_zero_is_a_click(nc, H, W):
    """A click at (0, 0) is a click (max(y, x) = 0 is no padding, SPEC §3.4): a one-pixel false
    negative, then a false positive, at pixel 0; a false positive at pixel 0 tied with a false
    negative at the last pixel (negative); pixel 0 clicked already (nothing left); a false
    negative at the last pixel. On 1 x 1, single-row and single-column maps."""
    gt = torch.zeros(5, H, W, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    gt[0, 0, 0] = True  # false negative at (0, 0)
    pred[1, 0, 0] = True  # false positive at (0, 0)
    pred[2, 0, 0] = True  # both kinds, the false positive at pixel 0: a tie goes negative
    gt[2, -1, -1] = H * W > 1
    gt[3, 0, 0] = True  # clicked already: nothing left
    gt[4, -1, -1] = True
    clicked = torch.zeros_like(gt)
    clicked[3, 0, 0] = True
    got = nc(pred, gt, clicked=clicked)
    assert torch.equal(got, _expected(pred, gt, clicked=clicked))
    want = [[0, 0, 1], [0, 0, 0], [0, 0, 0], [-1, -1, -1], [H - 1, W - 1, 1]]
    assert got.tolist() == want


@pytest.mark.parametrize("H,W", [(7, 12), (12, 7), (3, 20), (20, 3)])
def test_elongated_errors(nc, H, W):
    """Errors long along one axis and thin along the other (the axes must not be swapped): a
    false-negative band of rows against a false-positive band of columns, each wider in turn."""
    for rows, cols in ((1, 3), (3, 1), (2, 2), (3, 3)):
        gt = torch.zeros(2, H, W, dtype=torch.bool)
        pred = torch.zeros_like(gt)
        gt[0, 1 : 1 + rows, :] = True  # a band of rows (touching both side borders)
        pred[0, :, W - 1 - cols : W - 1] = True  # a band of columns
        pred[0] &= ~gt[0]
        gt[1, :, :] = True  # a false negative over the whole map but a column band of false positives
        pred[1, :, 1 : 1 + cols] = True
        got = nc(pred, gt)
        assert torch.equal(got, _expected(pred, gt)), (rows, cols)


def test_batch_independent_and_views(nc):
    """Images do not interact; non-contiguous inputs give the same rows."""
    g = torch.Generator().manual_seed(3)
    gt, pred = _blobs(7, 19, 23, g), _blobs(7, 19, 23, g)
    clicked = torch.rand(7, 19, 23, generator=g) < 0.1
    full = nc(pred, gt, clicked=clicked)
    for b in range(7):
        one = slice(b, b + 1)
        assert torch.equal(nc(pred[one], gt[one], clicked=clicked[one]), full[one])
    t = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731
    assert torch.equal(nc(t(pred), t(gt), clicked=t(clicked)), full)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["reference", "cuda", "triton"])
def test_cuda_no_sync(backend):
    g = torch.Generator().manual_seed(5)
    gt, pred = _blobs(4, 33, 47, g), _blobs(4, 33, 47, g)
    clicked = torch.rand(4, 33, 47, generator=g) < 0.1
    ignore = torch.rand(4, 33, 47, generator=g) < 0.05
    want = _expected(pred, gt, clicked, ignore)
    args = [x.cuda() for x in (pred, gt, clicked, ignore)]
    pk.next_clicks(*args[:2], backend=backend)  # warm-up (Triton compiles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = pk.next_clicks(args[0], args[1], clicked=args[2], ignore=args[3], backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), want)


# The kernels' boundaries on the framed (H + 2) x (W + 2) masks: CUDA's 32-column tiles and 8 bands,
# the grid-stride loops (2B > 3 masks, more than 3 column tiles, more than 3 blocks of pixels),
# compact_kernel's 8 masks a block (2B > 8) and the rows kernel's per-image flush; Triton's 32 x 16
# tiles, 1024-column chunks (W + 2 > 1024) and 128-pixel programs; the CPU's (image, mask) tasks.
KERNEL_SHAPES = [(5, 37, 130), (2, 3, 1100), (1, 70, 9)]


@pytest.mark.parametrize("B,H,W", KERNEL_SHAPES, ids=lambda v: str(v))
def test_kernel_shapes(nc, B, H, W):
    g = torch.Generator().manual_seed(B * H + W)
    gt = _blobs(B, H, W, g, n=6, rmax=max(2, min(H, W) // 2))
    pred = _blobs(B, H, W, g, n=6, rmax=max(2, min(H, W) // 2))
    clicked = torch.rand(B, H, W, generator=g) < 0.05
    assert torch.equal(nc(pred, gt, clicked=clicked), _expected(pred, gt, clicked))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int64])
def test_integer_masks(nc, dtype):
    g = torch.Generator().manual_seed(7)
    gt, pred = _blobs(3, 15, 17, g), _blobs(3, 15, 17, g)
    ignore = torch.rand(3, 15, 17, generator=g) < 0.1
    want = _expected(pred, gt, ignore=ignore)
    as_int = lambda m: m.to(dtype) * 3  # noqa: E731  (nonzero values other than 1)
    assert torch.equal(nc(as_int(pred), as_int(gt), ignore=as_int(ignore)), want)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a registered op")
    op = pk.ops.next_clicks.OP
    func = op.triton if backend == "triton" else op.compiled
    g = torch.Generator().manual_seed(8)
    gt, pred = (_blobs(2, 9, 11, g).to(device) for _ in range(2))
    clicked = (torch.rand(2, 9, 11, generator=g) < 0.2).to(device)
    for args in ((pred, gt, None, None), (pred, gt, clicked, gt ^ pred)):
        torch.library.opcheck(func, args)


def test_compiles_fullgraph():
    g = torch.Generator().manual_seed(9)
    gt, pred = _blobs(2, 9, 11, g), _blobs(2, 9, 11, g)
    fn = torch.compile(lambda p, t: pk.next_clicks(p, t), fullgraph=True, backend="eager")
    assert torch.equal(fn(pred, gt), pk.next_clicks(pred, gt))


def test_meta_tensors():
    m = torch.empty(3, 5, 6, dtype=torch.bool, device="meta")
    out = pk.next_clicks(m, m, clicked=m)
    assert out.shape == (3, 3) and out.dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(gt=torch.zeros(4, 5, dtype=torch.bool)), ValueError, "gt must have 3 dims"),
        (dict(gt=torch.zeros(2, 4, 5)), TypeError, "gt must have dtype"),
        (dict(pred=torch.zeros(2, 4, 5)), TypeError, "pred must have dtype"),
        (dict(pred=[[0]]), TypeError, "pred must be a torch.Tensor"),
        (dict(pred=torch.zeros(2, 5, 4, dtype=torch.bool)), ValueError, "pred must have gt's shape"),
        (dict(clicked=torch.zeros(1, 4, 5, dtype=torch.bool)), ValueError, "clicked must have gt's shape"),
        (dict(ignore=torch.zeros(2, 4, 5, dtype=torch.float16)), TypeError, "ignore must have dtype"),
        (dict(ignore=torch.zeros(2, 4, 5, dtype=torch.bool, device="meta")), ValueError, "ignore must be on the same device"),
    ],
)  # fmt: skip
def test_bad_input(kwargs, exc, msg):
    args = {"pred": torch.zeros(2, 4, 5, dtype=torch.bool), "gt": torch.zeros(2, 4, 5, dtype=torch.bool), **kwargs}
    with pytest.raises(exc, match=msg):
        pk.next_clicks(args.pop("pred"), args.pop("gt"), **args)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """The CUDA dispatch path traced on fake CUDA tensors (no GPU)."""
    out = compile_on_fake_cuda(
        lambda p, t, c: pk.next_clicks(p, t, clicked=c, backend=backend),
        lambda: tuple(torch.zeros(2, 8, 9, dtype=torch.bool).to("cuda") for _ in range(3)),
    )
    assert out.device.type == "cuda" and out.shape == (2, 3)


# --- the property-based tests (tests/fuzz.py): masks of every dtype and pattern, zero sizes

FUZZ = FuzzRow(
    op="next_clicks",
    fuzz=lambda d: {"pred": Mask(), "gt": Mask(), "clicked": Mask(), "ignore": Mask()},
    call=lambda inp, be: (pk.next_clicks(inp["pred"], inp["gt"], clicked=inp["clicked"], ignore=inp["ignore"], backend=be),),
)
TestFuzz = fuzz_suite(FUZZ)

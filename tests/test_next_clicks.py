"""next_clicks' oracle (pixelkernels/reference/next_clicks.py) against a per-image port of the
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
from conftest import HAS_CUDA

from pixelkernels.reference.next_clicks import next_clicks

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


SHAPES = [(1, 1), (1, 17), (23, 1), (2, 2), (5, 7), (13, 31), (32, 19), (41, 40)]


@pytest.mark.parametrize("H,W", SHAPES)
def test_random_masks(H, W):
    g = torch.Generator().manual_seed(H * 1000 + W)
    B = 6
    gt = _blobs(B, H, W, g)
    pred = _blobs(B, H, W, g)
    pred[0] = gt[0]  # no error
    pred[1] = torch.rand(H, W, generator=g) < 0.5  # salt and pepper: distances 1 and ties
    gt[2] = True  # one big false negative
    pred[3], gt[3] = True, False  # one big false positive
    assert torch.equal(next_clicks(pred, gt), _expected(pred, gt))
    clicked = torch.rand(B, H, W, generator=g) < 0.2
    ignore = torch.rand(B, H, W, generator=g) < 0.1
    for kw in ({"clicked": clicked}, {"ignore": ignore}, {"clicked": clicked, "ignore": ignore}):
        assert torch.equal(next_clicks(pred, gt, **kw), _expected(pred, gt, **kw)), kw


@pytest.mark.parametrize("H,W,radius", [(1, 40, 2), (37, 1, 3), (33, 45, 4), (48, 48, 6)])
def test_session(H, W, radius):
    """20 clicks: pred starts empty; a positive click paints a disk into pred, a negative one
    erases one; the disks spill over gt's border, so both error kinds keep appearing."""
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
        got = next_clicks(pred, gt, clicked=clicked, ignore=ignore)
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


def test_no_error():
    g = torch.Generator().manual_seed(0)
    gt = _blobs(3, 9, 11, g)
    assert torch.equal(next_clicks(gt.clone(), gt), torch.full((3, 3), -1, dtype=torch.int64))
    # errors only where ignored: none left
    ignore = torch.rand(3, 9, 11, generator=g) < 0.3
    pred = gt ^ ignore
    assert torch.equal(next_clicks(pred, gt, ignore=ignore), torch.full((3, 3), -1, dtype=torch.int64))
    z = torch.zeros(2, 4, 5, dtype=torch.bool)
    assert torch.equal(next_clicks(z, z), torch.full((2, 3), -1, dtype=torch.int64))
    o = torch.ones(2, 4, 5, dtype=torch.bool)
    assert torch.equal(next_clicks(o, o), torch.full((2, 3), -1, dtype=torch.int64))


def test_empty_shapes():
    for shape in ((0, 4, 5), (2, 0, 5), (2, 4, 0)):
        z = torch.zeros(shape, dtype=torch.bool)
        out = next_clicks(z, z)
        assert out.shape == (shape[0], 3) and out.dtype == torch.int64 and bool((out == -1).all())


def test_all_clicked():
    """Errors left but every pixel already clicked: nothing can be chosen."""
    gt = torch.zeros(2, 6, 7, dtype=torch.bool)
    gt[:, 1:5, 1:6] = True
    pred = torch.zeros_like(gt)
    pred[1, 0, :] = True
    clicked = torch.ones_like(gt)
    assert torch.equal(next_clicks(pred, gt, clicked=clicked), torch.full((2, 3), -1, dtype=torch.int64))
    # only the error pixels clicked: the same
    assert torch.equal(next_clicks(pred, gt, clicked=gt | pred), torch.full((2, 3), -1, dtype=torch.int64))


def test_clicked_excluded_after_transform():
    """A clicked pixel still counts as an error pixel for its neighbours' distances (the
    clickers multiply not_clicked_map onto the distance maps after the transform)."""
    gt = torch.ones(1, 7, 7, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    assert next_clicks(pred, gt).tolist() == [[3, 3, 1]]  # d² = min(y+1, 7-y, x+1, 7-x)², 16 there
    clicked = torch.zeros_like(gt)
    clicked[0, 3, 3] = True
    # after the transform the ring at d² = 9 is untouched: (2, 2); removing the clicked pixel
    # from the mask first would make it a zero to measure to, and give (1, 1) at d² = 4 (as
    # ignoring it does, test_ignore_before_transform)
    got = next_clicks(pred, gt, clicked=clicked)
    assert torch.equal(got, _expected(pred, gt, clicked=clicked))
    assert got.tolist() == [[2, 2, 1]]


def test_ignore_before_transform():
    """An ignored pixel leaves both error masks before the transform: distances are measured to
    it, and it is never chosen."""
    gt = torch.ones(1, 7, 7, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    assert next_clicks(pred, gt).tolist() == [[3, 3, 1]]
    ignore = torch.zeros_like(gt)
    ignore[0, 3, 3] = True
    # d² = min(frame², to-centre²): (2, 2) drops from 9 to 2, the maximum is 4 on the ring
    # 2 from the frame, first at (1, 1)
    got = next_clicks(pred, gt, ignore=ignore)
    assert torch.equal(got, _expected(pred, gt, ignore=ignore))
    assert got.tolist() == [[1, 1, 1]]
    # everything ignored: no error
    assert next_clicks(pred, gt, ignore=torch.ones_like(gt)).tolist() == [[-1, -1, -1]]


def test_ties():
    # two equal 3x3 false-negative squares side by side: the first in raster order wins
    gt = torch.zeros(1, 5, 9, dtype=torch.bool)
    gt[0, 1:4, 1:4] = True
    gt[0, 1:4, 5:8] = True
    pred = torch.zeros_like(gt)
    assert next_clicks(pred, gt).tolist() == [[2, 2, 1]]
    # the same, stacked with the lower one to the left: the upper one (earlier row) wins
    gt = torch.zeros(1, 9, 9, dtype=torch.bool)
    gt[0, 1:4, 5:8] = True
    gt[0, 5:8, 1:4] = True
    assert next_clicks(torch.zeros_like(gt), gt).tolist() == [[2, 6, 1]]
    # equal false-negative and false-positive maxima: negative, at the false positive's centre
    gt = torch.zeros(1, 5, 9, dtype=torch.bool)
    gt[0, 1:4, 5:8] = True
    pred = torch.zeros_like(gt)
    pred[0, 1:4, 1:4] = True
    out = next_clicks(pred, gt)
    assert out.tolist() == [[2, 2, 0]]
    assert torch.equal(out, _expected(pred, gt))
    # swap the roles: still negative, now at the right square
    assert next_clicks(gt, pred).tolist() == [[2, 6, 0]]
    # a larger false negative (5x5, centre 3 from the frame) beats it: positive
    gt = torch.zeros(1, 5, 11, dtype=torch.bool)
    gt[0, :, 5:10] = True
    pred = torch.zeros_like(gt)
    pred[0, 1:4, 1:4] = True
    assert next_clicks(pred, gt).tolist() == [[2, 7, 1]]


def test_batch_independent_and_views():
    """Images do not interact; non-contiguous inputs give the same rows."""
    g = torch.Generator().manual_seed(3)
    gt, pred = _blobs(7, 19, 23, g), _blobs(7, 19, 23, g)
    clicked = torch.rand(7, 19, 23, generator=g) < 0.1
    full = next_clicks(pred, gt, clicked=clicked)
    for b in range(7):
        one = slice(b, b + 1)
        assert torch.equal(next_clicks(pred[one], gt[one], clicked=clicked[one]), full[one])
    t = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731
    assert torch.equal(next_clicks(t(pred), t(gt), clicked=t(clicked)), full)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_no_sync():
    g = torch.Generator().manual_seed(5)
    gt, pred = _blobs(4, 33, 47, g), _blobs(4, 33, 47, g)
    clicked = torch.rand(4, 33, 47, generator=g) < 0.1
    ignore = torch.rand(4, 33, 47, generator=g) < 0.05
    want = _expected(pred, gt, clicked, ignore)
    args = [x.cuda() for x in (pred, gt, clicked, ignore)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = next_clicks(args[0], args[1], clicked=args[2], ignore=args[3])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), want)

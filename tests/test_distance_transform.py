"""distance_transform's oracle (pixelkernels/reference/distance_transform.py) against
scipy.ndimage.distance_transform_edt: exactly equal (float32 of scipy's float64) on every mask of
the table, isotropic and anisotropic, squared or not, and indices that point at a target pixel
at exactly the returned distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelkernels.reference.distance_transform import distance_transform

ndimage = pytest.importorskip("scipy.ndimage")


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

"""sample_clicks on every backend (the reference: pixelkernels/reference/sample_clicks.py; cpu,
triton, cuda, and the CUDA kernels emulated): every backend returns the reference's clicks for the
same generator state, and every sampled click is checked
against brute-force numpy distances (every pixel to every target pixel, no distance transform)
on random blob masks of awkward sizes, small, empty and full objects: positives inside the
object at >= d_margin from the background, strategy 1 in the band at >= d_margin from the
object, strategy 2 on the other objects, pairwise >= d_step; strategy 3 each click a maximiser
of the distance to G ∪ the clicks before it. Counts: an image gets fewer clicks than asked only
when every qualifying pixel lies within d_step of a click (so none is left), exactly
min(asked, qualifying) when d_step <= 1, and as many as asked where a packing bound says so;
padding only where nothing qualifies. Format, order column, reproducibility, uniformity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import BACKENDS, GPU_BACKENDS, compile_on_fake_cuda
from fuzz import Choice, Mask, Seeds
from contract import FuzzRow, fuzz_suite

import pixelkernels as pk
from pixelkernels.reference.sample_clicks import draw_keys
from pixelkernels.reference.sample_clicks import sample_clicks as oracle

SIZES = [(1, 23), (9, 1), (5, 5), (17, 23), (31, 40), (24, 37)]
PARAMS = [  # (d_band, d_step, d_margin)
    (40, 10, 5),
    (6, 3, 2),
    (4, 0, 0),
    (5.5, 2.5, 1.5),
    (3, 1, 1),
]


# Every backend, and the CUDA kernels emulated on the CPU: sc(gt, **the op's keywords) on CPU
# tensors, the points back on the CPU. The interpreter and the emulator are slow: they take the
# table's larger sizes only (SLOW_SIZES), which cross Triton's 1024-pixel chunks and the emulated
# block's 512 threads.
IMPLS = [*(pytest.param(tuple(p.values), marks=p.marks, id=p.id) for p in BACKENDS),
         pytest.param(("emulated", "cpu"), marks=pytest.mark.emulated, id="emulated")]  # fmt: skip
SLOW = ("triton", "emulated")


@pytest.fixture(params=IMPLS)
def sc(request):
    backend, device = request.param
    if backend == "emulated":
        emu = request.getfixturevalue("emu")

        def call(gt, *, num_positive, num_negative, strategy, d_band=40, d_step=10, d_margin=5, other=None,
                 generator=None):  # fmt: skip
            keys = draw_keys(gt, generator)
            other = other.clone() if strategy == 2 else None  # clone: torch.from_numpy's memory is unknown to the sanitizer
            return emu.sample_clicks(gt.clone(), keys, other, num_positive, num_negative, strategy, float(d_band),
                                     float(d_step), float(d_margin))  # fmt: skip
    else:

        def call(gt, **kw):
            if device == "cpu":
                return pk.sample_clicks(gt, backend=backend, **kw)
            # a CUDA backend: the keys the CPU generator draws, so the clicks compare with the CPU's
            keys = draw_keys(gt, kw.get("generator"))
            other = kw.get("other") if kw["strategy"] == 2 else None
            args = [kw.get(n, d) for n, d in (("num_positive", 0), ("num_negative", 0), ("strategy", 1),
                                              ("d_band", 40.0), ("d_step", 10.0), ("d_margin", 5.0))]  # fmt: skip
            on = lambda t: None if t is None else t.to(device)  # noqa: E731
            return pk._op.run(pk.ops.sample_clicks.OP, backend, on(gt), on(keys), on(other), *args).cpu()

    call.slow = backend in SLOW
    return call


def _blobs(B, H, W, rng, kind="random"):
    """(B, H, W) bool: unions of random disks and rectangles; image 0 empty and image 1 full
    when kind == "awkward", a one-pixel object in image 2."""
    m = np.zeros((B, H, W), dtype=bool)
    yy, xx = np.mgrid[:H, :W]
    for b in range(B):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            if rng.random() < 0.5:
                r = rng.uniform(0.5, max(H, W) / 2.5)
                m[b] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                hy, hx = rng.uniform(0.5, H / 2 + 1), rng.uniform(0.5, W / 2 + 1)
                m[b] |= (abs(yy - cy) <= hy) & (abs(xx - cx) <= hx)
    if kind == "awkward":
        if B > 0:
            m[0] = False
        if B > 1:
            m[1] = True
        if B > 2:
            m[2] = False
            m[2, H // 2, W // 2] = True
    return m


def _sqdist(targets):
    """(H, W) bool -> (H, W) float64: squared distance of every pixel to the nearest target
    pixel, by brute force (+inf when there is none)."""
    H, W = targets.shape
    pix = np.stack(np.mgrid[:H, :W], -1).reshape(-1, 2)
    t = pix[targets.reshape(-1)]
    if len(t) == 0:
        return np.full((H, W), np.inf)
    d2 = ((pix[:, None, :] - t[None, :, :]) ** 2).sum(-1).min(1)
    return d2.astype(np.float64).reshape(H, W)


def _half(rows, num, H, W):
    """rows (N, 3) of one sign -> list of (y, x) clicks; checks the format of the half."""
    rows = np.asarray(rows)
    valid = rows[:, :2].max(1) >= 0
    k = int(valid.sum())
    assert valid[:k].all() and not valid[k:].any(), "clicks first, then padding"
    assert k <= num
    assert (rows[k:] == -1).all(), "padding rows are (-1, -1, -1)"
    assert (rows[:k, 2] == np.arange(k)).all(), "order is the index within the sign"
    ys, xs = rows[:k, 0], rows[:k, 1]
    assert (ys == np.round(ys)).all() and (xs == np.round(xs)).all()
    assert ((ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)).all()
    return [(int(y), int(x)) for y, x in zip(ys, xs)]


def _check_spread(clicks, cand, num, d_step):
    """Clicks in cand, pairwise >= d_step, distinct, and, when fewer than num, maximal: every
    pixel of cand within < d_step of a click (or a click itself)."""
    H, W = cand.shape
    step2 = float(d_step) ** 2
    for i, (y, x) in enumerate(clicks):
        assert cand[y, x], f"click {(y, x)} does not qualify"
        for y2, x2 in clicks[:i]:
            assert (y - y2) ** 2 + (x - x2) ** 2 >= step2, "clicks closer than d_step"
    assert len(set(clicks)) == len(clicks)
    if len(clicks) < num:
        left = cand.copy()
        yy, xx = np.mgrid[:H, :W]
        for y, x in clicks:
            d2 = (yy - y) ** 2 + (xx - x) ** 2
            left &= (d2 >= step2) & (d2 > 0)
        assert not left.any(), "fewer clicks than asked while a pixel still qualifies"
    if d_step <= 1:
        assert len(clicks) == min(num, int(cand.sum()))


def _check_farthest(clicks, band, num):
    """Strategy 3: the first click in the band, each next one a band maximiser of the distance
    to G ∪ the clicks before it; as many as the band allows."""
    assert len(clicks) == min(num, int(band.sum()))
    assert len(set(clicks)) == len(clicks)
    targets = ~band
    for i, (y, x) in enumerate(clicks):
        assert band[y, x]
        if i > 0:
            d2 = _sqdist(targets)
            assert d2[y, x] == d2[band].max(), f"click {i} is not a farthest band pixel"
            assert d2[y, x] > 0
        targets = targets.copy()
        targets[y, x] = True


def _check(points, gt, other, strategy, num_pos, num_neg, d_band, d_step, d_margin):
    B, H, W = gt.shape
    N = max(num_pos, num_neg)
    assert points.shape == (B, 2 * N, 3) and points.dtype == torch.float32
    p = points.numpy()
    for b in range(B):
        obj = gt[b]
        to_bg, to_obj = _sqdist(~obj), _sqdist(obj)
        pos = _half(p[b, :N], num_pos, H, W)
        neg = _half(p[b, N:], num_neg, H, W)
        _check_spread(pos, obj & (to_bg >= d_margin**2), num_pos, d_step)
        band = ~obj & (to_obj < d_band**2)
        if strategy == 1:
            _check_spread(neg, band & (to_obj >= d_margin**2), num_neg, d_step)
        elif strategy == 2:
            _check_spread(neg, other[b] & ~obj, num_neg, d_step)
        else:
            _check_farthest(neg, band, num_neg)
        assert not set(pos) & set(neg)


@pytest.mark.parametrize("strategy", [1, 2, 3])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_constraints(sc, strategy, size):
    H, W = size
    rng = np.random.default_rng(1000 * strategy + 7 * H + W)
    B = 5
    configs = [
        ("awkward", PARAMS[0], (3, 4)),
        ("random", PARAMS[1], (6, 2)),
        ("awkward", PARAMS[2], (4, 9)),
        ("random", PARAMS[3], (0, 5)),
        ("random", PARAMS[1], (3, 0)),
        ("awkward", PARAMS[4], (5, 5)),
    ]
    for kind, (d_band, d_step, d_margin), (num_pos, num_neg) in configs[::3] if sc.slow else configs:
        gt = _blobs(B, H, W, rng, kind)
        other = _blobs(B, H, W, rng)
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        points = sc(torch.from_numpy(gt), num_positive=num_pos, num_negative=num_neg,
                               strategy=strategy, d_band=d_band, d_step=d_step, d_margin=d_margin,
                               other=torch.from_numpy(other), generator=g)  # fmt: skip
        _check(points, gt, other, strategy, num_pos, num_neg, d_band, d_step, d_margin)


@pytest.mark.parametrize("strategy", [1, 2, 3])
def test_as_many_as_asked(sc, strategy):
    """A 60x60 object in a 100x100 image, default distances: the qualifying pixels outnumber
    (asked - 1) exclusion disks, so every image gets all its clicks."""
    ndimage = pytest.importorskip("scipy.ndimage")  # the CUDA wheel's check venv has no scipy
    B, H, W = 3, 100, 100
    gt = torch.zeros(B, H, W, dtype=torch.bool)
    gt[:, 20:80, 20:80] = True
    gt[1, 20:80, 20:30] = False  # a 60x50 object
    other = torch.zeros_like(gt)
    other[:, :18, :] = True  # a strip of other objects
    disk = sum(1 for i in range(-10, 11) for j in range(-10, 11) if i * i + j * j < 100)
    for b in range(B):
        q_pos = int((ndimage.distance_transform_edt(gt[b].numpy()) >= 5).sum())
        d_obj = ndimage.distance_transform_edt(~gt[b].numpy())
        band = (d_obj > 0) & (d_obj < 40)
        q_neg = {1: int((band & (d_obj >= 5)).sum()), 2: int(other[b].sum()), 3: int(band.sum())}[strategy]
        assert q_pos > 7 * disk and q_neg > 5 * disk  # 8 positives and 6 negatives guaranteed
    g = torch.Generator().manual_seed(5)
    points = sc(gt, num_positive=8, num_negative=6, strategy=strategy, other=other, generator=g)
    assert (points[:, :8, :2] >= 0).all()
    assert (points[:, 8 : 8 + 6, :2] >= 0).all()
    assert (points[:, 8 + 6 :] == -1).all()
    assert (points[:, 8:14, 2] == torch.arange(6.0)).all()


def test_padding_when_nothing_qualifies(sc):
    H, W = 21, 30
    gt = torch.zeros(5, H, W, dtype=torch.bool)
    gt[0, 5:8, 3:25] = True  # 3 pixels thick: nothing at >= 5 from the background
    gt[1] = True  # full: no band, no other pixel outside the object
    # gt[2] empty: no positive, no band
    gt[3, 3:18, 3:18] = True  # a band, but none of it at >= d_margin = 5 when d_band = 5
    gt[4, 2:19, 2:28] = True
    other = gt.clone()  # other objects only inside the object: none qualifies
    for strategy in (1, 2, 3):
        g = torch.Generator().manual_seed(strategy)
        pts = sc(gt, num_positive=3, num_negative=4, strategy=strategy, d_band=5, other=other,
                            generator=g)  # fmt: skip
        assert (pts[[0, 2], :4] == -1).all()  # no positive in images 0 (thin) and 2 (empty)
        assert (pts[[1, 3, 4], 0, :2] >= 0).all()  # the image border is not background
        assert (pts[1:3, 4:] == -1).all()  # full and empty object: no negative
        if strategy != 3:
            assert (pts[3:, 4:] == -1).all()
        else:
            assert (pts[3:, 4:, :2] >= 0).all()
        if strategy == 2:
            assert (pts[:, 4:] == -1).all()
    # nothing asked
    pts = sc(gt, num_positive=0, num_negative=0, strategy=1)
    assert pts.shape == (5, 0, 3)
    # an empty image
    pts = sc(torch.zeros(2, 0, 7, dtype=torch.bool), num_positive=2, num_negative=1, strategy=3)
    assert pts.shape == (2, 4, 3) and (pts == -1).all()


@pytest.mark.parametrize("strategy", [1, 2, 3])
def test_reproducible(sc, strategy):
    rng = np.random.default_rng(3)
    gt = torch.from_numpy(_blobs(4, 33, 41, rng))
    other = torch.from_numpy(_blobs(4, 33, 41, rng))
    kw = dict(num_positive=4, num_negative=5, strategy=strategy, d_band=8, d_step=3, d_margin=1, other=other)

    def run(seed):
        return sc(gt, generator=torch.Generator().manual_seed(seed), **kw)

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # integer masks are read as nonzero = object
    assert torch.equal(sc(gt.to(torch.int32) * 3, generator=torch.Generator().manual_seed(11),
                                     **{**kw, "other": other.to(torch.uint8)}), a)  # fmt: skip
    torch.manual_seed(0)
    assert sc(gt, **kw).shape == a.shape  # the default generator


def test_uniform_first_click(sc):
    """The first positive (and strategy-1 negative) is uniform over the qualifying pixels."""
    if sc.slow:
        pytest.skip("4000 images: the interpreter and the emulator get the reference's clicks (test_equals_reference)")
    B = 4000
    gt = torch.zeros(B, 1, 8, dtype=torch.bool)
    gt[:, 0, :5] = True  # 5 object pixels; with d_margin=0 all qualify; band = 3 pixels
    g = torch.Generator().manual_seed(0)
    pts = sc(gt, num_positive=1, num_negative=1, strategy=1, d_band=4, d_margin=0, generator=g)
    pos = torch.bincount(pts[:, 0, 1].long(), minlength=8).double() / B
    neg = torch.bincount(pts[:, 1, 1].long(), minlength=8).double() / B
    assert (pos[:5] - 0.2).abs().max() < 0.03 and pos[5:].sum() == 0
    assert (neg[5:] - 1 / 3).abs().max() < 0.035 and neg[:5].sum() == 0


def test_farthest_sequence_exact(sc):
    """Strategy 3 on a 1-row image: the band is 3 pixels on each side of a 3-pixel object; G is
    the object and everything at >= d_band; the first click random, then the farthest ones."""
    gt = torch.zeros(1, 1, 15, dtype=torch.bool)
    gt[0, 0, 6:9] = True  # band with d_band = 4: x in 3..5 and 9..11; G elsewhere
    g = torch.Generator().manual_seed(2)
    pts = sc(gt, num_positive=0, num_negative=6, strategy=3, d_band=4, generator=g)
    assert (pts[0, :6] == -1).all()
    xs = pts[0, 6:, 1].long().tolist()
    assert sorted(xs) == [3, 4, 5, 9, 10, 11]
    band = np.zeros((1, 15), dtype=bool)
    band[0, [3, 4, 5, 9, 10, 11]] = True
    _check_farthest([(0, x) for x in xs], band, 6)


@pytest.mark.parametrize("strategy", [1, 2, 3])
@pytest.mark.parametrize("size", [(1, 1), (1, 6), (6, 1), (4, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_click_at_pixel_zero_is_not_padding(sc, strategy, size):
    """A click at (0, 0) is a click (max(y, x) = 0 is no padding, SPEC §3.4), on 1 x 1,
    single-row and single-column maps: image 0's object is pixel 0 alone (its only positive),
    image 1's background is pixel 0 alone (its only band pixel, and the only `other` pixel);
    image 2 has no object: padding only."""
    H, W = size
    gt = torch.zeros(3, H, W, dtype=torch.bool)
    gt[0, 0, 0] = True
    gt[1] = True
    gt[1, 0, 0] = False
    other = torch.zeros_like(gt)
    other[:, 0, 0] = True
    kw = dict(num_positive=2, num_negative=2, strategy=strategy, d_band=3, d_step=0, d_margin=0, other=other)
    got = sc(gt, generator=torch.Generator().manual_seed(H * W), **kw)
    assert torch.equal(got, oracle(gt, generator=torch.Generator().manual_seed(H * W), **kw))
    _check(got, gt.numpy(), other.numpy(), strategy, 2, 2, 3, 0, 0)
    pad, zero = [-1.0] * 3, [0.0, 0.0, 0.0]
    assert got[0, 0].tolist() == zero and got[0, 1].tolist() == pad  # the one positive
    if H * W > 1:
        assert got[1, 2].tolist() == zero and got[1, 3].tolist() == pad  # the one negative
    assert (got[2, :2] == -1).all()
    assert got[2, 2].tolist() == (zero if strategy == 2 else pad)  # `other` at pixel 0 outside the object


@pytest.mark.parametrize("strategy", [1, 2, 3])
@pytest.mark.parametrize("size", [(7, 26), (26, 7)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_elongated_objects(sc, strategy, size):
    """Objects long along one axis and thin along the other (the axes must not be swapped): bars
    of 3 and 5 pixels across, their bands cut by the map's border on one side."""
    H, W = size
    gt = torch.zeros(2, H, W, dtype=torch.bool)
    if H < W:
        gt[0, 1:4, 2:-2] = True
        gt[1, 2:7, 5:] = True
    else:
        gt[0, 2:-2, 1:4] = True
        gt[1, 5:, 2:7] = True
    other = ~gt
    other[:, : H // 2] = False
    kw = dict(num_positive=3, num_negative=4, strategy=strategy, d_band=4, d_step=2, d_margin=1.5, other=other)
    got = sc(gt, generator=torch.Generator().manual_seed(H), **kw)
    assert torch.equal(got, oracle(gt, generator=torch.Generator().manual_seed(H), **kw))
    _check(got, gt.numpy(), other.numpy(), strategy, 3, 4, 4, 2, 1.5)


@pytest.mark.parametrize("strategy", [1, 2, 3])
def test_equals_reference(sc, strategy):
    """The same generator state gives the reference's clicks, images of several sizes in one batch
    shape each (B = 5: more images than the emulator's 3 blocks)."""
    rng = np.random.default_rng(20 + strategy)
    # no positive, or no negative, asked: the distances nothing reads are not computed
    counts = [(5, 6), (5, 6), (5, 6), (0, 6), (5, 0)]
    for (H, W), (d_band, d_step, d_margin), (num_pos, num_neg) in zip(
        [(31, 40), (9, 1), (24, 37), (13, 17), (13, 17)], PARAMS, counts
    ):
        gt = torch.from_numpy(_blobs(5, H, W, rng, "awkward"))
        other = torch.from_numpy(_blobs(5, H, W, rng))
        kw = dict(num_positive=num_pos, num_negative=num_neg, strategy=strategy, d_band=d_band, d_step=d_step,
                  d_margin=d_margin, other=other)  # fmt: skip
        want = oracle(gt, generator=torch.Generator().manual_seed(H), **kw)
        assert torch.equal(sc(gt, generator=torch.Generator().manual_seed(H), **kw), want), (H, W)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a registered op")
    op = pk.ops.sample_clicks.OP
    func = op.triton if backend == "triton" else op.compiled
    rng = np.random.default_rng(9)
    gt = torch.from_numpy(_blobs(2, 9, 11, rng)).to(device)
    keys = draw_keys(gt, torch.Generator(device=device).manual_seed(1))
    for strategy in (1, 2, 3):
        torch.library.opcheck(func, (gt, keys, gt if strategy == 2 else None, 2, 3, strategy, 4.0, 2.0, 1.0))


def test_compiles_fullgraph():
    gt = torch.from_numpy(_blobs(2, 9, 11, np.random.default_rng(10)))
    kw = dict(num_positive=2, num_negative=2, strategy=3, d_band=4)
    fn = torch.compile(lambda g: pk.sample_clicks(g, **kw), fullgraph=True, backend="eager")  # the default generator
    torch.manual_seed(4)
    got = fn(gt)
    torch.manual_seed(4)
    assert torch.equal(got, pk.sample_clicks(gt, **kw))


def test_meta_tensors():
    out = pk.sample_clicks(torch.empty(3, 5, 6, dtype=torch.bool, device="meta"), num_positive=2, num_negative=4,
                           strategy=1)  # fmt: skip
    assert out.shape == (3, 8, 3) and out.dtype == torch.float32


_GT = torch.zeros(2, 4, 5, dtype=torch.bool)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(gt=torch.zeros(4, 5, dtype=torch.bool)), ValueError, "gt must have 3 dims"),
        (dict(gt=torch.zeros(2, 4, 5)), TypeError, "gt must have dtype"),
        (dict(gt=[[0]]), TypeError, "gt must be a torch.Tensor"),
        (dict(strategy=4), ValueError, "strategy must be one of"),
        (dict(strategy=True), TypeError, "strategy must be an int"),
        (dict(strategy=2), ValueError, "strategy 2 samples from `other`"),
        (dict(strategy=2, other=torch.zeros(2, 5, 4, dtype=torch.bool)), ValueError, "other must have gt's shape"),
        (dict(strategy=2, other=torch.zeros(2, 4, 5)), TypeError, "other must have dtype"),
        (dict(num_positive=-1), ValueError, "num_positive must be in"),
        (dict(num_negative=2.5), TypeError, "num_negative must be an int"),
        (dict(d_band=-1.0), ValueError, "d_band must be >= 0"),
        (dict(d_step=float("nan")), ValueError, "d_step must be finite"),
        (dict(d_margin="5"), TypeError, "d_margin must be a float"),
        (dict(gt=_GT.to("meta"), generator=torch.Generator()), ValueError, "generator must be on gt's device"),
        (dict(generator=3), TypeError, "generator must be a torch.Generator"),
    ],
)  # fmt: skip
def test_bad_arguments(kwargs, exc, msg):
    args = {"gt": _GT, "num_positive": 1, "num_negative": 1, "strategy": 1, **kwargs}
    with pytest.raises(exc, match=msg):
        pk.sample_clicks(args.pop("gt"), **args)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fake_cuda_compile(backend):
    """The CUDA dispatch path traced on fake CUDA tensors (no GPU)."""
    out = compile_on_fake_cuda(
        lambda g: pk.sample_clicks(g, num_positive=2, num_negative=3, strategy=3, backend=backend),
        lambda: (torch.zeros(2, 8, 9, dtype=torch.bool).to("cuda"),),
    )
    assert out.device.type == "cuda" and out.shape == (2, 6, 3)


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("strategy", [1, 2, 3])
def test_no_host_sync(backend, device, strategy):
    """No call syncs the host (the default generator on the device; the thresholds reach the
    Triton kernel as bits, not as a tensor made from host values)."""
    rng = np.random.default_rng(30 + strategy)
    gt = torch.from_numpy(_blobs(4, 31, 40, rng)).to(device)
    other = torch.from_numpy(_blobs(4, 31, 40, rng)).to(device)
    kw = dict(num_positive=3, num_negative=4, strategy=strategy, d_band=9.5, d_step=3, d_margin=1.5, other=other)
    pk.sample_clicks(gt, backend=backend, **kw)  # warm-up (Triton compiles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.manual_seed(7)
        got = pk.sample_clicks(gt, backend=backend, **kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.manual_seed(7)
    assert torch.equal(got, pk.sample_clicks(gt, backend="reference", **kw))


# --- the property-based tests (tests/fuzz.py): masks of every dtype and pattern, zero sizes, seeds,
# d_step = 0 and d_margin = 0

FUZZ = FuzzRow(
    op="sample_clicks",
    fuzz=lambda d: {"gt": Mask(), "num_positive": Choice((0, 1, 3)), "num_negative": Choice((0, 2)), "strategy": Choice((1, 3)),
                     "d_band": Choice((40.0, 2.0)), "d_step": Choice((10.0, 1.0), extreme=(0.0,)),
                     "d_margin": Choice((5.0, 1.0), extreme=(0.0,)), "generator": Seeds()},  # fmt: skip
    call=lambda inp, be: (pk.sample_clicks(inp["gt"], num_positive=inp["num_positive"], num_negative=inp["num_negative"],
                                            strategy=inp["strategy"], d_band=inp["d_band"], d_step=inp["d_step"],
                                            d_margin=inp["d_margin"], generator=inp["generator"], backend=be),),  # fmt: skip
)
TestFuzz = fuzz_suite(FUZZ)

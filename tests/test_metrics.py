"""pixelkernels.metrics against independent implementations (issue 40 item 2).

- Saliency (MAE, F-measure curves, max / mean / adaptive F): ``pysodmetrics`` (Fmeasure and
  FmeasureV2, MAE) on random 8-bit maps of awkward sizes. Per-image precision, recall and F
  curves and the adaptive F: exactly equal (the same float64 operations); MAE and the data-set
  means (different summation orders): within 1e-12 relative.
- DAVIS J and F: the published definitions (``db_eval_iou``, ``f_measure``, ``seg2bmap`` of the
  DAVIS evaluation) written here in numpy, the dilation by a disc x² + y² <= r² with
  ``scipy.ndimage.binary_dilation`` (also checked equal to skimage's ``disk`` when installed):
  exactly equal on random blobs of odd sizes, with void pixels, empty masks and several
  tolerances.
- NoC: RITM's ``compute_noc_metric`` semantics in plain Python: exactly equal.
- Jaccard and mIoU: numpy with ``np.add.at``: exactly equal.

And: a (B, ...) batch equals B single-image calls; no host sync (Tensor.item & co. refused, and
torch.compile(fullgraph=True)); the accumulators give the same numbers in two halves (and under
a 2-process gloo all-reduce) as in one pass. On a GPU (marked cuda): the same numbers as on the
CPU, under torch.cuda.set_sync_debug_mode("error").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA

from pixelkernels import metrics
from pixelkernels.bench.host import on_host_syncs

try:
    from scipy import ndimage
except ImportError:  # pragma: no cover
    ndimage = None
needs_scipy = pytest.mark.skipif(ndimage is None, reason="scipy not installed")

SIZES = [(1, 1), (1, 7), (7, 1), (5, 3), (13, 17), (31, 45), (48, 85)]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _blobs(rng, H, W, p=0.5, sigma=2.0):
    """A random binary mask of smooth blobs (thresholded smoothed noise)."""
    noise = rng.standard_normal((H, W))
    if ndimage is not None and min(H, W) > 2:
        noise = ndimage.gaussian_filter(noise, sigma)
    return noise > np.quantile(noise, 1 - p)


# ----------------------------------------------------------------------------- saliency


def _saliency_cases(seed=0):
    """(sal uint8, gt uint8) pairs: random maps, gt values around 128, constant maps, empty and
    full ground truth, awkward sizes."""
    rng = _rng(seed)
    cases = []
    for H, W in SIZES:
        sal = rng.integers(0, 256, (H, W), dtype=np.uint8)
        fg, bg = rng.choice([129, 200, 255], (H, W)), rng.choice([0, 100, 128], (H, W))
        gt = np.where(_blobs(rng, H, W), fg, bg)
        cases.append((sal, gt.astype(np.uint8)))
    s = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    cases.append((s, np.zeros((9, 11), np.uint8)))  # empty gt
    cases.append((s, np.full((9, 11), 255, np.uint8)))  # all foreground
    half = (rng.random((9, 11)) > 0.5).astype(np.uint8) * 255
    cases.append((np.full((9, 11), 77, np.uint8), half))  # constant map
    cases.append((np.zeros((9, 11), np.uint8), half))  # all zero
    noise = rng.random((40, 33))
    smooth = np.clip(ndimage.gaussian_filter(noise, 3) * 255, 0, 255) if ndimage else noise * 255
    cases.append((smooth.astype(np.uint8), (smooth > 127).astype(np.uint8) * 255))
    return cases


def _sod():
    ps = pytest.importorskip("py_sod_metrics")
    return ps


def _ours(sal, gt, **kw):
    return metrics.f_measure(torch.from_numpy(sal)[None], torch.from_numpy(gt)[None], **kw)


def test_f_measure_equals_pysodmetrics_per_image():
    ps = _sod()
    for sal, gt in _saliency_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ps.Fmeasure()
        ref.step(sal, gt)
        mae_ref = ps.MAE()
        mae_ref.step(sal, gt)
        out = _ours(sal, gt)
        # exact: the same float64 operations in the same order
        assert np.array_equal(out.precision[0].numpy(), ref.precisions[0])
        assert np.array_equal(out.recall[0].numpy(), ref.recalls[0])
        assert np.array_equal(out.f[0].numpy(), ref.changeable_fms[0])
        assert out.adaptive_f[0].item() == float(ref.adaptive_fms[0])
        assert out.max_f[0].item() == ref.changeable_fms[0].max()
        assert math.isclose(out.mean_f[0].item(), ref.changeable_fms[0].mean(), rel_tol=1e-12, abs_tol=1e-15)
        got = metrics.mae(torch.from_numpy(sal)[None], torch.from_numpy(gt)[None])[0].item()
        assert math.isclose(got, float(mae_ref.maes[0]), rel_tol=1e-12, abs_tol=1e-15)


def test_f_measure_equals_pysodmetrics_v2_and_unnormalised():
    ps = _sod()
    rng = _rng(1)
    for H, W in [(13, 17), (31, 45), (2, 3)]:
        pred = rng.random((H, W))  # float64 in [0, 1], not normalised
        gt = _blobs(rng, H, W)
        ref = ps.FmeasureV2(metric_handlers={
            "f": ps.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
            "p": ps.PrecisionHandler(with_dynamic=True, with_adaptive=False),
            "r": ps.RecallHandler(with_dynamic=True, with_adaptive=False)})  # fmt: skip
        ref.step(pred, gt, normalize=False)
        res = ref.get_results()
        out = metrics.f_measure(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], normalize=False)
        assert np.array_equal(out.f[0].numpy(), res["f"]["dynamic"])
        assert np.array_equal(out.precision[0].numpy(), res["p"]["dynamic"])
        assert np.array_equal(out.recall[0].numpy(), res["r"]["dynamic"])
        assert out.adaptive_f[0].item() == float(res["f"]["adaptive"])
        mae_ref = ps.MAE()
        mae_ref.step(pred, gt, normalize=False)
        got = metrics.mae(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], normalize=False)[0].item()
        assert math.isclose(got, float(mae_ref.get_results()["mae"]), rel_tol=1e-12)


def test_saliency_dataset_equals_pysodmetrics():
    """Images of several sizes in batches of mixed size: the data-set table within 1e-12."""
    ps = _sod()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F = ps.Fmeasure()
    M = ps.MAE()
    acc = metrics.SaliencyMetrics()
    rng = _rng(2)
    for (H, W), B in [((13, 17), 3), ((31, 45), 1), ((7, 1), 4), ((20, 20), 2)]:
        sal = rng.integers(0, 256, (B, H, W), dtype=np.uint8)
        gt = (rng.random((B, H, W)) > 0.6).astype(np.uint8) * 255
        for b in range(B):
            F.step(sal[b], gt[b])
            M.step(sal[b], gt[b])
        acc.update(torch.from_numpy(sal), torch.from_numpy(gt))
    ref, out = F.get_results(), acc.compute()
    curve = ref["fm"]["curve"]
    close = dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["f"].numpy(), curve, **close)
    np.testing.assert_allclose(out["precision"].numpy(), ref["pr"]["p"], **close)
    np.testing.assert_allclose(out["recall"].numpy(), ref["pr"]["r"], **close)
    np.testing.assert_allclose(out["max_f"].item(), curve.max(), **close)
    np.testing.assert_allclose(out["mean_f"].item(), curve.mean(), **close)
    np.testing.assert_allclose(out["adaptive_f"].item(), ref["fm"]["adp"], **close)
    np.testing.assert_allclose(out["mae"].item(), M.get_results()["mae"], **close)
    assert out["count"].item() == 10


def test_saliency_gt_and_input_conventions():
    sal = torch.tensor([[[0, 64, 128, 255]]], dtype=torch.uint8)
    gt8 = torch.tensor([[[0, 128, 129, 255]]], dtype=torch.uint8)  # 128 is background (> 128)
    gtb = torch.tensor([[[False, False, True, True]]])
    for gt in (gt8, gtb, gt8.float() / 255, gt8.double() / 255, gt8.int()):
        torch.testing.assert_close(metrics.mae(sal, gt), metrics.mae(sal, gtb), rtol=0, atol=0)
        assert torch.equal(metrics.f_measure(sal, gt).f, metrics.f_measure(sal, gtb).f)
    # uint8 and float maps agree; curves are ordered by threshold 255, 254, ..., 0
    out = metrics.f_measure(sal, gtb)
    assert torch.equal(out.f, metrics.f_measure(sal.double() / 255, gtb).f)
    assert out.recall[0, -1] == 1 and out.precision[0, -1] == 0.5  # threshold 0: everything
    assert torch.all(out.recall[0, 1:] >= out.recall[0, :-1])


# ----------------------------------------------------------------------------- DAVIS


def _np_seg2bmap(seg):
    """seg2bmap of the DAVIS evaluation (after Martin et al.), written from its definition."""
    seg = seg.astype(bool)
    H, W = seg.shape
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, : W - 1] = seg[:, 1:]
    s[: H - 1, :] = seg[1:, :]
    se[: H - 1, : W - 1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[H - 1, :] = seg[H - 1, :] ^ e[H - 1, :]
    b[:, W - 1] = seg[:, W - 1] ^ s[:, W - 1]
    b[H - 1, W - 1] = False
    return b


def _np_disk(r):
    """skimage.morphology.disk(r) for integral r: offsets with x² + y² <= r²."""
    L = np.arange(-r, r + 1)
    X, Y = np.meshgrid(L, L)
    return X**2 + Y**2 <= r**2


def _np_davis_f(fg, gt, void, bound_th):
    """f_measure of the DAVIS 2017 evaluation, from its published definition."""
    if void is None:
        void = np.zeros_like(fg, dtype=bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fb = _np_seg2bmap(fg & ~void)
    gb = _np_seg2bmap(gt & ~void)
    disk = _np_disk(int(bound_pix))
    fdil = ndimage.binary_dilation(fb, structure=disk) if fb.any() else np.zeros_like(fb)
    gdil = ndimage.binary_dilation(gb, structure=disk) if gb.any() else np.zeros_like(gb)
    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = np.sum(fb & gdil) / float(n_fg), np.sum(gb & fdil) / float(n_gt)
    f = 0 if p + r == 0 else 2 * p * r / (p + r)
    return f, p, r


def _np_davis_j(fg, gt, void):
    if void is None:
        void = np.zeros_like(fg, dtype=bool)
    inter = np.sum(fg & gt & ~void)
    union = np.sum((fg | gt) & ~void)
    return 1.0 if union == 0 else inter / union


def _davis_cases(seed=3):
    rng = _rng(seed)
    out = []
    for H, W in [*SIZES, (61, 83)]:
        gt = _blobs(rng, H, W, p=0.4, sigma=3.0)
        pred = gt.copy()
        flip = _blobs(rng, H, W, p=0.15, sigma=1.0)  # perturb near and far from the boundary
        pred ^= flip
        void = rng.random((H, W)) > 0.9 if H * W > 20 else None
        out.append((pred, gt, void))
    H, W = 15, 22
    z = np.zeros((H, W), bool)
    blob = _blobs(rng, H, W)
    out += [(z, z, None), (z, blob, None), (blob, z, None), (blob, blob, np.ones((H, W), bool))]
    return out


@needs_scipy
@pytest.mark.parametrize("bound_th", [0.008, 0.03, 0.1, 1, 3])
def test_davis_f_and_j_equal_published_definition(bound_th):
    for pred, gt, void in _davis_cases():
        want_f, want_p, want_r = _np_davis_f(pred, gt, void, bound_th)
        tv = None if void is None else torch.from_numpy(void)[None]
        got = metrics.davis_f(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], tv, bound_th=bound_th)
        assert got.f.dtype == torch.float64
        got = (got.f.item(), got.precision.item(), got.recall.item())
        assert got == (float(want_f), float(want_p), float(want_r))
        j = metrics.davis_j(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], tv)
        assert j.item() == float(_np_davis_j(pred, gt, void))


def test_boundary_map_equals_seg2bmap():
    rng = _rng(4)
    for H, W in SIZES:
        m = _blobs(rng, H, W)
        assert np.array_equal(metrics.boundary_map(torch.from_numpy(m)[None])[0].numpy(), _np_seg2bmap(m))


def test_disc_is_skimage_disk():
    morphology = pytest.importorskip("skimage.morphology")
    for r in range(0, 12):
        assert np.array_equal(morphology.disk(r).astype(bool), _np_disk(r))


def test_davis_radius_at_480p():
    # ceil(0.008 * sqrt(480² + 854²)) = 8: a boundary 8 pixels away matches, 9 does not
    H, W = 480, 854
    assert metrics._bound_pix(H, W, 0.008) == 8.0
    gt = torch.zeros(2, H, W, dtype=torch.bool)
    gt[:, 100:300, 100:400] = True
    pred = torch.zeros_like(gt)
    pred[0, 100:300, 100:408] = True  # right edge 8 px out
    pred[1, 100:300, 100:409] = True  # 9 px out
    rec = metrics.davis_f(pred, gt).recall
    assert rec[0] == 1 and rec[1] < 1


# ----------------------------------------------------------------------------- region similarity


def test_jaccard_and_miou_equal_numpy():
    rng = _rng(5)
    C = 5
    for H, W in SIZES:
        B = 3
        gt = rng.integers(0, C, (B, H, W))
        gt[rng.random((B, H, W)) > 0.8] = 255
        pred = rng.integers(0, C + 2, (B, H, W))  # some predictions outside [0, C)
        cm = np.zeros((C, C + 1), np.int64)
        ok = gt != 255
        np.add.at(cm, (gt[ok], np.minimum(pred[ok], C)), 1)
        inter = np.diag(cm[:, :C])
        union = cm.sum(1) + cm[:, :C].sum(0) - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        want = np.nanmean(iou) if np.any(union > 0) else np.nan
        for dtype in (torch.uint8, torch.int32, torch.int64):
            tp, tg = torch.from_numpy(pred).to(dtype), torch.from_numpy(gt).to(dtype)
            got_iou, got = metrics.miou(tp, tg, C)
            np.testing.assert_array_equal(got_iou.numpy(), iou)
            assert got.item() == pytest.approx(want, rel=1e-15)
            assert np.array_equal(metrics.confusion_matrix(tp, tg, C).sum(0).numpy(), cm[:, :C])
        # binary jaccard per image with a valid mask
        p, g, v = pred == 1, gt == 1, gt != 255
        want_j = [_np_davis_j(p[b], g[b], ~v[b]) for b in range(B)]
        got_j = metrics.jaccard(torch.from_numpy(p), torch.from_numpy(g), valid=torch.from_numpy(v))
        assert got_j.tolist() == [float(x) for x in want_j]


def test_miou_ignore_index_inside_the_classes():
    gt = torch.tensor([[[0, 0, 1, 2, 1]]])
    pred = torch.tensor([[[1, 0, 1, 2, 0]]])
    iou, m = metrics.miou(pred, gt, 3, ignore_index=0)  # gt 0 left out; class 0 still predicted
    assert iou.tolist() == [0.0, 0.5, 1.0] and m.item() == 0.5
    cm = metrics.confusion_matrix(pred, gt, 3, ignore_index=0)
    assert cm.tolist() == [[[0, 0, 0], [1, 1, 0], [0, 0, 1]]]


def test_miou_absent_classes():
    gt = torch.zeros(1, 2, 2, dtype=torch.long)
    iou, m = metrics.miou(gt, gt, 3)
    assert iou[0] == 1 and iou[1:].isnan().all() and m == 1
    iou, m = metrics.miou(gt, torch.full_like(gt, 255), 3)  # everything ignored
    assert iou.isnan().all() and m.isnan()


# ----------------------------------------------------------------------------- NoC


def _ritm_noc(all_ious, iou_thrs, max_clicks):
    """RITM's compute_noc_metric, per image (its mean is the reported NoC)."""

    def get_noc(iou_arr, thr):
        vals = iou_arr >= thr
        return int(np.argmax(vals)) + 1 if np.any(vals) else max_clicks

    return [[get_noc(a, t) for a in all_ious] for t in iou_thrs]


def test_noc_equals_ritm():
    rng = _rng(6)
    for B, K in [(1, 1), (7, 20), (13, 5), (3, 37)]:
        # increasing-ish IoU tables with ties at the thresholds, NaNs and dips
        ious = np.clip(np.cumsum(rng.random((B, K)) * 0.3, 1) + rng.normal(0, 0.05, (B, K)), 0, 1)
        ious[rng.random((B, K)) > 0.9] = 0.85
        ious[rng.random((B, K)) > 0.95] = 0.9
        ious[rng.random((B, K)) > 0.97] = np.nan
        for dtype in (torch.float32, torch.float64):
            t = torch.from_numpy(ious).to(dtype)
            thrs = (0.85, 0.90, 0.5)
            got = metrics.noc(t, thrs, max_clicks=K)
            want = _ritm_noc(t.numpy(), [np.dtype(t.numpy().dtype).type(x) for x in thrs], K)
            assert got.noc.T.tolist() == want
            torch.testing.assert_close(got.miou, t.mean(0), rtol=0, atol=0, equal_nan=True)
    # max_clicks below / above the table's width
    t = torch.tensor([[0.1, 0.2, 0.95]])
    assert metrics.noc(t, max_clicks=2).noc.tolist() == [[2, 2]]
    assert metrics.noc(t[:, :2], max_clicks=20).noc.tolist() == [[20, 20]]


def test_noc_matches_interactive_model():
    """The model's own NoC (models/interactive.py) counts the same way."""
    rng = _rng(7)
    ious = torch.from_numpy(rng.random((9, 20)))
    for thr in (0.85, 0.90):
        hit = ious >= thr
        first = hit.float().argmax(1) + 1
        model_way = torch.where(hit.any(1), first, torch.full_like(first, 20))
        col = (0.85, 0.90).index(thr)
        assert torch.equal(metrics.noc(ious).noc[:, col], model_way)


# ----------------------------------------------------------------------------- batch, sync, compile


def _mask_batch(rng, B, H, W):
    return torch.from_numpy(np.stack([_blobs(rng, H, W) for _ in range(B)]))


def test_batch_equals_single_calls():
    rng = _rng(8)
    B, H, W = 5, 19, 23
    pred, gt = _mask_batch(rng, B, H, W), _mask_batch(rng, B, H, W)
    void = torch.from_numpy(rng.random((B, H, W)) > 0.9)
    sal = torch.from_numpy(rng.integers(0, 256, (B, H, W), dtype=np.uint8))
    lab_p = torch.from_numpy(rng.integers(0, 4, (B, H, W)))
    lab_g = torch.from_numpy(rng.integers(0, 4, (B, H, W)))
    ious = torch.from_numpy(rng.random((B, 20)))
    batched = {
        "jaccard": metrics.jaccard(pred, gt, valid=~void),
        "davis_f": torch.stack(metrics.davis_f(pred, gt, void)),
        "boundary": metrics.boundary_map(pred),
        "mae": metrics.mae(sal, gt),
        "f": torch.cat([t.reshape(B, -1) for t in metrics.f_measure(sal, gt)], 1),
        "cm": metrics.confusion_matrix(lab_p, lab_g, 4),
        "noc": metrics.noc(ious).noc,
    }
    for b in range(B):
        s = slice(b, b + 1)
        single = {
            "jaccard": metrics.jaccard(pred[s], gt[s], valid=~void[s]),
            "davis_f": torch.stack(metrics.davis_f(pred[s], gt[s], void[s])),
            "boundary": metrics.boundary_map(pred[s]),
            "mae": metrics.mae(sal[s], gt[s]),
            "f": torch.cat([t.reshape(1, -1) for t in metrics.f_measure(sal[s], gt[s])], 1),
            "cm": metrics.confusion_matrix(lab_p[s], lab_g[s], 4),
            "noc": metrics.noc(ious[s]).noc,
        }
        for k, v in single.items():
            want = batched[k][:, b : b + 1] if k == "davis_f" else batched[k][s]
            assert torch.equal(v, want), k


def _all_calls(device="cpu"):
    rng = _rng(9)
    B, H, W = 3, 17, 21
    pred, gt = _mask_batch(rng, B, H, W).to(device), _mask_batch(rng, B, H, W).to(device)
    void = torch.from_numpy(rng.random((B, H, W)) > 0.9).to(device)
    sal = torch.from_numpy(rng.integers(0, 256, (B, H, W), dtype=np.uint8)).to(device)
    lab = torch.from_numpy(rng.integers(0, 4, (B, H, W))).to(device)
    ious = torch.from_numpy(rng.random((B, 20))).to(device)
    track = torch.tensor([0, 1, 0], device=device)
    out = {
        "jaccard": metrics.jaccard(pred, gt, valid=~void),
        "davis_j": metrics.davis_j(pred, gt, void),
        "davis_f": metrics.davis_f(pred, gt, void),
        "boundary_map": metrics.boundary_map(gt),
        "confusion_matrix": metrics.confusion_matrix(lab, lab.flip(0), 4),
        "miou": metrics.miou(lab, lab.flip(0), 4),
        "mae": metrics.mae(sal, gt),
        "f_measure": metrics.f_measure(sal, gt),
        "noc": metrics.noc(ious),
    }
    accs = [
        (metrics.ConfusionMatrix(4, device=device), (lab, lab.flip(0))),
        (metrics.SaliencyMetrics(device=device), (sal, gt)),
        (metrics.DavisMetrics(2, device=device), (track, pred, gt, void)),
        (metrics.NoCMetrics(device=device), (ious,)),
    ]
    for acc, args in accs:
        acc.update(*args)
        acc.update(*args)
        out[type(acc).__name__] = acc.compute()
    return out


def test_no_host_sync():
    def refuse(name):
        raise AssertionError(f"host sync: {name}")

    with on_host_syncs(refuse):
        _all_calls()


def test_compiles_fullgraph():
    torch._dynamo.reset()
    rng = _rng(10)
    pred, gt = _mask_batch(rng, 2, 13, 17), _mask_batch(rng, 2, 13, 17)
    sal = torch.from_numpy(rng.integers(0, 256, (2, 13, 17), dtype=np.uint8))

    def fn(pred, gt, sal):
        return metrics.davis_f(pred, gt).f, metrics.f_measure(sal, gt).f, metrics.jaccard(pred, gt)

    got = torch.compile(fn, fullgraph=True, backend="eager")(pred, gt, sal)
    for a, b in zip(got, fn(pred, gt, sal)):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- accumulators


def _accumulator_batches(rng):
    B, H, W = 6, 15, 19
    pred, gt = _mask_batch(rng, B, H, W), _mask_batch(rng, B, H, W)
    labels = [torch.from_numpy(rng.integers(0, n, (B, H, W))) for n in (6, 5)]
    sal = torch.from_numpy(rng.integers(0, 256, (B, H, W), dtype=np.uint8))
    void = torch.from_numpy(rng.random((B, H, W)) > 0.9)
    ious = torch.from_numpy(rng.random((B, 20)))
    return {
        "ConfusionMatrix": (lambda: metrics.ConfusionMatrix(5), tuple(labels)),
        "SaliencyMetrics": (lambda: metrics.SaliencyMetrics(), (sal, gt)),
        "DavisMetrics": (lambda: metrics.DavisMetrics(4), (torch.tensor([0, 1, 1, 3, 0, 1]), pred, gt, void)),
        "NoCMetrics": (lambda: metrics.NoCMetrics(max_clicks=20), (ious,)),
    }


def _equal(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-15, equal_nan=True, msg=k)


def test_accumulators_split_equals_one_pass():
    for name, (make, args) in _accumulator_batches(_rng(11)).items():
        one = make()
        one.update(*args)
        halves = [make(), make()]
        halves[0].update(*(a[:2] for a in args))
        halves[1].update(*(a[2:] for a in args))
        # what all_reduce(SUM) does, by hand
        for k in halves[0].state:
            halves[0].state[k] = halves[0].state[k] + halves[1].state[k]
        _equal(one.compute(), halves[0].compute())


def test_davis_accumulator_definition():
    acc = metrics.DavisMetrics(3)
    rng = _rng(12)
    B, H, W = 7, 11, 13
    pred, gt = _mask_batch(rng, B, H, W), _mask_batch(rng, B, H, W)
    track = torch.tensor([0, 0, 0, 2, 2, 0, 2])
    acc.update(track, pred, gt)
    out = acc.compute()
    j, f = metrics.davis_j(pred, gt), metrics.davis_f(pred, gt).f
    per_j = [j[track == t].mean() for t in (0, 2)]
    per_f = [f[track == t].mean() for t in (0, 2)]
    rec_j = [(j[track == t] > 0.5).double().mean() for t in (0, 2)]
    torch.testing.assert_close(out["J_mean"], sum(per_j) / 2)
    torch.testing.assert_close(out["F_mean"], sum(per_f) / 2)
    torch.testing.assert_close(out["J_recall"], sum(rec_j) / 2)
    assert out["tracks"].item() == 2 and out["J_track"][1].isnan()


def _gloo_worker(rank, world, port, q):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {}
        for name, (make, args) in _accumulator_batches(_rng(11)).items():
            acc = make()
            acc.update(*(a[rank * 3 : rank * 3 + 3] for a in args))
            acc.reduce()
            results[name] = {k: v.numpy() for k, v in acc.compute().items()}  # no shared-memory tensors
        q.put((rank, results))
    finally:
        dist.destroy_process_group()


def test_accumulators_gloo_two_processes():
    """A real 2-process all_reduce (gloo) gives one process's numbers on every rank."""
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")  # a fork would inherit the parent's thread pools
    q = ctx.Queue()
    procs = [ctx.Process(target=_gloo_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(q.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for name, (make, args) in _accumulator_batches(_rng(11)).items():
        one = make()
        one.update(*args)
        want = one.compute()
        for rank in (0, 1):
            _equal(want, {k: torch.from_numpy(v) for k, v in got[rank][name].items()})


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    m = torch.zeros(1, 3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="gt"):
        metrics.jaccard(m, torch.zeros(1, 3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="pred"):
        metrics.jaccard(m.float(), m)
    with pytest.raises(TypeError, match="sal"):
        metrics.f_measure(torch.zeros(1, 3, 3, dtype=torch.int32), m)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.miou(m.long(), m.long(), 0)
    with pytest.raises(ValueError, match="ious"):
        metrics.noc(torch.zeros(3))
    with pytest.raises(ValueError, match="bound_th"):
        metrics.davis_f(m, m, bound_th=0)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_equals_cpu_without_sync():
    want = _all_calls("cpu")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = _all_calls("cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    flat_w = torch.utils._pytree.tree_leaves(want)
    flat_g = torch.utils._pytree.tree_leaves(got)
    assert len(flat_w) == len(flat_g)
    for a, b in zip(flat_w, flat_g):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-15, equal_nan=True)


def _db_decay(per_frame: np.ndarray) -> float:
    """The DAVIS evaluation's decay (db_statistics): four bins over the frames by
    round(linspace(1, N, 5) + 1e-10) - 1, each inclusive of both bounds; first bin's mean minus
    the last's."""
    ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(int)
    bins = [per_frame[ids[i]: ids[i + 1] + 1] for i in range(4)]
    return float(np.mean(bins[0]) - np.mean(bins[3]))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 13, 40, 81])
def test_davis_decay_bins_equal_the_published_ones(n):
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(int)
    first, last = metrics._decay_bins(torch.arange(n), torch.full((n,), n))
    assert first.tolist() == [ids[0] <= t <= ids[1] for t in range(n)]
    assert last.tolist() == [ids[3] <= t <= ids[4] for t in range(n)]


def test_davis_decay_equals_the_published_definition():
    """Two tracks of 9 and 6 counted frames, given frame by frame in a shuffled order and two
    batches: each track's decay is db_statistics' on its per-frame J and F, and the data set's
    their mean."""
    g = torch.Generator().manual_seed(3)
    lengths = (9, 6)
    gt = torch.zeros(sum(lengths), 17, 19, dtype=torch.bool)
    gt[:, 4:12, 5:15] = True
    pred = gt.clone()
    for i in range(gt.shape[0]):  # each frame misses a different part: J and F vary
        r = int(torch.randint(0, 9, (1,), generator=g))
        pred[i, 4:4 + r] = False
    track = torch.tensor([0] * 9 + [1] * 6)
    frame = torch.tensor(list(range(9)) + list(range(6)))
    frames = torch.tensor([9] * 9 + [6] * 6)
    order = torch.randperm(len(track), generator=g)
    acc = metrics.DavisMetrics(2)
    for half in order.chunk(2):
        acc.update(track[half], pred[half], gt[half], frame=frame[half], frames=frames[half])
    out = acc.compute()
    j = metrics.davis_j(pred, gt).numpy()
    f = metrics.davis_f(pred, gt).f.numpy()
    for key, v in (("J_decay", j), ("F_decay", f)):
        want = np.mean([_db_decay(v[:9]), _db_decay(v[9:])])
        assert out[key].item() == pytest.approx(want, rel=1e-12, abs=1e-15), key
    plain = metrics.DavisMetrics(2)
    plain.update(track, pred, gt)  # without positions: no decay, the rest the same
    assert math.isnan(plain.compute()["J_decay"].item())
    assert plain.compute()["J_mean"].item() == pytest.approx(out["J_mean"].item(), rel=1e-12)

"""The best-PyTorch baselines of the bench (pixelkernels/baselines) against the references, in
float64 on awkward inputs (ignored pixels, empty regions, an all-ignored image, labels outside
[0, R), non-contiguous layouts, a pixel on its centroid): values and gradients to SPEC §4's
float64 tolerance; in float32 too, to float32's. A baseline that computes something else would
make the bench's second speedup column meaningless."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, make_emb, make_labels, make_weights, weighted_loss

import pixelkernels as pk
from pixelkernels import baselines
from pixelkernels.bench import cases
from pixelkernels.reference import region_losses as ref_losses
from pixelkernels.testing import max_rel_error


def _labelled(B, D, H, W, R, *, layout="contiguous", pattern="random", softmax=False, fix=None):
    def make(dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout)
        if softmax:
            emb = emb.double().softmax(1).to(dtype)
        lab = make_labels(B, H, W, R, device="cpu", pattern=pattern)
        if fix is not None:
            lab = fix(lab.clone())
        return [emb.requires_grad_(True), lab]

    return make


def _weighted(B, C, H, W, *, pattern="soft", layout="contiguous"):
    def make(dtype):
        feat = make_emb(B, C, H, W, dtype=dtype, device="cpu", layout=layout)
        return [
            feat.requires_grad_(True),
            make_weights(B, H, W, dtype=dtype, device="cpu", pattern=pattern).requires_grad_(True),
        ]

    return make


def _map(B, D, H, W, *, layout="contiguous"):
    def make(dtype):
        return [make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout).requires_grad_(True)]

    return make


def _centered(B, D, H, W, *, on_center=False, layout="contiguous"):
    def make(dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout)
        center = torch.linspace(-1, 2, B * D, dtype=torch.float64).view(B, D).to(dtype)
        if on_center:  # a pixel exactly on its center: the norm's gradient is 0 there
            emb = emb.clone()
            emb[:, :, 1, 2] = center
        return [emb.requires_grad_(True), center.requires_grad_(True)]

    return make


def _with_centroids(make_labelled, R):
    """emb, labels and the regions' own centroids (a leaf): one pixel per image sits exactly on
    its centroid, where the hinge's norm has gradient 0."""

    def make(dtype):
        emb, lab = make_labelled(dtype)
        c = pk.region_stats(emb.detach(), lab, R, backend="reference")[1].clone()
        c[:, 0] = emb.detach()[:, :, 0, 0]  # pixel (0, 0)'s centroid is itself where its label is 0
        return [emb, lab, c.requires_grad_(True)]

    return make


def _triplets(B, D, H, W, K, *, layout="contiguous"):
    """emb and three index sets with -1 padding and repeated pixels (tests/test_triplet_hinge.py)."""
    from test_triplet_hinge import index_sets

    def make(dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout)
        return [emb.requires_grad_(True), *index_sets(B, H, W, K, seed=B + K)]

    return make


def _one_pixel_classes(B, D, H, W):
    def make(dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device="cpu")
        mask = torch.full((B, H, W), -1, dtype=torch.int64)
        mask[:, 1, 2], mask[:, 3, 1] = 1, 0
        mask[-1, 1, 2] = -1  # the last image has no foreground: left out
        return [emb.requires_grad_(True), mask]

    return make


def _empty_region(lab):
    lab[0][lab[0] == 1] = 0  # image 0 has no pixel in region 1
    return lab


def _out_of_range(lab):
    lab[:, 0, :] = 7  # labels >= R take part in nothing
    return lab


def _all_ignored(lab):
    lab[-1] = -1
    return lab


# (id, op name in both folders, inputs, extra positional arguments)
CASES = [
    ("region_stats", "region_stats", _labelled(3, 5, 7, 9, 4), (4,)),
    (
        "region_stats-gaps-channels_last",
        "region_stats",
        _labelled(2, 3, 6, 5, 5, pattern="gaps", layout="channels_last"),
        (5,),
    ),
    (
        "region_stats-slice-oob",
        "region_stats",
        _labelled(2, 4, 5, 6, 3, layout="slice", fix=_out_of_range),
        (3,),
    ),
    ("region_stats-ignored", "region_stats", _labelled(2, 3, 4, 5, 3, fix=_all_ignored), (3,)),
    ("region_stats-no-variance", "region_stats", _labelled(2, 3, 5, 5, 3), (3, -1, False)),
    ("region_hinge", "region_hinge", _with_centroids(_labelled(3, 4, 6, 7, 3), 3), (0.5,)),
    (
        "region_hinge-blobs-delta0",
        "region_hinge",
        _with_centroids(_labelled(2, 3, 8, 5, 4, pattern="blobs", layout="transposed"), 4),
        (0.0,),
    ),
    ("centroid_hinge", "centroid_hinge", _labelled(3, 4, 6, 7, 4, fix=_empty_region), (4, 0.5)),
    (
        "centroid_hinge-ignored-oob",
        "centroid_hinge",
        _labelled(2, 3, 5, 6, 3, fix=lambda lab: _all_ignored(_out_of_range(lab))),
        (3, 1.0),
    ),
    ("masked_sum", "masked_sum", _weighted(3, 5, 6, 7), ()),
    (
        "masked_sum-zero-transposed",
        "masked_sum",
        _weighted(2, 3, 5, 4, pattern="transposed", layout="slice"),
        (),
    ),
    ("pixel_normalize", "pixel_normalize", _map(2, 5, 4, 6, layout="channels_last"), ()),
    ("pixel_normalize-upcast", "pixel_normalize", _map(2, 3, 4, 5), (1e-12, True)),
    ("center_distance", "center_distance", _centered(2, 4, 5, 6, on_center=True), ()),
    ("center_distance-squared", "center_distance", _centered(2, 3, 4, 5, layout="slice"), (True,)),
    ("menet_metric_loss", "menet_metric_loss", _labelled(3, 4, 6, 7, 2, fix=_empty_region), ()),
    (
        "menet_metric_loss-pairwise-normalize",
        "menet_metric_loss",
        _labelled(3, 4, 6, 7, 2),
        ("pairwise", True),
    ),
    (
        "menet_metric_loss-oob-ignored",
        "menet_metric_loss",
        _labelled(2, 3, 5, 6, 2, fix=lambda lab: _all_ignored(_out_of_range(lab))),
        ("pairwise",),
    ),
    ("cas_loss", "cas_loss", _labelled(3, 4, 6, 7, 2, softmax=True), (2,)),
    (
        "cas_loss-many-gaps",
        "cas_loss",
        _labelled(2, 5, 6, 7, 6, softmax=True, pattern="gaps", layout="channels_last"),
        (6, 0.3),
    ),
    ("discriminative_loss", "discriminative_loss", _labelled(3, 4, 8, 7, 5, fix=_empty_region), (5,)),
    (
        "discriminative_loss-one-instance",
        "discriminative_loss",
        _labelled(2, 3, 5, 6, 3, pattern="one"),
        (3, 0.2, 1.0, 1.0, 0.5, 0.1),
    ),
    (
        "discriminative_loss-ignored",
        "discriminative_loss",
        _labelled(2, 3, 6, 5, 4, pattern="blobs", fix=_all_ignored),
        (4,),
    ),
    ("masked_average_pool", "masked_average_pool", _weighted(3, 4, 5, 6, pattern="binary"), ()),
    ("menet_saliency", "menet_saliency", _weighted(2, 4, 5, 6), ()),
    ("menet_saliency-zero-weights-squared", "menet_saliency", _weighted(2, 3, 4, 5, pattern="zero"), (True,)),
    ("triplet_hinge", "triplet_hinge", _triplets(3, 5, 7, 9, 15), (1.0,)),
    ("triplet_hinge-squared-slice", "triplet_hinge", _triplets(2, 4, 6, 7, 12, layout="slice"), (3.0, True)),
    ("triplet_hinge-hard", "triplet_hinge", _triplets(3, 6, 8, 7, 20), (1.0, False, True)),
    ("triplet_hinge-hard-squared-cl", "triplet_hinge", _triplets(2, 5, 6, 7, 14, layout="channels_last"), (2.0, True, True)),
    # One foreground and one background pixel per image: the draws are the same for any sampler.
    ("is_triplet_loss", "is_triplet_loss", _one_pixel_classes(3, 4, 5, 6), (10, 3.0)),
    ("is_triplet_loss-hard-squared", "is_triplet_loss", _one_pixel_classes(2, 3, 4, 4), (10, 1.0, True, "hard")),
]
LOSSES = {"menet_metric_loss", "cas_loss", "discriminative_loss", "masked_average_pool", "menet_saliency"}


def _reference(op):
    return getattr(ref_losses, op) if op in LOSSES else getattr(pk.reference, op)


def _run(fn, inputs, extra):
    out = fn(*inputs, *extra)
    out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(weighted_loss(out, None), leaves, allow_unused=True)
    return out, [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cid,op,make,extra", CASES, ids=[c[0] for c in CASES])
def test_baseline_matches_reference(cid, op, make, extra, dtype):
    """float64: SPEC §4's float64 tolerance, elementwise (the same formula). float32: the bench's
    error column, max|got - ref| / max|ref| <= 1e-5 per output and gradient (a centroid's
    gradient sums per-pixel terms that cancel, so one element can miss float32's elementwise
    tolerance by its rounding, as the float32 reference's own does)."""
    inputs = make(dtype)
    # The reference in float64 (centroid_hinge's computes in float64 whatever the input).
    ref_in = [
        t.detach().double().requires_grad_(t.requires_grad) if t.is_floating_point() else t for t in inputs
    ]
    want, want_grads = _run(_reference(op), ref_in, extra)
    got, got_grads = _run(getattr(baselines, op), inputs, extra)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == (w.dtype if dtype == torch.float64 or not w.is_floating_point() else dtype), f"output {i}"
    for what, pairs in (("output", zip(got, want)), ("gradient", zip(got_grads, want_grads))):
        for i, (g, w) in enumerate(pairs):
            if dtype == torch.float64:
                assert_close(g, w, dtype, msg=f"{cid} {what} {i}")
            else:
                assert max_rel_error(g, w) <= 1e-5, f"{cid} {what} {i}: {max_rel_error(g, w):.2e}"


@pytest.mark.parametrize("key", [c.key for c in cases.CASES if "cpu" in c.devices and c.small])
def test_every_bench_row_has_a_baseline_that_agrees(key):
    """Every row of the bench table: its baseline and its timed reference (in the row's dtype)
    give the reference's values on the row's small input."""
    case = cases.find(*key.split(":"))
    inp = case.small(torch.device("cpu"))
    want = pk_outputs(case.run(inp, "reference"))
    ref_inputs = bench_cases_float64(inp)
    # the row's own call (a row that draws from a generator seeds it there)
    oracle = pk_outputs((case.call or cases.public_op(case.op))(ref_inputs, "reference"))
    for name in ("baseline", "reference"):
        got = pk_outputs(case.run(inp, name))
        for i, (g, w) in enumerate(zip(got, oracle)):
            assert g.dtype == want[i].dtype, f"{name} output {i}"
            assert_close(g, w, g.dtype, msg=f"{key} {name} output {i}")


def pk_outputs(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def bench_cases_float64(inp):
    """The same inputs in float64 (the oracle's precision)."""
    args = tuple(
        a.detach().double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in inp.args
    )
    return cases.Inputs(args=args, kwargs=dict(inp.kwargs))

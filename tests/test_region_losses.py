"""The region losses (menet_metric_loss, cas_loss, discriminative_loss, masked_average_pool,
menet_saliency): the generic contract (tests/contract.py) per loss, with the straightforward
one-hot oracles of pixelkernels/reference/region_losses.py as the reference; the closed forms
of seed 001 eqs. 2 and 3 against a brute-force pairwise computation; the SPEC §2 empty-set
rules; the nn modules."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import BACKENDS, make_emb, make_labels, make_weights
from fuzz import Choice, Floats, Ignore, Labels, Size
from contract import Contract, _agree_one, suite
from contract import as_reference as contract_as_reference

import pixelkernels as pk


def _scalar_loss(out, inp):
    return out[0] * 1.7


def _emb_labels(B, D, H, W, R, layout="contiguous", pattern="random", ignore=-1, label_dtype=torch.int64, fix=None,
                softmax=False, **kw):  # fmt: skip
    """emb and labels; `fix(labels)` edits the labels (e.g. empties a region of one image)."""

    def make(device, dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout)
        if softmax:  # CAS scores: a softmax over the channels, computed in float64, layout kept
            emb = emb.double().softmax(1).to(dtype)
        labels = make_labels(B, H, W, R, device=device, pattern=pattern, ignore_index=ignore)
        if fix is not None:
            labels = fix(labels.clone())
        return {"emb": emb, "labels": labels.to(label_dtype), "R": R, "ignore_index": ignore, **kw}

    return make


def _zero_cases(make):
    return {
        f"{'x'.join(map(str, s))}": make(*s)("cpu", torch.float32)
        for s in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]
    }


def _first_image(value):
    def fix(lab):
        lab[0] = value
        return lab

    return fix


# ---------------------------------------------------------------------------------------------
# menet_metric_loss


def _menet_call(inp, backend):
    return (
        pk.menet_metric_loss(
            inp["emb"], inp["labels"], form=inp.get("form", "centroid"), normalize=inp.get("normalize", False),
            ignore_index=inp["ignore_index"], backend=backend,
        ),
    )  # fmt: skip


def _menet(B, D, H, W, **kw):
    return _emb_labels(B, D, H, W, 2, **kw)


MENET = Contract(
    op="menet_metric_loss",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W"), regions=2, name="mask"),
                     "form": Choice(("centroid", "pairwise")), "normalize": Choice((False, True)), "ignore_index": Ignore()},
    uses=("region_loss",),
    make=_menet(2, 5, 7, 9, form="pairwise", label_dtype=torch.int16),
    call=_menet_call,
    shaped=lambda B, D, H, W, layout: _menet(B, D, H, W, layout=layout, form="pairwise"),
    loss=_scalar_loss,
    grad_inputs=("emb",),
    tiny=_menet(2, 3, 3, 4, form="pairwise"),
    zero_sizes=_zero_cases(_menet),
    bad_inputs={
        "emb_rank": (
            _menet(2, 3, 4, 5)("cpu", torch.float32) | {"emb": torch.randn(3, 4, 5)},
            ValueError,
            "emb must have 4 dims",
        ),
        "mask_values": (
            _menet(2, 3, 4, 5)("cpu", torch.float32) | {"labels": torch.full((2, 4, 5), 2)},
            ValueError,
            "mask values must be in [0, 2)",
        ),
        "mask_float": (
            _menet(2, 3, 4, 5)("cpu", torch.float32) | {"labels": torch.zeros(2, 4, 5)},
            TypeError,
            "mask must have dtype",
        ),
        "form": (_menet(2, 3, 4, 5, form="pairs")("cpu", torch.float32), ValueError, "form must be"),
    },
    cases={
        "centroid_odd": _menet(2, 3, 7, 5),
        "d1": _menet(1, 1, 9, 11, form="pairwise"),
        "d17_channels_last": _menet(3, 17, 5, 13, layout="channels_last", form="pairwise"),
        "d130_slice": _menet(1, 130, 3, 5, layout="slice"),
        "normalize": _menet(2, 6, 7, 9, normalize=True),
        "normalize_pairwise_cl": _menet(2, 16, 6, 7, layout="channels_last", normalize=True, form="pairwise"),
        "one_image_no_background": _menet(3, 4, 5, 6, form="pairwise", fix=_first_image(1)),
        "one_image_all_ignored": _menet(3, 4, 5, 6, fix=_first_image(-1)),
        "all_one_label": _menet(2, 4, 5, 5, pattern="one"),
        "all_ignored": _menet(2, 4, 5, 5, pattern="ignored", form="pairwise"),
        "one_pixel": _menet(1, 3, 1, 1, pattern="one"),
        "batch7_uint8": _menet(7, 3, 5, 3, ignore=255, label_dtype=torch.uint8, form="pairwise"),
        "ignore_inside_range": _menet(2, 3, 7, 9, ignore=1),
        "long_image": _menet(1, 2, 3, 3001, form="pairwise"),
    },
)

TestMEnet = suite(MENET)


def _pairwise_brute_force(emb, mask):
    """Seed 001 eq. 2 and eq. 3 straight from their definitions, with every pixel pair."""
    B = emb.shape[0]
    eq2, eq3 = [], []
    for b in range(B):
        f = emb[b].flatten(1).T  # (P, D)
        m = mask[b].flatten()
        keep = (m == 0) | (m == 1)
        f, m = f[keep], m[keep]
        if (m == 1).sum() == 0 or (m == 0).sum() == 0:
            continue
        d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)  # (N, N)
        same = m[:, None] == m[None, :]
        pos = (d2 * same).sum(1) / same.sum(1)
        neg = (d2 * ~same).sum(1) / (~same).sum(1)
        eq2.append((pos - neg).mean())
        c = {k: f[m == k].mean(0) for k in (0, 1)}
        own = torch.stack([c[int(k)] for k in m])
        other = torch.stack([c[1 - int(k)] for k in m])
        eq3.append((((f - own) ** 2).sum(1) - ((f - other) ** 2).sum(1)).mean())
    return torch.stack(eq2).mean(), torch.stack(eq3).mean()


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("sizes", ["unequal", "equal"])
def test_menet_closed_forms_match_brute_force(backend, device, sizes):
    """eq. 3 = -mean ||c+ - c-||^2 exactly; eq. 2 = eq. 3 only for equal region sizes."""
    emb = make_emb(3, 5, 6, 8, dtype=torch.float64, device="cpu")
    mask = make_labels(3, 6, 8, 2, device="cpu")
    if sizes == "equal":
        mask = (torch.arange(48).view(1, 6, 8) % 2).expand(3, 6, 8).clone()
    eq2, eq3 = _pairwise_brute_force(emb, mask)
    got2 = pk.menet_metric_loss(emb.to(device), mask.to(device), form="pairwise", backend=backend).cpu()
    got3 = pk.menet_metric_loss(emb.to(device), mask.to(device), form="centroid", backend=backend).cpu()
    torch.testing.assert_close(got2, eq2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got3, eq3, rtol=1e-10, atol=1e-12)
    assert (abs(float(eq2 - eq3)) < 1e-10) == (sizes == "equal")


# ---------------------------------------------------------------------------------------------
# cas_loss


def _cas_call(inp, backend):
    return (
        pk.cas_loss(inp["emb"], inp["labels"], inp["R"], alpha=inp.get("alpha", 0.5), ignore_index=inp["ignore_index"],
                    backend=backend),
    )  # fmt: skip


CAS = Contract(
    op="cas_loss",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W"), name="scores"), "labels": Labels(("B", "H", "W"), name="regions"),
                     "R": Size("R", name="num_regions"), "alpha": Choice((0.5, 0.9), extreme=(0.0, 1.0)),
                     "ignore_index": Ignore()},
    uses=("region_loss",),
    make=_emb_labels(2, 3, 7, 9, 4, label_dtype=torch.int16, softmax=True),
    call=_cas_call,
    shaped=lambda B, D, H, W, layout: _emb_labels(B, D, H, W, 3, layout=layout, softmax=True),
    loss=_scalar_loss,
    grad_inputs=("emb",),
    tiny=_emb_labels(2, 2, 3, 4, 3, softmax=True),
    zero_sizes=_zero_cases(lambda *s: _emb_labels(*s, 3)),
    bad_inputs={
        "regions_values": (
            _emb_labels(2, 3, 4, 5, 3)("cpu", torch.float32) | {"labels": torch.full((2, 4, 5), 3)},
            ValueError,
            "regions values must be in [0, 3)",
        ),
        "num_regions": (
            _emb_labels(2, 3, 4, 5, 0)("cpu", torch.float32),
            ValueError,
            "num_regions must be positive",
        ),
        "alpha": (
            _emb_labels(2, 3, 4, 5, 2, alpha=1.5)("cpu", torch.float32),
            ValueError,
            "alpha must be in [0, 1]",
        ),
        "scores_rank": (
            _emb_labels(2, 3, 4, 5, 2)("cpu", torch.float32) | {"emb": torch.randn(2, 4, 5)},
            ValueError,
            "scores must have 4 dims",
        ),
    },
    cases={
        "binary": _emb_labels(3, 2, 7, 5, 2, softmax=True),
        "m21_r21": _emb_labels(2, 21, 9, 11, 21, alpha=0.3, softmax=True),
        "channels_last": _emb_labels(3, 5, 6, 7, 3, layout="channels_last", alpha=1.0, softmax=True),
        "alpha0_slice": _emb_labels(2, 4, 5, 6, 3, layout="slice", alpha=0.0, softmax=True),
        "empty_regions": _emb_labels(7, 3, 6, 7, 6, pattern="gaps", softmax=True),
        "one_region": _emb_labels(2, 3, 5, 5, 3, pattern="one", softmax=True),
        "all_ignored": _emb_labels(2, 3, 5, 5, 3, pattern="ignored", softmax=True),
        "one_image_ignored": _emb_labels(3, 3, 5, 6, 2, fix=_first_image(-1)),
        "ignore_255_uint8": _emb_labels(2, 3, 7, 9, 4, ignore=255, label_dtype=torch.uint8, softmax=True),
        "one_pixel": _emb_labels(1, 3, 1, 1, 2, softmax=True),
    },
)

TestCAS = suite(CAS)


# ---------------------------------------------------------------------------------------------
# discriminative_loss


def _disc_call(inp, backend):
    kw = {k: inp[k] for k in ("delta_v", "delta_d", "alpha", "beta", "gamma") if k in inp}
    return (
        pk.discriminative_loss(inp["emb"], inp["labels"], inp["R"], ignore_index=inp["ignore_index"], backend=backend,
                               **kw),
    )  # fmt: skip


def _disc(B, D, H, W, R, **kw):
    # Pixels sit ~2 sqrt(D) from their centroid: delta_v around that leaves hinges both on and off.
    kw.setdefault("delta_v", 2.0 * math.sqrt(D))
    kw.setdefault("delta_d", 0.6)
    return _emb_labels(B, D, H, W, R, **kw)


DISC = Contract(
    op="discriminative_loss",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "labels": Labels(("B", "H", "W"), name="instances"), "R": Size("R", name="num_instances"),
                     "ignore_index": Ignore(), "delta_v": Choice((0.5,), extreme=(0.0,)), "delta_d": Choice((1.5,), extreme=(0.0,))},
    uses=("region_loss",),
    make=_disc(2, 5, 7, 9, 4, label_dtype=torch.int16, gamma=0.1),
    call=_disc_call,
    shaped=lambda B, D, H, W, layout: _disc(B, D, H, W, 3, layout=layout, gamma=0.1),
    loss=_scalar_loss,
    grad_inputs=("emb",),
    tiny=_disc(2, 3, 3, 4, 3, gamma=0.5),
    zero_sizes=_zero_cases(lambda *s: _disc(*s, 3)),
    bad_inputs={
        "instances_values": (
            _disc(2, 3, 4, 5, 3)("cpu", torch.float32) | {"labels": torch.full((2, 4, 5), 3)},
            ValueError,
            "instances values must be in [0, 3)",
        ),
        "num_instances": (
            _disc(2, 3, 4, 5, 0)("cpu", torch.float32),
            ValueError,
            "num_instances must be positive",
        ),
        "delta_v": (
            _disc(2, 3, 4, 5, 2, delta_v=-1.0)("cpu", torch.float32),
            ValueError,
            "delta_v must be >= 0.0",
        ),
        "gamma": (_disc(2, 3, 4, 5, 2, gamma="x")("cpu", torch.float32), TypeError, "gamma must be a float"),
    },
    cases={
        "odd": _disc(2, 3, 7, 5, 3),
        "d1": _disc(1, 1, 9, 11, 2),
        "d16_r20_channels_last": _disc(2, 16, 9, 13, 20, layout="channels_last"),
        "d17_slice": _disc(2, 17, 5, 6, 3, layout="slice", delta_d=5.0),
        # delta_v > 0: at 0 the hinge gradient of a centroid is analytically 0 (rounding noise only)
        "all_push_active": _disc(2, 4, 6, 7, 3, delta_d=50.0, delta_v=0.05),
        "one_instance": _disc(2, 4, 5, 5, 3, pattern="one"),
        "empty_ids": _disc(7, 3, 6, 7, 6, pattern="gaps"),
        "all_ignored": _disc(2, 3, 5, 5, 3, pattern="ignored"),
        "one_image_ignored": _disc(3, 3, 5, 6, 2, fix=_first_image(-1)),
        "ignore_inside_range": _disc(2, 3, 7, 9, 4, ignore=0, label_dtype=torch.int8),
        "one_pixel": _disc(1, 3, 1, 1, 2),
        "long_image": _disc(1, 2, 3, 3001, 5),
    },
)

TestDiscriminative = suite(DISC)


# ---------------------------------------------------------------------------------------------
# masked_average_pool and menet_saliency


def _feat_mask(B, C, H, W, layout="contiguous", pattern="soft", **kw):
    def make(device, dtype):
        return {  # features centred on 0, as network features are
            "emb": make_emb(B, C, H, W, dtype=dtype, device=device, layout=layout) - 3.0,
            "mask": make_weights(B, H, W, dtype=dtype, device=device, pattern=pattern),
            **kw,
        }

    return make


def _map_call(inp, backend):
    return (pk.masked_average_pool(inp["emb"], inp["mask"], eps=inp.get("eps", 1e-5), backend=backend),)


def _sal_call(inp, backend):
    return (pk.menet_saliency(inp["emb"], inp["mask"], squared=inp.get("squared", False), backend=backend),)


def _sal_kinks(inp):
    """Contract.kink_gaps: the distance |f - c| of each pixel from its image's center and the
    pixel's scale |f| + |c|, in float64 (None when squared: no kink). A pixel on its center up to
    rounding (a single pixel; equal ones, as the expanded layout gives) has a distance whose
    derivative is a direction the rounding picks (the CPU's strided sum put the center an ulp off
    where the reference's was exact: a gradient of +-1 against 0)."""
    if inp.get("squared", False):
        return None
    x, w = inp["emb"].double(), inp["mask"].double()
    mass = w.sum((1, 2))
    center = (x * w[:, None]).sum((2, 3)) / torch.where(mass > 0, mass, 1.0)[:, None]
    center = torch.where((mass > 0)[:, None], center, 0.0)[..., None, None]
    return (x - center).norm(dim=1), x.norm(dim=1) + center.norm(dim=1)


def _weighted(out, inp):
    """Positive weights in multiples of 1/8 (exact in half: the reference sees the same ones)."""
    o = out[0]
    w = torch.linspace(0.5, 2.0, o.numel(), dtype=torch.float64, device=o.device).mul(8).round().div(8)
    return (o * w.to(o.dtype).view_as(o)).sum()


_MAP_CASES = {
    "odd": _feat_mask(2, 3, 7, 5),
    "binary_d1": _feat_mask(1, 1, 9, 11, pattern="binary"),
    "channels_last_d17": _feat_mask(3, 17, 5, 13, layout="channels_last"),
    "zero_mask": _feat_mask(2, 4, 5, 6, pattern="zero"),
    "slice_d130": _feat_mask(1, 130, 3, 5, layout="slice"),
    "mask_transposed": _feat_mask(2, 3, 6, 4, layout="transposed", pattern="transposed"),
    "one_pixel": _feat_mask(1, 3, 1, 1),
    "batch7": _feat_mask(7, 3, 5, 3, pattern="binary"),
}

MAP = Contract(
    op="masked_average_pool",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W"), name="feat"), "mask": Floats(("B", "H", "W"), positive=True),
                     "eps": Choice((1e-5,), extreme=(0.0,))},
    uses=("masked_mean",),
    make=_feat_mask(2, 5, 7, 9),
    call=_map_call,
    shaped=lambda B, D, H, W, layout: _feat_mask(B, D, H, W, layout=layout),
    loss=_weighted,
    grad_inputs=("emb", "mask"),
    tiny=_feat_mask(2, 3, 3, 4),
    zero_sizes=_zero_cases(_feat_mask),
    bad_inputs={
        "mask_shape": (
            _feat_mask(2, 3, 4, 5)("cpu", torch.float32) | {"mask": torch.rand(2, 5, 4)},
            ValueError,
            "mask must have shape",
        ),
        "eps": (_feat_mask(2, 3, 4, 5, eps=-1.0)("cpu", torch.float32), ValueError, "eps must be >= 0.0"),
    },
    # one_pixel is tested below: in float32 its mask gradient is lost to rounding.
    cases={
        **{k: v for k, v in _MAP_CASES.items() if k != "one_pixel"},
        "eps0_binary": _feat_mask(2, 4, 5, 6, pattern="binary", eps=0.0),
    },
)

TestMaskedAveragePool = suite(MAP)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_masked_average_pool_one_pixel(backend, device):
    """Known limitation (README): on a one-pixel image the mask gradient is ~eps·f/(m + eps)²,
    which the masked_sum composition forms as a difference of two O(1) sums, so float32 keeps
    only ~1e-6 of it absolutely. Values in float32 and everything in float64 are exact."""
    inp64 = _feat_mask(1, 3, 1, 1)(device, torch.float64)
    want = _map_call(contract_as_reference(inp64), "reference")[0]
    torch.testing.assert_close(_map_call(inp64, backend)[0].cpu(), want, rtol=1e-10, atol=0)
    inp32 = _feat_mask(1, 3, 1, 1)(device, torch.float32)
    torch.testing.assert_close(_map_call(inp32, backend)[0].cpu().double(), want, rtol=1e-5, atol=1e-6)


SAL = Contract(
    op="menet_saliency",
    fuzz_half_gap=(
        "emb's gradient is the sum of two terms (center_distance's direct one and masked_mean's "
        "through the center), which cancel where a pixel is near the center: they are added "
        "unrounded and rounded once (menet_saliency's one backward node), but each is formed at the "
        "terms' scale from half inputs and a float32 center, and that error exceeds SPEC §4's "
        "elementwise atol there"
    ),
    # One pixel is its own center up to rounding, where the distance's derivative is a sign (so
    # are equal pixels: kink_gaps).
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "mask": Floats(("B", "H", "W"), positive=True, name="background_weights"),
                     "squared": Choice((False, True)) if d["H"] * d["W"] > 1 else True},
    kink_gaps=_sal_kinks,
    uses=("menet_saliency",),
    make=_feat_mask(2, 5, 7, 9),
    call=_sal_call,
    shaped=lambda B, D, H, W, layout: _feat_mask(B, D, H, W, layout=layout),
    loss=_weighted,
    grad_inputs=("emb", "mask"),
    tiny=_feat_mask(2, 3, 3, 4),
    zero_sizes=_zero_cases(_feat_mask),
    bad_inputs={
        "negative_weights": (
            _feat_mask(2, 3, 4, 5)("cpu", torch.float32) | {"mask": -torch.rand(2, 4, 5)},
            ValueError,
            "background_weights must be >= 0",
        ),
        "weights_int": (
            _feat_mask(2, 3, 4, 5)("cpu", torch.float32) | {"mask": torch.ones(2, 4, 5, dtype=torch.long)},
            TypeError,
            "background_weights must have dtype",
        ),
    },
    cases={
        **_MAP_CASES,
        # A soft mask: the center's gradient sums unit vectors around their weighted mean, so
        # a 15-pixel binary-mask image leaves elements too small for float32's 1e-6 atol.
        "batch7": _feat_mask(7, 3, 5, 3),
        "squared": _feat_mask(2, 4, 5, 6, pattern="binary", squared=True),
        "squared_cl": _feat_mask(2, 6, 5, 7, layout="channels_last", pattern="binary", squared=True),
    },
)

TestSaliency = suite(SAL)


# ---------------------------------------------------------------------------------------------
# SPEC §2 empty sets, and the nn modules


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_no_valid_image_gives_zero_with_zero_gradient(backend, device):
    emb = make_emb(2, 4, 5, 6, dtype=torch.float64, device=device).requires_grad_(True)
    one = torch.ones(2, 5, 6, dtype=torch.long, device=device)
    ignored = torch.full((2, 5, 6), -1, dtype=torch.long, device=device)
    losses = [
        pk.menet_metric_loss(emb, one, backend=backend),  # no background anywhere
        pk.cas_loss(emb, ignored, 3, backend=backend),
        pk.discriminative_loss(emb, ignored, 3, backend=backend),
    ]
    for loss in losses:
        assert loss.requires_grad and float(loss) == 0.0
        (g,) = torch.autograd.grad(loss, emb)
        assert (g == 0).all()


def test_images_with_an_empty_region_are_left_out():
    emb = make_emb(3, 4, 5, 6, dtype=torch.float64, device="cpu")
    mask = make_labels(3, 5, 6, 2, device="cpu")
    mask[0] = 1
    for backend in ("reference", "cpu"):
        if backend not in pk.available_backends():
            continue
        whole = pk.menet_metric_loss(emb, mask, backend=backend)
        rest = pk.menet_metric_loss(emb[1:], mask[1:], backend=backend)
        torch.testing.assert_close(whole, rest, rtol=1e-12, atol=0)


def test_nn_modules_are_drop_in():
    emb = make_emb(2, 4, 5, 6, dtype=torch.float64, device="cpu")
    lab = make_labels(2, 5, 6, 3, device="cpu")
    mask = lab.clamp(max=1)
    backend = "cpu" if "cpu" in pk.available_backends() else "reference"
    pairs = [
        (pk.nn.MEnetMetricLoss(form="pairwise", normalize=True, backend=backend)(emb, mask),
         pk.menet_metric_loss(emb, mask, form="pairwise", normalize=True, backend=backend)),
        (pk.nn.CASLoss(alpha=0.3, backend=backend)(emb, lab, 3), pk.cas_loss(emb, lab, 3, alpha=0.3, backend=backend)),
        (pk.nn.DiscriminativeLoss(delta_v=0.1, gamma=0.5, backend=backend)(emb, lab, 3),
         pk.discriminative_loss(emb, lab, 3, delta_v=0.1, gamma=0.5, backend=backend)),
    ]  # fmt: skip
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "delta_v=0.1" in repr(pk.nn.DiscriminativeLoss(delta_v=0.1))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_float32_masked_means_of_large_images(layout):
    """masked_average_pool of one 2048 x 2048 float32 map at a mean of 3 with weights in [0, 1):
    the CPU means within 2 ulps of float64's. The chunk partials were float and merged in
    float: 4.3e-6 off (18 ulps); the partials, the merge and the division are now in double."""
    g = torch.Generator().manual_seed(6)
    H = W = 2048
    x = 3 + torch.randn(1, 4, H, W, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.rand(1, H, W, generator=g)
    got = pk.masked_average_pool(x, w, eps=0.0, backend="cpu")
    want = (x.double() * w.double()[:, None]).sum((2, 3)) / w.double().sum()
    ulp = torch.finfo(torch.float32).eps * 2  # one ulp in [2, 4)
    assert (got.double() - want).abs().max() <= 2 * ulp


def test_cpu_saliency_of_a_large_image_off_zero():
    """The contract's menet_saliency inputs at 1 x 4 x 2048 x 2048, shifted by 3: the CPU
    backend's values and gradients within SPEC §4 of float64. Its center came from float
    partials (1e-6 off), which the gradients multiply near the center: emb's were 10.6x the
    tolerance and the weights' 9.2x (2.3M elements), the float32 reference's 1.8x and 1.9x."""

    def shifted(device, dtype):
        inp = SAL.shaped(1, 4, 2048, 2048, "contiguous")(device, dtype)
        with torch.no_grad():
            inp["emb"].add_(3.0)
        return inp

    _agree_one(SAL, shifted, "cpu", "cpu", torch.float32, scale_loss=True)

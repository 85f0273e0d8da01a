"""What an adversarial user found, one regression test per finding (each failed before its fix):

1. first-order gradients under create_graph=True when a second input depends on the first
   (the double-backward path differentiated the reference on the saved inputs themselves, so
   the path through the second input was counted twice);
2. Triton on stride-0 (expanded) maps: outputs and gradients allocated with the input's
   strides, so several writes landed on one element;
3. Triton pixel_normalize on an overlapping as_strided map;
4. the reference losses (and region_hinge's, region_stats' gradients) leaking NaN/inf from an
   ignored or out-of-range pixel;
5. unclear errors: a sparse map, set_checks("false"), numpy integers for sizes.

The fuzz suite (tests/fuzz.py, every op's contract row) draws such inputs at random; these pin
the cases that were found.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKENDS, assert_close

import pixelkernels as pk

F64 = torch.float64


def _seeded(*shape, positive=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(*shape, generator=g, dtype=F64)
    return t if positive else t * 4 - 1


def _labels(B, H, W, R, seed=1):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(-1, R, (B, H, W), generator=g)
    return lab


# --- 1. create_graph ----------------------------------------------------------------------------

LAB = _labels(2, 5, 7, 3)


def _on(t, x):
    """t on x's device: the second inputs are built on the CPU, the map may be on a GPU."""
    return t.to(x.device)


DEPENDENT = {
    "center_distance(e, e.mean)": lambda e, be: pk.center_distance(e, e.mean((2, 3)), backend=be),
    "region_hinge(e, centroids of e)": lambda e, be: pk.region_hinge(
        e, _on(LAB, e), pk.region_stats(e, _on(LAB, e), 3, backend=be)[1], delta=0.1, backend=be
    ),
    "masked_sum(f, mask of f)": lambda e, be: pk.masked_sum(e, e.sum(1).sigmoid(), backend=be),
    "menet_saliency(e, constant weights)": lambda e, be: pk.menet_saliency(
        e, _on(_seeded(2, 5, 7, positive=True), e), backend=be
    ),
    # issue 35 (the fuzz): the op's own autograd differentiated the reference on the saved y itself
    "dense_similarity_loss(x, y of x)": lambda e, be: _dense_dependent(e, be),
}


def _dense_dependent(e, be):
    x = e.flatten(2).transpose(1, 2)  # (B, 35, 3)
    y = x[:, ::4] * 0.5 + x.mean((1, 2), keepdim=True)  # depends on x twice
    xl = _on(torch.arange(35).remainder(3).expand(2, 35) - (torch.arange(35) % 7 == 0).long(), e)
    yl = _on(torch.arange(9).remainder(2).expand(2, 9), e)
    return pk.dense_similarity_loss(x, xl, y, yl, weight=0.7, bias=0.1, backend=be)


def _sum(out):
    out = out if isinstance(out, tuple) else (out,)
    return sum((o * torch.linspace(-1, 2, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum() for o in out)


@pytest.mark.parametrize("case", list(DEPENDENT))
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_first_order_gradient_same_with_create_graph(backend, device, case):
    e = _seeded(2, 3, 5, 7).to(device).requires_grad_(True)
    f = DEPENDENT[case]
    plain = torch.autograd.grad(_sum(f(e, backend)), e)[0]
    graph = torch.autograd.grad(_sum(f(e, backend)), e, create_graph=True)[0]
    er = e.detach().cpu().requires_grad_(True)
    want = torch.autograd.grad(_sum(f(er, "reference")), er)[0]
    assert_close(plain, want, F64, msg="plain")
    assert_close(graph, want, F64, msg="create_graph=True")


@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] != "cuda"])
def test_saliency_double_backward(backend, device):
    w = _seeded(1, 3, 4, positive=True).to(device)
    e = _seeded(1, 2, 3, 4).to(device).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: pk.menet_saliency(x, w, backend=backend), (e,), atol=1e-6)


# --- 2, 3. stride-0 and overlapping maps ------------------------------------------------------

ONE = {
    "center_distance": lambda x, be: pk.center_distance(x, _on(torch.ones(2, 3, dtype=F64), x), backend=be),
    "pixel_normalize": lambda x, be: pk.pixel_normalize(x, backend=be),
    "masked_sum": lambda x, be: pk.masked_sum(x, _on(_seeded(2, 5, 7, positive=True), x), backend=be),
    "region_stats": lambda x, be: pk.region_stats(x, _on(LAB, x), 3, backend=be),
    "centroid_hinge": lambda x, be: pk.centroid_hinge(x, _on(LAB, x), 3, backend=be),
    "region_hinge": lambda x, be: pk.region_hinge(x, _on(LAB, x), _on(torch.zeros(2, 3, 3, dtype=F64), x), backend=be),
    "menet_saliency": lambda x, be: pk.menet_saliency(x, _on(_seeded(2, 5, 7, positive=True), x), backend=be),
    "menet_metric_loss(normalize)": lambda x, be: pk.menet_metric_loss(x, _on(LAB.clamp(-1, 1), x), normalize=True, backend=be),
}  # fmt: skip
EXPANDED = [(2, 3, 1, 7), (2, 1, 5, 7), (1, 3, 5, 7), (1, 1, 1, 1)]


@pytest.mark.parametrize("leaf_shape", EXPANDED, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", list(ONE))
@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] in ("cpu", "triton")])
def test_expanded_map(backend, device, op, leaf_shape):
    def run(be, dev):
        leaf = _seeded(*leaf_shape).to(dev).requires_grad_(True)
        out = ONE[op](leaf.expand(2, 3, 5, 7), be)
        return out, torch.autograd.grad(_sum(out), leaf)[0]

    (got, g), (want, gw) = run(backend, device), run("reference", "cpu")
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert_close(a, b, F64)
    assert_close(g, gw, F64, msg="gradient")


def _overlapping():
    base = _seeded(76)
    return base.as_strided((2, 3, 5, 7), (38, 1, 7, 1))  # dims d and w share addresses


@pytest.mark.parametrize("op", ["pixel_normalize", "menet_metric_loss(normalize)", "center_distance", "masked_sum"])
@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] in ("cpu", "triton")])
def test_overlapping_map(backend, device, op):
    x = _overlapping()
    got, want = ONE[op](x.to(device), backend), ONE[op](x, "reference")
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert_close(a, b, F64)


def _emu_layouts():
    yield "expanded_d", _seeded(2, 1, 5, 7).expand(2, 3, 5, 7)
    yield "expanded_b", _seeded(1, 3, 5, 7).expand(2, 3, 5, 7)
    yield "expanded_all", _seeded(1, 1, 1, 1).expand(2, 3, 5, 7)
    yield "overlapping", _overlapping()


@pytest.mark.parametrize("layout", [name for name, _ in _emu_layouts()])
def test_cuda_launchers_on_expanded_and_overlapping_maps(emu, layout):
    """The CUDA kernels (emulated) against the CPU kernels: outputs and gradients of maps
    shaped like such an input never inherit its strides."""
    x = dict(_emu_layouts())[layout]
    g = _seeded(2, 3, 5, 7, seed=3)
    lab = LAB
    cen = _seeded(2, 3, seed=4)
    mask = _seeded(2, 5, 7, positive=True, seed=5)
    calls = [
        ("pixel_normalize", (x, 1e-12, False)),
        ("pixel_normalize_backward", (g, x, 1e-12, False)),
        ("center_distance_backward", (g[:, 0], x, cen, False)),
        ("masked_sum_backward", (cen, cen[:, 0], x, mask)),
        ("region_hinge_backward", (cen[:, :1].expand(2, 3).contiguous(), x, lab, _seeded(2, 3, 3), 0.1, -1)),
    ]
    for name, args in calls:
        want = getattr(torch.ops.pixelkernels, name)(*args)
        got = getattr(emu, name)(*args)
        for a, b in zip(got if isinstance(got, (tuple, list)) else (got,), want if isinstance(want, (tuple, list)) else (want,)):
            assert_close(a, b, F64, msg=name)


# --- 4. NaN/inf in pixels that take part in nothing ---------------------------------------------


def _nan_case(value):
    e = _seeded(2, 4, 5, 7)
    lab2, lab3 = _labels(2, 5, 7, 2).clamp(-1, 1), _labels(2, 5, 7, 3)
    lab2[0, 1, 1] = lab3[0, 1, 1] = -1
    e[0, :, 1, 1] = value
    return e, lab2, lab3


LOSSES = {
    "menet_metric_loss": lambda e, l2, l3, be: pk.menet_metric_loss(e, l2, form="pairwise", backend=be),
    "cas_loss": lambda e, l2, l3, be: pk.cas_loss(e, l3, 3, backend=be),
    "discriminative_loss": lambda e, l2, l3, be: pk.discriminative_loss(e, l3, 3, backend=be),
    "region_hinge": lambda e, l2, l3, be: pk.region_hinge(e, l3, _on(torch.zeros(2, 3, 4, dtype=F64), e), delta=0.1, backend=be),
    "region_stats": lambda e, l2, l3, be: pk.region_stats(e, l3, 3, backend=be),
}  # fmt: skip


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("op", list(LOSSES))
@pytest.mark.parametrize("backend,device", [p for p in BACKENDS if p.values[0] != "cuda"])
def test_ignored_nonfinite_pixel_does_not_leak(backend, device, op, value):
    e, l2, l3 = _nan_case(value)
    x = e.to(device).requires_grad_(True)
    out = LOSSES[op](x, l2.to(device), l3.to(device), backend)
    (g,) = torch.autograd.grad(_sum(out), x)
    for o in out if isinstance(out, tuple) else (out,):
        assert torch.isfinite(o).all(), (op, o)
    assert torch.isfinite(g).all()
    assert (g[0, :, 1, 1] == 0).all()


# --- 5. errors ----------------------------------------------------------------------------------


def test_sparse_map_is_refused_naming_it():
    e = torch.randn(2, 3, 4, 5)
    with pytest.raises(TypeError, match="emb must be a dense"):
        pk.region_stats(e.to_sparse(), torch.zeros(2, 4, 5, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="feat must be a dense"):
        pk.masked_sum(e.to_sparse(), torch.rand(2, 4, 5), backend="reference")


def test_set_checks_takes_a_bool_only():
    with pytest.raises(TypeError, match="must be a bool"):
        pk.set_checks("false")
    assert pk.checks_enabled()
    pk.set_checks(np.bool_(False))
    assert not pk.checks_enabled()
    pk.set_checks(True)


def test_use_checks_restores_the_setting():
    with pytest.raises(RuntimeError, match="inside"):
        with pk.use_checks(False):
            assert not pk.checks_enabled()
            raise RuntimeError("inside")
    assert pk.checks_enabled()
    with pytest.raises(TypeError, match="must be a bool"), pk.use_checks("false"):
        pass
    assert pk.checks_enabled()


def test_numpy_integers_are_integers():
    e, lab = torch.randn(1, 2, 3, 4), torch.zeros(1, 3, 4, dtype=torch.long)
    want = pk.region_stats(e, lab, 2)
    got = pk.region_stats(e, lab, np.int64(2), ignore_index=np.int32(-1))
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="num_regions must be an int"):
        pk.region_stats(e, lab, np.float64(2.0))


# --- 6. flags, choices and layouts (issue 35) ----------------------------------------------------

B, D, H, W = 2, 3, 5, 6


def _valid_calls():
    g = torch.Generator().manual_seed(5)
    emb = torch.randn(B, D, H, W, generator=g)
    lab = torch.randint(0, 3, (B, H, W), generator=g)
    mask = torch.randint(0, 2, (B, H, W), generator=g)
    q, r = torch.randn(B, 7, D, generator=g), torch.randn(B, 5, D, generator=g)
    ql, rl = torch.randint(0, 3, (B, 7), generator=g), torch.randint(0, 3, (B, 5), generator=g)
    idx = torch.randint(0, H * W, (B, 4), generator=g)
    seeds = torch.tensor([1, 2])
    return {
        "region_stats": (pk.region_stats, (emb, lab, 3), {"with_variance": True}),
        "pixel_normalize": (pk.pixel_normalize, (emb,), {"upcast": False}),
        "center_distance": (pk.center_distance, (emb, emb.mean((2, 3))), {"squared": False}),
        "menet_metric_loss": (pk.menet_metric_loss, (emb, mask), {"normalize": False, "form": "centroid"}),
        "menet_saliency": (pk.menet_saliency, (emb, mask.float()), {"squared": False}),
        "triplet_hinge": (pk.triplet_hinge, (emb, idx, idx.flip(1), idx.roll(1, 1)),
                          {"margin": 1.0, "squared": False, "return_used": False, "mining": "random"}),
        "is_triplet_loss": (pk.is_triplet_loss, (emb, mask), {"num_samples": 5, "squared": False, "generator": seeds}),
        "similarity_reduce": (pk.similarity_reduce, (q, r, rl, 3), {"reduce": "sum", "metric": "dot"}),
        "dense_similarity_loss": (pk.dense_similarity_loss, (q, ql, r, rl),
                                  {"training": True, "weight": torch.tensor(1.0), "running_mean": torch.zeros(1)}),
        "pair_bce": (pk.pair_bce, (q, ql, r, rl), {"scale": torch.tensor(1.0), "bias": torch.tensor(0.0)}),
        "click_maps": (pk.click_maps, (torch.tensor([[[1.0, 2, 0], [-1, -1, -1]]]).repeat(B, 1, 1), (H, W)),
                       {"mode": "disk"}),
        "distance_transform": (pk.distance_transform, (mask.bool(),), {"squared": False, "return_indices": False}),
        "sample_pixels": (pk.sample_pixels, (lab, 3, 4), {"generator": seeds}),
        "stochastic_pool": (pk.stochastic_pool, (emb, lab, 3, 4), {"generator": seeds}),
        "sample_clicks": (pk.sample_clicks, (mask.bool(),),
                          {"num_positive": 1, "num_negative": 1, "strategy": 1, "generator": seeds}),
    }  # fmt: skip


CALLS = _valid_calls()
FLAGS = [(op, k) for op, (_, _, kw) in CALLS.items() for k, v in kw.items() if isinstance(v, bool)]
CHOICES = [(op, k) for op, (_, _, kw) in CALLS.items() for k, v in kw.items() if k in ("form", "mining", "reduce",
                                                                                       "metric", "mode", "strategy")]  # fmt: skip
TENSOR_KWARGS = [(op, k) for op, (_, _, kw) in CALLS.items() for k, v in kw.items() if isinstance(v, torch.Tensor)]


def _call(op, **override):
    fn, args, kw = CALLS[op]
    return fn(*args, **{**kw, **override})


@pytest.mark.parametrize("op", list(CALLS))
def test_valid_calls_run(op):
    _call(op)


@pytest.mark.parametrize("value", ["false", "True", 1.0, np.float64(0.0), 0.5], ids=repr)
@pytest.mark.parametrize("op,flag", FLAGS, ids=[f"{o}-{f}" for o, f in FLAGS])
def test_flag_refuses_bool_like_values_naming_it(op, flag, value):
    """bool("false") is True: a string or a number for a flag would silently pick the branch
    (dense_similarity_loss(training="false") ran a training step)."""
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        _call(op, **{flag: value})
    _call(op, **{flag: np.bool_(CALLS[op][2][flag])})  # numpy's bool is a bool


@pytest.mark.parametrize("op,arg", CHOICES, ids=[f"{o}-{a}" for o, a in CHOICES])
def test_choice_refuses_a_value_of_another_type(op, arg):
    """sample_clicks(strategy=1.0) passed validation (1.0 == 1) and failed in the kernels' schema."""
    good = CALLS[op][2][arg]
    for bad in ([float(good), str(good), True] if isinstance(good, int) else [1.0, None]):
        with pytest.raises(TypeError, match=arg):
            _call(op, **{arg: bad})


@pytest.mark.parametrize("op,arg", TENSOR_KWARGS, ids=[f"{o}-{a}" for o, a in TENSOR_KWARGS])
def test_sparse_tensor_keyword_is_refused_naming_it(op, arg):
    """Sparse per-image seeds passed _checks.generator and failed later with NotImplementedError;
    sparse scale tensors reached a reshape."""
    with pytest.raises(TypeError, match=f"{arg}.*dense"):
        _call(op, **{arg: CALLS[op][2][arg].to_sparse()})

"""The compiled variants' C++ autograd (csrc/autograd.cpp; issue 36 part 2): one generic kernel
at the Autograd key, read off the schemas. The contract suite checks every op's gradients and
double backward on it; here, what is particular to it: a C++ node per call, a backward that
runs no Python, gradients of some outputs only, saved tensors' version checks, freed buffers,
double backward through the backward op's own autograd, and the install's errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import AVAILABLE, backend_params

import pixelkernels as pk
from pixelkernels import _ext, _op
from pixelkernels.bench import cases as _cases

pytestmark = pytest.mark.skipif("cpu" not in AVAILABLE, reason="the extension is not built")

PACKAGE = str(Path(pk.__file__).parent)
# The ops whose compiled variant has a backward, each with a bench case to run it.
CPP_OPS = sorted(n for n, op in _op.OPS.items() if op.compiled is not None and op.grad_inputs)
CASES = [c for c in _cases.CASES if c.op in CPP_OPS and c.loss and c.small]


def _python_frames(fn) -> list[str]:
    """The pixelkernels Python functions that run during fn()."""
    seen = []

    def prof(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            seen.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def test_every_differentiable_compiled_op_is_covered():
    assert {"region_stats", "centroid_hinge", "triplet_hinge", "pair_bce", "similarity_reduce"} <= set(CPP_OPS)
    assert {c.op for c in CASES} >= {"region_stats", "masked_sum", "pixel_normalize", "center_distance"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}-{c.id}")
def test_backward_is_one_cpp_node_and_runs_no_python(case):
    inp = case.small(torch.device("cpu"))
    out = case.run(inp, "cpu")
    outs = out if isinstance(out, tuple) else (out,)
    names = {o.grad_fn.name() for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None}
    assert names == {f"{case.op}Backward"}, names
    loss = case.loss(out, inp)
    grads = []
    assert _python_frames(lambda: grads.extend(torch.autograd.grad(loss, inp.grad))) == []
    assert all(g is not None for g in grads)


def _region_inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 5, 7, 9, dtype=dtype, generator=g).requires_grad_()
    labels = torch.randint(-1, 4, (2, 7, 9), generator=g)
    return emb, labels


@pytest.mark.parametrize("which", ["centroid", "variance", "both"])
def test_gradient_of_some_outputs_only(which):
    """An output that gets no gradient is zeros only where the backward op reads it."""
    emb, labels = _region_inputs()
    grads = {}
    for backend in ("cpu", "reference"):
        _, centroid, variance = pk.region_stats(emb, labels, 4, backend=backend)
        terms = {"centroid": [centroid.square().sum()], "variance": [variance.sum()]}
        loss = sum(terms["centroid"] + terms["variance"]) if which == "both" else terms[which][0]
        (grads[backend],) = torch.autograd.grad(loss, emb)
    torch.testing.assert_close(grads["cpu"], grads["reference"], rtol=1e-10, atol=1e-12)


def test_saved_input_modified_in_place_is_refused():
    emb, labels = _region_inputs()
    x = emb * 1.0
    _, centroid, _ = pk.region_stats(x, labels, 4, backend="cpu")
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        centroid.sum().backward()


def test_saved_output_modified_in_place_is_refused():
    emb, labels = _region_inputs()
    _, centroid, variance = pk.region_stats(emb, labels, 4, backend="cpu")
    loss = variance.sum()
    centroid.add_(1.0)  # saved: region_stats_backward reads the centroids
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_buffers_freed_after_backward_unless_retained():
    emb, labels = _region_inputs()
    _, centroid, _ = pk.region_stats(emb, labels, 4, backend="cpu")
    loss = centroid.sum()
    (g1,) = torch.autograd.grad(loss, emb, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, emb)
    assert torch.equal(g1, g2)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(loss, emb)


def test_no_graph_without_grad():
    emb, labels = _region_inputs()
    with torch.no_grad():
        outs = pk.region_stats(emb, labels, 4, backend="cpu")
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)
    outs = pk.region_stats(emb.detach(), labels, 4, backend="cpu")
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)


@pytest.mark.parametrize("hard", [False, True])
def test_double_backward_of_an_op_whose_backward_lacks_inputs(hard):
    """triplet_hinge_backward takes the pixels each slot used, not the sets nor `hard`; the
    double backward evaluates the reference at those (_op.define's reference_args)."""
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g).requires_grad_()
    idx = [torch.randint(-1, 20, (2, 6), generator=g) for _ in range(3)]
    mining = "hard" if hard else "random"

    def fn(e):
        return pk.triplet_hinge(e, *idx, margin=0.5, mining=mining, backend="cpu")

    assert torch.autograd.gradgradcheck(fn, (emb,), eps=1e-6, atol=1e-6)
    # and equal to the reference's second derivative
    v = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g)
    hv = {}
    for backend in ("cpu", "reference"):
        loss = pk.triplet_hinge(emb, *idx, margin=0.5, mining=mining, backend=backend).sum()
        (gr,) = torch.autograd.grad(loss, emb, create_graph=True)
        (hv[backend],) = torch.autograd.grad((gr * v).sum(), emb)
    torch.testing.assert_close(hv["cpu"], hv["reference"], rtol=1e-10, atol=1e-12)


def test_double_backward_region_stats_num_regions_from_count():
    # gradgradcheck perturbs every input element: 2 x 5 x 7 x 9 took 24 s of CI; 1 x 3 x 4 x 5,
    # with every label -1..3 present, exercises the same path
    emb, labels = _region_inputs()
    emb, labels = emb[:1, :3, :4, :5].detach().clone().requires_grad_(), labels[:1, :4, :5]
    assert set(labels.unique().tolist()) == {-1, 0, 1, 2, 3}
    assert torch.autograd.gradgradcheck(
        lambda e: pk.region_stats(e, labels, 4, backend="cpu")[2], (emb,), eps=1e-6, atol=1e-6
    )


def test_install_is_idempotent_and_refuses_bad_specs():
    _ext.install_autograd("region_stats;count,centroid,variance;emb")  # already installed: nothing
    with pytest.raises(RuntimeError, match="no op pixelkernels::no_such_op"):
        _ext.install_autograd("no_such_op;out;x")
    with pytest.raises(RuntimeError, match="outputs"):
        _ext.install_autograd("pixel_normalize;a,b;emb")
    with pytest.raises(RuntimeError, match="grad_input"):
        _ext.install_autograd("masked_sum;sum,mass;feat,nothing")


@pytest.mark.parametrize("backend,device", backend_params(("triton",)))
def test_triton_eager_calls_skip_the_custom_op_dispatch(backend, device):
    """The Triton variant's eager path calls its Python bodies directly (_op._direct): the
    custom ops pixelkernels::pixel_normalize_triton and its backward are not dispatched."""
    e = torch.randn(1, 3, 4, 5, device=device, requires_grad=True)
    with torch.profiler.profile() as prof:
        pk.pixel_normalize(e, backend=backend).sum().backward()
        with torch.no_grad():
            pk.pixel_normalize(e, backend=backend)
    names = {ev.name for ev in prof.events()}
    assert not [n for n in names if n.startswith("pixelkernels::")], names  # (the Function is "pixel_normalize_triton")
    assert e.grad is not None
    # meta tensors take the op (its fake), as does a dispatch mode
    m = pk.pixel_normalize(torch.randn(1, 3, 4, 5, device="meta"), backend=backend)
    assert m.is_meta and m.shape == (1, 3, 4, 5)

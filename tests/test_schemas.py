"""One schema per op (pixelkernels/schemas.def, SPEC §1): every registered variant carries the
table's schema (names, types, defaults), nothing else defines a pixelkernels op, a direct
torch.ops call with bad arguments fails the same way on every variant, and centroid_hinge's
C++ and Python compositions give bitwise the same results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import AVAILABLE, HAS_CUDA, TRITON_DEVICE, make_labels

import pixelkernels as pk
from pixelkernels import _schema

ROOT = Path(__file__).resolve().parents[1]
HAVE_CPP = pk._ext.HAVE_CPU_KERNELS
HAVE_TRITON = pk._backend.TRITON_VERSION is not None
# The variants registered here, by the suffix of their name.
SUFFIXES = ("",) * HAVE_CPP + ("_triton",) * HAVE_TRITON


def _packet(name: str, suffix: str):
    return getattr(torch.ops.pixelkernels, name + suffix)


def _ops_with_backward() -> set[str]:
    return {n[: -len("_backward")] for n in _schema.SCHEMAS if n.endswith("_backward")}


# ---------------------------------------------------------------------------------------------
# One table, every variant from it


def test_table_names_every_op_and_backward():
    ops = set(pk._op.OPS)
    assert ops, "no op defined"
    assert set(_schema.SCHEMAS) == ops | {f"{n}_backward" for n in _ops_with_backward()}
    # an op has a backward op exactly when it has gradients
    assert _ops_with_backward() == {n for n, op in pk._op.OPS.items() if op.grad_inputs}


@pytest.mark.parametrize("name", list(_schema.SCHEMAS))
def test_every_variant_has_the_table_schema(name):
    want = str(_schema.function_schema(name)).replace(f"::{name}(", "::", 1)
    schemas = {suffix: _packet(name, suffix).default._schema for suffix in SUFFIXES}
    for suffix, schema in schemas.items():
        assert str(schema).replace(f"::{name}{suffix}(", "::", 1) == want, suffix
    if len(schemas) == 2:  # C++ and Triton: the same arguments, types, defaults and returns
        cpp, tri = schemas[""], schemas["_triton"]
        for a, b in zip(cpp.arguments, tri.arguments, strict=True):
            assert (a.name, str(a.type), a.has_default_value(), a.kwarg_only) == (
                b.name, str(b.type), b.has_default_value(), b.kwarg_only
            )  # fmt: skip
            assert not a.has_default_value() or a.default_value == b.default_value, a.name
        assert [str(r.type) for r in cpp.returns] == [str(r.type) for r in tri.returns]


def test_no_pixelkernels_op_outside_the_table():
    registered = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("pixelkernels::")}
    want = {f"pixelkernels::{n}{s}" for n in _schema.SCHEMAS for s in SUFFIXES}
    assert registered == want
    if HAVE_TRITON:
        assert set(_schema.TRITON_OPS) == set(_schema.SCHEMAS)


def test_no_schema_written_outside_the_table():
    """The table is the only schema source: the C++ defines ops only through it (csrc/ops.cpp's
    PK_SCHEMA), the Python only through _schema.triton_variant."""
    cpp = [p for ext in ("*.cpp", "*.h", "*.cu", "*.cuh") for p in (ROOT / "csrc").rglob(ext)]
    for p in cpp:
        text = p.read_text()
        # a schema definition: .def("op(..." or .def(#name ...), or a library that may hold one
        defs = re.findall(r'\.def\(\s*(?:"[\w.]+\(|#)', text)
        defs += re.findall(r"TORCH_LIBRARY(?:_FRAGMENT)?\s*\(", text)
        if p.name == "ops.cpp":
            assert sorted(defs) == [".def(#", "TORCH_LIBRARY("], defs
        else:
            assert not defs, (p, defs)
    py = {p: p.read_text() for p in (ROOT / "pixelkernels").rglob("*.py")}
    for p, text in py.items():
        found = re.findall(r"custom_op\(|triton_op\(|infer_schema\(|Library\(|library\.define\(", text)
        assert p.name == "_schema.py" or not found, (p, found)
    triton = [p for p in py if p.parent.name == "triton" and not p.name.startswith("_")]
    for p in triton:  # every Triton op of a module is its own op and backward
        names = re.findall(r'@triton_variant\("(\w+)"\)', py[p])
        assert set(names) == {n for n in _schema.SCHEMAS if n in (p.stem, p.stem + "_backward")}, p


@pytest.mark.triton
@pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed")
@pytest.mark.parametrize(
    "dev",
    [
        pytest.param("cpu", marks=pytest.mark.skipif(HAS_CUDA, reason="a GPU machine runs Triton on the GPU")),
        pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]),
    ],
)
def test_triton_variants_need_no_extension(dev):
    """The table is package data: without _C the Triton variants still get every schema. On
    the device the Triton kernels run on: a GPU's when there is one (marked cuda), else the
    interpreter (on a GPU machine the interpreter is not what a user runs, and Triton 3.6's,
    the GPU image's, fails with NumPy >= 2.5 on any `range(int argument)`)."""
    code = (
        "import sys, warnings, torch\n"
        "sys.modules['pixelkernels._C'] = None  # as if the extension were missing\n"
        "warnings.simplefilter('ignore')\n"
        "import pixelkernels as pk\n"
        "from pixelkernels import _schema\n"
        "assert not pk._ext.HAVE_CPU_KERNELS\n"
        "for name in _schema.SCHEMAS:\n"
        "    _schema.expect_registered(name, getattr(torch.ops.pixelkernels, name + '_triton'), '_triton')\n"
        f"dev = {dev!r}\n"
        "emb = torch.randn(1, 2, 3, 3, device=dev, requires_grad=True)\n"
        "labels = torch.zeros(1, 3, 3, dtype=torch.long, device=dev)\n"
        "count, centroid, hinge = pk.centroid_hinge(emb, labels, 1, backend='triton')\n"
        "(centroid.sum() + hinge.sum()).backward()\n"
        "print('OK', count.tolist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PIXELKERNELS_BACKEND", "TRITON_INTERPRET")}
    if dev == "cpu":
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                       env=env, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.startswith("OK [[9.0]]"), r.stdout


def test_parse_refuses_what_the_preprocessor_would_read_otherwise():
    ok = '// c\nPK_SCHEMA(a, "(Tensor x, int n=2)"\n " -> Tensor")  // end\n'
    ok += 'PK_SCHEMA(b, "(Tensor y) -> Tensor")'
    assert _schema.parse(ok) == {"a": "(Tensor x, int n=2) -> Tensor", "b": "(Tensor y) -> Tensor"}
    for bad, match in (
        ('PK_SCHEMA(a, "(Tensor x) -> Tensor")\nPK_SCHEMA(a, "(Tensor x) -> Tensor")', "twice"),
        ('PK_SCHEMA(a, "(Tensor x) -> Tensor");', "not a PK_SCHEMA"),
        ('PK_SCHEMA(a, "(Tensor x) -> Tensor")\n/* b */', "not a PK_SCHEMA"),
        ('PK_SCHEMA(a, "(Tensor x) -> Tensor" PK_EXTRA)', "not a PK_SCHEMA"),
    ):
        with pytest.raises(ValueError, match=match):
            _schema.parse(bad)
    with pytest.raises(RuntimeError):
        _schema.parse('PK_SCHEMA(a, "(Tensr x) -> Tensor")')


def test_triton_variant_takes_the_schema_arguments_only():
    """A launcher whose parameters drift from the table (order, defaults, annotations) is refused
    before anything is registered."""
    register = _schema.triton_variant("pixel_normalize")
    for fn in (
        lambda emb, upcast, eps: None,
        lambda emb, eps, upcast=False: None,
        lambda emb, eps: None,
    ):
        with pytest.raises(TypeError, match=r"must take \(emb, eps, upcast\)"):
            register(fn)

    def annotated(emb: torch.Tensor, eps: float, upcast: bool):
        return emb

    with pytest.raises(TypeError):
        register(annotated)


def test_expect_registered_names_the_stale_extension():
    with pytest.raises(RuntimeError, match="stale"):
        _schema.expect_registered("pixel_normalize", torch.ops.aten.relu)


# ---------------------------------------------------------------------------------------------
# Direct calls with bad arguments: every variant refuses them, with a RuntimeError


B, D, H, W, R = 2, 3, 4, 5, 3


def _f(*shape, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + len(shape)), dtype=dtype)


def _lab(*shape):
    return torch.randint(-1, R, shape, generator=torch.Generator().manual_seed(7))


def _good() -> dict[str, dict]:
    """Valid arguments of every op, by argument name."""
    emb, labels, centroid = _f(B, D, H, W), _lab(B, H, W), _f(B, R, D)
    count = torch.ones(B, R, dtype=torch.float64)
    return {
        "region_stats": dict(emb=emb, labels=labels, num_regions=R, ignore_index=-1, with_variance=True),
        "region_stats_backward": dict(grad_centroid=_f(B, R, D), grad_variance=_f(B, R), emb=emb,
                                      labels=labels, count=count, centroid=centroid, ignore_index=-1,
                                      with_variance=True),
        "pixel_normalize": dict(emb=emb, eps=1e-12, upcast=False),
        "pixel_normalize_backward": dict(grad_normalized=_f(B, D, H, W), emb=emb, eps=1e-12, upcast=False),
        "masked_sum": dict(feat=emb, mask=_f(B, H, W)),
        "masked_sum_backward": dict(grad_sum=_f(B, D), grad_mass=_f(B), feat=emb, mask=_f(B, H, W)),
        "center_distance": dict(emb=emb, center=_f(B, D), squared=False),
        "center_distance_backward": dict(grad_dist=_f(B, H, W), emb=emb, center=_f(B, D), squared=False),
        "region_hinge": dict(emb=emb, labels=labels, centroid=centroid, delta=0.5, ignore_index=-1),
        "region_hinge_backward": dict(grad_hinge=_f(B, R), emb=emb, labels=labels, centroid=centroid,
                                      delta=0.5, ignore_index=-1, offset=_f(B, R, D), emb_grad=True),
        "centroid_hinge": dict(emb=emb, labels=labels, num_regions=R, delta=0.5, ignore_index=-1),
        "centroid_hinge_backward": dict(grad_centroid=_f(B, R, D), grad_hinge=_f(B, R), emb=emb,
                                        labels=labels, count=count, centroid=centroid, delta=0.5,
                                        ignore_index=-1, grad_scale=_f(1)),
        "minmax_scale": dict(x=_f(B, 7), eps=1e-7),
        "minmax_scale_backward": dict(grad_y=_f(B, 7), x=_f(B, 7), eps=1e-7),
        "class_scores": dict(query=_f(B, D, 7), means=_f(B, R, D), counts=count, scale=0.5, bias=0.25, sum=True),
        "class_scores_backward": dict(grad_scores=_f(B, R, 7), query=_f(B, D, 7), means=_f(B, R, D), counts=count,
                                      scale=0.5, bias=0.25, sum=True),
        # kind 3 (discriminative): centroid_hinge's arguments are checked by its own rows
        "region_loss": dict(emb=emb, labels=labels, num_regions=R, ignore_index=-1, kind=2, alpha=0.5, beta=1.0,
                            gamma=0.1, delta_v=0.5, delta_d=1.5),
        "region_loss_backward": dict(grad_loss=_f(1).reshape(()), emb=emb, labels=labels, count=count,
                                     centroid=centroid, dcentroid=_f(B, R, D), dvariance=_f(B, R), ignore_index=-1,
                                     kind=2, alpha=0.5, beta=1.0, gamma=0.1, delta_v=0.5, delta_d=1.5),
        **_pair_rows(),
    }  # fmt: skip


KX, KY = 4, 5  # the rows of x and y in the pair ops


def _pair_rows() -> dict[str, dict]:
    """pair_bce and dense_similarity_loss's two ops: x (B, KX, D) and y (B, KY, D) with labels; dense_gradient
    takes dense_moments' outputs (any values: a direct call's checks are about shapes and dtypes)."""
    pair = dict(x=_f(B, KX, D), x_labels=_lab(B, KX), y=_f(B, KY, D), y_labels=_lab(B, KY))
    scalars = dict(scale=_f(1), bias=_f(1))
    return {
        "pair_bce": dict(**pair, **scalars),
        "pair_bce_backward": dict(grad_out=_f(B, KX), **pair, **scalars),
        "dense_moments": dict(**pair, weight=_f(1), bias=_f(1), weight_value=1.0, bias_value=0.0, eps=1e-5,
                              running_mean=None, running_var=None),
        "dense_gradient": dict(grad=_f(1).reshape(()), xa=_f(B, KX, D + 2), x_labels=_lab(B, KX), ya=_f(B, KY, D + 2),
                               y_labels=_lab(B, KY), means=_f(2, B, D), grams=_f(2, B, D + 2, D + 2),
                               counts=torch.ones(2, B, dtype=torch.int64), stats=_f(6).abs() + 1, batch=True),
    }  # fmt: skip


# What is wrong with each argument, when the op takes it: (case, value). The map's own sizes
# are free (pixel_normalize takes any), so the shape mismatches are those of the arguments
# that must agree with it.
_BAD = {
    "emb": [("rank 3", _f(B, D, H * W)), ("rank 5", _f(B, D, H, W, 1)),
            ("int64", torch.ones(B, D, H, W, dtype=torch.int64)),
            ("bool", torch.ones(B, D, H, W, dtype=torch.bool))],
    "labels": [("W + 1", _lab(B, H, W + 1)), ("B + 1", _lab(B + 1, H, W)), ("flat", _lab(B, H * W)),
               ("rank 4", _lab(B, 1, H, W)), ("float", _f(B, H, W)),
               ("bool", torch.zeros(B, H, W, dtype=torch.bool))],
    "mask": [("W + 1", _f(B, H, W + 1)), ("flat", _f(B, H * W))],
    "center": [("D + 1", _f(B, D + 1)), ("B + 1", _f(B + 1, D)), ("rank 3", _f(B, D, 1))],
    "centroid": [("D + 1", _f(B, R, D + 1)), ("B + 1", _f(B + 1, R, D)), ("flat", _f(B, R * D)),
                 ("R = 0", _f(B, 0, D))],
    "count": [("R + 1", _f(B, R + 1)), ("B + 1", _f(B + 1, R)), ("flat", _f(B * R))],
    "offset": [("D + 1", _f(B, R, D + 1)), ("R + 1", _f(B, R + 1, D))],
    "num_regions": [("0", 0), ("-1", -1), ("2^31", 2**31)],
    "dcentroid": [("D + 1", _f(B, R, D + 1)), ("R + 1", _f(B, R + 1, D))],
    "dvariance": [("R + 1", _f(B, R + 1)), ("flat", _f(B * R))],
    "kind": [("4", 4), ("-1", -1)],
    "x": [("rank 3", _f(B, 7, 1)), ("flat", _f(B * 7)), ("int64", torch.ones(B, 7, dtype=torch.int64)),
          ("float16", _f(B, 7, dtype=torch.float16))],
    "grad_scale": [("two elements", _f(2))],
    "query": [("rank 2", _f(B, D)), ("rank 4", _f(B, D, 7, 1)), ("int64", torch.ones(B, D, 7, dtype=torch.int64))],
    "means": [("D + 1", _f(B, R, D + 1)), ("B + 1", _f(B + 1, R, D)), ("flat", _f(B, R * D)),
              ("int64", torch.ones(B, R, D, dtype=torch.int64))],
    "counts": [("R + 1", _f(B, R + 1)), ("flat", _f(B * R)), ("int64", torch.ones(B, R, dtype=torch.int64))],
}  # fmt: skip
_BAD["feat"] = _BAD["emb"]
# Where an op's argument of a shared name has other sizes: by op (its backward's too), then name.
_ROWS = [("rank 2", _f(B, KX * D)), ("D + 1", _f(B, KX, D + 1)), ("B + 1", _f(B + 1, KX, D)),
         ("int64", torch.ones(B, KX, D, dtype=torch.int64))]
_ROW_LABELS = [("K + 1", _lab(B, KX + 1)), ("rank 3", _lab(B, KX, 1)), ("float", _f(B, KX)),
               ("bool", torch.zeros(B, KX, dtype=torch.bool))]
_ONE = [("two elements", _f(2))]
_PAIR = dict(x=_ROWS, x_labels=_ROW_LABELS, y=[("rank 2", _f(B, KY * D)), ("D + 1", _f(B, KY, D + 1)), ("int64", torch.ones(B, KY, D, dtype=torch.int64))],
             y_labels=[("K + 1", _lab(B, KY + 1)), ("float", _f(B, KY))], scale=_ONE, bias=_ONE)
_BAD_OF = {
    "pair_bce": _PAIR,
    "dense_moments": dict(_PAIR, weight=_ONE + [("int64", torch.ones(1, dtype=torch.int64))],
                          running_mean=_ONE, running_var=_ONE + [("int64", torch.ones(1, dtype=torch.int64))]),
    "dense_gradient": dict(
        grad=_ONE, xa=[("rank 2", _f(B, KX * (D + 2))), ("D + 3", _f(B, KX, D + 3)), ("B + 1", _f(B + 1, KX, D + 2)),
                       ("float16", _f(B, KX, D + 2, dtype=torch.float16))],
        ya=[("D + 3", _f(B, KY, D + 3)), ("float32", _f(B, KY, D + 2, dtype=torch.float32))],
        x_labels=_ROW_LABELS, y_labels=[("K + 1", _lab(B, KY + 1)), ("float", _f(B, KY))],
        means=[("D + 1", _f(2, B, D + 1)), ("one side", _f(1, B, D))], grams=[("D + 1", _f(2, B, D + 1, D + 1)),
        ("flat", _f(2, B, (D + 2) ** 2))], counts=[("B + 1", torch.ones(2, B + 1, dtype=torch.int64)),
        ("float", _f(2, B))], stats=[("5", _f(5)), ("(1, 6)", _f(1, 6))]),
}  # fmt: skip


def _bad_cases():
    cases = []
    for op, args in _good().items():
        for arg, value in args.items():
            own = _BAD_OF.get(op.removesuffix("_backward"), {})
            if arg in own:
                bad = own[arg]
            elif arg == "grad_loss":  # a scalar's
                bad = [("two elements", _f(2))]
            elif arg == "grad_scale":
                bad = _BAD[arg]
            elif arg.startswith("grad_"):  # each has the shape of an output (or emb's)
                wider = torch.zeros(*value.shape[:-1], value.shape[-1] + 1, dtype=value.dtype)
                bad = [("last dim + 1", wider), ("rank + 1", value.unsqueeze(0))]
            else:
                bad = _BAD.get(arg, [])
            cases += [pytest.param(op, arg, v, id=f"{op}-{arg}-{case}") for case, v in bad]
    return cases


def _call(variant: str, op: str, args: dict, emu):
    """torch.ops.pixelkernels.<op> on CPU or CUDA tensors, <op>_triton on Triton's device, or the
    emulated CUDA library's <op>."""
    if variant == "cuda-emulated":
        return getattr(emu, op)(*args.values())
    device = {"cpu": "cpu", "cuda": "cuda", "triton": TRITON_DEVICE}[variant]
    values = [v.to(device) if isinstance(v, torch.Tensor) else v for v in args.values()]
    return _packet(op, "_triton" if variant == "triton" else "")(*values)


VARIANTS = [
    pytest.param("cpu", marks=pytest.mark.skipif(not HAVE_CPP, reason="extension not built")),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not (HAS_CUDA and pk._ext.HAVE_CUDA_KERNELS), reason="needs a CUDA device and the CUDA kernels")]),
    pytest.param("triton", marks=[pytest.mark.triton, pytest.mark.skipif(
        "triton" not in AVAILABLE, reason=f"triton not usable here ({sorted(AVAILABLE)})")]
        + ([pytest.mark.cuda] if TRITON_DEVICE == "cuda" else [])),
    "cuda-emulated",
]  # fmt: skip


@pytest.fixture
def lib(request, variant):
    """torch.ops.pixelkernels_emu for the emulated CUDA variant, else None."""
    return request.getfixturevalue("emu") if variant == "cuda-emulated" else None


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", list(_good()))
def test_direct_call_with_good_arguments_runs(variant, op, lib):
    """The baseline of the bad calls below: the same call with valid arguments runs, with the
    schema's defaults left out too."""
    args = _good()[op]
    _call(variant, op, args, lib)
    schema = _schema.function_schema(op)
    required = {a.name: args[a.name] for a in schema.arguments if not a.has_default_value()}
    _call(variant, op, required, lib)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op,arg,value", _bad_cases())
def test_direct_call_with_bad_arguments_raises(variant, op, arg, value, lib):
    """torch.ops.pixelkernels.<op>[_triton](...) skips the public function's checks; every
    variant still refuses what would make a kernel read or write out of bounds."""
    args = dict(_good()[op], **{arg: value})
    with pytest.raises(RuntimeError) as e:
        _call(variant, op, args, lib)
    # the op's own check (or its component op's), not an error from deeper down
    assert re.match(rf"({'|'.join(_schema.SCHEMAS)}|pixelkernels): ", str(e.value)), str(e.value)


# ---------------------------------------------------------------------------------------------
# centroid_hinge: the C++ composition (csrc/centroid_hinge.cpp) and the Python one
# (pixelkernels/triton/centroid_hinge.py, which the Triton variant runs) on the same component ops


@pytest.mark.parametrize(
    "variant,dtype",
    [pytest.param("cpu", d, marks=pytest.mark.skipif(not HAVE_CPP, reason="extension not built"))
     for d in (torch.float64, torch.float32)]
    + [("cuda-emulated", d) for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)],
)  # fmt: skip
@pytest.mark.parametrize("pattern", ["random", "gaps"])
def test_centroid_hinge_compositions_agree_bitwise(variant, dtype, pattern, lib):
    composition = pytest.importorskip("pixelkernels.triton.centroid_hinge")
    ops = lib if lib is not None else torch.ops.pixelkernels
    g = torch.Generator().manual_seed(5)
    emb = (torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64) + 1).to(dtype)
    labels = make_labels(2, 7, 9, 4, device="cpu", pattern=pattern).to(torch.int16)
    args = (emb, labels, 4, 0.25, -1)
    cpp, py = ops.centroid_hinge(*args), composition.forward(ops, *args)
    for a, b in zip(cpp, py, strict=True):
        assert torch.equal(a, b)
    count, centroid, hinge = cpp
    grad_centroid = torch.randn(centroid.shape, generator=g, dtype=torch.float64).to(centroid.dtype)
    grad_hinge = torch.randn(hinge.shape, generator=g, dtype=torch.float64).to(hinge.dtype)
    # region_loss' grad_scale: on CUDA applied in the kernels, as the two products would round
    scale = torch.tensor([0.37], dtype=hinge.dtype)
    for c in (centroid, centroid.double()):  # the centroids in another dtype than the statistics'
        bargs = (grad_centroid, grad_hinge, emb, labels, count, c, 0.25, -1)
        cpp_grad = ops.centroid_hinge_backward(*bargs)
        assert cpp_grad.dtype == emb.dtype and cpp_grad.shape == emb.shape
        assert torch.equal(cpp_grad, composition.backward(ops, *bargs))
        assert torch.equal(ops.centroid_hinge_backward(*bargs, scale), composition.backward(ops, *bargs, scale))

"""One definition per op: registration, dispatch and autograd, written once.

Every op has up to two compiled variants, both with the op's one schema (pixelkernels/schemas.def,
read by csrc/ops.cpp and pixelkernels/_schema.py):

* ``pixelkernels::<name>``          C++ (defined in csrc/ops.cpp; CPU and CUDA kernels)
* ``pixelkernels::<name>_triton``   Triton (``_schema.triton_variant`` in pixelkernels/triton/<name>.py)

and, when differentiable, a backward op of each, ``<name>_backward`` and
``<name>_backward_triton``. ``define()`` checks that each variant carries the table's schema
and gives it the op's one fake implementation and one autograd formula:

* The backward op's arguments are read off its schema: ``grad_<out>`` receives the gradient
  of output ``<out>`` (zeros when that output got none); any other argument is the forward
  input or output of that name. Outputs with no ``grad_<out>`` argument are marked
  non-differentiable. It returns the gradients of ``grad_inputs``, in that order.
* Under ``create_graph=True`` (double backward) the reference is differentiated instead,
  so second derivatives work on every backend without a second hand-written formula.
* Ops without a backward (integer outputs, distance transforms, click maps) pass
  ``backward_fake=None``: the fake, and an autograd that marks every output non-differentiable.

The compiled variant's autograd is C++ (csrc/autograd.cpp, one generic kernel at the Autograd
key reading the same convention off the schemas): an eager call crosses into C++ once, and its
backward runs no Python. Its double backward goes through the backward op's own autograd,
registered here: the derivative of the reference's VJP at the backward op's arguments. The
Triton variant, a Python custom op, keeps the formula in Python (_Formula): the registered
autograd for torch.compile, and a lean autograd.Function for eager calls.

``backend_for`` + ``run`` are the dispatch: the public function validates its arguments,
asks for a backend, and calls the variant with the op's positional arguments. The reference
takes the same positional arguments, so all four backends are interchangeable.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable

import torch

from . import _backend, _checks, _ext, _schema

OPS: dict[str, Op] = {}


@dataclasses.dataclass
class Op:
    name: str
    reference: Callable  # the oracle, same positional arguments as the schema
    outputs: tuple[str, ...]  # output names (schemas leave them unnamed)
    grad_inputs: tuple[str, ...]  # forward arguments the backward op returns gradients for
    compiled: object = None  # torch.ops.pixelkernels.<name>, when the extension is loaded
    triton: object = None  # torch.ops.pixelkernels.<name>_triton, when its module imported
    triton_error: str | None = None
    # variant ("triton") -> the eager autograd.Function of that variant (_function)
    functions: dict = dataclasses.field(default_factory=dict)
    triton_direct: Callable | None = None  # the Triton variant without its custom op's dispatch (_direct)


def _arg_names(packet) -> list[str]:
    return [a.name for a in packet.default._schema.arguments]


def _optional_args(packet) -> set[str]:
    return {a.name for a in packet.default._schema.arguments if isinstance(a.type, torch.OptionalType)}


def _arg_defaults(packet) -> dict:
    return {a.name: a.default_value for a in packet.default._schema.arguments if a.has_default_value()}


class _Formula:
    """One variant's autograd formula, read off the schemas: what to save, and the backward.
    Shared by the registered autograd (torch.library.register_autograd: torch.compile, direct
    torch.ops calls) and the eager fast path (_function)."""

    def __init__(self, op: Op, fwd, bwd):
        self.op, self.bwd = op, bwd
        self.in_names, self.out_names, self.bwd_names = _arg_names(fwd), op.outputs, _arg_names(bwd)
        # The dispatcher may hand setup_context fewer inputs than the schema has (trailing
        # arguments left at their defaults): those take the schema's defaults. So do the backward
        # op's arguments that are no forward input or output (region_hinge's offset, which only
        # centroid_hinge passes).
        self.defaults = {**_arg_defaults(bwd), **_arg_defaults(fwd)}
        self.grad_of = {n: self.out_names.index(n[5:]) for n in self.bwd_names
                        if n.startswith("grad_") and n[5:] in self.out_names}  # fmt: skip
        self.differentiable = set(self.grad_of.values())
        # grad_<out> arguments that take None (Tensor?) for an output without gradient: no zeros
        self.optional_grads = _optional_args(bwd) & self.grad_of.keys()
        # Everything the backward op needs, plus every forward input (for the double backward).
        self.keep = list(dict.fromkeys([n for n in self.bwd_names if n not in self.grad_of] + self.in_names))
        # Per call, only index lookups: where each kept value comes from (an output, else an input,
        # else the schema's default), each backward argument (an output's gradient or a kept
        # value) and each input's gradient (its place in the backward op's results, or None).
        self.keep_src = [(1, self.out_names.index(n)) if n in self.out_names
                         else (0, self.in_names.index(n)) if n in self.in_names else (2, n) for n in self.keep]  # fmt: skip
        self.bwd_src = [(True, self.grad_of[n]) if n in self.grad_of else (False, self.keep.index(n))
                        for n in self.bwd_names]  # fmt: skip
        self.ret_idx = [op.grad_inputs.index(n) if n in op.grad_inputs else None for n in self.in_names]

    def save(self, ctx, inputs, outs) -> None:
        ctx.mark_non_differentiable(*(o for i, o in enumerate(outs) if i not in self.differentiable))
        n_in, defaults = len(inputs), self.defaults
        vals = [outs[k] if kind == 1 else inputs[k] if kind == 0 and k < n_in else defaults[self.keep[j]]
                for j, (kind, k) in enumerate(self.keep_src)]  # fmt: skip
        # Tensors through save_for_backward (None in their place among the other values).
        ctx.save_for_backward(*(v if isinstance(v, torch.Tensor) else None for v in vals))
        ctx.pk_values = [None if isinstance(v, torch.Tensor) else v for v in vals]
        # Shapes for the zeros of differentiable outputs that get no gradient.
        ctx.pk_out_meta = {i: (outs[i].shape, outs[i].dtype, outs[i].device) for i in self.differentiable}

    def backward(self, ctx, grads, call_bwd):
        kept = [t if t is not None else v for t, v in zip(ctx.saved_tensors, ctx.pk_values)]
        if torch.is_grad_enabled():  # create_graph=True
            named = dict(zip(self.keep, kept))
            return _reference_vjp(self.op, self.in_names, named, grads, self.differentiable)[: len(ctx.needs_input_grad)]
        args = []
        for (is_grad, k), name in zip(self.bwd_src, self.bwd_names):
            if not is_grad:
                args.append(kept[k])
                continue
            g = grads[k]
            if g is None and name not in self.optional_grads:
                shape, dtype, device = ctx.pk_out_meta[k]
                g = torch.zeros(shape, dtype=dtype, device=device)
            args.append(g)
        res = call_bwd(*args)
        res = res if isinstance(res, (tuple, list)) else (res,)
        return tuple(res[r] if need and r is not None else None for r, need in zip(self.ret_idx, ctx.needs_input_grad))


def _direct(packet, name: str) -> Callable:
    """The Triton variant `packet` (pixelkernels::<name>_triton) for eager calls: its Python body
    called directly, which skips the custom op's dispatch (5u a call below autograd against 1u,
    u = one tiny torch.add). Through the op instead where the body must not run: meta tensors
    and tensor subclasses (fake tensors: their kernels are the fake ones), and under a dispatch
    mode (fake, tracing or counting modes must see the op)."""
    body, default = _schema.TRITON_BODIES[name], packet.default
    in_mode, plain = torch._C._len_torch_dispatch_stack, (torch.Tensor, torch.nn.Parameter)

    def call(*args):
        t = args[0]  # every schema's first argument is its main tensor
        return body(*args) if type(t) in plain and not t.is_meta and not in_mode() else default(*args)

    return call


def _function(formula: _Formula, call_fwd: Callable, call_bwd: Callable, variant: str) -> type:
    """The Triton variant's eager path (run() takes it outside torch.compile): a plain
    autograd.Function whose forward and backward run call_fwd / call_bwd (the variant's bodies,
    _direct) below the Autograd key, without register_autograd's Python layers (its argument
    normalisation, the autograd kernel's redispatch, setup_context as a second pass).
    benchmarks/host_autograd.py builds one for a compiled variant: the path the C++ autograd
    replaced.
    Gradients of outputs that get none stay None (set_materialize_grads(False)): the backward
    op then gets zeros only for the outputs its schema reads."""
    below = torch._C._AutoDispatchBelowAutograd

    def bwd_below(*args):
        with below():
            return call_bwd(*args)

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            ctx.set_materialize_grads(False)
            with below():
                out = call_fwd(*args)
            formula.save(ctx, args, out if isinstance(out, tuple) else (out,))
            return out

        @staticmethod
        def backward(ctx, *grads):
            return formula.backward(ctx, grads, bwd_below)

    Fn.__name__ = Fn.__qualname__ = f"{formula.op.name}_{variant}"
    return Fn


def _register_autograd(op: Op, fwd, bwd, qualname: str) -> _Formula:
    """register_autograd for one variant: `fwd`/`bwd` are the forward/backward op packets."""
    formula = _Formula(op, fwd, bwd)

    def setup_context(ctx, inputs, output):
        formula.save(ctx, inputs, output if isinstance(output, tuple) else (output,))

    def backward(ctx, *grads):
        return formula.backward(ctx, grads, bwd)

    torch.library.register_autograd(qualname, backward, setup_context=setup_context)
    return formula


def _install_cpp_autograd(op: Op, fwd, bwd, reference_args: Callable | None) -> None:
    """The compiled variant's autograd in C++ (csrc/autograd.cpp: the formula _Formula reads off
    the schemas, as a kernel at the Autograd key), and the backward op's own autograd in Python,
    which only double backward reaches: the derivative of the reference's VJP, taken at the
    backward op's arguments. A forward input the backward op lacks takes its schema default (the
    folded label checks' `check`: None, the forward's labels were checked; similarity_reduce's
    `argmax`), or `reference_args`' value, from the backward op's arguments by name (region_stats'
    num_regions)."""
    _ext.install_autograd(f"{op.name};{','.join(op.outputs)};{','.join(op.grad_inputs)}")
    in_names, bwd_names = _arg_names(fwd), _arg_names(bwd)
    defaults, fwd_defaults = _arg_defaults(bwd), _arg_defaults(fwd)
    differentiable = _Formula(op, fwd, bwd).differentiable  # the outputs with a grad_<out> argument
    grad_names = [f"grad_{o}" for o in op.outputs]

    def setup_context(ctx, inputs, output):
        vals = [*inputs, *(defaults[n] for n in bwd_names[len(inputs) :])]
        ctx.save_for_backward(*(v if isinstance(v, torch.Tensor) else None for v in vals))
        ctx.pk_values = [None if isinstance(v, torch.Tensor) else v for v in vals]

    def backward(ctx, *ggrads):
        vals = [t if t is not None else v for t, v in zip(ctx.saved_tensors, ctx.pk_values)]
        create_graph = torch.is_grad_enabled()
        wrt = [i for i, need in enumerate(ctx.needs_input_grad) if need]
        with torch.enable_grad():
            # Fresh views (as _reference_vjp's): the partial derivative through each argument alone.
            args = list(vals)
            for i in wrt:
                args[i] = vals[i].view_as(vals[i]) if vals[i].requires_grad else vals[i].detach().requires_grad_()
            named = dict(zip(bwd_names, args))
            forward = {**fwd_defaults, **{n: named[n] for n in in_names if n in named}}
            if reference_args is not None:
                forward.update(reference_args(named))
            grads = [named.get(g) for g in grad_names]
            vjp = _reference_vjp(op, in_names, forward, grads, differentiable)
            firsts = [vjp[in_names.index(n)] for n in op.grad_inputs]
            pairs = [(f, g) for f, g in zip(firsts, ggrads) if f is not None and g is not None and f.requires_grad]
            got = [None] * len(wrt)
            if pairs:
                got = torch.autograd.grad([f for f, _ in pairs], [args[i] for i in wrt], [g for _, g in pairs],
                                          create_graph=create_graph, allow_unused=True)  # fmt: skip
        result: list = [None] * len(vals)
        for i, g in zip(wrt, got):
            result[i] = torch.zeros_like(vals[i]) if g is None else g
        return tuple(result)

    torch.library.register_autograd(f"pixelkernels::{op.name}_backward", backward, setup_context=setup_context)


def _register_no_gradient(qualname: str) -> None:
    """An op without a backward (integer outputs, click maps, distance transforms): every output
    is non-differentiable, so a float input that requires grad gives outputs that do not (without
    this the op's outputs required grad and backward raised, or silently gave nothing)."""

    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))
        ctx.pk_inputs = len(inputs)

    def backward(ctx, *grads):
        return (None,) * ctx.pk_inputs

    torch.library.register_autograd(qualname, backward, setup_context=setup_context)


def _reference_vjp(op: Op, in_names, named, grads, differentiable):
    """Gradients of the inputs as a differentiable function of the inputs and `grads`: the
    reference's own graph, so it can be differentiated again."""
    # A fresh view of each input that needs a gradient: autograd.grad w.r.t. the view gives the
    # partial derivative through this argument only. W.r.t. the saved tensor itself it would be
    # the total derivative, counting again the paths through other arguments computed from it
    # (center_distance(e, e.mean(...))), which the engine already adds outside this node.
    inputs = [
        t.view_as(t) if isinstance(t, torch.Tensor) and t.requires_grad else t
        for t in (named[n] for n in in_names)
    ]
    wrt = [
        i
        for i, n in enumerate(in_names)
        if n in op.grad_inputs and isinstance(inputs[i], torch.Tensor) and inputs[i].requires_grad
    ]
    outs = op.reference(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    # An output can be a constant for some arguments (region_stats' variance without
    # with_variance): it has no graph and contributes nothing.
    pairs = [
        (outs[i], grads[i]) for i in sorted(differentiable) if grads[i] is not None and outs[i].requires_grad
    ]
    if not pairs:
        return tuple(torch.zeros_like(inputs[i]) if i in wrt else None for i in range(len(in_names)))
    got = torch.autograd.grad(
        [o for o, _ in pairs],
        [inputs[i] for i in wrt],
        [g for _, g in pairs],
        create_graph=True,
        allow_unused=True,
    )
    result: list = [None] * len(in_names)
    for i, g in zip(wrt, got):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(result)


def _import_triton(name: str) -> tuple[object, str | None]:
    """The Triton module's ops are defined when it is imported; a broken Triton install must
    not break the package, only that backend (with the reason kept for the error)."""
    if _backend.TRITON_VERSION is None:
        return None, "triton is not installed"
    try:
        importlib.import_module(f"pixelkernels.triton.{name}")
        return getattr(torch.ops.pixelkernels, f"{name}_triton"), None
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        warnings.warn(f"pixelkernels: triton kernels of {name} unavailable ({why})", RuntimeWarning)
        return None, why


def define(
    name: str,
    *,
    reference: Callable,
    fake: Callable,
    outputs: tuple[str, ...],
    backward_fake: Callable | None = None,
    grad_inputs: tuple[str, ...] = (),
    reference_args: Callable | None = None,
) -> Op:
    """Register op `name`'s fake and autograd on each compiled variant; called once, at
    import, by pixelkernels/ops/<name>.py (so torch.compile never traces a registration)."""
    op = Op(name, reference, tuple(outputs), tuple(grad_inputs))
    if _ext.HAVE_CPU_KERNELS:
        op.compiled = getattr(torch.ops.pixelkernels, name)
    op.triton, op.triton_error = _import_triton(name)
    if op.triton is not None:
        op.triton_direct = _direct(op.triton, name)
    for suffix, fwd in (("", op.compiled), ("_triton", op.triton)):
        if fwd is None:
            continue
        _schema.expect_registered(name, fwd, suffix)
        # The fakes take every argument: the schema's defaults fill those a caller left out.
        torch.library.register_fake(f"pixelkernels::{name}{suffix}")(
            _schema.with_defaults(fake, _schema.function_schema(name))
        )
        if backward_fake is None:
            if outputs:  # an op without outputs (check_values) has nothing to mark
                _register_no_gradient(f"pixelkernels::{name}{suffix}")
            continue
        bwd_name = f"{name}_backward"
        bwd = getattr(torch.ops.pixelkernels, bwd_name + suffix)
        _schema.expect_registered(bwd_name, bwd, suffix)
        torch.library.register_fake(f"pixelkernels::{bwd_name}{suffix}")(
            _schema.with_defaults(backward_fake, _schema.function_schema(bwd_name))
        )
        if suffix:
            formula = _register_autograd(op, fwd, bwd, f"pixelkernels::{name}{suffix}")
            op.functions["triton"] = _function(formula, op.triton_direct, _direct(bwd, bwd_name), "triton")
        else:
            _install_cpp_autograd(op, fwd, bwd, reference_args)
    OPS[name] = op
    return op


def backend_for(op: Op, backend: str | None, t: torch.Tensor, name: str) -> str:
    """The backend that runs `op` for its main input `t` (called `name` in errors)."""
    chosen = _backend.resolve(backend, t.device, op, t.dtype)
    _checks.backend_dtype(t, name, chosen)
    return chosen


def _needs_grad(args) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def run(op: Op, backend: str, *args):
    """Call `op` on `backend` with the schema's positional arguments (already validated).
    Eagerly, the compiled variants take the lean path (_function); torch.compile traces the
    registered ops, whose autograd is the same formula."""
    if backend == "reference":
        return op.reference(*args)
    variant = "triton" if backend == "triton" else "compiled"
    packet = op.triton if variant == "triton" else op.compiled
    if torch.compiler.is_compiling():
        return packet(*args)
    if _needs_grad(args):
        fn = op.functions.get(variant)
        if fn is not None:  # Triton: the lean Python autograd.Function
            return fn.apply(*args)
        return packet.default(*args)  # C++ autograd (or none: the registered one marks the outputs)
    with torch._C._AutoDispatchBelowAutograd():
        return op.triton_direct(*args) if variant == "triton" else packet.default(*args)

r"""Similarities of query vectors to an image's labelled reference vectors, reduced per reference
class, tile by tile: the (N, K) score matrix never exists (memory
:math:`O((N + K) D + N C)`; tested: N = 20000, K = 2000 grow the peak memory by less than
16 MiB where the float32 matrix is 153 MiB).

This is the scoring step of dense label transfer (Najafi, Kulharia, Ajanthan and Torr,
*Similarity Learning for Dense Label Transfer*, 2018 DAVIS Challenge on Video Object
Segmentation, CVPR workshops, 2018, §2.2.1, eq. (3); see :func:`pixelkernels.label_transfer`)
and of the training-free prior of PFENet (Tian et al., *Prior Guided Feature Enrichment Network
for Few-Shot Segmentation*, TPAMI 2020), as used by Bhatia, *Few-Shot Interactive
Segmentation*, thesis, IIT Bombay (2021), §2.4.3 (see :func:`pixelkernels.prior_mask`).

**How it computes.** The refs stream through tiles and each score tile is reduced per class on
the fly; the backward recomputes the tiles with the forward's arithmetic and never stores them.
For ``"max"`` every backend first recomputes the class maxima and tie counts with the score code
and tile shapes of its gradient pass, so the gradient goes to exactly the refs whose score
equals the max (an equality with the saved output could miss by a last bit), in equal shares
where several do (a subgradient of the max; which refs tie is decided in the working precision,
so two backends can differ on a near tie: on the H100 bench's prior_mask W7 inputs, two support
pixels 7e-9 apart tie in the CUDA kernels' float32 and not in the CPU backend's). In float32 on CUDA
and Triton that recomputation also notes, per row and class, the ref of its only maximum
(``MaxArg``; a row with tied maxima, a NaN max or a non-finite dot has none), and the gradient
passes leave out, before computing its dots, every tile pair that holds none; on CUDA an image
with no such row skips the passes whole and takes the sparse backward instead (the C pairs of
each row: one dot each, the same dot and dZ as the tiles). On CUDA in float32 the forward, whose
tile kernel the recomputation is, already notes MaxArg and keeps it in its tie counts (aux holds
-(j + 1) where ref j alone attains the max; up to 2^24 refs an image): the backward then
recomputes only the 64-row tiles with a row that has no single maximum, and an image without one costs no
N x K pass at all in the backward (prior_mask W7 on the H200 of 2026-11-28: 216 ms forward+backward,
149 of them in the two passes, each recomputing every dot, and 34 in the recomputed forward;
not yet timed since). Triton's forward keeps it likewise, in every dtype, as -(j + 1 + f) with f
a fraction per arithmetic of the scores (float32 IEEE 0.5, TF32 0.25, float64 0.75, float16
0.375, bfloat16 0.625; up to 2^20 refs an image in a float32 aux), and its backward recomputes
only the 16-row blocks where it does not read its own code, so a change of
``torch.backends.cuda.matmul.allow_tf32`` between forward and backward recomputes everything. Each
backend reads the other's code (and any plain tie count) as no code: an aux handed from another
backend is recomputed. The op saves only
its output and a small statistic: the max's tie counts, or the softmax's row max m of
:math:`s/T` and :math:`\log \sum \exp(s/T - m)`, kept apart (one float for both is off by half
an ulp of :math:`|s/T|`, which every softmax weight would inherit).

**Backends.** CPU (float32/float64): tiles of 64 queries x 256 refs through ATen's GEMM, in
float64 arithmetic for both dtypes (float32 tiles widened one at a time; every result the float64
computation on the float32 values, rounded once: with float32 tiles a cosine near 0, a class
sum that cancels and the cosine's gradient, a difference of near-equal terms, missed SPEC's
float32 tolerance in 7.3 % of random cosine/sum cases at scale 40, none now; the float64
GEMMs cost about twice float32's); sum
and mean reduce with one more GEMM against the tile's class matrix (per score when the tile
holds an inf or NaN, so it cannot spread to other classes); the backward sums per-group partials
in a fixed order: the same bits for any thread count. Its float32 softmax backward first
recomputes every row's softmax state in float64 (M, log L and the class probabilities: a
forward's worth of time, W5-softmax forward+backward 1.13x), since h = g - Σ_c g_c o_c from
the float32 out kept o's rounding times :math:`|r| / T` in a gradient that cancels (5e-6
against 0 at T = 1/64 with equal refs); its online softmax takes a tile's exponentials by ATen's
vectorised exp and their class sums by a GEMM (forward 0.75x). Its max first finds every row's maxima in
one parallel pass over all query tiles (kept per row and class: 8 to 48 bytes), so a tile whose
maxima are all unique costs no score pass in the gradient's groups, which are few where the refs
are many (prior_mask: one an image); a tile with a tie recomputes its maxima in its group. Triton: a program per 16 query rows, score
tiles by ``tl.dot`` (tensor cores for float16/bfloat16; float32 in IEEE unless
``torch.backends.cuda.matmul.allow_tf32``), the backward's partials summed in order, no atomics.
CUDA: float16/bfloat16 on tensor cores (``mma.sync``, float32 accumulation), float32 by FMA in a
fixed order (no TF32), float64 a thread per row; no atomics. Every backend is deterministic.

**ref_weight.** With a weight, ref j enters as :math:`w_j r_j` (a soft mask). The CPU kernels,
and the CUDA kernels for float32 and float64 refs, apply it per pair (:math:`w_j (q_i \cdot r_j)`,
norms :math:`|w_j| \lVert r_j \rVert`; the ref's gradient :math:`w_j G_j`, the weight's summed per
pair: for the cosine :math:`\sum_i A_{ij} (q_i \cdot r_j)\,\epsilon / d_{ij}`, where
:math:`r_j \cdot G_j` would be the difference of two near-equal sums) and read a D-major ref (a
(B, D, H, W) map seen as (B, HW, D)) in place, like the query, so no weighted copy of the refs
exists and no launch of its own is spent on it; with CUDA's float32 dots the weighted result can
differ from the reference's in the last bits. For half refs on
CUDA, and on Triton, :math:`w r` is formed in the statistics dtype first and the gradient chained
(:math:`\partial r = w G`, :math:`\partial w = r \cdot G`, the cosine's in float64); on CUDA each
of those is one kernel (a warp per ref, which also zeroes the refs that take no part). Triton's
cosine takes the weight's gradient as :math:`\epsilon \sum_i A_{ij}\, \mathrm{sim}_{ij} / w_j`
from a second column sum of its ref pass (the same per-pair sum; :math:`r \cdot G` where
:math:`|w_j r_j|` is at the norm's floor), and the reference writes the weighted cosine as
:math:`\mathrm{sign}(w)\, q \cdot r / (\lVert q \rVert \lVert r \rVert + \epsilon / |w|)`, whose
autograd derivative in :math:`w` has no cancelling terms: as :math:`r \cdot G` both were ~1e-12
off in float64 at :math:`w = 10^{-3}`, and not 0 with :math:`\epsilon = 0` (the fresh-seed fuzz,
prior_mask's soft mask).

**Numerics.** The sigmoid's derivative keeps :math:`1 - s` as :math:`e s` with the forward's
:math:`e = \exp(-z)`, so a saturated score keeps its tiny gradient. The max of sigmoid scores is
taken on the logits and activated once (:math:`\max_j \sigma(z_j) = \sigma(\max_j z_j)`, the
same value): which refs attain it, and share its gradient, is decided on :math:`z`, where
float32's :math:`s` rounds to 1 for every :math:`z` past about 17 and would tie refs whose
derivatives :math:`e^{-z}` differ (every backend and the reference). The kept ``MaxArg`` rows
hold the forward's out, :math:`\sigma(\max z)`, not the :math:`z` the gradient tests: the CUDA
backward takes their max's :math:`z` again from its one dot (C dots a row, not K), and Triton's
gradient test reads ``MaxArg`` itself (a row's only maximum takes its gradient by index). The
cosine's norms are clamped at the dtype's smallest normal, so ``eps = 0`` is valid and a zero
vector's cosine is 0.
The reference (``pixelkernels.reference.similarity_reduce``) takes ``scale`` and ``bias`` as
tensors too and differentiates them; every backend's double backward differentiates it.
"""

from __future__ import annotations

import importlib

import torch

from .. import _checks, _op
from .._dtypes import stats_dtype

# The module, not the function that pixelkernels.reference re-exports under its name.
_ref = importlib.import_module("pixelkernels.reference.similarity_reduce")
ACTIVATIONS, METRICS, REDUCES = _ref.ACTIVATIONS, _ref.METRICS, _ref.REDUCES

@torch.no_grad()
def _aux(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight, out):
    """The backward's saved statistics from the reference's scores: Max, the refs attaining each
    class max (B, N, C), of z with the sigmoid (the max reduces the logits; counted against the
    max of these very scores, not `out`, whose float64 arithmetic may differ by an ulp); Softmax,
    (m, log l) (B, N, 2): the max of the valid s / T and the log of
    Σ exp(s / T - m) (-inf, -inf with no valid ref; kept apart, since m + log l rounded to one
    float is off by half an ulp of |s / T|, which every p = exp(s / T - lse) would inherit)."""
    B, N, _ = query.shape
    st = stats_dtype(query.dtype)
    if reduce not in ("max", "softmax"):
        return out.new_empty((0,))
    valid = _ref.valid_refs(ref_labels, num_classes)
    q = query.to(st)
    zero = torch.zeros((), dtype=st, device=ref.device)
    r = torch.where(valid[..., None], ref.to(st), zero)
    if ref_weight is not None:
        r = r * torch.where(valid, ref_weight.to(st), zero)[..., None]
    qn = rn = None
    if metric == "cosine":
        qn, rn = _ref._norm(q), _ref._norm(r)
    lab = torch.where(valid, ref_labels.long(), num_classes)  # C: a spare class for the ignored
    chunk = max(1, _ref._CHUNK_ELEMENTS // max(1, B * ref.shape[1]))  # the oracle's chunks: its very scores
    act = "sigmoid" if sigmoid and reduce != "max" else None
    has = (lab[..., None] == torch.arange(num_classes, device=lab.device)).any(1) if reduce == "max" else None
    parts = []
    for i0 in range(0, N, chunk):
        n = None if qn is None else qn[:, i0 : i0 + chunk]
        s = _ref._scores(q[:, i0 : i0 + chunk], r, metric, scale, bias, act, eps, n, rn)
        if reduce == "max":
            o = _ref._class_max(s, lab, has)
            o = torch.cat([o, o.new_full(o.shape[:2] + (1,), float("nan"))], -1)  # the spare never ties
            hit = (s == o.gather(2, lab[:, None, :].expand_as(s))).to(st)
            ties = hit.new_zeros(s.shape[:2] + (num_classes + 1,)).scatter_add_(2, lab[:, None, :].expand_as(s), hit)
            parts.append(ties[..., :num_classes])
        else:
            z = torch.where(valid[:, None, :], s / temperature, torch.full((), float("-inf"), dtype=st))
            m = z.amax(-1) if z.shape[-1] else z.new_full(z.shape[:2], float("-inf"))
            e = torch.where(valid[:, None, :], (z - m[..., None]).exp(), torch.zeros((), dtype=st))
            parts.append(torch.stack([m, e.sum(-1).log()], -1))
    if not parts:
        return out.new_empty((B, 0, num_classes) if reduce == "max" else (B, 0, 2))
    return torch.cat(parts, 1)


def _reference(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps,
               ref_weight=None, check=None, argmax=False):  # fmt: skip
    """The op's reference: the oracle's out, the aux every backend saves for its backward
    (`check`: the compiled backends' folded label check; the caller checked for the reference),
    and with `argmax` each row's label (torch.argmax over the classes: the first of the largest,
    a NaN winning), else (0,). ref_labels None: every ref of class 0."""
    ref_labels = _ref.zero_labels(ref_labels, ref)
    out = _ref.similarity_reduce(
        query, ref, ref_labels, num_classes, metric, scale, bias, "sigmoid" if sigmoid else None, reduce, temperature,
        eps, ref_weight,
    )  # fmt: skip
    args = (query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight)
    labels = out.detach().argmax(-1) if argmax else out.new_empty((0,), dtype=torch.int64)
    return out, _aux(*args, out.detach()), labels


def _fake(query, ref, ref_labels, num_classes, metric, scale, bias, sigmoid, reduce, temperature, eps, ref_weight,
          check=None, argmax=False):  # fmt: skip
    B, N = query.shape[:2]
    st = stats_dtype(query.dtype)
    out = query.new_empty((B, N, num_classes), dtype=st)
    aux = {"max": (B, N, num_classes), "softmax": (B, N, 2)}.get(reduce, (0,))
    return out, query.new_empty(aux, dtype=st), query.new_empty((B, N) if argmax else (0,), dtype=torch.int64)


def _fake_backward(grad_out, query, ref, ref_labels, out, aux, *args):
    w = args[-1]
    gw = torch.empty_like(w) if w is not None else query.new_empty((0,), dtype=stats_dtype(query.dtype))
    return torch.empty_like(query), torch.empty_like(ref), gw


OP = _op.define(
    "similarity_reduce",
    reference=_reference,
    fake=_fake,
    outputs=("out", "aux", "labels"),
    backward_fake=_fake_backward,
    grad_inputs=("query", "ref", "ref_weight"),
)


def check_args(query, ref, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps,
               names=("query", "ref", "ref_labels")):  # fmt: skip
    """Validate similarity_reduce's arguments (called `names` in errors; query already checked
    when its name is not "query") -> (C, scale, bias, sigmoid, temperature, eps)."""
    qn, rn, ln = names
    if qn == "query":
        _checks.tensor(query, qn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, N, D)")
    _checks.tensor(ref, rn, ndim=3, dtypes=_checks.FLOAT_TYPES, shape_doc="(B, K, D)")
    _checks.tensor(ref_labels, ln, ndim=2, dtypes=_checks.LABEL_TYPES, shape_doc="(B, K)")
    _checks.same_device((qn, query), (rn, ref), (ln, ref_labels))
    if ref.dtype != query.dtype:
        raise TypeError(f"{rn} must have {qn}'s dtype ({query.dtype}), got {ref.dtype}")
    B, _, D = query.shape
    _checks.dims_match(rn, (ref.shape[0], ref.shape[2]), (B, D), f"(B, D) = {qn}'s")
    _checks.dims_match(ln, ref_labels.shape, ref.shape[:2], f"shape (B, K) = {rn}'s")
    C = _checks.positive_int(num_classes, "num_classes")
    for name, value, allowed in (("metric", metric, METRICS), ("activation", activation, ACTIVATIONS), ("reduce", reduce, REDUCES)):
        _checks.choice(value, name, allowed)
    if isinstance(scale, torch.Tensor) or isinstance(bias, torch.Tensor):
        raise TypeError(
            "scale and bias must be Python numbers (the kernels take them as constants); for a tensor "
            "(a learnable affine) use pixelkernels.reference.similarity_reduce, which differentiates it"
        )
    scale, bias = _checks.real(scale, "scale"), _checks.real(bias, "bias")
    temperature = _checks.real(temperature, "temperature", minimum=0.0, strict=True)
    eps = _checks.real(eps, "eps", minimum=0.0)
    return C, scale, bias, activation == "sigmoid", temperature, eps


def label_check(query, ref_labels, name: str, C: int, backend: str) -> str | None:
    """The ref labels' value check: the message the op's forward checks them with as its tables
    pass reads them (no launch of its own), or None where it was made here (the reference; an
    empty query, where the forward reads no label; the "sync" form on a device)."""
    if query.shape[0] * query.shape[1] == 0:
        _checks.label_values(ref_labels, name, C, -1)
        return None
    return _checks.label_values_in_kernel(ref_labels, name, C, -1, backend)


def similarity_reduce(
    query: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    num_classes: int,
    *,
    metric: str = "dot",
    scale: float = 1.0,
    bias: float = 0.0,
    activation: str | None = None,
    reduce: str = "sum",
    temperature: float = 1.0,
    eps: float = 1e-7,
    ref_weight: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Per query, the similarities to the references reduced per reference class.

    .. math::

        s_{ij} = \phi\big(a \cdot \mathrm{sim}(q_i, r_j) + c\big), \qquad
        \mathrm{sim}(q, r) = q \cdot r \;\text{ or }\;
        \frac{q \cdot r}{\lVert q \rVert \lVert r \rVert + \epsilon}

    with :math:`\phi` the identity or the sigmoid, :math:`r_j` replaced by :math:`w_j r_j` when
    ``ref_weight`` is given, and :math:`R_c` the refs labelled c:

    .. math::

        \mathrm{out}_{ic} = \sum_{j \in R_c} s_{ij} \;\Big|\; \operatorname*{mean}_{j \in R_c} s_{ij}
        \;\Big|\; \max_{j \in R_c} s_{ij} \;\Big|\;
        \sum_{j \in R_c} \operatorname{softmax}_j(s_{ij} / T)

    the softmax over all valid refs of the image. Najafi et al. (2018), eq. (3) is ``"dot"``,
    ``"sum"`` with the batch-norm folded into a, c.

    Parameters
    ----------
    query : Tensor
        (B, N, D): float32, float64, float16 or bfloat16 (half on ``cuda``, ``triton``,
        ``reference``).
    ref : Tensor
        (B, K, D): ``query``'s dtype.
    ref_labels : Tensor
        (B, K) integer (uint8 to int64): class in ``[0, num_classes)``, or -1 (no part).
    num_classes : int
        The number of classes C.
    metric : str
        ``"dot"`` (default) or ``"cosine"``.
    scale : float
        a, a Python number (default 1).
    bias : float
        c, a Python number (default 0).
    activation : str, optional
        ``None`` (default) or ``"sigmoid"``.
    reduce : str
        ``"sum"`` (default), ``"mean"``, ``"max"`` or ``"softmax"``.
    temperature : float
        T > 0, for ``"softmax"`` (default 1).
    eps : float
        The cosine's :math:`\epsilon \ge 0` (default 1e-7).
    ref_weight : Tensor, optional
        (B, K) weights :math:`w_j` (float, integer or bool), differentiable.
    backend : str, optional
        ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``; ``None`` picks one for the device.

    Returns
    -------
    Tensor
        (B, N, C) in the statistics dtype (float32 for half inputs, else the inputs').

    Notes
    -----
    An empty class gives 0 (sum, mean, softmax) or :math:`-\infty` (max); an image with no valid ref
    the same. Refs labelled -1 and their weights are zeroed before any product, so a NaN or inf in
    a padding slot reaches nothing. Max ties share the gradient evenly (``torch.amax``'s rule).
    Refused, naming the argument: wrong ranks or shapes, ``ref`` of another dtype, tensors on two
    devices, an unknown ``metric``/``activation``/``reduce``, tensor ``scale``/``bias``
    (``TypeError``: use the reference for a learnable affine), ``temperature <= 0``, ``eps < 0``, a
    label outside ``[0, C)`` other than -1 (``ValueError`` on the CPU, a device-side assert on a
    GPU; with ``pixelkernels.set_checks("off")`` it is ignored like -1). Every backend reads a
    D-major ``query`` (a (B, D, H, W) map seen as (B, HW, D)) in place and writes its gradient in
    that layout; the CPU and CUDA kernels a D-major float32/float64 ``ref`` too. Differentiable in
    ``query``, ``ref`` and ``ref_weight``, double backward included.

    Examples
    --------
    >>> q, r = torch.randn(1, 6, 8), torch.randn(1, 5, 8)
    >>> labels = torch.tensor([[0, 0, 1, 1, -1]])  # class 2 is empty
    >>> out = pk.similarity_reduce(q, r, labels, 3, reduce="mean")
    >>> out.shape
    torch.Size([1, 6, 3])
    >>> torch.allclose(out[..., 0], (q @ r.transpose(1, 2))[..., :2].mean(-1)), out[0, 0, 2].item()
    (True, 0.0)
    >>> pk.similarity_reduce(q, r, labels, 3, reduce="max")[0, 0, 2].item()
    -inf
    """
    C, scale, bias, sigmoid, temperature, eps = check_args(
        query, ref, ref_labels, num_classes, metric, scale, bias, activation, reduce, temperature, eps
    )
    w = weight_arg(ref_weight, ref, "ref_weight")
    backend = _op.backend_for(OP, backend, query, "query")
    check = label_check(query, ref_labels, "ref_labels", C, backend)
    args = (C, metric, scale, bias, sigmoid, reduce, temperature, eps, w, check)
    out, _, _ = _op.run(OP, backend, query, ref, ref_labels, *args)
    return out


def weight_arg(w: torch.Tensor | None, ref: torch.Tensor, name: str) -> torch.Tensor | None:
    """A per-ref weight checked against ref (B, K, D) (called `name` in errors), in the statistics
    dtype the kernels read."""
    if w is None:
        return None
    _checks.tensor(w, name, ndim=2, dtypes=_checks.FLOAT_TYPES + _checks.LABEL_TYPES + (torch.bool,), shape_doc="(B, K)")
    _checks.same_device(("ref", ref), (name, w))
    _checks.dims_match(name, w.shape, ref.shape[:2], "ref's (B, K) =")
    return w.to(stats_dtype(ref.dtype))

"""The benchmark cases: ONE table, read by `python -m pixelkernels bench` and by
`benchmarks/bench_<op>.py` (pytest-benchmark).

A row (`Case`) is one workload of one public op:

- ``id``: the paper workload (W1..W9, suffixed where a workload has several shapes);
  ``(op, id)`` is unique, ``--workload W2`` selects the W2 rows of every op;
- ``op``: the public op's name, ``pk.<op>``; ``shape``: text for the tables;
- ``make(device) -> Inputs``: the inputs, deterministic (seeded);
- ``call(inputs, backend) -> outputs``: default ``public_op(op)``, i.e.
  ``pk.<op>(*args, backend=backend, **kwargs)``;
- ``loss(outputs, inputs) -> scalar`` for forward+backward (default ``weighted_sum``),
  ``None`` for an op without a backward;
- ``bytes_fwd`` / ``bytes_fwdbwd(inputs) -> int``: minimal DRAM traffic, for memory-bound ops
  (``None`` otherwise: no copy-bandwidth fraction);
- ``devices``: where the row runs; ``small``: a small input of the same op, run untimed after
  each cache flush on the CPU (see pixelkernels/bench/timing.py; default: none).

What every row is compared with, timed side by side with the backends (`Case.comparisons()`):

- ``reference``: the op's reference (pixelkernels/reference), in the row's dtype: ``reference``
  overrides it where the oracle computes in another dtype (centroid_hinge's runs in float64);
- ``baseline``: the best PyTorch a competent user would write, in the row's dtype
  (pixelkernels/baselines/<op>.py, called with the row's arguments; ``baseline`` overrides it);
- ``peers``: optional libraries that do the same job (`Peer`, e.g. torch_scatter), skipped
  when not installed.

A new op adds its baseline (pixelkernels/baselines/<op>.py) and its rows, appended to CASES at
the end of this file, e.g.

    def _similarity_inputs(B, N, K, D, C):
        def make(device):
            g = torch.Generator().manual_seed(0)
            q = torch.randn(B, N, D, generator=g).to(device).requires_grad_(True)
            r = torch.randn(B, K, D, generator=g).to(device).requires_grad_(True)
            labels = torch.randint(0, C, (B, K), generator=g).to(device)
            return Inputs(args=(q, r, labels, C), kwargs={"reduce": "mean"}, grad=(q, r))
        return make

    CASES += [Case("W5", "similarity_reduce", "N=240x427 K=500 D=128 C=5",
                   _similarity_inputs(1, 240 * 427, 500, 128, 5), small=_similarity_inputs(1, 16, 8, 4, 5))]

and an op without a backward, timed against scipy too:
``Case("W9", "distance_transform", "B=16 512x512", _masks(16, 512, 512), loss=None,
devices=("cpu",), peers=(Peer("scipy", "scipy", _scipy_edt),))``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

import torch

import pixelkernels as pk
from pixelkernels import baselines as _baselines
from pixelkernels import reference as _reference

REFERENCE, BASELINE = "reference", "baseline"


@dataclasses.dataclass
class Inputs:
    args: tuple  # positional arguments of the op
    kwargs: dict = dataclasses.field(default_factory=dict)  # keyword arguments besides backend
    grad: tuple = ()  # leaf tensors (requires_grad=True) that forward+backward differentiates
    aux: dict = dataclasses.field(default_factory=dict)  # anything else a loss or baseline uses


@dataclasses.dataclass(frozen=True)
class Peer:
    """An optional library that does the op's job: ``fn(inputs) -> outputs``; timed when
    ``module`` (its import name, or None: always) is installed."""

    name: str
    module: str | None
    fn: Callable[[Inputs], Any]

    def missing(self) -> str | None:
        """Why it cannot run here (not installed), or None."""
        if self.module is None or importlib.util.find_spec(self.module) is not None:
            return None
        return f"{self.module} is not installed"


def public_op(op: str, **fixed) -> Callable[[Inputs, str], Any]:
    """The runner of most rows: ``pk.<op>(*args, backend=backend, **fixed, **kwargs)``."""

    def call(inp: Inputs, backend: str):
        return getattr(pk, op)(*inp.args, backend=backend, **fixed, **inp.kwargs)

    return call


def best_pytorch(op: str) -> Callable[[Inputs], Any]:
    """The default baseline: ``pixelkernels.baselines.<op>(*args, **kwargs)``."""
    fn = getattr(_baselines, op)

    def call(inp: Inputs):
        return fn(*inp.args, **inp.kwargs)

    return call


def weighted_sum(out, inp: Inputs) -> torch.Tensor:
    """The default loss: sum_i <out_i, w_i> over the outputs that carry a gradient, with fixed
    random w_i of their shape (made on the first call, a warm-up, and kept in ``inp.aux``), so
    every output's backward runs with a dense, non-trivial gradient."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    total = None
    for i, o in enumerate(outs):
        if not (isinstance(o, torch.Tensor) and o.requires_grad):
            continue
        w = inp.aux.get(("loss_weight", i))
        if w is None:
            g = torch.Generator().manual_seed(1000 + i)
            w = torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype)
            inp.aux[("loss_weight", i)] = w
        term = (o * w).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("weighted_sum: no output carries a gradient (give the case loss=None)")
    return total


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclasses.dataclass
class Case:
    id: str
    op: str
    shape: str
    make: Callable[[torch.device], Inputs]
    loss: Callable[[Any, Inputs], torch.Tensor] | None = weighted_sum
    bytes_fwd: Callable[[Inputs], int] | None = None
    bytes_fwdbwd: Callable[[Inputs], int] | None = None
    # floating-point work of one call (bench/gpu_model.py; None: memory-bound, not modelled)
    flops_fwd: Callable[[Inputs], float] | None = None
    flops_fwdbwd: Callable[[Inputs], float] | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")
    small: Callable[[torch.device], Inputs] | None = None
    call: Callable[[Inputs, str], Any] | None = None  # None: public_op(op)
    reference: Callable[[Inputs], Any] | None = None  # None: call(inputs, "reference")
    baseline: Callable[[Inputs], Any] | None = None  # None: best_pytorch(op)
    peers: tuple[Peer, ...] = ()
    # alternating rounds per run (timing.ROUNDS): 1 where a comparison takes seconds a call,
    # so that a run times it once or twice instead of once per round
    rounds: int | None = None
    # the float dtypes the reference and the baseline may compute in (like for like): the
    # row's, float32, unless our kernels compute in more (distance_transform: float64, exact)
    compute_dtypes: frozenset = frozenset({torch.float32})

    @property
    def key(self) -> str:
        return f"{self.op}:{self.id}"

    def comparisons(self) -> list[str]:
        """What the backends are compared with: the reference, the baseline, the peers."""
        return [REFERENCE, BASELINE] + [p.name for p in self.peers]

    def run(self, inp: Inputs, backend: str):
        """The outputs of `backend`: a pixelkernels backend, or one of `comparisons()`."""
        if backend == REFERENCE and self.reference is not None:
            return self.reference(inp)
        if backend == REFERENCE:  # timed like for like: the row's dtype, not the oracle's float64
            from pixelkernels.reference.similarity_reduce import in_row_dtype

            with in_row_dtype():
                return (self.call or public_op(self.op))(inp, backend)
        if backend == BASELINE:
            return (self.baseline or best_pytorch(self.op))(inp)
        for p in self.peers:
            if p.name == backend:
                return p.fn(inp)
        return (self.call or public_op(self.op))(inp, backend)


def _check_unique(cases):
    keys = [c.key for c in cases]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"bench cases must have unique (op, id): {dup}")


# `python -m pixelkernels bench` without --op, --workload or --full: one row per op family of
# the mission (triplet; region statistics and a loss on them; dense label transfer; clicks and
# distance transforms), whose reference and baseline take well under a second a call, so the
# table prints within a few minutes on 2 cores (issue 39 item 8). --full runs every row.
REPRESENTATIVE = (
    "is_triplet_loss:W1",
    "region_stats:W2",
    "masked_average_pool:W2",
    "label_transfer:W5-eq3",
    "click_maps:W8-disk",
    "distance_transform:W9-blobs-256",  # W9-blobs' reference takes ~35 s a call on 2 cores: minutes a row
)


def representative() -> tuple[list[str], list[str]]:
    """(ops, workload ids) whose cross product is exactly REPRESENTATIVE."""
    keys = [k.split(":") for k in REPRESENTATIVE]
    ops, ids = sorted({o for o, _ in keys}), sorted({i for _, i in keys})
    assert {c.key for c in select(ops, ids)} == set(REPRESENTATIVE), "REPRESENTATIVE's ids must not cross"
    return ops, ids


def select(ops=None, ids=None, device: str | None = None) -> list[Case]:
    """The rows of `ops` (all if None) with id in `ids` (all if None) that run on `device`."""
    _check_unique(CASES)
    return [
        c
        for c in CASES
        if (ops is None or c.op in ops)
        and (ids is None or c.id in ids)
        and (device is None or device in c.devices)
    ]


def find(op: str, id: str) -> Case:
    for c in CASES:
        if c.op == op and c.id == id:
            return c
    raise KeyError(f"no bench case {op}:{id}; known: {[c.key for c in CASES]}")


# ---------------------------------------------------------------------------- region_stats


def _region_stats_inputs(B, D, H, W, R):
    def make(device):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(B, D, H, W, generator=g).to(device).requires_grad_(True)
        # Two-region masks as in MEnet (salient object vs background): a disc per image.
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        r2 = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2).float()
        radii = torch.linspace(0.2, 0.45, B).view(B, 1, 1) * min(H, W)
        labels = (r2.unsqueeze(0) < radii**2).long() % R
        return Inputs(args=(emb, labels.to(device), R), grad=(emb,))

    return make


def _region_stats_bytes(backward):
    def count(inp):  # forward reads emb + labels; backward reads them again and writes grad
        emb, labels, _ = inp.args
        return nbytes(emb, labels) + (2 * nbytes(emb) + nbytes(labels) if backward else 0)

    return count


def _torch_scatter(inp: Inputs):
    from pixelkernels.baselines.peers import torch_scatter_region_stats

    return torch_scatter_region_stats(*inp.args, **inp.kwargs)


def _region_stats(wid, B, D, H, W, R, **kw):
    return Case(
        wid,
        "region_stats",
        f"B={B} D={D} {H}x{W} R={R}",
        _region_stats_inputs(B, D, H, W, R),
        bytes_fwd=_region_stats_bytes(False),
        bytes_fwdbwd=_region_stats_bytes(True),
        small=_region_stats_inputs(1, 4, 16, 16, R),
        peers=(Peer("torch_scatter", "torch_scatter", _torch_scatter),),
        **kw,
    )


CASES: list[Case] = [
    _region_stats("W2", 5, 16, 224, 224, 2),
    _region_stats("W2-large", 8, 64, 512, 512, 2, devices=("cuda",)),
]


# ---------------------------------------------------------------------------- region losses


def _grid_labels(B, H, W, R, *, background=False):
    """(B, H, W) int64 labels: R blob regions on a jittered grid (each image shifted), and with
    `background` a ring of ignored (-1) pixels around every blob, as instance masks have."""
    side = int(R**0.5 + 0.999)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    out = []
    for b in range(B):
        gy = ((yy + 7 * b) * side // H) % side
        gx = ((xx + 11 * b) * side // W) % side
        lab = (gy * side + gx) % R
        if background:
            cy = ((yy + 7 * b) * side % H).float() / H - 0.5
            cx = ((xx + 11 * b) * side % W).float() / W - 0.5
            lab = torch.where(cy**2 + cx**2 < 0.16, lab, torch.full_like(lab, -1))
        out.append(lab)
    return torch.stack(out)


def _loss_inputs(B, D, H, W, R, *, labels, softmax=False, kwargs=None, pass_r=True):
    """emb (B, D, H, W) (softmax over D for CAS scores), labels(B, H, W, R), and R as the third
    argument unless the op fixes it (menet_metric_loss: R = 2, not passed)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(B, D, H, W, generator=g)
        if softmax:
            emb = emb.softmax(1)
        emb = emb.to(device).requires_grad_(True)
        args = (emb, labels(B, H, W, R).to(device)) + ((R,) if pass_r else ())
        return Inputs(args=args, kwargs=dict(kwargs or {}), grad=(emb,))

    return make


def _disc_labels(B, H, W, R):
    return _grid_labels(B, H, W, R, background=True)


def _mask_labels(B, H, W, R):
    return _region_stats_inputs(B, 1, H, W, 2)(torch.device("cpu")).args[1]


def _passes(fwd_reads, bwd_reads=0, bwd_writes=0, bwd_label_reads=0):
    """Minimal DRAM traffic of a fused loss: `fwd_reads` passes over (emb, labels) forward;
    backward `bwd_reads` more, `bwd_label_reads` over the labels alone (a gradient that does
    not depend on emb) and `bwd_writes` writes of emb's gradient."""

    def count(inp):
        emb, labels = inp.args[0], inp.args[1]
        reads = (fwd_reads + bwd_reads) * nbytes(emb, labels) + bwd_label_reads * nbytes(labels)
        return reads + bwd_writes * nbytes(emb)

    return count


def _loss_case(wid, op, shape, make, small, fwd_reads=1, bwd_reads=1, bwd_label_reads=0, **kw):
    return Case(wid, op, shape, make, bytes_fwd=_passes(fwd_reads),
                bytes_fwdbwd=_passes(fwd_reads, bwd_reads, 1, bwd_label_reads), small=small, **kw)  # fmt: skip


def _map_inputs(B, C, H, W, *, saliency=False):
    def make(device):
        g = torch.Generator().manual_seed(0)
        feat = torch.randn(B, C, H, W, generator=g).to(device).requires_grad_(True)
        mask = torch.rand(B, H, W, generator=g).to(device).requires_grad_(True)
        return Inputs(args=(feat, mask), grad=(feat, mask))

    return make


def _map_bytes(backward, saliency):
    def count(inp):  # forward: read feat (+ read feat, write the map for saliency)
        feat, mask = inp.args
        fwd = nbytes(feat, mask) + (nbytes(feat, mask) if saliency else 0)
        bwd = 2 * nbytes(feat, mask) + (nbytes(feat, mask) if saliency else 0)
        return fwd + (bwd if backward else 0)

    return count


CASES += [
    # The centroid form's gradient, gc/n of the pixel's region, needs the labels but not emb.
    _loss_case("W2", "menet_metric_loss", "B=5 D=16 224x224", _loss_inputs(5, 16, 224, 224, 2, labels=_mask_labels, pass_r=False),
               _loss_inputs(1, 4, 16, 16, 2, labels=_mask_labels, pass_r=False), bwd_reads=0, bwd_label_reads=1),
    _loss_case("W2-pairwise-normalize", "menet_metric_loss", "B=5 D=16 224x224 pairwise, normalize",
               _loss_inputs(5, 16, 224, 224, 2, labels=_mask_labels, pass_r=False,
                            kwargs={"form": "pairwise", "normalize": True}),
               _loss_inputs(1, 4, 16, 16, 2, labels=_mask_labels, pass_r=False, kwargs={"normalize": True})),
    _loss_case("W3", "cas_loss", "B=40 M=2 256x256 R=2",
               _loss_inputs(40, 2, 256, 256, 2, labels=_mask_labels, softmax=True),
               _loss_inputs(1, 2, 16, 16, 2, labels=_mask_labels, softmax=True)),
    _loss_case("W3-M21", "cas_loss", "B=8 M=21 256x256 R=21",
               _loss_inputs(8, 21, 256, 256, 21, labels=_grid_labels, softmax=True),
               _loss_inputs(1, 21, 16, 16, 21, labels=_grid_labels, softmax=True)),
    _loss_case("W4", "discriminative_loss", "B=8 D=16 512x512 20 instances",
               _loss_inputs(8, 16, 512, 512, 20, labels=_disc_labels), _loss_inputs(1, 4, 16, 16, 20, labels=_disc_labels),
               fwd_reads=2, bwd_reads=2, devices=("cuda",)),
    _loss_case("W4-B2", "discriminative_loss", "B=2 D=16 512x512 20 instances",
               _loss_inputs(2, 16, 512, 512, 20, labels=_disc_labels), _loss_inputs(1, 4, 16, 16, 20, labels=_disc_labels),
               fwd_reads=2, bwd_reads=2, devices=("cpu",)),
    Case("W2", "masked_average_pool", "B=5 C=16 224x224 soft mask", _map_inputs(5, 16, 224, 224),
         bytes_fwd=_map_bytes(False, False), bytes_fwdbwd=_map_bytes(True, False), small=_map_inputs(1, 4, 16, 16)),
    Case("W2", "menet_saliency", "B=5 D=16 224x224 soft weights", _map_inputs(5, 16, 224, 224),
         bytes_fwd=_map_bytes(False, True), bytes_fwdbwd=_map_bytes(True, True), small=_map_inputs(1, 4, 16, 16)),
]  # fmt: skip


# ---------------------------------------------------------------------------- per-pixel primitives
# The ops the losses are made of, on the losses' workloads.


def _hinge_inputs(B, D, H, W, R, *, centroid):
    """emb, instance labels as W4 and, for region_hinge, the regions' own centroids (a leaf);
    centroid_hinge takes R instead."""

    def make(device):
        inp = _loss_inputs(B, D, H, W, R, labels=_disc_labels, kwargs={"delta": 0.5})(device)
        emb, labels, _ = inp.args
        if not centroid:
            return inp
        c = pk.region_stats(emb.detach(), labels, R, with_variance=False, backend="reference")[1]
        c = c.requires_grad_(True)
        return Inputs(args=(emb, labels, c), kwargs=inp.kwargs, grad=(emb, c))

    return make


def _map_passes(reads, writes, bwd_reads, bwd_writes):
    """Traffic of an op on one (B, D, H, W) map (the first argument): forward `reads` and
    `writes` of the map, backward `bwd_reads` and `bwd_writes` more."""

    def counts(backward):
        return lambda inp: (reads + writes + (bwd_reads + bwd_writes if backward else 0)) * nbytes(inp.args[0])

    return counts(False), counts(True)


def _emb_inputs(B, D, H, W, *, center=False):
    """emb (B, D, H, W), and with `center` a (B, D) center: both leaves."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(B, D, H, W, generator=g).to(device).requires_grad_(True)
        if not center:
            return Inputs(args=(emb,), grad=(emb,))
        c = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
        return Inputs(args=(emb, c), grad=(emb, c))

    return make


_NORMALIZE_BYTES = _map_passes(1, 1, 2, 1)  # backward reads grad and emb, writes grad
_DISTANCE_BYTES = _map_passes(1, 0, 1, 1)  # the (B, H, W) distance map is 1/D of the traffic

def _centroid_hinge_in_row_dtype(inp: Inputs):
    """The centroid_hinge oracle's composition (pixelkernels/reference/centroid_hinge.py) in
    the row's dtype: that oracle computes in float64, which would time float64 against float32."""
    emb, labels, R = inp.args
    count, centroid, _ = _reference.region_stats(emb, labels, R, with_variance=False)
    return count, centroid, _reference.region_hinge(emb, labels, centroid, inp.kwargs["delta"])


CASES += [
    _loss_case("W4-B2", "centroid_hinge", "B=2 D=16 512x512 20 instances", _hinge_inputs(2, 16, 512, 512, 20, centroid=False),
               _hinge_inputs(1, 4, 16, 16, 20, centroid=False), fwd_reads=2, bwd_reads=2, devices=("cpu",),
               reference=_centroid_hinge_in_row_dtype),
    _loss_case("W4", "centroid_hinge", "B=8 D=16 512x512 20 instances", _hinge_inputs(8, 16, 512, 512, 20, centroid=False),
               _hinge_inputs(1, 4, 16, 16, 20, centroid=False), fwd_reads=2, bwd_reads=2, devices=("cuda",),
               reference=_centroid_hinge_in_row_dtype),
    _loss_case("W4-B2", "region_hinge", "B=2 D=16 512x512 20 instances", _hinge_inputs(2, 16, 512, 512, 20, centroid=True),
               _hinge_inputs(1, 4, 16, 16, 20, centroid=True), devices=("cpu",)),
    _loss_case("W4", "region_hinge", "B=8 D=16 512x512 20 instances", _hinge_inputs(8, 16, 512, 512, 20, centroid=True),
               _hinge_inputs(1, 4, 16, 16, 20, centroid=True), devices=("cuda",)),
    Case("W2", "pixel_normalize", "B=5 D=16 224x224", _emb_inputs(5, 16, 224, 224),
         bytes_fwd=_NORMALIZE_BYTES[0], bytes_fwdbwd=_NORMALIZE_BYTES[1], small=_emb_inputs(1, 4, 16, 16)),
    Case("W2", "masked_sum", "B=5 C=16 224x224 soft mask", _map_inputs(5, 16, 224, 224),
         bytes_fwd=_map_bytes(False, False), bytes_fwdbwd=_map_bytes(True, False), small=_map_inputs(1, 4, 16, 16)),
    Case("W2", "center_distance", "B=5 D=16 224x224", _emb_inputs(5, 16, 224, 224, center=True),
         bytes_fwd=_DISTANCE_BYTES[0], bytes_fwdbwd=_DISTANCE_BYTES[1], small=_emb_inputs(1, 4, 16, 16, center=True)),
]  # fmt: skip


# ---------------------------------------------------------------------------- triplet (Li & Liu, IS-Triplet)


def _triplet_inputs(B, D, H, W, K, mining="random", one_pixel=False):
    """emb (B, D, H, W), a salient disc per image as the mask (as region_stats' W2), and a seeded
    generator on the device: every call draws fresh sets (the sampling is in the timed region).
    one_pixel: one foreground and one background pixel per image, the rest ignored (image 0
    has no foreground), so that every sampler draws the same sets (the small rows, which
    tests/test_baselines.py compares with the oracle)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        emb = torch.randn(B, D, H, W, generator=g).to(device).requires_grad_(True)
        mask = _region_stats_inputs(B, 1, H, W, 2)(torch.device("cpu")).args[1]
        if one_pixel:
            mask = torch.full_like(mask, -1)
            mask[:, H // 2, W // 3], mask[:, 1, 2] = 1, 0
            mask[0, H // 2, W // 3] = -1
        mask = mask.to(device)
        kwargs = {"num_samples": K, "margin": 3.0, "mining": mining, "generator": torch.Generator(device).manual_seed(1)}
        return Inputs(args=(emb, mask), kwargs=kwargs, grad=(emb,))

    return make


def _triplet_bytes(backward):
    def count(inp):  # two draws read the mask; the backward writes emb's gradient (the sets are ~K D)
        emb, mask = inp.args
        return 2 * nbytes(mask) + (nbytes(emb) if backward else 0)

    return count


def _is_triplet_loop(inp: Inputs):
    """The loop a user writes first (the issue's measured baseline): per image, nonzero for the
    two classes, randperm draws, F.triplet_margin_loss on each eq. 4 term; batch-hard (the
    W1-hard row): each anchor's farthest positive and nearest negative of its image's sets by
    torch.cdist and argmax/argmin, without gradient, before the loss. (W1-hard's oracle mines by
    exact differences, about 25 s a call here: a bench of it did not finish 5 runs in 85 min.)"""
    import torch.nn.functional as F

    emb, mask = inp.args
    K, margin, gen = inp.kwargs["num_samples"], inp.kwargs["margin"], inp.kwargs["generator"]
    hard = inp.kwargs.get("mining", "random") == "hard"
    B, D = emb.shape[:2]

    def term(x, a, p, n):
        if hard:
            with torch.no_grad():
                xa = x[a]
                p = p[torch.cdist(xa, x[p]).argmax(1)]
                n = n[torch.cdist(xa, x[n]).argmin(1)]
        return F.triplet_margin_loss(x[a], x[p], x[n], margin=margin, eps=0.0)

    terms = []
    for b in range(B):
        x = emb[b].reshape(D, -1).T
        m = mask[b].reshape(-1)
        fg, bg = (m == 1).nonzero().squeeze(1), (m == 0).nonzero().squeeze(1)
        n = min(K, fg.numel(), bg.numel())
        if n == 0:
            continue

        def draw(s):
            return s[torch.randperm(s.numel(), generator=gen, device=s.device)[:n]]

        f1, f2, b1, b2 = draw(fg), draw(fg), draw(bg), draw(bg)
        terms.append(0.5 * (term(x, f1, f2, b1) + term(x, b1, b2, f2)))
    return torch.stack(terms).mean() if terms else emb.sum() * 0


def _pml_batch_hard(inp: Inputs):
    """pytorch-metric-learning's BatchHardMiner + TripletMarginLoss per image on sets drawn as
    the baseline draws them (its distance unnormalised and its mean over all triplets, the
    conventions of eq. 4): anchors F1 and B1, each mined against the other class's set."""
    from pytorch_metric_learning import distances, losses, miners, reducers

    emb, mask = inp.args
    K, margin, gen = inp.kwargs["num_samples"], inp.kwargs["margin"], inp.kwargs["generator"]
    dist = distances.LpDistance(normalize_embeddings=False)
    miner = miners.BatchHardMiner(distance=dist)
    loss_fn = losses.TripletMarginLoss(margin=margin, distance=dist, reducer=reducers.MeanReducer())
    f1, _, b1, _ = _baselines.triplet_losses.draw_sets(mask, K, gen)
    B, D = emb.shape[:2]
    terms = []
    for b in range(B):
        x = emb[b].reshape(D, -1).T
        f, g = f1[b][f1[b] >= 0], b1[b][b1[b] >= 0]
        if f.numel() == 0:  # n_b = 0: left out, as eq. 4's mean over images
            continue
        vecs = torch.cat([x[f], x[g]])
        labels = torch.cat([torch.ones_like(f), torch.zeros_like(g)])
        terms.append(loss_fn(vecs, labels, miner(vecs, labels)))
    return torch.stack(terms).mean() if terms else emb.sum() * 0


CASES += [
    Case("W1", "is_triplet_loss", "B=3 D=64 448x448 K=5000 m=3", _triplet_inputs(3, 64, 448, 448, 5000),
         bytes_fwd=_triplet_bytes(False), bytes_fwdbwd=_triplet_bytes(True), small=_triplet_inputs(2, 4, 16, 16, 20, one_pixel=True),
         reference=_is_triplet_loop),
    Case("W1-hard", "is_triplet_loss", "B=3 D=64 448x448 K=5000 m=3 batch-hard",
         _triplet_inputs(3, 64, 448, 448, 5000, "hard"), small=_triplet_inputs(2, 4, 16, 16, 20, "hard", one_pixel=True),
         flops_fwd=lambda inp: 4 * 3 * 5000**2 * 2 * 64, flops_fwdbwd=lambda inp: 4 * 3 * 5000**2 * 2 * 64,
         reference=_is_triplet_loop, peers=(Peer("pytorch-metric-learning", "pytorch_metric_learning", _pml_batch_hard),),
         rounds=1),
]  # fmt: skip


# ---------------------------------------------------------------------------- dense similarity
def _transfer_inputs(B, H, W, D, C, k, **kwargs):
    """label_transfer (Najafi et al. §2.2.1): a (B, D, H, W) query map against k refs per class, laid
    out as stochastic_pool gives them (class-major, a few padding slots)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(B, D, H, W, generator=g).to(device).requires_grad_(True)
        r = torch.randn(B, C * k, D, generator=g).to(device).requires_grad_(True)
        lab = torch.arange(C).repeat_interleave(k).expand(B, C * k).clone()
        lab[:, k - 1 :: k] = -1  # the last slot of each class is padding
        return Inputs(args=(q, r, lab.to(device), C), kwargs=kwargs, grad=(q, r))

    return make


def _transfer_flops(backward: bool):
    def flops(inp: Inputs) -> float:
        (q, r, _, _) = inp.args
        n = q.shape[0] * q.shape[2] * q.shape[3] * r.shape[1] * q.shape[1] * 2.0
        return n * (4 if backward else 1)  # the backward recomputes the scores and contracts twice

    return flops


def _prior_inputs(B, C, Hq, Wq, Hs, Ws):
    """prior_mask (PFENet layer-4 features): query and support maps, a binary support mask."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        q = torch.randn(B, C, Hq, Wq, generator=g).relu_().to(device).requires_grad_(True)
        s = torch.randn(B, C, Hs, Ws, generator=g).relu_().to(device).requires_grad_(True)
        m = (torch.rand(B, Hs, Ws, generator=g) < 0.3).float().to(device)
        return Inputs(args=(q, s, m), grad=(q, s))

    return make


def _keops_label_transfer(inp: Inputs):
    from pixelkernels.baselines.peers import keops_label_transfer

    return keops_label_transfer(*inp.args, **inp.kwargs)


def _keops_prior_mask(inp: Inputs):
    from pixelkernels.baselines.peers import keops_prior_mask

    return keops_prior_mask(*inp.args, **inp.kwargs)


# KeOps (pykeops LazyTensor reductions, optional; pixelkernels/baselines/peers.py): the library
# for reductions over an implicit matrix. Seconds to minutes a call on a CPU at these sizes, so
# these rows keep rounds=1: a call that outlasts its round's budget is timed once a run, after
# one warm-up.
_KEOPS_TRANSFER = (Peer("keops", "pykeops", _keops_label_transfer),)
_KEOPS_PRIOR = (Peer("keops", "pykeops", _keops_prior_mask),)
_BN_AFFINE = {"scale": 0.37, "bias": -0.8}  # eq. 3's batch-norm folded in (values of a trained model's order)

CASES += [
    Case("W5", "label_transfer", "query 240x427 D=128 K=100/class C=5 sigmoid+mean",
         _transfer_inputs(1, 240, 427, 128, 5, 100, activation="sigmoid", reduce="mean"),
         small=_transfer_inputs(1, 9, 7, 5, 3, 4, activation="sigmoid", reduce="mean"),
         flops_fwd=_transfer_flops(False), flops_fwdbwd=_transfer_flops(True), peers=_KEOPS_TRANSFER, rounds=1),
    Case("W5-eq3", "label_transfer", "query 240x427 D=128 K=100/class C=5 eq.3 (dot, sum, linear)",
         _transfer_inputs(1, 240, 427, 128, 5, 100, reduce="sum", **_BN_AFFINE),
         small=_transfer_inputs(1, 9, 7, 5, 3, 4, reduce="sum", **_BN_AFFINE), peers=_KEOPS_TRANSFER, rounds=1),
    # The other two reductions at W5's size, so each of sum, mean, max and softmax has a row against
    # KeOps: the authors' sigmoid + per-class max, and a soft label transfer (cosine softmax, T = 0.1).
    # W5-max folds in the batch-norm the authors apply before the sigmoid (Najafi et al. §2.2.1): the
    # dots of these unit-variance inputs have std sqrt(D), so scale 1/sqrt(D). Without it every
    # class max is sigmoid(~28) = 1.0 in float32, a tie of dozens of refs with a zero gradient:
    # a degenerate workload that times the tie path and compares gradients of 1e-12.
    Case("W5-max", "label_transfer", "query 240x427 D=128 K=100/class C=5 BN-scaled sigmoid+max",
         _transfer_inputs(1, 240, 427, 128, 5, 100, activation="sigmoid", reduce="max", scale=128**-0.5),
         small=_transfer_inputs(1, 9, 7, 5, 3, 4, activation="sigmoid", reduce="max", scale=5**-0.5),
         flops_fwd=_transfer_flops(False), flops_fwdbwd=_transfer_flops(True), peers=_KEOPS_TRANSFER, rounds=1),
    Case("W5-softmax", "label_transfer", "query 240x427 D=128 K=100/class C=5 cosine softmax T=0.1",
         _transfer_inputs(1, 240, 427, 128, 5, 100, metric="cosine", reduce="softmax", temperature=0.1),
         small=_transfer_inputs(1, 9, 7, 5, 3, 4, metric="cosine", reduce="softmax", temperature=0.1),
         flops_fwd=_transfer_flops(False), flops_fwdbwd=_transfer_flops(True), peers=_KEOPS_TRANSFER, rounds=1),
    # On the CPU the C = 512 case scaled to one image (~0.4 TFLOP a forward at B = 1); the GPU rows
    # are the papers' shapes.
    Case("W7", "prior_mask", "B=8 C=2048 60x60 vs 60x60", _prior_inputs(8, 2048, 60, 60, 60, 60),
         small=_prior_inputs(2, 6, 5, 4, 3, 5), devices=("cuda",), peers=_KEOPS_PRIOR),
    Case("W7-C512", "prior_mask", "B=8 C=512 119x119 vs 119x119", _prior_inputs(8, 512, 119, 119, 119, 119),
         small=_prior_inputs(2, 6, 5, 4, 3, 5), devices=("cuda",), peers=_KEOPS_PRIOR),
    Case("W7-C512-B1", "prior_mask", "B=1 C=512 119x119 vs 119x119 (W7 scaled to a CPU)",
         _prior_inputs(1, 512, 119, 119, 119, 119), small=_prior_inputs(2, 6, 5, 4, 3, 5), peers=_KEOPS_PRIOR,
         rounds=1),
]  # fmt: skip


def _dense_loss_inputs(B, Kx, Ky, D, C, *, per_class=None, dtype=torch.float32):
    """dense_similarity_loss (Najafi et al. §2.2 eq. 1): x and y with their labels, either `per_class`
    pooled vectors per class (stochastic_pool's class-major layout, a padding slot per class) or
    every pixel of the two images (labels in [0, C), a few ignored)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, Kx, D, generator=g).to(device, dtype).requires_grad_(True)
        y = torch.randn(B, Ky, D, generator=g).to(device, dtype).requires_grad_(True)
        if per_class is not None:
            xl = torch.arange(C).repeat_interleave(per_class).expand(B, C * per_class).clone()
            xl[:, per_class - 1 :: per_class] = -1
            yl = xl.clone()
        else:
            xl, yl = torch.randint(0, C, (B, Kx), generator=g), torch.randint(0, C, (B, Ky), generator=g)
            xl[torch.rand(B, Kx, generator=g) < 0.05] = -1
            yl[torch.rand(B, Ky, generator=g) < 0.05] = -1
        return Inputs(args=(x, xl.to(device), y, yl.to(device)), kwargs={"weight": 1.3, "bias": -0.2}, grad=(x, y))

    return make


def _dense_loss_flops(backward: bool):
    def flops(inp: Inputs) -> float:
        x, _, y, _ = inp.args
        n = x.shape[0] * x.shape[1] * y.shape[1] * x.shape[2] * 2.0
        return n * (4 if backward else 1)  # the backward recomputes the logits and contracts twice

    return flops


def _keops_dense_loss(inp: Inputs):
    from pixelkernels.baselines.peers import keops_dense_similarity_loss

    return keops_dense_similarity_loss(*inp.args, **inp.kwargs)


_W6 = {"flops_fwd": _dense_loss_flops(False), "flops_fwdbwd": _dense_loss_flops(True), "rounds": 1,
       "small": _dense_loss_inputs(2, 9, 7, 5, 3), "peers": (Peer("keops", "pykeops", _keops_dense_loss),)}  # fmt: skip
CASES += [
    Case("W6a", "dense_similarity_loss", "B=8 Kx=Ky=100/class C=5 D=128",
         _dense_loss_inputs(8, 500, 500, 128, 5, per_class=100), **_W6),
    Case("W6b", "dense_similarity_loss", "every pixel of 60x107 vs 60x107, D=128, B=1",
         _dense_loss_inputs(1, 6420, 6420, 128, 5), **_W6),
    Case("W6c", "dense_similarity_loss", "every pixel of 240x427 vs 240x427, D=64, B=1, bf16",
         _dense_loss_inputs(1, 102480, 102480, 64, 5, dtype=torch.bfloat16), devices=("cuda",), **_W6),
]  # fmt: skip


# ----------------------------------------------------------------------------- click_maps


def _click_inputs(B, N, H, W, mode):
    """RITM-style training crops: float clicks inside the map, the last 3 rows of each channel
    padding (images differ in their number of clicks)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        p = torch.rand(B, 2 * N, 3, generator=g) * torch.tensor([H - 1.0, W - 1.0, 0.0])
        p[..., 2] = torch.arange(2 * N, dtype=torch.float32)
        p[:, N - min(3, N) : N, :2] = -1
        p[:, 2 * N - min(3, N) :, :2] = -1
        return Inputs(args=(p.to(device), (H, W)), kwargs={"mode": mode, "radius": 5.0})

    return make


def _dist_maps(inp: Inputs):
    """The timed reference: f-BRS/RITM's DistMaps computation as published, in float32: a
    (B·2N, 2, H, W) tensor of pixel-minus-click coordinates, squared and summed, padding rows at
    1e6, the minimum over each channel's N clicks, then the mode's transform (the oracle itself
    computes in float64: not timed against float32 kernels)."""
    points, (H, W) = inp.args
    mode, r = inp.kwargs["mode"], inp.kwargs["radius"]
    B, twoN, _ = points.shape
    p = points.reshape(-1, 3)[:, :2]
    invalid = p.amax(1) < 0
    rows = torch.arange(H, dtype=torch.float32, device=points.device)
    cols = torch.arange(W, dtype=torch.float32, device=points.device)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).unsqueeze(0).repeat(p.shape[0], 1, 1, 1)
    grid.sub_(p.view(-1, 2, 1, 1))
    if mode == "tanh":
        grid.div_(r)
    grid.mul_(grid)
    d2 = grid[:, 0] + grid[:, 1]
    d2[invalid] = 1e6
    d2 = d2.view(B, 2, twoN // 2, H, W).amin(2)
    if mode == "disk":
        return (d2 <= r * r).float()
    if mode == "tanh":
        return torch.tanh(2 * d2.sqrt())
    return d2.sqrt().clamp(max=inp.kwargs.get("max_distance", 255.0))


def _click_bytes(inp: Inputs) -> int:
    points, (H, W) = inp.args
    return nbytes(points) + points.shape[0] * 2 * H * W * 4  # the clicks read, the maps written


CASES += [
    Case(f"W8-{mode}", "click_maps", f"B=32 2N=48 320x480 {mode} r=5", _click_inputs(32, 24, 320, 480, mode),
         loss=None, bytes_fwd=_click_bytes, small=_click_inputs(2, 4, 7, 9, mode), reference=_dist_maps)
    for mode in ("disk", "tanh")
]  # fmt: skip


# ---------------------------------------------------------------------- distance_transform


def _edt_masks(B, H, W, kind):
    """blobs: random discs of ones (objects) on zeros, ~40 % of the pixels (distances inside
    objects to the background, the protocol's error masks); few: ones with 10 zeros an image
    (distances to clicks)."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.arange(H).view(1, H, 1, 1), torch.arange(W).view(1, 1, W, 1)
        if kind == "blobs":
            n = max(1, H * W // 2000)
            cy = torch.randint(0, H, (B, 1, 1, n), generator=g)
            cx = torch.randint(0, W, (B, 1, 1, n), generator=g)
            r = torch.randint(4, 30, (B, 1, 1, n), generator=g)
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).any(3)
        else:
            m = torch.ones(B, H, W, dtype=torch.bool)
            m.view(B, -1).scatter_(1, torch.randint(0, H * W, (B, 10), generator=g), False)
        return Inputs(args=(m.to(device),))

    return make


def _peer(name: str):
    def run(inp: Inputs):
        from pixelkernels.baselines import peers

        return getattr(peers, f"{name}_distance_transform")(*inp.args)

    return run


_EDT_PEERS = (Peer("scipy", "scipy", _peer("scipy")), Peer("opencv", "cv2", _peer("opencv")),
              Peer("edt", "edt", _peer("edt")))  # fmt: skip
CASES += [
    Case(f"W9-{kind}", "distance_transform", f"B=16 512x512 {kind}", _edt_masks(16, 512, 512, kind), loss=None,
         bytes_fwd=lambda inp: inp.args[0].numel() * 5,  # the mask read, the float32 distances written
         small=_edt_masks(2, 13, 17, kind), peers=_EDT_PEERS, rounds=1,
         compute_dtypes=frozenset({torch.float32, torch.float64}))  # exact: float64 in every backend
    for kind in ("blobs", "few")
]  # fmt: skip
# W9-blobs at a quarter of the pixels and half the batch, for `bench`'s default run (REPRESENTATIVE):
# the reference's O(B·H·W²) minimum takes ~0.5 s a call here, not ~35 s.
CASES += [
    Case("W9-blobs-256", "distance_transform", "B=8 256x256 blobs", _edt_masks(8, 256, 256, "blobs"), loss=None,
         bytes_fwd=lambda inp: inp.args[0].numel() * 5, small=_edt_masks(2, 13, 17, "blobs"), peers=_EDT_PEERS,
         rounds=1, compute_dtypes=frozenset({torch.float32, torch.float64}))
]  # fmt: skip


# ------------------------------------------------------------------------------ next_clicks


def _protocol_inputs(B, H, W):
    """The evaluation protocol mid-session: gt random discs of objects (~40 % of the pixels, as
    distance_transform's W9 blobs), pred the same discs with radii off by -3..3, a fifth of them
    missed and as many false ones added (errors along the boundaries and whole blobs), 5 clicked
    pixels an image."""

    def make(device):
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.arange(H).view(1, H, 1, 1), torch.arange(W).view(1, 1, W, 1)
        n = max(1, H * W // 2000)
        cy = torch.randint(0, H, (B, 1, 1, n), generator=g)
        cx = torch.randint(0, W, (B, 1, 1, n), generator=g)
        r = torch.randint(4, 30, (B, 1, 1, n), generator=g)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        gt = (d2 <= r * r).any(3)
        kept = torch.rand(B, 1, 1, n, generator=g) >= 0.2
        rp = (r + torch.randint(-3, 4, (B, 1, 1, n), generator=g)).clamp(min=1)
        fy = torch.randint(0, H, (B, 1, 1, n // 5 + 1), generator=g)
        fx = torch.randint(0, W, (B, 1, 1, n // 5 + 1), generator=g)
        pred = ((d2 <= rp * rp) & kept).any(3) | ((yy - fy) ** 2 + (xx - fx) ** 2 <= 100).any(3)
        clicked = torch.zeros(B, H * W, dtype=torch.bool)
        clicked.scatter_(1, torch.randint(0, H * W, (B, 5), generator=g), True)
        return Inputs(args=(pred.to(device), gt.to(device)), kwargs={"clicked": clicked.view(B, H, W).to(device)})

    return make


def _clicker_peer(name: str):
    def run(inp: Inputs):
        from pixelkernels.baselines import peers

        return getattr(peers, f"{name}_next_clicks")(*inp.args, **inp.kwargs)

    return run


CASES += [
    Case("W9", "next_clicks", "B=16 512x512", _protocol_inputs(16, 512, 512), loss=None,
         small=_protocol_inputs(2, 13, 17), rounds=1,
         peers=(Peer("scipy", "scipy", _clicker_peer("scipy")), Peer("opencv", "cv2", _clicker_peer("opencv"))),
         compute_dtypes=frozenset({torch.float32, torch.float64})),  # exact: the transform in float64 / integers
]  # fmt: skip


# ---------------------------------------------------------------------------- sample_clicks


def _click_sampler_inputs(B, H, W, strategy, scale=1.0):
    """Training crops (RITM-style): gt objects as next_clicks' W9 discs, 3 positive and 3
    negative clicks an image, Xu et al.'s distances (d_band 40, d_step 10, d_margin 5) times
    ``scale`` (the small rows shrink them with the image)."""
    protocol = _protocol_inputs(B, H, W)

    def make(device):
        gt = protocol(device).args[1]
        kw = dict(num_positive=3, num_negative=3, strategy=strategy, d_band=40 * scale, d_step=10 * scale,
                  d_margin=5 * scale, generator=torch.Generator(device=gt.device))  # fmt: skip
        return Inputs(args=(gt,), kwargs=kw)

    return make


def _seeded(fn):
    """Every eager call draws the same keys (the inputs' generator, on the masks' device, seeded
    alike before each call), so every candidate returns the same clicks and the max error
    compares them. One generator per inputs, not one a call: a capture cannot construct a CUDA
    generator (the H200 run of 2026-11-28 timed no graph of sample_clicks), nor seed one; the
    graph registers it (rows._cuda_generators) and each replay draws fresh keys."""

    def run(inp: Inputs, *backend):
        g = inp.kwargs["generator"]
        if g.device.type != "cuda" or not torch.cuda.is_current_stream_capturing():
            g.manual_seed(0)
        return fn(*inp.args, *backend, **inp.kwargs)

    return run


def _sample_clicks_call(gt, backend, **kw):
    import pixelkernels as pk

    return pk.sample_clicks(gt, backend=backend, **kw)


CASES += [
    Case(f"S{strategy}", "sample_clicks", f"B=16 320x480 3+3 clicks strategy {strategy}",
         _click_sampler_inputs(16, 320, 480, strategy), loss=None,
         small=_click_sampler_inputs(2, 13, 17, strategy, scale=0.2), rounds=1,
         call=_seeded(_sample_clicks_call), baseline=_seeded(_baselines.sample_clicks),
         compute_dtypes=frozenset({torch.float32, torch.float64}))  # exact: float64 thresholds, integer distances
    for strategy in (1, 3)
]  # fmt: skip

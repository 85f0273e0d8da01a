"""triplet_hinge: the generic contract (tests/contract.py) in both mining modes, on index sets
with padding, repeated pixels and classes smaller than K; then what is special about it: the
per-image loss equals torch's triplet_margin_loss (eps = 0) on the same sets, batch-hard mining
equals a brute-force search (ties to the lowest slot), gradients reach only the mined pixels,
and hard mining needs O(K D) memory, not O(K^2)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import BACKENDS, assert_close, backend_params, dtypes_for, make_emb, weighted_loss
from contract import Contract, EmulateCuda, deterministic, suite
from fuzz import Choice, Floats, Indices

import pixelkernels as pk


def index_sets(B, H, W, K, *, seed=0, device="cpu", pad=0.2, fg=0.5, empty=()):
    """anchor, positive, negative (B, K): a foreground draw, a second one, a background draw
    (pixels repeat across sets), then extra -1 padding at random slots, and every anchor of the
    images `empty` (those take no part)."""
    if K == 0:
        none = torch.zeros(B, 0, dtype=torch.int64, device=device)
        return none, none.clone(), none.clone()
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(B, H, W, generator=g) < fg).long()
    s1 = pk.sample_pixels(labels, 2, K, generator=g)
    s2 = pk.sample_pixels(labels, 2, K, generator=g)
    a, p, n = s1[:, 1], s2[:, 1], s1[:, 0]
    drop = torch.rand(B, K, generator=g) < pad
    a = torch.where(drop, -1, a)
    a[list(empty)] = -1
    return a.to(device), p.to(device), n.to(device)


def _inp(B, D, H, W, K, layout="contiguous", mining="random", squared=False, margin=1.0, seed=0, reduction="none",
         groups=1, **kw):  # fmt: skip
    def make(device, dtype):
        emb = make_emb(B, D, H, W, dtype=dtype, device=device, layout=layout, seed=seed)
        a, p, n = index_sets(B, H, W, K, seed=seed, device=device, **kw)
        return {"emb": emb, "anchor": a, "positive": p, "negative": n, "margin": margin, "squared": squared,
                "mining": mining, "reduction": reduction, "groups": groups}  # fmt: skip

    return make


def _call(inp, backend):
    return pk.triplet_hinge(
        inp["emb"], inp["anchor"], inp["positive"], inp["negative"], margin=inp["margin"], squared=inp["squared"],
        mining=inp["mining"], reduction=inp.get("reduction", "none"), groups=inp.get("groups", 1), return_used=True,
        backend=backend,
    )  # fmt: skip


def _bad(**kw):
    a = torch.tensor([[0, 1, -1]])
    inp = {"emb": torch.randn(1, 3, 4, 5), "anchor": a, "positive": a + 2, "negative": a + 5}
    return {"margin": 1.0, "squared": False, "mining": "random", **inp, **kw}


ROW = Contract(
    op="triplet_hinge",
    fuzz=lambda d: {"emb": Floats(("B", "D", "H", "W")), "anchor": Indices(), "positive": Indices(),
                     "negative": Indices(), "margin": Choice((0.0, 0.5, 3.0), extreme=(1e4,)), "squared": Choice((False, True)),
                     "mining": Choice(("random", "hard")), "reduction": Choice(("none", "mean"))},  # fmt: skip
    make=_inp(2, 5, 7, 9, 13),
    call=_call,
    shaped=lambda B, D, H, W, layout: _inp(B, D, H, W, 9, layout),
    loss=weighted_loss,
    grad_inputs=("emb",),
    tiny=_inp(2, 3, 3, 4, 5, margin=0.7),
    zero_sizes={
        "B0": _inp(0, 3, 4, 5, 4)("cpu", torch.float32),
        "D0": _inp(2, 0, 4, 5, 4)("cpu", torch.float32),
        "K0": _inp(2, 3, 4, 5, 0)("cpu", torch.float32),
        "K0_hard": _inp(2, 3, 4, 5, 0, mining="hard")("cpu", torch.float32),
        "B0_hard_groups": _inp(0, 3, 4, 5, 4, mining="hard", groups=2)("cpu", torch.float32),
        "B0_mean": _inp(0, 3, 4, 5, 4, reduction="mean")("cpu", torch.float32),
        "K0_mean": _inp(2, 3, 4, 5, 0, reduction="mean")("cpu", torch.float32),
    },
    bad_inputs={
        "emb_rank": (_bad(emb=torch.randn(3, 4, 5)), ValueError, "emb must have 4 dims"),
        "anchor_rank": (_bad(anchor=torch.zeros(1, 3, 1, dtype=torch.long)), ValueError, "anchor must have 2 dims"),
        "anchor_int32": (_bad(anchor=torch.zeros(1, 3, dtype=torch.int32)), TypeError, "anchor must have dtype"),
        "positive_shape": (_bad(positive=torch.zeros(1, 4, dtype=torch.long)), ValueError, "positive must have shape"),
        "negative_batch": (_bad(negative=torch.zeros(2, 3, dtype=torch.long)), ValueError, "negative must have B = 1"),
        "anchor_range": (_bad(anchor=torch.tensor([[0, 20, -1]])), ValueError, "anchor values must be pixel indices"),
        "negative_below": (_bad(negative=torch.tensor([[0, -2, 1]])), ValueError, "negative values must be"),
        "margin_negative": (_bad(margin=-0.5), ValueError, "margin must be >= 0.0"),
        "mining": (_bad(mining="semihard"), ValueError, "mining must be one of"),
        "groups_not_dividing": (_bad(groups=2), ValueError, "groups must divide K = 3 (the slots are groups"),
        "groups_zero": (_bad(groups=0), ValueError, "groups must be positive, got 0"),
        "groups_float": (_bad(groups=1.0), TypeError, "groups must be an int"),
        "reduction": (_bad(reduction="sum"), ValueError, "reduction must be one of"),
        "squared_str": (_bad(squared="yes"), TypeError, "squared must be a bool"),
        "anchor_device": (_bad(anchor=torch.zeros(1, 3, dtype=torch.long, device="meta")), ValueError, "same device"),
    },
    cases={
        "hard": _inp(2, 5, 7, 9, 13, mining="hard"),
        # reduction="mean": over the images with slots (images 0 and 2 of "mean_empty_images" have none)
        "mean": _inp(3, 5, 7, 9, 13, reduction="mean"),
        "mean_hard_squared": _inp(4, 3, 5, 7, 11, mining="hard", squared=True, reduction="mean"),
        "mean_empty_images": _inp(4, 4, 5, 6, 9, reduction="mean", empty=(0, 2)),
        "mean_no_slot": _inp(3, 4, 5, 6, 9, reduction="mean", fg=0.0),
        "mean_tiles": _inp(9, 9, 30, 31, 300, pad=0.05, reduction="mean"),
        "hard_squared": _inp(3, 3, 5, 7, 11, mining="hard", squared=True, margin=3.0),
        "squared_channels_last": _inp(2, 17, 5, 7, 10, "channels_last", squared=True),
        "hard_channels_last": _inp(2, 17, 6, 5, 12, "channels_last", mining="hard"),
        "d1": _inp(1, 1, 9, 11, 8),
        # D = 1 and D = 16: sizes Triton specialises (a constant; a multiple of 16), and the
        # mining kernel's one-dim-at-a-time loop (D = 1) and smallest tensor-core tile (D = 16).
        "d1_hard": _inp(2, 1, 7, 9, 20, mining="hard"),
        "d16_hard_squared": _inp(2, 16, 6, 7, 20, mining="hard", squared=True),
        "d64_hard": _inp(2, 64, 8, 9, 20, mining="hard"),
        "d130_slice": _inp(1, 130, 3, 5, 6, "slice"),
        "hw_transposed": _inp(2, 3, 6, 4, 7, "transposed", mining="hard"),
        "one_pixel": _inp(1, 3, 1, 1, 3),
        "batch7": _inp(7, 3, 5, 3, 6, mining="hard"),
        # K above the class sizes: the sets are mostly padding.
        "k_above_classes": _inp(2, 4, 3, 4, 40),
        "no_foreground": _inp(2, 3, 4, 5, 6, fg=0.0),
        "no_padding_large_margin": _inp(2, 4, 6, 7, 9, pad=0.0, margin=10.0),
        # Several CPU tiles of anchors and candidates.
        "hard_tiles": _inp(2, 9, 30, 31, 300, mining="hard", pad=0.05),
        # groups: each slot mines within its own group of K / groups slots; groups of 150 take
        # several CPU and CUDA anchor tiles each, the last one partial.
        "hard_groups": _inp(3, 4, 7, 9, 12, mining="hard", groups=3),
        "hard_groups_mean_squared": _inp(2, 5, 7, 9, 14, mining="hard", groups=2, squared=True, reduction="mean"),
        "random_groups": _inp(2, 5, 7, 9, 14, groups=7),
        "hard_groups_tiles": _inp(2, 9, 30, 31, 300, mining="hard", pad=0.05, groups=2),
        "random_tiles": _inp(2, 9, 30, 31, 300, pad=0.05),
    },
    interpreter_skip=frozenset({"hard_tiles", "random_tiles", "mean_tiles", "hard_groups_tiles"}),
)

TestContract = suite(ROW)


# ---------------------------------------------------------------------------------------------
# Against torch's triplet_margin_loss and a brute-force miner


def _vectors(emb, b):
    return emb[b].reshape(emb.shape[1], -1).T  # (P, D)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_equals_torch_triplet_margin_loss(backend, device, squared):
    """Random mode, per image, = F.triplet_margin_loss(eps=0) over the image's valid slots
    (squared: the same hinge on squared distances, written out)."""
    inp = _inp(3, 6, 9, 8, 17)(device, torch.float64)
    loss = pk.triplet_hinge(inp["emb"], inp["anchor"], inp["positive"], inp["negative"], margin=1.5,
                            squared=squared, backend=backend)  # fmt: skip
    for b in range(3):
        a, p, n = (inp[k][b] for k in ("anchor", "positive", "negative"))
        v = (a >= 0) & (p >= 0) & (n >= 0)
        x = _vectors(inp["emb"], b)
        xa, xp, xn = x[a[v]], x[p[v]], x[n[v]]
        if squared:
            want = torch.relu((xa - xp).square().sum(1) - (xa - xn).square().sum(1) + 1.5).mean()
        else:
            want = F.triplet_margin_loss(xa, xp, xn, margin=1.5, eps=0.0)
        torch.testing.assert_close(loss[b], want, rtol=1e-10, atol=1e-12)


def _brute_force(emb, a, p, n):
    """For each valid slot: the farthest positive and the nearest negative, by explicit loops."""
    B, K = a.shape
    pos, neg = torch.full_like(a, -1), torch.full_like(a, -1)
    for b in range(B):
        x = _vectors(emb, b).double()
        valid = [k for k in range(K) if a[b, k] >= 0 and p[b, k] >= 0 and n[b, k] >= 0]
        for k in valid:
            dp = [float((x[a[b, k]] - x[p[b, j]]).square().sum()) for j in valid]
            dn = [float((x[a[b, k]] - x[n[b, j]]).square().sum()) for j in valid]
            pos[b, k] = p[b, valid[max(range(len(valid)), key=lambda i: (dp[i], -i))]]
            neg[b, k] = n[b, valid[min(range(len(valid)), key=lambda i: (dn[i], i))]]
    return pos, neg


@pytest.mark.parametrize("integer_values", [False, True])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_hard_mining_is_brute_force(backend, device, integer_values):
    """The mined pairs are the brute-force ones; with integer embeddings distances tie often
    and exactly, and every backend picks the lowest slot."""
    torch.manual_seed(3)
    B, D, H, W, K = 2, 3, 6, 7, 25
    emb = torch.randint(-2, 3, (B, D, H, W)).double() if integer_values else torch.randn(B, D, H, W).double()
    a, p, n = index_sets(B, H, W, K, seed=4)
    pos, neg = _brute_force(emb, a, p, n)
    dtype = torch.float32 if backend != "reference" and integer_values else torch.float64
    _, pu, nu = pk.triplet_hinge(emb.to(dtype).to(device), a.to(device), p.to(device), n.to(device), margin=1.0,
                                 mining="hard", return_used=True, backend=backend)  # fmt: skip
    assert torch.equal(pu.cpu(), pos) and torch.equal(nu.cpu(), neg)


@pytest.mark.parametrize("groups", [2, 5])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_grouped_mining_is_each_group_on_its_own(backend, device, groups):
    """groups = G: group g's mined pairs are those of a call on its K / G slots alone (integer
    embeddings: distances tie across groups, and a slot of another group never wins); the loss
    and its gradient are those of the ungrouped op on the mined pairs."""
    B, D, H, W, K = 2, 3, 6, 7, 40
    emb = torch.randint(-2, 3, (B, D, H, W)).double().to(device).requires_grad_()
    a, p, n = (t.to(device) for t in index_sets(B, H, W, K, seed=5))
    loss, pu, nu = pk.triplet_hinge(emb, a, p, n, margin=1.0, mining="hard", groups=groups, return_used=True,
                                    backend=backend)  # fmt: skip
    kg = K // groups
    for g in range(groups):
        s = slice(g * kg, (g + 1) * kg)
        _, gpu, gnu = pk.triplet_hinge(emb, a[:, s], p[:, s], n[:, s], margin=1.0, mining="hard", return_used=True,
                                       backend=backend)  # fmt: skip
        assert torch.equal(pu[:, s], gpu) and torch.equal(nu[:, s], gnu), g
    want = pk.triplet_hinge(emb, a, pu, nu, margin=1.0, backend="reference")
    assert_close(loss, want)
    (got,) = torch.autograd.grad(loss.sum(), emb)
    (ref,) = torch.autograd.grad(want.sum(), emb)
    assert_close(got, ref)


@pytest.mark.parametrize("backend,device", backend_params(("triton",)))
def test_triton_groups_past_one_grid_axis(monkeypatch, backend, device):
    """Triton mines a group per program of grid axis 2, whose 65535 programs take several
    launches beyond: shown with the limit lowered to 2 for 5 groups (3 launches)."""
    tt = pytest.importorskip("pixelkernels.triton.triplet_hinge")
    monkeypatch.setattr(tt, "_MAX_GROUPS", 2)
    B, D, H, W, K = 2, 3, 6, 7, 20
    emb = torch.randint(-2, 3, (B, D, H, W)).double()
    a, p, n = index_sets(B, H, W, K, seed=7)
    got = pk.triplet_hinge(emb.to(device), a.to(device), p.to(device), n.to(device), margin=1.0, mining="hard",
                           groups=5, return_used=True, backend="triton")  # fmt: skip
    want = pk.triplet_hinge(emb, a, p, n, margin=1.0, mining="hard", groups=5, return_used=True, backend="reference")
    assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[2].cpu(), want[2])


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_hard_gradient_reaches_only_mined_pixels(backend, device):
    inp = _inp(1, 4, 6, 6, 12, mining="hard", pad=0.0, margin=5.0)(device, torch.float64)
    emb = inp["emb"].detach().requires_grad_(True)
    loss, pu, nu = pk.triplet_hinge(emb, inp["anchor"], inp["positive"], inp["negative"], margin=5.0,
                                    mining="hard", return_used=True, backend=backend)  # fmt: skip
    (g,) = torch.autograd.grad(loss.sum(), emb)
    touched = torch.zeros(36, dtype=torch.bool)
    for t in (inp["anchor"], pu, nu):
        touched[t[t >= 0].cpu()] = True
    moved = g[0].reshape(4, 36).abs().sum(0).cpu() > 0
    assert moved.any() and not (moved & ~touched).any()


def test_hard_mining_memory_is_linear_in_k():
    """K = 3000, D = 8 on the CPU: a K x K float32 matrix would be 36 MB; the peak resident
    memory of the mining grows by far less (its scratch is O(K D) = 96 KB)."""
    if "cpu" not in pk.available_backends():
        pytest.skip("no cpu backend")
    code = textwrap.dedent(
        """
        import resource, torch, pixelkernels as pk
        torch.manual_seed(0)
        B, D, H, W, K = 1, 8, 120, 120, 3000
        emb = torch.randn(B, D, H, W)
        idx = torch.randperm(H * W)[: 3 * K].view(3, 1, K)
        pk.triplet_hinge(emb, idx[0], idx[1], idx[2], margin=1.0, mining="random", backend="cpu")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pk.use_checks(False):
            pk.triplet_hinge(emb, idx[0], idx[1], idx[2], margin=1.0, mining="hard", backend="cpu")
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grew = int(out.stdout.split()[-1])
    assert grew < 8 * 2**20, f"peak memory grew by {grew / 2**20:.1f} MiB (K x K float32: 34 MiB)"


@pytest.mark.parametrize("mining", ["random", "hard"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_nan_reaches_the_gradient(backend, device, mining):
    """A NaN pixel makes its slots' hinges NaN; as torch.relu's backward, those slots pass their
    gradient, so emb's gradient is NaN where the reference's is (SPEC §2: never dropped) and
    finite elsewhere, on every backend."""
    inp = _inp(2, 3, 5, 6, 9, mining=mining, pad=0.0, margin=2.0)(device, torch.float64)
    emb = inp["emb"].detach().clone()
    emb[0, :, 0, 1] = float("nan")
    a, p, n = (inp[k] for k in ("anchor", "positive", "negative"))
    p = p.clone()
    p[0, 0] = 1  # slot 0's positive is the NaN pixel
    got = []
    for be in (backend, "reference"):
        e = (emb if be == backend else emb.cpu()).requires_grad_(True)
        args = (a, p, n) if be == backend else (a.cpu(), p.cpu(), n.cpu())
        loss = pk.triplet_hinge(e, *args, margin=2.0, mining=mining, backend=be)
        got.append((loss.detach().cpu(), torch.autograd.grad(loss.sum(), e)[0].cpu()))
    (l1, g1), (l0, g0) = got
    assert l1[0].isnan() and l1[1].isfinite()
    assert torch.equal(g1.isnan(), g0.isnan()) and g1.isnan().any()
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# Every backend, and the CUDA kernels emulated on the CPU (tests/cuda_emu, reached through the
# cpu backend under EmulateCuda: autograd included).

IMPLS = [*(pytest.param(tuple(p.values), marks=p.marks, id=p.id) for p in BACKENDS),
         pytest.param(("emulated", "cpu"), marks=pytest.mark.emulated, id="emulated")]  # fmt: skip


class Impl:
    """One backend as the tests below call it. `ctx()`: the context of an API call (for
    "emulated", EmulateCuda: the cpu backend's ops run as the emulated CUDA kernels, autograd
    included; float64/float32, which the cpu backend's validation takes). `run`: loss,
    positive_used, negative_used and the gradient of sum(loss * w), every dtype of the backend
    (emulated: the CUDA kernels called directly, half types too)."""

    def __init__(self, backend, device, emu=None):
        self.device, self.emu = device, emu
        self.backend = "cpu" if emu is not None else backend
        self.dtypes = dtypes_for("cuda" if emu is not None else backend)

    def ctx(self):
        return EmulateCuda(self.emu) if self.emu is not None else contextlib.nullcontext()

    def run(self, emb, a, p, n, *, margin, squared=False, mining="random", w=None):
        on = [t.to(self.device) for t in (emb, a, p, n)]
        if self.emu is not None:
            loss, pu, nu = self.emu.triplet_hinge(*on, margin, squared, mining == "hard")
            gl = (torch.ones_like(loss) if w is None else w).to(loss.dtype)
            grad = self.emu.triplet_hinge_backward(gl, on[0], on[1], pu, nu, margin, squared)
            return loss, pu, nu, grad
        e = on[0].detach().requires_grad_(True)
        loss, pu, nu = pk.triplet_hinge(e, *on[1:], margin=margin, squared=squared, mining=mining, return_used=True,
                                        backend=self.backend)  # fmt: skip
        gl = (torch.ones_like(loss) if w is None else w.to(self.device)).to(loss.dtype)
        (grad,) = torch.autograd.grad((loss * gl).sum(), e)
        return loss.detach(), pu, nu, grad


@pytest.fixture(params=IMPLS)
def impl(request):
    backend, device = request.param
    return Impl(backend, device, request.getfixturevalue("emu") if backend == "emulated" else None)


def _taking_part(a, p, n, P):
    return (a >= 0) & (a < P) & (p >= 0) & (p < P) & (n >= 0) & (n < P)


@pytest.mark.parametrize("mining", ["random", "hard"])
def test_padding_and_slots_taking_no_part_reach_nothing(impl, mining):
    """Every pixel read by no slot that takes part (pixel 0, the address padding would use; the
    anchor of a slot whose positive is padding; ...) is NaN or +-inf: the loss, its gradient and
    its second derivative (create_graph=True, which differentiates the reference) equal those
    of the same call with those pixels finite, and are zero there (the reference gathered pixel
    0 for padding and masked after the distances: NaN gradients)."""
    backend, device, ctx = impl.backend, impl.device, impl.ctx
    B, D, H, W, K = 2, 3, 4, 5, 9
    P = H * W
    g = torch.Generator().manual_seed(35)
    a, p, n = (torch.randint(1, P, (B, K), generator=g) for _ in range(3))
    a[:, 0], p[:, 1], n[:, 2], a[:, 3] = -1, -1, -1, -1  # padding in every role
    part = _taking_part(a, p, n, P)
    used = torch.zeros(B, P, dtype=torch.bool)
    for b in range(B):
        for t in (a, p, n):
            used[b, t[b, part[b]]] = True
    assert not used[:, 0].any() and (~used).sum() >= 4
    clean = make_emb(B, D, H, W, dtype=torch.float64, device="cpu", seed=3)
    poison = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=torch.float64)
    bad = clean.clone().reshape(B, D, P)
    for b in range(B):
        idle = (~used[b]).nonzero().flatten()
        bad[b, :, idle] = poison[torch.arange(len(idle)) % 3].expand(D, -1)
    bad = bad.reshape(B, D, H, W)
    w = torch.linspace(-1.0, 2.0, B, dtype=torch.float64, device=device)
    results = []
    for x in (clean, bad):
        e = x.to(device).requires_grad_(True)
        with ctx():
            loss = pk.triplet_hinge(e, a.to(device), p.to(device), n.to(device), margin=2.0, mining=mining,
                                    backend=backend)  # fmt: skip
            (g1,) = torch.autograd.grad((loss * w).sum(), e, create_graph=True)
            (g2,) = torch.autograd.grad((g1 * g1).sum(), e)
            e2 = x.to(device).requires_grad_(True)
            loss2 = pk.triplet_hinge(e2, a.to(device), p.to(device), n.to(device), margin=2.0, mining=mining,
                                     backend=backend)  # fmt: skip
            (g1_first,) = torch.autograd.grad((loss2 * w).sum(), e2)  # the backend's own backward
        results.append([t.detach().cpu() for t in (loss, g1, g2, g1_first)])
    clean_results, bad_results = results
    for name, got, want in zip(("loss", "grad", "second derivative", "grad (first order)"), bad_results, clean_results):
        assert got.isfinite().all(), name
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
        if got.dim() == 4:
            assert (got.reshape(B, D, P)[~used[:, None, :].expand(-1, D, -1)] == 0).all(), name


@pytest.mark.parametrize("hw", [(0, 4), (3, 0)])
@pytest.mark.parametrize("mining", ["random", "hard"])
def test_empty_image_gives_zero_attached_to_the_graph(impl, mining, hw):
    """H*W = 0: no slot takes part, the loss is 0 with zero gradient, still attached to the graph
    (SPEC §2; the reference returned a constant)."""
    backend, device, ctx = impl.backend, impl.device, impl.ctx
    e = torch.zeros(2, 3, *hw, dtype=torch.float64, device=device, requires_grad=True)
    idx = torch.full((2, 4), -1, dtype=torch.int64, device=device)
    with ctx():
        loss = pk.triplet_hinge(e, idx, idx, idx, margin=1.0, mining=mining, backend=backend)
        assert loss.requires_grad and loss.grad_fn is not None
        (g,) = torch.autograd.grad(loss.sum(), e)
    assert torch.equal(loss.detach().cpu(), torch.zeros(2, dtype=torch.float64))
    assert g.shape == e.shape


def _repeated_sets(B, P, K, g):
    """Index sets over few pixels (each about 3K / P times), a slot's anchor also its own
    positive and another slot's negative, every 9th anchor padding."""
    a, p, n = (torch.randint(0, P, (B, K), generator=g) for _ in range(3))
    p[:, :4] = a[:, :4]
    n[:, 4:8] = a[:, :4]
    a[:, ::9] = -1
    return a, p, n


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("mining", ["random", "hard"])
def test_deterministic_backward_with_repeated_pixels_equals_the_reference(impl, mining, squared):
    """torch.use_deterministic_algorithms(True) takes each backend's deterministic backward
    (Triton: sorted targets, one program per run of equal pixels adding its entries; CUDA: pixel
    buckets): with every pixel repeated within and across the three sets, its gradient equals
    the float64 reference, and a second run has the same bits. (The bitwise test of the contract
    skips the interpreter, and compared no values.)"""
    B, D, H, W, K = 2, 5, 3, 4, 40
    g = torch.Generator().manual_seed(4)
    a, p, n = _repeated_sets(B, H * W, K, g)
    w = torch.linspace(0.5, 2.0, B, dtype=torch.float64)
    for dtype in impl.dtypes:
        emb = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout="channels_last" if squared else "contiguous")
        ref = emb.double().requires_grad_(True)
        want = pk.triplet_hinge(ref, a, p, n, margin=2.0, squared=squared, mining=mining, backend="reference")
        (want_g,) = torch.autograd.grad((want * w).sum(), ref)
        with deterministic():
            runs = [impl.run(emb, a, p, n, margin=2.0, squared=squared, mining=mining, w=w)[3].cpu() for _ in range(2)]
        assert torch.equal(runs[0], runs[1]), dtype
        assert_close(runs[0], want_g, dtype, msg=f"grad, {dtype}")


def _tie_sets(B, P, K, g):
    """Index sets over few pixels with many slots taking part (about 0.9 K)."""
    a, p, n = (torch.randint(0, P, (B, K), generator=g) for _ in range(3))
    drop = torch.rand(B, K, generator=g) < 0.1
    return torch.where(drop, -1, a), p, n


@pytest.mark.parametrize("D", [1, 2, 3])
def test_hard_mining_ties_spread_over_many_slots(impl, D):
    """Integer-valued embeddings in {-1, 0, 1}: each anchor's farthest and nearest distances are
    tied across many of its ~90 valid slots, far past the CPU miner's panel (8 or 16 lanes), a Triton tile
    (32 slots) and a CUDA tile (64): the lowest slot must win everywhere, as the brute force."""
    B, H, W, K = 2, 9, 11, 100
    g = torch.Generator().manual_seed(10 + D)
    emb = torch.randint(-1, 2, (B, D, H, W), generator=g).double()
    a, p, n = _tie_sets(B, H * W, K, g)
    pos, neg = _brute_force(emb, a, p, n)
    for dtype in impl.dtypes:
        _, pu, nu, _ = impl.run(emb.to(dtype), a, p, n, margin=1.0, mining="hard")
        assert torch.equal(pu.cpu(), pos), dtype
        assert torch.equal(nu.cpu(), neg), dtype


@pytest.mark.parametrize("dtype,big", [(torch.float16, float("inf")), (torch.float16, float("-inf")),
                                       (torch.bfloat16, float("inf")), (torch.bfloat16, 2.0**70)])  # fmt: skip
def test_half_mining_with_a_huge_pixel_that_is_only_an_anchor(impl, dtype, big):
    """Half-precision mining with D >= 16 takes the |a|^2 + |c|^2 - 2 a.c expansion (tensor
    cores) unless a squared norm is NaN, inf or above 2^120; that check must cover the block's
    anchors, not only the candidates: an anchor with an inf entry gives inf - inf = NaN there,
    a false winner. Pixels that are only ever anchors (never a positive or a negative) carry
    +-inf or 2^70 (whose square overflows float32); the mined slots equal the reference's."""
    if dtype not in impl.dtypes:
        pytest.skip(f"{impl.backend} takes no {dtype}")
    B, D, H, W, K = 2, 16, 6, 7, 40
    P = H * W
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, D, H, W, generator=g).to(dtype)
    perm = torch.stack([torch.randperm(P, generator=g) for _ in range(B)])
    a = perm[:, :K].clone()
    p, n = perm[:, torch.randint(4, K, (K,), generator=g)], perm[:, torch.randint(4, K, (K,), generator=g)]
    for s in range(4):  # the anchors of slots 0-3 of image 0 are no candidate of any slot
        x[0, (5 * s) % D].view(-1)[a[0, s]] = big
    want = pk.triplet_hinge(x, a, p, n, margin=0.5, squared=True, mining="hard", return_used=True, backend="reference")
    got = impl.run(x, a, p, n, margin=0.5, squared=True, mining="hard")
    assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[2].cpu(), want[2])
    torch.testing.assert_close(got[0].cpu(), want[0], equal_nan=True)

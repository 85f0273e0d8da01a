"""triplet_hinge's CUDA kernels (csrc/cuda/triplet_hinge.cu) run on the CPU by tests/cuda_emu
(memcheck, racecheck, initcheck on every access) against the reference.

Mined pairs (positive_used, negative_used) must equal the reference's computed in the same
dtype; the loss and the gradient are compared with the float64 reference evaluated on the same
values with those pairs: float64 rtol 1e-10, float32 rtol 1e-5 / atol 1e-6, half types 1e-2 in
relative norm. The backward runs both ways (float atomics, and the deterministic bucket scheme
under torch.use_deterministic_algorithms, which must give the same bits twice). The emulation
build lowers the chunk sizes and launch limits (csrc/cuda/common.cuh, triplet_hinge.cu), so these
small shapes take the multi-chunk, multi-tile, multi-bucket and grid-stride paths.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import make_emb

import pixelkernels as pk
from pixelkernels.reference.triplet_hinge import triplet_hinge as reference

HALF = (torch.float16, torch.bfloat16)
MARGIN = 0.5


@contextlib.contextmanager
def deterministic(on: bool):
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def check(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str):
    assert got.shape == want.shape, what
    got, want = got.double(), want.double()
    if dtype in HALF:
        err = (got - want).norm() / want.norm().clamp(min=1e-30)
        assert err <= 1e-2, (what, err.item())
    else:
        tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{what}: {m}")


def sampled(B, H, W, K, seed, pad=0.2):
    """anchor/positive from class 0, negative from class 1 (pixelkernels.sample_pixels), plus -1
    padding at random positions."""
    if K == 0:  # sample_pixels takes k >= 1
        return [torch.zeros(B, 0, dtype=torch.int64) for _ in range(3)]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (B, H, W), generator=g)
    s1 = pk.sample_pixels(labels, 2, K, generator=g)
    s2 = pk.sample_pixels(labels, 2, K, generator=g)
    out = [s1[:, 0].contiguous(), s2[:, 0].contiguous(), s1[:, 1].contiguous()]
    for t in out:
        t[torch.rand(t.shape, generator=g) < pad] = -1
    return out


def garbage(B, H, W, K, seed):
    """Uniform indices with repeats and out-of-range values on both sides (no part)."""
    g = torch.Generator().manual_seed(seed)
    P = H * W
    out = [torch.randint(-3, P + 3, (B, K), generator=g) for _ in range(3)]
    out[0][:, ::5] = 1 << 40  # far out of range
    if K > 2:
        out[1][:, 1] = out[0][:, 1]  # the anchor as its own positive
    return out


def run(emu, x, idx, squared, hard, bitwise_twice=False, groups=1):
    a, p, n = idx
    B = x.shape[0]
    loss, pu, nu = emu.triplet_hinge(x, a, p, n, MARGIN, squared, hard, False, groups)
    _, rpu, rnu = reference(x, a, p, n, MARGIN, squared, hard, False, groups)
    assert torch.equal(pu, rpu), (pu, rpu)
    assert torch.equal(nu, rnu), (nu, rnu)
    # The float64 truth for these pairs.
    xd = x.detach().double().requires_grad_()
    want, _, _ = reference(xd, a, pu, nu, MARGIN, squared, False)
    assert loss.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    check(loss, want, x.dtype, "loss")
    gl = torch.linspace(-1.0, 2.0, B, dtype=torch.float64)
    (want_grad,) = torch.autograd.grad((want * gl).sum(), xd)
    for det in (False, True):
        with deterministic(det):
            got = emu.triplet_hinge_backward(gl.to(loss.dtype), x, a, pu, nu, MARGIN, squared)
            assert got.dtype == x.dtype and got.shape == x.shape
            if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
                assert got.stride() == x.stride()
            check(got, want_grad, x.dtype, f"grad (deterministic={det})")
            if det and bitwise_twice:
                again = emu.triplet_hinge_backward(gl.to(loss.dtype), x, a, pu, nu, MARGIN, squared)
                assert torch.equal(again, got)
                l2, pu2, nu2 = emu.triplet_hinge(x, a, p, n, MARGIN, squared, hard, False, groups)
                assert torch.equal(l2, loss) and torch.equal(pu2, pu) and torch.equal(nu2, nu)
    # grad_loss read with its stride: an expanded one (a sum's gradient: stride 0) and every other
    # element of a longer vector, against the same values contiguous
    for strided in (torch.tensor(0.75, dtype=loss.dtype).expand(B), torch.linspace(-1.0, 2.0, 2 * B).to(loss.dtype)[::2]):
        with deterministic(True):
            got = emu.triplet_hinge_backward(strided, x, a, pu, nu, MARGIN, squared)
            assert torch.equal(got, emu.triplet_hinge_backward(strided.contiguous(), x, a, pu, nu, MARGIN, squared))
    # mean=True: the batch mean over the images with slots, from the same kernels (finalize_kernel
    # as one block; slot_grad_kernel forming (g / images) / n_b)
    mean, mpu, mnu = emu.triplet_hinge(x, a, p, n, MARGIN, squared, hard, True, groups)
    assert mean.shape == () and torch.equal(mpu, pu) and torch.equal(mnu, nu)
    want_mean = reference(xd, a, pu, nu, MARGIN, squared, False, True)[0]
    check(mean, want_mean, x.dtype, "mean")
    g = torch.tensor(-1.75, dtype=torch.float64)
    (want_grad,) = torch.autograd.grad(want_mean * g, xd)
    for det in (False, True):
        with deterministic(det):
            got = emu.triplet_hinge_backward(g.to(loss.dtype), x, a, pu, nu, MARGIN, squared, True)
            check(got, want_grad, x.dtype, f"mean's grad (deterministic={det})")
    return loss, pu, nu


# (B, D, H, W, K, layout, indices)
CASES = {
    "b1_d1": (1, 1, 5, 3, 7, "contiguous", "sampled"),
    "b7_d3_grid_stride": (7, 3, 5, 7, 7, "contiguous", "sampled"),
    "d17_k300_tiles": (2, 17, 9, 5, 300, "contiguous", "sampled"),
    "d17_k300_channels_last": (1, 17, 9, 5, 300, "channels_last", "garbage"),
    "d64_slice": (2, 64, 3, 5, 17, "slice", "sampled"),
    "d130": (1, 130, 3, 5, 9, "channels_last", "sampled"),
    "garbage_repeats": (3, 3, 5, 3, 40, "contiguous", "garbage"),
    "k0": (2, 3, 5, 3, 0, "contiguous", "sampled"),
    # images 1 and 8 without slots, 9 images: finalize_kernel's mean block has a warp with two
    "b9_holes": (9, 3, 4, 5, 6, "contiguous", "holes"),
}


def holes(B, H, W, K, seed):
    """sampled(), with the anchors of images 1 and B - 1 all padding: those take no part."""
    out = sampled(B, H, W, K, seed)
    out[0][[1, B - 1]] = -1
    return out


# The large cases run in float64 and float32 only (the emulator is slow), the small ones in all.
ALL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
SLOW = {"d17_k300_tiles", "d17_k300_channels_last", "d130", "d64_slice"}


def _params():
    for name, case in CASES.items():
        for dtype in ALL_DTYPES:
            if name in SLOW and dtype in (torch.float32, torch.bfloat16) and name != "d17_k300_tiles":
                continue
            for hard in (False, True):
                mining = "hard" if hard else "random"
                yield pytest.param(name, dtype, hard, id=f"{name}-{str(dtype)[6:]}-{mining}")


@pytest.mark.parametrize("name,dtype,hard", list(_params()))
def test_against_reference(emu, name, dtype, hard):
    B, D, H, W, K, layout, kind = CASES[name]
    seed = sum(map(ord, name))
    x = make_emb(B, D, H, W, dtype=dtype, device="cpu", layout=layout, seed=seed)
    idx = {"sampled": sampled, "garbage": garbage, "holes": holes}[kind](B, H, W, K, seed)
    for squared in (False, True):
        run(emu, x, idx, squared, hard, bitwise_twice=squared)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_hard_mining_ties(emu, dtype, layout):
    """Integer-valued embeddings: many exactly equal distances; the lowest slot must win, as in
    the reference (exact equality of the used indices), across candidate tiles (K > 64)."""
    B, D, H, W, K = 2, 3, 7, 11, 75
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-1, 2, (B, D, H, W), generator=g).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    idx = garbage(B, H, W, K, 6)
    idx = [torch.where(torch.rand(t.shape, generator=g) < 0.9, t % (H * W), t) for t in idx]
    for squared in (False, True):
        run(emu, x, idx, squared, True, bitwise_twice=True)


@pytest.mark.parametrize("dtype", HALF)
def test_tensor_core_mining_ties(emu, dtype):
    """Float16/bfloat16 with D >= 16 mine on tensor cores (mine_mma_kernel, mma.sync emulated
    from the same fragments): on integer-valued embeddings every product and partial sum is
    exact, so the mined slots equal the reference's, ties to the lowest slot included, across
    candidate tiles (K > 64) and dim stages (D = 37: three stages of 16, the last zero-padded)."""
    B, D, H, W, K = 2, 37, 7, 11, 75
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-1, 2, (B, D, H, W), generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    idx = garbage(B, H, W, K, 8)
    idx = [torch.where(torch.rand(t.shape, generator=g) < 0.9, t % (H * W), t) for t in idx]
    for squared in (False, True):
        run(emu, x, idx, squared, True, bitwise_twice=True)


@pytest.mark.parametrize("dtype,D", [(torch.float64, 3), (torch.float32, 5), (torch.float16, 20), (torch.bfloat16, 3)])
@pytest.mark.parametrize("groups", [2, 3])
def test_grouped_mining(emu, dtype, D, groups):
    """groups: each slot mines among its own group's slots only (is_triplet_loss's two terms in
    one call). K = 150: groups of 75 (a 64-anchor tile and an 11-anchor one, so a block never
    spans two groups and the candidate loop starts mid-tile) and of 50; integer-valued
    embeddings tie across groups, where a slot of another group must not win. Half with D >= 16
    mines on tensor cores."""
    B, H, W, K = 2, 7, 11, 150
    g = torch.Generator().manual_seed(groups)
    x = torch.randint(-1, 2, (B, D, H, W), generator=g).to(dtype)
    idx = garbage(B, H, W, K, 9)
    idx = [torch.where(torch.rand(t.shape, generator=g) < 0.9, t % (H * W), t) for t in idx]
    run(emu, x, idx, True, True, bitwise_twice=True, groups=groups)
    with pytest.raises(RuntimeError, match="groups must be >= 1 and divide K = 150, got 4"):
        emu.triplet_hinge(x, *idx, MARGIN, True, True, False, 4)


@pytest.mark.parametrize("dtype,big", [(torch.float16, float("inf")), (torch.bfloat16, 2.0**70)])
def test_tensor_core_mining_huge_norms(emu, dtype, big):
    """A pixel whose squared norm is inf or above 2^120 (inf in float16; 2^70 in bfloat16,
    whose square overflows float32) sends the blocks of its image to the exact SIMT tile, where
    |a|^2 + |c|^2 - 2 a.c would give inf - inf = NaN (a false winner): the mined slots still
    equal the reference's. The other image stays on tensor cores."""
    B, D, H, W, K = 2, 16, 6, 7, 70
    x = make_emb(B, D, H, W, dtype=dtype, device="cpu", seed=11)
    a, p, n = sampled(B, H, W, K, 12, pad=0.1)
    x[0, 3].view(-1)[p[0, 5].clamp(min=0)] = big
    x[0, 7].view(-1)[n[0, 66].clamp(min=0)] = -big
    loss, pu, nu = emu.triplet_hinge(x, a, p, n, MARGIN, True, True)
    rl, rpu, rnu = reference(x, a, p, n, MARGIN, True, True)
    assert torch.equal(pu, rpu) and torch.equal(nu, rnu)
    torch.testing.assert_close(loss, rl, equal_nan=True)


def test_hard_mining_nan(emu):
    """A NaN distance wins the mining (the first NaN slot), as torch.argmax/argmin."""
    B, D, H, W, K = 1, 4, 5, 5, 70
    x = make_emb(B, D, H, W, dtype=torch.float32, device="cpu", seed=3)
    a, p, n = sampled(B, H, W, K, 4, pad=0.1)
    x[0, 1].view(-1)[p[0, 3].clamp(min=0)] = float("nan")
    x[0, 2].view(-1)[n[0, 40].clamp(min=0)] = float("nan")
    loss, pu, nu = emu.triplet_hinge(x, a, p, n, MARGIN, False, True)
    rl, rpu, rnu = reference(x, a, p, n, MARGIN, False, True)
    assert torch.equal(pu, rpu) and torch.equal(nu, rnu)
    torch.testing.assert_close(loss, rl, equal_nan=True)


def test_all_padding_and_empty_image(emu):
    """No slot takes part: loss 0, used -1, gradient exactly 0 (every element written)."""
    x = make_emb(2, 3, 4, 5, dtype=torch.float32, device="cpu")
    idx = [torch.full((2, 6), -1, dtype=torch.int64) for _ in range(3)]
    idx[0][:, :3] = 2
    for hard in (False, True):
        loss, pu, nu = emu.triplet_hinge(x, *idx, MARGIN, False, hard)
        assert torch.equal(loss, torch.zeros(2)) and (pu == -1).all() and (nu == -1).all()
    for det in (False, True):
        with deterministic(det):
            g = emu.triplet_hinge_backward(torch.ones(2), x, idx[0], pu, nu, MARGIN, False)
        assert torch.equal(g, torch.zeros_like(x))
    # An image with no pixels.
    e = torch.zeros(2, 3, 0, 4)
    loss, pu, nu = emu.triplet_hinge(e, *idx, MARGIN, True, True)
    assert torch.equal(loss, torch.zeros(2)) and (pu == -1).all() and (nu == -1).all()


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("B,K,launches", [(2, 300, 1), (3, 9000, 2)])
def test_loss_kernel_finalizes_in_its_last_block_where_partials_are_few(emu, B, K, launches, mean):
    """The random-mode forward is one launch where the partials are few (the loss kernel's last
    block runs the finalize as one block: csrc/cuda/common.cuh last_to_arrive; emulation
    build: up to 64 partials), two beyond (finalize_kernel, the same finalize code); both against
    the reference."""
    g = torch.Generator().manual_seed(11)
    emb = make_emb(B, 5, 17, 19, dtype=torch.float32, device="cpu")
    idx = [torch.randint(-2, 17 * 19 + 2, (B, K), generator=g) for _ in range(3)]
    before = int(emu.launch_count())
    loss, _, _ = emu.triplet_hinge(emb, *idx, MARGIN, False, False, mean)
    assert int(emu.launch_count()) - before == launches
    want, _, _ = reference(emb.double(), *idx, MARGIN, False, False, mean)
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)


def test_a_checked_step_is_four_launches(emu):
    """triplet_hinge forward and backward on the CUDA path with the checks on (issue 36 part 3:
    <= 5): the three index sets in one check_values launch, the loss kernel (its last block
    finalizes), the backward's two (the zeroing kernel also forms the per-image scales, then the
    slots' atomics); bad values in any set are still refused, each set named."""
    from pixelkernels.bench import host

    g = torch.Generator().manual_seed(5)
    emb = torch.randn(2, 4, 8, 8, generator=g).requires_grad_()
    idx = [torch.randint(0, 64, (2, 10), generator=g) for _ in range(3)]

    def step():
        pk.triplet_hinge(emb, *idx, margin=1.0, reduction="mean", backend="cuda").backward()

    with host.cuda_backend_on_cpu():
        step()
        # own: the step's ones_like (the backward's seed) and the gradient's accumulation aside
        assert host.cuda_launches_per_call(step, emu) - 2 == 4
        for i, name in enumerate(("anchor", "positive", "negative")):
            bad = [t.clone() for t in idx]
            bad[i][1, 3] = 64
            with pytest.raises(ValueError, match=rf"^{name} values must be pixel indices in \[0, 64\) or -1 \(padding\); found 64 at flat index 13"):
                pk.triplet_hinge(emb, *bad, margin=1.0, backend="cuda")


@pytest.mark.parametrize("mining,launches", [("random", 7), ("hard", 9)])
def test_is_triplet_loss_step_launches(emu, mining, launches):
    """is_triplet_loss forward and backward on the CUDA path with per-image seeds and the mask
    checked (issue 36 part 3: <= 9): the sampler's 3 (sort keys, ATen's sort, collect), the
    negatives' copy, the hinge's forward (random: the loss kernel; hard: gather, mine, loss: both
    terms' mining in one call, as two groups of slots) and its backward's 2."""
    from pixelkernels.bench import host

    g = torch.Generator().manual_seed(2)
    emb = torch.randn(2, 8, 9, 10, generator=g).requires_grad_()
    mask = (torch.rand(2, 9, 10, generator=g) < 0.4).long()
    seeds = torch.tensor([5, 6])

    def step():
        pk.is_triplet_loss(emb, mask, num_samples=12, margin=1.0, mining=mining, generator=seeds,
                           backend="cuda").backward()  # fmt: skip

    with host.cuda_backend_on_cpu():
        step()
        # own: the step's ones_like (the backward's seed) and the gradient's accumulation aside
        assert host.cuda_launches_per_call(step, emu) - 2 == launches

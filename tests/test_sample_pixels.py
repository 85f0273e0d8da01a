"""sample_pixels: every backend (and the CUDA path, emulated) returns the same pixels for the same
keys; the draws are uniform without replacement (chi-square tests with fixed seeds, which a
biased sampler fails), two draws are independent, and the edge cases of SPEC §3.2 hold."""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, DEVICE_OF, make_labels
from fuzz import Choice, Ignore, Labels, Seeds, Size
from contract import FuzzRow, fuzz_suite

import pixelkernels as pk
from pixelkernels.reference.sample_pixels import KEY_BITS
from pixelkernels.reference.sample_pixels import pixel_keys as reference_pixel_keys
from pixelkernels.reference.sample_pixels import sample_pixels as reference

# Chi-square critical values at p = 0.001 (df -> value), from the chi-square table.
CHI2_001 = {9: 27.877, 11: 31.264, 35: 66.619}


def _keys(shape, seed=0):
    return torch.randint(0, 1 << KEY_BITS, shape, generator=torch.Generator().manual_seed(seed))


def _op(backend):
    op = pk.ops.sample_pixels.OP
    return lambda *args: pk._op.run(op, backend, *args)


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_every_backend_picks_the_same_pixels(backend, device, label_dtype):
    for B, H, W, C, k, ignore in [(3, 7, 9, 4, 5, -1), (2, 13, 11, 3, 50, 1), (1, 1, 1, 2, 3, 255), (7, 5, 3, 6, 2, 6)]:
        labels = make_labels(B, H, W, C, device="cpu", ignore_index=ignore if ignore < 128 or label_dtype != torch.int16 else -1)
        if label_dtype == torch.uint8:
            labels = labels.clamp_min(0)
        labels = labels.to(label_dtype)
        keys = _keys((B, H, W), seed=B * k)
        keys.view(-1)[:3] = 5  # exact ties: the lower pixel first
        want = reference(labels, keys, C, k, ignore)
        got = _op(backend)(labels.to(device), keys.to(device), C, k, ignore)
        assert torch.equal(got.cpu(), want), (B, H, W, C, k)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_sets_are_distinct_pixels_of_their_class(backend, device):
    B, H, W, C, k = 4, 12, 13, 5, 20
    labels = make_labels(B, H, W, C, device=device, pattern="gaps")  # classes 1, 3 empty
    out = pk.sample_pixels(labels, C, k, generator=torch.Generator(device).manual_seed(2), backend=backend).cpu()
    lab = labels.cpu().reshape(B, -1)
    for b in range(B):
        for c in range(C):
            n_c = int((lab[b] == c).sum())
            row = out[b, c]
            assert (row[: min(k, n_c)] >= 0).all() and (row[min(k, n_c) :] == -1).all()
            got = row[row >= 0]
            assert len(set(got.tolist())) == len(got)  # no duplicates
            assert (lab[b, got] == c).all()
    assert (out[:, 1] == -1).all() and (out[:, 3] == -1).all()  # empty classes


def test_ignored_and_out_of_range_labels_are_never_drawn():
    labels = torch.tensor([[[0, 1, 7, -1], [9, 0, 0, 1]]]).expand(2, 2, 4).contiguous()
    with pk.use_checks(False):
        out = pk.sample_pixels(labels, 2, 8, ignore_index=7)
    for b in range(2):
        assert sorted(out[b, 0][out[b, 0] >= 0].tolist()) == [0, 5, 6]
        assert sorted(out[b, 1][out[b, 1] >= 0].tolist()) == [1, 7]


def test_reproducible_for_a_seeded_generator():
    labels = make_labels(2, 30, 31, 3, device="cpu")
    a = pk.sample_pixels(labels, 3, 40, generator=torch.Generator().manual_seed(7))
    b = pk.sample_pixels(labels, 3, 40, generator=torch.Generator().manual_seed(7))
    c = pk.sample_pixels(labels, 3, 40, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _chi2(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def _inclusion_counts(sampler, draws, n=10, k=3, W=12):
    """How often each of the n pixels of class 1 (spread over a row with class-0 pixels between)
    is in the sample, and how often it comes first: `draws` images in one call (each image
    draws its own keys)."""
    labels = torch.zeros(draws, 2, W, dtype=torch.int64)
    cols = torch.arange(n) * W // n
    labels[:, 1, cols] = 1
    pix = 1 * W + cols
    rows = sampler(labels, torch.Generator().manual_seed(123))[:, 1]  # (draws, k)
    member = (rows[:, :, None] == pix).any(1).sum(0).double()
    first = (rows[:, :1] == pix).sum(0).double()
    assert int(first.sum()) == draws
    return member, first


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_uniform_without_replacement(backend):
    """Every pixel of a class equally likely in the sample and in its first slot (k = 3 of
    n = 10, 6000 draws): chi-square below its p = 0.001 critical value (df = 9)."""
    if backend not in pk.available_backends():
        pytest.skip(f"no {backend} backend")
    member, first = _inclusion_counts(lambda lab, g: pk.sample_pixels(lab, 2, 3, generator=g, backend=backend), 6000)
    assert _chi2(member) < CHI2_001[9], member
    assert _chi2(first) < CHI2_001[9], first


def test_the_chi_square_test_catches_a_biased_sampler():
    """The same test on a sampler whose keys have 2 bits of randomness (ties to the lower
    pixel: early pixels favoured) fails it."""

    def biased(labels, g):
        keys = torch.randint(0, 4, labels.shape, generator=g)
        return reference(labels, keys, 2, 3, -1)

    member, first = _inclusion_counts(biased, 6000)
    assert _chi2(member) > CHI2_001[9] and _chi2(first) > CHI2_001[9]


def test_two_draws_are_independent():
    """The first pixels of two consecutive draws (F1, F2 of the IS-Triplet loss) are jointly
    uniform over the 6 x 6 pairs (7200 images; chi-square, df = 35)."""
    labels = torch.ones(7200, 1, 6, dtype=torch.int64)
    g = torch.Generator().manual_seed(5)
    a = pk.sample_pixels(labels, 2, 2, generator=g)[:, 1, 0]
    b = pk.sample_pixels(labels, 2, 2, generator=g)[:, 1, 0]
    joint = torch.zeros(36, dtype=torch.float64).index_add_(0, a * 6 + b, torch.ones(7200, dtype=torch.float64))
    assert _chi2(joint) < CHI2_001[35], joint.view(6, 6)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_opcheck(backend, device):
    if backend == "reference":
        pytest.skip("the reference is not a registered op")
    op = pk._op.OPS["sample_pixels"]
    func = op.triton if backend == "triton" else op.compiled
    labels = make_labels(2, 5, 6, 3, device=device)
    torch.library.opcheck(func, (labels, _keys((2, 5, 6)).to(device), 3, 4, -1))


def test_compiles_fullgraph():
    labels = make_labels(2, 5, 6, 3, device="cpu")
    fn = torch.compile(lambda lab: pk.sample_pixels(lab, 3, 4), fullgraph=True, backend="eager")
    out = fn(labels)
    assert out.shape == (2, 3, 4) and out.dtype == torch.int64


def test_meta_tensors():
    out = pk.sample_pixels(torch.zeros(2, 5, 6, dtype=torch.uint8, device="meta"), 4, 9, backend="cpu")
    assert out.shape == (2, 4, 9) and out.device.type == "meta"


def test_zero_sizes():
    assert pk.sample_pixels(torch.zeros(0, 4, 5, dtype=torch.long), 2, 3).shape == (0, 2, 3)
    assert (pk.sample_pixels(torch.zeros(2, 0, 5, dtype=torch.long), 2, 3) == -1).all()


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"labels": torch.zeros(2, 3, 4)}, TypeError, "labels must have dtype"),
        ({"labels": torch.zeros(3, 4, dtype=torch.long)}, ValueError, "labels must have 3 dims"),
        ({"num_classes": 0}, ValueError, "num_classes must be positive"),
        ({"num_classes": 1 << 21}, ValueError, "num_classes must be <"),
        ({"k": 0}, ValueError, "k must be positive"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
        (
            {"labels": torch.zeros(2, 3, 4, dtype=torch.long, device="meta"), "generator": torch.Generator()},
            ValueError,
            "generator must be on the labels' device",
        ),
    ],
)
def test_bad_input(kwargs, exc, msg):
    args = {"labels": torch.zeros(2, 3, 4, dtype=torch.long), "num_classes": 2, "k": 3, **kwargs}
    with pytest.raises(exc, match=msg.replace("(", r"\(")):
        pk.sample_pixels(args.pop("labels"), args.pop("num_classes"), args.pop("k"), **args)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture():
    """No host sync: a draw is captured in a CUDA graph and replays to fresh samples."""
    labels = make_labels(2, 40, 41, 3, device="cuda")
    g = torch.Generator("cuda").manual_seed(0)
    pk.sample_pixels(labels, 3, 16, generator=g)  # warm-up
    # The default generator takes part in a capture by itself; a user's CUDA generator must be
    # registered with the graph first (torch's rule: otherwise its offset cannot advance at
    # replay, "Attempt to increase offset for a CUDA generator not in capture mode").
    for gen in (None, g):
        graph = torch.cuda.CUDAGraph()
        if gen is not None:
            graph.register_generator_state(gen)
        with torch.cuda.graph(graph):
            out = pk.sample_pixels(labels, 3, 16, generator=gen)
        graph.replay()
        first = out.clone()
        graph.replay()
        assert not torch.equal(first, out)
    assert DEVICE_OF["cuda"] == "cuda"


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_keys_far_from_uniform_give_the_same_pixels(backend, device):
    """The CPU kernel keeps only the keys below a bound that uniform keys meet with overwhelming
    probability; keys that all lie above it (or collide) take its exact fallback: still the k
    smallest by (key, pixel)."""
    labels = make_labels(2, 40, 50, 3, device="cpu")
    g = torch.Generator().manual_seed(9)
    for keys in (
        (1 << KEY_BITS) - 1 - torch.randint(0, 1000, (2, 40, 50), generator=g),  # all near the top
        torch.randint(0, 4, (2, 40, 50), generator=g) << 40,  # four distinct keys: ties everywhere
        torch.randint(-(1 << 62), 1 << 62, (2, 40, 50), generator=g),  # bits above the key's: masked off
    ):
        want = reference(labels, keys, 3, 30, -1)
        assert torch.equal(_op(backend)(labels.to(device), keys.to(device), 3, 30, -1).cpu(), want)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_per_image_seeds(backend, device):
    """generator as (B,) int64 per-image seeds: an image's draw depends on its seed alone (the
    same in any batch, at any position: what a DDP rank needs), equals the reference's, and
    differs between seeds; the keys are uniform enough that every pixel of a class is drawn
    about equally often."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (5, 19, 11), generator=g).to(device)
    seeds = torch.tensor([3, 1 << 40, 7, 12345678901, 0], dtype=torch.int64, device=device)
    with pk.use_backend(backend):
        whole = pk.sample_pixels(labels, 3, 6, generator=seeds)
        parts = [pk.sample_pixels(labels[i : i + 1], 3, 6, generator=seeds[i : i + 1]) for i in (4, 0, 2, 1, 3)]
    for i, part in zip((4, 0, 2, 1, 3), parts):
        assert torch.equal(part[0], whole[i])
    assert torch.equal(whole.cpu(), pk.sample_pixels(labels.cpu(), 3, 6, generator=seeds.cpu(), backend="reference"))
    same = labels[:1].expand(2, -1, -1).contiguous()
    two = pk.sample_pixels(same, 3, 6, generator=seeds[:2], backend=backend)
    assert not torch.equal(two[0], two[1])
    # uniformity: 400 seeds, one class of 209 pixels, k = 20: each pixel drawn ~38 times
    many = torch.zeros(400, 19, 11, dtype=torch.int64, device=device)
    idx = pk.sample_pixels(many, 1, 20, generator=torch.arange(400, device=device), backend=backend)
    counts = torch.bincount(idx.flatten().cpu(), minlength=209).double()
    assert counts.min() > 15 and counts.max() < 65, (counts.min(), counts.max())


@pytest.mark.parametrize(
    "gen, err, match",
    [
        (torch.zeros(4, dtype=torch.int64), ValueError, r"shape \(5,\)"),
        (torch.zeros(5, dtype=torch.int32), ValueError, "int64"),
        (torch.zeros(5, 1, dtype=torch.int64), ValueError, "int64 tensor of shape"),
    ],
)
def test_per_image_seeds_errors(gen, err, match):
    with pytest.raises(err, match=match):
        pk.sample_pixels(torch.zeros(5, 4, 4, dtype=torch.int64), 2, 3, generator=gen)


# Every backend, and the CUDA path emulated on the CPU (tests/cuda_emu): the op on given keys.
IMPLS = [*(pytest.param(tuple(p.values), marks=p.marks, id=p.id) for p in BACKENDS),
         pytest.param(("emulated", "cpu"), marks=pytest.mark.emulated, id="emulated")]  # fmt: skip


@pytest.fixture(params=IMPLS)
def sampler(request):
    """sampler(labels, keys, C, k, ignore_index[, check, draws]) on CPU tensors -> (B, C, k) (or
    (draws, B, C, k)) on the CPU."""
    backend, device = request.param
    if backend == "emulated":
        emu = request.getfixturevalue("emu")
        return lambda labels, keys, C, k, ignore=-1, *rest: emu.sample_pixels(labels.clone(), keys.clone(), C, k,
                                                                              ignore, *rest)  # fmt: skip
    return lambda labels, keys, C, k, ignore=-1, *rest: _op(backend)(labels.to(device), keys.to(device), C, k, ignore,
                                                                     *rest).cpu()  # fmt: skip


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_awkward_sizes_and_ties(sampler, label_dtype):
    """Every backend and the emulated CUDA path (sort keys, a stable sort, picks) at awkward sizes: k below, at and
    above a class's size, empty classes, labels out of range and ignored, exact key ties, more
    (image, class) rows and output columns than the emulator's grid (the grid-stride loops)."""
    for B, H, W, C, k, ignore, seed in [(3, 9, 10, 3, 7, -1, 0), (2, 13, 11, 4, 50, 1, 1), (1, 1, 1, 2, 3, 255, 2),
                                        (7, 5, 3, 6, 2, 6, 3), (2, 31, 33, 5, 1100, -1, 4), (5, 4, 4, 1, 16, 0, 5)]:  # fmt: skip
        labels = make_labels(B, H, W, C + 1, device="cpu", seed=seed)  # label C: out of range
        if label_dtype == torch.uint8:
            labels = labels.clamp_min(0)
        labels = labels.to(label_dtype)
        ignore = ignore if ignore <= torch.iinfo(label_dtype).max else -1
        keys = _keys((B, H, W), seed=seed) % 64  # many exact ties: the lower pixel first
        want = reference(labels, keys, C, k, ignore)
        assert torch.equal(sampler(labels, keys, C, k, ignore), want), (B, H, W, C, k, label_dtype)


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int64])
def test_draws_hash_the_seeds_keys_where_they_are_read(sampler, label_dtype):
    """draws > 0 (is_triplet_loss' one sampler call for both its draws): keys are per-image
    seeds, and draw s is the draw of pixel_keys' keys of stream s, every draw sorted and picked
    in the same launches; more images x draws than the emulator's grid (the grid-stride loops),
    seeds of both signs and above 2^32, labels out of range and ignored."""
    g = torch.Generator().manual_seed(11)
    for B, H, W, C, k, draws, ignore, seed in [(3, 9, 10, 3, 7, 2, -1, 0), (7, 5, 3, 2, 4, 3, 1, 1),
                                               (1, 1, 1, 2, 3, 1, -1, 2), (2, 31, 33, 4, 300, 2, 255, 3)]:  # fmt: skip
        labels = make_labels(B, H, W, C + 1, device="cpu", seed=seed).clamp_min(0).to(label_dtype)
        seeds = torch.randint(-(1 << 62), 1 << 62, (B,), generator=g)
        want = torch.stack([
            reference(labels, reference_pixel_keys(seeds, H * W, s).reshape(B, H, W), C, k, ignore)
            for s in range(draws)
        ])  # fmt: skip
        assert torch.equal(sampler(labels, seeds, C, k, ignore, None, draws), want), (B, H, W, C, k, draws)
        assert torch.equal(reference(labels, seeds, C, k, ignore, None, draws), want)


def test_fallback_with_some_but_fewer_than_k_keys_below_the_bound(sampler):
    """The CPU kernel keeps the keys below a bound that k uniform keys of a class of n pixels
    meet with overwhelming probability (2^42 (k + 4 sqrt(k) + 16) / n), and collects a class
    again without it when fewer than k fell below. Here each class has a few keys far below
    the bound (1, 5, 29 of them; none in image 1's class 2) and the rest near the top, with
    ties: the answer is still the k smallest by (key, pixel), those few first."""
    B, H, W, C, k = 2, 40, 50, 3, 30
    labels = make_labels(B, H, W, C, device="cpu", seed=4)
    g = torch.Generator().manual_seed(6)
    keys = (1 << KEY_BITS) - 1 - torch.randint(0, 1000, (B, H, W), generator=g)
    flat, lab = keys.view(B, -1), labels.view(B, -1)
    for b, counts in enumerate(((1, 5, 29), (29, 5, 0))):
        for c, m in enumerate(counts):
            pix = (lab[b] == c).nonzero().flatten()
            low = pix[torch.randperm(len(pix), generator=g)[:m]]
            flat[b, low] = torch.randint(0, 1 << 30, (m,), generator=g)
    want = reference(labels, keys, C, k, -1)
    got = sampler(labels, keys, C, k)
    assert torch.equal(got, want)
    assert (want >= 0).all()  # every class has more than k pixels


def test_seeds_differing_only_in_their_high_32_bits_draw_independently(sampler):
    """Per-image seeds whose low 32 bits are all equal (the training command puts the step in
    the high ones): each still draws its own keys, so the first pixel of a 10-pixel class is
    uniform over 6000 such seeds (chi-square, df = 9; a hash that ignored the high bits would
    draw one sample for all), negative seeds (the sign bit set) too."""
    n = 6000
    labels = torch.ones(n, 1, 10, dtype=torch.int64)
    for seeds in (123456789 + (torch.arange(n) << 32), -1 - (torch.arange(n) << 32)):
        keys = pk.ops.pixel_keys.draw_keys(labels, seeds, 0, "cpu" if pk._ext.HAVE_CPU_KERNELS else "reference")
        first = sampler(labels, keys, 2, 3)[:, 1, 0]
        counts = torch.bincount(first, minlength=10).double()
        assert _chi2(counts) < CHI2_001[9], counts


# --- the property-based tests (tests/fuzz.py): labels of every width and pattern, seeds, zero sizes

FUZZ = FuzzRow(
    op="sample_pixels",
    fuzz=lambda d: {"labels": Labels(("B", "H", "W"), bounded=False), "num_classes": Size("R"),
                     "k": Choice((1, 3, 7), extreme=(40,)), "generator": Seeds(), "ignore_index": Ignore()},  # fmt: skip
    call=lambda inp, be: (pk.sample_pixels(inp["labels"], inp["num_classes"], inp["k"], generator=inp["generator"],
                                            ignore_index=inp["ignore_index"], backend=be),),  # fmt: skip
)
TestFuzz = fuzz_suite(FUZZ)

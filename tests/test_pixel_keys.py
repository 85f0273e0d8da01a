"""pixel_keys: the samplers' keys from per-image seeds in one launch (issue 36 part 3: the hash in
the kernel; pixelkernels/ops/pixel_keys.py).

Every variant bit for bit against the reference (the hash in torch ops) on seeds at the ends of
int64 and streams past 32 bits, sizes around the launch grids; the samplers draw the same pixels
through it as through the reference's keys; and a per-image-seed draw is one launch.
"""

from __future__ import annotations

import pytest
import torch
from conftest import BACKENDS, COMPILED_BACKENDS, DIRECT_VARIANTS, TRITON_DEVICE, compile_on_fake_cuda

import pixelkernels as pk
from pixelkernels.bench.host import ops_per_call
from pixelkernels.ops.pixel_keys import draw_keys
from pixelkernels.reference.sample_pixels import KEY_BITS
from pixelkernels.reference.sample_pixels import draw_keys as reference_draw_keys
from pixelkernels.reference.sample_pixels import pixel_keys as reference

HAVE_CPP = pk._ext.HAVE_CPU_KERNELS
SEEDS = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), 12345678901234, 2**32, -(2**32) - 7])
STREAMS = (0, 1, 7, 2**31, 2**32 + 5, -3, 2**63 - 1, -(2**63))
# below one block, a block of 256 and one more, past the emulator's grid (3 blocks of 256: the
# grid-stride loop), past Triton's 1024-lane block and the CPU chunk (32768)
SIZES = (0, 1, 255, 257, 1000, 1025, 40000)

VARIANTS = DIRECT_VARIANTS


def _run(variant, request, seeds, n, stream):
    if variant == "emulated":
        return request.getfixturevalue("emu").pixel_keys(seeds, n, stream)
    if variant == "triton":
        return torch.ops.pixelkernels.pixel_keys_triton(seeds.to(TRITON_DEVICE), n, stream).cpu()
    return torch.ops.pixelkernels.pixel_keys(seeds, n, stream)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bit_for_bit_the_reference(request, variant):
    for n in SIZES:
        if variant != "cpu" and n > 1025:
            continue  # the emulator and the interpreter: every grid path is reached by 1025
        for stream in STREAMS:
            got = _run(variant, request, SEEDS, n, stream)
            want = reference(SEEDS, n, stream)
            assert got.dtype == torch.int64 and got.shape == (len(SEEDS), n)
            assert torch.equal(got, want), (n, stream)


@pytest.mark.parametrize("variant", VARIANTS)
def test_keys_are_distinct_and_in_range(request, variant):
    keys = _run(variant, request, SEEDS[:3], 1000, 0)
    assert int(keys.min()) >= 0 and int(keys.max()) < 2**KEY_BITS
    for row in keys:  # a bijection per image: no two pixels share a key
        assert row.unique().numel() == row.numel()
    assert not torch.equal(keys[0], keys[1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_batch_and_image(request, variant):
    assert _run(variant, request, SEEDS[:0], 10, 0).shape == (0, 10)
    assert _run(variant, request, SEEDS[:2], 0, 0).shape == (2, 0)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
@pytest.mark.parametrize("args,match", [
    ((torch.zeros(2, 2, dtype=torch.int64), 4, 0), "seeds must be a \\(B,\\) int64 tensor"),
    ((torch.zeros(2, dtype=torch.int32), 4, 0), "seeds must be a \\(B,\\) int64 tensor"),
    ((torch.zeros(2, dtype=torch.int64), -1, 0), "num_pixels must be in \\[0, 2\\^31\\)"),
    ((torch.zeros(2, dtype=torch.int64), 2**31, 0), "num_pixels must be in \\[0, 2\\^31\\)"),
])  # fmt: skip
def test_direct_calls_refuse_bad_arguments(args, match):
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pixelkernels.pixel_keys(*args)


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_opcheck():
    torch.library.opcheck(torch.ops.pixelkernels.pixel_keys.default, (SEEDS, 37, 3))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_draw_keys_on_every_backend_are_the_reference_keys(backend, device):
    labels = torch.zeros(len(SEEDS), 5, 7, dtype=torch.long)
    want = reference_draw_keys(labels, SEEDS, 2)
    assert torch.equal(draw_keys(labels.to(device), SEEDS.to(device), 2, backend).cpu(), want)
    g = torch.Generator(device).manual_seed(3)
    got = draw_keys(labels.to(device), g, 0, backend)  # a Generator: torch.randint, as the reference
    assert torch.equal(got, reference_draw_keys(labels.to(device), torch.Generator(device).manual_seed(3)))


@pytest.mark.skipif(not HAVE_CPP, reason="extension not built")
def test_a_seeded_draw_is_one_launch():
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    seeds = torch.arange(4)
    assert ops_per_call(lambda: draw_keys(labels, seeds, 1, "cpu")) == 1
    assert ops_per_call(lambda: reference_draw_keys(labels, seeds, 1)) > 50  # the hash in torch ops


@pytest.mark.parametrize("backend,device", COMPILED_BACKENDS)
def test_samplers_draw_the_reference_pixels_with_seeds(backend, device):
    """sample_pixels and is_triplet_loss through the op's keys pick what the reference picks."""
    dev = device
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 3, (3, 9, 11), generator=g).to(dev)
    seeds = torch.tensor([5, -9, 2**40], device=dev)
    got = pk.sample_pixels(labels, 3, 6, generator=seeds, backend=backend)
    want = pk.sample_pixels(labels.cpu(), 3, 6, generator=seeds.cpu(), backend="reference")
    assert torch.equal(got.cpu(), want)
    emb = torch.randn(3, 4, 9, 11, dtype=torch.float64, generator=g).to(dev)
    mask = (labels > 0).to(torch.long)
    got = pk.is_triplet_loss(emb, mask, num_samples=7, generator=seeds, backend=backend)
    want = pk.is_triplet_loss(emb.cpu(), mask.cpu(), num_samples=7, generator=seeds.cpu(), backend="reference")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.fake_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_seeded_sampler_traces_on_fake_cuda(backend):
    """sample_pixels with per-image seeds under torch.compile(fullgraph=True) on fake CUDA
    tensors: pixel_keys and the sampler traced on the CUDA dispatch path."""
    out = compile_on_fake_cuda(
        lambda lab, seeds: pk.sample_pixels(lab, 3, 4, generator=seeds, backend=backend),
        lambda: (torch.zeros(2, 5, 7, dtype=torch.long, device="cuda"), torch.arange(2, device="cuda")),
    )
    assert out.device.type == "cuda" and out.shape == (2, 3, 4)

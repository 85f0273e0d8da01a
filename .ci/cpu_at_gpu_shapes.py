"""The contract's GPU shapes on the CPU backend (`make cpu-gpu-shapes`, on demand, ~2 min).

tests/contract.py's test_gpu_shapes only runs on a GPU; its inputs (GPU_SHAPES: 65541 images,
one 2400 x 2401 image) are also what the CPU kernels meet in a user's largest calls. This runs
every contract row's shaped inputs on the CPU backend in float32 against the float64
reference, as test_gpu_shapes does, optionally with every float input of 3+ dims shifted by
--offset (a mean far from 0 is where float sums drift). Where the CPU misses SPEC §4, the
float32 reference is run on the same inputs and both are reported as the worst error over the
tolerance: a miss the float32 reference shares is float32's, one it does not is a bug. It found three on 2026-11-28 (dense_similarity_loss's Gram matrix, region_stats'
centroids, masked_mean's center: float sums over millions of pixels).

    python .ci/cpu_at_gpu_shapes.py                      every row, both GPU shapes
    python .ci/cpu_at_gpu_shapes.py --offset 3 --shape 1x4x2048x2048
    python .ci/cpu_at_gpu_shapes.py --row test_region_losses:SAL

Exits 1 when a row misses where the float32 reference does not.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import contract as C  # noqa: E402

from pixelkernels.testing import TOLERANCES  # noqa: E402

RTOL, ATOL = TOLERANCES[torch.float32]  # SPEC §4

ROWS = ["test_center_distance", "test_centroid_hinge", "test_dense_similarity_loss", "test_masked_sum",
        "test_pair_bce", "test_pixel_normalize", "test_region_hinge", "test_region_stats",
        "test_similarity_reduce", "test_triplet_hinge", "test_label_transfer:LT_ROW", "test_prior_mask:PM_ROW",
        "test_region_losses:MENET", "test_region_losses:CAS", "test_region_losses:DISC",
        "test_region_losses:MAP", "test_region_losses:SAL"]  # fmt: skip


def _row(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "ROW")


def _worst(got, want) -> float:
    """The largest |got - want| / (SPEC §4's float32 atol + rtol |want|); equal values (infinities
    of one sign included) and NaN against NaN agree."""
    got = got.double()
    agree = (got == want) | (got.isnan() & want.isnan())
    ratio = torch.where(agree, 0.0, (got - want).abs() / (ATOL + RTOL * want.abs()))
    return float(ratio.nan_to_num(float("inf")).max()) if ratio.numel() else 0.0


def worst_ratios(c, make, backend: str) -> dict:
    """Each float output's and gradient's worst error over the tolerance, against float64."""
    inp = make("cpu", torch.float32)
    ref = C.as_reference(inp)
    out = {f"output {i}": _worst(a, b) for i, (a, b) in enumerate(zip(C._outputs(c.call(inp, backend)),
                                                                       C._outputs(c.call(ref, "reference"))))
           if a.is_floating_point()}  # fmt: skip
    if c.loss is not None:
        want = C.grads(c, ref, "reference")
        scales = [C.loss_scale(w, torch.float32) for w in want]
        got = C.scaled_grads(c, inp, backend, scales)
        out.update({f"grad {k}": _worst(a, b) for k, a, b in zip(c.grad_inputs, got, want)})
    return out


def shifted(make, offset: float):
    def make_shifted(device, dtype):
        inp = make(device, dtype)
        with torch.no_grad():
            for v in inp.values():
                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 3:
                    v.add_(offset)
        return inp

    return make_shifted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--row", action="append", help="module[:ROW name] (repeatable; default: all)")
    ap.add_argument("--shape", action="append", help="BxDxHxW (repeatable; default: GPU_SHAPES)")
    ap.add_argument("--offset", type=float, default=0.0, help="added to every float input of 3+ dims")
    args = ap.parse_args()
    shapes = ([(s, tuple(map(int, s.split("x"))), "contiguous") for s in args.shape] if args.shape
              else [(k, gpu, layout) for k, (gpu, _, layout) in C.GPU_SHAPES.items()])  # fmt: skip
    bugs = 0
    for spec in args.row or ROWS:
        c = _row(spec)
        for name, shape, layout in shapes:
            make = shifted(c.shaped(*shape, layout), args.offset)
            cpu = worst_ratios(c, make, "cpu")
            missed = {k: v for k, v in cpu.items() if v > 1}
            line = f"{spec:<28} {name:<16} worst {max(cpu.values(), default=0.0):8.3g}"
            if missed:
                ref32 = worst_ratios(c, make, "reference")
                own = {k: v for k, v in missed.items() if ref32.get(k, 0.0) <= 1}
                bugs += bool(own)
                line += "  MISS " + ", ".join(f"{k} {v:.3g} (float32 reference {ref32.get(k, 0.0):.3g})" for k, v in missed.items())
                line += "  <- worse than the float32 reference" if own else "  (float32's)"
            print(line, flush=True)
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())

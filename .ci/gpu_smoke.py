"""One small call of every op variant, forward and backward, on the given backends: the GPU
verdict's smoke stage, and the program its compute-sanitizer stage runs (every CUDA kernel
launched at least once, in float32 and in a half type where the kernel has a half path).

    python .ci/gpu_smoke.py --backend cuda --backend triton [--json FILE] [--dtype float32 ...]
    python .ci/gpu_smoke.py --dry --json FILE     the CPU rehearsal: cpu, the Triton interpreter
                                                  and the CUDA kernels under tests/cuda_emu

Each call's outputs (and gradients) must be finite where the reference's are, and the
forward must equal the reference's on the same float64 values to a loose tolerance (1e-3
relative in norm: this is a smoke test, the tests hold SPEC §4). One JSON line per call goes
to --json as it finishes, so a run cut short keeps what it did. Exit status 1 if a call failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", action="append", help="backend(s): cuda, triton, cpu, emulated (default: cuda, triton)")
    p.add_argument("--dtype", action="append", help="float32, float16, bfloat16 (default: float32 and bfloat16)")
    p.add_argument("--op", action="append", help="only these ops")
    p.add_argument("--json", help="append one JSON line per call here")
    p.add_argument("--dry", action="store_true", help="the CPU rehearsal (cpu, Triton interpreter, emulated CUDA)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.dry:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch  # noqa: E402

import pixelkernels as pk  # noqa: E402
from pixelkernels.bench.host import load_emulator  # noqa: E402

F64 = torch.float64


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _emb(B, D, H, W, seed=0):
    return torch.randn(B, D, H, W, generator=_g(seed), dtype=F64)


def _lab(B, H, W, R, seed=1, ignore=True):
    return torch.randint(-1 if ignore else 0, R, (B, H, W), generator=_g(seed))


def _calls(dev):
    """[(op, variant, fn(t, backend) -> outputs, float inputs (float64, CPU), names of the
    differentiable ones)]: `t` holds the float inputs on the call's device in its dtype, the
    other inputs (labels, indices, masks, seeds) are made on `dev`."""
    B, D, H, W = 2, 5, 9, 13
    e, lab, lab2 = _emb(B, D, H, W), _lab(B, H, W, 3).to(dev), _lab(B, H, W, 2).to(dev)
    mask = torch.rand(B, H, W, generator=_g(3), dtype=F64)
    q, r = torch.randn(B, 11, D, generator=_g(4), dtype=F64), torch.randn(B, 7, D, generator=_g(5), dtype=F64)
    ql = torch.randint(-1, 3, (B, 11), generator=_g(6)).to(dev)
    rl = torch.randint(-1, 3, (B, 7), generator=_g(7)).to(dev)
    idx = [torch.randint(-1, H * W, (B, 6), generator=_g(8 + i)).to(dev) for i in range(3)]
    seeds = torch.tensor([3, 2**40 + 3], device=dev)
    bmask = (torch.rand(B, 33, 35, generator=_g(11)) < 0.5).to(dev)
    pts = torch.tensor([[[3.0, 4.0, 0.0], [0.0, -2.0, 1.0], [10.0, 12.0, 2.0], [-1.0, -1.0, -1.0]]]).repeat(B, 1, 1)
    out = []

    def add(op, variant, fn, floats, grads=None):
        out.append((op, variant, fn, floats, list(floats) if grads is None else grads))

    for wv in (True, False):
        add("region_stats", f"with_variance={wv}", lambda t, be, wv=wv: pk.region_stats(t["e"], lab, 3, with_variance=wv, backend=be), {"e": e})
    for up in (False, True):
        add("pixel_normalize", f"upcast={up}", lambda t, be, up=up: (pk.pixel_normalize(t["e"], upcast=up, backend=be),), {"e": e})
    add("masked_sum", "", lambda t, be: pk.masked_sum(t["e"], t["m"], backend=be), {"e": e, "m": mask})
    for sq in (False, True):
        add("center_distance", f"squared={sq}", lambda t, be, sq=sq: (pk.center_distance(t["e"], t["c"], squared=sq, backend=be),),
            {"e": e, "c": torch.randn(B, D, generator=_g(9), dtype=F64)})
    add("region_hinge", "", lambda t, be: (pk.region_hinge(t["e"], lab, t["c"], delta=0.3, backend=be),),
        {"e": e, "c": torch.randn(B, 3, D, generator=_g(10), dtype=F64)})
    add("centroid_hinge", "", lambda t, be: pk.centroid_hinge(t["e"], lab, 3, delta=0.3, backend=be), {"e": e})
    for form in ("centroid", "pairwise"):
        add("menet_metric_loss", f"form={form},normalize", lambda t, be, form=form: (
            pk.menet_metric_loss(t["e"], lab2, form=form, normalize=True, backend=be),), {"e": e})
    add("menet_saliency", "", lambda t, be: (pk.menet_saliency(t["e"], t["m"], backend=be),), {"e": e, "m": mask})
    add("cas_loss", "", lambda t, be: (pk.cas_loss(t["e"], lab, 3, backend=be),), {"e": e})
    add("discriminative_loss", "", lambda t, be: (pk.discriminative_loss(t["e"], lab, 3, backend=be),), {"e": e})
    add("masked_average_pool", "", lambda t, be: (pk.masked_average_pool(t["e"], t["m"], backend=be),), {"e": e, "m": mask})
    add("sample_pixels", "seeds", lambda t, be: (pk.sample_pixels(lab, 3, 5, generator=seeds, backend=be),), {})
    for mining in ("random", "hard"):
        add("triplet_hinge", mining, lambda t, be, mining=mining: pk.triplet_hinge(
            t["e"], *idx, margin=1.0, mining=mining, return_used=True, backend=be), {"e": e})
        add("is_triplet_loss", mining, lambda t, be, mining=mining: (pk.is_triplet_loss(
            t["e"], lab2, num_samples=20, mining=mining, generator=seeds, backend=be),), {"e": e})
    add("stochastic_pool", "", lambda t, be: pk.stochastic_pool(t["e"], lab, 4, 3, generator=seeds, backend=be), {"e": e})
    for metric, act, red in (("dot", None, "sum"), ("dot", "sigmoid", "mean"), ("cosine", None, "max"),
                             ("cosine", "sigmoid", "softmax")):
        variant = f"{metric},{act},{red}"
        add("similarity_reduce", variant, lambda t, be, m=metric, a=act, rd=red: (pk.similarity_reduce(
            t["q"], t["r"], rl, 3, metric=m, activation=a, reduce=rd, temperature=0.5, backend=be),), {"q": q, "r": r})
        add("label_transfer", variant, lambda t, be, m=metric, a=act, rd=red: pk.label_transfer(
            t["e"], t["r"], rl, 3, metric=m, activation=a, reduce=rd, temperature=0.5, backend=be)[1:], {"e": e, "r": r})
    add("similarity_reduce", "ref_weight", lambda t, be: (pk.similarity_reduce(
        t["q"], t["r"], rl, 3, metric="cosine", ref_weight=t["w"], backend=be),), {"q": q, "r": r, "w": mask[:, 0, :7]})
    add("prior_mask", "", lambda t, be: (pk.prior_mask(t["e"], t["s"], t["m"], backend=be),),
        {"e": e, "s": _emb(B, D, 7, 8, seed=12), "m": torch.rand(B, 7, 8, generator=_g(13), dtype=F64)})
    add("pair_bce", "", lambda t, be: (pk.pair_bce(t["q"], ql, t["r"], rl, 0.7, 0.1, backend=be),), {"q": q, "r": r})
    for training in (True, False):
        add("dense_similarity_loss", f"training={training}", lambda t, be, tr=training: (pk.dense_similarity_loss(
            t["q"], ql, t["r"], rl, training=tr, backend=be),), {"q": q, "r": r})
    for mode in ("distance", "disk", "tanh"):
        add("click_maps", mode, lambda t, be, mode=mode: (pk.click_maps(t["p"], (H, W), mode=mode, backend=be),), {"p": pts}, [])
    for sampling in (None, (1.0, 2.5)):
        add("distance_transform", f"sampling={sampling}", lambda t, be, s=sampling: pk.distance_transform(
            bmask, sampling=s, return_indices=True, backend=be), {}, [])
    add("next_clicks", "", lambda t, be: (pk.next_clicks(bmask, bmask.roll(3, 2), clicked=bmask.roll(5, 1), backend=be),), {}, [])
    for strategy in (1, 2, 3):
        add("sample_clicks", f"strategy={strategy}", lambda t, be, s=strategy: (pk.sample_clicks(
            ~bmask.roll(1, 1), num_positive=2, num_negative=3, strategy=s, other=bmask if s == 2 else None,
            generator=seeds, backend=be),), {}, [])
    return out


def _run(fn, floats, grads, backend, device, dtype):
    """Outputs (detached, CPU float64 where float) and the gradients of a fixed weighting."""
    t = {k: v.to(device=device, dtype=dtype).requires_grad_(k in grads) for k, v in floats.items()}
    outs = fn(t, backend)
    outs = tuple(o for o in (outs if isinstance(outs, (tuple, list)) else (outs,)))
    flo = [o for o in outs if o.is_floating_point() and o.requires_grad]
    gs = ()
    if flo and grads:
        y = sum((o.nan_to_num(0.0, 0.0, 0.0) * torch.linspace(-1, 1, o.numel(), device=o.device, dtype=o.dtype).view_as(o)).sum() for o in flo)
        gs = torch.autograd.grad(y, [t[k] for k in grads], allow_unused=True)
    return [o.detach().cpu() for o in outs], [g.detach().cpu() if g is not None else None for g in gs]


def _close(a, b) -> str | None:
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    if not a.is_floating_point():
        return None if torch.equal(a, b) else "integer output differs from the reference's"
    a, b = a.double(), b.double()
    if not torch.equal(torch.isnan(a), torch.isnan(b)):
        return "NaN where the reference has none (or the other way)"
    fin = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), fin):
        return "inf where the reference has none (or the other way)"
    ref = float(b[fin].norm())
    err = float((a[fin] - b[fin]).norm())
    return None if err <= 1e-3 * max(ref, 1e-30) or err < 1e-12 else f"relative error in norm {err / max(ref, 1e-30):.2e}"


@contextlib.contextmanager
def _backend_context(backend):
    """The backend name the public functions take; "emulated": the CPU backend's calls replayed on
    the CUDA kernels (tests/cuda_emu, the CUDA kernels compiled for the CPU)."""
    if backend != "emulated":
        yield backend
        return
    emu = load_emulator()  # puts tests/ on sys.path
    if emu is None:
        raise RuntimeError("emulator unavailable (tests/cuda_emu needs the CUDA toolkit's headers: set CUDA_HOME)")
    from contract import EmulateCuda

    with EmulateCuda(emu):
        yield "cpu"


def main() -> int:
    a = ARGS
    backends = a.backend or (["cpu", "triton", "emulated"] if a.dry else ["cuda", "triton"])
    dtypes = [getattr(torch, d) for d in (a.dtype or ["float32", "bfloat16"])]
    sink = open(a.json, "a") if a.json else None
    failed = total = 0
    on_gpu = torch.cuda.is_available()
    if "emulated" in backends:
        # first: the emulator's sanitizer knows only the memory allocated after it loads (an index
        # tensor made earlier reads as out of bounds); a failure is reported by each emulated call
        load_emulator()
    devs = {b: "cuda" if b == "cuda" or (b == "triton" and on_gpu) else "cpu" for b in backends}
    calls = {dev: _calls(dev) for dev in set(devs.values()) | {"cpu"}}
    for n, (op, variant, fn_cpu, floats, grads) in enumerate(calls["cpu"]):
        if a.op and op not in a.op:
            continue
        want_by_dtype = {}
        for dtype in dtypes:
            ref_floats = {k: v.to(dtype).double() for k, v in floats.items()}  # the dtype's values
            want_by_dtype[dtype] = _run(fn_cpu, ref_floats, grads, "reference", "cpu", F64)
        for backend in backends:
            fn = calls[devs[backend]][n][2]
            for dtype in dtypes:
                if dtype != torch.float32 and backend in ("cpu", "emulated"):
                    continue  # the CPU backend takes float32/float64 (the emulated kernels follow its calls)
                total += 1
                t0 = time.perf_counter()
                why = None
                try:
                    with _backend_context(backend) as be:
                        got = _run(fn, floats, grads, be, devs[backend], dtype)
                    want = want_by_dtype[dtype]
                    for i, (x, y) in enumerate(zip(got[0] + got[1], want[0] + want[1])):
                        if (x is None) != (y is None):
                            why = f"value {i}: a gradient on one side only"
                        elif x is not None:
                            why = why or (f"value {i}: {w}" if (w := _close(x, y)) else None)
                        if dtype != torch.float32 and why and "relative error" in why:
                            why = None  # half inputs: values are the tests' business (SPEC §4)
                except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
                    why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    traceback.print_exc(limit=3)
                dt = time.perf_counter() - t0
                failed += why is not None
                line = {"op": op, "variant": variant, "backend": backend, "dtype": str(dtype).replace("torch.", ""),
                        "ok": why is None, "why": why, "seconds": round(dt, 3)}  # fmt: skip
                print(f"{'ok    ' if why is None else 'FAILED'} {op:22s} {variant:26s} {backend:9s} {line['dtype']:9s} "
                      f"{dt:6.2f}s {why or ''}", flush=True)  # fmt: skip
                if sink:
                    sink.write(json.dumps(line) + "\n")
                    sink.flush()
    print(f"smoke: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

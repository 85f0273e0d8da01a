"""How often float32 arithmetic meets SPEC §4 (rtol 1e-5, atol 1e-6) for similarity_reduce
cosine/sum at scale 40, against the float64 reference on the same float32 values (the note
beside this file). Run: TRITON_INTERPRET=1 python <this file>."""

import torch

import pixelkernels as pk
from pixelkernels.baselines.similarity_reduce import similarity_reduce as baseline
from pixelkernels.testing import TOLERANCES

RTOL, ATOL = TOLERANCES[torch.float32]
KW = {"metric": "cosine", "scale": 40.0, "reduce": "sum"}


def misses(a, b) -> bool:
    a, b = a.double(), b.double()
    return bool(((a - b).abs() > ATOL + RTOL * b.abs()).any())


def with_grads(fn, q, r):
    q, r = q.detach().requires_grad_(True), r.detach().requires_grad_(True)
    out = fn(q, r)
    return (out.detach(), *torch.autograd.grad(out.sum(), (q, r)))


def rounded(t):
    """t's value rounded to float32, its derivative exact."""
    return t + (t.detach().float().double() - t.detach())


def modelled(q32, r32, *, dot32: bool, den32: bool):
    """Float64 arithmetic with chosen steps rounded to float32: the dot from a float32 GEMM
    (dot32), the norms and the cosine (den32)."""

    def fn(q, r):
        qn, rn = q.norm(dim=-1), r.norm(dim=-1)
        if den32:
            qn, rn = rounded(qn), rounded(rn)
        dot = q @ r.transpose(1, 2)
        if dot32:
            dot = dot + ((q32 @ r32.transpose(1, 2)).double() - dot.detach())
        sim = dot / (qn[..., None] * rn[:, None, :] + 1e-7)
        if den32 or not dot32:
            sim = rounded(sim)  # the floor: exact, each cosine rounded once
        return (40 * sim).sum(-1, keepdim=True)

    return with_grads(fn, q32.double(), r32.double())


def main(n: int = 300) -> None:
    rows = {
        "floor: exact, each cosine rounded to float32": lambda q, r, lab: modelled(q, r, dot32=False, den32=False),
        "float32 GEMM dot, float64 after it": lambda q, r, lab: modelled(q, r, dot32=True, den32=False),
        "float32 dot, norms and cosine, float64 after": lambda q, r, lab: modelled(q, r, dot32=True, den32=True),
        "cpu": lambda q, r, lab: with_grads(lambda a, b: pk.similarity_reduce(a, b, lab, 1, backend="cpu", **KW), q, r),
        "triton": lambda q, r, lab: with_grads(lambda a, b: pk.similarity_reduce(a, b, lab, 1, backend="triton", **KW),
                                               q, r),
        "baseline (float32 torch)": lambda q, r, lab: with_grads(lambda a, b: baseline(a, b, lab, 1, **KW), q, r),
    }
    counts = {k: [0, 0] for k in rows}
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        K, D = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(2, 5, (1,), generator=g))
        q, r = torch.randn(1, 3, D, generator=g), torch.randn(1, K, D, generator=g)
        lab = torch.zeros(1, K, dtype=torch.long)
        ref = lambda a, b: pk.similarity_reduce(a, b, lab, 1, backend="reference", **KW)  # noqa: E731
        want = with_grads(ref, q.double(), r.double())
        for name, fn in rows.items():
            got = fn(q, r, lab)
            counts[name][0] += misses(got[0], want[0])
            counts[name][1] += misses(got[1], want[1]) or misses(got[2], want[2])
    print(f"{n} random cases (N = 3, K = 1..3, D = 2..4, float32 values; cosine, sum, scale 40):")
    for name, (o, gr) in counts.items():
        print(f"  {name:46s} outputs missing {o:3d} ({100 * o / n:4.1f} %), gradients missing {gr:3d} ({100 * gr / n:4.1f} %)")


if __name__ == "__main__":
    main()

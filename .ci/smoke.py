"""Smoke test of an installed wheel: the extension loads, the op runs on every CPU backend
and agrees with the reference, and the build facts are there."""

import importlib.metadata
import warnings

import torch

with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)  # a fallback warning fails the smoke test
    import pixelkernels as pk

info = pk.build_info()
print("pixelkernels", importlib.metadata.version("pixelkernels"), info)
assert "cpu" in info["backends"], info
assert pk.__file__.find("site-packages") >= 0, pk.__file__

for R in (1, 2, 4, 9):
    emb = torch.randn(3, 5, 17, 19, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(-1, R, (3, 17, 19))
    got = pk.region_stats(emb, labels, R, backend="cpu")
    want = pk.region_stats(emb, labels, R, backend="reference")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(got[2].sum() + got[1].sum(), emb)
    (gr,) = torch.autograd.grad(want[2].sum() + want[1].sum(), emb)
    torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-12)
print("smoke: 1 passed, 0 failed")

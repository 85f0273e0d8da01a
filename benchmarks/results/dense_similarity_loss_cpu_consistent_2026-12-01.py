import sys, time, torch, statistics
import pixelkernels as pk
torch.set_num_threads(2)
which = sys.argv[1]
def case(B, K, D, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, D, generator=g); y = torch.randn(B, K, D, generator=g)
    xl = torch.randint(0, C, (B, K), generator=g); yl = torch.randint(0, C, (B, K), generator=g)
    return x, xl, y, yl
res = {}
for name, (B, K, D, C) in {"W6a": (8, 500, 128, 5), "W6b": (1, 6420, 128, 5)}.items():
    x, xl, y, yl = case(B, K, D, C)
    def fwd():
        return pk.dense_similarity_loss(x, xl, y, yl, backend="cpu")
    def fb():
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        l = pk.dense_similarity_loss(xs, xl, ys, yl, backend="cpu"); l.backward()
    for what, f in (("fwd", fwd), ("f+b", fb)):
        f()
        ts = []
        for _ in range(5):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        res[f"{name} {what}"] = statistics.median(ts) * 1e3
print(which, " ".join(f"{k}={v:.2f}ms" for k, v in res.items()))

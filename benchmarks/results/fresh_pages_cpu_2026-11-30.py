import torch, time
torch.set_num_threads(2)
shape = (3, 64, 448, 448)
def t(f, n=9):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts.sort(); return f"min {ts[0]*1e3:.1f} med {ts[n//2]*1e3:.1f} max {ts[-1]*1e3:.1f} ms"
keep = torch.empty(shape); keep.zero_()
print("resident zero_  ", t(lambda: keep.zero_()))
print("fresh empty+zero_", t(lambda: torch.empty(shape).zero_()))
print("fresh zeros      ", t(lambda: torch.zeros(shape)))
src = torch.randn(shape)
print("resident copy_  ", t(lambda: keep.copy_(src)))
print("fresh clone      ", t(lambda: src.clone()))

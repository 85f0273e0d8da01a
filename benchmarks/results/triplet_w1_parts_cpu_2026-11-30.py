import torch, time, sys
import pixelkernels as pk
from pixelkernels import _op
from pixelkernels.bench.cases import CASES
from pixelkernels.ops import triplet_hinge as _triplet, sample_pixels as _sample
from pixelkernels.ops.triplet_losses import draws
from pixelkernels import _checks
torch.set_num_threads(2)
case = [c for c in CASES if c.op=="is_triplet_loss" and c.id=="W1"][0]
inp = case.make("cpu")
emb, mask = inp.args
seeds = torch.tensor([3,4,5])
flush = torch.empty(64 << 20, dtype=torch.float32)
def t(f, n=7):
    ts=[]
    for _ in range(n):
        flush.add_(1)
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    ts.sort()
    return f"min {ts[0]*1e3:.1f} med {ts[len(ts)//2]*1e3:.1f} max {ts[-1]*1e3:.1f}"
e = emb.detach().requires_grad_()
def fwd():
    return pk.is_triplet_loss(e, mask, num_samples=5000, margin=3.0, generator=seeds, backend="cpu")
def fb():
    e.grad = None
    l = fwd(); l.backward()
K = 5000
check = _checks.label_values_in_kernel(mask, "mask", 2, -1, "cpu")
def sampler(*args): return _op.run(_sample.OP, "cpu", *args)
s1, s2 = draws(mask, K, seeds, -1, sampler, check)
B = 3
anchor, positive, negative = s1.reshape(B, 2*K), s2.reshape(B, 2*K), torch.cat([s2[:,1], s1[:,0]], 1)
def samp(): draws(mask, K, seeds, -1, sampler, check)
def hf(): return _op.run(_triplet.OP, "cpu", e, anchor, positive, negative, 3.0, False, False, True, 2)[0]
def hfb():
    e.grad=None; hf().backward()
print("fwd", t(fwd)); print("f+b", t(fb)); print("sample", t(samp)); print("hinge fwd", t(hf)); print("hinge f+b", t(hfb))

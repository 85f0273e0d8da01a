"""`python -m pixelkernels bench --models`: a whole training step of each model of
pixelkernels.models (forward, backward, Adam update) at its paper's size, with the reference
backend and with each compiled backend, timed side by side in one run; and the share of the
step spent in pixelkernels' ops.

The step is what `train --no-checks` runs (checks off, as in every timed region) at step 0, on
one synthetic batch, its random choices from the same per-image seeds each call (every backend
draws the same triplets, pooled pixels and clicks: strategy 1's for the interactive model). Speedup =
reference median / backend median, per run; over --repeat runs reported as median (min-max).
Share in ops: one profiled step (torch.profiler) per compiled backend, the time of the
`pixelkernels::` ops (forward and backward; an op inside another counted once: their CPU time on
the CPU, their kernels' device time on the GPU) over the profiled step's wall time. The reference backend runs plain torch, which
the profiler cannot attribute to an op: its share is bounded below by the time the compiled
backend saves, (reference − backend) / reference, reported as `saved`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

import pixelkernels as pk

from .timing import NAN, percentiles, side_by_side, sync


@dataclasses.dataclass(frozen=True)
class ModelCase:
    name: str
    batch: int
    size: tuple[int, int]
    kw: dict
    paper: str  # where the size comes from


# The papers' sizes (input side, and each paper's own K/k/clicks); batches small enough that
# the reference step runs in seconds on a 2-core CPU.
CASES = (
    ModelCase("coseg", 2, (224, 224), {"num_samples": 5000, "margin": 3.0, "seg": "dice"},
              "Li & Liu §4.2: K = 5000, m = 3; Gong et al.'s 224 px inputs"),
    ModelCase("menet", 4, (224, 224), {}, "Zeng et al. (MEnet) §III-B: 224 x 224, 16-d"),
    ModelCase("cas", 4, (224, 224), {"channels": 8}, "Sharma et al. (CAS): 224 px crops"),
    ModelCase("dense_transfer", 1, (480, 854), {"k": 100, "emb_dim": 128},
              "Najafi et al. §2.2: 480 x 854 frames (h = 240, w = 427), k = 100"),
    ModelCase("interactive", 2, (320, 480), {"num_positive": 3, "num_negative": 3},
              "Bhatia (thesis) / RITM: 320 x 480 crops, 3 + 3 clicks"),
)


def compiled_backends(device: torch.device, requested=None) -> list[str]:
    names = requested or [b for b in pk.available_backends() if b != "reference"]
    return [b for b in names if b != "reference" and not (b == "triton" and device.type == "cpu" and requested is None)
            and pk._backend.missing(b, device) is None]  # fmt: skip


def training_step(case: ModelCase, device: torch.device, width: int = 32):
    """backend -> a function running one training step of case's model (checks off)."""
    from ..models import build, data
    from ..models.train import sample_seeds

    torch.manual_seed(0)
    model = build(case.name, width=width, **case.kw).to(device)
    ds = data.synthetic(model.task, case.batch, case.size, seed=0)
    batch = data.to_device(data.collate([ds[i] for i in range(case.batch)]), device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(backend):
        def run():
            with pk.use_backend(backend), pk.use_checks(False):  # timed regions: the hot-loop setting 
                opt.zero_grad(set_to_none=True)
                loss = model.loss(batch, sample_seeds(batch["index"], 0, 0), 0)
                loss.backward()
                opt.step()
            return loss

        return run

    return step


def ops_share(fn, device: torch.device) -> float:
    """Share of one call of fn in `pixelkernels::` ops (profiler; nested ops counted once)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        fn()
        sync(device)
        wall_us = (time.perf_counter() - t0) * 1e6
    ops, total = 0.0, 0.0
    for e in prof.events():
        if not e.name.startswith("pixelkernels::"):
            continue
        p, nested = e.cpu_parent, False
        while p is not None:
            if p.name.startswith("pixelkernels::"):
                nested = True
                break
            p = p.cpu_parent
        if not nested:
            ops += e.device_time_total if device.type == "cuda" else e.cpu_time_total
    return ops / wall_us if wall_us else NAN


def run_models(device: torch.device, names=None, backends=None, *, repeat: int = 1, budget_s: float = 2.0,
               width: int = 32, cases=CASES, log=print) -> list[dict]:  # fmt: skip
    """The rows: per case and backend (the reference first), the step's median and p20/p80 (the
    medians over runs), its speedup over the reference (median, min, max over runs), the share
    of one profiled step in our ops, and the share of the reference's step it saves."""
    rows = []
    for case in cases:
        if names and case.name not in names:
            continue
        step = training_step(case, device, width)
        cands = ["reference"] + compiled_backends(device, backends)
        runs = []
        for _ in range(repeat):
            samples = side_by_side({b: step(b) for b in cands}, device, budget_s=budget_s, min_reps=3)
            runs.append({b: percentiles(t) for b, t in samples.items()})
        for b in cands:
            med = statistics.median(r[b][0] for r in runs)
            speed = [r["reference"][0] / r[b][0] for r in runs]
            row = {"model": case.name, "batch": case.batch, "size": f"{case.size[0]}x{case.size[1]}", "backend": b,
                   "step_ms": med, "step_ms_p20": statistics.median(r[b][1] for r in runs),
                   "step_ms_p80": statistics.median(r[b][2] for r in runs), "runs": repeat,
                   "speedup": statistics.median(speed), "speedup_min": min(speed), "speedup_max": max(speed),
                   "ops_share": NAN if b == "reference" else ops_share(step(b), device),
                   "saved": NAN if b == "reference" else 1 - 1 / statistics.median(speed), "paper": case.paper}  # fmt: skip
            rows.append(row)
            log(line(row))
    return rows


def header() -> str:
    return f"{'model':<16}{'batch x size':<14}{'backend':<11}{'step ms (p20-p80)':<26}{'speedup':<22}{'in ops':<8}{'saved':<8}"


def line(r: dict) -> str:
    sp = f"{r['speedup']:.2f}" + (f" ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})" if r["runs"] > 1 else "")
    pct = lambda v: "-" if v != v else f"{100 * v:.1f}%"  # noqa: E731
    ms = f"{r['step_ms']:.1f} ({r['step_ms_p20']:.1f}-{r['step_ms_p80']:.1f})"
    return f"{r['model']:<16}{str(r['batch']) + ' x ' + r['size']:<14}{r['backend']:<11}{ms:<26}{sp:<22}{pct(r['ops_share']):<8}{pct(r['saved']):<8}"


def markdown(rows: list[dict]) -> str:
    out = ["| model | batch × size | backend | step ms, median (p20–p80) | speedup vs reference | in our ops | saved |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        sp = f"{r['speedup']:.2f}×" + (f" ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})" if r["runs"] > 1 else "")
        pct = lambda v: "–" if v != v else f"{100 * v:.1f}%"  # noqa: E731
        out.append(f"| {r['model']} | {r['batch']} × {r['size']} | {r['backend']} | {r['step_ms']:.1f} "
                   f"({r['step_ms_p20']:.1f}–{r['step_ms_p80']:.1f}) | {sp} | {pct(r['ops_share'])} | {pct(r['saved'])} |")  # fmt: skip
    return "\n".join(out) + "\n"

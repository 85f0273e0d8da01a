"""``python -m pixelkernels train MODEL [options]``: train one of the models on synthetic data
(or a folder of image/mask pairs), in one process or under ``torchrun`` with
DistributedDataParallel.

One process and a DDP run with the same global batch take the same steps: every sample is a
function of its index (``data``), the DistributedSampler hands rank r the r-th of every P
consecutive indices of one seeded permutation (the P per-rank batches of a step are the global
batch), the backbones use GroupNorm (per-image statistics), every random choice of a step
(IS-Triplet sampling, stochastic pooling, click simulation) is drawn per image from a seed of
(seed, step, the sample's index) (``sample_seeds``; the ops take per-image seeds as their
generator), and DDP averages the per-rank gradients of per-rank means, which is the global mean
when every rank holds as many images; ``DenseSimilarityLoss``'s batch-norm takes the global
batch's statistics (``DenseTransferNet.sync_statistics``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import torch

import pixelkernels as pk

from . import MODELS, build, data


def sample_seeds(index: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """(B,) int64 per-image seeds in [0, 2^62) of a step's samples (their dataset indices): the
    same for an image whichever process, batch or position it is in."""
    return ((seed * 1_000_003 + step) % (1 << 31)) * (1 << 31) + index.to(torch.int64) % (1 << 31)


class _Step(torch.nn.Module):
    """The model with its loss as forward: DDP synchronises the gradients of what forward ran."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, generator, step):
        return self.model.loss(batch, generator, step)


def _on_gpu() -> bool:
    """Whether the processes run on GPUs: one is present and PK_DIST_CPU=1 does not ask for gloo
    on the CPU (what the tests do on any machine)."""
    return torch.cuda.is_available() and os.environ.get("PK_DIST_CPU") != "1"


def _dist():
    """(rank, world, local_rank), initialising the process group under torchrun: nccl with this
    process's GPU (torchrun's LOCAL_RANK) made current first, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if _on_gpu():
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), world, local


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()

    def __call__(self, step: int, loss: float):
        if not self.enabled:
            return
        done = step + 1
        bar = "#" * (30 * done // self.total)
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        end = "\n" if done == self.total else ""
        print(f"\r[{bar:<30}] {done}/{self.total} loss {loss:.4f} {rate:.1f} step/s", end=end, file=sys.stderr, flush=True)


def _plot(losses, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--png: matplotlib is not installed, {path} not drawn (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def train(name: str, *, steps: int = 50, batch_size: int = 4, size=(64, 64), backend: str = "auto",
          device: str | None = None, lr: float = 1e-3, seed: int = 0, dtype: torch.dtype = torch.float32,
          folder: str | None = None, model_kw: dict | None = None, csv_path: str | None = None,
          png_path: str | None = None, progress: bool = True, noc_images: int = 0, save: str | None = None,
          checks: bool = True) -> dict:  # fmt: skip
    """Train `name` for `steps` steps of `batch_size` images (the global batch under torchrun)
    -> {"losses": [float] per step (mean over ranks), "model", "noc": None or {"NoC@85",
    "NoC@90", "images"} for the interactive model with noc_images > 0, "step_s": mean seconds a
    step}. Adam with learning rate `lr`; parameters initialised from `seed`. ``checks=False``: the
    ops skip their label checks (each costs a host sync; SPEC §2), the setting for a hot loop."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    rank, world, local = _dist()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the number of processes ({world})")
    if device is None:
        device = f"cuda:{local}" if (_on_gpu() if world > 1 else torch.cuda.is_available()) else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)  # "--device cuda": this process's GPU
    torch.manual_seed(seed)
    model = build(name, **(model_kw or {})).to(dev, dtype)
    step_fn = _Step(model)
    if world > 1:
        step_fn = torch.nn.parallel.DistributedDataParallel(step_fn, device_ids=[dev.index] if dev.type == "cuda" else None)
    ds = data.from_folder(model.task, folder, size) if folder else data.synthetic(model.task, steps * batch_size, size, seed=seed)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size // world, sampler=sampler, drop_last=True,
                                         collate_fn=data.collate)  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(ds)} samples make no batch of {batch_size}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = torch.zeros(steps, dtype=torch.float64, device=dev)
    bar = _Progress(steps, progress and rank == 0)
    every = max(1, steps // 50)
    step, epoch, t0 = 0, 0, time.perf_counter()
    with pk.use_backend(backend), pk.use_checks(checks):
        model.train()
        while step < steps:
            sampler.set_epoch(epoch)
            for batch in loader:
                batch = data.to_device(batch, dev, dtype)
                opt.zero_grad(set_to_none=True)
                loss = step_fn(batch, sample_seeds(batch["index"], seed, step), step)
                loss.backward()
                opt.step()
                hist[step] = loss.detach()
                if bar.enabled and (step % every == 0 or step == steps - 1):
                    bar(step, float(hist[step]))  # a host read for the display only, every `every` steps
                step += 1
                if step == steps:
                    break
            epoch += 1
    step_s = (time.perf_counter() - t0) / steps
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(hist)
        hist /= world
    losses = hist.tolist()
    noc = None
    if name == "interactive" and noc_images > 0 and rank == 0:
        noc = evaluate_noc(model, noc_images, size, seed=seed + 1, device=dev, dtype=dtype, backend=backend)
        print(f"NoC@85 {noc['NoC@85']:.2f}  NoC@90 {noc['NoC@90']:.2f}  over {noc['images']} images", file=sys.stderr)
    if rank == 0:
        if csv_path:
            with open(csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "loss"])
                w.writerows((i + 1, repr(v)) for i, v in enumerate(losses))
        if png_path:
            _plot(losses, png_path, f"{name}: {world} process(es), backend {backend}")
        if save:
            torch.save(model.state_dict(), save)
    return {"losses": losses, "model": model, "noc": noc, "step_s": step_s}


@torch.no_grad()
def evaluate_noc(model, images: int, size, *, seed: int, device, dtype=torch.float32, backend: str = "auto",
                 max_clicks: int = 20, batch_size: int = 8) -> dict:  # fmt: skip
    """Mean NoC@85 / NoC@90 (seed 004 §3, the f-BRS/RITM protocol with ``next_clicks``) of the
    interactive model over `images` held-out synthetic episodes."""
    ds = data.synthetic("episodes", images, size, seed=seed)
    was = model.training
    model.eval()
    sums = {"NoC@85": 0.0, "NoC@90": 0.0}
    with pk.use_backend(backend):
        for lo in range(0, images, batch_size):
            batch = data.to_device(data.collate([ds[i] for i in range(lo, min(images, lo + batch_size))]), device, dtype)
            out = model.noc(batch, max_clicks=max_clicks)
            for k in sums:
                sums[k] += float(out[k].sum())
    model.train(was)
    return {k: v / images for k, v in sums.items()} | {"images": images}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixelkernels train",
                                description="Train a model of pixelkernels.models (synthetic data unless --folder).")  # fmt: skip
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8, help="the global batch (split over torchrun's processes)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    p.add_argument("--backend", default="auto", choices=[b for b in pk.BACKENDS])
    p.add_argument("--device", help="default: cuda (this process's local rank) if present, else cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="unet", help="unet (default) or resnet18 / resnet34 (needs torchvision)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--folder", help="a folder with images/ and masks/ (matching stems) instead of synthetic data")
    p.add_argument("--num-classes", type=int,
                   help="cas: regions, dense_transfer: classes per image (mask ids 0..N-1; default 5, the synthetic data's)")
    p.add_argument("--csv", help="write the loss curve (step, loss) here")
    p.add_argument("--png", help="draw the loss curve here (needs matplotlib)")
    p.add_argument("--noc-images", type=int, default=0, help="interactive: NoC@85/90 over this many held-out episodes")
    p.add_argument("--save", help="write the trained state_dict here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-checks", action="store_true", help="skip the ops' label checks (on a GPU: a few tiny launches each, no host sync)")
    a = p.parse_args(argv)
    kw = {"backbone": a.backbone, "width": a.width, "depth": a.depth}
    if a.num_classes is not None:
        if a.model not in ("cas", "dense_transfer"):
            p.error("--num-classes applies to cas and dense_transfer")
        kw["num_regions" if a.model == "cas" else "num_classes"] = a.num_classes
    out = train(a.model, steps=a.steps, batch_size=a.batch_size, size=tuple(a.size), backend=a.backend, device=a.device,
                dtype=getattr(torch, a.dtype), lr=a.lr, seed=a.seed, folder=a.folder, model_kw=kw, csv_path=a.csv,
                png_path=a.png, progress=not a.no_progress, noc_images=a.noc_images, save=a.save,
                checks=not a.no_checks)  # fmt: skip
    ls = out["losses"]
    k = max(1, len(ls) // 10)
    first, last = sum(ls[:k]) / k, sum(ls[-k:]) / k
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{a.model}: loss {first:.4f} (first {k} steps) -> {last:.4f} (last {k}), {out['step_s'] * 1e3:.1f} ms/step")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0 if math.isfinite(last) else 1

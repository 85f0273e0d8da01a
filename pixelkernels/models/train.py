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

from ..metrics import NoCMetrics
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


PNG_HINT = "--png needs matplotlib: pip install 'pixelkernels[plots]' ({path} will not be drawn)"


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plot(losses, path, title):
    """Draw the loss curve to `path` -> True, or say why not on stderr -> False."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(PNG_HINT.format(path=path), file=sys.stderr)
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
          checks: bool = True, dataset=None) -> dict:  # fmt: skip
    """Train a model of :mod:`pixelkernels.models` with Adam; what ``python -m pixelkernels train`` runs.

    Under ``torchrun`` the same call trains with DistributedDataParallel, and a run on P
    processes takes the same steps as one process with the same global batch (the module's
    description says why).

    Parameters
    ----------
    name : str
        ``"coseg"``, ``"menet"``, ``"cas"``, ``"dense_transfer"`` or ``"interactive"``.
    steps : int
        Optimizer steps (default 50).
    batch_size : int
        Images a step: the global batch under torchrun, a multiple of the number of processes.
    size : tuple of int
        (H, W) of the images (default 64 x 64).
    backend : str
        The pixelkernels backend of the ops (default ``"auto"``).
    device : str, optional
        Default: this process's GPU if there is one, else the CPU.
    lr : float
        Adam's learning rate (default 1e-3).
    seed : int
        Seeds the parameters, the data and every random choice of every step.
    dtype : torch.dtype
        The model's dtype (default float32).
    folder : str, optional
        Train on a folder of images and masks (:func:`pixelkernels.models.data.from_folder`)
        instead of synthetic data.
    model_kw : dict, optional
        Constructor arguments of the model (``width``, ``depth``, ``backbone`` and its own).
    csv_path : str, optional
        Write the loss curve here as CSV (step, loss).
    png_path : str, optional
        Draw the loss curve here (needs matplotlib).
    progress : bool
        Print a progress bar on stderr (default ``True``).
    noc_images : int
        For the interactive model: NoC@85 / NoC@90 over this many held-out synthetic episodes
        after training (:func:`evaluate_noc`; default 0, none).
    save : str, optional
        Write the trained model here: its name, ``model_kw``, ``size`` and ``state_dict``
        (:func:`pixelkernels.models.evaluate.load_checkpoint` reads it back).
    dataset : str or torch.utils.data.Dataset, optional
        Train on a benchmark in its published layout, ``"NAME:PATH"`` of
        :func:`pixelkernels.models.datasets.open_dataset` (its task must be the model's), or on
        any dataset of the model's samples.
    checks : bool
        ``False`` makes the ops skip their label checks (each costs a host sync on a GPU): the
        setting for a hot loop.

    Returns
    -------
    dict
        ``"losses"``: the loss of every step (the mean over processes), a list of floats;
        ``"model"``: the trained model; ``"noc"``: ``None``, or for the interactive model with
        ``noc_images > 0`` a dict with ``"NoC@85"``, ``"NoC@90"`` and ``"images"``;
        ``"step_s"``: the mean seconds a step.

    Examples
    --------
    >>> from pixelkernels.models.train import train
    >>> out = train("cas", steps=2, batch_size=2, size=(16, 16), model_kw={"width": 8, "depth": 2},
    ...             progress=False)
    >>> len(out["losses"]), type(out["model"]).__name__
    (2, 'CASNet')
    """
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
    if dataset is not None and folder:
        raise ValueError("give dataset or folder, not both")
    if isinstance(dataset, str):
        from . import datasets

        dname = datasets.parse_spec(dataset)[0]
        if dname in datasets.DATASETS and datasets.DATASETS[dname].task != model.task:
            raise ValueError(f"{name} trains on {model.task!r} samples; {dname!r} gives {datasets.DATASETS[dname].task!r}")
        dataset = datasets.open_dataset(dataset, size)
    if dataset is not None:
        ds = dataset
    else:
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
            from .evaluate import save_checkpoint

            save_checkpoint(save, name, model, model_kw, size)
    return {"losses": losses, "model": model, "noc": noc, "step_s": step_s}


@torch.no_grad()
def evaluate_noc(model, images: int, size, *, seed: int, device, dtype=torch.float32, backend: str = "auto",
                 max_clicks: int = 20, batch_size: int = 8) -> dict:  # fmt: skip
    """Mean NoC@85 and NoC@90 of the interactive model over held-out synthetic episodes.

    The number-of-clicks protocol of f-BRS and RITM (the interactive segmentation methods that
    Bhatia's *Few-Shot Interactive Segmentation*, thesis, IIT Bombay, 2021, §1.2, builds on), run by
    ``FewShotInteractive.noc``: each click where :func:`pixelkernels.next_clicks` puts it,
    counting the clicks until the IoU reaches 85 % and 90 % (``max_clicks`` when it never does).

    Parameters
    ----------
    model : pixelkernels.models.FewShotInteractive
        The model (put in eval mode for the evaluation, then back).
    images : int
        Held-out episodes (``data.synthetic("episodes", images, size, seed=seed)``).
    size : tuple of int
        (H, W).
    seed : int
        The episodes' seed: use another than the training's.
    device : torch.device or str
        The model's device.
    dtype : torch.dtype
        The episodes' dtype (default float32).
    backend : str
        The pixelkernels backend of the ops (default ``"auto"``).
    max_clicks : int
        Clicks per episode (default 20).
    batch_size : int
        Episodes per batch (default 8).

    Returns
    -------
    dict
        ``{"NoC@85": float, "NoC@90": float, "images": int}``.
    """
    ds = data.synthetic("episodes", images, size, seed=seed)
    was = model.training
    model.eval()
    acc = NoCMetrics(max_clicks=max_clicks, device=device)
    with pk.use_backend(backend):
        for lo in range(0, images, batch_size):
            batch = data.to_device(data.collate([ds[i] for i in range(lo, min(images, lo + batch_size))]), device, dtype)
            acc.update(model.noc(batch, max_clicks=max_clicks)["iou"])  # no host read per batch
    model.train(was)
    out = acc.compute()
    return {k: float(out[k]) for k in ("NoC@85", "NoC@90")} | {"images": images}


def parser() -> argparse.ArgumentParser:
    """The options of `python -m pixelkernels train` (each with its help and its default)."""
    from ..__main__ import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m pixelkernels train", formatter_class=HelpFormatter,
                                description="Train a model of pixelkernels.models on synthetic data (or on "
                                "--folder), in one process or under torchrun (DistributedDataParallel), and "
                                "print its loss at the start and at the end.")  # fmt: skip
    p.add_argument("model", choices=sorted(MODELS), help="the model to train")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (Adam)")
    p.add_argument("--batch-size", type=int, default=8, help="the global batch (split over torchrun's processes)")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="image height and width (default: 64 64)")
    p.add_argument("--backend", default="auto", choices=list(pk.BACKENDS),
                   help="the pixelkernels backend of the ops")
    p.add_argument("--device",
                   help="cpu, cuda or cuda:N (default: cuda, this process's local rank, if present, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="the model's dtype")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the parameters, the data and every random choice")
    p.add_argument("--backbone", default="unet", help="unet, or resnet18 / resnet34 (need torchvision)")
    p.add_argument("--width", type=int, default=32,
                   help="channels of the full-resolution features (doubled at each coarser level)")
    p.add_argument("--depth", type=int, default=4, help="the U-Net's stride-2 stages (unet only)")
    p.add_argument("--folder", metavar="DIR",
                   help="a folder with images/ and masks/ (matching stems) instead of synthetic data "
                        "(default: synthetic data)")  # fmt: skip
    p.add_argument("--data", metavar="NAME:PATH",
                   help="a benchmark in its published layout (pixelkernels.models.datasets), e.g. "
                        "duts-tr:/data/DUTS-TR or pascal5i:/data/VOC2012?fold=0 (default: synthetic data)")  # fmt: skip
    p.add_argument("--num-classes", type=int,
                   help="cas: regions, dense_transfer: classes per image (mask ids 0..N-1; default: 5, the "
                        "synthetic data's)")  # fmt: skip
    p.add_argument("--csv", metavar="PATH", help="write the loss curve (step, loss) here (default: not written)")
    p.add_argument("--png", metavar="PATH",
                   help="draw the loss curve here; needs matplotlib: pip install 'pixelkernels[plots]' "
                        "(default: not drawn)")  # fmt: skip
    p.add_argument("--noc-images", type=int, default=0,
                   help="interactive: NoC@85/90 over this many held-out episodes (0: not measured)")
    p.add_argument("--save", metavar="PATH",
                   help="write the trained model here (its name, arguments, size and state_dict: what evaluate "
                        "reads; default: not saved)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one, on stderr)")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the ops' label checks (on a GPU: a few tiny launches each, no host sync; "
                        "default: checked)")  # fmt: skip
    return p


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.png and not _have_matplotlib():  # said at the start, not after the training
        if int(os.environ.get("RANK", "0")) == 0:
            print(PNG_HINT.format(path=a.png), file=sys.stderr)
        a.png = None
    kw = {"backbone": a.backbone, "width": a.width, "depth": a.depth}
    if a.num_classes is not None:
        if a.model not in ("cas", "dense_transfer"):
            p.error("--num-classes applies to cas and dense_transfer")
        kw["num_regions" if a.model == "cas" else "num_classes"] = a.num_classes
    out = train(a.model, steps=a.steps, batch_size=a.batch_size, size=tuple(a.size), backend=a.backend, device=a.device,
                dtype=getattr(torch, a.dtype), lr=a.lr, seed=a.seed, folder=a.folder, model_kw=kw, csv_path=a.csv,
                png_path=a.png, progress=not a.no_progress, noc_images=a.noc_images, save=a.save,
                checks=not a.no_checks, dataset=a.data)  # fmt: skip
    ls = out["losses"]
    k = max(1, len(ls) // 10)
    first, last = sum(ls[:k]) / k, sum(ls[-k:]) / k
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{a.model}: loss {first:.4f} (first {k} steps) -> {last:.4f} (last {k}), {out['step_s'] * 1e3:.1f} ms/step")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0 if math.isfinite(last) else 1

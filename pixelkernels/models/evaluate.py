"""``python -m pixelkernels evaluate MODEL --data NAME:PATH --checkpoint FILE``: a trained model
on a benchmark in its published layout (:mod:`pixelkernels.models.datasets`), by its paper's
protocol, with the metrics of :mod:`pixelkernels.metrics` computed on the device.

====================  ===========================  ==================================================
model                 benchmarks (``--data``)      protocol and metrics
====================  ===========================  ==================================================
``menet``, ``cas``    the saliency sets            each image predicted at ``--size``, the map
                      (duts-te, ecssd, hku-is,     bilinearly resized to the ground truth's own size;
                      pascal-s, dut-omron, sod)    MAE, max / mean / adaptive F (β² = 0.3) as
                                                   pysodmetrics computes them
``coseg``             internet, msrc               each pair's two masks at ``--size`` against the
                                                   resized ground truth; Jaccard and precision (pixel
                                                   accuracy), mean over images and per class
``dense_transfer``    davis2016, davis2017         per sequence, every frame's labels transferred
                                                   from the first frame's annotation, resized to the
                                                   annotation's size; J and F per object, first and
                                                   last frame left out: mean, recall, decay; J&F
``interactive``       grabcut, berkeley, pascal5i  the NoC protocol (clicks by
                                                   :func:`pixelkernels.next_clicks`, up to
                                                   ``--max-clicks``); NoC@85/90, IoU per click;
                                                   PASCAL-5i also the class-wise mIoU per click
====================  ===========================  ==================================================

``cas`` has no saliency head (its channels are class-agnostic segments): its saliency map is one
minus the score of the channel that dominates the image border (the background prior of
salient-object detection). On GrabCut and Berkeley, which have no support image, the few-shot
interactive model gets the query as its own support with an empty mask: its prediction rests on
the clicks alone.

Under ``torchrun`` the data are split over the processes (each image once: no padding of the last
shard) and the metrics' sums are all-reduced, so the numbers equal one process's.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

import pixelkernels as pk

from .. import metrics
from . import MODELS, build, datasets
from .data import to_device
from .train import PNG_HINT, _dist, _have_matplotlib

# which benchmarks (DATASETS' task) each model is evaluated on
TASKS = {"menet": ("scene",), "cas": ("scene",), "coseg": ("coseg",), "dense_transfer": ("frames",),
         "interactive": ("scene", "episodes")}  # fmt: skip
SALIENCY_SETS = ("duts-tr", "duts-te", "ecssd", "hku-is", "pascal-s", "dut-omron", "sod")
CLICK_SETS = ("grabcut", "berkeley")


def save_checkpoint(path, name: str, model: torch.nn.Module, model_kw: dict | None, size) -> None:
    """What ``train --save`` writes: the model's name, its constructor arguments, the training
    size and its state_dict, so that ``evaluate`` rebuilds it without being told how."""
    torch.save({"format": "pixelkernels.checkpoint/1", "model": name, "model_kw": dict(model_kw or {}),
                "size": list(size), "state_dict": model.state_dict()}, path)  # fmt: skip


def load_checkpoint(path, name: str | None = None, model_kw: dict | None = None, device="cpu"):
    """-> (model, name, size) from ``train --save``'s file; a bare state_dict needs ``name`` (and
    ``model_kw`` if it was trained with other than the defaults)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ck, dict) and ck.get("format", "").startswith("pixelkernels.checkpoint/"):
        if name is not None and name != ck["model"]:
            raise ValueError(f"{path} holds a {ck['model']!r} model, not {name!r}")
        name, kw, size, state = ck["model"], {**ck["model_kw"], **(model_kw or {})}, tuple(ck["size"]), ck["state_dict"]
    else:
        if name is None:
            raise ValueError(f"{path} is a bare state_dict: name the model")
        kw, size, state = dict(model_kw or {}), None, ck
    model = build(name, **kw)
    model.load_state_dict(state)
    return model.to(device).eval(), name, size


def _shard(n: int, rank: int, world: int) -> range:
    """Each index once over the processes (no padding: a repeated image would count twice)."""
    return range(rank, n, world)


def _batches(ds, indices, batch_size: int):
    idx = list(indices)
    for lo in range(0, len(idx), batch_size):
        yield datasets.collate([ds[i] for i in idx[lo:lo + batch_size]])


def _cas_saliency(scores: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) softmax scores -> (B, H, W): 1 - the score of the border's dominant channel."""
    border = torch.cat([scores[..., 0, :], scores[..., -1, :], scores[..., :, 0], scores[..., :, -1]], -1)
    bg = border.mean(-1).argmax(1)  # (B,)
    return 1 - scores.gather(1, bg[:, None, None, None].expand(-1, 1, *scores.shape[2:]))[:, 0]


def _saliency(model, name, batch):
    if name == "menet":
        return model.predict(batch)
    return _cas_saliency(model(batch["image"]))


def _progress(enabled: bool, done: int, total: int, what: str) -> None:
    if enabled:
        print(f"\r[evaluate] {what}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate(name: str | None, data: str, *, checkpoint=None, model=None, model_kw: dict | None = None,
             size=None, batch_size: int = 8, device=None, backend: str = "auto", max_clicks: int = 20,
             limit: int | None = None, csv_path=None, png_path=None, progress: bool = True, **data_kw) -> dict:  # fmt: skip
    """Evaluate a model on a benchmark by its paper's protocol (see the module's table).

    Parameters
    ----------
    name : str or None
        The model (``menet``, ``cas``, ``coseg``, ``dense_transfer``, ``interactive``); None:
        the checkpoint's.
    data : str
        ``"NAME:PATH"`` of :func:`pixelkernels.models.datasets.open_dataset` (split and reader
        options as its query, e.g. ``"davis2017:/data/DAVIS?split=val"``).
    checkpoint : str or Path, optional
        ``train --save``'s file (or a bare state_dict with ``name`` and ``model_kw``).
    model : torch.nn.Module, optional
        An already built model instead of ``checkpoint``.
    size : (int, int), optional
        The size the model sees (default: the checkpoint's training size, else 64 × 64).
    batch_size : int
        Images (pairs, frames, episodes) per forward pass.
    device, backend : str
        Where the model runs (default: cuda if present) and the ops' backend.
    max_clicks : int
        The NoC protocol's click budget (20).
    limit : int, optional
        Only the first ``limit`` items (images, pairs, sequences): a smoke run.
    csv_path, png_path : str, optional
        Per-item results as CSV (rank 0); a PNG of a few predictions (needs matplotlib).

    Returns
    -------
    dict
        ``"summary"``: the benchmark's table as Python numbers; ``"rows"``: per-item results;
        ``"model"``, ``"data"``.
    """
    rank, world, _ = _dist()  # train's: the process group under torchrun
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model is None:
        if checkpoint is None:
            raise ValueError("give a checkpoint (train --save) or a model")
        model, name, ck_size = load_checkpoint(checkpoint, name, model_kw, device)
        size = size or ck_size
    model = model.to(device).eval()
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    size = tuple(size or (64, 64))
    dname = datasets.parse_spec(data)[0]
    if dname not in datasets.DATASETS:
        raise ValueError(f"unknown dataset {dname!r}: one of {sorted(datasets.DATASETS)}")
    task = datasets.DATASETS[dname].task
    if task not in TASKS[name]:
        ok = sorted(n for n, e in datasets.DATASETS.items() if e.task in TASKS[name])
        raise ValueError(f"{name} is evaluated on {ok}, not {dname!r} (a {task!r} set)")
    show = progress and rank == 0
    with pk.use_backend(backend):
        if name in ("menet", "cas"):
            out = _eval_saliency(model, name, data, size, batch_size, device, rank, world, limit, show, data_kw)
        elif name == "coseg":
            out = _eval_coseg(model, data, size, batch_size, device, rank, world, limit, show, data_kw)
        elif name == "dense_transfer":
            out = _eval_davis(model, data, size, batch_size, device, rank, world, limit, show, data_kw)
        else:
            out = _eval_noc(model, data, size, batch_size, device, rank, world, limit, show, max_clicks, data_kw)
    out |= {"model": name, "data": data}
    if rank == 0:
        if csv_path and out["rows"]:
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(out["rows"][0]))
                w.writeheader()
                w.writerows(out["rows"])
        if png_path:
            _plot(out.get("examples", []), png_path, f"{name} on {dname}")
    out.pop("examples", None)
    return out


def _reduced(acc, world: int) -> dict:
    if world > 1:
        acc.reduce()
    return acc.compute()


def _gather_rows(rows: list[dict], world: int) -> list[dict]:
    if world == 1:
        return rows
    import torch.distributed as dist

    got = [None] * world
    dist.all_gather_object(got, rows)
    return [r for part in got for r in part]


def _open(data, size, data_kw, **kw):
    return datasets.open_dataset(data, size, **(kw | data_kw))


def _eval_saliency(model, name, data, size, batch_size, device, rank, world, limit, show, data_kw):
    ds = _open(data, size, data_kw, raw=True)
    n = min(len(ds), limit or len(ds))
    acc = metrics.SaliencyMetrics(device=device)
    per, names, examples = [], [], []
    for k, batch in enumerate(_batches(ds, _shard(n, rank, world), batch_size)):
        sal = _saliency(model, name, to_device(batch, device)).float()
        for i, gt in enumerate(batch["gt"]):  # each map at its ground truth's own size
            gt = gt.to(device)
            s = F.interpolate(sal[i][None, None], size=gt.shape, mode="bilinear", align_corners=False)[0]
            acc.update(s, gt[None])
            fm = metrics.f_measure(s, gt[None])
            per.append(torch.stack([metrics.mae(s, gt[None])[0], fm.max_f[0], fm.adaptive_f[0]]))
            if len(examples) < 4:
                examples.append((batch["image"][i], s[0].cpu(), gt.cpu()))
        names += list(batch["name"])
        _progress(show, min(n, (k + 1) * batch_size * world), n, "images")
    vals = torch.stack(per).tolist() if per else []  # one host read for the table
    rows = _gather_rows([{"image": m, "mae": v[0], "max_f": v[1], "adaptive_f": v[2]} for m, v in zip(names, vals)],
                        world)  # fmt: skip
    s = _reduced(acc, world)
    summary = {k: float(s[k]) for k in ("mae", "max_f", "mean_f", "adaptive_f")} | {"images": int(s["count"])}
    return {"summary": summary, "rows": rows, "examples": examples}


def _eval_coseg(model, data, size, batch_size, device, rank, world, limit, show, data_kw):
    ds = _open(data, size, data_kw)
    n = min(len(ds), limit or len(ds))
    per, examples = [], []
    for k, batch in enumerate(_batches(ds, _shard(n, rank, world), batch_size)):
        b = to_device(batch, device)
        pa, pb = model.predict(b)
        for side, pred in (("a", pa), ("b", pb)):
            gt = b["mask_" + side].bool()
            j = metrics.jaccard(pred.bool(), gt)
            acc = (pred.bool() == gt).flatten(1).double().mean(1)
            per.append(torch.stack([b["index"].double(), b["class_id"].double(), j, acc], 1))
            if len(examples) < 4:
                examples.append((batch["image_" + side][0], pred[0].float().cpu(), gt[0].cpu()))
        _progress(show, min(n, (k + 1) * batch_size * world), n, "pairs")
    vals = torch.cat(per).tolist() if per else []
    rows = _gather_rows([{"pair": int(v[0]), "class": ds.classes[int(v[1])], "jaccard": v[2], "precision": v[3]}
                         for v in vals], world)  # fmt: skip
    classes = sorted({r["class"] for r in rows})
    by_class = {c: sum(r["jaccard"] for r in rows if r["class"] == c) / sum(r["class"] == c for r in rows)
                for c in classes}  # fmt: skip
    summary = {"jaccard": sum(r["jaccard"] for r in rows) / max(len(rows), 1),
               "precision": sum(r["precision"] for r in rows) / max(len(rows), 1),
               "images": len(rows)} | {f"jaccard[{c}]": v for c, v in by_class.items()}  # fmt: skip
    return {"summary": summary, "rows": rows, "examples": examples}


def _eval_davis(model, data, size, batch_size, device, rank, world, limit, show, data_kw):
    ds = _open(data, size, {"split": "val"} | data_kw)
    seqs = ds.sequences[: limit or len(ds.sequences)]
    C = model.num_classes
    num_tracks = len(seqs) * (C - 1)  # one track per (sequence, object id 1..C-1)
    acc = metrics.DavisMetrics(num_tracks, device=device)
    rows, examples = [], []
    for k in _shard(len(seqs), rank, world):
        seq = ds.sequence(seqs[k])
        if seq["num_objects"] >= C:
            raise ValueError(f"sequence {seq['name']} has {seq['num_objects']} objects: the model was built for "
                             f"{C - 1} (train with --num-classes {seq['num_objects'] + 1})")  # fmt: skip
        imgs, gt = seq["images"].to(device), seq["gt"].to(device)
        T = imgs.shape[0]
        ref, ref_lab = imgs[:1], seq["first"][None].to(device)
        for lo in range(1, T - 1, batch_size):  # the first (given) and last frames do not count
            q = imgs[lo:min(T - 1, lo + batch_size)]
            g = torch.Generator(device=device).manual_seed(k)
            lab = model.transfer(ref.expand(q.shape[0], -1, -1, -1), ref_lab.expand(q.shape[0], -1, -1), q, generator=g)[0]
            lab = F.interpolate(lab[:, None].double(), size=gt.shape[-2:], mode="nearest")[:, 0].long()
            g_t = gt[lo:lo + q.shape[0]]
            void = g_t < 0  # frames without an annotation: every pixel void
            for o in range(1, seq["num_objects"] + 1):
                track = torch.full((q.shape[0],), k * (C - 1) + o - 1, device=device)
                track = torch.where(void.flatten(1).all(1), -1, track)  # an unannotated frame takes no part
                pos = torch.arange(lo - 1, lo - 1 + q.shape[0], device=device)  # among the T - 2 counted
                acc.update(track, lab == o, g_t == o, void, frame=pos, frames=torch.full_like(pos, T - 2))
            if len(examples) < 4 and lo == 1:
                examples.append((q[0].cpu(), lab[0].float().cpu(), g_t[0].float().cpu()))
        rows.append({"sequence": seq["name"], "objects": seq["num_objects"], "frames": T})
        _progress(show, len(rows), len(range(rank, len(seqs), world)), "sequences")
    s = _reduced(acc, world)
    j, f = s["J_track"].tolist(), s["F_track"].tolist()
    for r, k in zip(rows, _shard(len(seqs), rank, world)):
        o = r["objects"]
        r["J"] = sum(j[k * (C - 1):k * (C - 1) + o]) / max(o, 1)
        r["F"] = sum(f[k * (C - 1):k * (C - 1) + o]) / max(o, 1)
    summary = {key: float(s[key]) for key in ("JF_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall",
                                              "F_decay")}  # fmt: skip
    summary["objects"] = int(s["tracks"])
    return {"summary": summary, "rows": _gather_rows(rows, world), "examples": examples}


def _eval_noc(model, data, size, batch_size, device, rank, world, limit, show, max_clicks, data_kw):
    ds = _open(data, size, ({"split": "val"} if datasets.parse_spec(data)[0] == "pascal5i" else {}) | data_kw)
    n = min(len(ds), limit or len(ds))
    acc = metrics.NoCMetrics(max_clicks=max_clicks, device=device)
    # few-shot episodes: each class's intersections and unions summed over its episodes, per click
    # (the class-wise IoU the few-shot papers report, meaned over the fold's classes)
    C = len(datasets.VOC_CLASSES) + 1  # class ids 1..20
    cls = torch.zeros(3, C, max_clicks, dtype=torch.float64, device=device)  # episodes, intersection, union
    per, examples = [], []
    for k, batch in enumerate(_batches(ds, _shard(n, rank, world), batch_size)):
        b = to_device(batch, device)
        if "support_image" not in b:  # GrabCut, Berkeley: no support, the clicks alone
            b |= {"support_image": b["image"], "support_mask": torch.zeros_like(b["mask"]),
                  "other": torch.zeros_like(b["mask"])}  # fmt: skip
        res = model.noc(b, max_clicks=max_clicks)
        ious = res["iou"]
        acc.update(ious)
        if "class_id" in b:
            c = b["class_id"].long()
            cls[0].index_add_(0, c, torch.ones_like(res["intersection"], dtype=torch.float64))
            cls[1].index_add_(0, c, res["intersection"].double())
            cls[2].index_add_(0, c, res["union"].double())
        if len(examples) < 4:
            examples.append((batch["image"][0], res["pred"][0].float().cpu(), b["mask"][0].float().cpu()))
        out = metrics.noc(ious, max_clicks=max_clicks)
        per.append(torch.cat([b["index"][:, None].double(), out.noc.double(), ious.double()], 1))
        _progress(show, min(n, (k + 1) * batch_size * world), n, "images")
    vals = torch.cat(per).tolist() if per else []
    rows = _gather_rows([{"item": int(v[0]), "NoC@85": int(v[1]), "NoC@90": int(v[2]),
                          "iou_last": v[-1]} for v in vals], world)  # fmt: skip
    s = _reduced(acc, world)
    summary = {k: float(s[k]) for k in ("NoC@85", "NoC@90")} | {
        "over_max@90": int(s["over_max@90"]), "images": int(s["count"]),
        "miou_per_click": [round(v, 4) for v in s["miou"].tolist()]}  # fmt: skip
    if "class_id" in ds[0]:
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(cls)
        seen = cls[0, :, 0] > 0
        class_iou = cls[1] / cls[2].clamp_min(1)
        summary["classes"] = int(seen.sum())
        summary["class_miou_per_click"] = [round(v, 4) for v in class_iou[seen].mean(0).tolist()]
    return {"summary": summary, "rows": rows, "examples": examples}


def _plot(examples, path, title) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not examples:
        return False
    fig, axes = plt.subplots(len(examples), 3, figsize=(7.5, 2.4 * len(examples)), squeeze=False)
    for row, (img, pred, gt) in zip(axes, examples):
        row[0].imshow((img.float().permute(1, 2, 0) + 0.5).clamp(0, 1).numpy())
        row[1].imshow(pred.numpy())
        row[2].imshow(gt.numpy())
        for a, t in zip(row, ("image", "prediction", "ground truth")):
            a.set_title(t, fontsize=8)
            a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m pixelkernels evaluate`` (each with its help and its default)."""
    from ..__main__ import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m pixelkernels evaluate", formatter_class=HelpFormatter,
                                description="Evaluate a trained model (train --save) on a benchmark in its "
                                "published layout by its paper's protocol; prints the table, writes per-item "
                                "results (--csv) and a few predictions (--png).")  # fmt: skip
    p.add_argument("model", choices=sorted(MODELS), help="the model (must match the checkpoint's)")
    p.add_argument("--data", required=True, metavar="NAME:PATH",
                   help=f"the benchmark, e.g. davis2017:/data/DAVIS?split=val; names: {', '.join(sorted(datasets.DATASETS))}")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="what train --save wrote")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="the size the model sees (default: the checkpoint's training size)")
    p.add_argument("--batch-size", type=int, default=8, help="images (pairs, frames, episodes) per forward pass")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    p.add_argument("--backend", default="auto", choices=list(pk.BACKENDS), help="the pixelkernels backend of the ops")
    p.add_argument("--max-clicks", type=int, default=20, help="interactive: the NoC protocol's click budget")
    p.add_argument("--limit", type=int, help="only the first N items (default: the whole split)")
    p.add_argument("--csv", metavar="PATH", help="per-item results (default: not written)")
    p.add_argument("--png", metavar="PATH", help="a few predictions; needs matplotlib (default: not drawn)")
    p.add_argument("--no-progress", action="store_true", help="no progress line (default: one, on stderr)")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.png and not _have_matplotlib():  # said at the start, as train says it
        if int(os.environ.get("RANK", "0")) == 0:
            print(PNG_HINT.format(path=a.png), file=sys.stderr)
        a.png = None
    device = a.device
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    out = evaluate(a.model, a.data, checkpoint=a.checkpoint, size=tuple(a.size) if a.size else None,
                   batch_size=a.batch_size, device=device, backend=a.backend, max_clicks=a.max_clicks,
                   limit=a.limit, csv_path=a.csv, png_path=a.png, progress=not a.no_progress)  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{out['model']} on {out['data']}:")
        for k, v in out["summary"].items():
            print(f"  {k:>14}  {v:.4f}" if isinstance(v, float) else f"  {k:>14}  {v}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0

"""`python -m pixelkernels evaluate` (pixelkernels.models.evaluate) on the fixtures of each
benchmark's published layout (tests/dataset_fixtures.py): every model on its benchmarks, the
checkpoint that `train --save` writes, the protocol's plumbing checked with a perfect predictor,
and the data split over processes without a repeat."""

from __future__ import annotations

import csv
import math

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("scipy")
import dataset_fixtures as fx  # noqa: E402
from pixelkernels import models  # noqa: E402
from pixelkernels.models import evaluate as E  # noqa: E402
from pixelkernels.models.train import train  # noqa: E402

SMALL = {"width": 8, "depth": 2}


def _fixture(tmp_path, name):
    if name in ("ecssd", "duts-te", "duts-tr"):
        root, _ = fx.saliency(tmp_path, name)
    elif name == "davis2017":
        root, _ = fx.davis(tmp_path, 2017)
    elif name == "pascal5i":
        root, sbd, _ = fx.voc(tmp_path)
        return f"pascal5i:{root}?fold=0"
    else:
        root, _ = getattr(fx, name)(tmp_path)
    return f"{name}:{root}"


def _checkpoint(tmp_path, name, **kw):
    torch.manual_seed(0)
    model = models.build(name, **SMALL, **kw)
    path = tmp_path / f"{name}.pt"
    E.save_checkpoint(path, name, model, SMALL | kw, (24, 24))
    return path


CASES = [("menet", "ecssd", {}, ("mae", "max_f", "mean_f", "adaptive_f")),
         ("cas", "duts-te", {}, ("mae", "max_f")),
         ("coseg", "internet", {}, ("jaccard", "precision")),
         ("dense_transfer", "davis2017", {"num_classes": 4, "k": 12}, ("JF_mean", "J_mean", "F_mean")),
         ("interactive", "grabcut", {}, ("NoC@85", "NoC@90")),
         ("interactive", "pascal5i", {}, ("NoC@85", "NoC@90", "classes"))]  # fmt: skip


@pytest.mark.parametrize("name, data, kw, keys", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_model_on_its_benchmark(tmp_path, name, data, kw, keys):
    spec = _fixture(tmp_path, data)
    ck = _checkpoint(tmp_path, name, **kw)
    pytest.importorskip("matplotlib")
    out = E.evaluate(None, spec, checkpoint=ck, device="cpu", batch_size=2, limit=3, max_clicks=3,
                     csv_path=tmp_path / "rows.csv", png_path=tmp_path / "pred.png", progress=False)  # fmt: skip
    assert out["model"] == name and out["rows"] and (tmp_path / "pred.png").stat().st_size > 0
    for k in keys:
        assert math.isfinite(out["summary"][k]), (k, out["summary"])
    with open(tmp_path / "rows.csv") as f:
        assert len(list(csv.DictReader(f))) == len(out["rows"])


def test_a_perfect_saliency_map_scores_perfectly(tmp_path, monkeypatch):
    """The protocol's plumbing (raw ground truth, the per-image resizing, the accumulators): the
    ground truth itself as the prediction, at the images' own size, gives MAE 0 and F 1."""
    spec = _fixture(tmp_path, "ecssd")
    ds = models.datasets.open_dataset(spec, None, raw=True)
    by_index = {int(ds[i]["index"]): ds[i]["gt"] for i in range(len(ds))}

    def perfect(model, name, batch):
        return torch.stack([(by_index[int(i)] > 127).float() for i in batch["index"]])  # the gt as read (> 127)

    monkeypatch.setattr(E, "_saliency", perfect)
    out = E.evaluate("menet", spec, checkpoint=_checkpoint(tmp_path, "menet"), size=(fx.H, fx.W), device="cpu",
                     progress=False)  # fmt: skip
    s = out["summary"]
    assert s["images"] == len(ds) and s["mae"] == 0 and s["max_f"] == pytest.approx(1.0), s
    assert all(r["mae"] == 0 for r in out["rows"])


def test_davis_perfect_transfer_gives_j_and_f_of_one(tmp_path, monkeypatch):
    spec = _fixture(tmp_path, "davis2017")
    ds = models.datasets.open_dataset(spec, None, split="val")
    model = models.build("dense_transfer", **SMALL, num_classes=4, k=12)
    calls = []

    def transfer(ref, ref_labels, query, generator=None):  # the annotation of each queried frame
        calls.append(query.shape[0])  # one call: every frame but the first and the last
        return ds.sequence(ds.sequences[0])["gt"][1: 1 + query.shape[0]].clamp_min(0), None

    monkeypatch.setattr(model, "transfer", transfer)
    out = E.evaluate("dense_transfer", spec, model=model, size=None, device="cpu", limit=1, batch_size=64,
                     progress=False)  # fmt: skip
    assert calls == [1]  # the fixture's val sequence has 3 frames: only the middle one counts
    assert out["summary"]["J_mean"] == pytest.approx(1.0) and out["summary"]["F_mean"] == pytest.approx(1.0)


def test_the_checkpoint_rebuilds_the_model(tmp_path):
    ck = _checkpoint(tmp_path, "cas", channels=4)
    model, name, size = E.load_checkpoint(ck)
    assert name == "cas" and size == (24, 24) and isinstance(model, models.CASNet) and not model.training
    with pytest.raises(ValueError, match="holds a 'cas' model"):
        E.load_checkpoint(ck, "menet")
    torch.save(models.build("cas", **SMALL).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare state_dict"):
        E.load_checkpoint(tmp_path / "bare.pt")
    assert E.load_checkpoint(tmp_path / "bare.pt", "cas", SMALL)[1] == "cas"


def test_a_model_is_refused_a_benchmark_of_another_task(tmp_path):
    spec = _fixture(tmp_path, "ecssd")
    with pytest.raises(ValueError, match="dense_transfer is evaluated on"):
        E.evaluate("dense_transfer", spec, checkpoint=_checkpoint(tmp_path, "dense_transfer"), device="cpu")


def test_the_shards_cover_each_item_once():
    for n in (0, 1, 5, 8):
        for world in (1, 2, 3):
            got = sorted(i for r in range(world) for i in E._shard(n, r, world))
            assert got == list(range(n))


def test_train_saves_what_evaluate_reads_and_takes_a_benchmark(tmp_path):
    spec = _fixture(tmp_path, "ecssd")
    out = train("menet", steps=1, batch_size=2, size=(24, 24), device="cpu", model_kw=SMALL,
                             dataset=spec, progress=False, save=str(tmp_path / "m.pt"))  # fmt: skip
    assert math.isfinite(out["losses"][0])
    res = E.evaluate("menet", spec, checkpoint=tmp_path / "m.pt", device="cpu", progress=False)
    assert res["summary"]["images"] == 3
    with pytest.raises(ValueError, match="coseg trains on 'coseg' samples; 'ecssd' gives 'scene'"):
        train("coseg", steps=1, batch_size=2, size=(24, 24), device="cpu", model_kw=SMALL,
                           dataset=spec, progress=False)  # fmt: skip


def test_the_command(tmp_path, capsys):
    from pixelkernels.__main__ import main

    spec = _fixture(tmp_path, "ecssd")
    ck = _checkpoint(tmp_path, "menet")
    assert main(["evaluate", "menet", "--data", spec, "--checkpoint", str(ck), "--device", "cpu",
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "max_f" in out and "mae" in out


def _rank(rank, world, port, spec, ck, out_dir):
    import os

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    out = E.evaluate(None, spec, checkpoint=ck, device="cpu", batch_size=1, progress=False)
    torch.save(out, f"{out_dir}/{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def test_a_distributed_evaluation_equals_one_process(tmp_path):
    """Two gloo processes (each image once, the metrics' sums all-reduced, the rows gathered)
    give the numbers one process gives."""
    import socket

    import torch.multiprocessing as mp

    spec = _fixture(tmp_path, "ecssd")
    ck = _checkpoint(tmp_path, "menet")
    one = E.evaluate(None, spec, checkpoint=ck, device="cpu", batch_size=1, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, spec, str(ck), str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        two = torch.load(tmp_path / f"{r}.pt", weights_only=False)
        assert two["summary"].keys() == one["summary"].keys()
        for k, v in one["summary"].items():
            assert two["summary"][k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
        assert sorted(x["image"] for x in two["rows"]) == sorted(x["image"] for x in one["rows"])


def test_noc_leaves_void_out():
    """RITM's protocol: a void pixel is never an error a click goes to, and the IoU leaves it
    out. No void changes nothing; all void leaves nothing to click and an IoU of 1."""
    torch.manual_seed(0)
    model = models.build("interactive", **SMALL).eval()
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 24, 24, dtype=torch.long)
    mask[:, 6:14, 8:20] = 1
    batch = {"image": torch.rand(2, 3, 24, 24, generator=g) - 0.5, "mask": mask,
             "support_image": torch.rand(2, 3, 24, 24, generator=g) - 0.5, "support_mask": mask.flip(-1),
             "other": torch.zeros_like(mask)}  # fmt: skip
    plain = model.noc(batch, max_clicks=3)
    none = model.noc(batch | {"void": torch.zeros_like(mask, dtype=torch.bool)}, max_clicks=3)
    assert torch.equal(plain["iou"], none["iou"])
    every = model.noc(batch | {"void": torch.ones_like(mask, dtype=torch.bool)}, max_clicks=3)
    assert torch.equal(every["iou"], torch.ones(2, 3)) and every["NoC@90"].tolist() == [1, 1]


def test_pascal5i_reports_the_class_wise_miou_per_click(tmp_path):
    """Few-shot papers report each class's IoU over its episodes (intersections and unions
    summed), meaned over the fold's classes: here per click, next to the per-image NoC."""
    spec = _fixture(tmp_path, "pascal5i")
    out = E.evaluate("interactive", spec, checkpoint=_checkpoint(tmp_path, "interactive"), device="cpu",
                     max_clicks=3, progress=False)  # fmt: skip
    s = out["summary"]
    assert s["classes"] >= 1 and len(s["class_miou_per_click"]) == 3
    assert all(0 <= v <= 1 for v in s["class_miou_per_click"])

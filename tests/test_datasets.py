"""The dataset readers (pixelkernels.models.datasets) on tiny fixtures of each published layout
(tests/dataset_fixtures.py): the items found, the sample format of each task, palette indices
(not colours), void kept, splits and folds, clear errors, determinism for DDP, and two training
steps of the matching model on each."""

from __future__ import annotations

import math

import pytest
import torch

# the fixtures are written with Pillow (and scipy for SBD's .mat files); a wheel's check venv has neither
pytest.importorskip("PIL")
pytest.importorskip("scipy")
import dataset_fixtures as fx  # noqa: E402
import pixelkernels as pk
from pixelkernels import models
from pixelkernels.models import datasets as D
from pixelkernels.models.train import sample_seeds

SIZE = (16, 24)
IMAGE = ((3, *SIZE), torch.float32)
LABEL = (SIZE, torch.int64)

# the keys and (shape, dtype) of each task's samples (pixelkernels.models.data)
FORMATS = {
    "scene": {"image": IMAGE, "mask": LABEL, "instances": LABEL},
    "coseg": {"image_a": IMAGE, "image_b": IMAGE, "mask_a": LABEL, "mask_b": LABEL},
    "frames": {"image_a": IMAGE, "image_b": IMAGE, "labels_a": LABEL, "labels_b": LABEL},
    "episodes": {"support_image": IMAGE, "support_mask": LABEL, "image": IMAGE, "mask": LABEL, "other": LABEL},
}


def _open(tmp_path, name, size=SIZE, **kw):
    """(dataset, fixture info) of `name` written under tmp_path."""
    if name == "internet":
        root, info = fx.internet(tmp_path)
    elif name == "msrc":
        root, info = fx.msrc(tmp_path)
    elif name == "grabcut":
        root, info = fx.grabcut(tmp_path)
    elif name in ("davis2016", "davis2017"):
        root, info = fx.davis(tmp_path, int(name[-4:]))
    elif name == "pascal5i":
        root, sbd, info = fx.voc(tmp_path)
        kw = {"sbd": str(sbd)} | kw
    else:
        root, info = fx.saliency(tmp_path, name)
    return D.open_dataset(f"{name}:{root}", size, **kw), info


def _check_format(ds, sample):
    """`sample` (of a reader opened at SIZE) has its task's keys, shapes and dtypes."""
    fmt = FORMATS[ds.task]
    for k, (shape, dtype) in fmt.items():
        assert k in sample, k
        assert tuple(sample[k].shape) == tuple(shape) and sample[k].dtype == dtype, (k, sample[k].shape, sample[k].dtype)
        if dtype == torch.float32:
            assert -0.5 <= float(sample[k].min()) and float(sample[k].max()) <= 0.5
    assert sample["index"].dtype == torch.int64


# --- the registry and the spec ---------------------------------------------------------------------


def test_registry_names_and_tasks():
    assert set(D.DATASETS) == {"internet", "msrc", "duts-tr", "duts-te", "ecssd", "hku-is", "pascal-s", "dut-omron", "sod",
                               "davis2016", "davis2017", "pascal5i", "grabcut", "berkeley"}  # fmt: skip
    for name, e in D.DATASETS.items():
        reader, task, paper, layout = e[:4]
        assert task in FORMATS and reader.task == task and paper and layout, name


@pytest.mark.parametrize("spec, expected", [
    ("davis2017:/data/DAVIS", ("davis2017", "/data/DAVIS", {})),
    ("pascal5i:/data/VOC2012?fold=1&sbd=/data/SBD", ("pascal5i", "/data/VOC2012", {"fold": 1, "sbd": "/data/SBD"})),
    ("DUTS-TE:rel/path?raw=true&max-gap=none", ("duts-te", "rel/path", {"raw": True, "max_gap": None})),
])  # fmt: skip
def test_parse_spec(spec, expected):
    assert D.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["davis2017", "davis2017:", "ecssd:/x?fold"])
def test_parse_spec_errors(spec):
    with pytest.raises(ValueError):
        D.parse_spec(spec)


def test_unknown_name():
    with pytest.raises(ValueError, match="one of"):
        D.open_dataset("imagenet:/data")


@pytest.mark.parametrize("name, expected", [
    ("ecssd", "ground_truth_mask"), ("duts-te", "DUTS-TE-Mask"), ("pascal-s", "datasets/masks/pascal"),
    ("dut-omron", "pixelwiseGT-new-PNG"), ("grabcut", "boundary_GT"), ("internet", "GroundTruth"),
    ("davis2017", "JPEGImages/480p"), ("pascal5i", "SegmentationClass"),
])  # fmt: skip
def test_missing_folder_names_the_expected_path(tmp_path, name, expected):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=expected):
        D.open_dataset(f"{name}:{tmp_path / 'empty'}")


# --- saliency and interactive benchmarks --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(fx.SALIENCY))
def test_saliency_layouts(tmp_path, name):
    ds, info = _open(tmp_path, name, size=None, raw=True)
    assert [s for s, _, _ in ds.items] == info["stems"]  # sorted, the unpaired image left out
    for i, s in enumerate(ds.items):
        x = ds[i]
        assert x["image"].shape == (3, fx.H, fx.W) and x["mask"].shape == (fx.H, fx.W)
        assert int(x["mask"].sum()) == info["fg"][i]  # gt > 127: 200 is foreground, 100 is not
        assert torch.equal(x["instances"], x["mask"])
        assert x["gt"].dtype == torch.uint8 and x["gt"].shape == (fx.H, fx.W) and x["name"] == info["stems"][i]
    _check_format(ds, D.open_dataset(f"{name}:{ds.root}", SIZE)[0])


def test_hku_is_split_lists(tmp_path):
    ds, info = _open(tmp_path, "hku-is", split="train")
    assert [s for s, _, _ in ds.items] == info["stems"][:2]
    assert [s for s, _, _ in D.open_dataset(f"hku-is:{ds.root}", split="test").items] == info["stems"][2:]
    with pytest.raises(FileNotFoundError, match="valImgSet"):
        D.open_dataset(f"hku-is:{ds.root}", split="val")


def test_hku_is_mat_split_list(tmp_path):
    import numpy as np
    from scipy.io import savemat

    ds, info = _open(tmp_path, "hku-is")
    names = np.empty((2, 1), object)
    names[0, 0], names[1, 0] = info["stems"][2] + ".png", info["stems"][0] + ".png"
    savemat(str(ds.root / "valImgSet.mat"), {"valImgSet": names})
    assert [s for s, _, _ in D.open_dataset(f"hku-is:{ds.root}", split="val").items] == [info["stems"][2], info["stems"][0]]


def test_grabcut_void_band(tmp_path):
    ds, info = _open(tmp_path, "grabcut", size=None)
    assert [s for s, _, _ in ds.items] == info["stems"]  # .jpg and .bmp images
    x = ds[1]
    assert int(x["mask"].sum()) == info["fg"] and int(x["void"].sum()) == info["void"]
    assert not (x["mask"].bool() & x["void"].bool()).any()
    _check_format(ds, D.open_dataset(f"grabcut:{ds.root}", SIZE)[1])


# --- co-segmentation -----------------------------------------------------------------------------------


def test_internet_pairs(tmp_path):
    ds, info = _open(tmp_path, "internet")
    assert ds.classes == list(info["counts"]) and len(ds) == info["pairs"]
    assert [len(v) for v in ds.images] == list(info["counts"].values())  # Car100/2.jpg: no ground truth
    for i in range(len(ds)):
        x = ds[i]
        _check_format(ds, x)
        assert set(x["mask_a"].unique().tolist()) <= {0, 1} and x["mask_a"].sum() > 0
    assert [ds.items[i][0] for i in range(len(ds))] == [0, 0, 0, 1, 2]
    full = D.open_dataset(f"internet:{ds.root}", SIZE, subset="full")
    assert full.classes == ["Airplane"] and len(full) == 1


def test_msrc_pairs_cycle_and_raw(tmp_path):
    ds, info = _open(tmp_path, "msrc", size=None, raw=True)
    assert ds.classes == ["cow", "plane"] and len(ds) == info["pairs"]
    x = ds[0]
    assert int(x["mask_a"].sum()) == 64 and x["gt_a"].shape == (fx.H, fx.W)  # 0/1 ground truth
    assert (x["name_a"], x["name_b"]) == ("1_0_s", "1_1_s")
    cyc = D.open_dataset(f"msrc:{ds.root}", SIZE, pairs="cycle")
    assert [it[1:] for it in cyc.items] == [(0, 1), (1, 2), (2, 0), (0, 1), (1, 0)]


# --- DAVIS -------------------------------------------------------------------------------------------------


def test_davis2017_palette_indices_and_split(tmp_path):
    ds, info = _open(tmp_path, "davis2017", size=None)
    assert ds.sequences == ["bear", "camel"] and len(ds) == 4 + 3
    for i in range(len(ds)):
        x = ds[i]
        seq = ds.items[i][0]
        k = info["seqs"][seq][2]
        for side in "ab":
            assert set(x[f"labels_{side}"].unique().tolist()) == set(range(k + 1))  # indices, not colours
        assert not torch.equal(x["image_a"], x["image_b"])  # two different frames
    _check_format(ds, D.open_dataset(f"davis2017:{ds.root}", SIZE)[0])
    val = D.open_dataset(f"davis2017:{ds.root}", SIZE, split="val")
    s = val.sequence("dogs")
    assert s["images"].shape == (3, 3, *SIZE) and s["labels"].shape == (3, *SIZE) and s["gt"].shape == (3, fx.H, fx.W)
    assert s["num_objects"] == 3 and torch.equal(s["first"], s["labels"][0]) and s["frames"] == ["00000", "00001", "00002"]
    assert set(s["gt"][0].unique().tolist()) == {0, 1, 2, 3}


def test_davis2016_both_packages(tmp_path):
    ds, _ = _open(tmp_path, "davis2016", size=None)  # the 2016 package: ImageSets/480p path pairs, 0/255
    assert ds.sequences == ["bear", "camel"] and len(ds) == 7
    assert set(ds[5]["labels_a"].unique().tolist()) == {0, 1}
    root17, _ = fx.davis(tmp_path, 2017)  # the 2017 package read as 2016: ImageSets/2016, objects merged
    on17 = D.open_dataset(f"davis2016:{root17}", None, split="val")
    assert on17.sequences == ["dogs"] and set(on17[0]["labels_a"].unique().tolist()) == {0, 1}


def test_davis_partner_frame_deterministic_and_within_gap(tmp_path):
    ds, _ = _open(tmp_path, "davis2017", max_gap=1, raw=True)
    for i in range(len(ds)):
        a, b = ds[i], ds[i]
        assert all(torch.equal(a[k], b[k]) for k in FORMATS["frames"]) and a["name"] == b["name"]
    frames = [(ds.items[i], ds[i]) for i in range(len(ds))]
    for (seq, t), x in frames:
        # the partner: the annotated frame whose image is image_b, at most 1 away
        u = [f for f in range(len(ds.frames[seq][0])) if torch.equal(ds.sequence(seq)["images"][f], x["image_b"])]
        assert u and u[0] != t and abs(u[0] - t) <= 1


# --- PASCAL-5i ------------------------------------------------------------------------------------------------


def test_pascal5i_val_fold0(tmp_path):
    ds, info = _open(tmp_path, "pascal5i", size=None, split="val", fold=0, raw=True)
    assert [(ds.ids[k], c) for k, c in ds.items] == [("2008_000001", 1), ("2008_000002", 1), ("2008_000002", 2),
                                                     ("2008_000003", 2)]  # fmt: skip
    x = ds[0]
    assert int(x["class_id"]) == 1 and x["name"] == "2008_000001"
    assert int(x["mask"].sum()) == info["object_px"] and int(x["support_mask"].sum()) == info["object_px"]
    assert int(x["other"].sum()) == info["object_px"]  # the class-7 object: other, never void
    assert int(x["void"].sum()) == 2 * (12 * 12 - 64)  # the 255 frames, kept out of mask and other
    assert not torch.equal(x["image"], x["support_image"])  # the support is another image of class 1
    assert 255 in x["gt"].unique().tolist()  # void kept in the raw label map (palette indices)
    _check_format(ds, D.open_dataset(f"pascal5i:{ds.root}", SIZE, split="val")[3])


def test_pascal5i_train_sources_and_folds(tmp_path):
    ds, _ = _open(tmp_path, "pascal5i", split="train", fold=0)
    pairs = sorted((ds.ids[k], c) for k, c in ds.items)
    assert pairs == sorted([("2008_000010", 6), ("2008_000011", 6), ("2009_000100", 6), ("2009_000101", 8),
                            ("2009_000102", 8), ("2010_000200", 9), ("2010_000201", 9)])  # fmt: skip
    assert "2008_000001" not in ds.ids  # a VOC val image in SBD: never trained on
    no_sbd = D.open_dataset(f"pascal5i:{ds.root}", SIZE, fold=0)
    assert sorted(c for _, c in no_sbd.items) == [6, 6, 9, 9]
    assert len(D.open_dataset(f"pascal5i:{ds.root}?fold=0&episodes=10", SIZE)) == 10
    with pytest.raises(ValueError, match="fold 1"):  # class 7 of fold 1 is in one val image only
        D.open_dataset(f"pascal5i:{ds.root}", SIZE, split="val", fold=1)
    with pytest.raises(ValueError, match="fold"):
        D.open_dataset(f"pascal5i:{ds.root}", SIZE, fold=4)
    for i in range(len(ds)):
        a, b = ds[i], ds[i]
        assert all(torch.equal(a[k], b[k]) for k in a)  # the support drawn from (seed, index)


# --- DDP: a distributed pass reads the samples of one process ----------------------------------------------


def test_distributed_sampler_reads_the_same_samples(tmp_path):
    ds, _ = _open(tmp_path, "pascal5i", split="train")
    one = {int(x["index"]): x for x in (ds[i] for i in range(len(ds)))}
    seen = {}
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        for batch in torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=D.collate):
            for j, i in enumerate(batch["index"].tolist()):
                seen[i] = {k: v[j] for k, v in batch.items()}
    assert set(seen) == set(one)
    for i, x in seen.items():
        assert all(torch.equal(x[k], one[i][k]) for k in x)


def test_collate_keeps_raw_lists(tmp_path):
    ds, _ = _open(tmp_path, "ecssd", raw=True)
    b = D.collate([ds[0], ds[1]])
    assert b["image"].shape == (2, *IMAGE[0]) and b["name"] == [ds.items[0][0], ds.items[1][0]]
    assert b["gt"].shape == (2, fx.H, fx.W)  # same size here: stacked


# --- the models train on each ----------------------------------------------------------------------------------

TRAIN = [("internet", "coseg", {"num_samples": 300}, {}), ("ecssd", "menet", {}, {}), ("duts-tr", "cas", {}, {}),
         ("davis2017", "dense_transfer", {"k": 12}, {}), ("pascal5i", "interactive", {}, {"split": "train"})]  # fmt: skip


@pytest.mark.parametrize("name, model, model_kw, kw", TRAIN, ids=[t[0] for t in TRAIN])
def test_two_training_steps(tmp_path, name, model, model_kw, kw):
    ds, _ = _open(tmp_path, name, size=(24, 24), **kw)
    torch.manual_seed(0)
    net = models.build(model, width=8, depth=2, **model_kw)
    assert net.task == D.DATASETS[name].task
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = len(ds)
    loader = [D.collate([ds[i % n], ds[(i + 1) % n]]) for i in (0, 2)]  # 2 batches of 2, however many items
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        with pk.use_backend("cpu"):
            for step, batch in zip(range(2), loader):
                opt.zero_grad()
                loss = net.loss(batch, sample_seeds(batch["index"], 0, step), step)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 2 and all(map(math.isfinite, losses)), losses

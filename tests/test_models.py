"""pixelkernels.models (issue 19): the synthetic data and folder reader, one training step equal
on every backend, training lowers the loss, the train command, the NoC loop, and DDP with two
processes equal to one process. Small sizes: the whole file is CI's budget for the models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import pixelkernels as pk
from conftest import COMPILED_BACKENDS, assert_close
from pixelkernels import models
from pixelkernels.models import data
from pixelkernels.models.train import sample_seeds, train

# Small but awkward: odd sizes through a depth-2 U-Net; fewer samples than the papers' 5000
# triplets / 100 pooled pixels so Triton's interpreter runs a step in seconds.
SMALL = {"width": 8, "depth": 2}
KW = {
    "coseg": {"num_samples": 300, "seg": "focal"},
    "menet": {},
    "cas": {},
    "dense_transfer": {"k": 12},
    "interactive": {},
}


@pytest.fixture
def one_thread():
    """Tiny images gain nothing from threads, and two xdist workers each spinning OpenMP threads
    on CI's 2 cores slowed a 2 s training run 40-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(task, n, size, seed=0, dtype=torch.float64, device="cpu"):
    ds = data.synthetic(task, n, size, seed=seed)
    return data.to_device(data.collate([ds[i] for i in range(n)]), device, dtype)


# --- data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(data.TASKS))
def test_synthetic_is_a_function_of_seed_and_index(task):
    a, b, c = (data.synthetic(task, 3, (21, 30), seed=s) for s in (5, 5, 6))
    for i in range(3):
        x, y, z = a[i], b[i], c[i]
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
        assert any(not torch.equal(x[k], z[k]) for k in x)
    s = a[1]
    assert s.pop("index").item() == 1  # the sample's index: what a step seeds its draws from
    for k, v in s.items():
        if v.is_floating_point():
            assert v.shape == (3, 21, 30) and v.dtype == torch.float32 and v.abs().max() <= 0.5
        else:
            assert v.shape == (21, 30) and v.dtype == torch.int64 and v.min() >= 0
    with pytest.raises(IndexError):
        a[3]


def test_synthetic_labels():
    scene = data.synthetic("scene", 8, (40, 40), seed=1)
    for i in range(8):
        s = scene[i]
        assert torch.equal(s["mask"], (s["instances"] > 0).long())
        assert 0 < s["mask"].sum() < 40 * 40 and s["instances"].max() <= 4
    co = data.synthetic("coseg", 64, (24, 24), seed=1)
    for i in range(64):  # the common object is in both images, drawn over the distractors
        s = co[i]
        assert s["mask_a"].sum() > 0 and s["mask_b"].sum() > 0 and s["mask_a"].max() == 1
    fr = data.synthetic("frames", 8, (40, 40), seed=1)
    for i in range(8):  # small motion: most labels unchanged (an object may come out of, or go
        s = fr[i]  # under, another one: occlusion changes which ids are seen)
        assert s["labels_a"].max() <= 4 and s["labels_b"].max() <= 4
        assert (s["labels_a"] == s["labels_b"]).float().mean() > 0.7
    ep = data.synthetic("episodes", 1, (40, 40), seed=1)[0]
    assert set(ep) == {"support_image", "support_mask", "image", "mask", "other", "index"}
    assert not (ep["other"].bool() & ep["mask"].bool()).any()


def test_clicks_follow_the_mask():
    b = _batch("episodes", 4, (48, 40), dtype=torch.float32)
    pts = data.clicks(b["mask"], other=b["other"], num_positive=2, num_negative=3, strategy=2, generator=torch.Generator().manual_seed(3))
    assert pts.shape == (4, 6, 3)
    for i in range(4):
        for r, row in enumerate(pts[i]):
            y, x = int(row[0]), int(row[1])
            if max(y, x) < 0:
                continue
            assert int(b["mask"][i, y, x]) == (1 if r < 3 else 0)
            assert r < 3 or int(b["other"][i, y, x]) == 1  # strategy 2: negatives on the other objects


def test_folder(tmp_path):
    import numpy as np

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        img = torch.randint(0, 256, (30, 20, 3), generator=g, dtype=torch.uint8)
        mask = torch.zeros(30, 20, dtype=torch.int64)
        mask[5:15, 4:12] = i + 1
        if i == 2:
            torch.save(img, tmp_path / "images" / f"f{i}.pt")
        else:
            np.save(tmp_path / "images" / f"f{i}.npy", img.numpy())
        np.save(tmp_path / "masks" / f"f{i}.npy", mask.numpy())
    (tmp_path / "images" / "lonely.npy").write_bytes(b"")  # no mask: left out
    ds = data.from_folder("scene", tmp_path, (15, 10))
    assert len(ds) == 3
    s = ds[1]
    assert s["image"].shape == (3, 15, 10) and s["image"].abs().max() <= 0.5
    assert set(s["instances"].unique().tolist()) == {0, 2} and torch.equal(s["mask"], (s["instances"] > 0).long())
    pairs = data.from_folder("frames", tmp_path, (15, 10))
    assert len(pairs) == 2 and torch.equal(pairs[0]["labels_b"], ds[1]["instances"])
    ep = data.from_folder("episodes", tmp_path, (15, 10))[1]
    assert torch.equal(ep["support_mask"], ds[1]["mask"]) and torch.equal(ep["image"], ds[2]["image"])
    with pytest.raises(ValueError, match="no image/mask pair"):
        data.ImageMaskFolder(tmp_path / "images")
    with pytest.raises(ValueError, match="task must be"):
        data.from_folder("video", tmp_path)


# --- one step on every backend -------------------------------------------------------------


def _step(name, backend, device, dtype=torch.float64, size=(23, 18), n=2, seed=0, step=0):
    torch.manual_seed(0)
    model = models.build(name, **SMALL, **KW[name]).to(device, dtype)
    batch = _batch(model.task, n, size, seed=seed, dtype=dtype, device=device)
    with pk.use_backend(backend):
        loss = model.loss(batch, sample_seeds(batch["index"], 0, step), step)
        loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
    return loss.detach(), grads


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("backend, device", COMPILED_BACKENDS)
def test_step_equals_reference(name, backend, device, one_thread):
    """One training step (same parameters, batch and step generator): the same loss and the same
    gradient of every parameter as the reference backend, in float64 (SPEC §4). The interactive
    model at steps 0, 1, 2: each of Xu et al.'s click strategies."""
    for step in range(3 if name == "interactive" else 1):
        loss, grads = _step(name, backend, device, step=step)
        ref_loss, ref_grads = _step(name, "reference", device, step=step)
        assert torch.isfinite(loss)
        assert_close(loss, ref_loss, msg=f"{name} loss, step {step}")
        for k in ref_grads:
            assert_close(grads[k], ref_grads[k], msg=f"{name} grad {k}, step {step}")


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_training_lowers_the_loss(name, one_thread):
    """50 steps on synthetic data, 32 x 32, batch 4, on the CPU backend."""
    ls = train(name, steps=50, batch_size=4, size=(32, 32), backend="cpu", device="cpu", lr=3e-3,
               model_kw=SMALL | KW[name], progress=False)["losses"]  # fmt: skip
    first, last = sum(ls[:10]) / 10, sum(ls[-10:]) / 10
    assert last < first - 0.05 * abs(first), (name, first, last)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_loss_compiles_fullgraph(name, one_thread):
    """Every model's training loss traces into one graph (no graph break, checks off as in a hot
    loop) and equals eager given the same global RNG state: the ops keep no state that dynamo
    or AOT autograd cannot see. backend="aot_eager": the ops' own tests cover inductor; here
    the question is the model's graph. An explicit torch.Generator argument is a graph break in
    torch itself (dynamo cannot proxy one): the stochastic models draw from the default generator
    and from per-image seeds (what ``train`` passes) here."""
    torch.manual_seed(0)
    model = models.build(name, **SMALL, **KW[name])
    batch = _batch(model.task, 2, (23, 18), dtype=torch.float32)
    with pk.use_backend("cpu"), pk.use_checks(False):
        compiled = torch.compile(model.loss, fullgraph=True, backend="aot_eager")
        for step in range(3 if name == "interactive" else 2):  # a step index that changes
            torch.manual_seed(step)
            got = compiled(batch, None, step)
            got.backward()
            torch.manual_seed(step)
            want = model.loss(batch, None, step)
            assert_close(got.detach(), want.detach(), msg=f"step {step}")
            seeds = sample_seeds(batch["index"], 0, step)  # per-image seeds, as train passes: they trace
            assert_close(compiled(batch, seeds, step).detach(), model.loss(batch, seeds, step).detach(), msg=f"seeds, step {step}")
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_inference():
    b = _batch("scene", 2, (20, 24), dtype=torch.float32)
    sal = models.build("menet", **SMALL).predict(b)
    assert sal.shape == (2, 20, 24) and sal.min() >= 0 and sal.max() <= 1
    assert models.build("cas", **SMALL).predict(b).shape == (2, 20, 24)
    co = _batch("coseg", 2, (20, 24), dtype=torch.float32)
    ma, mb = models.build("coseg", **SMALL).predict(co)
    assert ma.shape == mb.shape == (2, 20, 24)
    fr = _batch("frames", 2, (20, 25), dtype=torch.float32)
    net = models.build("dense_transfer", **SMALL, k=8).eval()
    s = net.similarity
    with torch.no_grad():  # batch-norm statistics and affine part that are not the identity
        s.running_mean.fill_(0.3), s.running_var.fill_(2.5), s.weight.fill_(0.7), s.bias.fill_(-0.2)
    labels, scores = net.transfer(fr["image_a"], fr["labels_a"], fr["image_b"], generator=torch.Generator().manual_seed(0))
    assert labels.shape == (2, 10, 13) and scores.shape == (2, 5, 10, 13)
    # by hand: per class, the mean over its pooled reference pixels of sigmoid(BN_eval(<q, r>))
    with torch.no_grad():
        x, xl = pk.stochastic_pool(net(fr["image_a"]), net.half(fr["labels_a"]), 8, 5, generator=torch.Generator().manual_seed(0))
        psi = torch.einsum("bdp,bkd->bkp", net(fr["image_b"]).flatten(2), x)
        prob = torch.sigmoid((psi - 0.3) / (2.5 + s.eps) ** 0.5 * 0.7 - 0.2)
        onehot = torch.nn.functional.one_hot(xl.clamp_min(0), 5).float() * (xl >= 0)[..., None]
        want = torch.einsum("bkp,bkc->bcp", prob, onehot) / onehot.sum(1)[..., None]
    present = onehot.sum(1) > 0  # (B, C): classes with a pooled pixel
    got = scores.flatten(2)
    assert_close(got[present], want[present])
    assert torch.equal(labels.flatten(1), torch.where(present[..., None], got, -torch.inf).argmax(1))


class _Oracle(models.FewShotInteractive):
    """predict: the ground truth once `after` clicks are in, else nothing."""

    def __init__(self, after):
        super().__init__(**SMALL)
        self.after = after

    def predict(self, batch, points):
        n = (points[..., 0] >= 0).sum(1)  # clicks so far, per image
        return batch["mask"].bool() & (n >= self.after)[:, None, None]


@pytest.mark.parametrize("after", [1, 3])
def test_noc(after):
    b = _batch("episodes", 3, (30, 26), dtype=torch.float32)
    out = _Oracle(after).noc(b, max_clicks=5)
    assert out["iou"].shape == (3, 5)
    assert out["NoC@85"].tolist() == [after] * 3 and out["NoC@90"].tolist() == [after] * 3
    never = _Oracle(99).noc(b, max_clicks=4)
    assert never["NoC@85"].tolist() == never["NoC@90"].tolist() == [4] * 3


def test_noc_negative_click():
    """A prediction with a false-positive blob: the second click is negative, inside the blob,
    written to the negative half of the rows at order 1; with it the prediction is right."""
    b = _batch("episodes", 2, (30, 26), dtype=torch.float32)
    b["mask"] = torch.zeros_like(b["mask"])
    b["mask"][:, 3:10, 3:9] = 1
    blob = torch.zeros_like(b["mask"], dtype=torch.bool)
    blob[:, 18:27, 14:23] = True
    seen = []

    class FalsePositive(models.FewShotInteractive):
        def predict(self, batch, points):
            seen.append(points.clone())
            n_neg = (points[:, points.shape[1] // 2:, 0] >= 0).sum(1)
            return batch["mask"].bool() | (blob & (n_neg == 0)[:, None, None])

    out = FalsePositive(**SMALL).noc(b, max_clicks=3)
    assert out["NoC@90"].tolist() == [2, 2] and out["iou"][:, 1].tolist() == [1.0, 1.0]
    pts = seen[1]  # after the second click
    assert (pts[:, 1, 0] < 0).all()  # no second positive
    neg = pts[:, 3 + 1]  # negative half starts at max_clicks; slot 1 = the second click
    assert neg[:, 2].tolist() == [1.0, 1.0]
    for i in range(2):
        assert blob[i, int(neg[i, 0]), int(neg[i, 1])]
    assert (pts[:, 3, 0] < 0).all()  # the first click was positive: negative slot 0 empty


def test_seg_losses():
    from pixelkernels.models import seg_loss
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.randint(0, 2, (2, 5, 7), generator=g)
    assert_close(seg_loss(logits, mask, "ce"), F.cross_entropy(logits, mask))
    assert_close(seg_loss(logits, mask, "focal", gamma=0.0), F.cross_entropy(logits, mask))
    p = logits.softmax(1)[:, 1]
    pt = torch.where(mask == 1, p, 1 - p)
    assert_close(seg_loss(logits, mask, "focal"), -((1 - pt) ** 2 * pt.log()).mean())
    dice = 1 - ((2 * (p * mask).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + mask.flatten(1).sum(1) + 1)).mean()
    assert_close(seg_loss(logits, mask, "dice"), dice)
    sure = torch.stack([-50 * (2 * mask - 1), 50 * (2 * mask - 1)], 1).double()
    assert seg_loss(sure, mask, "dice") < 1e-12 and seg_loss(sure, mask, "ce") < 1e-12


def test_noc_clicks_are_next_clicks():
    """The loop's first click is where next_clicks puts it for an empty prediction, positive."""
    seen = []

    class Spy(models.FewShotInteractive):
        def predict(self, batch, points):
            seen.append(points.clone())
            return torch.zeros_like(batch["mask"], dtype=torch.bool)

    b = _batch("episodes", 2, (30, 26), dtype=torch.float32)
    Spy(**SMALL).noc(b, max_clicks=2)
    first = pk.next_clicks(torch.zeros_like(b["mask"]), b["mask"])
    N = seen[0].shape[1] // 2
    assert torch.equal(seen[0][:, 0, :2].long(), first[:, :2]) and (first[:, 2] == 1).all()
    assert (seen[1][:, N:, 0] < 0).all()  # with nothing predicted every next click is positive too
    assert (seen[1][:, 1, 2] == 1).all()


def test_resnet_backbone_wiring(monkeypatch):
    """backbone="resnet18" on a stand-in with torchvision's ResNet-18 layout (torchvision has no
    CPU build for this torch on the CI index): five levels projected and decoded to the input's
    size, for in_channels 3 and otherwise."""
    import types

    from torch import nn

    def resnet18(weights=None):
        assert weights is None  # random init, never a download
        r = nn.Module()
        r.conv1, r.bn1, r.relu = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        r.maxpool = nn.MaxPool2d(3, 2, 1)
        r.layer1, r.layer2 = nn.Conv2d(64, 64, 3, 1, 1), nn.Conv2d(64, 128, 3, 2, 1)
        r.layer3, r.layer4 = nn.Conv2d(128, 256, 3, 2, 1), nn.Conv2d(256, 512, 3, 2, 1)
        return r

    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=types.SimpleNamespace(resnet18=resnet18)))
    from pixelkernels.models.backbone import make_backbone

    for cin in (3, 5):
        net = make_backbone("resnet18", cin, width=8)
        out = net(torch.randn(2, cin, 45, 38))
        assert out.shape == (2, net.channels, 45, 38) == (2, 8, 45, 38)
    m = models.build("menet", backbone="resnet18", width=8)
    f, logits = m(torch.randn(1, 3, 40, 36))
    assert f.shape == (1, 16, 40, 36) and logits.shape == (1, 2, 40, 36)


def test_build_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        models.build("unet")
    with pytest.raises(ValueError, match="seg_loss kind"):
        models.build("coseg", seg="l1")
    with pytest.raises(ValueError, match="backbone must be"):
        models.build("menet", backbone="vgg")
    with pytest.raises(ValueError, match="multiple of the number of processes|at least 1"):
        train("menet", steps=0)


# --- the command and DDP -------------------------------------------------------------------


def _run(cmd, env, timeout=300):
    """cmd in a session of its own, killed whole on timeout: torchrun's workers outlive a killed
    launcher, and a hung run would keep both cores of CI busy."""
    import signal

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _torchrun() -> list[str]:
    """torchrun for 2 local processes on a port free now: --standalone picks its own port too,
    but two tests' launchers starting together can pick the same one (seen once in CI-like runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port)]  # fmt: skip


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    env.pop("TRITON_INTERPRET", None)
    return env


def test_train_command(tmp_path):
    out = _run(
        [sys.executable, "-m", "pixelkernels", "train", "interactive", "--steps", "3", "--batch-size", "2",
         "--size", "24", "20", "--width", "8", "--depth", "2", "--csv", str(tmp_path / "loss.csv"),
         "--noc-images", "2", "--no-progress"],
        _env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and len(rows) == 4
    assert "NoC@85" in out.stderr and "interactive: loss" in out.stdout


# One torchrun launch trains every model in turn (one process group): launches are what is slow
# and what can fail for reasons of the machine (ports), so there is one, retried once.
_DDP_DRIVER = """
import sys
import torch
import torch.distributed as dist
from pixelkernels.models.train import train

out, names = sys.argv[1], sys.argv[2:]
states = {}
for name in names:
    r = train(name, steps=3, batch_size=4, size=(20, 24), backend="cpu", device="cpu", dtype=torch.float64,
              lr=3e-3, seed=7, model_kw={"width": 8, "depth": 2}, progress=False)
    states[name] = r["model"].state_dict()
if dist.get_rank() == 0:
    torch.save(states, out)
dist.barrier()
dist.destroy_process_group()
"""
_DDP_EQUAL = ["menet", "cas", "coseg", "interactive", "dense_transfer"]


def test_ddp_equals_one_process(tmp_path):
    """torchrun with 2 processes (gloo) and the global batch 4 split 2 + 2: after 3 Adam steps
    the same parameters as one process with batch 4 (float64; DDP's all-reduce reassociates the
    gradient's sum, nothing else differs), for every model: the sampling ones draw per image from
    seeds of the sample's index (interactive: click strategies 1, 2, 3 over the 3 steps), and
    dense_transfer's batch-norm takes the global batch's statistics (and its running ones match)."""
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(_DDP_DRIVER)
    env = _env() | {"PK_DIST_CPU": "1", "OMP_NUM_THREADS": "1"}
    failed = []  # each failed attempt's stderr (torchrun's W1... lines left out)
    for attempt in range(2):
        out = _run([*_torchrun(), str(driver), str(tmp_path / "ddp.pt"), *_DDP_EQUAL], env)
        if out.returncode == 0:
            break
        failed.append("\n".join(line for line in out.stderr.splitlines() if not line.startswith("W1"))[-4000:])
    assert out.returncode == 0, "twice: first " + "\nsecond ".join(failed)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name in _DDP_EQUAL:
        one = train(name, steps=3, batch_size=4, size=(20, 24), backend="cpu", device="cpu", dtype=torch.float64,
                    lr=3e-3, seed=7, model_kw=SMALL, progress=False)["model"].state_dict()  # fmt: skip
        assert ddp[name].keys() == one.keys()
        for k in one:
            assert_close(ddp[name][k], one[k], msg=f"{name} {k}")
        init = models.build(name, **SMALL).state_dict()
        assert any(not torch.allclose(init[k].double(), one[k]) for k in one if one[k].is_floating_point()), name


def test_bench_models_rows(one_thread):
    """`bench --models`' rows at a small size: the reference first at speedup 1, each compiled
    backend with its share of the step in our ops in [0, 1]."""
    from pixelkernels.bench import models as mb

    cases = [mb.ModelCase("menet", 2, (24, 20), {"depth": 2}, "test"), mb.ModelCase("coseg", 1, (20, 18), {"depth": 2, "num_samples": 64}, "test")]
    rows = mb.run_models(torch.device("cpu"), backends=["cpu"], repeat=2, budget_s=0.05, width=8, cases=cases,
                         log=lambda _: None)  # fmt: skip
    assert [(r["model"], r["backend"]) for r in rows] == [("menet", "reference"), ("menet", "cpu"),
                                                          ("coseg", "reference"), ("coseg", "cpu")]  # fmt: skip
    for r in rows:
        assert r["step_ms"] > 0 and r["runs"] == 2 and r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
        if r["backend"] == "reference":
            assert r["speedup"] == 1 and r["ops_share"] != r["ops_share"]
        else:
            assert 0 < r["ops_share"] <= 1
    assert "| menet | 2 × 24x20 | cpu |" in mb.markdown(rows)

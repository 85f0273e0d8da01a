"""
Training the five models
========================

:mod:`pixelkernels.models` holds a compact model for each of the five papers behind the ops
(see :doc:`/guide/models`). :func:`pixelkernels.models.train.train` trains one on synthetic
data and returns its loss curve and the trained model; each model then has its paper's
inference path. This example trains all five for 40 to 150 steps on 32 x 32 images with a
narrow U-Net, a few seconds each on a CPU, and draws each one's loss curve and a prediction on
a held-out sample. The numbers are a smoke test of the training loop, not the papers' results:
at this size and length the models have only begun to learn.
"""

# %%
# Training
# --------
# The same backbone for every model, a U-Net of width 16 and depth 3, and batches of 4; Adam at
# learning rate 3e-3 where that trains faster, at the default 1e-3 for MEnet and the interactive
# model, which it destabilises. Two models get lighter settings of their own: co-segmentation
# draws K = 400 triplets per image instead of the paper's 5000, and dense transfer pools k = 20
# pixels per class instead of 100.

import time

import matplotlib.pyplot as plt
import torch

from pixelkernels.models import data
from pixelkernels.models.train import train

torch.manual_seed(0)
# 32 x 32 images leave little for threads to share, and on a busy machine (a CI runner) they
# wait on each other: one thread keeps the example's time steady. Restored at the end.
threads = torch.get_num_threads()
torch.set_num_threads(1)
SIZE = (32, 32)
common = dict(width=16, depth=3)
plan = {  # name: (steps, learning rate, the model's own settings)
    "coseg": (40, 3e-3, dict(num_samples=400)),
    "menet": (150, 1e-3, {}),
    "cas": (150, 3e-3, {}),
    "dense_transfer": (120, 3e-3, dict(k=20)),
    "interactive": (100, 1e-3, {}),
}
runs = {}
for name, (steps, lr, kw) in plan.items():
    t0 = time.perf_counter()
    runs[name] = train(name, steps=steps, batch_size=4, size=SIZE, lr=lr, seed=0,
                       model_kw=common | kw, progress=False)
    losses = runs[name]["losses"]
    seconds = time.perf_counter() - t0
    print(f"{name:15s} {steps} steps in {seconds:4.1f} s: loss {losses[0]:.3f} -> {losses[-1]:.3f}")

# %%
# Predictions on held-out samples
# -------------------------------
# Every model's inference path on a sample the training never saw (drawn with ``seed=1``, so
# even the object classes' colours and textures are new):
#
# * ``coseg``: ``predict`` gives the common object's mask in both images of a pair;
# * ``menet``: ``predict`` gives the saliency map of MEnet's eq. 5, scaled to [0, 1];
# * ``cas``: ``predict`` gives each pixel's segment id (the argmax of the CAS scores);
# * ``dense_transfer``: ``transfer`` carries the first frame's labels to the second frame at
#   half resolution (after ``eval()``, so that the batch-norm uses its running statistics);
# * ``interactive``: ``predict`` segments the query image from the support pair and three
#   positive and three negative simulated clicks (:func:`pixelkernels.models.data.clicks`,
#   drawn as dots), and ``noc`` runs the click protocol of :func:`pixelkernels.next_clicks`
#   for five clicks, printing the IoU after each.


def held_out(task, index=0):
    return data.collate([data.synthetic(task, index + 1, SIZE, seed=1)[index]])


def rgb(image):
    return (image[0].permute(1, 2, 0) + 0.5).clamp(0, 1)


panels = {}
model = runs["coseg"]["model"].eval()
batch = held_out("coseg")
pa, pb = model.predict(batch)
panels["coseg"] = [(rgb(batch["image_a"]), "image a"), (rgb(batch["image_b"]), "image b"),
                   (pa[0], "common object in a"), (pb[0], "common object in b")]

model = runs["menet"]["model"].eval()
batch = held_out("scene", 4)
panels["menet"] = [(rgb(batch["image"]), "image"), (batch["mask"][0], "true foreground"),
                   (model.predict(batch)[0], "saliency (eq. 5)")]

model = runs["cas"]["model"].eval()
panels["cas"] = [(rgb(batch["image"]), "image"), (batch["instances"][0], "true regions"),
                 (model.predict(batch)[0], "segment ids")]

model = runs["dense_transfer"]["model"].eval()
batch = held_out("frames", 4)
labels, _ = model.transfer(batch["image_a"], batch["labels_a"], batch["image_b"],
                           generator=torch.Generator().manual_seed(0))
panels["dense_transfer"] = [(rgb(batch["image_b"]), "second frame"),
                            (batch["labels_a"][0], "first frame's labels"),
                            (batch["labels_b"][0], "second frame's labels"),
                            (labels[0], "transferred (H/2)")]

model = runs["interactive"]["model"].eval()
batch = held_out("episodes")
points = data.clicks(batch["mask"], num_positive=3, num_negative=3,
                     generator=torch.Generator().manual_seed(0))
pred = model.predict(batch, points)
session = model.noc(batch, max_clicks=5)
print("interactive: IoU after each NoC click", [round(v, 3) for v in session["iou"][0].tolist()])
panels["interactive"] = [(rgb(batch["support_image"]), "support image"),
                         (batch["support_mask"][0], "support mask"),
                         (rgb(batch["image"]), "query image"), (batch["mask"][0], "query mask"),
                         (pred[0], "prediction, 3+3 clicks")]

# %%
# Drawing the models
# ------------------
# One row a model: its loss curve, then its prediction's panels.

ncol = 1 + max(len(p) for p in panels.values())
fig, axes = plt.subplots(len(panels), ncol, figsize=(2.3 * ncol, 2.3 * len(panels)))
for row, (name, items) in zip(axes, panels.items()):
    losses = runs[name]["losses"]
    row[0].plot(range(1, len(losses) + 1), losses)
    row[0].set_title(f"{name}: loss", fontsize=9)
    row[0].tick_params(labelsize=7)
    for ax, item in zip(row[1:], items):
        img, title = item
        cmap = None if img.ndim == 3 else ("tab10" if img.dtype == torch.int64 else "gray")
        limits = {"vmin": 0, "vmax": 9} if cmap == "tab10" else {}
        ax.imshow(img, cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    for ax in row[1 + len(items):]:
        ax.set_visible(False)
ax = axes[-1][len(panels["interactive"])]  # the interactive model's prediction: its clicks on it
pts = points[0]
for rows, color in ((pts[: len(pts) // 2], "limegreen"), (pts[len(pts) // 2:], "red")):
    rows = rows[rows[:, 0] >= 0]
    ax.plot(rows[:, 1], rows[:, 0], "o", color=color, markersize=4, mec="k")
fig.tight_layout()
plt.show()
torch.set_num_threads(threads)

# %%
# The picture shows each model's loss falling over its short run and what its inference path
# makes of a held-out sample after it: first sketches of the common object, the salient
# region, the regions, the transferred labels and the clicked object, which longer runs at
# larger sizes (``python -m pixelkernels train MODEL --steps 500``) sharpen.

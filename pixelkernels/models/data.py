"""Data without downloads: a seeded synthetic scene generator, and a reader for a user's own
image/mask pairs.

Every sample is a function of (seed, index) alone (its own ``torch.Generator``), so a dataset is
the same in every process and under any sampler: what makes one process and a DDP run see the
same global batch. A scene is a textured background with 1..``max_instances`` objects; an object
is one of ``num_classes`` classes (a shape — ellipse, box, triangle or ring — with a colour and a
striped texture) at a random place, size and angle. The four tasks:

  scene     image (3, H, W), mask (H, W) foreground, instances (H, W) ids 0 (background)..K
  coseg     image_a, image_b, mask_a, mask_b: an object of one class in both images (at different
            places and sizes, over different backgrounds, drawn over the distractors of other
            classes, so never empty); the masks mark it (the co-segmentation of Li and Liu)
  frames    image_a, image_b, labels_a, labels_b: a scene and the same scene a frame later,
            each object moved by up to ``motion`` px (the frame pairs of Najafi et al.'s label
            transfer); labels = instance ids
  episodes  support_image, support_mask, image, mask, other: the coseg pair as a one-shot
            episode (Bhatia's few-shot interactive segmentation), other = the query's other
            objects; clicks are simulated per
            training step with ``sample_clicks`` (``clicks``)

Images are float32 in about [-0.5, 0.5]; masks int64; every sample also carries its ``index``
(int64), from which a training step seeds the sample's random draws (``train.sample_seeds``).
``collate`` stacks samples into a batch dict; ``ImageMaskFolder`` / ``from_folder`` read ``root/images/*`` and ``root/masks/*`` with
matching stems (.png/.jpg via PIL or OpenCV, .npy, .pt) instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

import pixelkernels as pk

SHAPES = ("ellipse", "box", "triangle", "ring")


def _gen(seed: int, index: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + index * 7919 + salt) % (2**63 - 1))


def _u(g, lo=0.0, hi=1.0, n=()):
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


class _Classes:
    """The class table: shape, colour and stripe texture of each object class."""

    def __init__(self, num_classes: int, seed: int):
        g = _gen(seed, -1, 17)
        self.shape = [SHAPES[i % len(SHAPES)] for i in range(num_classes)]
        self.color = _u(g, 0.1, 0.9, (num_classes, 3))
        self.freq = _u(g, 0.15, 0.6, (num_classes,))
        self.angle = _u(g, 0, math.pi, (num_classes,))


class Synthetic:
    """The generator behind the datasets: ``render(g, objects)`` draws a scene."""

    def __init__(self, size=(64, 64), *, num_classes: int = 8, max_instances: int = 4, seed: int = 0):
        self.H, self.W = size
        if self.H < 8 or self.W < 8:
            raise ValueError(f"size must be at least 8 x 8, got {tuple(size)}")
        self.num_classes, self.max_instances, self.seed = num_classes, max_instances, seed
        self.classes = _Classes(num_classes, seed)
        self.yy, self.xx = torch.meshgrid(
            torch.arange(self.H, dtype=torch.float64), torch.arange(self.W, dtype=torch.float64), indexing="ij"
        )

    def obj(self, g, cls: int) -> dict:
        s = min(self.H, self.W)
        return {"cls": cls, "cy": float(_u(g, 0.15, 0.85)) * self.H, "cx": float(_u(g, 0.15, 0.85)) * self.W,
                "ry": float(_u(g, 0.12, 0.3)) * s, "rx": float(_u(g, 0.12, 0.3)) * s,
                "theta": float(_u(g, 0, math.pi)), "phase": float(_u(g, 0, 2 * math.pi))}  # fmt: skip

    def inside(self, o: dict, dy: float = 0.0, dx: float = 0.0) -> torch.Tensor:
        y, x = self.yy - o["cy"] - dy, self.xx - o["cx"] - dx
        c, s = math.cos(o["theta"]), math.sin(o["theta"])
        u, v = (c * x + s * y) / o["rx"], (-s * x + c * y) / o["ry"]
        shape = self.classes.shape[o["cls"]]
        r2 = u * u + v * v
        if shape == "ellipse":
            return r2 <= 1
        if shape == "box":
            return (u.abs() <= 0.8) & (v.abs() <= 0.8)
        if shape == "triangle":
            return (v <= 0.8) & (v >= 1.6 * u.abs() - 0.8)
        return (r2 <= 1) & (r2 >= 0.3)  # ring

    def texture(self, cls: int, phase: float, dy: float = 0.0, dx: float = 0.0) -> torch.Tensor:
        cl = self.classes
        a = float(cl.angle[cls])
        t = torch.sin(float(cl.freq[cls]) * ((self.xx - dx) * math.cos(a) + (self.yy - dy) * math.sin(a)) + phase)
        return cl.color[cls].view(3, 1, 1) + 0.12 * t

    def background(self, g, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
        col = _u(g, 0.2, 0.8, (3,)).view(3, 1, 1)
        gy, gx = _u(g, -0.3, 0.3, (2,))
        f, a, ph = float(_u(g, 0.05, 0.2)), float(_u(g, 0, math.pi)), float(_u(g, 0, 2 * math.pi))
        y, x = self.yy - shift[0], self.xx - shift[1]
        ramp = gy * (y / self.H - 0.5) + gx * (x / self.W - 0.5)
        return col + ramp + 0.08 * torch.sin(f * (x * math.cos(a) + y * math.sin(a)) + ph)

    def render(self, g, objects: list[dict], motion: list[tuple[float, float]] | None = None,
               bg_shift=(0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """-> image (3, H, W) float32, ids (H, W) int64 (0 background, object i -> i + 1; later
        objects occlude earlier ones)."""
        img = self.background(g, bg_shift)
        ids = torch.zeros(self.H, self.W, dtype=torch.int64)
        for i, o in enumerate(objects):
            dy, dx = motion[i] if motion else (0.0, 0.0)
            m = self.inside(o, dy, dx)
            img = torch.where(m, self.texture(o["cls"], o["phase"], dy, dx), img)
            ids[m] = i + 1
        img = img + 0.03 * torch.randn(img.shape, generator=g, dtype=torch.float64)
        return (img.clamp(0, 1) - 0.5).float().contiguous(), ids

    def scene(self, g) -> tuple[list[dict], int]:
        k = int(torch.randint(1, self.max_instances + 1, (), generator=g))
        return [self.obj(g, int(torch.randint(self.num_classes, (), generator=g))) for _ in range(k)], k


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, length: int, size=(64, 64), *, seed: int = 0, **kw):
        self.length, self.gen = length, Synthetic(size, seed=seed, **kw)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.sample(_gen(self.gen.seed, index)) | {"index": torch.tensor(index)}


class SceneDataset(_Dataset):
    """image, mask (foreground), instances (ids 0..K; num_regions = max_instances + 1)."""

    def sample(self, g) -> dict:
        objects, _ = self.gen.scene(g)
        img, ids = self.gen.render(g, objects)
        return {"image": img, "mask": (ids > 0).long(), "instances": ids}


class CoSegDataset(_Dataset):
    """image_a/b, mask_a/b: the common class in two images, among distractors of other classes."""

    def sample(self, g) -> dict:
        return {k: v for k, v in self.pair(g).items() if not k.startswith("other")}

    def pair(self, g) -> dict:
        gen = self.gen
        common = int(torch.randint(gen.num_classes, (), generator=g))
        out = {}
        for side in "ab":
            n = int(torch.randint(0, gen.max_instances, (), generator=g))
            others = [c for c in range(gen.num_classes) if c != common]
            objects = [gen.obj(g, others[int(torch.randint(len(others), (), generator=g))]) for _ in range(n)]
            objects.append(gen.obj(g, common))  # drawn last: distractors never hide it
            img, ids = gen.render(g, objects)
            cls = torch.tensor([-1] + [o["cls"] for o in objects])
            out["image_" + side], out["mask_" + side] = img, (cls[ids] == common).long()
            out["other_" + side] = ((ids > 0) & (cls[ids] != common)).long()
        return out


class FramePairDataset(_Dataset):
    """image_a/b, labels_a/b: a scene and the next frame, objects moved by up to `motion` px."""

    def __init__(self, length: int, size=(64, 64), *, seed: int = 0, motion: float = 3.0, **kw):
        super().__init__(length, size, seed=seed, **kw)
        self.motion = motion

    def sample(self, g) -> dict:
        objects, k = self.gen.scene(g)
        shift = [tuple(_u(g, -self.motion, self.motion, (2,)).tolist()) for _ in range(k)]
        bg = tuple(_u(g, -1, 1, (2,)).tolist())
        state = g.get_state()
        img_a, ids_a = self.gen.render(g, objects)
        g.set_state(state)  # the same noise field: a video's frames share their sensor noise statistics
        img_b, ids_b = self.gen.render(g, objects, shift, bg)
        return {"image_a": img_a, "labels_a": ids_a, "image_b": img_b, "labels_b": ids_b}


class EpisodeDataset(CoSegDataset):
    """support_image, support_mask, image, mask, other: a one-shot episode (the coseg pair);
    other marks the query's other objects (click simulation strategy 2 puts negatives there)."""

    def sample(self, g) -> dict:
        s = self.pair(g)
        return {"support_image": s["image_a"], "support_mask": s["mask_a"], "image": s["image_b"], "mask": s["mask_b"],
                "other": s["other_b"]}  # fmt: skip


TASKS = {"scene": SceneDataset, "coseg": CoSegDataset, "frames": FramePairDataset, "episodes": EpisodeDataset}


def synthetic(task: str, length: int, size=(64, 64), *, seed: int = 0, **kw) -> torch.utils.data.Dataset:
    """A seeded synthetic dataset of one task: no download, the same in every process.

    A scene is a textured background with 1 to ``max_instances`` objects, each one of
    ``num_classes`` classes (an ellipse, box, triangle or ring with its own colour and striped
    texture) at a random place, size and angle. Sample ``i`` is a function of (``seed``, ``i``)
    alone.

    Parameters
    ----------
    task : str
        ``"scene"``: ``image`` (3, H, W), ``mask`` (H, W) the foreground, ``instances`` (H, W)
        ids 0 (background) .. K. ``"coseg"``: ``image_a``, ``image_b``, ``mask_a``, ``mask_b``,
        an object class the two images share among distractors of other classes. ``"frames"``:
        ``image_a``, ``image_b``, ``labels_a``, ``labels_b``, a scene and the same scene a frame
        later (each object moved by up to ``motion`` pixels, default 3). ``"episodes"``:
        ``support_image``, ``support_mask``, ``image``, ``mask``, ``other``, a one-shot episode
        (``other`` marks the query's other objects).
    length : int
        The number of samples.
    size : tuple of int
        (H, W), at least 8 x 8 (default 64 x 64).
    seed : int
        Seeds the class table and every sample.
    **kw
        ``num_classes`` (default 8), ``max_instances`` (default 4), and ``motion`` for
        ``"frames"``.

    Returns
    -------
    torch.utils.data.Dataset
        Samples are dicts of tensors: images float32 in about [-0.5, 0.5], masks and labels int64,
        and ``index`` (int64), from which a training step seeds the sample's random draws.

    Examples
    --------
    >>> from pixelkernels.models import data
    >>> ds = data.synthetic("scene", 4, size=(32, 32), seed=0)
    >>> sample = ds[0]
    >>> sorted(sample), tuple(sample["image"].shape), sample["mask"].dtype
    (['image', 'index', 'instances', 'mask'], (3, 32, 32), torch.int64)
    >>> batch = data.collate([ds[0], ds[1]])
    >>> tuple(batch["instances"].shape)
    (2, 32, 32)
    >>> torch.equal(ds[3]["image"], data.synthetic("scene", 4, size=(32, 32), seed=0)[3]["image"])
    True
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    return TASKS[task](length, size, seed=seed, **kw)


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples (dicts of tensors of equal shapes) into one batch dict."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def to_device(batch: dict, device, dtype: torch.dtype | None = None) -> dict:
    """The batch on `device`, its floating tensors (the images) in `dtype` when given; entries that
    are not tensors (a raw sample's names, unstackable ground truths) as they are."""
    return {k: v.to(device, dtype if dtype is not None and v.is_floating_point() else None, non_blocking=True)
            if isinstance(v, torch.Tensor) else v for k, v in batch.items()}  # fmt: skip


def clicks(mask: torch.Tensor, *, other: torch.Tensor | None = None, num_positive: int = 3, num_negative: int = 3,
           strategy: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Simulated training clicks for masks (B, H, W) on their device -> points (B, 2N, 3).

    :func:`pixelkernels.sample_clicks` with the three strategies of Xu et al., *Deep Interactive
    Object Selection*, CVPR 2016 (the simulation Bhatia's *Few-Shot Interactive Segmentation*,
    thesis, IIT Bombay, 2021, §1.2, describes), and their distances, d_band 40, d_step 10 and
    d_margin 5 pixels of images about 480 pixels across, scaled here to the mask's size. The result is in the format of :func:`pixelkernels.click_maps`: rows
    (y, x, order), the first N = ``max(num_positive, num_negative)`` positive and the last N
    negative, padding rows negative.

    Parameters
    ----------
    mask : Tensor
        (B, H, W) the objects, 0 or 1.
    other : Tensor, optional
        (B, H, W) the other objects: strategy 2 puts its negative clicks there.
    num_positive : int
        Positive clicks per image (default 3).
    num_negative : int
        Negative clicks per image (default 3).
    strategy : int
        1, 2 or 3 (default 1).
    generator : torch.Generator or Tensor, optional
        A generator on the mask's device, or a (B,) int64 tensor of per-image seeds.

    Examples
    --------
    >>> from pixelkernels.models import data
    >>> mask = torch.zeros(1, 32, 32, dtype=torch.long)
    >>> mask[0, 8:24, 8:24] = 1
    >>> points = data.clicks(mask, generator=torch.Generator().manual_seed(0))
    >>> tuple(points.shape)
    (1, 6, 3)
    >>> pos = points[0, :3]
    >>> bool(mask[0, pos[:, 0].long(), pos[:, 1].long()].all())  # positive clicks on the object
    True
    """
    s = min(mask.shape[-2:]) / 480
    return pk.sample_clicks(mask, num_positive=num_positive, num_negative=num_negative, strategy=strategy,
                            d_band=max(40 * s, 2.0), d_step=max(10 * s, 1.0), d_margin=max(5 * s, 1.0),
                            other=other if strategy == 2 else None, generator=generator)  # fmt: skip


# --- a user's own data ---------------------------------------------------------------------


def _read(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path))
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True)
    try:
        from PIL import Image
        import numpy as np

        return torch.from_numpy(np.array(Image.open(path)))
    except ImportError:
        pass
    try:
        import cv2

        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise ValueError(f"cannot read {path}")
        return torch.from_numpy(a[..., ::-1].copy() if a.ndim == 3 else a)
    except ImportError:
        raise ImportError(f"reading {path.suffix} files needs Pillow or OpenCV; .npy and .pt need neither") from None


class ImageMaskFolder(torch.utils.data.Dataset):
    """``root/images/<stem>.*`` with ``root/masks/<stem>.*``, sorted by stem, resized to `size`
    (bilinear for images, nearest for masks) -> {"image": (3, H, W) float32 in [-0.5, 0.5],
    "instances": (H, W) int64 (the mask's values), "mask": instances > 0}. An image is (H, W, 3)
    or (H, W) uint8 (or float in [0, 1]); a mask (H, W) of integer region ids."""

    def __init__(self, root, size=(64, 64)):
        root = Path(root)
        imgs = {p.stem: p for p in sorted((root / "images").glob("*")) if p.is_file()}
        masks = {p.stem: p for p in sorted((root / "masks").glob("*")) if p.is_file()}
        self.stems = sorted(set(imgs) & set(masks))
        if not self.stems:
            raise ValueError(f"no image/mask pair under {root} (images/<stem>.* with masks/<stem>.*)")
        self.imgs, self.masks, self.size = imgs, masks, tuple(size)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        stem = self.stems[index]
        img, mask = _read(self.imgs[stem]), _read(self.masks[stem])
        if img.ndim == 2:
            img = img.unsqueeze(-1).expand(*img.shape, 3)
        if img.ndim != 3 or img.shape[-1] not in (3, 4):
            raise ValueError(f"{self.imgs[stem]}: an image must be (H, W), (H, W, 3) or (H, W, 4), got {tuple(img.shape)}")
        img = img[..., :3].permute(2, 0, 1).float()
        if not img.is_floating_point() or img.max() > 1.5:
            img = img / 255
        img = F.interpolate(img[None], size=self.size, mode="bilinear", align_corners=False)[0]
        if mask.ndim == 3:
            mask = mask[..., 0]
        ids = F.interpolate(mask[None, None].double(), size=self.size, mode="nearest")[0, 0].long()
        return {"image": (img.clamp(0, 1) - 0.5).contiguous(), "instances": ids, "mask": (ids > 0).long(),
                "index": torch.tensor(index)}  # fmt: skip


class _Pairs(torch.utils.data.Dataset):
    """Consecutive items of a folder as pairs (frames of a video, or two images of one class)."""

    def __init__(self, folder: ImageMaskFolder, task: str):
        if len(folder) < 2:
            raise ValueError(f"task {task!r} pairs consecutive images: the folder needs at least 2, has {len(folder)}")
        self.folder, self.task = folder, task

    def __len__(self) -> int:
        return len(self.folder) - 1

    def __getitem__(self, index: int) -> dict:
        a, b = self.folder[index], self.folder[index + 1]
        i = {"index": torch.tensor(index)}
        if self.task == "frames":
            return {"image_a": a["image"], "labels_a": a["instances"], "image_b": b["image"], "labels_b": b["instances"]} | i
        if self.task == "episodes":
            return {"support_image": a["image"], "support_mask": a["mask"], "image": b["image"], "mask": b["mask"],
                    "other": torch.zeros_like(b["mask"])} | i  # a folder's mask is the object: nothing else is marked
        return {"image_a": a["image"], "mask_a": a["mask"], "image_b": b["image"], "mask_b": b["mask"]} | i


def from_folder(task: str, root, size=(64, 64)) -> torch.utils.data.Dataset:
    """A folder of your own images and masks as the samples of a task.

    Parameters
    ----------
    task : str
        ``"scene"`` reads each image/mask pair as one sample; ``"coseg"``, ``"frames"`` and
        ``"episodes"`` pair consecutive stems (name the files so that neighbours belong
        together).
    root : str or pathlib.Path
        A folder holding ``images/<stem>.*`` and ``masks/<stem>.*`` with matching stems:
        .png/.jpg (read with Pillow or OpenCV), .npy or .pt. A mask holds integer region ids.
    size : tuple of int
        (H, W) every image is resized to (bilinear; nearest for the masks).

    Returns
    -------
    torch.utils.data.Dataset
        Samples with the keys of :func:`synthetic`'s for that task.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    folder = ImageMaskFolder(root, size)
    return folder if task == "scene" else _Pairs(folder, task)

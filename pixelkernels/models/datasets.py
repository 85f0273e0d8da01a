"""Readers for the datasets the five papers evaluate on, in their published folder layouts.

``open_dataset("NAME:PATH", size)`` opens one by name (``DATASETS``); each reader returns the
samples of one of the tasks of ``pixelkernels.models.data`` ("scene", "coseg", "frames",
"episodes"), so the models train and evaluate on them unchanged:

=============  ==========  ========================================================
names          task        layout (under PATH)
=============  ==========  ========================================================
internet       coseg       ``Data/<Class>/*.jpg`` + ``Data/<Class>/GroundTruth/*.png``
msrc           coseg       ``<class>/*.bmp|jpg`` + ``<class>/GroundTruth/*``
duts-tr/te     scene       ``DUTS-TR-Image/*.jpg`` + ``DUTS-TR-Mask/*.png`` (TE alike)
ecssd          scene       ``images/*.jpg`` + ``ground_truth_mask/*.png``
hku-is         scene       ``imgs/*.png`` + ``gt/*.png`` (+ split lists)
pascal-s       scene       ``datasets/imgs/pascal/*.jpg`` + ``datasets/masks/pascal/*.png``
dut-omron      scene       ``DUT-OMRON-image/*.jpg`` + ``pixelwiseGT-new-PNG/*.png``
sod            scene       ``images/*.jpg`` + ``GT/*.png``
davis2016/17   frames      ``JPEGImages/480p/<seq>/%05d.jpg`` + ``Annotations/480p/...``
pascal5i       episodes    VOC2012 (+ SBD / SegmentationClassAug), fold 0..3
grabcut        scene       ``data_GT/*`` + ``boundary_GT/*.bmp`` (128 = void)
berkeley       scene       ``images/*.jpg`` + ``masks/*.png``
=============  ==========  ========================================================

Every sample is a function of its index alone (random choices, such as the partner frame of a
DAVIS pair or the support image of an episode, are drawn from a generator seeded by
(``seed``, index)), so a ``DistributedSampler`` over any number of processes reads the same
samples as one process. Images are float32 (3, H, W) in [-0.5, 0.5] (bilinear, antialiased),
label maps int64 (H, W) (nearest); ``size=None`` keeps each image's own size. ``raw=True`` adds
the unresized ground truth and the file name of each image (``collate`` then keeps what cannot
be stacked as lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn import functional as F

from . import data

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm")

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
               "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip
VOID = 255


def voc_palette() -> list[int]:
    """The 256-colour palette of the PASCAL VOC and DAVIS label PNGs, as PIL's ``putpalette``
    takes it: [r0, g0, b0, r1, ...] with index :math:`i` coloured by its bits
    :math:`(b_{3k}, b_{3k+1}, b_{3k+2})` spread over the high bits of (r, g, b).

    Examples
    --------
    >>> from pixelkernels.models.datasets import voc_palette
    >>> voc_palette()[:9], voc_palette()[255 * 3:]
    ([0, 0, 0, 128, 0, 0, 0, 128, 0], [224, 224, 192])
    """
    out = []
    for i in range(256):
        rgb, c = [0, 0, 0], i
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        out += rgb
    return out


# --- reading and resizing ------------------------------------------------------------------


def _rgb(path: Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: any image (grey, palette, CMYK, RGBA) as RGB."""
    try:
        from PIL import Image
        import numpy as np
    except ImportError:  # the OpenCV path of data._read
        a = data._read(path)
        a = a.unsqueeze(-1).expand(*a.shape, 3) if a.ndim == 2 else a[..., :3]
        return a.permute(2, 0, 1).float() / 255
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def _labels(path: Path) -> torch.Tensor:
    """(H, W) int64 of a mask file: the palette index of a palette PNG (never its colour), the
    value of a grey image, the channel maximum of an RGB(A) binary mask; .mat: SBD's
    ``GTcls.Segmentation``."""
    if path.suffix == ".mat":
        from scipy.io import loadmat

        m = loadmat(str(path), squeeze_me=True, struct_as_record=False)
        return torch.from_numpy(m["GTcls"].Segmentation.astype("int64"))
    a = data._read(path)
    if a.ndim == 3:
        a = a[..., :3].amax(-1)
    return a.to(torch.int64)


def _binary(gt: torch.Tensor) -> torch.Tensor:
    """A binary ground truth stored as 0/1 or 0/255 (or 0..255 grey, threshold 128) -> 0/1."""
    return (gt > (0 if gt.numel() == 0 or int(gt.max()) <= 1 else 127)).long()


def _size(size):
    return None if size is None else (int(size[0]), int(size[1]))


def _resize_image(img: torch.Tensor, size) -> torch.Tensor:
    if size is not None and tuple(img.shape[-2:]) != size:
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return (img.clamp(0, 1) - 0.5).contiguous()


def _resize_labels(lab: torch.Tensor, size) -> torch.Tensor:
    if size is None or tuple(lab.shape[-2:]) == size:
        return lab.contiguous()
    return F.interpolate(lab[None, None].double(), size=size, mode="nearest")[0, 0].long()


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS + (".mat",)}


def _missing(what: str, paths) -> FileNotFoundError:
    return FileNotFoundError(f"{what}: expected " + " or ".join(str(p) for p in paths))


def _split_list(path: Path) -> list[str]:
    """The stems of a split list: one name per line (a path or a name, with or without an
    extension; DAVIS 2016's lines of two paths give the sequence folder)."""
    out = []
    for line in path.read_text().split("\n"):
        line = line.strip()
        if line:
            out.append(Path(line.split()[0]).stem)
    return out


def _mat_names(path: Path) -> list[str]:
    """The stems of the names in a .mat split list (its first variable: a cell array of strings)."""
    import numpy as np
    from scipy.io import loadmat

    m = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    return [Path(str(np.asarray(x).ravel()[0]).strip()).stem for x in np.asarray(next(iter(m.values()))).ravel()]


def collate(samples: list[dict]) -> dict:
    """``data.collate`` that also takes ``raw`` samples: tensors of one shape are stacked, the rest
    (unresized ground truths, names) kept as lists."""
    out = {}
    for k in samples[0]:
        vs = [s[k] for s in samples]
        same = all(isinstance(v, torch.Tensor) for v in vs) and len({tuple(v.shape) for v in vs}) == 1
        out[k] = torch.stack(vs) if same else vs
    return out


class _Reader(torch.utils.data.Dataset):
    task = "scene"

    def __len__(self) -> int:
        return len(self.items)

    def _check(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return index % len(self)

    def _gen(self, index: int) -> torch.Generator:
        return data._gen(self.seed, index, 101)


# --- salient object detection (MEnet, CAS) and the interactive benchmarks -----------------------


class ImageMaskPairs(_Reader):
    """Images and binary ground-truth masks in two folders, paired by file stem -> "scene" samples.

    The layout of the salient object detection benchmarks (DUTS, ECSSD, HKU-IS, PASCAL-S,
    DUT-OMRON, SOD) and of the interactive benchmarks GrabCut and Berkeley: ``PATH/<images>/
    <stem>.jpg`` with ``PATH/<masks>/<stem>.png``. The first pair of folder names of
    `layouts` found under PATH (or under ``PATH/<folder>`` for each alternative root `folder` of
    `roots`) is read.

    Parameters
    ----------
    root : str or Path
        The dataset folder.
    size : (int, int) or None
        (H, W) of the samples; None keeps each image's size.
    layouts : sequence of (str, str)
        (image folder, mask folder) candidates, relative to the root.
    roots : sequence of str
        Sub-folders that may hold the layout instead of the root itself (e.g. ``DUTS-TE``).
    split : str or None
        A split list (``<split>.txt``, ``<split>ImgSet.txt`` or ``<split>ImgSet.mat`` under the
        root, or a path to a list file): only its stems are read. None: every pair.
    void : int or None
        A mask value read as "unknown" (GrabCut's 128): ``void`` = 1 there, and it is neither
        foreground nor background.
    raw : bool
        Also return ``gt`` (the unresized mask, uint8 (H0, W0)) and ``name`` (the stem).

    Notes
    -----
    A sample is a dict: ``image`` (3, H, W) float32 in [-0.5, 0.5]; ``mask`` (H, W) int64, the
    foreground of the ground truth :math:`g \\in [0, 255]` (the saliency convention),

    .. math::

        m(p) = [\\, g(p) > 127 \\,] \\quad (\\text{0/1 masks: } [\\, g(p) > 0 \\,]),

    ``instances`` = ``mask`` (one object: CAS's regions); ``void`` (H, W) int64 when `void` is
    set (:math:`[g(p) = \\text{void}]`, and then :math:`m(p) = [g(p) > \\text{void}]`); ``index``
    int64.

    Examples
    --------
    >>> from pixelkernels.models.datasets import ImageMaskPairs
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for d in ("images", "ground_truth_mask"):
    ...     (root / d).mkdir()
    >>> Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(root / "images" / "0001.jpg")
    >>> gt = np.zeros((20, 30), np.uint8); gt[5:15, 10:20] = 255
    >>> Image.fromarray(gt).save(root / "ground_truth_mask" / "0001.png")
    >>> ds = ImageMaskPairs(root, (10, 15), layouts=[("images", "ground_truth_mask")])
    >>> s = ds[0]
    >>> s["image"].shape, s["mask"].dtype, int(s["mask"].sum())
    (torch.Size([3, 10, 15]), torch.int64, 25)
    """

    def __init__(self, root, size=(64, 64), *, layouts, roots=(), split=None, void=None, raw=False, name="dataset"):
        self.root, self.size, self.void, self.raw, self.name = Path(root), _size(size), void, raw, name
        tried = []
        found = None
        for base in [self.root] + [self.root / r for r in roots]:
            for imgs, masks in layouts:
                tried.append(f"{base / imgs} with {base / masks}")
                if (base / imgs).is_dir() and (base / masks).is_dir():
                    found = base, base / imgs, base / masks
                    break
            if found:
                break
        if not found:
            raise _missing(f"{name}: no image and mask folders", tried)
        self.base, self.image_dir, self.mask_dir = found
        imgs, masks = _files(self.image_dir), _files(self.mask_dir)
        stems = sorted(set(imgs) & set(masks))
        if split is not None:
            keep = self._split_stems(split)
            stems = [s for s in keep if s in imgs and s in masks]
        if not stems:
            raise FileNotFoundError(
                f"{name}: no image/mask pair with matching stems in {self.image_dir} and {self.mask_dir}")
        self.items = [(s, imgs[s], masks[s]) for s in stems]

    def _split_stems(self, split) -> list[str]:
        """The stems of a split list: a .txt path, or ``<split>.txt`` / ``<split>ImgSet.txt`` /
        ``<split>ImgSet.mat`` (a cell array of names, as HKU-IS distributes them) under the root."""
        cands = [Path(split)] if str(split).endswith((".txt", ".lst")) else []
        for base in dict.fromkeys((self.base, self.root)):
            cands += [base / f"{split}.txt", base / f"{split}ImgSet.txt", base / f"{split}ImgSet.mat"]
        for p in cands:
            if p.is_file():
                return _mat_names(p) if p.suffix == ".mat" else _split_list(p)
        raise _missing(f"{self.name}: split list {split!r}", cands)

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        stem, ip, mp = self.items[index]
        gt = _labels(mp)
        if self.void is not None:
            void = (gt == self.void).long()
            mask = ((gt > self.void) if gt.max() > 1 else (gt > 0)).long()
        else:
            mask = _binary(gt)
        mask = _resize_labels(mask, self.size)
        out = {"image": _resize_image(_rgb(ip), self.size), "mask": mask, "instances": mask.clone()}
        if self.void is not None:
            out["void"] = _resize_labels(void, self.size)
        out["index"] = torch.tensor(index)
        if self.raw:
            out |= {"gt": gt.to(torch.uint8), "name": stem}
        return out


_SOD_COMMON = (("Imgs", "GT"), ("Image", "Mask"), ("image", "mask"), ("images", "masks"), ("Images", "GT"))

SALIENCY_LAYOUTS = {
    "duts-tr": ((("DUTS-TR-Image", "DUTS-TR-Mask"),) + _SOD_COMMON, ("DUTS-TR",)),
    "duts-te": ((("DUTS-TE-Image", "DUTS-TE-Mask"),) + _SOD_COMMON, ("DUTS-TE",)),
    "ecssd": ((("images", "ground_truth_mask"),) + _SOD_COMMON, ("ECSSD",)),
    "hku-is": ((("imgs", "gt"),) + _SOD_COMMON, ("HKU-IS",)),
    "pascal-s": ((("datasets/imgs/pascal", "datasets/masks/pascal"),) + _SOD_COMMON, ("PASCAL-S",)),
    "dut-omron": ((("DUT-OMRON-image", "pixelwiseGT-new-PNG"),) + _SOD_COMMON, ("DUT-OMRON",)),
    "sod": ((("images", "GT"), ("Imgs", "GT")) + _SOD_COMMON[1:], ("SOD",)),
    "grabcut": ((("data_GT", "boundary_GT"), ("images", "masks")), ("GrabCut",)),
    "berkeley": ((("images", "masks"),), ("Berkeley",)),
}


# --- co-segmentation (IS-Triplet) ---------------------------------------------------------------


class CoSegClasses(_Reader):
    """Class folders of images, each with its ground-truth folder -> "coseg" pairs of two images
    of one class.

    The layout of the Internet dataset (Rubinstein et al., "Unsupervised joint object discovery and
    segmentation in internet images", CVPR 2013: ``PATH/Data/<Class>/*.jpg`` with
    ``PATH/Data/<Class>/GroundTruth/<stem>.png``; the 100-image subsets ``Airplane100``,
    ``Car100``, ``Horse100`` are what papers report) and of the MSRC co-segmentation subset as
    distributed alike (``PATH/<class>/*.bmp`` with ``PATH/<class>/GroundTruth/<stem>[_GT].*``).
    A ground-truth folder may be named ``GroundTruth``, ``groundtruth``, ``GT`` or ``gt``; images
    without a ground truth are skipped.

    Parameters
    ----------
    root : str or Path
        The dataset folder (``Data/`` under it is entered when present).
    size : (int, int) or None
        (H, W) of the samples; None keeps each image's size (then batch one pair).
    classes : sequence of str or None
        The class folders to read; None: every class folder with a ground-truth folder. For the
        Internet dataset, None selects the ``*100`` subsets when they are present (``subset="full"``
        the full class folders instead).
    pairs : str
        "all" or "cycle". "all": every unordered pair :math:`(i, j), i < j` of images of a class,
        :math:`\\sum_c n_c (n_c - 1) / 2` samples; "cycle": :math:`(i, i + 1 \\bmod n_c)`, each
        image twice, :math:`\\sum_c n_c` samples (evaluation of every image).
    raw : bool
        Also return ``gt_a``/``gt_b`` (unresized 0/1 uint8 masks) and ``name_a``/``name_b``.

    Notes
    -----
    A sample is a dict:
        ``image_a``, ``image_b`` (3, H, W) float32; ``mask_a``, ``mask_b`` (H, W) int64 (the
        ground truth :math:`[g > 127]`, or :math:`[g > 0]` for 0/1 masks); ``index``; and
        ``class_id`` int64 (the position of the class in ``classes``).

    Examples
    --------
    >>> from pixelkernels.models.datasets import CoSegClasses
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "Data" / "Horse100" / "GroundTruth").mkdir(parents=True)
    >>> for i in range(3):
    ...     Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "Data" / "Horse100" / f"{i}.jpg")
    ...     Image.fromarray(np.full((20, 30), 255, np.uint8)).save(root / "Data" / "Horse100" / "GroundTruth" / f"{i}.png")
    >>> ds = CoSegClasses(root, (8, 8))
    >>> len(ds), ds.classes, sorted(ds[0])
    (3, ['Horse100'], ['class_id', 'image_a', 'image_b', 'index', 'mask_a', 'mask_b'])
    """

    task = "coseg"
    GT_DIRS = ("GroundTruth", "groundtruth", "GT", "gt")

    def __init__(self, root, size=(64, 64), *, classes=None, subset="100", pairs="all", raw=False, name="coseg"):
        self.root, self.size, self.raw = Path(root), _size(size), raw
        base = self.root / "Data" if (self.root / "Data").is_dir() else self.root
        if not base.is_dir():
            raise _missing(f"{name}: no dataset folder", [self.root / "Data", self.root])
        found = {d.name: d for d in sorted(base.iterdir()) if d.is_dir() and self._gt_dir(d)}
        if subset not in ("100", "full", "all"):
            raise ValueError(f"subset must be '100', 'full' or 'all', got {subset!r}")
        if classes is None:
            hundred = [c for c in found if c.endswith("100")]
            full = [c for c in found if c not in hundred]
            classes = {"100": hundred or full, "full": full or hundred, "all": list(found)}[subset]
        if not classes:
            raise _missing(f"{name}: no class folder with a ground-truth folder",
                           [base / "<Class>" / g for g in self.GT_DIRS])
        self.classes, self.images = list(classes), []
        for c in self.classes:
            if c not in found:
                raise _missing(f"{name}: class {c!r}", [base / c / g for g in self.GT_DIRS])
            imgs, gts = _files(found[c]), _files(self._gt_dir(found[c]))
            items = []
            for stem, p in imgs.items():
                g = next((gts[k] for k in (stem, stem + "_GT", stem + "_gt", stem + "_s_GT") if k in gts), None)
                if g is not None:
                    items.append((stem, p, g))
            self.images.append(items)
        if pairs not in ("all", "cycle"):
            raise ValueError(f"pairs must be 'all' or 'cycle', got {pairs!r}")
        self.items = []
        for c, items in enumerate(self.images):
            n = len(items)
            if pairs == "all":
                self.items += [(c, i, j) for i in range(n) for j in range(i + 1, n)]
            elif n > 1:
                self.items += [(c, i, (i + 1) % n) for i in range(n)]
        if not self.items:
            raise ValueError(f"{name}: no class under {base} has 2 images with ground truth")

    def _gt_dir(self, d: Path):
        return next((d / g for g in self.GT_DIRS if (d / g).is_dir()), None)

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        c, i, j = self.items[index]
        out, raw = {}, {}
        for side, k in zip("ab", (i, j)):
            stem, ip, gp = self.images[c][k]
            gt = _binary(_labels(gp))
            out["image_" + side] = _resize_image(_rgb(ip), self.size)
            out["mask_" + side] = _resize_labels(gt, self.size)
            raw |= {"gt_" + side: gt.to(torch.uint8), "name_" + side: stem}
        out |= {"index": torch.tensor(index), "class_id": torch.tensor(c)}
        return out | raw if self.raw else out


# --- video label transfer (dense similarity) ----------------------------------------------------


class DAVIS(_Reader):
    """DAVIS 2016 / 2017 -> "frames" pairs within a sequence (training), and whole sequences with
    their first-frame mask (propagation; ``sequence``).

    Layout (Perazzi et al., "A benchmark dataset and evaluation methodology for video object
    segmentation", CVPR 2016; Pont-Tuset et al., "The 2017 DAVIS challenge on video object
    segmentation", arXiv 2017)::

        PATH/JPEGImages/480p/<seq>/00000.jpg ...
        PATH/Annotations/480p/<seq>/00000.png ...   2016: 0/255 grey; 2017: palette, index = object id
        PATH/ImageSets/2017/{train,val}.txt         one sequence per line (2016 too: ImageSets/2016/)
        PATH/ImageSets/480p/{train,val}.txt         (the DAVIS 2016 package: "image annotation" paths)

    Labels are palette indices (never colours): 0 background, 1..K the objects, 255 void (kept as
    255). ``year=2016`` reads every object as one, :math:`[l > 0]` (its own package stores the
    object as 255; the 2017 package lists the 2016 sequences in ``ImageSets/2016``).

    Parameters
    ----------
    root : str or Path
        The DAVIS folder.
    size : (int, int) or None
        (H, W) of the samples; None keeps 480p.
    year : int
        2016 or 2017.
    split : str
        "train", "val" (or "test-dev" where present): the sequences of
        ``ImageSets/<year>/<split>.txt``.
    max_gap : int or None
        A sample pairs an annotated frame :math:`t` with a frame :math:`t' \\ne t` drawn
        uniformly within :math:`|t' - t| \\le` `max_gap` of the sequence (None: anywhere in it;
        the dense-similarity paper draws two frames of a video at random), from a generator
        seeded by (`seed`, index).
    raw : bool
        Also return ``name`` ("<seq>/<frame>" of frame a).

    Notes
    -----
    A sample is a dict:
        ``image_a``, ``image_b`` (3, H, W) float32; ``labels_a``, ``labels_b`` (H, W) int64
        object ids; ``index``.

    Examples
    --------
    >>> from pixelkernels.models.datasets import DAVIS, voc_palette
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for d in ("JPEGImages/480p/cows", "Annotations/480p/cows", "ImageSets/2017"):
    ...     (root / d).mkdir(parents=True)
    >>> (root / "ImageSets/2017/train.txt").write_text("cows\\n")
    5
    >>> for t in range(3):
    ...     Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / f"JPEGImages/480p/cows/{t:05d}.jpg")
    ...     lab = Image.fromarray(np.full((20, 30), 2, np.uint8), mode="P"); lab.putpalette(voc_palette())
    ...     lab.save(root / f"Annotations/480p/cows/{t:05d}.png")
    >>> ds = DAVIS(root, (10, 15), year=2017, split="train")
    >>> len(ds), int(ds[0]["labels_a"].max()), ds.sequence("cows")["labels"].shape
    (3, 2, torch.Size([3, 10, 15]))
    """

    task = "frames"

    def __init__(self, root, size=(64, 64), *, year=2017, split="train", max_gap=None, seed=0, raw=False, name=None):
        self.root, self.size, self.year, self.raw = Path(root), _size(size), int(year), raw
        self.max_gap, self.seed = max_gap, seed
        name = name or f"davis{self.year}"
        if self.year not in (2016, 2017):
            raise ValueError(f"year must be 2016 or 2017, got {year!r}")
        jpg, ann = self.root / "JPEGImages" / "480p", self.root / "Annotations" / "480p"
        if not (jpg.is_dir() and ann.is_dir()):
            raise FileNotFoundError(f"{name}: expected " + " and ".join(str(d) for d in (jpg, ann) if not d.is_dir()))
        lists = [self.root / "ImageSets" / d / f"{split}.txt" for d in (str(self.year), "480p")]
        lst = next((p for p in lists if p.is_file()), None)
        if lst is None:
            raise _missing(f"{name}: split list {split!r}", lists)
        if lst.parent.name == "480p":  # "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png" lines
            seqs = list(dict.fromkeys(Path(l.split()[0]).parent.name for l in lst.read_text().split("\n") if l.strip()))
        else:
            seqs = _split_list(lst)
        self.sequences, self.frames, self.items = [], {}, []
        for s in seqs:
            if not (jpg / s).is_dir():
                raise _missing(f"{name}: frames of sequence {s!r}", [jpg / s])
            frames = sorted(p.stem for p in (jpg / s).glob("*.jpg"))
            annotated = {p.stem for p in (ann / s).glob("*.png")} if (ann / s).is_dir() else set()
            self.sequences.append(s)
            self.frames[s] = (frames, annotated)
            ok = [t for t, f in enumerate(frames) if f in annotated]
            if len(ok) > 1:
                self.items += [(s, t) for t in ok]
        self.jpg, self.ann = jpg, ann
        if not self.sequences:
            raise ValueError(f"{name}: {lst} lists no sequence")

    def _labels(self, seq: str, frame: str) -> torch.Tensor:
        lab = _labels(self.ann / seq / f"{frame}.png")
        if self.year == 2016:
            lab = (lab > 0).long()  # 2016: one object, 255 in its own package
        return lab

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        seq, t = self.items[index]
        frames, annotated = self.frames[seq]
        others = [u for u, f in enumerate(frames) if f in annotated and u != t]
        ok = [u for u in others if self.max_gap is None or abs(u - t) <= self.max_gap] or others
        u = ok[int(torch.randint(len(ok), (), generator=self._gen(index)))]
        out = {}
        for side, k in zip("ab", (t, u)):
            out["image_" + side] = _resize_image(_rgb(self.jpg / seq / f"{frames[k]}.jpg"), self.size)
            out["labels_" + side] = _resize_labels(self._labels(seq, frames[k]), self.size)
        out["index"] = torch.tensor(index)
        return out | {"name": f"{seq}/{frames[t]}"} if self.raw else out

    def sequence(self, seq, size="same") -> dict:
        """All frames of a sequence (by name or position) for first-frame propagation -> {"images"
        (T, 3, H, W) float32, "labels" (T, H, W) int64 (-1 where a frame has no annotation, e.g.
        test-dev), "first" (H, W) int64 (the first frame's labels), "num_objects" int, "frames"
        [str], "gt" (T, H0, W0) int64 unresized labels (-1 where none), "name" str}."""
        seq = self.sequences[seq] if isinstance(seq, int) else seq
        if seq not in self.frames:
            raise KeyError(f"no sequence {seq!r} in this split ({len(self.sequences)} sequences)")
        size = self.size if size == "same" else _size(size)
        frames, annotated = self.frames[seq]
        imgs = torch.stack([_resize_image(_rgb(self.jpg / seq / f"{f}.jpg"), size) for f in frames])
        h0, w0 = _rgb(self.jpg / seq / f"{frames[0]}.jpg").shape[-2:]
        none = torch.full((h0, w0), -1, dtype=torch.int64)
        gt = torch.stack([self._labels(seq, f) if f in annotated else none for f in frames])
        labels = torch.stack([_resize_labels(g, size) for g in gt])
        valid = gt[0][gt[0] != VOID]
        return {"images": imgs, "labels": labels, "first": labels[0],
                "num_objects": int(valid.max()) if valid.numel() else 0, "frames": frames, "gt": gt, "name": seq}


# --- few-shot interactive segmentation: PASCAL-5i ------------------------------------------------


class PascalFiveI(_Reader):
    """PASCAL-5i (Shaban et al., "One-shot learning for semantic segmentation", BMVC 2017) ->
    one-shot "episodes": a support image and mask of a class, a query image of the same class.

    Fold :math:`i \\in \\{0, 1, 2, 3\\}` holds the test classes

    .. math::

        C_i^{\\text{test}} = \\{5i + 1, \\dots, 5i + 5\\}, \\qquad
        C_i^{\\text{train}} = \\{1, \\dots, 20\\} \\setminus C_i^{\\text{test}}

    (VOC order: fold 0 aeroplane..bottle, 1 bus..cow, 2 diningtable..person, 3 pottedplant..tvmonitor).
    ``split="val"`` tests on the VOC 2012 val images with a class of the fold; ``split="train"``
    trains on the other 15 classes over VOC 2012 train and SBD (train + val) without the VOC val
    images. Layout::

        PATH/JPEGImages/<id>.jpg
        PATH/SegmentationClass/<id>.png              palette PNG: 0 background, 1..20, 255 void
        PATH/ImageSets/Segmentation/{train,val}.txt
        PATH/SegmentationClassAug/<id>.png           (optional: the 10582 "aug" grey label maps)
        SBD/dataset/cls/<id>.mat, SBD/dataset/img/<id>.jpg, SBD/dataset/{train,val}.txt
                                                     (optional, `sbd`: GTcls.Segmentation)

    Parameters
    ----------
    root : str or Path
        The VOC2012 folder (``VOCdevkit/VOC2012``).
    size : (int, int) or None
        (H, W) of the samples.
    fold : int
        0..3.
    split : str
        "train" or "val".
    sbd : str or Path or None
        The SBD folder (``benchmark_RELEASE``, holding ``dataset/``); training uses its images too.
    episodes : int or None
        The number of samples; None: one per (query image, class) pair. With a number (1000 in
        Shaban et al.'s test protocol) sample k is the pair k mod the number of pairs.
    min_pixels : int
        A class counts as present in an image when it covers at least this many pixels.
    seed : int
        Seeds the choice of the support image of each sample (with the index).
    raw : bool
        Also return ``gt`` (the query's unresized label map) and ``name`` (its id).

    Notes
    -----
    A sample is a dict:
        ``support_image``, ``image`` (3, H, W) float32; ``support_mask``, ``mask`` (H, W) int64:
        :math:`[l = c]` of the label map :math:`l`; ``other`` (H, W) int64:
        :math:`[l \\notin \\{0, c, 255\\}]` (the query's other objects); ``void`` (H, W) int64:
        :math:`[l = 255]`; ``class_id`` int64 :math:`c \\in 1..20`; ``index``.

    Examples
    --------
    >>> from pixelkernels.models.datasets import PascalFiveI, voc_palette
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    ...     (root / d).mkdir(parents=True)
    >>> for i in range(2):
    ...     Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / f"JPEGImages/im{i}.jpg")
    ...     lab = np.zeros((20, 30), np.uint8); lab[5:10, 5:10] = 1; lab[0] = 255
    ...     png = Image.fromarray(lab, mode="P"); png.putpalette(voc_palette())
    ...     png.save(root / f"SegmentationClass/im{i}.png")
    >>> (root / "ImageSets/Segmentation/val.txt").write_text("im0\\nim1\\n")
    8
    >>> ds = PascalFiveI(root, (20, 30), fold=0, split="val")
    >>> e = ds[0]
    >>> len(ds), int(e["class_id"]), int(e["mask"].sum()), int(e["void"].sum())
    (2, 1, 25, 30)
    """

    task = "episodes"

    def __init__(self, root, size=(64, 64), *, fold=0, split="train", sbd=None, episodes=None, min_pixels=0, seed=0,
                 raw=False, name="pascal5i"):  # fmt: skip
        self.root, self.size, self.fold, self.seed, self.raw = Path(root), _size(size), int(fold), seed, raw
        if self.fold not in range(4):
            raise ValueError(f"fold must be 0, 1, 2 or 3, got {fold!r}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        lists = self.root / "ImageSets" / "Segmentation"
        need = (self.root / "JPEGImages", self.root / "SegmentationClass", lists / "val.txt")
        if not all(p.exists() for p in need):
            raise FileNotFoundError(f"{name}: VOC 2012 expected " + ", ".join(str(p) for p in need if not p.exists()))
        fold_classes = set(range(5 * self.fold + 1, 5 * self.fold + 6))
        self.classes = sorted(fold_classes if split == "val" else set(range(1, 21)) - fold_classes)
        val = _split_list(lists / "val.txt")
        self.sources: dict[str, tuple[Path, Path]] = {}  # id -> (image, labels)
        if split == "val":
            for i in val:
                self.sources[i] = (self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClass" / f"{i}.png")
        else:
            held = set(val)
            if (lists / "train.txt").is_file():
                for i in _split_list(lists / "train.txt"):
                    self.sources[i] = (self.root / "JPEGImages" / f"{i}.jpg", self.root / "SegmentationClass" / f"{i}.png")
            aug = self.root / "SegmentationClassAug"
            if aug.is_dir():
                for p in sorted(aug.glob("*.png")):
                    self.sources.setdefault(p.stem, (self.root / "JPEGImages" / f"{p.stem}.jpg", p))
            if sbd is not None:
                ds = Path(sbd) / "dataset" if (Path(sbd) / "dataset").is_dir() else Path(sbd)
                if not (ds / "cls").is_dir():
                    raise _missing(f"{name}: SBD", [Path(sbd) / "dataset" / "cls"])
                for i in [p.stem for p in sorted((ds / "cls").glob("*.mat"))]:
                    img = ds / "img" / f"{i}.jpg"
                    img = img if img.is_file() else self.root / "JPEGImages" / f"{i}.jpg"
                    self.sources.setdefault(i, (img, ds / "cls" / f"{i}.mat"))
            for i in held:
                self.sources.pop(i, None)
        self.ids = sorted(self.sources)
        self.by_class: dict[int, list[int]] = {c: [] for c in self.classes}
        pairs = []
        for k, i in enumerate(self.ids):
            lab = _labels(self.sources[i][1])
            counts = torch.bincount(lab.flatten(), minlength=256)
            for c in self.classes:
                if counts[c] >= max(min_pixels, 1):
                    self.by_class[c].append(k)
                    pairs.append((k, c))
        self.pairs = [(k, c) for k, c in pairs if len(self.by_class[c]) > 1]
        if not self.pairs:
            raise ValueError(f"{name}: no class of fold {self.fold} ({split}) is in two images under {self.root}")
        self.items = self.pairs if episodes is None else [self.pairs[k % len(self.pairs)] for k in range(int(episodes))]

    def _read(self, k: int, c: int):
        ip, lp = self.sources[self.ids[k]]
        lab = _labels(lp)
        return _resize_image(_rgb(ip), self.size), _resize_labels(lab, self.size), lab

    def __getitem__(self, index: int) -> dict:
        index = self._check(index)
        k, c = self.items[index]
        others = [j for j in self.by_class[c] if j != k]
        s = others[int(torch.randint(len(others), (), generator=self._gen(index)))]
        img, lab, gt = self._read(k, c)
        simg, slab, _ = self._read(s, c)
        out = {"support_image": simg, "support_mask": (slab == c).long(), "image": img, "mask": (lab == c).long(),
               "other": ((lab != 0) & (lab != c) & (lab != VOID)).long(), "void": (lab == VOID).long(),
               "class_id": torch.tensor(c), "index": torch.tensor(index)}  # fmt: skip
        return out | {"gt": gt, "name": self.ids[k]} if self.raw else out


# --- the registry -------------------------------------------------------------------------------


class Entry(NamedTuple):
    """A dataset of ``DATASETS``: its reader class, task, the paper that evaluates on it, its
    layout (under PATH), and the reader's fixed keyword arguments."""

    reader: type
    task: str
    paper: str
    layout: str
    options: dict


_COSEG = "Li & Liu, Improving image co-segmentation via deep metric learning"
_MENET = "Zeng et al., Ro-SOS: metric expression network for robust salient object segmentation"
_CAS = "Sharma et al., Class-agnostic segmentation loss and its application to salient object detection, 2020"
_BOTH = _MENET + "; " + _CAS
_DAVIS = "Najafi et al., Similarity learning for dense label transfer, 2018"
_FEW = "Bhatia, Few-shot interactive segmentation, 2021"


def _sal(name, images, masks, paper):
    layouts, roots = SALIENCY_LAYOUTS[name]
    opts = {"layouts": layouts, "roots": roots, "name": name} | ({"void": 128} if name == "grabcut" else {})
    return Entry(ImageMaskPairs, "scene", paper, f"{images}/*  +  {masks}/*", opts)


DATASETS: dict[str, Entry] = {
    "internet": Entry(CoSegClasses, "coseg", _COSEG, "Data/<Class>/*.jpg  +  Data/<Class>/GroundTruth/*.png",
                      {"name": "internet"}),
    "msrc": Entry(CoSegClasses, "coseg", _COSEG, "<class>/*.bmp  +  <class>/GroundTruth/*",
                  {"name": "msrc", "subset": "all"}),
    "duts-tr": _sal("duts-tr", "DUTS-TR-Image", "DUTS-TR-Mask", _CAS),
    "duts-te": _sal("duts-te", "DUTS-TE-Image", "DUTS-TE-Mask", _CAS),
    "ecssd": _sal("ecssd", "images", "ground_truth_mask", _BOTH),
    "hku-is": _sal("hku-is", "imgs", "gt", _BOTH),
    "pascal-s": _sal("pascal-s", "datasets/imgs/pascal", "datasets/masks/pascal", _CAS),
    "dut-omron": _sal("dut-omron", "DUT-OMRON-image", "pixelwiseGT-new-PNG", _BOTH),
    "sod": _sal("sod", "images", "GT", _MENET),
    "davis2016": Entry(DAVIS, "frames", _DAVIS, "JPEGImages/480p/<seq>/  +  Annotations/480p/<seq>/  +  ImageSets/2016/",
                       {"year": 2016}),
    "davis2017": Entry(DAVIS, "frames", _DAVIS, "JPEGImages/480p/<seq>/  +  Annotations/480p/<seq>/  +  ImageSets/2017/",
                       {"year": 2017}),
    "pascal5i": Entry(PascalFiveI, "episodes", _FEW, "JPEGImages/  +  SegmentationClass/  +  ImageSets/Segmentation/", {}),
    "grabcut": _sal("grabcut", "data_GT", "boundary_GT", _FEW),
    "berkeley": _sal("berkeley", "images", "masks", _FEW),
}


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``"NAME:PATH?key=value&..."`` -> (name, path, options); values become int, float, bool or
    None where they read as one."""
    name, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(f"a dataset is NAME:PATH (NAME one of {sorted(DATASETS)}), got {spec!r}")
    path, _, query = rest.partition("?")
    opts = {}
    for part in filter(None, query.split("&")):
        k, eq, v = part.partition("=")
        if not eq:
            raise ValueError(f"{spec!r}: an option is key=value, got {part!r}")
        opts[k.strip().replace("-", "_")] = _value(v.strip())
    return name.strip().lower(), path, opts


def open_dataset(spec: str, size=(64, 64), split=None, **kw) -> torch.utils.data.Dataset:
    """Open a dataset of ``DATASETS`` by ``"NAME:PATH"``.

    Parameters
    ----------
    spec : str
        ``"NAME:PATH"``, optionally with reader options as a query: ``"pascal5i:/data/VOC2012?fold=1&sbd=/data/SBD"``
        (keyword arguments do the same and win).
    size : (int, int) or None
        (H, W) of the samples; None keeps each image's size.
    split : str or None
        The reader's split ("train", "val", a saliency split list); None: the reader's default
        (DAVIS and PASCAL-5i: "train"; the others: every image).
    **kw
        The reader's options (``raw``, ``seed``, ``fold``, ``pairs``, ``max_gap``, ...).

    Returns
    -------
    torch.utils.data.Dataset
        Its samples are those of its task (``DATASETS[name].task``; see
        ``pixelkernels.models.data``); batch them with ``collate``.

    Examples
    --------
    >>> from pixelkernels.models.datasets import DATASETS, collate, open_dataset
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for d in ("DUTS-TE-Image", "DUTS-TE-Mask"):
    ...     (root / d).mkdir()
    >>> for i in range(2):
    ...     Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "DUTS-TE-Image" / f"ILSVRC_{i}.jpg")
    ...     Image.fromarray(np.full((20, 30), 255 * i, np.uint8)).save(root / "DUTS-TE-Mask" / f"ILSVRC_{i}.png")
    >>> ds = open_dataset(f"duts-te:{root}", size=(16, 16))
    >>> batch = collate([ds[0], ds[1]])
    >>> DATASETS["duts-te"].task, batch["image"].shape, batch["mask"].sum((1, 2)).tolist()
    ('scene', torch.Size([2, 3, 16, 16]), [0, 256])
    """
    name, path, opts = parse_spec(spec)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: one of {sorted(DATASETS)}")
    e = DATASETS[name]
    args = dict(e.options) | opts | kw
    if split is not None:
        args["split"] = split
    return e.reader(path, size, **args)


__all__ = ["DATASETS", "DAVIS", "CoSegClasses", "Entry", "ImageMaskPairs", "PascalFiveI", "VOC_CLASSES", "collate",
           "open_dataset", "parse_spec", "voc_palette"]  # fmt: skip

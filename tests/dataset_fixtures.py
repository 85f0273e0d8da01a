"""Tiny instances of the published dataset layouts, written into a test's tmp_path in the real
file formats: JPEG / PNG / BMP via PIL, palette PNGs (mode "P", the VOC palette) for VOC and
DAVIS 2017, SBD's MATLAB ``GTcls`` structs via scipy.io.savemat, split lists as .txt.

Each writer returns the PATH to pass as ``NAME:PATH`` and a dict of what it wrote (stems,
classes, splits), from which the tests know the items a reader must find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pixelkernels.models.datasets import voc_palette

H, W = 20, 30


def _image(path: Path, seed: int, size=(H, W)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _grey(path: Path, a: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def _palette(path: Path, a: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(a.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def _box(value: int, r0: int, r1: int, c0: int, c1: int, base=None, size=(H, W)) -> np.ndarray:
    a = np.zeros(size, np.uint8) if base is None else base.copy()
    a[r0:r1, c0:c1] = value
    return a


def _lines(path: Path, names):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(n + "\n" for n in names))


# --- co-segmentation -----------------------------------------------------------------------------


def internet(tmp: Path) -> tuple[Path, dict]:
    """Data/<Class>100/*.jpg + GroundTruth/*.png (0/255 grey), and a full "Airplane" folder that
    the default 100-image subset leaves out; Car100/2.jpg has no ground truth (skipped)."""
    root = tmp / "internet"
    counts = {"Airplane100": 3, "Car100": 2, "Horse100": 2}
    for c, n in counts.items():
        for i in range(n):
            _image(root / "Data" / c / f"{i}.jpg", i)
            _grey(root / "Data" / c / "GroundTruth" / f"{i}.png", _box(255, 4, 12, 5 + i, 20))
    _image(root / "Data" / "Car100" / "2.jpg", 9)
    for i in range(2):
        _image(root / "Data" / "Airplane" / f"full{i}.jpg", i)
        _grey(root / "Data" / "Airplane" / "GroundTruth" / f"full{i}.png", _box(255, 0, 5, 0, 5))
    return root, {"counts": counts, "pairs": sum(n * (n - 1) // 2 for n in counts.values())}


def msrc(tmp: Path) -> tuple[Path, dict]:
    """<class>/<n>_<m>_s.bmp + <class>/GroundTruth/<n>_<m>_s_GT.bmp (0/1 masks)."""
    root = tmp / "msrc"
    counts = {"cow": 3, "plane": 2}
    for c, n in counts.items():
        for i in range(n):
            _image(root / c / f"1_{i}_s.bmp", i)
            _grey(root / c / "GroundTruth" / f"1_{i}_s_GT.bmp", _box(1, 2, 10, 2, 10))
    return root, {"counts": counts, "pairs": 3 + 1}


# --- saliency and the interactive benchmarks ------------------------------------------------------

SALIENCY = {  # name -> (image dir, mask dir, image ext)
    "duts-tr": ("DUTS-TR/DUTS-TR-Image", "DUTS-TR/DUTS-TR-Mask", ".jpg"),
    "duts-te": ("DUTS-TE-Image", "DUTS-TE-Mask", ".jpg"),
    "ecssd": ("images", "ground_truth_mask", ".jpg"),
    "hku-is": ("imgs", "gt", ".png"),
    "pascal-s": ("datasets/imgs/pascal", "datasets/masks/pascal", ".jpg"),
    "dut-omron": ("DUT-OMRON-image", "pixelwiseGT-new-PNG", ".jpg"),
    "sod": ("images", "GT", ".jpg"),
    "berkeley": ("images", "masks", ".jpg"),
}


def saliency(tmp: Path, name: str, n: int = 3) -> tuple[Path, dict]:
    """The image and mask folders of `name`; mask i is grey: a box of 255 (rows 4..12) over a band
    of 100 (rows 0..4, below the 128 threshold), and a box of 200 (rows 12..16) for i > 0.
    Berkeley's masks are RGB. HKU-IS also gets train.txt / test.txt split lists."""
    root = tmp / name
    imgs, masks, ext = SALIENCY[name]
    stems = [f"{name.replace('-', '')}_{i:04d}" for i in range(n)]
    fg = []
    for i, s in enumerate(stems):
        _image(root / imgs / f"{s}{ext}", i)
        gt = _box(255, 4, 12, 2, 10 + i)
        gt[0:4] = 100
        if i > 0:
            gt[12:16, 0:5] = 200
        fg.append(int((gt > 127).sum()))
        if name == "berkeley":
            (root / masks).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(gt[..., None], 3, -1)).save(root / masks / f"{s}.png")
        else:
            _grey(root / masks / f"{s}.png", gt)
    _image(root / imgs / f"unpaired{ext}", 99)  # an image without a mask: not an item
    if name == "hku-is":
        _lines(root / "train.txt", stems[:2])
        _lines(root / "test.txt", stems[2:])
    return root, {"stems": stems, "fg": fg}


def grabcut(tmp: Path) -> tuple[Path, dict]:
    """data_GT/*.jpg|.bmp + boundary_GT/*.bmp: 0 background, 128 unknown band, 255 object."""
    root = tmp / "grabcut"
    stems = ["banana1", "llama", "teddy"]
    for i, s in enumerate(stems):
        _image(root / "data_GT" / (f"{s}.bmp" if i == 1 else f"{s}.jpg"), i)
        gt = _box(128, 3, 15, 3, 25)
        gt[5:13, 5:23] = 255
        _grey(root / "boundary_GT" / f"{s}.bmp", gt)
    return root, {"stems": stems, "fg": 8 * 18, "void": 12 * 22 - 8 * 18}


# --- DAVIS -----------------------------------------------------------------------------------------

DAVIS_SEQS = {"bear": ("train", 4, 1), "camel": ("train", 3, 2), "dogs": ("val", 3, 3)}  # split, frames, objects


def davis(tmp: Path, year: int = 2017) -> tuple[Path, dict]:
    """JPEGImages/480p/<seq>/%05d.jpg + Annotations/480p/<seq>/%05d.png + ImageSets lists.

    2017: palette PNGs with object ids 1..K (the colours are the VOC palette's, so reading colours
    or greys instead of indices gives other numbers), ImageSets/2016 and /2017 name lists.
    2016 (its own package): 0/255 grey PNGs and ImageSets/480p/{train,val}.txt of
    "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png" lines."""
    root = tmp / f"davis{year}"
    for seq, (split, t, k) in DAVIS_SEQS.items():
        for f in range(t):
            _image(root / "JPEGImages" / "480p" / seq / f"{f:05d}.jpg", 10 * f + k)
            lab = np.zeros((H, W), np.uint8)
            for o in range(1, k + 1):
                lab[2 + 5 * (o - 1): 6 + 5 * (o - 1), f + 2: f + 12] = o
            p = root / "Annotations" / "480p" / seq / f"{f:05d}.png"
            _palette(p, lab) if year == 2017 else _grey(p, np.where(lab > 0, 255, 0))
    for split in ("train", "val"):
        seqs = [s for s, v in DAVIS_SEQS.items() if v[0] == split]
        if year == 2017:
            for y in ("2016", "2017"):
                _lines(root / "ImageSets" / y / f"{split}.txt", seqs)
        else:
            _lines(root / "ImageSets" / "480p" / f"{split}.txt",
                   [f"/JPEGImages/480p/{s}/{f:05d}.jpg /Annotations/480p/{s}/{f:05d}.png"
                    for s in seqs for f in range(DAVIS_SEQS[s][1])])  # fmt: skip
    return root, {"seqs": DAVIS_SEQS}


# --- PASCAL-5i -------------------------------------------------------------------------------------

# id -> (where, classes in it); a 2-px void (255) frame around every object, as in VOC
VOC = {
    "2008_000001": ("val", (1, 7)),  # fold-0 class 1, with an object of class 7 (other)
    "2008_000002": ("val", (1, 2)),
    "2008_000003": ("val", (2,)),
    "2008_000010": ("train", (6,)),
    "2008_000011": ("train", (6, 1)),  # class 1 is fold 0's: never a training episode of fold 0
    "2009_000100": ("sbd", (6,)),
    "2009_000101": ("sbd", (8,)),
    "2009_000102": ("sbd", (8,)),
    "2010_000200": ("aug", (9,)),
    "2010_000201": ("aug", (9,)),
}


def _voc_labels(classes) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    for j, c in enumerate(classes):
        c0 = 2 + 14 * j
        lab[2:14, c0:c0 + 12] = 255
        lab[4:12, c0 + 2:c0 + 10] = c
    return lab


def voc(tmp: Path) -> tuple[Path, Path, dict]:
    """VOC2012 (JPEGImages, SegmentationClass palette PNGs, ImageSets/Segmentation/{train,val}.txt,
    SegmentationClassAug grey PNGs) and SBD (dataset/img/*.jpg, dataset/cls/*.mat with
    GTcls.Segmentation, dataset/{train,val}.txt); SBD also holds a VOC val image (left out of
    training). -> (VOC root, SBD root, info)."""
    from scipy.io import savemat

    root, sbd = tmp / "VOCdevkit" / "VOC2012", tmp / "benchmark_RELEASE"
    for k, (i, (where, classes)) in enumerate(VOC.items()):
        lab = _voc_labels(classes)
        if where in ("val", "train"):
            _image(root / "JPEGImages" / f"{i}.jpg", k)
            _palette(root / "SegmentationClass" / f"{i}.png", lab)
        elif where == "aug":
            _image(root / "JPEGImages" / f"{i}.jpg", k)
            _grey(root / "SegmentationClassAug" / f"{i}.png", lab)
        if where == "sbd" or i == "2008_000001":
            _image(sbd / "dataset" / "img" / f"{i}.jpg", k)
            (sbd / "dataset" / "cls").mkdir(parents=True, exist_ok=True)
            gt = {"Segmentation": lab.astype(np.uint8), "Boundaries": np.zeros((20, 1), object),
                  "CategoriesPresent": np.array(classes, np.uint8)}
            savemat(str(sbd / "dataset" / "cls" / f"{i}.mat"), {"GTcls": gt})
    for split in ("train", "val"):
        _lines(root / "ImageSets" / "Segmentation" / f"{split}.txt", [i for i, v in VOC.items() if v[0] == split])
    _lines(sbd / "dataset" / "train.txt", [i for i, v in VOC.items() if v[0] == "sbd"])
    return root, sbd, {"ids": VOC, "object_px": 8 * 8}

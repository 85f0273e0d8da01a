"""Reference of the next-click simulator (SPEC §3.4; seed 004 §1.2 and §2.4.1): the click the
number-of-clicks (NoC) evaluation protocol of f-BRS/RITM puts next, batched.

pred, gt (B, H, W) bool; clicked, ignore (B, H, W) bool or None (None: nothing). Per image,

    FN = gt & ~pred & ~ignore,    FP = ~gt & pred & ~ignore
    D²_E(p) = squared distance from p to the nearest pixel outside E, E padded by a one-pixel
              frame of zeros (so a border pixel of E is at distance 1; exact EDT of the padded
              mask, then cropped), set to 0 where clicked
    m_FN = max D²_FN,  m_FP = max D²_FP
    positive = m_FN > m_FP;  (y, x) = first pixel in raster order where D²_E = m_E, E the chosen map

and the row is (y, x, positive) as int64; (-1, -1, -1) when m_FN = m_FP = 0 (no error pixel left
that is not clicked). This is `Clicker._get_next_click` of f-BRS and RITM
(isegm/inference/clicker.py), whose conventions it keeps:
  - `ignore` is the clickers' not_ignore_mask: ANDed into both error masks BEFORE the
    transform, so an ignored pixel counts as a non-error pixel the distance is measured to;
  - `clicked` is their not_clicked_map: multiplied onto the distance maps AFTER the transform,
    so a clicked pixel still counts as an error pixel for its neighbours' distances and is only
    kept from being chosen;
  - a tie m_FN = m_FP goes negative (`is_positive = fn_max_dist > fp_max_dist`), and the pixel
    is the first of `np.where(dt == max)`, i.e. the first in raster order.
What differs: with no error left the clickers return a negative click at (0, 0) (np.where finds
every pixel of an all-zero map); this returns (-1, -1, -1), so a finished image is visible in
the output. The maxima are compared on exact squared distances (integers, float32-exact below
2^24, i.e. distances up to 4096), which order like f-BRS's float64 scipy distances; RITM's
cv2.distanceTransform(DIST_L2, DIST_MASK_PRECISE) rounds the distance to float32, which can only
merge (not reorder) distances above about 2048 pixels.
No gradient: the output is indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distance_transform import distance_transform


def next_clicks(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    clicked: torch.Tensor | None = None,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """pred, gt (B, H, W) bool; clicked, ignore (B, H, W) bool or None -> (B, 3) int64 rows
    (y, x, is_positive), (-1, -1, -1) where no error is left."""
    B, H, W = gt.shape
    dev = gt.device
    pred, gt = pred.bool(), gt.bool()
    if H * W == 0:
        return torch.full((B, 3), -1, dtype=torch.int64, device=dev)
    fn, fp = gt & ~pred, ~gt & pred
    if ignore is not None:
        keep = ~ignore.bool()
        fn, fp = fn & keep, fp & keep
    # One transform for both error masks: (2B, H+2, W+2), the zero frame makes every padded image
    # have a target, so no +inf appears.
    err = F.pad(torch.cat([fn, fp]).to(torch.uint8), (1, 1, 1, 1))
    d2 = distance_transform(err, squared=True)[:, 1:-1, 1:-1]  # float32, exact integers
    d2 = d2.reshape(2, B, H * W)
    if clicked is not None:
        d2 = d2.masked_fill(clicked.bool().reshape(1, B, H * W), 0.0)
    m = d2.amax(dim=2)  # (2, B): m_FN, m_FP
    positive = m[0] > m[1]  # a tie goes negative, as in the clickers
    chosen = torch.where(positive[:, None], d2[0], d2[1])  # (B, H*W)
    best = torch.where(positive, m[0], m[1])
    # first index in raster order reaching the maximum (explicit, not argmax's tie rule)
    idx = torch.arange(H * W, device=dev).expand(B, H * W)
    first = torch.where(chosen == best[:, None], idx, H * W).amin(dim=1)
    out = torch.stack([first // W, first % W, positive.to(torch.int64)], dim=1)
    done = best == 0  # both maxima 0: no unclicked error pixel
    return torch.where(done[:, None], torch.full((), -1, dtype=torch.int64, device=dev), out)

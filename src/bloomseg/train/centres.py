"""The cell-centre map a model learns beside the mask: a Gaussian at each box's centre.

Touching cells merge in a binary mask, but every cell has its own box; a peak per box
centre tells the instance step how many cells a blob holds and where they are.
"""

from __future__ import annotations

import numpy as np

SIGMA_SCALE = 0.1
"""A centre's Gaussian sigma as a share of its box's width and height: two touching
cells' peaks (a box side apart) are 10 sigma apart, and overlapping cells' peaks stay
apart too (at 0.15 a model's peaks merged into ridges in dense clusters)."""


def centre_map(boxes_px: np.ndarray, y: int, x: int, height: int, width: int,
               sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """The centre target of an image region: each box's anisotropic Gaussian, peak 1,
    the maximum where Gaussians overlap.

    Args:
        boxes_px: (N, 4) centre x, y, width, height in image pixels.
        y, x: the region's top-left pixel in the image.
        height, width: the region's size.
        sigma_scale: sigma as a share of the box's width (x) and height (y).

    Returns:
        (height, width) float32 in [0, 1]; pixel (i, j) is evaluated at its centre.
    """
    out = np.zeros((height, width), np.float32)
    rows = np.arange(y, y + height) + 0.5
    cols = np.arange(x, x + width) + 0.5
    for cx, cy, w, h in boxes_px:
        sx, sy = max(sigma_scale * w, 0.5), max(sigma_scale * h, 0.5)
        # only the part within 4 sigma matters (exp(-8) < 0.0004)
        r0, r1 = np.searchsorted(rows, [cy - 4 * sy, cy + 4 * sy])
        c0, c1 = np.searchsorted(cols, [cx - 4 * sx, cx + 4 * sx])
        if r0 >= r1 or c0 >= c1:
            continue
        gy = np.exp(-0.5 * ((rows[r0:r1] - cy) / sy) ** 2)
        gx = np.exp(-0.5 * ((cols[c0:c1] - cx) / sx) ** 2)
        np.maximum(out[r0:r1, c0:c1], np.outer(gy, gx), out=out[r0:r1, c0:c1])
    return out

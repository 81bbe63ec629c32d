"""Measurements of each cell of a label image: the per-cell table.

Coordinates are pixels with the origin at the image's top-left corner: pixel (row r,
column c) covers x in [c, c+1) and y in [r, r+1), so its centre is (c + 0.5, r + 0.5),
as in QuPath and Fiji.
"""

from __future__ import annotations

import numpy as np

from bloomseg.data.boxes import touches_border

COLUMNS = ("id", "centroid_x", "centroid_y", "area", "perimeter", "equivalent_diameter",
           "eccentricity", "solidity", "bbox_x", "bbox_y", "bbox_width", "bbox_height",
           "mean_r", "mean_g", "mean_b", "touches_border")
"""One row per cell. Areas in px, lengths in px; mean R/G/B of the cell's pixels."""


def measure_cells(labels: np.ndarray, image: np.ndarray) -> list[dict]:
    """One row of :data:`COLUMNS` per cell, in label order.

    Args:
        labels: (H, W) integer labels, 0 background.
        image: (H, W, 3) uint8 RGB of the same size.

    Returns:
        Rows; ``area`` is the cell's pixel count, ``perimeter`` skimage's estimate of the
        boundary length.
    """
    from skimage.measure import regionprops

    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    h, w = labels.shape
    rows = []
    for cell in regionprops(labels, intensity_image=image):
        r0, c0, r1, c1 = cell.bbox
        cy, cx = cell.centroid
        mean = cell.intensity_mean
        rows.append({
            "id": int(cell.label), "centroid_x": round(cx + 0.5, 2), "centroid_y": round(cy + 0.5, 2),
            "area": int(cell.area), "perimeter": round(float(cell.perimeter), 2),
            "equivalent_diameter": round(float(cell.equivalent_diameter_area), 2),
            "eccentricity": round(float(cell.eccentricity), 4),
            "solidity": round(float(cell.area) / convex_area(cell.image), 4),
            "bbox_x": c0, "bbox_y": r0, "bbox_width": c1 - c0, "bbox_height": r1 - r0,
            "mean_r": round(float(mean[0]), 2), "mean_g": round(float(mean[1]), 2),
            "mean_b": round(float(mean[2]), 2),
            "touches_border": bool(touches_border(c0, r0, c1, r1, h, w)),
        })
    return rows


def convex_area(image: np.ndarray) -> int:
    """The area of a cell's convex hull, as scikit-image's ``area_convex`` counts it: the
    pixels whose centres lie in the closed hull of the midpoints of the cell's pixel
    edges. Counted row by row in whole numbers (half pixels doubled) from each row's
    first and last pixel, which hold the hull: twice as fast as drawing the hull, the
    same count.

    Args:
        image: (H, W) bool, the cell (at least one pixel).

    Returns:
        Pixels.
    """
    from scipy.spatial import ConvexHull

    rows = np.flatnonzero(image.any(1))
    ends = np.concatenate([image.argmax(1)[rows], image.shape[1] - 1 - image[:, ::-1].argmax(1)[rows]])
    r, c, side = np.tile(rows, 2), ends, np.repeat([-1, 1], len(rows))
    # a pixel's edge midpoints, doubled: above, below, and on its outer side
    y = np.concatenate([2 * r - 1, 2 * r + 1, 2 * r])
    x = np.concatenate([2 * c, 2 * c, 2 * c + side])
    key = np.unique(y * 65536 + x + 32768)  # one of each point: qhull can trip on repeats
    points = np.stack([key // 65536, key % 65536 - 32768], 1)
    hull = points[ConvexHull(points).vertices]
    a, b = hull, np.roll(hull, -1, 0)
    sloped = a[:, 0] != b[:, 0]  # a level edge's ends are those of the sloped ones beside it
    up = (a[:, 0] < b[:, 0])[:, None]  # each edge from its upper end to its lower
    a, b = np.where(up, a, b)[sloped], np.where(up, b, a)[sloped]
    level = 2 * np.arange(-(-hull[:, 0].min() // 2), hull[:, 0].max() // 2 + 1)[:, None]
    crosses = (a[:, 0] <= level) & (level <= b[:, 0])
    rise = b[:, 0] - a[:, 0]
    # the edge's doubled x at each row is num / rise: the pixel columns within, exactly
    num = a[:, 1] * rise + (level - a[:, 0]) * (b[:, 1] - a[:, 1])
    big = np.iinfo(np.int64).max
    first = np.where(crosses, -(-num // (2 * rise)), big).min(1)
    last = np.where(crosses, num // (2 * rise), -big).max(1)
    return int(np.maximum(last - first + 1, 0).sum())

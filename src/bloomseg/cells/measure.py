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
            "solidity": round(float(cell.solidity), 4),
            "bbox_x": c0, "bbox_y": r0, "bbox_width": c1 - c0, "bbox_height": r1 - r0,
            "mean_r": round(float(mean[0]), 2), "mean_g": round(float(mean[1]), 2),
            "mean_b": round(float(mean[2]), 2),
            "touches_border": bool(touches_border(c0, r0, c1, r1, h, w)),
        })
    return rows

"""The per-cell table."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.cells.measure import COLUMNS, measure_cells


def test_measurements_of_known_shapes():
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 10:30] = 1      # 10 x 20 rectangle
    yy, xx = np.mgrid[:30, :40]
    labels[((yy - 22) ** 2 + (xx - 8) ** 2 <= 16) & (labels == 0)] = 2
    labels[25:30, 35:40] = 3     # in the corner: touches the border
    image = np.zeros((30, 40, 3), np.uint8)
    image[labels == 1] = (200, 100, 50)
    rows = measure_cells(labels, image)
    assert [tuple(r) for r in rows] == [COLUMNS] * 3
    a, b, c = rows
    assert [r["area"] for r in rows] == [int((labels == i).sum()) for i in (1, 2, 3)]
    assert (a["centroid_x"], a["centroid_y"]) == (20.0, 10.0)  # pixel centres 10.5..29.5
    assert (a["bbox_x"], a["bbox_y"], a["bbox_width"], a["bbox_height"]) == (10, 5, 20, 10)
    assert (a["mean_r"], a["mean_g"], a["mean_b"]) == (200, 100, 50)
    assert a["solidity"] == 1.0 and a["eccentricity"] == pytest.approx(np.sqrt(1 - 1 / 4), abs=0.02)
    assert b["equivalent_diameter"] == pytest.approx(2 * np.sqrt(b["area"] / np.pi), abs=0.01)
    assert [r["touches_border"] for r in rows] == [False, False, True]


def test_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        measure_cells(np.zeros((5, 5), np.int32), np.zeros((5, 6, 3), np.uint8))


def test_convex_area_counts_as_scikit_image_does():
    from skimage.morphology import convex_hull_image

    from bloomseg.cells.measure import convex_area

    rng = np.random.default_rng(0)
    shapes = [np.ones((1, 1), bool), np.ones((1, 7), bool), np.eye(6, dtype=bool)]
    shapes += [rng.random((rng.integers(1, 15), rng.integers(1, 15))) < rng.random()
               for _ in range(300)]
    yy, xx = np.mgrid[:41, :57]
    shapes.append((yy - 20) ** 2 / 400 + (xx - 28) ** 2 / 784 <= 1)  # an ellipse
    for shape in (s for s in shapes if s.any()):
        assert convex_area(shape) == convex_hull_image(shape).sum()

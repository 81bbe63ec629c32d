"""Overlays and error maps."""

from __future__ import annotations

import numpy as np

from bloomseg.figures import error_map, outline, overlay


def test_outline_is_the_border_of_a_square():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    border = outline(mask)
    assert border.sum() == 16 and not border[2:5, 2:5].any() and border[1, 1:6].all()


def test_overlay_tints_cells_only():
    image = np.full((5, 5, 3), 100, np.uint8)
    mask = np.zeros((5, 5), bool)
    out = overlay(image, mask)
    np.testing.assert_array_equal(out, image)
    mask[:, :] = True
    assert overlay(image, mask)[2, 2].tolist() == [70, 146, 70]  # 0.7 * 100 + 0.3 * colour


def test_error_map_colours():
    pred = np.array([[1, 1, 0, 0]], bool)
    target = np.array([[1, 0, 1, 0]], bool)
    assert error_map(pred, target).tolist() == [[[0, 255, 0], [255, 0, 0], [0, 0, 255], [0, 0, 0]]]

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


def test_label_overlay_blends_each_cell_and_outlines_it():
    from skimage.segmentation import find_boundaries

    from bloomseg.figures import label_overlay

    rng = np.random.default_rng(0)
    labels = np.zeros((40, 50), np.int32)
    labels[5:20, 5:25], labels[10:30, 25:45], labels[32:38, 2:8] = 1, 2, 3  # 1 and 2 touch
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, (3, 3), dtype=np.uint8)
    out = label_overlay(image, labels, colours=colours)
    # as first written: each cell's pixels blended in float32, its outline in its colour
    blended = image.astype(np.float32)
    cells = labels > 0
    colour = np.concatenate([np.zeros((1, 3), np.uint8), colours])[labels].astype(np.float32)
    blended[cells] = 0.75 * blended[cells] + 0.25 * colour[cells]
    edges = find_boundaries(labels, mode="inner") & cells
    blended[edges] = colour[edges]
    np.testing.assert_array_equal(out, blended.round().astype(np.uint8))
    assert (out[~cells] == image[~cells]).all() and out[20, 25].tolist() == colours[1].tolist()

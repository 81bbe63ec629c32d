"""Pixel Dice and IoU on masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.evaluation.pixels import PixelCounts


def test_known_overlap():
    target = np.zeros((4, 4), bool)
    target[:2] = True  # 8 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True  # 8 pixels, 4 of them right
    counts = PixelCounts.of(pred, target)
    assert (counts.tp, counts.fp, counts.fn) == (4, 4, 4)
    assert counts.dice == pytest.approx(0.5)
    assert counts.iou == pytest.approx(1 / 3)


def test_counts_add_over_images_pixel_weighted():
    big = PixelCounts.of(np.ones((10, 10), bool), np.ones((10, 10), bool))
    small = PixelCounts.of(np.zeros((1, 2), bool), np.ones((1, 2), bool))
    total = big + small
    assert total.dice == pytest.approx(200 / 202)
    assert total.iou == pytest.approx(100 / 102)


def test_empty_masks_agree_perfectly_and_sizes_must_match():
    empty = PixelCounts.of(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert (empty.dice, empty.iou) == (1.0, 1.0)
    with pytest.raises(ValueError, match="differ in size"):
        PixelCounts.of(np.zeros((3, 3), bool), np.zeros((3, 4), bool))

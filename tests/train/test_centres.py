"""The centre-map target: Gaussians at box centres."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.data.boxes import yolo_to_cxcywh
from bloomseg.train.centres import SIGMA_SCALE, centre_map


def test_a_gaussian_per_box_peaks_at_its_centre():
    boxes = np.array([[20.5, 10.5, 10, 10], [60.5, 30.5, 20, 10]])  # cx, cy, w, h
    heat = centre_map(boxes, 0, 0, 50, 80)
    assert heat.shape == (50, 80) and heat.dtype == np.float32
    assert heat[10, 20] == pytest.approx(1.0) and heat[30, 60] == pytest.approx(1.0)
    # sigma = SIGMA_SCALE x the box side on each axis: two sigma off, exp(-2)
    assert heat[10, 20 + round(SIGMA_SCALE * 10 * 2)] == pytest.approx(np.exp(-0.5 * 4), abs=1e-6)
    assert heat[30, 60 + round(SIGMA_SCALE * 20)] == pytest.approx(np.exp(-0.5), abs=1e-6)  # one sigma
    assert heat[45, 5] < 1e-6 and heat.max() <= 1


def test_a_region_is_a_crop_of_the_whole_map():
    boxes = np.array([[13.0, 17.0, 12, 16], [30.0, 5.0, 8, 8]])
    whole = centre_map(boxes, 0, 0, 40, 50)
    np.testing.assert_allclose(centre_map(boxes, 10, 20, 25, 30), whole[10:35, 20:50], atol=1e-7)


def test_overlapping_gaussians_take_the_maximum():
    boxes = np.array([[10.5, 10.5, 20, 20], [14.5, 10.5, 20, 20]])
    both = centre_map(boxes, 0, 0, 21, 30)
    one = [centre_map(b[None], 0, 0, 21, 30) for b in boxes]
    np.testing.assert_array_equal(both, np.maximum(*one))


def test_yolo_boxes_to_pixels():
    rows = np.array([[0, 0.5, 0.25, 0.1, 0.2]])
    np.testing.assert_allclose(yolo_to_cxcywh(rows, 100, 200), [[100, 25, 20, 20]])

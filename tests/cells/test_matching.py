"""Cell matching: exact counts for drawn shapes with known overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.cells.matching import MaskMatch, box_iou, cell_boxes, label_iou, match_boxes, match_masks
from bloomseg.data.boxes import yolo_to_xyxy


def squares(shape, boxes):
    """A label image with label i+1 filling box i = (x0, y0, x1, y1)."""
    labels = np.zeros(shape, np.int32)
    for i, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = i
    return labels


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.5]])


def test_cell_boxes_and_border():
    labels = squares((40, 50), [(0, 5, 10, 15), (20, 20, 30, 30), (40, 30, 50, 40)])
    boxes, border = cell_boxes(labels)
    np.testing.assert_array_equal(boxes, [[0, 5, 10, 15], [20, 20, 30, 30], [40, 30, 50, 40]])
    assert border.tolist() == [True, False, True]


def test_match_boxes_counts():
    # predicted: A matches exactly, B overlaps its truth at IoU 1/3 (a miss), C has no
    # truth (a false positive), D touches the border with no truth (ignored)
    labels = squares((100, 100), [(10, 10, 30, 30), (50, 10, 70, 30), (10, 60, 30, 80),
                                  (80, 90, 95, 100)])
    truth = np.array([[10, 10, 30, 30], [60, 10, 80, 30], [50, 60, 70, 80]], float)
    m = match_boxes(labels, truth)
    assert (m.tp, m.fp, m.fn, m.ignored, m.strict_fp) == (1, 2, 2, 1, 3)
    assert m.precision == pytest.approx(1 / 3) and m.recall == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(2 / 6) and m.strict_f1 == pytest.approx(2 / 7)
    assert (m.predicted, m.true, m.count_error) == (3, 3, 0)  # D touches the border
    assert m.relative_count_error == 0


def test_match_boxes_is_one_to_one_and_maximises_iou():
    # two predictions overlap one truth; only one may match it, the better one
    labels = squares((50, 60), [(10, 10, 30, 30), (12, 10, 32, 30)])
    m = match_boxes(labels, np.array([[12, 10, 32, 30]], float))
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)


def test_empty_cases():
    m = match_boxes(np.zeros((10, 10), np.int32), np.zeros((0, 4)))
    assert (m.tp, m.fp, m.fn, m.f1, m.relative_count_error) == (0, 0, 0, 1.0, 0.0)
    m = match_boxes(np.zeros((10, 10), np.int32), np.array([[1, 1, 5, 5]], float))
    assert (m.fn, m.f1, m.relative_count_error) == (1, 0.0, 1.0)


def test_yolo_to_xyxy():
    rows = np.array([[0, 0.5, 0.5, 0.2, 0.4]])
    np.testing.assert_allclose(yolo_to_xyxy(rows, 100, 200), [[80, 30, 120, 70]])


def test_mask_matching_with_known_overlaps():
    true = squares((40, 40), [(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30)])
    # label 7 equals true 1; label 3 covers true 2 shifted by 4 px (IoU 60/140 < 0.5);
    # label 5 covers true 3 shifted by 2 px (IoU 80/120 = 2/3)
    pred = squares((40, 40), [(0, 0, 10, 10)]) * 7
    pred[0:10, 24:34] = 3
    pred[22:32, 0:10] = 5
    iou = label_iou(squares((40, 40), [(0, 0, 10, 10)]), true)
    np.testing.assert_allclose(iou, [[1, 0, 0]])
    m = match_masks(pred, true)
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    assert m.sum_iou == pytest.approx(1 + 2 / 3)
    assert m.panoptic_quality == pytest.approx((1 + 2 / 3) / 3)
    assert m.f1 == pytest.approx(2 / 3)
    total = m + MaskMatch(1, 0, 0, 1.0)
    assert (total.tp, total.sum_iou) == (3, pytest.approx(8 / 3))
    with pytest.raises(ValueError, match="differ in size"):
        match_masks(pred, true[:10])

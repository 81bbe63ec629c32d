import numpy as np

from bloomseg.data.boxes import BOX_MARGIN, box_diameters, touches_border, xyxy_to_yolo_lines


def _yolo(xyxy: list[tuple[float, float, float, float]], h: int, w: int) -> np.ndarray:
    lines = xyxy_to_yolo_lines(np.array(xyxy, float), h, w, label=1)
    return np.array([[float(v) for v in line.split()] for line in lines.splitlines()])


def test_box_diameters_leave_out_boxes_that_stop_short_of_the_border():
    h, w = 200, 300
    boxes = _yolo([(50, 50, 90, 110),            # whole: (40 + 60) / 2
                   (1.5, 80, 31.5, 140),          # cut on the left, 1.5 px short of it
                   (120, 2 + BOX_MARGIN, 170, 52),  # 4 px in: whole, (50 + 48) / 2
                   (200, 100, 298.8, 160)], h, w)  # cut on the right, 1.2 px short
    np.testing.assert_allclose(box_diameters(boxes, h, w), [50.0, 49.0], atol=1e-3)


def test_label_boxes_touch_only_at_the_border():
    # slices of a label image: exact pixels, so only a box on the border is cut
    assert touches_border(0, 5, 10, 20, 100, 100)
    assert touches_border(3, 5, 100, 20, 100, 100)
    assert not touches_border(1, 1, 99, 99, 100, 100)
    assert touches_border(1, 1, 99, 99, 100, 100, margin=BOX_MARGIN)
    np.testing.assert_array_equal(
        touches_border(np.array([0, 4]), np.array([4, 4]), np.array([9, 9]),
                       np.array([9, 9]), 100, 100, margin=2), [True, False])

"""Cell boxes: the YOLO files datasets hold, and every conversion between box forms.

A YOLO row is (class, cx, cy, w, h) with the last four as fractions of the image's width
and height. Pixel boxes are x0, y0, x1, y1 (x1, y1 exclusive) with the origin at the
image's top-left corner, or centre x, y and width, height in pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.errors import DataError


def read_boxes(path: str | Path) -> np.ndarray:
    """Cell boxes of one image from a YOLO text file.

    Returns:
        (N, 5) float64 array: class, cx, cy, w, h with the last four as fractions of
        the image's width and height. Blank lines are ignored.

    Raises:
        DataError: naming the file and line of any malformed entry.
    """
    path = Path(path)
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read box file ({e})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        ok = (len(values) == 5 and values[0] >= 0 and values[0] == int(values[0])
              and all(np.isfinite(values)) and all(0 <= v <= 1 for v in values[1:])
              and values[3] > 0 and values[4] > 0)
        if not ok:
            raise DataError(
                f"{path} line {number}: expected 'class cx cy w h' (class a whole number, the "
                f"rest fractions in [0, 1], sizes > 0), got {line.strip()!r}"
            )
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def yolo_to_xyxy(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """YOLO rows -> (N, 4) x0, y0, x1, y1 pixels of an image of the given size."""
    cx, cy = boxes[:, 1] * width, boxes[:, 2] * height
    bw, bh = boxes[:, 3] * width, boxes[:, 4] * height
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).reshape(-1, 4)


def labels_to_yolo(labels: np.ndarray) -> np.ndarray:
    """Instance labels (H, W), cells 1..N -> (M, 5) YOLO rows of class 0, each cell's
    bounding box (pixel edges), in label order (numbers without a cell skipped)."""
    from scipy import ndimage

    h, w = labels.shape
    rows = [(0, (b[1].start + b[1].stop) / 2 / w, (b[0].start + b[0].stop) / 2 / h,
             (b[1].stop - b[1].start) / w, (b[0].stop - b[0].start) / h)
            for b in ndimage.find_objects(np.asarray(labels, np.int64)) if b is not None]
    return np.array(rows, np.float64).reshape(-1, 5)


def yolo_to_cxcywh(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """YOLO rows -> (N, 4) centre x, y and width, height in pixels."""
    scale = np.array([width, height, width, height], np.float64)
    return boxes[:, 1:5] * scale


BOX_MARGIN = 2.0
"""px: an annotated box that stops this close to the image's border boxes a cut cell.
Annotators stop a cut cell's box a pixel or two short of the border: on TXL-PBC's train
crops the red boxes within 2 px of it are as elongated as those on it (median aspect
1.5-1.6, against 1.1 for the boxes further in), and counting them as whole made an
image's median cell diameter 5% too small in the median, over 10% in 1 crop of 6."""


def box_diameters(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(M,) px: the diameter of each YOLO box's cell, the mean of the box's width and
    height, for the boxes of whole cells (none within :data:`BOX_MARGIN` of the image's
    border: a cut cell's box is smaller than the cell)."""
    xyxy = yolo_to_xyxy(boxes, height, width)
    whole = ~touches_border(*xyxy.T, height, width, margin=BOX_MARGIN)
    return ((xyxy[:, 2] - xyxy[:, 0] + xyxy[:, 3] - xyxy[:, 1]) / 2)[whole]


def ellipse_areas(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N,) px: the area of the ellipse inscribed in each YOLO box, comparable with a
    round cell's pixel area."""
    return np.pi / 4 * boxes[:, 3] * width * boxes[:, 4] * height


def xyxy_to_yolo_lines(boxes: np.ndarray, height: int, width: int, label: int = 0) -> str:
    """Pixel boxes (N, 4) x0, y0, x1, y1 -> YOLO text lines of class ``label``, each box
    clipped to the image (boxes left empty by the clipping are dropped)."""
    lines = []
    for x0, y0, x1, y1 in boxes:
        x0, x1 = max(0.0, x0), min(float(width), x1)
        y0, y1 = max(0.0, y0), min(float(height), y1)
        if x1 > x0 and y1 > y0:
            lines.append(f"{label} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "\n".join(lines) + "\n"


Coordinate = float | np.ndarray


def touches_border(x0: Coordinate, y0: Coordinate, x1: Coordinate, y1: Coordinate,
                   height: int, width: int, margin: float = 0.0) -> bool | np.ndarray:
    """Whether boxes (pixel x0, y0, x1, y1 with x1, y1 exclusive; scalars or (N,) arrays)
    reach the image's border: the one rule for a cell cut by the border, whose count and
    size are partial.

    Args:
        margin: px; a box this close to the border counts as reaching it. 0 for the
            exact boxes of label images; :data:`BOX_MARGIN` for annotated boxes.
    """
    return ((x0 <= margin) | (y0 <= margin) | (x1 >= width - margin)
            | (y1 >= height - margin))

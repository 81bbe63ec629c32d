"""Scoring cells one by one: predicted cells matched to true boxes or true label masks.

Box matching (the data's ground truth for separating cells): each predicted cell's
bounding box is matched one-to-one to the true boxes by the Hungarian method on IoU;
pairs at IoU >= 0.5 are true positives. BBBC041's annotators boxed few of the cells that
the image border cuts (23 of 118 in ../shared/data test), so a predicted cell touching
the border that matches no box is ignored rather than called a false positive; counts
compare the cells that do not touch the border with the boxes. ``strict`` scores keep
every predicted cell.

Mask matching (where true instance labels exist) follows stardist's matching: label
IoU from pixel overlaps, one-to-one at IoU >= 0.5, and panoptic quality
PQ = sum of matched IoUs / (TP + FP/2 + FN/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bloomseg.data.boxes import touches_border


def cell_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of the cells of a label image.

    Args:
        labels: (H, W) integer labels, 0 background, cells 1..N (sequential).

    Returns:
        (N, 4) float x0, y0, x1, y1 in pixels (x1, y1 exclusive), and (N,) bool: the
        cell touches the image border.
    """
    from scipy import ndimage

    h, w = labels.shape
    slices = ndimage.find_objects(labels)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] if s is not None
                      else [0, 0, 0, 0] for s in slices], np.float64).reshape(-1, 4)
    border = touches_border(*boxes.T, h, w)
    return boxes, border & (boxes[:, 2] > boxes[:, 0])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) x0, y0, x1, y1 boxes -> (N, M) intersection over union."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _one_to_one(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Hungarian matching maximising total IoU; pairs below ``threshold`` are dropped."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


def _ratio(a: float, b: float) -> float:
    return a / b if b else 1.0  # nothing to find and nothing found is perfect


class _Scores:
    """Precision, recall and F1 of anything with ``tp``, ``fp`` and ``fn``."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclass
class BoxMatch(_Scores):
    """Predicted cells of one image against its true boxes.

    Attributes:
        tp, fp, fn: matched cells, unmatched predicted cells (not counting ignored
            ones), unmatched boxes.
        ignored: unmatched predicted cells touching the image border.
        predicted: cells that do not touch the border (the image's cell count).
        true: boxes.
        strict_fp: unmatched predicted cells, border or not.
    """

    tp: int
    fp: int
    fn: int
    ignored: int
    predicted: int
    true: int
    strict_fp: int

    @property
    def strict_precision(self) -> float:
        return _ratio(self.tp, self.tp + self.strict_fp)

    @property
    def strict_f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.strict_fp + self.fn)

    @property
    def count_error(self) -> int:
        """Predicted minus true count."""
        return self.predicted - self.true

    @property
    def relative_count_error(self) -> float:
        """|predicted - true| / true (0 where both are 0)."""
        return abs(self.count_error) / self.true if self.true else float(self.predicted > 0)


def total_boxes(matches: list[BoxMatch]) -> BoxMatch:
    """The sums of several images' box matches."""
    return BoxMatch(*(sum(getattr(m, f) for m in matches) for f in
                      ("tp", "fp", "fn", "ignored", "predicted", "true", "strict_fp")))


def box_pairs(boxes: np.ndarray, true_boxes: np.ndarray, threshold: float = 0.5
              ) -> list[tuple[int, int]]:
    """One-to-one matches of predicted cells' boxes to true boxes (Hungarian on IoU).

    Args:
        boxes: (N, 4) x0, y0, x1, y1 of the cells (:func:`cell_boxes`).
        true_boxes: (M, 4) x0, y0, x1, y1.
        threshold: smallest IoU of a match.

    Returns:
        (cell index, box index) pairs.
    """
    return _one_to_one(box_iou(boxes, true_boxes), threshold)


def match_boxes(labels: np.ndarray, true_boxes: np.ndarray, threshold: float = 0.5) -> BoxMatch:
    """Match the cells of a label image to true boxes.

    Args:
        labels: (H, W) cell labels 1..N, 0 background.
        true_boxes: (M, 4) x0, y0, x1, y1 pixels.
        threshold: smallest IoU of a match.
    """
    boxes, border = cell_boxes(labels)
    pairs = box_pairs(boxes, true_boxes, threshold)
    matched = np.zeros(len(boxes), bool)
    matched[[r for r, _ in pairs]] = True
    ignored = int((~matched & border).sum())
    tp = len(pairs)
    return BoxMatch(tp=tp, fp=len(boxes) - tp - ignored, fn=len(true_boxes) - tp, ignored=ignored,
                    predicted=int((~border).sum()), true=len(true_boxes), strict_fp=len(boxes) - tp)


@dataclass
class MaskMatch(_Scores):
    """Predicted cells against true instance labels (stardist-style), summable over images.

    Attributes:
        tp, fp, fn: matched predicted cells, unmatched predicted cells, unmatched true cells.
        sum_iou: total IoU of the matched pairs.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    sum_iou: float = 0.0

    def __add__(self, other: MaskMatch) -> MaskMatch:
        return MaskMatch(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                         self.sum_iou + other.sum_iou)

    @property
    def panoptic_quality(self) -> float:
        """Segmentation quality (mean matched IoU) times recognition quality (F1)."""
        return _ratio(self.sum_iou, self.tp + self.fp / 2 + self.fn / 2)


def label_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(P, T) IoU between the cells of two label images of one size (labels 1..P, 1..T)."""
    p, t = int(pred.max(initial=0)), int(true.max(initial=0))
    overlap = np.bincount(pred.ravel().astype(np.int64) * (t + 1) + true.ravel(),
                          minlength=(p + 1) * (t + 1)).reshape(p + 1, t + 1)
    area_p, area_t = overlap.sum(axis=1), overlap.sum(axis=0)
    inter = overlap[1:, 1:].astype(np.float64)
    union = area_p[1:, None] + area_t[None, 1:] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_masks(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> MaskMatch:
    """Match predicted to true instance labels of one image at IoU >= ``threshold``."""
    if pred.shape != true.shape:
        raise ValueError(f"label images differ in size: {pred.shape} and {true.shape}")
    from skimage.segmentation import relabel_sequential

    pred = relabel_sequential(pred)[0]
    true = relabel_sequential(true)[0]
    iou = label_iou(pred, true)
    pairs = _one_to_one(iou, threshold)
    tp = len(pairs)
    return MaskMatch(tp, iou.shape[0] - tp, iou.shape[1] - tp,
                     float(sum(iou[r, c] for r, c in pairs)))

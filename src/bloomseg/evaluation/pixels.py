"""Pixel metrics of binary cell masks: counts that add up over images, Dice and IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PixelCounts:
    """True/false positive, false negative and true negative pixel counts of "cell".

    Counts add up over images (``a + b``), so Dice and IoU of a whole split weigh every
    pixel once rather than every image once.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, pred: np.ndarray, target: np.ndarray) -> PixelCounts:
        """Counts of a predicted and a true mask, both (H, W) bool."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and mask {target.shape} differ in size")
        pred, target = pred.astype(bool), target.astype(bool)
        tp = int(np.count_nonzero(pred & target))
        fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(target)) - tp
        return cls(tp, fp, fn, pred.size - tp - fp - fn)

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                           self.tn + other.tn)

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when both masks are empty."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); 1.0 when both masks are empty."""
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else 1.0


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def pixel_scores(counts: PixelCounts) -> dict:
    """The reference's metrics from confusion counts: IoU, Dice, precision and recall of
    background and cell and their means, accuracy, and F1 (of cell, equal to its Dice)."""
    classes = {"background": (counts.tn, counts.fn, counts.fp),  # background's own tp, fp, fn
               "cell": (counts.tp, counts.fp, counts.fn)}
    out: dict = {}
    for metric, formula in (("iou", lambda tp, fp, fn: _ratio(tp, tp + fp + fn)),
                            ("dice", lambda tp, fp, fn: _ratio(2 * tp, 2 * tp + fp + fn)),
                            ("precision", lambda tp, fp, fn: _ratio(tp, tp + fp)),
                            ("recall", lambda tp, fp, fn: _ratio(tp, tp + fn))):
        values = {name: formula(*c) for name, c in classes.items()}
        out[metric] = values | {"mean": sum(values.values()) / len(values)}
    total = counts.tp + counts.fp + counts.fn + counts.tn
    out["accuracy"] = _ratio(counts.tp + counts.tn, total)
    out["f1"] = out["dice"]["cell"]
    return out

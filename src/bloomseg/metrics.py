"""Pixel metrics of binary cell masks: counts that add up over images, Dice and IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PixelCounts:
    """True/false positive and false negative pixel counts (true negatives are not needed).

    Counts add up over images (``a + b``), so Dice and IoU of a whole split weigh every
    pixel once rather than every image once.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @classmethod
    def of(cls, pred: np.ndarray, target: np.ndarray) -> "PixelCounts":
        """Counts of a predicted and a true mask, both (H, W) bool."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {pred.shape} and mask {target.shape} differ in size")
        pred, target = pred.astype(bool), target.astype(bool)
        tp = int(np.count_nonzero(pred & target))
        return cls(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(target)) - tp)

    def __add__(self, other: "PixelCounts") -> "PixelCounts":
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

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

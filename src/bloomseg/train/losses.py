"""Segmentation losses on cell logits.

Every mask loss takes ``logits`` and ``target`` of shape (B, 1, H, W): raw scores for
"cell" and a float 0/1 mask. Binary cross-entropy is the two-class cross-entropy written
for one logit, so ``ce`` is it.

Where an image has boxes and no mask, :func:`box_loss` learns the mask from the boxes
(after BoxInst, Tian et al. CVPR 2021): each line of a box crosses its cell, so the
largest cell score along each of its rows and columns must say "cell" (the projection
term); where the boxes hold every cell, what lies outside them is background;
neighbouring pixels of like colour inside a box take the same label (the pairwise term),
so that the mask's edge follows the cell's, not the box's; and the middle of a box is
cell (the interior term: a red cell's pale centre is as light as the background, and
the other terms let a ring satisfy them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomseg.train.config import LOSSES


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice per image, averaged over the batch.

    ``smooth`` keeps the loss defined (and 0) for an empty prediction of an empty mask.
    """
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(dim=1)
    total = prob.sum(dim=1) + target.sum(dim=1)
    return (1 - (2 * overlap + smooth) / (total + smooth)).mean()


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-bce)  # probability given to the true class
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * (1 - p_true) ** gamma * bce).mean()


class SegmentationLoss(nn.Module):
    """A named loss: ``bce_dice``, ``ce``, ``dice`` or ``focal``.

    Args:
        name: which loss.
        bce_weight, dice_weight: the mix for ``bce_dice`` (reference: 0.5 / 0.5).
    """

    NAMES = LOSSES

    def __init__(self, name: str = "bce_dice", bce_weight: float = 0.5, dice_weight: float = 0.5):
        super().__init__()
        if name not in self.NAMES:
            raise ValueError(f"unknown loss {name!r}; choose from {', '.join(self.NAMES)}")
        self.name, self.bce_weight, self.dice_weight = name, bce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """(B, 1, H, W) logits and 0/1 target -> scalar loss."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        target = target.to(logits.dtype)
        if self.name == "dice":
            return dice_loss(logits, target)
        if self.name == "focal":
            return focal_loss(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        if self.name == "ce":
            return bce
        return self.bce_weight * bce + self.dice_weight * dice_loss(logits, target)


INTERIOR = 0.5
"""The interior term's ellipse: centred in the box, its axes this share of the box's. A
round or oval cell (or a segment of one cut by the image's edge) holds it."""
PAIR_OFFSETS = ((0, 2), (2, 0), (2, 2), (2, -2))
"""(dy, dx): the neighbours the pairwise term compares, two pixels apart (each pair once;
BoxInst's dilated 8-neighbourhood)."""
PAIR_THETA = 2.0
"""Colour similarity exp(-|delta Lab| / theta)."""
PAIR_MIN_SIMILARITY = 0.3
"""Pairs at least this alike must share a label (BoxInst's tau)."""


@dataclass
class BoxTarget:
    """What an input's boxes say of its mask.

    Attributes:
        boxes: (N, 4) int x0, y0, x1, y1 in the input's pixels (clipped to it).
        rows: (N,) bool: each row of the box crosses its cell (false where the box is
            cut at its left or right: the cell may cross a row outside the input).
        cols: (N,) bool: each column of the box crosses its cell.
        background: (H, W) bool, pixels known to hold no cell (outside every box, inside
            the image), or None where the boxes may not hold every cell.
    """

    boxes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    background: np.ndarray | None


def projection_loss(logits: Tensor, target: BoxTarget) -> Tensor | None:
    """Mean over boxes of the cross-entropy of each box line's largest score against
    "cell" (None: no box line to learn from).

    Args:
        logits: (H, W) cell logits of one input.
    """
    terms = []
    for (x0, y0, x1, y1), rows, cols in zip(target.boxes, target.rows, target.cols):
        crop = logits[y0:y1, x0:x1]
        lines = ([crop.amax(dim=1)] if rows else []) + ([crop.amax(dim=0)] if cols else [])
        if lines:
            terms.append(F.softplus(-torch.cat(lines)).mean())
    return torch.stack(terms).mean() if terms else None


def interior_loss(logits: Tensor, target: BoxTarget) -> Tensor | None:
    """Mean over the boxes whole in the input of the cross-entropy of their middle
    (the :data:`INTERIOR` ellipse) against "cell" (None: no such box).

    Args:
        logits: (H, W) cell logits of one input.
    """
    terms = []
    for (x0, y0, x1, y1), rows, cols in zip(target.boxes, target.rows, target.cols):
        if not (rows and cols) or x1 - x0 < 2 or y1 - y0 < 2:
            continue  # a box cut by the input need not hold its ellipse
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        ry, rx = INTERIOR * (y1 - y0) / 2, INTERIOR * (x1 - x0) / 2
        inside = ((yy - (y0 + y1) / 2) / ry) ** 2 + ((xx - (x0 + x1) / 2) / rx) ** 2 <= 1
        if inside.any():
            terms.append(F.softplus(-logits[y0:y1, x0:x1][torch.from_numpy(inside)]).mean())
    return torch.stack(terms).mean() if terms else None


def pairwise_loss(logits: Tensor, rgb: np.ndarray, inside: Tensor) -> Tensor | None:
    """Mean of -log P(same label) over neighbouring pixel pairs of like colour inside
    the boxes (None: no such pair).

    Args:
        logits: (H, W) cell logits.
        rgb: (H, W, 3) uint8, the input.
        inside: (H, W) bool, pixels inside a box.
    """
    from skimage.color import rgb2lab

    lab = torch.from_numpy(rgb2lab(rgb).astype(np.float32))
    log_cell, log_background = F.logsigmoid(logits), F.logsigmoid(-logits)
    total, count = logits.new_zeros(()), 0
    h, w = logits.shape
    for dy, dx in PAIR_OFFSETS:
        a = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
        b = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
        similar = torch.exp(-(lab[a] - lab[b]).norm(dim=-1) / PAIR_THETA) >= PAIR_MIN_SIMILARITY
        pairs = similar & inside[a] & inside[b]
        if pairs.any():
            same = torch.logaddexp(log_cell[a] + log_cell[b], log_background[a] + log_background[b])
            total = total - same[pairs].sum()
            count += int(pairs.sum())
    return total / count if count else None


def box_loss(logits: Tensor, target: BoxTarget, rgb: np.ndarray, pairwise_weight: float = 1.0
             ) -> Tensor:
    """The mask loss of one input whose mask is learned from its boxes: projection,
    interior, background cross-entropy outside the boxes, and the weighted pairwise term.

    Args:
        logits: (H, W) cell logits.
        target: its boxes.
        rgb: (H, W, 3) uint8, the input (for the pairwise term).
        pairwise_weight: 0 switches the pairwise term off.
    """
    parts = [projection_loss(logits, target), interior_loss(logits, target)]
    if target.background is not None and target.background.any():
        parts.append(F.softplus(logits[torch.from_numpy(target.background)]).mean())
    if pairwise_weight:
        inside = torch.zeros(logits.shape, dtype=torch.bool)
        for x0, y0, x1, y1 in target.boxes:
            inside[y0:y1, x0:x1] = True
        pair = pairwise_loss(logits, rgb, inside)
        parts.append(None if pair is None else pairwise_weight * pair)
    found = [p for p in parts if p is not None]
    return torch.stack(found).sum() if found else logits.sum() * 0

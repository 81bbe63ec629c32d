"""Segmentation losses on cell logits.

Every loss takes ``logits`` and ``target`` of shape (B, 1, H, W): raw scores for "cell"
and a float 0/1 mask. Binary cross-entropy is the two-class cross-entropy written for
one logit, so ``ce`` is it.
"""

from __future__ import annotations

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

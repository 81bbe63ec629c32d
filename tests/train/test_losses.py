"""Losses on tiny tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from bloomseg.train.losses import SegmentationLoss, dice_loss, focal_loss


def _target():
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, :2] = 1.0
    t[1, 0, :, :1] = 1.0
    return t


def test_exact_values_at_p_half():
    target = torch.ones(1, 1, 2, 2)  # 4 cell pixels, prediction 0.5 everywhere
    logits = torch.zeros_like(target)
    assert SegmentationLoss("ce")(logits, target).item() == pytest.approx(math.log(2))
    assert dice_loss(logits, target).item() == pytest.approx(1 - (2 * 2 + 1) / (2 + 4 + 1))
    assert focal_loss(logits, target).item() == pytest.approx(0.25 * 0.25 * math.log(2))
    mixed = SegmentationLoss("bce_dice", bce_weight=0.3, dice_weight=0.7)(logits, target)
    assert mixed.item() == pytest.approx(0.3 * math.log(2) + 0.7 * (1 - 5 / 7))


@pytest.mark.parametrize("name", SegmentationLoss.NAMES)
def test_good_prediction_beats_bad(name):
    target = _target()
    loss = SegmentationLoss(name)
    perfect = loss(20 * (2 * target - 1), target)
    wrong = loss(-20 * (2 * target - 1), target)
    unsure = loss(torch.zeros_like(target), target)
    assert perfect.item() < 1e-6
    assert perfect < unsure < wrong


def test_empty_mask_predicted_empty_is_zero_dice_loss():
    target = torch.zeros(1, 1, 3, 3)
    assert dice_loss(torch.full_like(target, -30.0), target).item() == pytest.approx(0, abs=1e-6)


def test_gradients_flow():
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    SegmentationLoss("bce_dice")(logits, _target()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        SegmentationLoss("l2")
    with pytest.raises(ValueError, match="differ"):
        SegmentationLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))

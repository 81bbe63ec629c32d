"""Losses on tiny tensors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bloomseg.train.losses import (
    BoxTarget,
    SegmentationLoss,
    box_loss,
    dice_loss,
    focal_loss,
    interior_loss,
    pairwise_loss,
    projection_loss,
)


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


def _disk_logits(size: int = 40, centre: tuple[int, int] = (20, 20), radius: int = 10,
                 score: float = 12.0) -> torch.Tensor:
    """Logits of a confident disk: +score inside, -score outside."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2  # rows 10..30
    return torch.from_numpy(np.where(inside, score, -score).astype(np.float32))


def _boxes(boxes, rows=None, cols=None, background=None) -> BoxTarget:
    boxes = np.array(boxes).reshape(-1, 4)
    n = len(boxes)
    return BoxTarget(boxes, np.ones(n, bool) if rows is None else np.array(rows),
                     np.ones(n, bool) if cols is None else np.array(cols), background)


def test_projection_loss_is_small_for_the_cell_in_its_box_and_large_for_none():
    disk = _disk_logits()
    tight = _boxes([10, 10, 31, 31])  # the disk's box: every row and column crosses it
    assert float(projection_loss(disk, tight)) < 1e-4
    empty = torch.full((40, 40), -12.0)
    assert float(projection_loss(empty, tight)) == pytest.approx(12.0, abs=1e-4)
    # a box twice the cell's height: half its rows hold no cell
    tall = _boxes([10, 0, 31, 40])
    assert float(projection_loss(disk, tall)) == pytest.approx(
        19 * 12.0 / (40 + 21), rel=1e-3)  # 19 empty rows of 40, and 21 full columns


def test_projection_of_a_cut_box_uses_only_its_whole_lines():
    # a box cut at the left (its cell crosses rows outside the input): columns only
    disk = _disk_logits()
    cut = _boxes([0, 0, 21, 40], rows=[False], cols=[True])
    # of its 21 columns, those of x 10..20 cross the disk and x 0..9 do not
    assert float(projection_loss(disk, cut)) == pytest.approx(10 * 12.0 / 21, rel=1e-3)
    assert projection_loss(disk, _boxes([0, 0, 21, 40], rows=[False], cols=[False])) is None


def test_pairwise_term_asks_like_colours_to_share_a_label():
    rgb = np.full((20, 20, 3), 200, np.uint8)  # one colour: every pair must agree
    inside = torch.ones(20, 20, dtype=torch.bool)
    agree = torch.full((20, 20), 8.0)
    split = agree.clone()
    split[:, 10:] = -8.0  # a label edge through a uniform region
    low, high = float(pairwise_loss(agree, rgb, inside)), float(pairwise_loss(split, rgb, inside))
    assert low < 1e-3 and high > 0.5
    # the same edge along a colour edge costs nothing: unlike pairs are not compared
    rgb[:, 10:] = (120, 40, 160)
    assert float(pairwise_loss(split, rgb, inside)) < 1e-3
    assert pairwise_loss(agree, rgb, torch.zeros(20, 20, dtype=torch.bool)) is None


def test_box_loss_adds_background_outside_every_box():
    disk = _disk_logits()
    background = np.ones((40, 40), bool)
    background[10:31, 10:31] = False
    exhaustive = _boxes([10, 10, 31, 31], background=background)
    partial = _boxes([10, 10, 31, 31])
    rgb = np.full((40, 40, 3), 200, np.uint8)
    assert float(box_loss(disk, exhaustive, rgb, 0)) < 1e-3
    everything = torch.full((40, 40), 12.0)  # cell everywhere: wrong outside the box
    assert float(box_loss(everything, exhaustive, rgb, 0)) == pytest.approx(12.0, abs=1e-3)
    assert float(box_loss(everything, partial, rgb, 0)) < 1e-3  # nothing known outside
    loss = box_loss(everything.requires_grad_(), exhaustive, rgb, 1.0)
    loss.backward()
    assert everything.grad[0, 0] > 0  # pushed towards background


def test_interior_term_asks_for_the_middle_of_each_whole_box():
    disk = _disk_logits()
    whole = _boxes([10, 10, 31, 31])
    assert float(interior_loss(disk, whole)) < 1e-4
    ring = disk.clone()
    ring[15:26, 15:26] = -12.0  # a pale centre called background: the ellipse misses it
    assert float(interior_loss(ring, whole)) > 5
    assert float(projection_loss(ring, whole)) < 1e-4  # which the projections allow
    assert interior_loss(ring, _boxes([10, 10, 31, 31], rows=[False])) is None  # cut

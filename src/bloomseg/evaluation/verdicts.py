"""Scoring the quality verdict against the truth: a verdict is a classifier of failed
images, and is measured as one (how many failed images it flags, how many good ones)."""

from __future__ import annotations

import numpy as np

from bloomseg.cells.matching import BoxMatch

FAILED_F1 = 0.8
"""An image whose cell F1 against its boxes is under this has failed..."""
FAILED_COUNT = 0.25
"""...or whose count is off by more than this share of its boxes..."""
FAILED_DICE = 0.85
"""...or whose pixel Dice is under this, where it has a mask..."""
FEW_BOXES = 3
"""...or that holds fewer boxes than this (not a field to count on)."""


def counted_error(match: BoxMatch) -> float:
    """|cells - boxes| / boxes of an image, the cells counted as its F1 counts them: a
    cell cut by the border that matches no box is neither (a crop's boxes leave out
    some of the slivers its border cuts, a smear's masks others), every other cell is.
    0 where there are no boxes and no cells."""
    cells = match.tp + match.fp
    return abs(cells - match.true) / match.true if match.true else float(cells > 0)


def failed(f1: float | None = None, count_error: float | None = None,
           dice: float | None = None, boxes: int | None = None) -> bool:
    """Whether an image failed, by what its truth says (None: not known).

    Args:
        f1: cell F1 against the boxes; count_error: :func:`counted_error`;
        dice: pixel Dice against the mask; boxes: the true boxes.
    """
    return bool((f1 is not None and f1 < FAILED_F1)
                or (count_error is not None and count_error > FAILED_COUNT)
                or (dice is not None and dice < FAILED_DICE)
                or (boxes is not None and boxes < FEW_BOXES))


FAILED_WHITE = 0.05
"""A field's classes failed where more than this share of its red cells are called white..."""
FAILED_PARASITEMIA = 1.0
"""...or its parasitemia is off by more than this many points where the truth has the
classes, or, on blood without malaria, any cell is called infected."""


def classes_failed(called: np.ndarray, truth: np.ndarray, healthy: bool) -> bool:
    """Whether a field's classes failed.

    Args:
        called: (N,) each cell's class (:data:`~bloomseg.data.vocabulary.KINDS` names).
        truth: (N,) the class of the box each cell matches (``KINDS`` names; '' for a
            cell no box matches, which counts in no share).
        healthy: the blood holds no malaria: one infected call fails the field.

    Returns:
        True where it failed (:data:`FAILED_WHITE`, :data:`FAILED_PARASITEMIA`).
    """
    called, truth = np.asarray(called), np.asarray(truth)
    infected = called == "infected"
    if healthy and infected.any():
        return True
    red = truth == "red_blood_cell"
    if red.any() and (called[red] == "white_blood_cell").mean() > FAILED_WHITE:
        return True
    if healthy:
        return False
    named = np.isin(called, ("infected", "red_blood_cell"))
    boxed = np.isin(truth, ("infected", "red_blood_cell"))
    if not named.any() or not boxed.any():
        return False
    off = 100 * abs(infected.sum() / named.sum() - (truth == "infected").sum() / boxed.sum())
    return bool(off > FAILED_PARASITEMIA + 1e-9)  # exactly 1 point is within it


def verdict_scores(rows: list[dict]) -> dict:
    """The verdicts of judged images against their failures.

    Args:
        rows: per image, ``failed`` (bool) and ``qc`` (``ok`` or ``check``).

    Returns:
        images, failed, failed_flagged (failed images whose verdict is ``check``),
        good_flagged, and the shares: ``recall`` (of the failed, flagged) and
        ``false_flags`` (of the good, flagged); None where there are none.
    """
    judged = [r for r in rows if r.get("qc") in ("ok", "check")]
    bad = [r for r in judged if r["failed"]]
    good = [r for r in judged if not r["failed"]]
    caught = sum(r["qc"] == "check" for r in bad)
    flagged = sum(r["qc"] == "check" for r in good)
    return {"images": len(judged), "failed": len(bad), "failed_flagged": caught,
            "good_flagged": flagged, "recall": caught / len(bad) if bad else None,
            "false_flags": flagged / len(good) if good else None,
            "definition": f"failed: cell F1 < {FAILED_F1}, count off by more than "
                          f"{FAILED_COUNT:.0%}, Dice < {FAILED_DICE} or fewer than "
                          f"{FEW_BOXES} boxes"}

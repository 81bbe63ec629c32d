"""Cell types from a classifier's probabilities, counts per type, and parasitemia.

A cell is the likeliest of red cell (the four parasite stages' probabilities added to
it), white cell and platelet; a red cell is ``infected`` when its stages add up to at
least the classifier's tuned threshold (chosen for specificity first: a false malaria
call changes a diagnosis), with the likeliest stage as its ``stage``. A cell whose class
has a probability under :data:`UNCERTAIN_BELOW` keeps its class and is marked
``uncertain``, and so is a cell unlike anything the classifier learnt (its features far
from every class it knows: :meth:`bloomseg.model.classifier.CellClassifier.distances`),
however sure its probability.
"""

from __future__ import annotations

import math

import numpy as np

from bloomseg.data.vocabulary import CLASSES, KINDS, STAGES

STAGE_INDEX = [CLASSES.index(s) for s in STAGES]
RED, WHITE, PLATELET = (CLASSES.index(n) for n in ("red_blood_cell", "white_blood_cell", "platelet"))
COLOURS = {"red_blood_cell": (220, 60, 90), "infected": (250, 200, 0),
           "white_blood_cell": (60, 110, 230), "platelet": (40, 180, 90)}
"""RGB per kind: outlines in overlays, QuPath classifications."""
UNCERTAIN_BELOW = 0.8
"""A cell whose class has a (calibrated) probability under this is marked ``uncertain``:
its call is wrong more than once in five."""


def cell_types(probabilities: np.ndarray, infected_threshold: float,
               unfamiliar: np.ndarray | None = None) -> list[dict]:
    """Each cell's kind, stage and probabilities.

    Args:
        probabilities: (N, len(CLASSES)) rows summing to 1.
        infected_threshold: the stages' summed probability from which a cell is infected.
        unfamiliar: (N,) bool, the cells unlike what the classifier learnt: marked
            ``uncertain`` whatever their probability (None: none).

    Returns:
        Per cell: ``class`` (one of :data:`KINDS`), ``stage`` (a stage for an infected
        cell, else ''), ``class_probability`` (the probability of that kind),
        ``uncertain`` (it is under :data:`UNCERTAIN_BELOW`, or the cell is
        ``unfamiliar``) and ``p_<class>`` for each of :data:`CLASSES`.
    """
    p = np.asarray(probabilities, np.float64).reshape(-1, len(CLASSES))
    far = np.zeros(len(p), bool) if unfamiliar is None else np.asarray(unfamiliar, bool)
    infected = p[:, STAGE_INDEX].sum(axis=1)
    kinds = np.stack([p[:, RED], infected, p[:, WHITE], p[:, PLATELET]], axis=1)
    called = infected_calls(p, infected_threshold)
    rows = []
    for i in range(len(p)):
        if called[i]:
            kind, stage = 1, STAGES[int(np.argmax(p[i, STAGE_INDEX]))]
        else:  # an uncalled infection's probability still says "red cell"
            kind = int(np.argmax([p[i, RED] + infected[i], p[i, WHITE], p[i, PLATELET]]))
            kind, stage = (0, 2, 3)[kind], ""
        shown = kinds[i, kind] + (infected[i] if kind == 0 else 0)
        rows.append({"class": KINDS[kind], "stage": stage,
                     "class_probability": round(float(shown), 4),
                     "uncertain": bool(shown < UNCERTAIN_BELOW or far[i]),
                     **{f"p_{name}": round(float(v), 4) for name, v in zip(CLASSES, p[i])}})
    return rows


def infected_calls(probabilities: np.ndarray, infected_threshold: float) -> np.ndarray:
    """(N,) bool: the cells called infected: red cells (red and the stages together more
    likely than a white cell or a platelet) whose stages add up to the threshold."""
    p = np.asarray(probabilities, np.float64).reshape(-1, len(CLASSES))
    infected = p[:, STAGE_INDEX].sum(axis=1)
    red = p[:, RED] + infected >= np.maximum(p[:, WHITE], p[:, PLATELET])
    return red & (infected >= infected_threshold)


TYPE_COLUMNS = ("class", "stage", "class_probability", "uncertain") + tuple(
    f"p_{c}" for c in CLASSES)
"""The per-cell table's class columns."""


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): (low, high) in 0..1;
    (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    scale = 1 + z * z / trials
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def type_counts(kinds: list[str]) -> dict[str, int]:
    """Cells per kind (every kind of :data:`KINDS`, zeros included)."""
    return {k: sum(1 for x in kinds if x == k) for k in KINDS}


def parasitemia(infected: int, uninfected_red: int) -> dict[str, float | str]:
    """Infected red cells per 100 red cells, with its 95% Wilson interval.

    Args:
        infected: infected red cells; uninfected_red: the other red cells.

    Returns:
        ``parasitemia_percent``, ``parasitemia_low``, ``parasitemia_high`` (percent;
        '' where there are no red cells).
    """
    red = infected + uninfected_red
    if red == 0:
        return {"parasitemia_percent": "", "parasitemia_low": "", "parasitemia_high": ""}
    low, high = wilson_interval(infected, red)
    return {"parasitemia_percent": round(100 * infected / red, 3),
            "parasitemia_low": round(100 * low, 3), "parasitemia_high": round(100 * high, 3)}


def class_colours(rows: list[dict]) -> np.ndarray:
    """(N, 3) RGB of each cell's class (:data:`COLOURS`), rows in label order."""
    return np.array([COLOURS[r["class"]] for r in rows], np.uint8).reshape(-1, 3)

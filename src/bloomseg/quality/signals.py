"""What a run already knows about an image that says whether to trust it.

Each signal is a number per image, computed from the prediction alone (no truth): how far
the size methods and the cells found disagree with the diameter used, how many cells are
fragments, how many cells the cell area holds, how many cells are too large to be one red
cell, how many pixels (and whole cells) the network is unsure of, and what the classes look
like. (The size reading that did not settle, and over-exposed
pixels, were measured too and dropped: on val the first flagged only images flagged
already, the second only good ones.) :mod:`bloomseg.quality.verdict` turns them into reasons.
"""

from __future__ import annotations

import math

import numpy as np

from bloomseg.cells.size import FEW, labelled_diameter
from bloomseg.cells.types import STAGE_INDEX
from bloomseg.data.boxes import touches_border
from bloomseg.data.vocabulary import CLASSES

UNSURE = (0.2, 0.8)
"""Probabilities between these are pixels the network is unsure of."""
FRAGMENT = 0.3
"""A whole cell under this share of a red cell's area at the image's diameter is a
fragment, unless it is called a platelet."""
LARGE = 2.0
"""A whole cell over this many red cells' areas, and called neither white nor a platelet,
is large: two cells or more taken for one."""
WEAK = 0.75
"""A cell whose pixels' mean probability is under this is weak: the network is unsure of
it as a whole (a blurred cell, a faint one, a piece of background taken for a cell)."""
POSSIBLE = 0.5
"""A cell called red whose stages add up to at least this (under the infected threshold)
is possibly infected: more likely infected than not, but not called."""


def log_ratio(a: float | None, b: float | None) -> float:
    """|log(a / b)|: how far apart two sizes are (0 where either is unknown)."""
    if not a or not b:
        return 0.0
    return abs(math.log(a / b))


def signals(prediction) -> dict[str, float]:
    """The image's quality signals.

    Args:
        prediction: a :class:`~bloomseg.inference.segmenter.Prediction` with cells
            (``instances=True``).

    Returns:
        ``size_methods``: |log| of the classical estimate over the diameter used (0 where
        the diameter was not estimated or there is no classical estimate);
        ``size_found``: |log| of the whole cells' median size over the diameter used
        (0 under :data:`~bloomseg.cells.size.FEW` whole cells);
        ``cells``: the cells found; ``whole_cells``: those not cut by the border;
        ``fragments``: the share of whole cells under :data:`FRAGMENT` of a red cell's
        area (platelets apart);
        ``cells_per_area``: cells per red cell's area of cell pixels (about 1 for red
        cells; far above where cells are shredded, far below where they are merged);
        ``large``: the share of whole cells, neither white nor platelets, over
        :data:`LARGE` red cells' areas (0 without classes: a white cell is as large);
        ``unsure``: the share of cell pixels whose probability is within :data:`UNSURE`;
        ``weak_cells``: the share of cells whose mean probability is under :data:`WEAK`;
        and the :func:`class_signals`.
    """
    from scipy import ndimage

    labels = prediction.labels
    scale = prediction.scale
    diameter = scale.diameter or 0.0
    p = prediction.probability
    cell_pixels = max(1, int(prediction.mask.sum()))
    out = {"size_methods": log_ratio(scale.classical, scale.diameter)
           if scale.source == "estimated" else 0.0,
           "unsure": float(((p > UNSURE[0]) & (p < UNSURE[1])).sum() / cell_pixels)}
    found = labelled_diameter(labels)
    out["size_found"] = log_ratio(found.diameter, diameter) if found.cells >= FEW else 0.0
    h, w = labels.shape
    boxes = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=len(boxes) + 1)[1:]
    whole = np.array([b is not None and not touches_border(b[1].start, b[0].start, b[1].stop,
                                                          b[0].stop, h, w) for b in boxes], bool)
    kinds = [t["class"] for t in prediction.classes] if prediction.classes else []
    platelet = np.array([k == "platelet" for k in kinds], bool) if kinds else \
        np.zeros(len(boxes), bool)
    red_area = math.pi / 4 * diameter ** 2 if diameter else float(np.median(areas[whole])
                                                                   if whole.any() else 1.0)
    counted = whole & ~platelet
    single = counted & ~np.array([k == "white_blood_cell" for k in kinds], bool) if kinds \
        else np.zeros(len(boxes), bool)
    mean_p = np.asarray(ndimage.mean(p, labels, np.arange(1, len(boxes) + 1))) if boxes \
        else np.zeros(0)
    out |= {"cells": float(len(boxes)), "whole_cells": float(whole.sum()),
            "fragments": float((areas[counted] < FRAGMENT * red_area).mean())
            if counted.any() else 0.0,
            "large": float((areas[single] > LARGE * red_area).mean()) if single.any() else 0.0,
            "weak_cells": float((mean_p < WEAK).mean()) if boxes else 0.0,
            "cells_per_area": float((~platelet).sum() / max(1e-9, areas[~platelet].sum()
                                                             / red_area)) if boxes else 0.0}
    out |= class_signals(prediction.classes)
    return out


def class_signals(types: list[dict] | None) -> dict[str, float]:
    """The signals of a field's classes (all 0 without classes): ``white_share`` and
    ``uncertain_share`` among the named cells; ``infected``, ``infected_uncertain`` and
    ``red``: the cells called infected, those of them uncertain, and those called red;
    ``infected_possible``: the cells called red that are possibly infected
    (:data:`POSSIBLE`). A run compares its fields' infected shares
    (:mod:`bloomseg.quality.run`)."""
    kinds = [t["class"] for t in types] if types else []
    if not kinds:
        return dict.fromkeys(("white_share", "uncertain_share", "infected",
                              "infected_uncertain", "red", "infected_possible"), 0.0)
    stages = [f"p_{CLASSES[i]}" for i in STAGE_INDEX]
    infected = [t for t in types if t["class"] == "infected"]
    return {"white_share": float(np.mean([k == "white_blood_cell" for k in kinds])),
            "uncertain_share": float(np.mean([bool(t.get("uncertain")) for t in types])),
            "infected": float(len(infected)),
            "infected_uncertain": float(sum(bool(t.get("uncertain")) for t in infected)),
            "red": float(sum(k == "red_blood_cell" for k in kinds)),
            "infected_possible": float(sum(
                t["class"] == "red_blood_cell" and sum(t.get(s, 0.0) for s in stages) >= POSSIBLE
                for t in types))}

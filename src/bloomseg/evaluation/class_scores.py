"""Scoring the cells' classes against the classes of the true boxes they match.

A predicted cell and a true box that match one to one (IoU >= 0.5) are a pair; each pair
adds one count to the confusion matrix of kinds (:data:`~bloomseg.data.vocabulary.KINDS`),
true kind by predicted kind. A dataset's classes.txt says which kinds its annotators
labelled: a kind it does not name has no row (its cells are not known to be of it) and
no precision (a cell called so cannot be judged wrong there). Infected-cell recall is
also given over every infected box, matched or not: a cell the segmentation missed is an
infection missed. Each image's parasitemia is compared: its infected boxes per 100 red
boxes against its infected cells per 100 red cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloomseg.cells.matching import box_pairs, cell_boxes
from bloomseg.cells.types import wilson_interval
from bloomseg.data.vocabulary import KINDS, DatasetClasses, kind_of

INFECTED = KINDS.index("infected")
RED = KINDS.index("red_blood_cell")
CONFUSION_PLOT = "class_confusion.png"
PARASITEMIA_PLOT = "parasitemia.png"


@dataclass
class ClassTally:
    """Class counts summed over images.

    Attributes:
        confusion: (4, 4) int, true kind (rows) by predicted kind (columns), of pairs.
        boxes: (4,) int, true boxes of each kind, matched or not (a cell the
            segmentation missed is a cell of its kind not found).
        parasitemia: per image (true %, predicted %), where the image has red boxes.
        white_over_several: cells called white that hold the centres of two true boxes
            or more (cells merged into one "white cell").
    """

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((len(KINDS),) * 2, int))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros(len(KINDS), int))
    parasitemia: list[tuple[str, float, float]] = field(default_factory=list)
    white_over_several: int = 0

    def add(self, stem: str, labels: np.ndarray, types: list[dict], boxes: np.ndarray,
            targets: np.ndarray) -> dict:
        """Count one image.

        Args:
            stem: the image's name.
            labels: (H, W) predicted cells 1..N; types: their classes (label order).
            boxes: (M, 4) x0, y0, x1, y1 true boxes; targets: (M,) their class indices.

        Returns:
            The image's row fields: true and predicted parasitemia (percent, '' where
            it has no red boxes), infected boxes and cells.
        """
        true_kinds = np.array([KINDS.index(kind_of(t)) for t in targets], int)
        predicted = np.array([KINDS.index(t["class"]) for t in types], int)
        for cell, box in box_pairs(cell_boxes(labels)[0], boxes):
            self.confusion[true_kinds[box], predicted[cell]] += 1
        self.boxes += np.bincount(true_kinds, minlength=len(KINDS))
        if len(boxes):
            h, w = labels.shape
            cy = ((boxes[:, 1] + boxes[:, 3]) / 2).astype(int).clip(0, h - 1)
            cx = ((boxes[:, 0] + boxes[:, 2]) / 2).astype(int).clip(0, w - 1)
            holding = np.bincount(labels[cy, cx], minlength=len(types) + 1)[1:]
            self.white_over_several += int(((holding >= 2) & (predicted == KINDS.index(
                "white_blood_cell"))).sum())
        infected = int((true_kinds == INFECTED).sum())
        red = infected + int((true_kinds == RED).sum())
        called = int((predicted == INFECTED).sum())
        called_red = called + int((predicted == RED).sum())
        row = {"true_infected": infected, "predicted_infected": called,
               "true_parasitemia": "", "predicted_parasitemia": ""}
        if red:
            truth = 100 * infected / red
            guess = 100 * called / called_red if called_red else 0.0
            self.parasitemia.append((stem, truth, guess))
            row |= {"true_parasitemia": round(truth, 3), "predicted_parasitemia": round(guess, 3)}
        return row

    def summary(self, known: np.ndarray) -> dict:
        """Per-kind precision, recall and F1 of the pairs, the confusion matrix, infected
        recall (with its 95% Wilson interval and counts) and the parasitemia error.

        Args:
            known: (len(KINDS),) bool, the kinds the dataset labels.
        """
        c = self.confusion
        per_kind = {}
        for k, name in enumerate(KINDS):
            if not known[k]:
                continue
            true, called = int(c[k].sum()), int(c[known, k].sum())
            recall = c[k, k] / true if true else None
            precision = c[k, k] / called if called else None
            f1 = (2 * precision * recall / (precision + recall)
                  if precision and recall else (0.0 if true or called else None))
            boxes = int(self.boxes[k])
            per_kind[name] = {"true": true, "called": called, "correct": int(c[k, k]),
                              "precision": precision, "recall": recall, "f1": f1,
                              "boxes": boxes,
                              "recall_of_all_boxes": c[k, k] / boxes if boxes else None}
        out = {"kinds": list(KINDS), "labelled_kinds": [n for n, k in zip(KINDS, known) if k],
               "confusion_rows_true_columns_predicted": c.tolist(), "per_class": per_kind,
               "white_cells_over_several_boxes": self.white_over_several}
        if known[INFECTED]:
            found, boxes = int(c[INFECTED, INFECTED]), int(self.boxes[INFECTED])
            low, high = wilson_interval(found, boxes)
            out["infected"] = {
                "boxes": boxes, "found": found,
                "recall_of_all_boxes": found / boxes if boxes else None,
                "recall_95_interval": [low, high],
                "note": "few infected cells: read the interval, not the point"}
            if self.parasitemia:
                errors = [abs(t - p) for _, t, p in self.parasitemia]
                out["parasitemia"] = {"images": len(errors),
                                      "mean_absolute_error_points": float(np.mean(errors)),
                                      "largest_error_points": float(np.max(errors))}
        return out


def confusion_plot(summary: dict, path: Path) -> None:
    """The confusion matrix of kinds as a figure (rows: the labelled kinds)."""
    from bloomseg.figures import pyplot, save_figure

    plt = pyplot()
    kinds = summary["kinds"]
    rows = [kinds.index(k) for k in summary["labelled_kinds"]]
    matrix = np.array(summary["confusion_rows_true_columns_predicted"])[rows]
    fig, ax = plt.subplots(figsize=(6, 1.6 + 0.6 * len(rows)), constrained_layout=True)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xticks=range(len(kinds)), xticklabels=kinds,
           yticks=range(len(rows)), yticklabels=summary["labelled_kinds"],
           xlabel="predicted", ylabel="true (boxes)", title="cell classes of matched cells")
    ax.tick_params(axis="x", rotation=20)
    save_figure(fig, path)


def parasitemia_plot(tally: ClassTally, path: Path) -> None:
    """Each image's predicted against true parasitemia."""
    from bloomseg.figures import truth_scatter

    truth_scatter([t for _, t, _ in tally.parasitemia], [p for _, _, p in tally.parasitemia],
                  path, "true parasitemia (% of red boxes)",
                  "predicted parasitemia (% of red cells)",
                  f"parasitemia per image, {len(tally.parasitemia)} images")


def dataset_kinds(classes: DatasetClasses) -> np.ndarray:
    """(len(KINDS),) bool: the kinds a dataset's classes.txt labels."""
    known = np.zeros(len(KINDS), bool)
    for index in classes.index.values():
        known[KINDS.index(kind_of(index))] = True
    return known

"""Evaluation of cell classes on synthetic smears of drawn kinds, with known counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bloomseg.cells.instances import InstanceParams
from bloomseg.cells.types import cell_types
from bloomseg.data.boxes import read_boxes
from bloomseg.data.synthetic import TYPED_CLASSES, write_typed_dataset
from bloomseg.data.vocabulary import CLASSES
from bloomseg.evaluation.class_scores import CONFUSION_PLOT, PARASITEMIA_PLOT, ClassTally
from bloomseg.evaluation.evaluate import evaluate
from bloomseg.inference.segmenter import Prediction
from conftest import Components


class Sees(Components):
    """Names the drawn cells by what they look like (size, a dark dot); with
    ``miss_rings`` it calls every ring a red cell."""

    separation = InstanceParams()

    def __init__(self, miss_rings: bool = False) -> None:
        self.miss_rings = miss_rings

    def predict(self, image, instances=False, **_) -> Prediction:
        result = super().predict(image, instances)
        grey = image.astype(float).mean(axis=2)
        p = []
        for cell in range(1, result.labels.max() + 1):
            inside = result.labels == cell
            area = inside.sum()
            name = "platelet" if area < 100 else "white_blood_cell" if area > 500 else \
                "ring" if grey[inside].min() < 85 and not self.miss_rings else "red_blood_cell"
            p.append(np.eye(len(CLASSES))[CLASSES.index(name)])
        result.classes = cell_types(np.array(p), 0.5)
        return result


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    return write_typed_dataset(tmp_path_factory.mktemp("typed"), 0, 0, n_test=3)


def true_counts(root) -> np.ndarray:
    boxes = np.concatenate([read_boxes(p) for p in sorted((root / "test" / "boxes").iterdir())])
    return np.bincount(boxes[:, 0].astype(int), minlength=len(TYPED_CLASSES))


def test_perfect_classes_score_perfectly(typed, tmp_path):
    metrics = evaluate(Sees(), typed, tmp_path / "ev", progress=False)
    red, ring, white, platelet = true_counts(typed)
    c = metrics["classes"]
    assert c["labelled_kinds"] == ["red_blood_cell", "infected", "white_blood_cell", "platelet"]
    assert np.array(c["confusion_rows_true_columns_predicted"]).tolist() == \
        np.diag([red, ring, white, platelet]).tolist()
    assert all(v["f1"] == 1.0 for v in c["per_class"].values())
    assert c["infected"]["recall_of_all_boxes"] == 1.0 and c["infected"]["boxes"] == ring
    assert c["parasitemia"]["mean_absolute_error_points"] == 0.0
    assert c["white_cells_over_several_boxes"] == 0
    assert (tmp_path / "ev" / CONFUSION_PLOT).is_file()
    assert (tmp_path / "ev" / PARASITEMIA_PLOT).is_file()
    per_image = json.loads((tmp_path / "ev" / "per_image_metrics.json").read_text())
    assert all(r["true_parasitemia"] == r["predicted_parasitemia"] for r in per_image)
    report = (tmp_path / "ev" / "report.html").read_text()
    assert "Cell classes" in report and f"{ring} of {ring}" in report


def test_missed_infections_are_counted_against_recall_and_parasitemia(typed, tmp_path):
    metrics = evaluate(Sees(miss_rings=True), typed, tmp_path / "ev", progress=False)
    red, ring, white, platelet = true_counts(typed)
    c = metrics["classes"]
    confusion = np.array(c["confusion_rows_true_columns_predicted"])
    assert confusion[1, 0] == ring and confusion[1, 1] == 0
    assert c["per_class"]["infected"]["recall"] == 0.0
    assert c["per_class"]["red_blood_cell"]["precision"] == red / (red + ring)
    assert c["infected"]["found"] == 0 and c["infected"]["recall_95_interval"][0] == 0.0
    per_image = json.loads((tmp_path / "ev" / "per_image_metrics.json").read_text())
    truth = [r["true_parasitemia"] for r in per_image]
    assert c["parasitemia"]["mean_absolute_error_points"] == pytest.approx(np.mean(truth))
    assert all(r["predicted_parasitemia"] == 0.0 for r in per_image)


def test_a_dataset_without_classes_txt_is_scored_without_classes(typed, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(typed, plain)
    (plain / "classes.txt").unlink()
    metrics = evaluate(Sees(), plain, tmp_path / "ev", progress=False)
    assert "classes" not in metrics and metrics["instances"]["boxes"]["f1"] == 1.0


def test_cells_merged_into_one_white_cell_are_counted():
    labels = np.zeros((40, 100), np.int32)
    labels[5:35, 5:35], labels[5:35, 40:95] = 1, 2
    white, red = np.eye(len(CLASSES))[[CLASSES.index("white_blood_cell"),
                                       CLASSES.index("red_blood_cell")]]
    # cell 2 covers two true red boxes
    boxes = np.array([[5, 5, 35, 35], [40, 5, 65, 35], [70, 5, 95, 35]], float)
    targets = np.full(3, CLASSES.index("red_blood_cell"))
    called_white = ClassTally()
    called_white.add("a", labels, cell_types(np.array([red, white]), 0.5), boxes, targets)
    assert called_white.white_over_several == 1
    # called red, the same merge is not a white cell's
    called_red = ClassTally()
    called_red.add("a", labels, cell_types(np.array([red, red]), 0.5), boxes, targets)
    assert called_red.white_over_several == 0
    assert called_white.summary(np.ones(4, bool))["white_cells_over_several_boxes"] == 1

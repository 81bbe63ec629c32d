"""The quality verdict on predictions whose faults are known: the right size, a wrong
one, shredded and merged cells, an empty field, unsure pixels, odd classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bloomseg.data.vocabulary import CLASSES
from bloomseg.inference.scale import Scale
from bloomseg.inference.segmenter import Prediction
from bloomseg.quality import CHECK, OK, REASONS, judge
from bloomseg.quality.signals import signals

D = 40


def grid(rows: int = 4, cols: int = 5, d: int = D) -> np.ndarray:
    """(H, W) labels: disks of diameter d apart."""
    h, w = int(d * (1.5 * rows + 0.3)), int(d * (1.5 * cols + 0.3))
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int32)
    for r in range(rows):
        for c in range(cols):
            cy, cx = d * (0.9 + 1.5 * r), d * (0.9 + 1.5 * c)
            labels[(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= (d / 2) ** 2] = r * cols + c + 1
    return labels


def prediction(labels: np.ndarray, diameter: float | None = D, probability=None,
               classes=None, scale: Scale | None = None) -> Prediction:
    mask = labels > 0
    p = mask.astype(np.float32) if probability is None else probability
    scale = scale or Scale(diameter, "given")
    return Prediction(p, mask, 0.0, None, labels, scale.diameter, scale.source, "", classes,
                      scale)


def named(kinds: list[str]) -> list[dict]:
    from bloomseg.cells.types import cell_types

    return cell_types(np.eye(len(CLASSES))[[CLASSES.index(k) for k in kinds]], 0.5)


def test_cells_of_the_right_size_are_ok_and_the_verdict_is_kept():
    labels = grid()
    result = prediction(labels)
    verdict = judge(result)
    assert verdict.status == OK and verdict.reasons == () and verdict.text == ""
    assert result.qc is verdict
    v = verdict.signals
    assert v["cells"] == v["whole_cells"] == 20
    assert v["size_found"] == pytest.approx(0.0, abs=0.03)
    assert v["fragments"] == 0.0 and v["unsure"] == 0.0
    assert v["cells_per_area"] == pytest.approx(1.0, abs=0.05)


def test_a_wrong_diameter_is_flagged():
    labels = grid()
    verdict = judge(prediction(labels, diameter=3 * D))
    assert verdict.status == CHECK
    assert verdict.signals["size_found"] == pytest.approx(math.log(3), abs=0.03)
    assert "size_found" in verdict.reasons
    assert "not the size they were segmented at" in verdict.text


def test_size_methods_that_disagree_are_flagged():
    labels = grid()
    estimated = Scale(D, "estimated", classical=2.5 * D, readings=(D,), settled=True)
    verdict = judge(prediction(labels, scale=estimated))
    assert verdict.signals["size_methods"] == pytest.approx(math.log(2.5))
    assert verdict.reasons == ("size_methods",)
    # given by the user, the classical estimate is not a second opinion
    assert judge(prediction(labels, scale=Scale(D, "given", classical=2.5 * D))).status == OK


def test_shredded_cells_are_fragments_and_too_many():
    labels = grid()
    h, w = labels.shape
    yy, xx = np.mgrid[:h, :w]
    # each disk cut into quarters about its centre
    quarter = np.zeros_like(labels)
    for cell in range(1, 21):
        ys, xs = np.nonzero(labels == cell)
        cy, cx = ys.mean(), xs.mean()
        quarter[labels == cell] = 4 * (cell - 1) + 1 + 2 * (yy[labels == cell] > cy) + (
            xx[labels == cell] > cx)
    verdict = judge(prediction(quarter))
    assert verdict.signals["fragments"] == 1.0
    assert verdict.signals["cells_per_area"] == pytest.approx(4.0, abs=0.2)
    assert {"fragments", "crowded"} <= set(verdict.reasons)


def test_merged_cells_are_too_few():
    labels = grid(rows=10)
    rows = np.where(labels > 0, (labels - 1) // 5 + 1, 0)  # each row of 5 disks one cell
    verdict = judge(prediction(rows))
    assert verdict.signals["cells_per_area"] == pytest.approx(0.2, abs=0.02)
    assert "merged" in verdict.reasons


def test_an_empty_field_is_flagged_for_that_alone():
    labels = np.zeros((200, 300), np.int32)
    verdict = judge(prediction(labels))
    assert verdict.status == CHECK and verdict.reasons == ("empty",)
    assert verdict.signals["cells"] == 0


def test_unsure_pixels_are_flagged():
    labels = grid()
    p = (labels > 0).astype(np.float32)
    p[(labels > 0) & (labels % 2 == 0)] = 0.55  # half the cells' pixels unsure
    verdict = judge(prediction(labels, probability=p))
    assert verdict.signals["unsure"] == pytest.approx(0.5, abs=0.05)
    assert verdict.signals["weak_cells"] == 0.5
    assert verdict.reasons == ("unsure", "weak_cells")


def test_cells_the_network_is_unsure_of_as_a_whole_are_flagged():
    labels = grid()
    p = (labels > 0).astype(np.float32)
    p[np.isin(labels, (1, 2, 3))] = 0.7  # 3 of 20 cells faint: 15% of pixels, not "many"
    verdict = judge(prediction(labels, probability=p))
    assert verdict.signals["weak_cells"] == pytest.approx(3 / 20)
    assert verdict.reasons == ("weak_cells",)
    p[labels == 3] = 1.0  # 2 of 20: under the limit
    assert judge(prediction(labels, probability=p)).status == OK


def test_cells_taken_together_are_large_where_classes_say_they_are_not_white():
    labels = grid()
    h, w = labels.shape
    joined = labels.copy()
    # the first two disks of the first row and the band between them: one cell
    joined[int(0.9 * D - D / 4):int(0.9 * D + D / 4), int(0.9 * D):int(2.4 * D)] = 1
    joined[joined == 2] = 1
    red = named(["red_blood_cell"] * 20)
    verdict = judge(prediction(joined, classes=red))
    assert verdict.signals["large"] == pytest.approx(1 / 19)
    assert verdict.reasons == ("large",)
    # the same cell called white is a white cell's size; without classes it could be one
    white = named(["white_blood_cell"] + ["red_blood_cell"] * 19)
    assert judge(prediction(joined, classes=white)).signals["large"] == 0.0
    assert judge(prediction(joined)).signals["large"] == 0.0


def test_few_cells_are_an_empty_field():
    labels = grid(rows=1, cols=5)
    verdict = judge(prediction(labels))
    assert verdict.signals["cells"] == 5 and verdict.reasons == ("empty",)
    assert judge(prediction(grid(rows=2, cols=4))).status == OK  # 8 cells


def test_an_odd_mix_of_classes_is_flagged():
    labels = grid()
    kinds = ["white_blood_cell"] * 8 + ["red_blood_cell"] * 12
    verdict = judge(prediction(labels, classes=named(kinds)))
    assert verdict.signals["white_share"] == pytest.approx(0.4)
    assert verdict.reasons == ("white_cells",)
    ok = judge(prediction(labels, classes=named(["red_blood_cell"] * 20)))
    assert ok.status == OK and ok.signals["uncertain_share"] == 0.0
    assert ok.signals["infected_possible"] == 0.0


def test_platelets_are_not_fragments():
    labels = grid()
    small = labels.copy()
    small[(labels > 0) & (labels <= 5)] = 0  # the first row: five small cells instead
    h, w = labels.shape
    yy, xx = np.mgrid[:h, :w]
    for c in range(5):
        small[(yy + 0.5 - 0.9 * D) ** 2 + (xx + 0.5 - D * (0.9 + 1.5 * c)) ** 2 <= 36] = c + 1
    as_red = named(["red_blood_cell"] * 20)
    as_platelets = named(["platelet"] * 5 + ["red_blood_cell"] * 15)
    assert signals(prediction(small, classes=as_red))["fragments"] == 0.25
    assert signals(prediction(small, classes=as_platelets))["fragments"] == 0.0


def test_every_reason_reads_a_signal_that_exists():
    labels = grid()
    values = signals(prediction(labels))
    assert {r.signal for r in REASONS} <= set(values)
    assert len({r.name for r in REASONS}) == len(REASONS)


def test_cells_called_red_that_are_more_likely_infected_are_possible_infections():
    from bloomseg.cells.types import STAGE_INDEX, cell_types
    from bloomseg.quality.signals import POSSIBLE, class_signals

    p = np.zeros((4, len(CLASSES)))
    p[:, CLASSES.index("red_blood_cell")] = [1.0, 0.6, 0.45, 0.05]
    p[:, STAGE_INDEX[0]] = [0.0, 0.4, 0.55, 0.95]  # the stages: 0, 0.4, 0.55, 0.95
    values = class_signals(cell_types(p, infected_threshold=0.9))
    # the last is called infected; of the three called red one is past POSSIBLE
    assert POSSIBLE == 0.5
    assert (values["infected"], values["red"], values["infected_possible"]) == (1.0, 3.0, 1.0)

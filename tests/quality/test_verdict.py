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
    labels = grid(rows=6)
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
    assert verdict.reasons == ("unsure",)


def test_an_odd_mix_of_classes_is_flagged():
    labels = grid()
    kinds = ["white_blood_cell"] * 8 + ["red_blood_cell"] * 12
    verdict = judge(prediction(labels, classes=named(kinds)))
    assert verdict.signals["white_share"] == pytest.approx(0.4)
    assert verdict.reasons == ("white_cells",)
    ok = judge(prediction(labels, classes=named(["red_blood_cell"] * 20)))
    assert ok.status == OK and ok.signals["uncertain_share"] == 0.0


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

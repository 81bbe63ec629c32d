"""What counts as a failed image, and the verdict scored against it."""

from __future__ import annotations

from bloomseg.evaluation.verdicts import failed, verdict_scores


def test_an_image_fails_by_any_one_score():
    assert not failed(f1=0.8, count_error=0.25, dice=0.85, boxes=3)
    assert failed(f1=0.79) and failed(count_error=0.26) and failed(dice=0.84)
    assert failed(boxes=2) and not failed()


def test_verdicts_are_scored_as_a_classifier_of_failures():
    rows = [{"failed": True, "qc": "check"}, {"failed": True, "qc": "ok"},
            {"failed": False, "qc": "ok"}, {"failed": False, "qc": "ok"},
            {"failed": False, "qc": "check"}, {"failed": False}]  # the last one not judged
    s = verdict_scores(rows)
    assert (s["images"], s["failed"], s["failed_flagged"], s["good_flagged"]) == (5, 2, 1, 1)
    assert s["recall"] == 0.5 and s["false_flags"] == 1 / 3
    assert verdict_scores([])["recall"] is None


def test_the_count_leaves_out_slivers_at_the_border_that_match_no_box():
    import numpy as np

    from bloomseg.cells.matching import match_boxes
    from bloomseg.evaluation.verdicts import counted_error

    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:15], labels[5:15, 20:30] = 1, 2
    labels[20:30, 0:3] = 3  # a sliver cut by the border, boxed by no one
    labels[25:35, 40:50] = 4  # a cell no box holds
    match = match_boxes(labels, np.array([[5, 5, 15, 15], [20, 5, 30, 15]], float))
    assert (match.tp, match.fp, match.ignored) == (2, 1, 1)
    assert counted_error(match) == 0.5  # 3 cells counted against 2 boxes
    assert counted_error(match_boxes(np.zeros((5, 5), np.int32), np.zeros((0, 4)))) == 0.0


def test_a_field_fails_by_its_classes():
    from bloomseg.evaluation.verdicts import classes_failed

    red, inf, white = "red_blood_cell", "infected", "white_blood_cell"
    # healthy blood: one infected call fails the field, none does not
    assert classes_failed([red] * 99 + [inf], [red] * 99 + [""], healthy=True)
    assert not classes_failed([red] * 100, [red] * 100, healthy=True)
    # more than 5% of the red cells called white fails it: 6 of 100, not 5
    assert classes_failed([white] * 6 + [red] * 94, [red] * 100, healthy=True)
    assert not classes_failed([white] * 5 + [red] * 95, [red] * 100, healthy=True)
    # malaria: the parasitemia off by more than 1 point (2 of 100 called, 4 of 100 true)
    assert classes_failed([inf] * 2 + [red] * 98, [inf] * 4 + [red] * 96, healthy=False)
    assert not classes_failed([inf] * 3 + [red] * 97, [inf] * 4 + [red] * 96, healthy=False)

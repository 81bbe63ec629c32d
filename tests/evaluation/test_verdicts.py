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

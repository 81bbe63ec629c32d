"""The run's verdict on runs whose distance from the labs learnt is known, and each
field's verdict seen beside the run's other fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bloomseg.errors import ConfigError
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.segmenter import Segmenter
from bloomseg.quality import CHECK, OK, Verdict, judge_run, verdict_of
from bloomseg.quality.run import (
    LIMIT_BASE,
    LIMIT_NOISE,
    MIN_FIELDS,
    in_run,
    lab_distance,
    outliers,
    possible_points,
    run_limit,
    run_status,
)
from bloomseg.quality.verdict import reasons_text
from conftest import DarkCells, Dummy, by_colour

CENTRES = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 10.0, 10.0, 10.0]])
SCATTER = np.array([1.0, 2.0])


def test_the_distance_is_from_the_nearest_lab_in_its_own_scatter():
    # the run's mean is 3 from lab 0 in every feature (rms 3, scatter 1: 3), and 7 from
    # lab 1 (rms 7, scatter 2: 3.5)
    profiles = np.array([[2.0, 2.0, 2.0, 2.0], [4.0, 4.0, 4.0, 4.0]])
    assert lab_distance(profiles, CENTRES, SCATTER) == pytest.approx(3.0)
    assert lab_distance(profiles + 6, CENTRES, SCATTER) == pytest.approx(0.5)  # 9: 1 / 2


def test_a_run_far_from_every_lab_is_unfamiliar_and_a_near_one_ok():
    near = [np.full(4, 0.1)] * 5
    far = [np.full(4, 3.0)] * 5
    ok = run_status(near, CENTRES, SCATTER)
    assert (ok.status, ok.reasons, ok.fields) == (OK, (), 5)
    assert ok.limit == pytest.approx(LIMIT_BASE + LIMIT_NOISE / math.sqrt(5))
    check = run_status(far + [None], CENTRES, SCATTER)  # a field without red cells adds nothing
    assert (check.status, check.reasons, check.fields) == (CHECK, ("unfamiliar",), 5)
    assert check.distance == pytest.approx(3.0) and check.unfamiliar
    assert "bloomseg train --adapt" in check.text and "3.00" in check.text


def test_a_short_run_is_allowed_its_noise():
    assert run_limit(1) == pytest.approx(LIMIT_BASE + LIMIT_NOISE)
    assert run_limit(100) == pytest.approx(LIMIT_BASE + LIMIT_NOISE / 10)
    between = [np.full(4, (run_limit(100) + run_limit(4)) / 2)]
    assert run_status(between * 4, CENTRES, SCATTER).status == OK
    assert run_status(between * 100, CENTRES, SCATTER).status == CHECK


def test_a_run_is_not_judged_without_labs_or_with_too_few_fields():
    few = run_status([np.zeros(4)] * (MIN_FIELDS - 1) + [None] * 5, CENTRES, SCATTER)
    assert few.status == "" and f"a run needs {MIN_FIELDS}" in few.note
    none = run_status([np.zeros(4)] * 5, np.zeros((0, 4)), np.zeros(0))
    assert none.status == "" and "retrain or adapt" in none.note
    assert "not judged" in none.text


def signals(infected: float = 0.0, red: float = 100.0, **more) -> dict:
    values = {"size_methods": 0.0, "size_found": 0.0, "cells": red + infected,
              "whole_cells": red + infected, "fragments": 0.0, "cells_per_area": 1.0,
              "unsure": 0.0, "white_share": 0.0, "uncertain_share": 0.0,
              "infected": infected, "infected_uncertain": 0.0, "red": red, "large": 0.0,
              "weak_cells": 0.0, "infected_possible": 0.0}
    return values | more


def test_a_field_with_far_more_infected_calls_than_the_others_is_an_outlier():
    run = [signals(1), signals(0), signals(1), signals(0), signals(12)]
    assert outliers(run).tolist() == [False, False, False, False, True]
    even = [signals(5)] * 5  # a malaria slide: every field alike
    assert not outliers(even).any()
    alone = [signals(0)] * 4 + [signals(1)]  # one call is never an outlier
    assert not outliers(alone).any()


def test_the_outliers_binomial_tail_is_scipy_stats_own():
    from scipy.stats import binom

    from bloomseg.quality.run import OUTLIER_MIN, OUTLIER_P

    rng = np.random.default_rng(0)
    for _ in range(200):
        run = [signals(float(rng.integers(0, 15)), float(rng.integers(20, 200))) for _ in range(6)]
        infected = np.array([s["infected"] for s in run])
        named = infected + np.array([s["red"] for s in run])
        others = (infected.sum() - infected) / (named.sum() - named)
        tail = binom.sf(infected - 1, named.astype(int), others)
        assert outliers(run).tolist() == ((infected >= OUTLIER_MIN) & (tail < OUTLIER_P)).tolist()


def test_an_unfamiliar_run_says_once_what_every_field_would_repeat():
    fields = [signals(0, uncertain_share=0.5, size_methods=0.7),
              signals(0, uncertain_share=0.5, size_methods=0.8),
              signals(1, uncertain_share=0.5, size_methods=0.75),
              signals(0, uncertain_share=0.5, size_methods=1.6)]
    own = [verdict_of(s) for s in fields]
    assert all("uncertain_classes" in v.reasons and "size_methods" in v.reasons for v in own)
    familiar, run = in_run(own, run_status([np.zeros(4)] * 4, CENTRES, SCATTER))
    # on a familiar run, size methods apart on every field are this lab's, said once;
    # uncertain classes are still each field's; the infected call is rare in the run
    # (1 of 401 red cells): confirm it
    assert [v.reasons for v in familiar] == [("uncertain_classes",)] * 2 + [
        ("uncertain_classes", "infected_rare"), ("uncertain_classes",)]
    assert run.status == OK and dict(run.summarised) == {"size_methods": 4}
    assert "Usual on this run" in run.text
    unfamiliar = run_status([np.full(4, 3.0)] * 4, CENTRES, SCATTER)
    seen, run = in_run(own, unfamiliar)
    # uncertain classes and size methods apart on most fields give way to the run's
    # verdict, which says so; the field with infected calls is still flagged
    assert [v.reasons for v in seen] == [(), (), ("infected_unfamiliar",), ()]
    assert [v.status for v in seen] == [OK, OK, CHECK, OK]
    assert dict(run.summarised) == {"uncertain_classes": 4, "size_methods": 4}
    assert "the size methods disagree: 4 fields" in run.text
    # size methods apart on one field in five is not usual: that field is still flagged
    few = [signals(0)] * 4 + [signals(0, size_methods=1.6)]
    seen, run = in_run([verdict_of(s) for s in few], unfamiliar)
    assert [v.reasons for v in seen][-1] == ("size_methods",) and run.summarised == ()


def test_an_empty_field_stays_flagged_for_that_alone():
    own = [verdict_of(signals(0, cells=2.0, red=2.0))] + [verdict_of(signals(0))] * 3
    seen, _ = in_run(own, run_status([np.full(4, 3.0)] * 4, CENTRES, SCATTER))
    assert seen[0].reasons == ("empty",)


def test_infected_calls_where_they_are_rare_are_to_be_confirmed():
    familiar = run_status([np.zeros(4)] * 5, CENTRES, SCATTER)
    rare = [signals(1, red=1000.0)] + [signals(0, red=1000.0)] * 4  # 1 in 5001
    seen, _ = in_run([verdict_of(s) for s in rare], familiar)
    assert [v.reasons for v in seen] == [("infected_rare",)] + [()] * 4
    malaria = [signals(3)] * 5  # 3% of red cells infected: not rare
    seen, _ = in_run([verdict_of(s) for s in malaria], familiar)
    assert all(v.status == OK for v in seen)


def field(cells: int, colour: tuple) -> np.ndarray:
    image = np.full((120, 60 * cells, 3), 235, np.uint8)
    yy, xx = np.mgrid[:120, :60 * cells]
    for i in range(cells):
        image[(yy - 60) ** 2 + (xx - 30 - 60 * i) ** 2 <= 20 ** 2] = colour
    return image


@pytest.mark.parametrize(("lab", "status"), [("red_blood_cell", OK),
                                             ("white_blood_cell", CHECK)])
def test_judge_run_against_the_labs_the_classifier_learnt(monkeypatch, lab, status):
    monkeypatch.setattr("bloomseg.inference.segmenter.classify", by_colour)
    segmenter = Segmenter(DarkCells(), InferenceOptions(tile=224), cell_diameter=40.0,
                          classifier=Dummy(lab))
    predictions = [segmenter.predict(field(4, (150, 50, 60)), instances=True) for _ in range(3)]
    assert all(p.red_profile is not None for p in predictions)
    run = judge_run(predictions, segmenter)
    assert run.status == status and run.fields == 3
    assert all(isinstance(p.qc, Verdict) for p in predictions)
    with pytest.raises(ConfigError, match="no cell classifier"):
        judge_run(predictions, Segmenter(DarkCells(), InferenceOptions(tile=224)))


def test_a_field_of_the_run_written_to_disk_and_read_again(tmp_path, monkeypatch):
    """The (all images) row carries the run's verdict; a resumed run judges it again."""
    import csv

    from bloomseg.outputs.run import OutputOptions, segment_files
    from bloomseg.outputs.summary import TOTAL

    monkeypatch.setattr("bloomseg.inference.segmenter.classify", by_colour)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(field(4, (150, 50, 60))).save(inputs / f"f{i}.png")
    segmenter = Segmenter(DarkCells(), InferenceOptions(tile=224), cell_diameter=40.0,
                          classifier=Dummy("white_blood_cell"))
    out = tmp_path / "out"
    for resume in (False, True):
        segment_files(segmenter, sorted(inputs.iterdir()), out, OutputOptions(cells=True),
                      progress=False, resume=resume)
        with open(out / "summary.csv", newline="") as f:
            total = next(r for r in csv.DictReader(f) if r["image"] == TOTAL)
        assert (total["qc"], total["qc_reasons"]) == (CHECK, "unfamiliar")
    report = (out / "report.html").read_text()
    assert "The run&#x27;s classes" in report and "bloomseg train --adapt" in report


def test_possible_infections_that_would_move_a_count_are_flagged_on_a_malaria_run():
    familiar = run_status([np.zeros(4)] * 5, CENTRES, SCATTER)
    # 3% infected: a malaria run; 5 possible cells in 103 would add 4.9 points, 4 add 3.9
    malaria = [signals(3, infected_possible=5.0), signals(3, infected_possible=4.0)] + [
        signals(3)] * 3
    seen, _ = in_run([verdict_of(s) for s in malaria], familiar)
    assert [v.reasons for v in seen] == [("infected_possible",)] + [()] * 4
    assert "possibly infected" in reasons_text(seen[0].reasons)
    # where infections are rare the slide's question is each call, not the count
    rare = [signals(0, infected_possible=5.0)] + [signals(0)] * 4
    seen, _ = in_run([verdict_of(s) for s in rare], familiar)
    assert all(v.status == OK for v in seen)
    # on an unfamiliar run every class is in doubt: said once, not on each field
    seen, _ = in_run([verdict_of(s) for s in malaria],
                     run_status([np.full(4, 3.0)] * 5, CENTRES, SCATTER))
    assert all("infected_possible" not in v.reasons for v in seen)
    assert possible_points(signals(1, red=49.0, infected_possible=1.0)) == pytest.approx(2.0)
    assert possible_points(signals(0, red=0.0)) == 0.0

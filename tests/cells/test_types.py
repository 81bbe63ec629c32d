"""Cell types from probabilities, counts, and parasitemia with its Wilson interval."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.cells.types import cell_types, class_colours, parasitemia, type_counts, wilson_interval
from bloomseg.data.vocabulary import CLASSES


def probs(**values: float) -> np.ndarray:
    row = np.zeros(len(CLASSES))
    for name, v in values.items():
        row[CLASSES.index(name)] = v
    return row


def test_an_infection_is_called_from_the_stages_summed_probability():
    p = np.stack([
        probs(red_blood_cell=0.6, ring=0.25, trophozoite=0.15),  # stages 0.4: infected at 0.3
        probs(red_blood_cell=0.8, ring=0.1, platelet=0.1),       # stages 0.1: red
        probs(white_blood_cell=0.7, red_blood_cell=0.3),
        probs(platelet=0.5, red_blood_cell=0.3, schizont=0.2),   # red + stages 0.5 ties: red first
    ])
    rows = cell_types(p, infected_threshold=0.3)
    assert [r["class"] for r in rows] == ["infected", "red_blood_cell", "white_blood_cell",
                                          "red_blood_cell"]
    assert rows[0]["stage"] == "ring" and rows[0]["class_probability"] == 0.4
    assert rows[1]["stage"] == "" and rows[1]["class_probability"] == pytest.approx(0.9)
    assert rows[2]["p_white_blood_cell"] == 0.7
    # under 0.8 a call is marked uncertain, and keeps its class
    assert [r["uncertain"] for r in rows] == [True, False, True, True]
    # at a higher threshold the first cell is red, its stages' share counted as red
    assert cell_types(p[:1], 0.5)[0] == {**rows[0], "class": "red_blood_cell", "stage": "",
                                         "class_probability": 1.0, "uncertain": False}
    assert class_colours(rows).shape == (4, 3)


def test_counts_and_parasitemia_on_known_numbers():
    kinds = ["red_blood_cell"] * 95 + ["infected"] * 5 + ["white_blood_cell"] * 2
    assert type_counts(kinds) == {"red_blood_cell": 95, "infected": 5, "white_blood_cell": 2,
                                  "platelet": 0}
    # 5 of 100 red cells: the Wilson 95% interval is 2.15% to 11.18% (Newcombe 1998's method)
    assert parasitemia(5, 95) == {"parasitemia_percent": 5.0, "parasitemia_low": 2.154,
                                  "parasitemia_high": 11.175}
    assert parasitemia(0, 0)["parasitemia_percent"] == ""
    low, high = wilson_interval(0, 20)
    assert low == 0 and high == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)

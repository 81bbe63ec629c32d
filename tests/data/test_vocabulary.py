"""Every dataset's class names mapped to the one vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.data.vocabulary import CLASSES, kind_of, parse_classes, read_classes
from bloomseg.errors import DataError


def test_both_datasets_names_map_to_the_vocabulary():
    bbbc = parse_classes("0 red_blood_cell\n1 trophozoite\n2 ring\n3 schizont\n4 gametocyte\n"
                         "5 leukocyte\n")
    assert [CLASSES[i] for i in bbbc.targets(np.array([0, 2, 5, 1.0]))] == [
        "red_blood_cell", "ring", "white_blood_cell", "trophozoite"]
    assert not bbbc.known[CLASSES.index("platelet")] and bbbc.known.sum() == 6
    tx = parse_classes("0 white_blood_cell\n1 Red Blood Cell\n\n2 platelet\n")
    assert tx.targets(np.array([1, 0, 2])).tolist() == [0, 5, 6]
    assert tx.known.tolist() == [True, False, False, False, False, True, True]
    assert [kind_of(i) for i in range(len(CLASSES))] == [
        "red_blood_cell", "infected", "infected", "infected", "infected", "white_blood_cell",
        "platelet"]


def test_bad_class_files_are_named(tmp_path):
    with pytest.raises(DataError, match="line 2: class 'neutrophil' is not one bloomseg knows"):
        parse_classes("0 rbc\n1 neutrophil\n")
    with pytest.raises(DataError, match="line 1: expected '<id> <name>'"):
        parse_classes("red_blood_cell\n")
    with pytest.raises(DataError, match="class id 0 named twice"):
        parse_classes("0 rbc\n0 wbc\n")
    with pytest.raises(DataError, match=r"classes.txt: cannot read"):
        read_classes(tmp_path)
    with pytest.raises(DataError, match=r"box class ids \[7\] are not named"):
        parse_classes("0 rbc\n").targets(np.array([0, 7]))

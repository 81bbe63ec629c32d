"""A user's corrected classes (``<stem>_cells.csv``) read, and the classifier adapted to
them from the command line (``train --adapt-classes-only``)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from bloomseg.cli import EXIT_FAILED, main
from bloomseg.data.vocabulary import CLASSES
from bloomseg.errors import DataError
from bloomseg.files import save_png
from bloomseg.train.corrected import NOT_SAID, corrected_fields, said_classes


def _write(path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_a_cell_table_says_what_each_named_cell_is(tmp_path):
    table = tmp_path / "a_cells.csv"
    _write(table, [{"id": 1, "class": "red_blood_cell", "stage": "", "image_diameter": "41.5"},
                   {"id": 2, "class": "infected", "stage": "trophozoite", "image_diameter": "41.5"},
                   {"id": 3, "class": "", "stage": "", "image_diameter": "41.5"},
                   {"id": 4, "class": "platelet", "stage": "", "image_diameter": "41.5"}])
    said, diameter = said_classes(table, 5)
    assert said.tolist() == [CLASSES.index("red_blood_cell"), CLASSES.index("trophozoite"),
                             NOT_SAID, CLASSES.index("platelet"), NOT_SAID]
    assert diameter == 41.5


@pytest.mark.parametrize("row, words", [
    ({"id": 1, "class": "monocyte", "stage": ""}, "line 2: class 'monocyte' is not one of"),
    ({"id": 1, "class": "infected", "stage": ""}, "line 2: an infected cell needs its stage"),
    ({"id": 9, "class": "platelet", "stage": ""}, "line 2: cell 9 is not in its label image"),
    ({"id": "x", "class": "platelet", "stage": ""}, "line 2: id 'x' is not a cell number"),
])
def test_a_bad_row_is_refused_naming_the_file_and_line(tmp_path, row, words):
    table = tmp_path / "a_cells.csv"
    _write(table, [row])
    with pytest.raises(DataError, match=f"a_cells.csv, {words}"):
        said_classes(table, 3)


def test_only_images_with_their_labels_and_a_table_of_classes_are_corrected_fields(tmp_path):
    from bloomseg.cells.formats import save_labels

    image = np.zeros((8, 8, 3), np.uint8)
    for stem, columns in (("named", ["id", "class"]), ("plain", ["id", "area"]), ("none", None)):
        save_png(tmp_path / f"{stem}.png", image)
        save_labels(tmp_path / f"{stem}_labels.tif", np.ones((8, 8), np.int32))
        if columns:
            (tmp_path / f"{stem}_cells.csv").write_text(",".join(columns) + "\n1,red_blood_cell\n")
    found = corrected_fields(tmp_path)
    assert [f.image.name for f in found] == ["named.png"]
    assert found[0].cells == tmp_path / "named_cells.csv"
    assert corrected_fields(tmp_path / "missing") == []


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """The default model's cells of a synthetic smear, as ``predict --cells`` writes them,
    the image beside them (a folder napari's Save would leave)."""
    from bloomseg.viewer.sample import synthetic_smear

    folder = tmp_path_factory.mktemp("images")
    save_png(folder / "smear.png", synthetic_smear()[0][0])
    out = tmp_path_factory.mktemp("predicted")
    assert main(["predict", "default", str(folder / "smear.png"), "-o", str(out), "-q",
                 "--cells"]) == 0
    shutil.copyfile(folder / "smear.png", out / "smear.png")
    return out


def test_adapting_the_classes_only_writes_a_model_with_the_adapted_classifier_and_a_card(
        predicted, tmp_path, capsys):
    from bloomseg.data.images import read_image
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import (
        CLASSIFIER_FILES,
        load_classifier,
        read_checkpoint_file,
        resolve_model,
    )

    folder = tmp_path / "corrected"
    shutil.copytree(predicted, folder)
    table = folder / "smear_cells.csv"
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows[0] |= {"class": "platelet", "stage": ""}  # one correction; the rest confirmed
    rows[1] |= {"class": ""}  # a row with no class teaches nothing
    _write(table, rows)
    run = tmp_path / "run"
    assert main(["train", "--adapt-classes-only", "--data", str(folder), "-o", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"adapted model: {run / 'model'}" in printed
    assert f"{len(rows) - 1} named cells of 1 image(s)" in printed
    model = run / "model"
    assert all((model / name).is_file() for name in CLASSIFIER_FILES)
    # the segmentation is the start model's, unchanged
    start, adapted = read_checkpoint_file(resolve_model("default")), read_checkpoint_file(model)
    assert all(np.array_equal(adapted["state"][k], v) for k, v in start["state"].items())
    card = (model / "MODEL_CARD.md").read_text()
    assert f"Adapted to {len(rows) - 1} named cells of 1 image(s)" in card
    assert "-> platelet: 1 cell(s)" in card and "`smear.png`" in card
    # the shipped classifier's memory: replayed, and each training lab measured by name
    assert "each step beside cells of the labs it learnt" in card
    assert all(f"| {lab} |" in card for lab in ("bbbc041", "raabin", "pbc", "bccd", "mpidb"))
    assert str(tmp_path) not in card
    classifier = load_classifier(model)[0]
    assert classifier.config.infected_threshold >= 0.5
    cells = Segmenter.load(model).predict(read_image(folder / "smear.png"), instances=True)
    assert cells.classes is not None and len(cells.classes) == cells.labels.max()
    # nothing is replaced unless asked; a folder with no named cells is said
    assert main(["train", "--adapt-classes-only", "--data", str(folder), "-o", str(run)]) == EXIT_FAILED
    assert "exists" in capsys.readouterr().err
    table.unlink()
    assert main(["train", "--adapt-classes-only", "--data", str(folder), "-o",
                 str(tmp_path / "other")]) == EXIT_FAILED
    assert "no image there has its <stem>_labels.tif and a <stem>_cells.csv" in capsys.readouterr().err


def test_a_start_model_without_a_classifier_is_refused_or_skipped_as_asked(predicted, tmp_path):
    from bloomseg.errors import ConfigError
    from bloomseg.model.files import CLASSIFIER_FILES, export_model
    from bloomseg.train.corrected import adapt_classes

    plain = export_model("default", tmp_path / "plain")
    for name in CLASSIFIER_FILES:
        (plain / name).unlink()
    lines = []
    assert adapt_classes(plain, [predicted], tmp_path / "run", lines.append, required=False) is None
    assert any("has no cell classifier: the classes the tables name are not learnt" in line
               for line in lines)
    with pytest.raises(ConfigError, match="no cell classifier to adapt"):
        adapt_classes(plain, [predicted], tmp_path / "run", lines.append)

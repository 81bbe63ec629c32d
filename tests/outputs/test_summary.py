"""Outputs of classified cells: class columns in the cell table, QuPath classifications,
per-class counts and parasitemia per image and for the run."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from bloomseg.cells.types import COLOURS, cell_types
from bloomseg.data.vocabulary import CLASSES
from bloomseg.inference.segmenter import Prediction
from bloomseg.outputs.run import OutputOptions, segment_files
from bloomseg.outputs.summary import TOTAL
from conftest import Components


class Named(Components):
    """Dark blobs are cells; a blob's size names it: under 30 px a platelet, over 200 px a
    white cell, and a red cell with a black pixel in it is infected (a ring, with a
    probability of 0.7: uncertain)."""

    def predict(self, image, instances=False, **_) -> Prediction:
        result = super().predict(image, instances)
        if not instances:
            return result
        p = []
        for cell in range(1, result.labels.max() + 1):
            inside = result.labels == cell
            row = np.zeros(len(CLASSES))
            area = inside.sum()
            name = "platelet" if area < 30 else "white_blood_cell" if area > 200 else \
                "ring" if (image[inside].max(axis=1) == 0).any() else "red_blood_cell"
            row[CLASSES.index(name)] = 1
            if name == "ring":  # infected, but not sure of it
                row[CLASSES.index("ring")], row[CLASSES.index("red_blood_cell")] = 0.7, 0.3
            p.append(row)
        result.classes = cell_types(np.array(p), 0.5)
        return result


def smear(red: int, infected: int, white: int, platelets: int) -> np.ndarray:
    image = np.full((60, 200, 3), 250, np.uint8)
    x = 2
    for size, n, ring in ((10, red, False), (10, infected, True), (16, white, False),
                          (4, platelets, False)):
        for _ in range(n):
            image[2:2 + size, x:x + size] = 100
            if ring:
                image[5, x + 3] = 0
            x += size + 2
    return image


def test_classes_reach_every_output(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(smear(6, 2, 1, 2)).save(inputs / "a.png")
    Image.fromarray(smear(3, 0, 0, 1)).save(inputs / "b.png")
    out = tmp_path / "out"
    rows = segment_files(Named(), sorted(inputs.iterdir()), out, OutputOptions(cells=True),
                         progress=False)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    with open(out / "summary.csv", newline="") as f:
        summary = {r["image"].split("/")[-1]: r for r in csv.DictReader(f)}
    a = summary["a.png"]
    assert (a["red_blood_cell"], a["infected"], a["white_blood_cell"], a["platelet"]) == \
        ("6", "2", "1", "2")
    assert float(a["parasitemia_percent"]) == 25.0  # 2 of 8 red cells
    assert 0 < float(a["parasitemia_low"]) < 25 < float(a["parasitemia_high"])
    assert (a["uncertain"], a["infected_uncertain"]) == ("2", "2")
    # both infected calls are uncertain: without them, none of 8 red cells is infected
    assert float(a["parasitemia_certain_percent"]) == 0.0
    total = summary[TOTAL]
    assert (total["red_blood_cell"], total["infected"], total["cells"]) == ("9", "2", "15")
    assert (total["uncertain"], total["infected_uncertain"]) == ("2", "2")
    assert float(total["parasitemia_percent"]) == round(100 * 2 / 11, 3)
    assert float(total["parasitemia_certain_percent"]) == 0.0
    with open(out / "a_cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert [c["class"] for c in cells].count("infected") == 2
    assert {c["stage"] for c in cells if c["class"] == "infected"} == {"ring"}
    assert all(f"p_{name}" in cells[0] for name in CLASSES)
    features = json.loads((out / "a.geojson").read_text())["features"]
    names = sorted(f["properties"]["classification"]["name"] for f in features)
    assert names.count("infected: ring") == 2 and names.count("platelet") == 2
    colour = next(f["properties"]["classification"]["color"] for f in features
                  if f["properties"]["classification"]["name"] == "white_blood_cell")
    assert colour == list(COLOURS["white_blood_cell"])
    assert all("class" not in f["properties"]["measurements"] for f in features)
    # the overlay outlines an infected cell in its class's colour
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    assert (overlay == COLOURS["infected"]).all(axis=2).any()
    # the infected cells are pictured for a person to check, and the report shows them
    assert Image.open(out / "a_infected.png").size == (2 * 96, 96)
    assert not (out / "b_infected.png").exists()
    report = (out / "report.html").read_text()
    assert "Cell classes" in report and 'src="a_infected.png"' in report
    assert "18.18% (" in report  # the run's parasitemia, with its interval
    assert "; 2 of 2 infected calls uncertain" in report
    assert [c["uncertain"] for c in cells if c["class"] == "infected"] == ["True", "True"]


def test_without_classes_no_class_columns_and_no_total(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(smear(2, 0, 0, 0)).save(inputs / "a.png")
    segment_files(Components(), sorted(inputs.iterdir()), tmp_path / "out",
                  OutputOptions(cells=True), progress=False)
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["infected"] == "" and rows[0]["cells"] == "2"
    header = (tmp_path / "out" / "a_cells.csv").read_text().splitlines()[0]
    assert "class" not in header.split(",")


def test_the_parasitemia_without_uncertain_calls_counts_them_as_red_cells():
    from bloomseg.outputs.summary import parasitemias

    counts = {"infected": 3, "infected_uncertain": 1, "red_blood_cell": 7}
    p = parasitemias(counts)
    assert p["parasitemia_percent"] == 30.0  # 3 of 10
    assert p["parasitemia_certain_percent"] == 20.0  # 2 of the same 10
    assert parasitemias({"infected": 0, "red_blood_cell": 0})["parasitemia_certain_percent"] == ""

"""Naming the cells of label images made elsewhere (``bloomseg classify``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from bloomseg.cells.instances import InstanceParams
from bloomseg.data.images import read_labels
from bloomseg.errors import ConfigError, DataError
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.segmenter import Segmenter
from bloomseg.outputs.classify import classify_files, label_file
from conftest import DarkCells, Dummy, by_colour

RED, WHITE = (150, 50, 60), (60, 40, 150)


@pytest.fixture()
def named(monkeypatch) -> Segmenter:
    """A segmenter whose classifier calls bluish cells white and the rest red."""
    monkeypatch.setattr("bloomseg.inference.segmenter.classify", by_colour)
    return Segmenter(DarkCells(), InferenceOptions(tile=224),
                     separation=InstanceParams("distance", 30, 10.0, 2000),
                     cell_diameter=100.0, classifier=Dummy())


def smear_with_labels(red: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A 300x500 field of ``red`` red disks 60 px across and one white disk 100 px
    across, and its label image numbered with gaps (a segmenter's own numbering)."""
    yy, xx = np.mgrid[:300, :500]
    image = np.full((300, 500, 3), 235, np.uint8)
    labels = np.zeros((300, 500), np.uint16)
    centres = [(60, 60 + 90 * i) for i in range(5)] + [(150, 60), (150, 150)]
    for i, (cy, cx) in enumerate(centres[:red]):
        disk = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= 30 ** 2
        image[disk], labels[disk] = RED, 10 + 3 * i
    disk = (yy + 0.5 - 210) ** 2 + (xx + 0.5 - 380) ** 2 <= 50 ** 2
    image[disk], labels[disk] = WHITE, 500
    return image, labels


def write(folder, name: str, array: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return folder / name


def test_each_given_cell_is_named_as_it_is_and_written_as_predict_writes_it(tmp_path, named):
    image, labels = smear_with_labels()
    path = write(tmp_path / "images", "field.png", image)
    write(tmp_path / "cellpose", "field_cp_masks.png", labels)  # cellpose's own name
    rows = classify_files(named, [path], tmp_path / "cellpose", tmp_path / "out", progress=False)
    row = rows[0]
    assert row["status"] == "ok"
    assert (row["cells"], row["complete_cells"]) == (6, 6)
    assert (row["red_blood_cell"], row["white_blood_cell"], row["infected"]) == (5, 1, 0)
    # the size is the cells' own: the median of the whole cells' box sides
    assert (row["diameter"], row["diameter_source"]) == ("60.0", "labels")
    # every cell kept, pixel for pixel, numbered 1..6 in the order of its labels
    written = read_labels(tmp_path / "out" / "field_labels.tif")
    order = np.unique(labels)[1:]
    assert written.max() == 6
    for new, old in enumerate(order, start=1):
        assert ((written == new) == (labels == old)).all()
    with open(tmp_path / "out" / "field_cells.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == ["red_blood_cell"] * 5 + ["white_blood_cell"]
    assert {r["image_diameter_source"] for r in table} == {"labels"}
    features = json.loads((tmp_path / "out" / "field.geojson").read_text())["features"]
    assert len(features) == 6
    with open(tmp_path / "out" / "summary.csv", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))
    assert summary[0]["white_blood_cell"] == "1" and summary[0]["status"] == "ok"
    assert (tmp_path / "out" / "report.html").is_file()
    mask = np.asarray(Image.open(tmp_path / "out" / "field_mask.png")) > 0
    assert (mask == (labels > 0)).all()
    # nothing replaced without overwrite; replaced with it
    again = classify_files(named, [path], tmp_path / "cellpose", tmp_path / "out", progress=False)
    assert again[0]["status"].startswith("skipped: outputs exist")
    again = classify_files(named, [path], tmp_path / "cellpose", tmp_path / "out",
                           overwrite=True, progress=False)
    assert again[0]["status"] == "ok"


def test_a_given_diameter_and_too_few_whole_cells(tmp_path, named):
    image, labels = smear_with_labels(red=2)
    path = write(tmp_path, "few.png", image)
    label_path = write(tmp_path / "labels", "few.tif", labels)
    given = classify_files(named, [path], label_path, tmp_path / "given", diameter=80,
                           progress=False)[0]
    assert (given["diameter"], given["diameter_source"]) == ("80.0", "given")
    # 3 whole cells are too few to take their size: the image's own reading is used
    few = classify_files(named, [path], label_path, tmp_path / "few", progress=False)[0]
    assert few["status"] == "ok" and few["diameter_source"] == "estimated"
    assert few["diameter_note"].startswith("only 3 whole cells in the labels")
    # the model's own scale means nothing for cells made elsewhere; nor does a bad number
    for bad in ("model", 0.5):
        with pytest.raises(ConfigError, match="diameter"):
            classify_files(named, [path], label_path, tmp_path / "bad", diameter=bad,
                           progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_bad_label_image_is_reported_and_the_batch_goes_on(tmp_path, named):
    image, labels = smear_with_labels()
    images = [write(tmp_path / "images", f"{stem}.png", image) for stem in ("a", "b", "c")]
    write(tmp_path / "labels", "a_labels.png", labels)
    write(tmp_path / "labels", "b_labels.png", labels[:200])  # the wrong size
    rows = classify_files(named, images, tmp_path / "labels", tmp_path / "out", progress=False)
    assert rows[0]["status"] == "ok"
    assert "b_labels.png: labels of 500x200 px for an image of 500x300 px" in rows[1]["status"]
    assert rows[2]["status"].startswith("failed: ") and "no label image for it" in rows[2]["status"]
    assert not (tmp_path / "out" / "b_labels.tif").exists()
    with pytest.raises(ConfigError, match="labels is not a label image or a folder of them"):
        classify_files(named, images, tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="one file for 3 images"):
        classify_files(named, images, tmp_path / "labels" / "a_labels.png", tmp_path / "out",
                       progress=False)


def test_label_files_are_found_by_the_images_stem(tmp_path):
    image = tmp_path / "x.png"
    image.touch()
    # beside the images, the image itself is never its own label image
    with pytest.raises(DataError, match="no label image for it"):
        label_file(tmp_path, image)
    (tmp_path / "x.tif").touch()
    assert label_file(tmp_path, image).name == "x.tif"
    (tmp_path / "x_cp_masks.png").touch()
    assert label_file(tmp_path, image).name == "x_cp_masks.png"
    (tmp_path / "x_labels.tif").touch()
    assert label_file(tmp_path, image).name == "x_labels.tif"
    assert label_file(tmp_path / "x.tif", image).name == "x.tif"  # a file is taken as given

"""The cell classifier's inputs and files: windows at one cell size, tiny cells kept,
weights written and read safely, shipped beside an exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bloomseg.errors import CheckpointError, OutputExistsError
from bloomseg.model.classifier import (
    CellClassifier,
    ClassifierConfig,
    cell_windows,
    classify,
    to_window_scale,
    window_scale,
)
from bloomseg.model.files import (
    CLASSIFIER_FILES,
    export_classifier,
    export_model,
    load_classifier,
    save_classifier,
)


def test_a_window_is_centred_on_its_cell_with_the_cell_as_fourth_channel():
    config = ClassifierConfig(crop=16)
    labels = np.zeros((40, 60), np.int32)
    labels[10:14, 20:24] = 1  # centre (11.5, 21.5)
    labels[30:34, 50:54] = 2
    image = np.zeros((40, 60, 3), np.uint8)
    image[labels == 1] = 255
    windows = cell_windows(image, labels, config)
    assert windows.shape == (2, 4, 16, 16)
    # the window's centre pixel (8, 8) holds the cell's centre: rows 4..7 of the cell sit
    # at 8 - 2 .. 8 + 1 (round(11.5) = 12 is row 8)
    assert windows[0, 3].sum() == 16 and windows[0, 3, 6:10, 6:10].all()
    assert np.allclose(windows[0, 0][windows[0, 3] > 0], 0.5)  # white, less 0.5
    # the second cell is centred in its own window too, and is black
    assert (windows[1, 3] == windows[0, 3]).all()
    assert np.allclose(windows[1, 0][windows[1, 3] > 0], -0.5)


def test_window_scale_brings_every_magnification_to_one_size():
    config = ClassifierConfig()
    assert window_scale(config, 80) * 80 == pytest.approx(config.crop / config.window)
    labels = np.zeros((400, 400), np.int32)
    labels[100:200, 100:200] = 1  # a cell 100 px across
    labels[300, 300] = 2  # one pixel: lost by a plain nearest-pixel shrink
    small, small_labels = to_window_scale(np.zeros((400, 400, 3), np.uint8), labels, config, 100)
    assert small.shape[:2] == small_labels.shape == (160, 160)
    assert set(np.unique(small_labels)) == {0, 1, 2}
    assert (small_labels == 1).sum() == pytest.approx(40 * 40, rel=0.1)


def test_classifier_files_round_trip_and_ship_with_a_model(tmp_path):
    torch.manual_seed(0)
    model = CellClassifier(ClassifierConfig(width=4, infected_threshold=0.3))
    save_classifier(tmp_path / "best.pt", model, {"config": model.config.as_dict(), "history": []})
    loaded, payload = load_classifier(tmp_path / "best.pt")
    assert loaded.config == model.config and payload["config"]["infected_threshold"] == 0.3
    x = torch.rand(3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    # shipped beside an exported model, and found there by Segmenter.load
    from bloomseg.inference.segmenter import Segmenter

    folder = export_model("default", tmp_path / "m", classifier=tmp_path)
    assert all((folder / n).is_file() for n in CLASSIFIER_FILES)
    assert "state" not in json.loads((folder / CLASSIFIER_FILES[1]).read_text())
    named = Segmenter.load(folder)
    assert named.classifier is not None and named.classifier.config == model.config
    assert Segmenter.load(folder, classes=False).classifier is None
    with pytest.raises(OutputExistsError):
        export_classifier(tmp_path, folder)
    # exporting the exported model carries its classifier on
    again = export_model(folder, tmp_path / "m2")
    assert (again / CLASSIFIER_FILES[0]).is_file()
    image = np.full((120, 160, 3), 235, np.uint8)
    image[40:80, 40:80] = (150, 50, 60)
    labels = np.zeros((120, 160), np.int32)
    labels[40:80, 40:80] = 1
    p = classify(loaded, image, labels, 40)
    assert p.shape == (1, 7) and np.isclose(p.sum(), 1)


def test_what_is_not_a_classifier_is_refused_by_name(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="x.pt: not a readable cell classifier"):
        load_classifier(tmp_path / "x.pt")
    from bloomseg.model.files import resolve_classifier

    torch.save({"kind": "bloomseg-segmentation-model"}, tmp_path / "seg.pt")
    with pytest.raises(CheckpointError, match="seg.pt: not a bloomseg cell classifier"):
        load_classifier(tmp_path / "seg.pt")
    with pytest.raises(CheckpointError, match="holds no cell classifier"):
        resolve_classifier(tmp_path)
    bad = CellClassifier(ClassifierConfig(width=4))
    save_classifier(tmp_path / "bad.pt", bad, {"config": {"width": 8}})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_classifier(tmp_path / "bad.pt")

"""The cell classifier's inputs and files: windows at one cell size, tiny cells kept,
weights written and read safely, shipped beside an exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bloomseg.data.vocabulary import CLASSES
from bloomseg.errors import CheckpointError, OutputExistsError
from bloomseg.model.classifier import (
    CellClassifier,
    ClassifierConfig,
    cell_windows,
    classify,
    field_reference,
    input_tensor,
    red_profile,
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
    assert windows.dtype == np.uint8 and (windows[0, 0][windows[0, 3] > 0] == 255).all()
    # the second cell is centred in its own window too, and is black
    assert (windows[1, 3] == windows[0, 3]).all()
    assert (windows[1, 0][windows[1, 3] > 0] == 0).all()


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
    p, far, _ = classify(loaded, image, labels, 40)
    assert p.shape == (1, 7) and np.isclose(p.sum(), 1) and far.tolist() == [False]


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


def test_relative_inputs_are_the_same_for_a_lab_whose_stain_is_denser_all_over():
    """A cell judged against its own field: every pixel's density doubled (a stain twice
    as strong) gives the same relative input, where RGB differs."""
    rng = np.random.default_rng(0)
    density = rng.uniform(0.05, 1.0, (64, 64, 3)).astype(np.float32)
    labels = np.zeros((64, 64), np.int32)
    labels[10:50, 10:50] = 1

    def rgb(d):
        return np.clip(np.exp(-d) * 256 - 1, 0, 255).astype(np.float32)

    pale, dense = rgb(density), rgb(2 * density)
    windows = np.stack([np.concatenate([im.transpose(2, 0, 1), labels[None] > 0])
                        for im in (pale, dense)]).astype(np.float32)
    # float windows keep the test exact (uint8 rounding is a small error on top)
    refs = np.stack([np.median(-np.log((im[labels > 0] + 1) / 256), axis=0) for im in (pale, dense)])
    rel = input_tensor(windows, refs, "relative")
    assert torch.allclose(rel[0], rel[1], atol=1e-4)
    assert not torch.allclose(input_tensor(windows, refs, "rgb")[0],
                              input_tensor(windows, refs, "rgb")[1], atol=0.05)
    # field_reference is the cells' median density, never under its floor
    ref = field_reference(pale.round().astype(np.uint8), labels)
    assert np.allclose(ref, refs[0], atol=0.02)
    assert (field_reference(np.full((8, 8, 3), 255, np.uint8), np.ones((8, 8), int)) == 0.02).all()


def test_a_cell_far_from_every_class_learnt_is_unfamiliar(tmp_path):
    """The distance to a class's centre in units of the features' spread: a cell at the
    centre is familiar, one many spreads away is not, and the limit is stored and read."""
    torch.manual_seed(0)
    model = CellClassifier(ClassifierConfig(width=4))
    f = torch.zeros(2, model.centres.shape[1])
    f[1] += 10.0
    model.spread.fill_(2.0)
    d = model.distances(f)
    assert d.shape == (2, 7) and torch.allclose(d[0], torch.zeros(7))
    assert torch.allclose(d[1], torch.full((7,), 5.0))  # 10 / 2 in every feature
    model.config = ClassifierConfig(width=4, distance_limit=1e-6)
    save_classifier(tmp_path / "c.pt", model, {"config": model.config.as_dict()})
    loaded = load_classifier(tmp_path / "c.pt")[0]
    assert torch.equal(loaded.spread, model.spread) and loaded.config.distance_limit == 1e-6
    image = np.full((120, 160, 3), 235, np.uint8)
    image[40:80, 40:80] = (150, 50, 60)
    labels = np.zeros((120, 160), np.int32)
    labels[40:80, 40:80] = 1
    far = classify(loaded, image, labels, 40)[1]
    assert far.tolist() == [True]  # every cell is beyond a limit of nearly zero


def test_the_labs_red_cell_profiles_are_kept_and_a_field_has_its_own(tmp_path):
    model = CellClassifier(ClassifierConfig(width=4))
    width = model.centres.shape[1]
    model.set_labs(torch.arange(2 * width, dtype=torch.float32).reshape(2, width),
                   torch.tensor([0.5, 2.0]))
    model.config = ClassifierConfig(width=4, labs=2)
    save_classifier(tmp_path / "c.pt", model, {"config": model.config.as_dict()})
    loaded = load_classifier(tmp_path / "c.pt")[0]
    assert torch.equal(loaded.lab_centres, model.lab_centres)
    assert loaded.lab_scatter.tolist() == [0.5, 2.0] and loaded.config.labs == 2
    # a field's profile: the mean features of its cells called red, none under 3 of them
    red, white = CLASSES.index("red_blood_cell"), CLASSES.index("white_blood_cell")
    p = np.eye(len(CLASSES))[[red, red, white, red]]
    features = np.array([[1.0, 0.0], [3.0, 2.0], [100.0, 100.0], [5.0, 4.0]])
    assert red_profile(p, features).tolist() == [3.0, 2.0]
    assert red_profile(p[:3], features[:3]) is None


def test_a_classifier_saved_before_class_centres_loads_and_measures_no_distance(tmp_path):
    model = CellClassifier(ClassifierConfig(width=4))
    state = {k: v for k, v in model.state_dict().items()
             if k not in ("centres", "spread", "lab_centres", "lab_scatter")}
    from bloomseg.model.files import CLASSIFIER_KIND

    torch.save({"kind": CLASSIFIER_KIND, "config": {"width": 4}, "state": state},
               tmp_path / "old.pt")
    loaded = load_classifier(tmp_path / "old.pt")[0]
    assert loaded.config.distance_limit == 0 and loaded.config.inputs == "rgb"
    assert loaded.config.labs == 0 and loaded.lab_centres.shape[0] == 0  # judges no run

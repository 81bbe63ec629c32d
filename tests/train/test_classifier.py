"""The cell classifier trained on a segmenter's cells: synthetic smears of drawn kinds are
named exactly, a dataset's unknown classes are masked, and the run folder is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bloomseg.data.images import read_image
from bloomseg.data.synthetic import write_typed_dataset
from bloomseg.data.vocabulary import CLASSES, read_classes
from bloomseg.errors import ConfigError, OutputExistsError
from bloomseg.model.classifier import ClassifierConfig
from bloomseg.model.files import load_classifier
from bloomseg.train.classifier import (
    ClassesConfig,
    Windows,
    balanced_draw,
    fit_temperature,
    masked_loss,
    selection_scores,
    train_classes,
    tune_infected,
)
from conftest import Components

R = 10.0  # the synthetic red cells' radius


class Drawn(Components):
    """The stand-in segmenter with what a classifier needs: a cell diameter and a
    normalisation (the drawn cells are 2R px across)."""

    cell_diameter = 2 * R
    normalise = "none"


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    return write_typed_dataset(tmp_path_factory.mktemp("typed"), n_train=6, n_val=2, n_test=2)


@pytest.fixture(scope="module")
def trained(typed, tmp_path_factory, monkeypatch_module):
    run = tmp_path_factory.mktemp("classes") / "run"
    monkeypatch_module.setattr("bloomseg.inference.segmenter.Segmenter.load",
                               classmethod(lambda cls, name, **kw: Drawn()))
    cfg = ClassesConfig(model="drawn", data=[str(typed)], out=str(run), epochs=12,
                        items_per_epoch=512, batch_size=32, width=8, views=1, lr=3e-3,
                        early_stopping=0)
    return train_classes(cfg, progress=False), cfg


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_tiny_classifier_names_every_drawn_kind_exactly(trained, typed):
    from bloomseg.cells.types import cell_types
    from bloomseg.data.boxes import read_boxes
    from bloomseg.model.classifier import classify

    result, _ = trained
    model, payload = load_classifier(result.run_dir / "best.pt")
    names = read_classes(typed)
    expected_kinds = {"red_blood_cell": "red_blood_cell", "ring": "infected",
                      "white_blood_cell": "white_blood_cell", "platelet": "platelet"}
    total = 0
    for stem in ("test_00", "test_01"):
        image = read_image(typed / "test" / "original" / f"{stem}.png")
        labels = Drawn().predict(image, True).labels
        boxes = read_boxes(typed / "test" / "boxes" / f"{stem}.txt")
        # the drawn cells are apart, so label n is the n-th box (drawn in raster order of
        # their centres is not guaranteed: match by centre instead)
        truth = names.targets(boxes[:, 0])
        h, w = labels.shape
        order = [labels[int(b[2] * h), int(b[1] * w)] - 1 for b in boxes]
        types = cell_types(classify(model, image, labels, 2 * R),
                           model.config.infected_threshold)
        assert len(types) == len(boxes)
        for box_index, cell in enumerate(order):
            kind = expected_kinds[CLASSES[truth[box_index]]]
            assert types[cell]["class"] == kind, (stem, box_index, types[cell])
            if kind == "infected":
                assert types[cell]["stage"] == "ring"
        total += len(boxes)
    assert total >= 20
    assert result.scores["balanced_recall"] == 1.0


def test_the_run_folder_records_its_choices(trained):
    result, cfg = trained
    run = result.run_dir
    for name in ("config.json", "train.log", "windows.npz", "history.csv", "best.pt",
                 "last.pt", "infected_tuning.csv", "val_confusion.json"):
        assert (run / name).is_file(), name
    confusion = json.loads((run / "val_confusion.json").read_text())
    matrix = np.array(confusion["rows_true_columns_predicted"])
    assert confusion["classes"] == list(CLASSES) and matrix.trace() == matrix.sum() > 0
    payload = load_classifier(run / "best.pt")[1]
    assert payload["config"]["infected_threshold"] == result.infected_threshold
    log = (run / "train.log").read_text()
    assert "matched cells red_blood_cell" in log and "infected threshold" in log
    # a finished run is not overwritten by a new one without --overwrite
    with pytest.raises(OutputExistsError):
        train_classes(cfg, progress=False)


def test_a_red_cell_of_a_dataset_without_infections_teaches_red_or_infected():
    from bloomseg.data.vocabulary import allowed_classes

    tx = np.array([True, False, False, False, False, True, True])  # red, white, platelet
    bbbc = np.array([True, True, True, True, True, True, False])  # no platelets
    y = np.array([0, 5, 0, 2])  # txlpbc red, txlpbc white, bbbc red, bbbc ring
    allowed = allowed_classes(y, np.stack([tx, tx, bbbc, bbbc]))
    assert allowed.tolist() == [
        [True, True, True, True, True, False, False],  # red or any stage: unknown there
        [False, False, False, False, False, True, False],  # a white cell is no stage
        [True, False, False, False, False, False, False],  # bbbc labels infections
        [False, False, True, False, False, False, False]]
    logits = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 5.0]])
    rows = torch.from_numpy(allowed[:1])
    # -log(p(red) + p(stages)): the ring's logit counts for the red box, the platelet's against
    p = logits.softmax(dim=1)[0]
    assert masked_loss(logits, rows) == pytest.approx(float(-torch.log(p[:5].sum())))
    logits.requires_grad_(True)
    masked_loss(logits, rows).backward()
    assert logits.grad[0, 6] > 0 and logits.grad[0, 0] < 0 and logits.grad[0, 1] < 0
    # a dataset of normal blood says its red cells are uninfected: red alone
    from bloomseg.train.classifier import known_classes

    normal = known_classes(tx, uninfected=True)
    assert normal.tolist() == [True, True, True, True, True, True, True]
    assert allowed_classes(y[:1], normal[None]).tolist() == [[True] + [False] * 6]
    assert known_classes(tx, uninfected=False).tolist() == tx.tolist()
    # where the dataset labels infections, a red box is red alone
    strict = torch.from_numpy(allowed[2:3])
    assert masked_loss(logits.detach(), strict) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.detach(), torch.tensor([0]))))


def test_each_epoch_draws_every_class_alike():
    y = np.array([0] * 90 + [1] * 5 + [5] * 5)
    windows = Windows(np.zeros((100, 4, 2, 2), np.uint8), y, np.ones((100, 7), bool),
                      np.zeros(100, int), np.zeros(100, int))
    drawn = y[balanced_draw(windows, 300, np.random.default_rng(0))]
    assert np.bincount(drawn, minlength=7)[[0, 1, 5]].tolist() == [100, 100, 100]


def test_each_dataset_weighs_alike_within_a_class():
    # red cells: 90 from dataset 0, 10 from dataset 1; infected cells from dataset 1 only
    y = np.array([0] * 100 + [1] * 20)
    dataset = np.array([0] * 90 + [1] * 10 + [1] * 20)
    windows = Windows(np.zeros((120, 4, 2, 2), np.uint8), y, np.ones((120, 7), bool),
                      dataset, np.zeros(120, int))
    drawn = balanced_draw(windows, 400, np.random.default_rng(0))
    assert len(drawn) == 400
    red = drawn[y[drawn] == 0]
    assert np.bincount(dataset[red]).tolist() == [100, 100]
    assert (y[drawn] == 1).sum() == 200


def test_infected_threshold_is_chosen_for_specificity_first():
    p = np.zeros((6, len(CLASSES)))
    # four red cells, two infected; stage probabilities 0.1, 0.2, 0.3, 0.6 and 0.35, 0.8
    stages = [0.1, 0.2, 0.3, 0.6, 0.35, 0.8]
    p[:, 1] = stages
    p[:, 0] = 1 - p[:, 1]
    y = np.array([0, 0, 0, 0, 1, 1])
    # no red cell may be called infected: the lowest threshold above 0.6
    threshold, rows = tune_infected(p, y, max_false=0.0)
    chosen = next(r for r in rows if r["threshold"] == threshold)
    assert threshold == 0.65
    assert (chosen["false_call_rate"], chosen["recall"], chosen["precision"]) == (0.0, 0.5, 1.0)
    # one red cell of four may be: both infections are found
    threshold, rows = tune_infected(p, y, max_false=0.25)
    chosen = next(r for r in rows if r["threshold"] == threshold)
    assert (threshold, chosen["false_call_rate"], chosen["recall"]) == (0.35, 0.25, 1.0)
    # a rate no threshold keeps: the highest tried
    p[0, 1], p[0, 0] = 1.0, 0.0
    assert tune_infected(p, y, max_false=0.0)[0] == 0.999


def test_the_false_call_budget_holds_on_every_dataset():
    # dataset 0: 900 easy red cells (stages 0.1); dataset 1: 100 red cells, 3 of them
    # looking infected (0.5, 0.6, 0.7); one infected cell at 0.65
    stages = np.array([0.1] * 900 + [0.1] * 97 + [0.5, 0.6, 0.7] + [0.65])
    p = np.zeros((len(stages), len(CLASSES)))
    p[:, 1], p[:, 0] = stages, 1 - stages
    y = np.array([0] * 1000 + [1])
    dataset = np.array([0] * 900 + [1] * 101)
    # pooled, 3 of 1000 red cells (0.3%) may be called: the lowest threshold above the
    # easy cells' 0.1, and the infected cell is found
    pooled, rows = tune_infected(p, y, max_false=0.003)
    assert pooled == 0.15 and next(r for r in rows if r["threshold"] == 0.15)["recall"] == 1.0
    # per dataset, dataset 1 calls 3% at 0.5: none of its red cells may be called
    threshold, rows = tune_infected(p, y, max_false=0.003, dataset=dataset)
    chosen = next(r for r in rows if r["threshold"] == threshold)
    assert threshold == 0.75
    assert (chosen["false_call_rate"], chosen["false_call_rate_pooled"], chosen["recall"]) == \
        (0.0, 0.0, 0.0)
    at_half = next(r for r in rows if r["threshold"] == 0.5)
    assert at_half["false_call_rate"] == pytest.approx(0.03)
    assert at_half["false_call_rate_pooled"] == pytest.approx(0.003)
    # a dataset with under MIN_RED_FOR_RATE red cells does not set the rate
    small = np.array([0] * 950 + [1] * 51)
    assert tune_infected(p, y, max_false=0.003, dataset=small)[0] == 0.15
    # the epoch's selection counts infected cells at that threshold
    windows = Windows(np.zeros((len(y), 4, 2, 2), np.uint8), y, np.ones((len(y), 7), bool),
                      dataset, np.zeros(len(y), int))
    scores = selection_scores(p, windows, max_false=0.003)
    # its likeliest kind is infected (0.65 against 0.35), but not at the budget's threshold
    assert scores["recall_infected"] == 1.0 and scores["infected_at_budget"] == 0.0
    # two red cells (0.6, 0.7) are likelier infected: red recall 998 of 1000
    assert scores["balanced_recall"] == pytest.approx((0.998 + 1.0) / 2)
    assert scores["selection"] == pytest.approx((0.998 + 0.0) / 2)


def test_temperature_calibrates_overconfident_outputs():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 4000)
    # outputs 4x too confident: a margin of 4 * 1.0 where the true odds are e^1 : 1
    right = rng.random(4000) < 1 / (1 + np.exp(-1.0))
    called = np.where(right, truth, 1 - truth)
    logits = np.full((4000, len(CLASSES)), -100.0, np.float32)  # two classes in play
    logits[:, :2] = 0.0
    logits[np.arange(4000), called] = 4.0
    allowed = np.zeros((4000, len(CLASSES)), bool)
    allowed[np.arange(4000), truth] = True
    assert fit_temperature(logits, allowed) == pytest.approx(4.0, rel=0.1)


def test_bad_settings_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="--data"):
        train_classes(ClassesConfig(out=str(tmp_path / "r")), progress=False)
    with pytest.raises(ConfigError, match="views must be an integer in \\[0, 8\\]"):
        ClassesConfig(data=["x"], views=9).check()
    with pytest.raises(ConfigError, match="infected_threshold"):
        ClassifierConfig.from_dict({"infected_threshold": 1.5})
    with pytest.raises(ConfigError, match="classes"):
        ClassifierConfig.from_dict({"classes": ["a", "b"]})
    with pytest.raises(ConfigError, match="uninfected: y is not one of the --data roots"):
        ClassesConfig(data=["x"], uninfected=["y"]).check()
    with pytest.raises(ConfigError, match="temperature"):
        ClassifierConfig.from_dict({"temperature": 0})


def test_crops_become_windows_of_a_cell_on_smear_background(tmp_path):
    from bloomseg.train.classifier import crop_windows
    from conftest import write_crops_root

    write_crops_root(tmp_path)
    config = ClassifierConfig(width=8)
    windows = crop_windows("percentile", str(tmp_path), "train", config, views=1,
                           rng=np.random.default_rng(0), progress=False)
    assert windows.x.shape == (6, 4, config.crop, config.crop)
    names = [CLASSES[c] for c in windows.y]
    assert names == ["ring", "ring", "ring", "ring", "gametocyte", "gametocyte"]
    assert windows.view.tolist() == [0, 1, 0, 1, 0, 1]
    # the crops name stages only: nothing else is known of them
    assert windows.known[0].tolist() == [False, True, True, True, True, False, False]
    mask = windows.x[:, 3].astype(bool)
    centre = config.crop // 2
    assert mask[:, centre, centre].all() and not mask[:, 0, 0].any()
    # around the cell is background, not the crop's black
    rgb = windows.x[:, :3].transpose(0, 2, 3, 1)
    assert (rgb[~mask].mean(axis=0) > 120).all()

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
from bloomseg.errors import ConfigError, DataError, OutputExistsError
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
        p, far, _ = classify(model, image, labels, 2 * R)
        types = cell_types(p, model.config.infected_threshold, far)
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


def test_the_training_lab_is_kept_and_its_own_fields_are_familiar(trained, typed):
    """The synthetic dataset's red-cell profile is kept; its test fields, judged as a
    run, lie near it."""
    from bloomseg.quality.run import run_status

    result, _ = trained
    model = load_classifier(result.run_dir / "best.pt")[0]
    assert model.config.labs == 1 and model.lab_centres.shape == (1, model.centres.shape[1])
    assert float(model.lab_scatter[0]) > 0
    predictions = []
    segmenter = Drawn()
    from bloomseg.model.classifier import classify, red_profile

    for stem in ("test_00", "test_01", "val_00", "val_01"):
        split = stem.split("_")[0]
        image = read_image(typed / split / "original" / f"{stem}.png")
        p, _, features = classify(model, image, segmenter.predict(image, True).labels, 2 * R)
        predictions.append(red_profile(p, features))
    run = run_status(predictions, model.lab_centres.numpy(), model.lab_scatter.numpy())
    assert run.status == "ok" and run.fields >= 3


def test_a_parasite_moved_onto_another_red_cell_keeps_its_excess_density():
    """The parasite's density over its cell's median is added, in proportion, to the
    host cell's own (inside the host only); a cell with no dark body gives nothing."""
    from bloomseg.model.classifier import optical_density
    from bloomseg.train.classifier import parasite_excess, transplanted

    yy, xx = np.mgrid[:64, :64]
    cell = (yy - 32) ** 2 + (xx - 32) ** 2 < 14 ** 2
    dot = (yy - 32) ** 2 + (xx - 32) ** 2 < 3 ** 2
    infected = np.zeros((1, 4, 64, 64), np.uint8)
    infected[0, :3] = 240
    infected[0, 3] = cell
    infected[0, :3, cell] = (180, 120, 140)
    infected[0, :3, dot] = (60, 20, 90)
    excess = parasite_excess(infected[0])
    assert (excess[:, ~cell] == 0).all() and (excess[:, dot].sum(axis=0) > 1).all()
    host = infected.copy()
    host[0, :3, cell] = (200, 150, 160)  # a paler, uninfected cell of another lab
    moved = transplanted(infected, host, np.random.default_rng(0))[0]
    added = optical_density(moved[:3]) - optical_density(host[0, :3])
    assert added[:, dot].sum(axis=0).mean() > 1  # the dot now darkens the host
    assert (moved[:, ~cell] == host[0][:, ~cell]).all()
    plain = host.copy()
    assert (parasite_excess(plain[0]) == 0).all()


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
    windows = _windows(y, np.zeros(100, int))
    drawn = y[balanced_draw(windows.y, windows.dataset, 300, np.random.default_rng(0))]
    assert np.bincount(drawn, minlength=7)[[0, 1, 5]].tolist() == [100, 100, 100]


def test_each_dataset_weighs_alike_within_a_class():
    # red cells: 90 from dataset 0, 10 from dataset 1; infected cells from dataset 1 only
    y = np.array([0] * 100 + [1] * 20)
    dataset = np.array([0] * 90 + [1] * 10 + [1] * 20)
    windows = _windows(y, dataset)
    drawn = balanced_draw(windows.y, windows.dataset, 400, np.random.default_rng(0))
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
    windows = _windows(y, dataset)
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
    with pytest.raises(ConfigError, match="--uninfected y: no such folder"):
        ClassesConfig(data=["x"], uninfected=["y"]).check()
    with pytest.raises(ConfigError, match="inputs: 'hsv' is not one of rgb, relative"):
        ClassesConfig(data=["x"], inputs="hsv").check()
    with pytest.raises(ConfigError, match="inputs"):
        ClassifierConfig.from_dict({"inputs": "hsv"})
    with pytest.raises(ConfigError, match="hard_kinds: bent is not a kind of hard negative"):
        ClassesConfig(data=["x"], hard_kinds=("dense", "bent")).check()
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


def _windows(y: np.ndarray, dataset: np.ndarray) -> Windows:
    """Blank 2 px windows with the given classes and datasets."""
    n = len(y)
    return Windows(np.zeros((n, 4, 2, 2), np.uint8), np.asarray(y), np.ones((n, 7), bool),
                   np.asarray(dataset), np.zeros(n, int), np.ones((n, 3), np.float32),
                   np.zeros(n, int))


def test_an_unboxed_cell_of_healthy_blood_may_be_anything_but_infected():
    from bloomseg.train.classifier import UNBOXED, window_allowed

    w = _windows(np.array([UNBOXED, 0]), np.zeros(2, int))
    w.known[:] = np.array([True, False, False, False, False, True, True])  # no stages named
    assert window_allowed(w).tolist() == [
        [True, False, False, False, False, True, True],  # red, white or platelet: no stage
        [True, True, True, True, True, False, False]]  # a boxed red cell as before
    # counted as uninfected red cells by the threshold: 100 unboxed cells, one called
    # infected at 0.6, make 1% false calls there
    y = np.full(100, UNBOXED)
    p = np.zeros((100, 7))
    p[:, 0] = 1
    p[0] = [0.4, 0.6, 0, 0, 0, 0, 0]
    rows = {r["threshold"]: r for r in tune_infected(p, y, max_false=0.0)[1]}
    assert rows[0.5]["false_call_rate"] == pytest.approx(0.01)
    assert rows[0.65]["false_call_rate"] == 0
    assert tune_infected(p, y, max_false=0.0)[0] == 0.65


def _disc(radius: float, cy: float = 32, cx: float = 32) -> np.ndarray:
    """(64, 64) bool: a disc of a 64-pixel window."""
    yy, xx = np.mgrid[:64, :64]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2


def _window(background, cell: np.ndarray, *painted) -> np.ndarray:
    """(1, 4, 64, 64) uint8: a window of ``background`` colour whose mask is ``cell``,
    each (region, colour) of ``painted`` drawn on it in turn."""
    x = np.zeros((1, 4, 64, 64), np.uint8)
    x[0, :3] = np.broadcast_to(np.asarray(background)[:, None, None], (3, 64, 64))
    x[0, 3] = cell
    for region, colour in painted:
        x[0, :3, region] = colour
    return x


def test_hard_negatives_change_a_red_cell_without_adding_a_parasite():
    """Denser evenly: every pixel's density times one factor (its hue kept); pallor
    filled: no pixel of the cell paler than its median; blurred: the same mean;
    overlapped: a second cell's density added beside it, the cell's mask unchanged."""
    from bloomseg.model.classifier import optical_density
    from bloomseg.train.classifier import hard_negatives

    cell, pallor = _disc(12), _disc(5)
    x = _window((240, 240, 240), cell, (cell, (200, 120, 140)), (pallor, (225, 190, 200)))
    outside = ~cell
    for seed in range(5):
        rng = np.random.default_rng(seed)
        dense = hard_negatives(x, rng, ("dense",))[0]
        ratio = optical_density(dense[:3, cell]) / optical_density(x[0][:3, cell])
        assert np.ptp(ratio) < 0.1 and 1.15 < ratio.mean() < 2.55
        assert (dense[:3, outside] == x[0][:3, outside]).all()
        filled = hard_negatives(x, rng, ("filled",))[0]
        assert (filled[:3, pallor] == np.array([[200], [120], [140]])).all()
        blurred = hard_negatives(x, rng, ("blurred",))[0]
        assert abs(blurred[:3].astype(float).mean() - x[0, :3].astype(float).mean()) < 2
        assert (blurred[:3, 32, 36] < x[0, :3, 32, 36]).all()  # the pallor's edge smeared
        over = hard_negatives(x, rng, ("overlapped",))[0]
        added = optical_density(over[:3]).sum(axis=0) - optical_density(x[0, :3]).sum(axis=0)
        assert added.max() > 0.5  # a second cell's density somewhere
        assert added[outside].sum() > 0.3 * added.sum()  # most of it beside the cell
        assert (over[3] == x[0, 3]).all()
        alone = hard_negatives(x, rng, ("isolated",))[0]
        assert (alone[:, cell] == x[0][:, cell]).all()  # the cell as it was
        assert abs(alone[:3, outside].astype(float).mean() - 240) < 1  # plain background
        assert 0.5 < alone[:3, outside].astype(float).std() < 4  # with a camera's grain


def test_an_isolated_cell_loses_its_neighbours_for_the_window_s_background():
    """A neighbour beside the cell becomes the window's plain background colour."""
    from bloomseg.train.classifier import hard_negatives

    cell, neighbour = _disc(12), _disc(10, cx=58)
    x = _window((230, 225, 235), cell, (neighbour, (150, 90, 120)), (cell, (200, 120, 140)))
    alone = hard_negatives(x, np.random.default_rng(0), ("isolated",))[0]
    assert np.abs(alone[:3, neighbour].mean(axis=1) - [230, 225, 235]).max() < 1
    assert (alone[:, cell] == x[0][:, cell]).all()


def test_a_platelet_laid_on_a_red_cell_adds_its_own_density_on_the_cell():
    """The donor's platelet density over its background, times the references' ratio,
    is added around a pixel of the cell; nothing else changes; a clump as large as half
    the cell, or no platelet to lay, leaves the cell as it was."""
    from bloomseg.model.classifier import optical_density
    from bloomseg.train.classifier import hard_negatives

    cell, body = _disc(14), _disc(3)
    host = _window((235, 235, 235), cell, (cell, (200, 150, 160)))
    donor = _window((240, 240, 240), body, (body, (120, 80, 170)))
    ref = np.ones((1, 3), np.float32)
    for seed in range(5):
        laid = hard_negatives(host, np.random.default_rng(seed), ("platelet",),
                              (ref * 2, donor, ref))[0]
        added = optical_density(laid[:3]) - optical_density(host[0, :3])  # (3, 64, 64)
        own = ((optical_density(donor[0, :3]) - optical_density(np.uint8(240))) * body).sum(axis=(1, 2))
        changed = np.abs(added).sum(axis=0) > 0.05
        assert 0 < changed.sum() <= body.sum() and cell[changed].mean() > 0.5
        # twice the donor's excess (the host's field is twice as dense); uint8 rounds
        assert (added * changed).sum(axis=(1, 2)) == pytest.approx(2 * own, rel=0.1)
        assert (laid[3] == host[0, 3]).all()
    clump = donor.copy()
    clump[0, 3] = _disc(11)
    for platelets in ((ref, clump, ref), (ref, donor[:0], ref[:0]), None):
        same = hard_negatives(host, np.random.default_rng(0), ("platelet",), platelets)
        assert (same == host).all()


def test_faded_windows_make_the_cell_paler_evenly_and_keep_the_rest():
    """Every pixel of the cell's density times one factor in low..1; outside unchanged."""
    from bloomseg.model.classifier import optical_density
    from bloomseg.train.classifier import faded

    cell, nucleus = _disc(14), _disc(7, cy=30, cx=34)
    x = _window((235, 235, 235), cell, (cell, (190, 170, 200)), (nucleus, (70, 40, 110)))
    for seed in range(5):
        pale = faded(x, np.random.default_rng(seed), low=0.35)[0]
        ratio = optical_density(pale[:3, nucleus]) / optical_density(x[0][:3, nucleus])
        assert np.ptp(ratio) < 0.05 and 0.33 < ratio.mean() <= 1.0
        assert (pale[:, ~cell] == x[0][:, ~cell]).all() and (pale[3] == x[0, 3]).all()


def test_zoomed_windows_show_the_cell_larger_about_its_centre():
    """Enlarged by 1..most about the window's centre: a cell's mask grows by the factor
    squared (at most), the centre stays the centre, and a factor of 1 changes nothing."""
    from bloomseg.train.classifier import zoomed

    cell = _disc(10, cy=31.5, cx=31.5)
    x = _window((230, 230, 230), cell, (cell, (120, 120, 120)))
    assert (zoomed(x, np.random.default_rng(0), most=1.0) == x).all()
    for seed in range(5):
        big = zoomed(x, np.random.default_rng(seed), most=1.8)[0]
        grown = big[3].sum() / cell.sum()
        assert 1.0 <= grown <= 1.8 ** 2 * 1.1
        assert big[3, 32, 32] == 1 and big[0, 32, 32] == 120
        assert set(np.unique(big[3])) <= {0, 1}


def test_a_plain_folder_of_healthy_blood_teaches_its_cells_are_not_infected(tmp_path, monkeypatch):
    """--uninfected FOLDER (images only, no boxes): the segmenter's cells are cut as
    unboxed cells of blood free of malaria, split by the folder's own train/val."""
    from bloomseg.data.synthetic import write_typed_dataset
    from bloomseg.train.classifier import UNBOXED, collect

    typed = write_typed_dataset(tmp_path / "typed", n_train=3, n_val=1, n_test=0)
    plain = tmp_path / "healthy"
    plain.mkdir()
    for p in sorted((typed / "train" / "original").iterdir())[:3]:
        (plain / p.name).write_bytes(p.read_bytes())
    cfg = ClassesConfig(model="drawn", data=[str(typed)], out=str(tmp_path / "run"),
                        uninfected=[str(plain)], views=0, val_fraction=0.34)
    cfg.check()
    assert cfg.all_roots == [str(typed), str(plain)]
    config = ClassifierConfig(width=4)
    lines = []
    train = collect(Drawn(), cfg, config, "train", lines.append, progress=False)
    val = collect(Drawn(), cfg, config, "val", lines.append, progress=False)
    for w in (train, val):
        healthy = w.dataset == 1
        assert healthy.any() and (w.y[healthy] == UNBOXED).all()
        assert w.known[healthy][:, 1:5].all()  # every stage known absent
        assert (w.y[~healthy] != UNBOXED).all()  # a root with boxes keeps its matched cells
    assert any("healthy train" in line and "none infected" in line for line in lines)
    assert len(set(train.field[train.dataset == 1])) == 2  # 2 of 3 images trained, 1 held out
    assert (plain / "splits.json").is_file()  # beside the images, as for a --data root


def _cells(n: int, kind: str, seed: int = 0, dataset: int = 0) -> Windows:
    rng = np.random.default_rng(seed)
    return Windows(rng.integers(0, 256, (n, 4, 64, 64)).astype(np.uint8),
                   np.full(n, CLASSES.index(kind)), np.ones((n, len(CLASSES)), bool),
                   np.full(n, dataset), np.zeros(n, int), np.full((n, 3), 0.5, np.float32),
                   np.arange(n))


def test_adapting_to_corrected_cells_learns_them_and_the_anchor_holds_the_start():
    """A few cells the user says are platelets: the adapted last layer calls them so;
    drawn back hard enough to where it started, it does not move; nothing but the last
    layer learns."""
    from bloomseg.model.classifier import CellClassifier
    from bloomseg.train.classifier import adapt_classifier, probabilities

    cells = _cells(24, "platelet")
    torch.manual_seed(0)
    model = CellClassifier(ClassifierConfig(width=4, inputs="relative", infected_threshold=0.5))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    held = CellClassifier(model.config)
    held.load_state_dict(start)  # the same start, adapted with the anchor
    adapt_classifier(held, cells, steps=60, lr=1e-2, anchor=1e9)
    adapt_classifier(model, cells, steps=60, lr=1e-2, anchor=0.0)
    moved = (model.out.weight - start["out.weight"]).abs().max()
    assert (held.out.weight - start["out.weight"]).abs().max() < moved / 3
    p = probabilities(model, cells)
    assert (p.argmax(axis=1) == CLASSES.index("platelet")).mean() > 0.9
    for name, value in model.state_dict().items():
        if not name.startswith("out."):
            assert torch.equal(value, start[name]), name  # only `out` learnt
    with pytest.raises(DataError, match="no corrected cells"):
        adapt_classifier(model, cells[np.zeros(0, int)])


def test_the_memory_is_replayed_and_the_threshold_checked_on_it_and_the_users_cells():
    """A classifier keeps features of its training and validation cells; adapting
    replays them, and the threshold is the lowest that keeps the validation cells'
    false calls in budget, raised above the user's cells where that costs little."""
    from bloomseg.model.classifier import CellClassifier
    from bloomseg.train.classifier import (
        adapt_classifier,
        keep_memory,
        memory_scores,
        probabilities,
        recheck_threshold,
    )

    torch.manual_seed(0)
    model = CellClassifier(ClassifierConfig(width=4, inputs="relative", infected_threshold=0.5,
                                            temperature=1.0, max_false_calls=0.002))
    train = Windows.join([_cells(200, "red_blood_cell", 1), _cells(30, "ring", 2, dataset=1)], 64)
    train.view[::2] = 1  # augmented views are not kept
    val = Windows.join([_cells(150, "red_blood_cell", 3), _cells(20, "ring", 4, dataset=1)], 64)
    kept = keep_memory(model, train, val)
    assert kept == 100 + 15 + len(val)  # the images themselves, each class and lab: all here
    assert model.memory_val.sum() == len(val) and model.memory_features.dtype == torch.float16
    assert sorted(memory_scores(model)) == [0, 1]
    cells = _cells(16, "red_blood_cell", 5)
    adapt_classifier(model, cells, steps=5)
    check = recheck_threshold(model, cells)
    assert check.start == 0.5 and check.false_calls is not None
    assert check.false_calls <= 0.002 or check.threshold == 0.999
    p = probabilities(model, cells, model.config.temperature)
    infected = p[:, [CLASSES.index(s) for s in ("ring", "trophozoite", "schizont", "gametocyte")]]
    assert check.still_called == int((infected.sum(axis=1) >= check.threshold).sum())

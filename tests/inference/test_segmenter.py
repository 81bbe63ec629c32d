"""Segmenting at a cell diameter: the image is resampled to the model's cell size and
every output lands back on the image's own pixel grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloomseg.cells.formats import cell_polygons
from bloomseg.cells.instances import InstanceParams
from bloomseg.cells.matching import label_iou
from bloomseg.errors import ConfigError
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.scale import READINGS
from bloomseg.inference.segmenter import Segmenter
from conftest import DarkCells, Dummy, by_colour

MODEL_DIAMETER = 100.0


class SizedDarkCells(DarkCells):
    """DarkCells with a size head that reads the median equivalent diameter of the dark
    blobs not cut by the view's border (of all of them where every one is cut; ``bias``
    multiplies what it reads, ``fixed`` replaces it), and records the sizes of the views
    it was shown."""

    size_head = True

    def __init__(self, bias: float = 1.0, fixed: float | None = None) -> None:
        super().__init__()
        self.bias, self.fixed, self.views = bias, fixed, []

    def forward_sized(self, x):
        from scipy import ndimage

        self.views.append(tuple(x.shape[-2:]))
        labels, count = ndimage.label((x[0].mean(dim=0) < 0.5).numpy())
        cut = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
        every = np.bincount(labels.ravel())[1:]
        # cells all cut by the view (a far too large trial scale) still read as large
        areas = [a for i, a in enumerate(every, 1) if i not in cut] or list(every)
        if self.fixed is not None or not areas:
            return self(x), torch.tensor([np.log(self.fixed or 1.0)])
        diameter = 2 * np.sqrt(np.median(areas) / np.pi)
        return self(x), torch.tensor([np.log(self.bias * diameter / MODEL_DIAMETER)])


def segmenter(**kwargs) -> Segmenter:
    # tuned at the model's 100 px cells: seeds 30 px apart, cells of 2000 px and more
    return Segmenter(DarkCells(), InferenceOptions(tile=224),
                     separation=InstanceParams("distance", 30, 10.0, 2000),
                     cell_diameter=MODEL_DIAMETER, **kwargs)


def disks(size: tuple[int, int], centres: list[tuple[float, float]], diameter: float
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """A light image with dark disks, and each disk's mask."""
    yy, xx = np.mgrid[:size[0], :size[1]]
    masks = [(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= (diameter / 2) ** 2 for cy, cx in centres]
    image = np.full((*size, 3), 235, np.uint8)
    for m in masks:
        image[m] = (120, 60, 90)
    return image, masks


@pytest.mark.parametrize("diameter", [30, 60, 100, 200])
def test_each_disk_is_one_cell_of_its_own_area_at_the_image_grid(diameter):
    d = diameter
    size = (int(3.2 * d), int(4.4 * d))
    centres = [(1.2 * d, 1.2 * d), (1.2 * d, 3.1 * d), (2.3 * d, 2.1 * d)]
    image, masks = disks(size, centres, d)
    result = segmenter().predict(image, instances=True, diameter=d)
    assert result.labels.shape == result.mask.shape == result.probability.shape == size
    assert result.diameter == d and result.diameter_source == "given"
    assert result.labels.max() == 3
    for m in masks:
        found = np.bincount(result.labels[m]).argmax()
        assert found > 0
        area = (result.labels == found).sum()
        assert abs(area - m.sum()) <= 0.05 * m.sum()
        # the outline QuPath reads lands on the drawn cell
        ring = cell_polygons(result.labels)[found][0]
        from skimage.draw import polygon

        rows, cols = polygon(ring[:, 1], ring[:, 0], size)
        drawn = np.zeros(size, bool)
        drawn[rows, cols] = True
        assert (drawn & m).sum() / (drawn | m).sum() > 0.9


@pytest.mark.parametrize("diameter", [30, 200])
def test_touching_disks_stay_apart_through_the_resampling(diameter):
    d = diameter
    image, masks = disks((int(2 * d), int(3.2 * d)), [(d, d), (d, 1.98 * d)], d)
    labels = segmenter().predict(image, instances=True, diameter=d).labels
    assert labels.max() == 2
    truth = np.zeros(labels.shape, np.int32)
    for i, m in enumerate(masks, 1):
        truth[m & (truth == 0)] = i
    assert (label_iou(labels, truth).max(axis=1) > 0.9).all()


def test_model_keeps_the_model_scale_and_names_it():
    image, _ = disks((220, 330), [(110, 110)], 100)
    plain = segmenter().predict(image, instances=True, diameter="model")
    same = segmenter().predict(image, instances=True, diameter=MODEL_DIAMETER)
    np.testing.assert_array_equal(plain.probability, same.probability)
    assert (plain.diameter, plain.diameter_source, plain.diameter_note) == (MODEL_DIAMETER, "model", "")
    # the segmenter's own diameter applies to every image it is given
    small, _ = disks((90, 120), [(45, 60)], 40)
    assert segmenter(diameter=40).predict(small, instances=True).labels.max() == 1


def grid_of_disks(diameter: float, rows: int = 4, cols: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """Disks of one diameter on a grid, apart."""
    d = diameter
    centres = [(d * (0.9 + 1.5 * r), d * (0.9 + 1.5 * c)) for r in range(rows) for c in range(cols)]
    return disks((int(d * (1.5 * rows + 0.3)), int(d * (1.5 * cols + 0.3))), centres, d)


@pytest.mark.parametrize("diameter", [40, 160])
def test_auto_estimates_each_image_and_segments_it_at_that_scale(diameter):
    image, masks = grid_of_disks(diameter)
    auto = segmenter().predict(image, instances=True)  # auto is the default
    assert auto.diameter_source == "estimated" and auto.diameter_note == ""
    assert abs(auto.diameter / diameter - 1) <= 0.10
    assert auto.labels.max() == len(masks)  # every cell, each one label
    given = segmenter().predict(image, instances=True, diameter=diameter)
    assert (label_iou(auto.labels, given.labels).max(axis=1) > 0.95).all()


@pytest.mark.parametrize("diameter", [40, 160])
def test_auto_asks_the_network_and_settles_where_it_sees_its_own_size(diameter):
    image, masks = grid_of_disks(diameter, 5, 6)
    model = SizedDarkCells()
    seg = Segmenter(model, InferenceOptions(tile=224), separation=InstanceParams("distance", 30, 10.0, 2000),
                    cell_diameter=MODEL_DIAMETER)
    scale = seg.scale_of(image, "auto")
    assert scale.source == "estimated" and scale.settled and scale.note == ""
    assert abs(scale.diameter / diameter - 1) <= 0.05
    # the first trial: the classical estimate, within 2x of the model's own size
    first = np.clip(scale.classical, MODEL_DIAMETER / 2, MODEL_DIAMETER * 2)
    assert scale.readings[0] == pytest.approx(first, abs=0.1)
    # each view is the central VIEW px at the trial scale (the image is smaller here)
    assert all(max(v) <= 448 + 16 for v in model.views)
    assert seg.predict(image, instances=True).labels.max() == len(masks)


def test_the_network_overrules_a_wrong_classical_estimate_and_says_so(monkeypatch):
    from bloomseg.cells import size

    image, _ = grid_of_disks(60, 5, 6)
    # the classical estimate reads granules: 8 px, under the 4x bound
    monkeypatch.setattr(size, "estimate_diameter", lambda im: size.SizeEstimate(8.0, 40))
    seg = Segmenter(SizedDarkCells(), InferenceOptions(tile=224), cell_diameter=MODEL_DIAMETER)
    scale = seg.scale_of(image, "auto")
    # the search starts at most 2x from the model's own size
    assert scale.classical == 8.0 and scale.readings[0] == MODEL_DIAMETER / 2
    assert abs(scale.diameter / 60 - 1) <= 0.05 and scale.settled
    assert scale.note.startswith("the size methods disagree: the network reads ")
    assert "classical estimate 8 px (the network's is used)" in scale.note


def test_a_reading_that_never_settles_is_not_trusted_silently():
    image, _ = grid_of_disks(60, 5, 6)
    # a head that always says the cells are twice its size: it chases them
    seg = Segmenter(SizedDarkCells(fixed=2.0), InferenceOptions(tile=224), cell_diameter=MODEL_DIAMETER)
    scale = seg.scale_of(image, "auto")
    assert scale.settled is False and len(scale.readings) == READINGS
    assert "the network's size reading did not settle" in scale.note
    assert "give --diameter if it is known" in scale.note
    # a head a little off still settles within the search, and agrees with the classical
    near = Segmenter(SizedDarkCells(bias=1.08), InferenceOptions(tile=224),
                     cell_diameter=MODEL_DIAMETER).scale_of(image, "auto")
    assert near.settled and near.note == "" and abs(near.diameter / 60 - 1) <= 0.12


def test_auto_on_a_field_without_cells_keeps_the_model_scale_and_says_why():
    image = np.full((150, 170, 3), 235, np.uint8)
    result = segmenter().predict(image, instances=True)
    assert result.labels.max() == 0
    assert (result.diameter, result.diameter_source) == (MODEL_DIAMETER, "model")
    assert result.diameter_note == ("no cells found to estimate the cell diameter from: "
                                    "segmented at the model's scale")


def test_auto_never_enlarges_an_image_more_than_its_bound():
    # 12 px cells under a 100 px model: an 8x enlargement is refused, 4x is used and noted
    image, _ = grid_of_disks(12, 6, 8)
    result = segmenter().predict(image)
    assert (result.diameter, result.diameter_source) == (25.0, "estimated")
    assert result.diameter_note.startswith("cells estimated at ")
    assert "segmented at 25.0 px (give --diameter to go lower)" in result.diameter_note


def test_auto_with_a_model_that_does_not_know_its_cell_size():
    image, _ = grid_of_disks(40)
    unknown = Segmenter(DarkCells(), InferenceOptions(tile=224))
    result = unknown.predict(image)
    assert (result.diameter, result.diameter_source) == (None, "model")
    assert "does not record its cell diameter" in result.diameter_note


def test_an_empty_image_has_no_cells_at_any_diameter():
    image = np.full((150, 170, 3), 235, np.uint8)
    for d in (20, 100, 400):
        result = segmenter().predict(image, instances=True, diameter=d)
        assert result.labels.max() == 0 and not result.mask.any()


def test_diameters_are_checked():
    image = np.full((40, 40, 3), 235, np.uint8)
    for bad in (4, 1001, float("nan"), "automatic"):
        with pytest.raises(ConfigError, match=r"diameter must be a number in \[5, 1000\], auto "
                                              r"or model"):
            segmenter().predict(image, diameter=bad)
    unknown = Segmenter(DarkCells(), InferenceOptions(tile=224))
    with pytest.raises(ConfigError, match="does not record the diameter"):
        unknown.predict(image, diameter=50)
    with pytest.raises(ConfigError, match="does not record the diameter"):  # at load, once
        Segmenter(DarkCells(), InferenceOptions(tile=224), diameter=50)
    with pytest.raises(ConfigError, match="cell_diameter must be"):
        Segmenter(DarkCells(), cell_diameter=2)


def test_a_pale_smear_is_found_once_its_levels_are_stretched():
    image, masks = disks((300, 300), [(80, 80), (200, 210)], 60)
    image[masks[0] | masks[1]] = (205, 195, 205)  # pale cells on a 235 background
    assert not segmenter(diameter="model").predict(image).mask.any()
    stretched = segmenter(diameter="model", normalise="percentile").predict(image).mask
    assert (stretched == (masks[0] | masks[1])).mean() > 0.995


@pytest.mark.parametrize(("diameter", "normalise"),
                         [(50, "none"), ("auto", "none"), (50, "percentile")])
def test_block_wise_at_a_diameter_equals_in_memory(tmp_path, diameter, normalise):
    import tifffile

    from bloomseg.data.images import TILE
    from bloomseg.outputs.options import OutputOptions
    from bloomseg.outputs.run import segment_image

    d = 50
    # with normalisation, cells in the top half only: a block of the bottom half holds
    # background alone, which its own levels would stretch into one large cell
    height, bottom = (1000, 350) if normalise == "percentile" else (700, 700)
    centres = [(y, x) for y in np.arange(40, bottom, 90) for x in np.arange(40, 700, 85)]
    image, _ = disks((height, 780), centres, d)  # not square: the estimate sees all of it
    tifffile.imwrite(tmp_path / "smear.tif", image, tile=(TILE, TILE))
    labels, rows = {}, {}
    for large in (False, True):
        options = OutputOptions(cells=True, large=large, block=256, halo=128)
        row = segment_image(segmenter(diameter=diameter, normalise=normalise),
                            tmp_path / "smear.tif",
                            tmp_path / str(large), options)
        assert row["status"] == "ok"
        if diameter == "auto":  # one estimate for the image, not one per block
            assert row["diameter_source"] == "estimated"
            assert abs(float(row["diameter"]) / d - 1) <= 0.1
        else:
            assert (row["diameter"], row["diameter_source"]) == ("50.0", "given")
        rows[large] = row
        labels[large] = tifffile.imread(tmp_path / str(large) / "smear_labels.tif")
        cells = (tmp_path / str(large) / "smear_cells.csv").read_text().splitlines()
        assert cells[0].endswith(",image_diameter,image_diameter_source")
        assert cells[1].endswith(f",{row['diameter']},{row['diameter_source']}")
    assert rows[True]["diameter"] == rows[False]["diameter"]
    assert labels[True].max() == labels[False].max() == len(centres)
    assert (label_iou(labels[True], labels[False]).max(axis=1) > 0.98).all()


def test_classes_join_a_white_cell_cut_in_pieces_and_keep_small_platelets(monkeypatch):
    monkeypatch.setattr("bloomseg.inference.segmenter.classify", by_colour)
    yy, xx = np.mgrid[:300, :600]
    image = np.full((300, 600, 3), 235, np.uint8)
    disk = lambda cy, cx, d: (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= (d / 2) ** 2  # noqa: E731
    white = disk(80, 80, 100) | disk(80, 150, 100)  # a waist: two distance peaks
    image[white] = (60, 40, 150)
    image[disk(220, 300, 100)] = (150, 50, 60)  # a red cell
    image[disk(240, 60, 22)] = (60, 40, 150)  # a platelet, under the size limit
    image[disk(240, 150, 22)] = (150, 50, 60)  # red debris of the same size
    pair = disk(80, 400, 100) | disk(80, 498, 100)  # two white cells side by side
    image[pair] = (60, 40, 150)
    plain = segmenter(diameter="model").predict(image, instances=True)
    assert plain.labels.max() == 5 and plain.classes is None  # white in two; small ones gone
    named = segmenter(diameter="model", classifier=Dummy()).predict(image, instances=True)
    kinds = sorted(t["class"] for t in named.classes)
    assert kinds == ["platelet", "red_blood_cell"] + ["white_blood_cell"] * 3
    assert len(named.classes) == named.labels.max() == 5
    whites = [i + 1 for i, t in enumerate(named.classes) if t["class"] == "white_blood_cell"]
    assert ((named.labels == whites[0]) == (white & named.mask)).all()
    # the two touching white cells are not joined: they were never cut apart
    assert named.labels[80, 400] != named.labels[80, 498] and named.labels[80, 498] > 0
    assert named.labels[240, 150] == 0 and named.labels[240, 60] > 0
    # classes can be left off per call
    assert segmenter(diameter="model", classifier=Dummy()).predict(
        image, instances=True, classes=False).labels.max() == 5


def test_cells_found_at_another_size_than_the_diameter_are_noted():
    image, _ = grid_of_disks(60, 4, 5)
    right = segmenter().predict(image, instances=True, diameter=60)
    assert right.diameter_note == ""
    # told 30 px: the seeds are spaced for 30 px cells, but the cells found are still
    # the drawn 60 px disks, and the result says the diameter is in doubt
    wrong = segmenter().predict(image, instances=True, diameter=30)
    assert wrong.diameter_note.startswith("the whole cells found are 6")
    assert "not the 30 px they were segmented at: check the cell diameter" in wrong.diameter_note
    # without cells asked for, nothing is measured
    assert segmenter().predict(image, diameter=30).diameter_note == ""

"""Cell separation: seeded watershed from centre peaks, the distance fallback, tuning."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.cells.instances import InstanceParams, edge_pieces, label_cells, separate, tune, tune_edges
from bloomseg.errors import ConfigError
from bloomseg.train.centres import centre_map


def disks(shape, circles):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r for cy, cx, r in circles]


def test_two_touching_disks_with_two_centre_peaks_give_two_labels():
    a, b = disks((60, 100), [(30, 32, 15), (30, 58, 15)])  # overlap: one blob
    foreground = a | b
    centres = centre_map(np.array([[32.5, 30.5, 30, 30], [58.5, 30.5, 30, 30]]), 0, 0, 60, 100)
    labels = label_cells(foreground, centres, InstanceParams("centres", 10, 0.3, 20))
    assert labels.max() == 2 and labels.dtype == np.int32
    assert set(np.unique(labels[foreground])) == {1, 2} and (labels[~foreground] == 0).all()
    assert labels[30, 20] != labels[30, 70]  # each disk's far side keeps its own label
    # one peak only: one cell
    one = label_cells(foreground, centres * (np.arange(100) < 45), InstanceParams("centres", 10, 0.3, 20))
    assert one.max() == 1


def test_distance_fallback_splits_a_waist_and_keeps_unseeded_blobs():
    a, b, c = disks((60, 120), [(30, 30, 15), (30, 56, 15), (30, 100, 6)])
    labels = label_cells(a | b | c, None, InstanceParams("distance", 10, 5.0, 20))
    # the two big disks part at the waist; the small one has no 5 px deep seed but is a cell
    assert labels.max() == 3
    assert labels[30, 20] != labels[30, 66] and labels[30, 100] not in (0, labels[30, 20])


def test_cells_below_min_area_are_dropped_and_labels_stay_sequential():
    a, b = disks((40, 80), [(20, 20, 10), (20, 60, 2)])
    labels = label_cells(a | b, None, InstanceParams("distance", 5, 1.0, 20))
    assert labels.max() == 1 and (labels[b] == 0).all()


def test_bad_settings():
    with pytest.raises(ConfigError, match="instance method 'blobs' is not one of"):
        label_cells(np.zeros((5, 5), bool), None, InstanceParams("blobs"))
    with pytest.raises(ValueError, match="needs a centre map"):
        label_cells(np.zeros((5, 5), bool), None, InstanceParams("centres"))


def test_tuning_picks_settings_that_separate_the_cells():
    circles = [(30, 32, 15), (30, 58, 15), (30, 110, 15)]
    foreground = np.logical_or.reduce(disks((60, 140), circles))
    boxes = np.array([[cx - r, cy - r, cx + r + 1, cy + r + 1] for cy, cx, r in circles], float)
    centres = centre_map(np.array([[cx + 0.5, cy + 0.5, 2 * r, 2 * r] for cy, cx, r in circles]),
                         0, 0, 60, 140)
    params, rows = tune([(foreground, centres, boxes)], "centres")
    assert len(rows) == 100 and params.method == "centres"
    assert params.min_area <= 500  # the disks are 709 px: 1500 and 3000 drop them
    best = max(r["f1"] for r in rows)
    assert best == 1.0 and min(r["f1"] for r in rows) < 1.0  # min_distance 35 merges two
    assert params.min_distance < 26  # the touching centres are 26 px apart
    assert label_cells(foreground, centres, params).max() == 3


def test_tuning_drops_debris_smaller_than_cells():
    cell = (40, 40, 20)
    foreground = disks((80, 120), [cell])[0]
    foreground[10:20, 100:110] = True  # 100 px of debris, boxed by nobody
    boxes = np.array([[20, 20, 61, 61]], float)
    params, rows = tune([(foreground, None, boxes)], "distance")
    assert params.min_area == 500
    assert label_cells(foreground, None, params).max() == 1
    assert max(r["f1"] for r in rows if r["min_area"] == 50) < 1.0


def test_tuning_weighs_each_group_the_same_however_many_images_it_has():
    three = [(30, 32, 15), (30, 58, 15), (30, 110, 15)]
    touching = (np.logical_or.reduce(disks((60, 140), three)), None,
                np.array([[cx - r, cy - r, cx + r + 1, cy + r + 1] for cy, cx, r in three], float))
    debris = disks((80, 120), [(40, 40, 20)])[0]
    debris[10:20, 100:110] = True
    lonely = (debris, None, np.array([[20, 20, 61, 61]], float))
    _, rows_many = tune([touching] * 4, "distance")
    _, rows_one = tune([lonely], "distance")
    _, rows = tune([touching] * 4 + [lonely], "distance", groups=["many"] * 4 + ["one"])
    for row, many, one in zip(rows, rows_many, rows_one):
        assert row["f1"] == pytest.approx((many["f1"] + one["f1"]) / 2)
        assert row["count_error"] == pytest.approx((many["count_error"] + one["count_error"]) / 2)


def edge_scene():
    """A whole cell (709 px), a cell cut by the left edge down to a 140 px sliver, and a
    half cell (370 px) at the top edge."""
    whole, sliver, half = disks((60, 140), [(30, 70, 15), (30, -8, 15), (0, 120, 15)])
    return whole, sliver, half


def test_edge_pieces_are_the_small_ones_touching_the_given_edges():
    whole, sliver, half = edge_scene()
    pieces = (whole + 2 * sliver + 3 * half).astype(np.int32)
    assert sliver.sum() == 140 and half.sum() == 370
    assert (edge_pieces(pieces, 200) == sliver).all()
    assert (edge_pieces(pieces, 500) == (sliver | half)).all()
    assert not edge_pieces(pieces, 0).any()
    # a side that is not the image's edge (a block's) drops nothing
    assert (edge_pieces(pieces, 500, (True, True, False, True)) == half).all()
    assert not edge_pieces(pieces, 10_000, (False,) * 4).any()


def test_separate_drops_edge_slivers_from_mask_and_labels():
    whole, sliver, half = edge_scene()
    foreground = whole | sliver | half
    params = InstanceParams("distance", 5, 1.0, 20, edge_min_area=200)
    labels, mask = separate(foreground, None, params)
    assert (mask == (whole | half)).all()
    assert labels.max() == 2 and (labels[sliver] == 0).all()
    # without the rule every piece stays
    assert (separate(foreground, None, InstanceParams("distance", 5, 1.0, 20))[1] == foreground).all()
    with pytest.raises(ConfigError, match="edge_min_area must be an integer >= 0, got -1"):
        separate(foreground, None, InstanceParams("distance", edge_min_area=-1))


def test_edge_tuning_finds_the_annotation_convention():
    whole, sliver, half = edge_scene()
    foreground = whole | sliver | half
    # the annotators left out the sliver only: any value in (140, 370] px is right
    params, rows = tune_edges([(foreground, None, whole | half, None)],
                              InstanceParams("distance", 5, 1.0, 20), (0, 100, 300, 600))
    assert params.edge_min_area == 300 and params.min_distance == 5
    dice = {r["edge_min_area"]: r["val_dice"] for r in rows}
    assert dice[300] == 1.0 == rows[2]["score"]
    assert dice[0] == dice[100] == 2 * 1079 / (1219 + 1079)
    assert dice[600] == 2 * 709 / (709 + 1079)
    # a truth that keeps the sliver keeps the rule off (ties go to the smaller value)
    assert tune_edges([(foreground, None, foreground, None)], params,
                      (0, 100, 300))[0].edge_min_area == 0


def box_of(mask: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_edge_tuning_weighs_each_dataset_by_its_own_convention():
    whole, sliver, half = edge_scene()
    foreground = whole | sliver | half
    boxes = np.array([box_of(m) for m in (whole, sliver, half)], float)
    # dataset "masks" leaves the sliver out; dataset "boxes" (two images) boxes every cell
    cases = [(foreground, None, whole | half, None), (foreground, None, None, boxes),
             (foreground, None, None, boxes)]
    params, rows = tune_edges(cases, InstanceParams("distance", 5, 1.0, 20), (0, 300),
                              groups=["masks", "boxes", "boxes"])
    off, on = rows
    assert (off["masks_dice"], on["masks_dice"]) == (2 * 1079 / (1219 + 1079), 1.0)
    assert (off["boxes_f1"], on["boxes_f1"]) == (1.0, 0.8)  # the sliver's box missed
    # each dataset weighs the same however many images it has: (0.939 + 1) / 2 > 0.9
    assert off["score"] == (off["masks_dice"] + 1.0) / 2 and on["score"] == 0.9
    assert params.edge_min_area == 0
    # with the boxes alone, and an image without truth ignored
    alone = tune_edges(cases[1:] + [(foreground, None, None, None)], params, (0, 300),
                       groups=["boxes", "boxes", "boxes"])[1]
    assert [r["boxes_f1"] for r in alone] == [1.0, 0.8]


@pytest.mark.realdata
def test_real_smears_separate_from_exact_centres(tmp_path):
    """The instance step, the matching and the exports on real smears, with the true
    mask and the true boxes' centres standing in for a model's outputs."""
    import json

    from skimage.draw import polygon2mask

    from bloomseg.cells.formats import cell_polygons, geojson_features
    from bloomseg.cells.matching import match_boxes, total_boxes
    from bloomseg.cells.measure import measure_cells
    from bloomseg.data.boxes import read_boxes, yolo_to_cxcywh, yolo_to_xyxy
    from bloomseg.data.dataset import load_sample, scan_split
    from conftest import require_shared_data

    samples = scan_split(require_shared_data(), "test").samples[:3]
    matches = []
    for sample in samples:
        image, mask = load_sample(sample)
        rows = read_boxes(sample.boxes)
        h, w = mask.shape
        centres = centre_map(yolo_to_cxcywh(rows, h, w), 0, 0, h, w)
        labels = label_cells(mask, centres, InstanceParams("centres", 15, 0.3, 50))
        matches.append(match_boxes(labels, yolo_to_xyxy(rows, h, w)))
    total = total_boxes(matches)
    assert total.true == sum(len(read_boxes(s.boxes)) for s in samples)
    assert total.f1 > 0.95 and total.recall > 0.95
    # the last image's cells survive the GeoJSON round trip
    cells = measure_cells(labels, image)
    collection = json.loads(json.dumps(geojson_features(labels, cells)))
    assert len(collection["features"]) == labels.max() == len(cells)
    for index, rings in list(cell_polygons(labels).items())[:20]:
        drawn = polygon2mask(labels.shape, rings[0][:, ::-1] - 0.5)
        truth = labels == index
        assert (drawn & truth).sum() / (drawn | truth).sum() > 0.95


def test_merge_touching_joins_only_chosen_neighbours():
    from bloomseg.cells.instances import merge_touching

    labels = np.array([[1, 1, 2, 2, 0, 5],
                       [1, 1, 2, 3, 0, 5],
                       [4, 4, 0, 3, 0, 0]], np.int32)
    # 1-2 and 2-3 touch and are chosen; 4 touches 1 but is not chosen; 5 touches no one
    merged, members = merge_touching(labels, np.array([True, True, True, False, True]))
    assert members == [[1, 2, 3], [4], [5]]
    assert merged.tolist() == [[1, 1, 1, 1, 0, 3], [1, 1, 1, 1, 0, 3], [2, 2, 0, 1, 0, 0]]
    # nothing chosen: labels unchanged
    same, members = merge_touching(labels, np.zeros(5, bool))
    assert (same == labels).all() and members == [[1], [2], [3], [4], [5]]


def test_the_settings_tried_follow_the_model_cell_size():
    from bloomseg.cells.instances import GRID_DIAMETER, GRIDS, edge_grid_for, grid_for

    assert grid_for("centres", GRID_DIAMETER) == GRIDS["centres"] == grid_for("centres", None)
    half = grid_for("centres", GRID_DIAMETER / 2)
    assert half["min_distance"] == (4, 6, 8, 12, 18)  # lengths halve (rounded)
    assert half["min_area"] == (12, 125, 375, 750)  # areas quarter
    assert half["min_height"] == GRIDS["centres"]["min_height"]  # probabilities stay
    assert grid_for("distance", 2 * GRID_DIAMETER)["min_height"] == (4.0, 10.0, 20.0, 30.0)
    assert edge_grid_for(GRID_DIAMETER / 2)[:3] == (0, 125, 250)


def test_pieces_are_joined_only_where_they_were_cut_apart():
    from bloomseg.cells.instances import fits_one_cell, regroup

    yy, xx = np.mgrid[:200, :400]
    disk = lambda cy, cx, d: (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= (d / 2) ** 2  # noqa: E731
    pieces = np.zeros((200, 400), np.int32)
    # 1, 2: a 120 px white cell cut in two halves
    cut = disk(100, 80, 120)
    pieces[cut & (xx < 80)], pieces[cut & (xx >= 80)] = 1, 2
    # 3, 4: two 100 px cells side by side, touching along 11 px
    pieces[disk(100, 200, 100)] = 3
    pieces[disk(100, 299, 100) & (pieces == 0)] = 4
    assert fits_one_cell(pieces, [[1, 2], [3, 4]], diameter=80).tolist() == [True, False]
    # a shape smaller than one red cell at the image's diameter is not a white cell
    assert fits_one_cell(pieces, [[1, 2]], diameter=140).tolist() == [False]
    # each piece must share the cut: a piece apart from the others spoils the group
    assert fits_one_cell(pieces, [[1, 2, 3]], diameter=80).tolist() == [False]
    # the halves with a small cap cut off one of them: all three were cut apart
    pieces[(pieces == 2) & (xx >= 125)] = 5
    assert fits_one_cell(pieces, [[1, 2, 5]], diameter=80).tolist() == [True]
    assert regroup(pieces, [[1, 2], [4]])[100, 80] == 1 and regroup(pieces, [[1, 2], [4]])[
        100, 200] == 0


def _whole_image_pieces(foreground, centres, params):
    """The watershed over the whole image at once, as separation was first written: what
    flooding each blob alone must equal."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from bloomseg.cells.instances import TIE_SCALE

    distance = ndimage.distance_transform_edt(foreground).astype(np.float32)
    surface = np.where(foreground, centres, 0).astype(np.float32)
    peaks = peak_local_max(surface, min_distance=params.min_distance,
                           threshold_abs=params.min_height, exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    labels = watershed(-(surface + 0.2 * distance / TIE_SCALE), markers, mask=foreground)
    rest, _ = ndimage.label(foreground & (labels == 0))
    return np.where(rest > 0, rest + len(peaks), labels)


def test_each_blob_flooded_alone_gives_the_whole_image_watershed():
    from scipy import ndimage

    from bloomseg.cells.instances import _Prepared

    rng = np.random.default_rng(3)
    shape = (160, 200)
    circles = [(rng.integers(10, 150), rng.integers(10, 190), rng.integers(5, 16)) for _ in range(40)]
    foreground = np.logical_or.reduce(disks(shape, circles))
    centres = centre_map(np.array([[cx + 0.5, cy + 0.5, 2 * r, 2 * r] for cy, cx, r in circles],
                                  float), 0, 0, *shape) + rng.random(shape) * 0.01
    params = InstanceParams("centres", 4, 0.2, 1)
    pieces = _Prepared(foreground, centres, "centres").pieces(params)
    truth = _whole_image_pieces(foreground, centres, params)
    blobs, count = ndimage.label(foreground)
    cells_per_blob = [len(np.unique(truth[blobs == k])) for k in range(1, count + 1)]
    # blobs of one cell (not flooded) and of several (flooded alone)
    assert cells_per_blob.count(1) >= 3 and sum(n > 1 for n in cells_per_blob) >= 3
    assert np.array_equal(pieces, truth)

"""Label TIFFs, GeoJSON polygons and COCO RLE: round trips and formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage.draw import polygon2mask

from bloomseg.cells.formats import (
    cell_polygons,
    coco_annotations,
    coco_dataset,
    geojson_features,
    rle_decode,
    rle_encode,
    save_labels,
)
from bloomseg.cells.measure import measure_cells
from bloomseg.data.images import read_labels
from bloomseg.errors import ImageError


def blobs(shape=(80, 100)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    labels[(yy - 25) ** 2 + (xx - 30) ** 2 <= 15 ** 2] = 1
    labels[(yy - 50) ** 2 / 400 + (xx - 70) ** 2 / 100 <= 1] = 2    # an ellipse
    ring = (yy - 60) ** 2 + (xx - 25) ** 2
    labels[(ring <= 14 ** 2) & (ring > 5 ** 2)] = 3                  # a cell with a hole
    labels[0:6, 90:100] = 4                                          # cut by the border
    return labels


@pytest.mark.parametrize("count, dtype", [(3, np.uint16), (65535, np.uint16), (65536, np.uint32)])
def test_label_tiff_dtype_and_round_trip(tmp_path, count, dtype):
    labels = np.zeros((300, 300), np.int64)
    labels.ravel()[:count] = np.arange(1, count + 1)
    save_labels(tmp_path / "l.tif", labels)
    data = tifffile.imread(tmp_path / "l.tif")
    assert data.dtype == dtype
    np.testing.assert_array_equal(data, labels)
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.pages[0].compression == 8  # zlib/deflate
    np.testing.assert_array_equal(read_labels(tmp_path / "l.tif"), labels)


def test_read_labels_refuses_bad_files(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"nope")
    with pytest.raises(ImageError, match="x.tif: not a readable label image"):
        read_labels(tmp_path / "x.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 4, 3), np.float32), photometric="rgb")
    with pytest.raises(ImageError, match="one integer channel"):
        read_labels(tmp_path / "rgb.tif")


def test_polygons_rasterise_back_to_the_cells():
    labels = blobs()
    polygons = cell_polygons(labels)
    assert sorted(polygons) == [1, 2, 3, 4]
    assert len(polygons[3]) == 2  # exterior and hole
    for index, rings in polygons.items():
        drawn = polygon2mask(labels.shape, rings[0][:, ::-1] - 0.5)  # (row, col) of pixel centres
        for hole in rings[1:]:
            drawn &= ~polygon2mask(labels.shape, hole[:, ::-1] - 0.5)
        truth = labels == index
        iou = (drawn & truth).sum() / (drawn | truth).sum()
        assert iou > 0.95, (index, iou)
        for i, ring in enumerate(rings):
            np.testing.assert_array_equal(ring[0], ring[-1])  # closed
            x, y = ring[:, 0], ring[:, 1]
            area = 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            assert (area > 0) == (i == 0)  # right-hand rule: exterior positive, holes negative
    # the square cut by the border: its outline lies on the pixel edges, to within 0.5 px
    ring = polygons[4][0]
    assert ring[:, 0].min() == pytest.approx(90, abs=0.5) and ring[:, 0].max() == pytest.approx(100, abs=0.5)


def _to_chain(point: np.ndarray, chain: np.ndarray) -> float:
    """A point's distance to a polygonal chain (to the nearest point of its segments)."""
    a, d = chain[:-1], np.diff(chain, axis=0)
    length2 = np.maximum((d * d).sum(axis=1), 1e-12)
    t = np.clip(((point - a) * d).sum(axis=1) / length2, 0, 1)
    return float(np.hypot(*(point - a - t[:, None] * d).T).min())


def test_outlines_are_within_a_pixel_of_those_traced_one_cell_at_a_time():
    """The outlines simplified for every cell at once keep every traced point within the
    tolerance, and lie within 1 px of skimage's simplification of the same trace (what
    the GeoJSON held before it was made faster)."""
    from scipy import ndimage
    from skimage.draw import ellipse
    from skimage.measure import approximate_polygon, find_contours

    from bloomseg.cells.formats import simplified

    rng = np.random.default_rng(3)
    labels = np.zeros((300, 400), np.int32)
    for i in range(30):  # cells of every shape and slant, some cut by others
        rr, cc = ellipse(rng.uniform(0, 300), rng.uniform(0, 400), rng.uniform(8, 30),
                         rng.uniform(8, 30), labels.shape, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = i + 1
    traced = [find_contours(np.pad(labels[box] == i, 1).astype(np.float32), 0.5)[0]
              for i, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None]
    assert len(traced) >= 25
    ours = simplified(traced, 0.5)
    for trace, ring in zip(traced, ours):
        assert np.array_equal(ring[0], trace[0]) and np.array_equal(ring[-1], trace[-1])
        assert max(_to_chain(p, ring) for p in trace) <= 0.5 + 1e-9
        before = approximate_polygon(trace, 0.5)
        assert max(_to_chain(p, before) for p in ring) <= 1.0
        assert max(_to_chain(p, ring) for p in before) <= 1.0
    polygons = cell_polygons(labels)
    assert sorted(polygons) == [i for i in range(1, labels.max() + 1) if (labels == i).any()]


def test_geojson_is_a_valid_feature_collection_for_qupath():
    labels = blobs()
    rows = measure_cells(labels, np.zeros((*labels.shape, 3), np.uint8))
    collection = json.loads(json.dumps(geojson_features(labels, rows)))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 4
    for feature, row in zip(collection["features"], rows):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        for ring in feature["geometry"]["coordinates"]:
            assert len(ring) >= 4 and ring[0] == ring[-1]
            assert all(len(p) == 2 and all(isinstance(v, float) for v in p) for p in ring)
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["classification"]["name"] == "Cell"
        assert props["measurements"]["area"] == row["area"]
    assert len({f["id"] for f in collection["features"]}) == 4


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) < [0.02, 0.5, 0.98, 0.3][seed]
    if seed == 3:
        mask[:] = False
        mask[0, 0] = mask[-1, -1] = True  # starts with a foreground run
    rle = rle_encode(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_known_string():
    # column-major runs: 2 background, 2 cell, 2 background; '2' = chr(48 + 2)
    mask = np.array([[0, 1, 0], [0, 1, 0]], bool)
    assert rle_encode(mask)["counts"] == "222"
    assert rle_encode(np.ones((2, 2), bool))["counts"] == "04"  # 0 background, 4 cell


@pytest.mark.parametrize("seed", range(3))
def test_a_cells_rle_from_its_box_is_the_whole_image_rle(seed):
    """COCO is made per cell from its bounding box, never from an image-sized mask; the
    RLE must be the one of the cell's mask in the whole image, byte for byte."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    labels, count = ndimage.label(rng.random((41, 29)) < 0.4)
    boxes = ndimage.find_objects(labels)
    for index, box in enumerate(boxes, start=1):
        crop = labels[box] == index
        assert rle_encode(crop, (box[0].start, box[1].start), labels.shape) == rle_encode(labels == index)
    assert [a["segmentation"] for a in coco_annotations(labels)] == \
        [rle_encode(labels == i) for i in range(1, count + 1)]


def test_coco_dataset():
    labels = blobs()
    empty = np.zeros((5, 5), np.int32)
    coco = json.loads(json.dumps(coco_dataset([("a.png", labels.shape, coco_annotations(labels)),
                                               ("b.png", empty.shape, coco_annotations(empty))])))
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.png"]
    assert len(coco["annotations"]) == 4 and coco["categories"][0]["name"] == "cell"
    for ann in coco["annotations"]:
        mask = rle_decode(ann["segmentation"])
        index = ann["id"]
        np.testing.assert_array_equal(mask, labels == index)
        assert ann["area"] == int(mask.sum())
        x, y, w, h = ann["bbox"]
        rows, cols = np.nonzero(mask)
        assert (x, y, w, h) == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)

"""Segmenting at a cell diameter: the image is resampled to the model's cell size and
every output lands back on the image's own pixel grid."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from bloomseg.cells.formats import cell_polygons
from bloomseg.cells.instances import InstanceParams
from bloomseg.cells.matching import label_iou
from bloomseg.errors import ConfigError
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.segmenter import Segmenter

MODEL_DIAMETER = 100.0


class DarkCells(nn.Module):
    """A pixel-local stand-in model: dark pixels are cell (logit 8 x darkness)."""

    backbone = None
    grid, reach = 16, 0
    out_channels = 1

    def forward(self, x):
        return 8 * (0.5 - x.mean(dim=1, keepdim=True))  # ImageNet-normalised: cells < 0.5


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


def test_without_a_diameter_the_model_scale_is_used_and_named():
    image, _ = disks((220, 330), [(110, 110)], 100)
    plain = segmenter().predict(image, instances=True)
    same = segmenter().predict(image, instances=True, diameter=MODEL_DIAMETER)
    np.testing.assert_array_equal(plain.probability, same.probability)
    assert (plain.diameter, plain.diameter_source) == (MODEL_DIAMETER, "model")
    # the segmenter's own diameter applies to every image it is given
    small, _ = disks((90, 120), [(45, 60)], 40)
    assert segmenter(diameter=40).predict(small, instances=True).labels.max() == 1


def test_an_empty_image_has_no_cells_at_any_diameter():
    image = np.full((150, 170, 3), 235, np.uint8)
    for d in (20, 100, 400):
        result = segmenter().predict(image, instances=True, diameter=d)
        assert result.labels.max() == 0 and not result.mask.any()


def test_diameters_are_checked():
    image = np.full((40, 40, 3), 235, np.uint8)
    for bad in (4, 1001, float("nan")):
        with pytest.raises(ConfigError, match=r"diameter must be a number in \[5, 1000\]"):
            segmenter().predict(image, diameter=bad)
    unknown = Segmenter(DarkCells(), InferenceOptions(tile=224))
    with pytest.raises(ConfigError, match="does not record the diameter"):
        unknown.predict(image, diameter=50)
    with pytest.raises(ConfigError, match="cell_diameter must be"):
        Segmenter(DarkCells(), cell_diameter=2)


def test_block_wise_at_a_diameter_equals_in_memory(tmp_path):
    import tifffile

    from bloomseg.data.images import TILE
    from bloomseg.outputs.options import OutputOptions
    from bloomseg.outputs.run import segment_image

    d = 50
    centres = [(y, x) for y in np.arange(40, 700, 90) for x in np.arange(40, 700, 85)]
    image, _ = disks((700, 700), centres, d)
    tifffile.imwrite(tmp_path / "smear.tif", image, tile=(TILE, TILE))
    labels = {}
    for large in (False, True):
        options = OutputOptions(cells=True, large=large, block=256, halo=128)
        row = segment_image(segmenter(diameter=d), tmp_path / "smear.tif", tmp_path / str(large),
                            options)
        assert row["status"] == "ok" and row["diameter"] == "50.0" and row["diameter_source"] == "given"
        labels[large] = tifffile.imread(tmp_path / str(large) / "smear_labels.tif")
    assert labels[True].max() == labels[False].max() == len(centres)
    assert (label_iou(labels[True], labels[False]).max(axis=1) > 0.98).all()

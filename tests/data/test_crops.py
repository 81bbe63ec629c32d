import numpy as np
import pytest

from bloomseg.data.crops import BACKGROUND, is_crops, on_background, read_crops
from bloomseg.errors import DataError
from conftest import ring_crop, write_crops_root


def test_crops_take_their_class_session_and_field_diameter(tmp_path):
    write_crops_root(tmp_path)
    assert is_crops(tmp_path)
    crops = read_crops(tmp_path, "train")
    assert [(c.path.name, c.label, c.session, c.diameter) for c in crops] == [
        ("s1-0001-R0.png", "ring", "s1", 65.0), ("s1-0001-R1.png", "ring", "s1", 65.0),
        # the manifest's reviewed stage overrides the folder's
        ("s2-0001-R0.png", "gametocyte", "s2", 90.0)]
    (val,) = read_crops(tmp_path, "val")  # not in the manifest: the folder and the stem say
    assert (val.label, val.session, np.isnan(val.diameter)) == ("ring", "s3", True)
    with pytest.raises(DataError, match="no such split"):
        read_crops(tmp_path, "test")
    (tmp_path / "train" / "blast").mkdir()
    with pytest.raises(DataError, match="named by a class"):
        read_crops(tmp_path, "train")
    (tmp_path / "classes.txt").write_text("0 red_blood_cell\n", encoding="utf-8")
    assert not is_crops(tmp_path)  # a root of fields with boxes


def test_a_cell_on_background_keeps_its_pixels_and_mask():
    crop = ring_crop()
    image, labels = on_background(crop, margin=0.5)
    assert image.shape == (80, 80, 3) and labels.shape == (80, 80)
    inner, cell = image[20:60, 20:60], labels[20:60, 20:60] == 1
    assert cell[20, 20]  # the black hole inside the cell is cell
    assert (inner[crop.max(axis=2) > 0] == crop[crop.max(axis=2) > 0]).all()
    assert (labels == 1).sum() == cell.sum() == (crop.max(axis=2) > 0).sum() + 1
    assert (image[labels == 0] == BACKGROUND).all()  # no grain without a generator
    noisy, _ = on_background(crop, rng=np.random.default_rng(0))
    assert 0.5 < np.abs(noisy[0].astype(float) - BACKGROUND).mean() < 4
    with pytest.raises(DataError, match="holds no cell"):
        on_background(np.zeros((10, 10, 3), np.uint8))

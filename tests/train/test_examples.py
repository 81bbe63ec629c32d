"""Training images at one common cell size: each image scaled so its cells are at the
run's diameter, masks, boxes and centre targets with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bloomseg.data.boxes import box_diameters, yolo_to_cxcywh
from bloomseg.data.dataset import load_sample, pooled_median
from bloomseg.data.synthetic import write_dataset
from bloomseg.model.inputs import View
from bloomseg.train.cache import ImageStore
from bloomseg.train.config import TrainConfig
from bloomseg.train.examples import read_images


@pytest.fixture()
def two_sizes(tmp_path) -> Path:
    """Train images with cells of about 14 px (small_*) and about 30 px (large_*)."""
    root = write_dataset(tmp_path / "data", n_train=3, n_test=0, size=(120, 160), boxes=True,
                         radius=(6, 8), density=1 / 500)
    large = write_dataset(tmp_path / "large", n_train=3, n_test=0, size=(160, 200), seed=1,
                          boxes=True, radius=(14, 16), density=1 / 2500)
    for sub, suffix in (("original", ".png"), ("mask", ".png"), ("boxes", ".txt")):
        for i in range(3):
            shutil.copy(large / "train" / sub / f"train_{i:02d}{suffix}",
                        root / "train" / sub / f"large_{i:02d}{suffix}")
    return root


def read(root: Path, tmp_path: Path, **settings) -> tuple[TrainConfig, dict, ImageStore]:
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), tile=56, **settings)
    store = ImageStore(tmp_path / "store")
    return cfg, read_images(cfg, store), store


def test_each_image_is_scaled_so_its_cells_are_at_the_run_diameter(two_sizes, tmp_path):
    cfg, images, store = read(two_sizes, tmp_path)
    own = {stem: box_diameters(img.boxes, *load_sample(img.sample)[0].shape[:2])
           for stem, img in images.items()}
    assert cfg.cell_diameter == pooled_median(list(own.values()))
    factors = {stem: img.factor for stem, img in images.items()}
    assert max(factors.values()) / min(factors.values()) > 1.8  # the two sizes differ ~2x
    for img in images.values():
        image, mask = img.pixels(store)
        original, truth = load_sample(img.sample)
        assert image.shape[:2] == mask.shape == img.size
        assert img.size == tuple(int(n * img.factor) for n in original.shape[:2])
        # YOLO boxes are fractions: at the scaled size they measure the common diameter
        assert np.median(box_diameters(img.boxes, *img.size)) == pytest.approx(
            cfg.cell_diameter, rel=0.03)
        assert mask.sum() == pytest.approx(truth.sum() * img.factor**2, rel=0.05)
        # views are cut from the scaled image; centre targets peak at the scaled boxes
        assert all(v.y + v.h <= img.size[0] and v.x + v.w <= img.size[1] for v in img.views)
        whole = View("whole", 0, 0, *img.size)
        target = img.centres(whole)
        cx, cy = yolo_to_cxcywh(img.boxes, *img.size)[0][:2]
        assert target[int(cy), int(cx)] > 0.5
        # a scaled image is cached apart from the unscaled one
        assert img.key != img.source_key


def test_without_common_size_images_keep_their_scale(two_sizes, tmp_path):
    cfg, images, store = read(two_sizes, tmp_path, common_size=False)
    assert cfg.cell_diameter is not None
    for img in images.values():
        assert img.factor == 1.0 and img.key == img.source_key
        assert img.size == load_sample(img.sample)[0].shape[:2]


def test_an_image_without_boxes_is_scaled_by_its_datasets_median(two_sizes, tmp_path):
    for stem in ("large_00", "large_01", "large_02"):
        (two_sizes / "train" / "boxes" / f"{stem}.txt").unlink()
    cfg, images, _ = read(two_sizes, tmp_path)
    # one dataset: its median is the run's, so the unboxed images keep their scale
    assert all(images[f"large_{i:02d}"].factor == 1.0 for i in range(3))
    assert all(images[f"train_{i:02d}"].factor != 1.0 for i in range(3))

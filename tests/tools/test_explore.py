"""Dataset exploration: exact statistics on a hand-made dataset, every figure written,
bad files reported and skipped, and a real-data survey."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from bloomseg.errors import DataError
from bloomseg.tools.explore import CLASS_FIGURE, FIGURES, component_areas, explore, find_splits
from conftest import require_shared_data


def _write(root, split, stem, mask, boxes=None):
    for sub in ("original", "mask"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    image = np.full((*mask.shape, 3), 230, np.uint8)
    image[mask] = (200, 100, 120)
    Image.fromarray(image).save(root / split / "original" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / "mask" / f"{stem}.png")
    if boxes is not None:
        (root / split / "boxes").mkdir(parents=True, exist_ok=True)
        (root / split / "boxes" / f"{stem}.txt").write_text(boxes)


@pytest.fixture()
def dataset(tmp_path):
    """train/a: two squares (100 and 64 px) and a 1 px speck, 3 boxes (two classes);
    train/b: one 10x20 rectangle, no boxes file; test/c: empty mask, 1 box."""
    root = tmp_path / "data"
    a = np.zeros((40, 60), bool)
    a[2:12, 2:12] = True    # 100 px
    a[20:28, 30:38] = True  # 64 px
    a[35, 55] = True        # speck
    _write(root, "train", "a", a, "0 0.1 0.2 0.2 0.3\n0 0.5 0.5 0.1 0.1\n\n1 0.5 0.6 0.1 0.1\n")
    b = np.zeros((30, 50), bool)
    b[5:15, 10:30] = True
    _write(root, "train", "b", b)
    _write(root, "test", "c", np.zeros((20, 20), bool), "5 0.5 0.5 0.5 0.5\n")
    return root


def test_component_areas():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: two components (4-connectivity)
    mask[3:5, 3:6] = True
    assert sorted(component_areas(mask).tolist()) == [1, 1, 6]
    assert component_areas(np.zeros((3, 3), bool)).size == 0


def test_explore_statistics_are_exact(dataset, tmp_path):
    out = tmp_path / "out"
    summary = explore(dataset, out, samples=2, min_area=10, progress=False)
    train, test = summary["splits"]["train"], summary["splits"]["test"]
    assert list(summary["splits"]) == ["train", "test"]
    assert train["images"] == 2 and train["sizes"] == ["50x30", "60x40"]
    assert train["components"] == 3 and train["specks"] == 1
    assert train["cell_fraction"]["min"] == pytest.approx(165 / 2400)
    assert train["cell_fraction"]["max"] == pytest.approx(200 / 1500)
    assert train["components_per_image"]["mean"] == 1.5
    assert train["component_area_px"] == {"mean": 364 / 3, "median": 100.0, "min": 64.0,
                                          "max": 200.0, "sum": 364.0}
    assert train["images_with_boxes"] == 1  # b has no boxes file
    assert train["boxes_per_image"]["mean"] == 3
    assert train["boxes_by_class"] == {"red blood cell": 2, "trophozoite": 1}
    assert train["boxes_minus_components"]["mean"] == 1
    assert test["components"] == 0 and test["boxes_by_class"] == {"leukocyte": 1}

    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["split"], r["image"], r["components"], r["specks"], r["boxes"]) for r in rows] == [
        ("train", "a", "2", "1", "3"), ("train", "b", "1", "0", ""), ("test", "c", "0", "0", "1")]
    assert json.loads((out / "summary.json").read_text()) == summary
    markdown = (out / "summary.md").read_text()
    assert "## train: 2 labelled images" in markdown and "(plus 1 specks under 10 px" in markdown
    assert "red blood cell: 2, trophozoite: 1" in markdown
    for name in FIGURES + (CLASS_FIGURE,):
        picture = np.asarray(Image.open(out / name).convert("L"))
        assert picture.size > 10_000 and picture.std() > 5, name  # written and not blank
        assert f"({name})" in markdown


def test_sample_grid_puts_images_above_masks(dataset, tmp_path):
    explore(dataset, tmp_path / "out", splits=["train"], samples=6, progress=False)
    grid = np.asarray(Image.open(tmp_path / "out" / "sample_grid.png").convert("RGB")).astype(int)
    assert grid.shape[1] > grid.shape[0]  # 2 samples (all there are) side by side
    chroma = grid.max(axis=2) - grid.min(axis=2)  # the smears are pink, masks black/white
    top, bottom = chroma[: len(chroma) // 2], chroma[len(chroma) // 2:]
    assert (top > 60).sum() > 500 and (bottom > 60).sum() < 50
    assert (bottom.max(axis=1) < 60).all() and (grid[len(grid) // 2:] < 30).all(axis=2).sum() > 1000
    assert (tmp_path / "out" / CLASS_FIGURE).is_file()


def test_a_bad_image_is_reported_and_skipped(dataset, tmp_path, capsys):
    (dataset / "train" / "original" / "b.png").write_bytes(b"not a png")
    (dataset / "train" / "original" / "orphan.png").write_bytes(b"x")
    summary = explore(dataset, tmp_path / "out", progress=False)
    train = summary["splits"]["train"]
    assert train["images"] == 1
    assert "b.png" in train["problems"] and "images without masks: orphan" in train["problems"]
    assert "Not used:" in (tmp_path / "out" / "summary.md").read_text()


def test_no_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such dataset folder"):
        find_splits(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no split folders"):
        find_splits(tmp_path / "empty")


@pytest.mark.realdata
def test_real_dataset_survey(tmp_path):
    data = require_shared_data()
    summary = explore(data, tmp_path, splits=["test"], samples=2, progress=False)
    test = summary["splits"]["test"]
    assert test["images"] == 10 and test["sizes"] == ["1600x1200"]
    assert test["boxes_by_class"]["red blood cell"] == 825
    assert 700 < test["components"] < 1000 and 0.2 < test["cell_fraction"]["mean"] < 0.5

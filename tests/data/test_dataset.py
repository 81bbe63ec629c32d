"""Dataset folders, masks, YOLO boxes and the persisted train/val split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bloomseg.data.boxes import read_boxes
from bloomseg.data.dataset import load_or_make_splits, load_sample, make_splits, read_mask, scan_split
from bloomseg.errors import DataError
from conftest import require_shared_data


def _dataset(root, stems=("a", "b", "c"), size=(20, 30)):
    for sub in ("original", "mask", "boxes"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "train" / "original" / f"{stem}.png")
        mask = np.zeros(size, np.uint8)
        mask[2:8, 3:9] = 255
        Image.fromarray(np.stack([mask] * 3, axis=2)).save(root / "train" / "mask" / f"{stem}.png")
        (root / "train" / "boxes" / f"{stem}.txt").write_text("0 0.2 0.25 0.2 0.3\n")
    return root


def test_scan_pairs_and_lists_orphans(tmp_path):
    root = _dataset(tmp_path)
    Image.new("RGB", (5, 5)).save(root / "train" / "original" / "lonely.jpg")
    Image.new("L", (5, 5)).save(root / "train" / "mask" / "ghost.png")
    (root / "train" / "boxes" / "b.txt").unlink()
    scan = scan_split(root, "train")
    assert [s.stem for s in scan.samples] == ["a", "b", "c"]
    assert scan.samples[1].boxes is None and scan.samples[0].boxes.name == "a.txt"
    assert scan.images_without_masks == ["lonely"] and scan.masks_without_images == ["ghost"]
    assert scan.problems() == "images without masks: lonely; masks without images: ghost"


def test_scan_without_masks_takes_boxed_images(tmp_path):
    root = _dataset(tmp_path)
    Image.new("RGB", (5, 5)).save(root / "train" / "original" / "boxed.jpg")
    (root / "train" / "boxes" / "boxed.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    Image.new("RGB", (5, 5)).save(root / "train" / "original" / "bare.jpg")
    assert [s.stem for s in scan_split(root, "train").samples] == ["a", "b", "c"]
    scan = scan_split(root, "train", need_mask=False)
    assert [s.stem for s in scan.samples] == ["a", "b", "boxed", "c"]
    boxed = scan.samples[2]
    assert boxed.mask is None and boxed.boxes.name == "boxed.txt"
    assert scan.images_without_masks == ["bare"]
    assert scan.problems() == "images without masks or boxes: bare"


def test_scan_errors(tmp_path):
    with pytest.raises(DataError, match=r"train/original: no such folder"):
        scan_split(tmp_path, "train")
    (tmp_path / "train" / "original").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/original: no images"):
        scan_split(tmp_path, "train")
    Image.new("RGB", (5, 5)).save(tmp_path / "train" / "original" / "x.png")
    Image.new("RGB", (5, 5)).save(tmp_path / "train" / "original" / "x.jpg")
    with pytest.raises(DataError, match=r"x\.jpg and .*x\.png|x\.png and .*x\.jpg"):
        scan_split(tmp_path, "train")


@pytest.mark.parametrize("mode", ["RGB", "L", "1"])
def test_masks_in_every_form(tmp_path, mode):
    cells = np.zeros((6, 8), bool)
    cells[1:4, 2:6] = True
    grey = np.where(cells, 200, 100).astype(np.uint8)  # 100 is below the 127 threshold
    img = Image.fromarray(grey).convert(mode) if mode != "1" else Image.fromarray(cells)
    img.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), cells)


def test_wrong_size_mask_names_both_files(tmp_path):
    root = _dataset(tmp_path)
    Image.new("L", (31, 20)).save(root / "train" / "mask" / "a.png")
    sample = scan_split(root).samples[0]
    expected = r"mask/a\.png: mask is 31x20 but its image .*original/a\.png is 30x20"
    with pytest.raises(DataError, match=expected):
        load_sample(sample)
    image, mask = load_sample(scan_split(root).samples[1])
    assert image.shape == (20, 30, 3) and mask.dtype == bool and mask.sum() == 36


def test_read_boxes(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("0 0.5 0.5 0.1 0.2\n\n5 0.25 0.75 0.05 0.05\n")
    np.testing.assert_array_equal(read_boxes(path), [[0, 0.5, 0.5, 0.1, 0.2], [5, 0.25, 0.75, 0.05, 0.05]])
    path.write_text("")
    assert read_boxes(path).shape == (0, 5)


@pytest.mark.parametrize("line", ["0 0.5 0.5 0.1", "a 0.5 0.5 0.1 0.1", "0 1.5 0.5 0.1 0.1",
                                  "1.5 0.5 0.5 0.1 0.1", "0 0.5 0.5 0 0.1", "0 nan 0.5 0.1 0.1"])
def test_bad_box_lines(tmp_path, line):
    path = tmp_path / "b.txt"
    path.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError, match=r"b\.txt line 2: expected 'class cx cy w h'"):
        read_boxes(path)


def test_make_splits_is_seeded_and_complete():
    stems = [f"s{i:02d}" for i in range(73)]
    a, b = make_splits(stems, seed=1), make_splits(list(reversed(stems)), seed=1)
    assert a == b
    assert len(a["val"]) == 15 and sorted(a["train"] + a["val"]) == stems
    assert make_splits(stems, seed=2)["val"] != a["val"]
    assert make_splits(["x", "y"], seed=0)["val"] and make_splits(["x", "y"], seed=0)["train"]


def test_splits_written_once_and_reused(tmp_path):
    stems = ["a", "b", "c", "d", "e"]
    splits, path = load_or_make_splits(tmp_path, stems, seed=3)
    assert path == tmp_path / "splits.json" and json.loads(path.read_text()) == splits
    again, _ = load_or_make_splits(tmp_path, stems, seed=99)  # reused, seed ignored
    assert again == splits


def test_splits_fall_back_to_run_dir_when_data_is_not_writable(tmp_path):
    data = tmp_path / "data"
    (data / "splits.json").mkdir(parents=True)  # the data folder cannot take the file
    run = tmp_path / "run"
    splits, path = load_or_make_splits(data, ["a", "b", "c"], fallback=run / "splits.json")
    assert path == run / "splits.json" and json.loads(path.read_text()) == splits
    assert [p.name for p in data.iterdir()] == ["splits.json"]  # no temporaries left


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid splits file"),
    ('{"train": ["a"], "val": ["zz"]}', "lists images that are gone: zz"),
    ('{"train": ["a"], "val": []}', "does not list new images: b, c"),
])
def test_bad_splits_file(tmp_path, content, message):
    (tmp_path / "splits.json").write_text(content)
    with pytest.raises(DataError, match=rf"splits\.json: {message}.*delete it to re-split"):
        load_or_make_splits(tmp_path, ["a", "b", "c"])


@pytest.mark.realdata
def test_real_dataset_matches_its_readme():
    root = require_shared_data()
    train, test = scan_split(root, "train"), scan_split(root, "test")
    assert (len(train.samples), len(test.samples)) == (73, 10)
    assert not train.problems() and not test.problems()
    classes = np.concatenate([read_boxes(s.boxes)[:, 0] for s in test.samples])
    assert (classes == 0).sum() == 825 and (classes > 0).sum() == 15
    image, mask = load_sample(test.samples[0])
    assert image.shape == (1200, 1600, 3) and 0.05 < mask.mean() < 0.6

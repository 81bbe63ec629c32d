"""Training datasets and examples: several roots and their validation images, images at
one common cell size (masks, boxes and centre targets with them), the balance between
datasets, and the box targets that masks are learned from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bloomseg.data.boxes import box_diameters, yolo_to_cxcywh
from bloomseg.data.dataset import load_sample, pooled_median
from bloomseg.data.synthetic import write_dataset
from bloomseg.errors import DataError
from bloomseg.model.inputs import View
from bloomseg.train.augment import Microscope
from bloomseg.train.cache import ImageStore
from bloomseg.train.config import TrainConfig
from bloomseg.train.examples import epoch_items, item_seed, items_per_dataset, read_datasets, render_example


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
    datasets = read_datasets(cfg, store, tmp_path / "run")
    return cfg, {img.sample.stem: img for d in datasets for img in d.train + d.val}, store


def test_each_image_is_scaled_so_its_cells_are_at_the_run_diameter(two_sizes, tmp_path):
    cfg, images, store = read(two_sizes, tmp_path)
    own = {stem: box_diameters(img.boxes, *load_sample(img.sample)[0].shape[:2])
           for stem, img in images.items()}
    # measured on the train images (not the held-out ones)
    train = json.loads((two_sizes / "splits.json").read_text())["train"]
    assert cfg.cell_diameter == pooled_median([own[stem] for stem in train])
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
    cfg, images, store = read(two_sizes, tmp_path, common_size=False, size_head=False)
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


@pytest.fixture()
def masked_and_boxed(tmp_path) -> tuple[Path, Path]:
    """A dataset with masks and boxes (no val/), and one of boxes only with a val/ split."""
    masked = write_dataset(tmp_path / "masked", n_train=5, n_test=0, size=(120, 160), boxes=True)
    boxed = write_dataset(tmp_path / "boxed", n_train=3, n_test=2, size=(120, 160), seed=7,
                          boxes=True, radius=(10, 14), density=1 / 1500)
    (boxed / "test").rename(boxed / "val")
    for split in ("train", "val"):
        shutil.rmtree(boxed / split / "mask")
    return masked, boxed


def test_several_roots_each_with_its_own_validation(masked_and_boxed, tmp_path):
    masked, boxed = masked_and_boxed
    cfg = TrainConfig(data=[str(masked), str(boxed)], out=str(tmp_path / "run"), tile=56,
                      partial_boxes=[str(boxed)])
    datasets = read_datasets(cfg, ImageStore(tmp_path / "store"), tmp_path / "run")
    assert [d.name for d in datasets] == ["masked", "boxed"]
    one, two = datasets
    assert (len(one.train), len(one.val)) == (4, 1) and one.val_from == str(masked / "splits.json")
    assert (len(two.train), len(two.val)) == (3, 2) and two.val_from == f"{boxed}/val"
    assert all(i.sample.mask is not None for i in one.train + one.val)
    assert all(i.sample.mask is None and i.boxes is not None for i in two.train + two.val)
    assert one.exhaustive and not two.exhaustive
    assert all(not i.exhaustive for i in two.train)
    # an equal share of every epoch for each dataset, however many images each has
    train = [one.train, two.train]
    items = epoch_items(cfg, train, 1, cached=False)
    per = items_per_dataset(cfg, train)
    assert per[0] == per[1] == round(sum(len(i.views) for d in train for i in d) / 2)
    assert sum(item[0].dataset == "boxed" for item in items) == per[1]
    assert items == epoch_items(cfg, train, 1, cached=False)  # seeded


def test_a_final_fit_trains_on_the_val_split_too(masked_and_boxed, tmp_path):
    _, boxed = masked_and_boxed
    cfg = TrainConfig(data=str(boxed), out=str(tmp_path / "run"), tile=56, val_fraction=0)
    [d] = read_datasets(cfg, ImageStore(tmp_path / "store"), tmp_path / "run")
    assert (len(d.train), len(d.val), d.val_from) == (5, 0, "none")


def test_box_targets_hold_the_true_cells_in_every_draw(masked_and_boxed, tmp_path):
    masked, _ = masked_and_boxed
    store = ImageStore(tmp_path / "store")
    settings = dict(data=str(masked), out=str(tmp_path / "run"), tile=56, colour_jitter=False)
    with_masks = TrainConfig(**settings)
    from_boxes = TrainConfig(**settings, ignore_masks=[str(masked)])
    [a] = read_datasets(with_masks, store, tmp_path / "a")
    [b] = read_datasets(from_boxes, store, tmp_path / "b")
    microscope = Microscope()
    checked, cells, called_background, lines, crossing = 0, 0, 0, 0, 0
    for img_a, img_b in zip(a.train, b.train):
        assert img_b.sample.mask is None and img_a.sample.stem == img_b.sample.stem
        for view in img_a.views:
            for k in range(8):
                seed = item_seed(view.name, k)
                truth = render_example(with_masks, store, None, microscope, (img_a, view, k, seed))
                boxed = render_example(from_boxes, store, None, microscope, (img_b, view, k, seed))
                assert truth.boxes is None and boxed.mask is None
                assert np.array_equal(truth.rgb, boxed.rgb)  # the same draws
                target = boxed.boxes
                # no true cell pixel is called background but at the boxes' edges (the
                # synthetic boxes are the disks' to half a pixel; a turned or flipped box
                # misplaced would call half its cell background)
                wrong = (truth.mask & target.background).sum()
                assert wrong <= 0.15 * truth.mask.sum() + 3
                cells, called_background = cells + truth.mask.sum(), called_background + wrong
                for (x0, y0, x1, y1), rows, cols in zip(target.boxes, target.rows, target.cols):
                    crop = truth.mask[y0:y1, x0:x1]  # each whole line crosses its cell
                    hits = ([crop.any(axis=1)] if rows else []) + ([crop.any(axis=0)] if cols else [])
                    lines += sum(len(h) for h in hits)
                    crossing += sum(int(h.sum()) for h in hits)
                checked += 1
    assert checked >= 40 and called_background < 0.05 * cells
    assert crossing > 0.95 * lines  # but a line at a box's rounded edge


@pytest.mark.parametrize("mode", ["padding", "resize"])
def test_box_targets_of_whole_image_modes_fit_their_input(masked_and_boxed, tmp_path, mode):
    masked, _ = masked_and_boxed
    store = ImageStore(tmp_path / "store")
    settings = dict(data=str(masked), out=str(tmp_path / "run"), tile=56, mode=mode,
                    colour_jitter=False, augment=[], size_head=False)
    cfg, boxed = TrainConfig(**settings), TrainConfig(**settings, ignore_masks=[str(masked)])
    [a], [b] = (read_datasets(c, store, tmp_path / c.mode / str(len(c.ignore_masks)))
                for c in (cfg, boxed))
    for img_a, img_b in zip(a.train, b.train):
        view = img_a.views[0]
        truth = render_example(cfg, store, None, None, (img_a, view, 1, 0))
        target = render_example(boxed, store, None, None, (img_b, view, 1, 0)).boxes
        assert target.background.shape == truth.mask.shape
        # (boxes of a few pixels at this size round coarsely; a box misplaced misses whole)
        assert (truth.mask & target.background).sum() < 0.15 * truth.mask.sum()


def test_the_size_target_is_the_scale_each_view_was_drawn_at(two_sizes, tmp_path):
    cfg, images, store = read(two_sizes, tmp_path, colour_jitter=False, scale_range=2.0)
    microscope = Microscope(("scale",), cfg.scale_range)
    targets = []
    for img in images.values():
        for k, view in enumerate(img.views):
            seed = item_seed(img.key, view.name, k)
            example = render_example(cfg, store, None, microscope, (img, view, k, seed))
            drawn = microscope.draw(np.random.default_rng(seed), 0.5)["scale"]
            assert 0.5 <= drawn <= 2.0
            # the scale made, to the pixel: the cells in the input are that much the size
            assert example.size == pytest.approx(np.log(drawn), abs=0.03)
            targets.append(example.size)
    assert min(targets) < np.log(0.8) and max(targets) > np.log(1.25)  # wider than before
    # unscaled views teach the model's own size
    plain = render_example(cfg, store, None, None, (img, view, 0, 1))
    assert plain.size == 0.0


def test_a_size_head_is_learned_only_where_sizes_are_drawn(tmp_path):
    assert TrainConfig(data="d", out=str(tmp_path)).sizes_drawn()
    for settings in (dict(common_size=False), dict(augment=["blur"]), dict(scale_range=1.0)):
        cfg = TrainConfig(data="d", out=str(tmp_path), **settings)
        cfg.check()  # not an error: the run records its size head off
        assert not cfg.sizes_drawn()


def test_a_folder_of_images_and_their_labels_trains_as_masks_and_boxes(masked_and_boxed, tmp_path):
    from PIL import Image
    from scipy import ndimage

    from bloomseg.cells.formats import save_labels
    from bloomseg.data.dataset import read_mask, scan_split

    masked, _ = masked_and_boxed
    flat = tmp_path / "saved"  # as napari's Save and predict --cells leave it, with the images
    flat.mkdir()
    cells = {}
    for image in sorted((masked / "train" / "original").iterdir()):
        shutil.copy(image, flat / image.name)
        labels = ndimage.label(read_mask(masked / "train" / "mask" / f"{image.stem}.png"))[0]
        save_labels(flat / f"{image.stem}_labels.tif", labels)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / f"{image.stem}_overlay.png")
        cells[image.stem] = labels
    scan = scan_split(flat, "train", need_mask=False)
    assert [s.stem for s in scan.samples] == sorted(cells) and scan.problems() == ""
    cfg = TrainConfig(data=str(flat), out=str(tmp_path / "run"), tile=56)
    [d] = read_datasets(cfg, ImageStore(tmp_path / "store"), tmp_path / "run")
    assert len(d.train) + len(d.val) == len(cells)
    assert d.record(10, 1.0)["with_masks"] == len(cells)
    for item in d.train + d.val:
        labels = cells[item.sample.stem]
        _, mask = load_sample(item.sample)
        assert np.array_equal(mask, labels > 0)  # the mask is the labels' cells
        assert len(item.boxes) == labels.max()  # a box, so a centre, per labelled cell
        cx, cy, bw, bh = yolo_to_cxcywh(item.boxes[:1], *labels.shape)[0]
        ys, xs = np.nonzero(labels == 1)  # the first box is cell 1's, to its pixel edges
        assert (cx, cy) == pytest.approx(((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2))
        assert (bw, bh) == pytest.approx((xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()))
    # a labels file without its image is named; the folder has no val or test split
    (flat / "lost_labels.tif").write_bytes((flat / f"{sorted(cells)[0]}_labels.tif").read_bytes())
    assert "lost_labels.tif" in scan_split(flat, "train", need_mask=False).problems()
    with pytest.raises(DataError, match="no test/ split"):
        scan_split(flat, "test")

"""Evaluation on synthetic data with known confusion counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bloomseg.cells.formats import save_labels
from bloomseg.cells.instances import InstanceParams
from bloomseg.data.dataset import load_sample, scan_split
from bloomseg.errors import DataError
from bloomseg.evaluation.evaluate import COUNT_PLOT, PLOTS, evaluate
from bloomseg.evaluation.pixels import PixelCounts, pixel_scores
from bloomseg.inference.segmenter import Prediction
from conftest import write_dataset


class AllCells:
    """A 'segmenter' that calls every pixel a cell."""

    name = "all cells (test)"

    def predict(self, image, instances=False):
        mask = np.ones(image.shape[:2], bool)
        labels = mask.astype(np.int32) if instances else None  # one cell: the whole image
        return Prediction(mask.astype(np.float32), mask, 0.0, None, labels)


class ReadsColours:
    """A 'segmenter' that reads cells off the image: red = 10 x label, green 0."""

    name = "reads colours (test)"

    separation = InstanceParams()

    def predict(self, image, instances=False):
        labels = np.where(image[..., 1] == 0, image[..., 0] // 10, 0).astype(np.int32)
        mask = labels > 0
        return Prediction(mask.astype(np.float32), mask, 0.0, None, labels if instances else None)


def _write_cells(root, stem, true_labels, drawn_labels, boxes):
    """An image whose colours encode ``drawn_labels``, its mask, true labels and boxes."""
    h, w = true_labels.shape
    image = np.full((h, w, 3), 240, np.uint8)
    image[drawn_labels > 0] = 0
    image[..., 0][drawn_labels > 0] = 10 * drawn_labels[drawn_labels > 0]
    for sub in ("original", "mask", "labels", "boxes"):
        (root / "test" / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "test" / "original" / f"{stem}.png")
    Image.fromarray((true_labels > 0).astype(np.uint8) * 255).save(root / "test" / "mask" / f"{stem}.png")
    save_labels(root / "test" / "labels" / f"{stem}.tif", true_labels)
    (root / "test" / "boxes" / f"{stem}.txt").write_text("".join(
        f"0 {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"
        for x0, y0, x1, y1 in boxes))


def test_instance_metrics_with_known_matches(tmp_path):
    # image a: three cells found exactly, and a fourth box with nothing there (a miss)
    a = np.zeros((40, 60), np.int32)
    a[5:15, 5:15], a[5:15, 20:30], a[25:35, 40:50] = 1, 2, 3
    boxes_a = [(5, 5, 15, 15), (20, 5, 30, 15), (40, 25, 50, 35), (5, 25, 15, 35)]
    # image b: two touching cells (100 and 150 px) drawn as one: it overlaps the
    # larger at IoU 0.6 (a match) and the smaller at 0.4
    b = np.zeros((40, 60), np.int32)
    b[5:15, 5:15], b[5:15, 15:30] = 1, 2
    root = tmp_path / "data"
    _write_cells(root, "a", a, a, boxes_a)
    _write_cells(root, "b", b, (b > 0).astype(np.int32), [(5, 5, 15, 15), (15, 5, 30, 15)])
    m = evaluate(ReadsColours(), root, tmp_path / "eval", progress=False)
    boxes = m["instances"]["boxes"]
    assert (boxes["tp"], boxes["fp"], boxes["fn"], boxes["ignored_border_cells"]) == (4, 0, 2, 0)
    assert boxes["f1"] == pytest.approx(8 / 10) and boxes["recall"] == pytest.approx(4 / 6)
    assert (boxes["true_cells"], boxes["predicted_complete_cells"]) == (6, 4)
    assert boxes["mean_count_error"] == -1 and boxes["mean_absolute_count_error"] == 1
    assert boxes["mean_relative_count_error"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    masks = m["instances"]["masks"]
    assert (masks["tp"], masks["fp"], masks["fn"]) == (4, 0, 1)
    assert masks["panoptic_quality"] == pytest.approx((3 + 0.6) / (4 + 0.5))
    assert masks["f1"] == pytest.approx(8 / 9)
    per_image = json.loads((tmp_path / "eval" / "per_image_metrics.json").read_text())
    assert [(r["cells"], r["true_cells"], r["cell_tp"]) for r in per_image] == [(3, 4, 3), (1, 2, 1)]
    assert per_image[1]["panoptic_quality"] == pytest.approx(0.6 / 1.5)
    assert (tmp_path / "eval" / COUNT_PLOT).stat().st_size > 1000
    # the quality verdict against the truth: a (F1 6/7, count off by 25%) is good, b
    # (F1 2/3) failed; with 3 and 1 cells found both are flagged as next to empty
    assert [(r["failed"], r["qc"], r["qc_reasons"]) for r in per_image] == [
        (False, "check", "empty"), (True, "check", "empty")]
    q = m["quality"]
    assert (q["images"], q["failed"], q["failed_flagged"], q["good_flagged"]) == (2, 1, 1, 1)
    assert (q["recall"], q["false_flags"]) == (1.0, 1.0)
    assert "Quality verdict" in (tmp_path / "eval" / "report.html").read_text()


def test_a_split_of_boxes_only_is_scored_by_its_cells(tmp_path):
    import shutil

    a = np.zeros((40, 60), np.int32)
    a[5:15, 5:15], a[5:15, 20:30], a[25:35, 40:50] = 1, 2, 3
    root = tmp_path / "data"
    _write_cells(root, "a", a, a, [(5, 5, 15, 15), (20, 5, 30, 15), (40, 25, 50, 35),
                                   (5, 25, 15, 35)])
    _write_cells(root, "b", a, a, [(5, 5, 15, 15)])
    for sub in ("mask", "labels"):
        shutil.rmtree(root / "test" / sub)
    out = tmp_path / "eval"
    m = evaluate(ReadsColours(), root, out, visualize=1, progress=False)
    assert "dice" not in m and "per_image_mean" not in m and m["num_samples"] == 2
    boxes = m["instances"]["boxes"]
    assert (boxes["tp"], boxes["fp"], boxes["fn"]) == (4, 2, 1)
    per_image = json.loads((out / "per_image_metrics.json").read_text())
    assert [r["cell_f1"] for r in per_image] == pytest.approx([6 / 7, 2 / 4])
    assert all("dice" not in r for r in per_image)
    assert not any((out / name).exists() for name in PLOTS) and (out / COUNT_PLOT).is_file()
    # best and worst by cell F1; image | cells (no mask: no error map)
    pictures = sorted(p.name for p in (out / "visualizations").iterdir())
    assert pictures == ["best1_a.png", "worst1_b.png"]
    assert np.asarray(Image.open(out / "visualizations" / pictures[0])).shape == (40, 120, 3)
    report = (out / "report.html").read_text()
    assert "Cells against boxes" in report and "Pixels" not in report


def test_pixel_scores_of_known_counts():
    m = pixel_scores(PixelCounts(tp=6, fp=2, fn=4, tn=8))
    assert m["iou"]["cell"] == pytest.approx(6 / 12)
    assert m["iou"]["background"] == pytest.approx(8 / 14)
    assert m["dice"]["cell"] == pytest.approx(12 / 18) == m["f1"]
    assert m["dice"]["background"] == pytest.approx(16 / 22)
    assert m["precision"]["cell"] == pytest.approx(6 / 8)
    assert m["recall"]["cell"] == pytest.approx(6 / 10)
    assert m["precision"]["background"] == pytest.approx(8 / 12)
    assert m["recall"]["background"] == pytest.approx(8 / 10)
    assert m["accuracy"] == pytest.approx(14 / 20)
    assert m["iou"]["mean"] == pytest.approx((6 / 12 + 8 / 14) / 2)


def test_evaluate_writes_exact_metrics_and_every_figure(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=1, n_test=3, size=(30, 40))
    out = tmp_path / "eval"
    metrics = evaluate(AllCells(), data, out, visualize=1, progress=False)
    masks = [load_sample(s)[1] for s in scan_split(data, "test").samples]
    cells = sum(int(m.sum()) for m in masks)
    pixels = 3 * 30 * 40
    assert metrics["num_samples"] == 3
    assert metrics["dice"]["cell"] == pytest.approx(2 * cells / (2 * cells + pixels - cells))
    assert metrics["iou"]["background"] == 0.0
    assert metrics["recall"]["cell"] == 1.0
    assert metrics["accuracy"] == pytest.approx(cells / pixels)
    assert metrics["per_image_mean"]["dice"] == pytest.approx(
        np.mean([2 * m.sum() / (m.sum() + m.size) for m in masks]))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert "instances" not in metrics  # no boxes, no labels
    per_image = json.loads((out / "per_image_metrics.json").read_text())
    assert [r["tp"] for r in per_image] == [int(m.sum()) for m in masks]
    # the cell size each image was segmented at (this stand-in: its own scale)
    assert {(r["diameter"], r["diameter_source"], r["diameter_note"]) for r in per_image} == {
        ("", "model", "")}
    for name in PLOTS:
        assert (out / name).stat().st_size > 1000
    pictures = sorted(p.name for p in (out / "visualizations").iterdir())
    assert len(pictures) == 2 and pictures[0].startswith("best1_") and pictures[1].startswith("worst1_")


def test_evaluate_names_orphans(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=1, n_test=2, size=(30, 40))
    (data / "test" / "mask" / "test_01.png").unlink()
    with pytest.raises(DataError, match="images without masks or boxes: test_01"):
        evaluate(AllCells(), data, tmp_path / "eval", progress=False)


class Counted(AllCells):
    """All cells, counting its predictions and the images it saw."""

    def __init__(self):
        self.seen = []

    def predict(self, image, instances=False):
        self.seen.append((image.tobytes(), instances))
        return super().predict(image, instances)


@pytest.mark.parametrize("visualize", [0, 1, 2, 5])
def test_evaluate_predicts_each_image_once_even_for_its_pictures(tmp_path, visualize):
    """The pictures of the best and worst images reuse the predictions scored; the
    choice of images is that of a full ranking (best first seen, worst last seen)."""
    data = write_dataset(tmp_path / "data", n_train=1, n_test=5, size=(30, 40), seed=3)
    segmenter = Counted()
    metrics = evaluate(segmenter, data, tmp_path / "eval", visualize=visualize, progress=False)
    assert len(segmenter.seen) == metrics["num_samples"] == 5
    assert len({image for image, _ in segmenter.seen}) == 5
    assert all(instances == (visualize > 0) for _, instances in segmenter.seen)
    per_image = json.loads((tmp_path / "eval" / "per_image_metrics.json").read_text())
    ranked = sorted(per_image, key=lambda r: r["dice"], reverse=True)
    names = {r["image"]: f"best{i + 1}" for i, r in enumerate(ranked[:visualize])}
    names |= {r["image"]: f"worst{i + 1}" for i, r in enumerate(ranked[::-1][:visualize])}
    expected = {f"{name}_{stem}.png" for stem, name in names.items()}
    folder = tmp_path / "eval" / "visualizations"
    written = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    assert written == expected and len(expected) == min(5, 2 * visualize)

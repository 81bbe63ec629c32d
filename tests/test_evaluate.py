"""Evaluation on synthetic data with known confusion counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bloomseg.data import load_sample, scan_split
from bloomseg.errors import DataError
from bloomseg.evaluate import PLOTS, evaluate
from bloomseg.metrics import PixelCounts, report
from bloomseg.predict import Prediction
from conftest import write_dataset


class AllCells:
    """A 'segmenter' that calls every pixel a cell."""

    def predict(self, image):
        mask = np.ones(image.shape[:2], bool)
        return Prediction(mask.astype(np.float32), mask, 0.0)


def test_report_of_known_counts():
    m = report(PixelCounts(tp=6, fp=2, fn=4, tn=8))
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
    per_image = json.loads((out / "per_image_metrics.json").read_text())
    assert [r["tp"] for r in per_image] == [int(m.sum()) for m in masks]
    for name in PLOTS:
        assert (out / name).stat().st_size > 1000
    pictures = sorted(p.name for p in (out / "visualizations").iterdir())
    assert len(pictures) == 2 and pictures[0].startswith("best1_") and pictures[1].startswith("worst1_")


def test_evaluate_names_orphans(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=1, n_test=2, size=(30, 40))
    (data / "test" / "mask" / "test_01.png").unlink()
    with pytest.raises(DataError, match="images without masks: test_01"):
        evaluate(AllCells(), data, tmp_path / "eval", progress=False)

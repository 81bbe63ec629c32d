"""report.html of predict and evaluate runs: content, links, and rendering in Chromium."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from bloomseg.cells.instances import InstanceParams
from bloomseg.evaluation.evaluate import evaluate
from bloomseg.inference.segmenter import Prediction
from bloomseg.outputs.report import REPORT
from bloomseg.outputs.run import OutputOptions, segment_files
from conftest import write_dataset


class Blobs:
    """A 'segmenter' that calls dark pixels cells, each connected blob one cell."""

    name = "blobs (test)"
    separation = InstanceParams()

    def predict(self, image, instances=False):
        from scipy import ndimage

        mask = image.mean(axis=2) < 200
        labels = ndimage.label(mask)[0].astype(np.int32) if instances else None
        return Prediction(mask.astype(np.float32), mask, 0.01, None, labels)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [unquote(v) for k, v in attrs if k in ("src", "href") and v]


def parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text("utf-8"))
    return parser


def assert_links_resolve(page: Path) -> list[str]:
    """Every link of the page is a relative path to a file that exists; returns them."""
    links = parse(page).links
    assert links
    for link in links:
        assert not link.startswith(("/", "http:", "https:", "file:")), link
        assert (page.parent / link).is_file(), f"{page}: broken link {link}"
    return links


def test_predict_report_shows_counts_overlays_and_failures(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=0, n_test=2, size=(40, 50))
    inputs = sorted((data / "test" / "original").iterdir())
    hostile = tmp_path / "<b>bad&.png"
    hostile.write_bytes(b"not a png")
    out = tmp_path / "out"
    rows = segment_files(Blobs(), [*inputs, hostile], out, OutputOptions(coco=True), progress=False)
    page = out / REPORT
    text = page.read_text("utf-8")
    links = assert_links_resolve(page)
    for path in inputs:
        for suffix in ("_overlay.png", "_labels.tif", "_cells.csv", ".geojson"):
            assert path.stem + suffix in links
    assert {"summary.csv", "cells_coco.json"} <= set(links)
    total = sum(r["cells"] for r in rows if r["status"] == "ok")
    assert f"<td>cells</td><td>{total}</td>" in text
    assert "blobs (test)" in text
    # the failed file is listed, its name escaped rather than taken as markup
    assert "Not segmented" in text and "&lt;b&gt;bad&amp;.png" in text
    assert "b" not in parse(page).tags


def test_evaluate_report_holds_the_metrics_and_every_plot(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=0, n_test=3, size=(40, 50), boxes=True)
    out = tmp_path / "eval"
    metrics = evaluate(Blobs(), data, out, visualize=1, progress=False)
    page = out / REPORT
    text = page.read_text("utf-8")
    links = assert_links_resolve(page)
    assert {"aggregate_metrics.png", "counts.png", "metrics.json"} <= set(links)
    assert sum(link.startswith("visualizations/") for link in links) == 4  # 2 pictures, img + a
    assert f"<td>Dice</td><td>{metrics['dice']['cell']:.4f}</td>" in text
    assert f"<td>F1</td><td>{metrics['instances']['boxes']['f1']:.4f}</td>" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(page: Path, screenshot: Path) -> list[str]:
    """Render a page in headless Chromium; returns its console messages."""
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not found (.ci/run installs Debian's chromium)")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--screenshot={screenshot}", "--window-size=1200,1600", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def test_console_errors_are_caught(tmp_path):
    """The check below can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    messages = render(page, tmp_path / "bad.png")
    assert any("undefinedFunction" in m for m in messages)


def test_report_renders_in_chromium(tmp_path):
    data = write_dataset(tmp_path / "data", n_train=0, n_test=3, size=(120, 160), boxes=True)
    out = tmp_path / "eval"
    evaluate(Blobs(), data, out, visualize=1, progress=False)
    shot = tmp_path / "shot.png"
    assert render(out / REPORT, shot) == []
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 200).mean() > 0.02  # text, tables and plots drawn


def test_a_sheet_of_cells_is_shown_at_its_own_size():
    """An infected cells' sheet keeps its pixels: one cell is not blown up to the
    column's width, nor six shrunk into it (each cell the same size on screen)."""
    from bloomseg.outputs.report import _STYLE, figure

    sheet = figure("a_infected.png", "a.png: 1 cells called infected", cells=True)
    assert sheet.startswith('<figure class="cells">')
    assert "figure.cells img { width: auto; max-width: 100%; }" in _STYLE
    assert figure("a_overlay.png", "a.png").startswith("<figure>")

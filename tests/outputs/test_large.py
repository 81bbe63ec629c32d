"""Large images block by block: lazy reading, cells merged across block borders, tiled
outputs, and the same cells as the whole image in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile

from bloomseg.cells.formats import coco_annotations
from bloomseg.cells.matching import label_iou
from bloomseg.data.images import TILE, LazyImage, image_pixels, read_image
from bloomseg.data.synthetic import REAL_SCALE, smear
from bloomseg.errors import ImageError
from bloomseg.outputs.large import segment_large
from bloomseg.outputs.run import OutputOptions, output_paths, segment_image
from conftest import Components


def same_cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each cell of ``a`` with its match in ``b`` (0 where none overlaps it by
    IoU > 0.5; such matches are one-to-one)."""
    return label_iou(a, b).max(axis=1, initial=0.0)


def write_smear_tiff(path, size: int, seed: int = 1, **kwargs) -> np.ndarray:
    image, _ = smear(np.random.default_rng(seed), size, size, **kwargs)
    tifffile.imwrite(path, image, tile=(TILE, TILE), compression="zlib")
    return image


@pytest.mark.parametrize("layout", ["YXS", "SYX", "uint16", "zarr", "png"])
def test_lazy_regions_equal_the_whole_image(tmp_path, layout):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    path = tmp_path / "image.tif"
    expected = image
    if layout == "YXS":
        tifffile.imwrite(path, image, tile=(64, 64))
    elif layout == "SYX":
        tifffile.imwrite(path, image.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    elif layout == "uint16":  # 12-bit data: scaled by the whole image's peak
        data = rng.integers(0, 4096, (300, 410), dtype=np.uint16)
        data[0, 0] = 4095
        tifffile.imwrite(path, data, tile=(64, 64))
        expected = read_image(path)
        assert expected.max() == 255
    elif layout == "zarr":
        import zarr

        path = tmp_path / "image.zarr"
        zarr.create_array(path, shape=image.shape, chunks=(128, 128, 3), dtype="uint8")[:] = image
    else:
        from PIL import Image

        path = tmp_path / "image.png"
        Image.fromarray(image).save(path)
    with LazyImage(path) as lazy:
        assert lazy.shape == (300, 410)
        np.testing.assert_array_equal(lazy.read(0, 300, 0, 410), expected)
        np.testing.assert_array_equal(lazy.read(37, 211, 100, 409), expected[37:211, 100:409])
    assert image_pixels(path) == 300 * 410


def test_lazy_image_refuses_what_is_not_one_image(tmp_path):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 30, 40), np.uint8), photometric="minisblack")  # a stack
    with pytest.raises(ImageError, match="stack.tif.*not one 2D image"):
        LazyImage(stack)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(ImageError, match="bad.tif"):
        LazyImage(bad)
    with pytest.raises(ImageError, match="no such image"):
        LazyImage(tmp_path / "missing.tif")


def test_cells_cut_by_block_borders_get_one_id(tmp_path):
    """Blobs that cross borders and corners (one spans four blocks): block-wise labels
    are the whole image's, cell for cell."""
    image = np.full((1000, 1100, 3), 240, np.uint8)
    yy, xx = np.mgrid[:1000, :1100]
    for cy, cx, r in [(256, 256, 60), (250, 700, 40), (600, 512, 30), (960, 1070, 45),
                      (512, 768, 90), (100, 100, 20), (800, 200, 50)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 120
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(TILE, TILE))
    out = tmp_path / "out"
    outputs = output_paths(out, "big", OutputOptions(cells=True), large=True)
    with LazyImage(tmp_path / "big.tif") as source:
        stats, coco = segment_large(Components(), source, outputs,
                                    OutputOptions(coco=True, large=True, block=256, halo=128))
    whole = Components().predict(image, instances=True).labels
    labels = tifffile.imread(outputs["labels"])
    assert stats["cells"] == whole.max() == labels.max() == 7
    # COCO is made cell by cell from the blocks, and equals that of the written labels
    assert coco == coco_annotations(labels)
    assert (same_cells(whole, labels) == 1.0).all()
    assert set(np.unique(labels)) == set(range(8))  # 1..N, no gaps
    with tifffile.TiffFile(outputs["labels"]) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == TILE and page.compression == 8  # zlib
    mask = tifffile.imread(outputs["mask"])
    np.testing.assert_array_equal(mask > 0, whole > 0)
    # one row and one outline per cell, each measured whole
    import csv

    with open(outputs["cells"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == list(range(1, 8))
    assert [int(r["area"]) for r in rows] == [int((labels == i).sum()) for i in range(1, 8)]
    assert sum(r["touches_border"] == "True" for r in rows) == 1  # the disk at (960, 1070)
    features = json.loads(outputs["geojson"].read_text())["features"]
    assert len(features) == 7
    assert not list(out.glob(".*"))  # block files and temporaries gone


def test_model_block_wise_equals_in_memory(tmp_path):
    """The shipped model on a synthetic smear of real-size cells, cut into 3 x 3 blocks:
    the same mask and the same cells as the whole image in memory."""
    from bloomseg.inference.segmenter import Segmenter

    image = write_smear_tiff(tmp_path / "smear.tif", 1536, radius=REAL_SCALE["radius"],
                             density=REAL_SCALE["density"])
    segmenter = Segmenter.load("default")
    # block by block, cells are not classified (so not joined or kept by their class)
    whole = segmenter.predict(image, instances=True, classes=False)
    options = OutputOptions(cells=True, large=True, block=512, halo=256)
    row = segment_image(segmenter, tmp_path / "smear.tif", tmp_path / "out", options)
    assert row["status"] == "ok"
    labels = tifffile.imread(tmp_path / "out" / "smear_labels.tif")
    mask = tifffile.imread(tmp_path / "out" / "smear_mask.tif") > 0
    assert (mask == whole.mask).mean() > 0.999
    assert abs(int(labels.max()) - int(whole.labels.max())) <= 1
    iou = same_cells(whole.labels, labels)
    assert (iou > 0.99).mean() > 0.99, np.sort(iou)[:10]
    assert row["cells"] == labels.max() > 100


PEAK = """
import re, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import Components
from bloomseg.outputs.run import OutputOptions, segment_image
row = segment_image(Components(), Path({image!r}), Path({out!r}),
                    OutputOptions(cells=True, large={large}))
assert row["status"] == "ok", row
# VmHWM, not ru_maxrss: Linux carries the parent's peak into a forked child's ru_maxrss
peak = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(row["cells"], int(peak) // 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_block_wise_memory_is_bounded(tmp_path):
    """An 8000 x 8000 smear: block-wise, peak memory stays far under the in-memory run's,
    with the same cells."""
    from pathlib import Path

    write_smear_tiff(tmp_path / "huge.tif", 8000, seed=2, radius=REAL_SCALE["radius"],
                     density=REAL_SCALE["density"])
    results = {}
    for large in (True, False):
        code = PEAK.format(tests=str(Path(__file__).parents[1]), image=str(tmp_path / "huge.tif"),
                           out=str(tmp_path / f"out{large}"), large=large)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                              capture_output=True, text=True, check=True)
        results[large] = [int(v) for v in done.stdout.split()] + [time.perf_counter() - start]
    (cells_blocks, rss_blocks, s_blocks), (cells_whole, rss_whole, s_whole) = results[True], results[False]
    print(f"8000x8000 peak RSS: block-wise {rss_blocks} MiB ({s_blocks:.0f} s), "
          f"in memory {rss_whole} MiB ({s_whole:.0f} s)")
    assert cells_blocks == cells_whole > 1000
    assert rss_blocks < rss_whole / 2
    from bloomseg.data.images import read_labels

    blocks, whole = (read_labels(tmp_path / f"out{large}" / "huge_labels.tif") for large in (True, False))
    assert (same_cells(whole, blocks) > 0.99).all()


def test_the_halo_grows_with_the_cells_and_the_models_reach_in_image_pixels():
    from types import SimpleNamespace

    from bloomseg.outputs.large import _halo_needed

    # a model that reaches 122 px at its own 54 px cells
    seg = SimpleNamespace(model=SimpleNamespace(reach=122), cell_diameter=54.0)
    assert _halo_needed(seg, 54.0) == 122 + 108
    assert _halo_needed(seg, 108.0) == 244 + 216  # twice the cells: twice its reach
    assert _halo_needed(seg, None) == 122  # at the model's own scale
    assert _halo_needed(Components(), None) == 0  # a stand-in without a model

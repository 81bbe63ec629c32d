"""Fuzzing the readers with Hypothesis: random bytes, damaged copies of valid files, valid
but odd images, and random box files. Each may fail only with its documented error
(ImageError for images, DataError for masks and box files), within a time limit per
example and a memory limit for the whole process.

Each target runs in a child process under an address-space limit (RLIMIT_AS), so a
reader that tried to allocate without bound would fail there with MemoryError, which
counts as a failure, and could not take the test machine's memory with it.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

MEMORY_LIMIT = 1536 * 2**20  # address space of the child, bytes
MAX_PIXELS = 4_000_000  # the readers' pixel guard during fuzzing: 12 MB per decoded image
EXAMPLES = {"random_bytes": 300, "damaged_files": 400, "odd_images": 200, "box_files": 300}
FUZZ = settings(deadline=5000, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
COUNT = {"n": 0}
WORK = Path(os.environ.get("BLOOMSEG_FUZZ_DIR", "."))


@functools.cache
def _seeds() -> list[bytes]:
    """Small valid files of every format the readers take."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    files = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "P"), ("PNG", "L"), ("JPEG", "RGB"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("PNG", "RGBA")):
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, format=fmt)
        files.append(buffer.getvalue())
    for data, kwargs in ((rgb, {"tile": (16, 16)}), (rgb[..., 0].astype(np.uint16) * 16, {}),
                         (rgb.transpose(2, 0, 1), {"photometric": "rgb", "planarconfig": "separate"})):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, data, **kwargs)
        files.append(buffer.getvalue())
    return files


def _check_image_bytes(data: bytes, suffix: str) -> None:
    """Every image reader on one file: it reads, or raises ImageError/DataError."""
    from bloomseg.data.dataset import read_mask
    from bloomseg.data.images import LazyImage, read_image
    from bloomseg.errors import DataError, ImageError

    COUNT["n"] += 1
    path = WORK / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        image = read_image(path, MAX_PIXELS)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    except ImageError:
        pass
    try:
        mask = read_mask(path, MAX_PIXELS)
        assert mask.dtype == bool and mask.ndim == 2
    except (ImageError, DataError):
        pass
    try:
        with LazyImage(path, MAX_PIXELS) as lazy:
            h, w = lazy.shape
            assert lazy.read(0, min(h, 8), 0, min(w, 8)).shape == (min(h, 8), min(w, 8), 3)
    except ImageError:
        pass


SUFFIXES = st.sampled_from([".png", ".jpg", ".tif", ".bmp"])


@settings(FUZZ, max_examples=EXAMPLES["random_bytes"])
@given(st.binary(max_size=2048), SUFFIXES)
def fuzz_random_bytes(data: bytes, suffix: str) -> None:
    _check_image_bytes(data, suffix)


@settings(FUZZ, max_examples=EXAMPLES["damaged_files"])
@given(st.data())
def fuzz_damaged_files(data) -> None:
    seeds = _seeds()
    original = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(original) - 1))
        action = data.draw(st.sampled_from(["set", "cut", "insert", "big"]))
        if action == "set":
            original[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del original[at:]
            if not original:
                break
        elif action == "insert":
            original[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a field set to a huge value: sizes, offsets and counts in headers
            original[at:at + 4] = data.draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                                              b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"]))
    suffix = ".tif" if original[:2] in (b"II", b"MM") else data.draw(SUFFIXES)
    _check_image_bytes(bytes(original), suffix)


ODD_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_])


@settings(FUZZ, max_examples=EXAMPLES["odd_images"])
@given(st.data())
def fuzz_odd_images(data) -> None:
    """Valid images of odd types and shapes: they must read, at their own size."""
    import tifffile

    from bloomseg.data.images import read_image

    COUNT["n"] += 1
    h, w = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    channels = data.draw(st.sampled_from([None, 1, 3, 4]))
    shape = (h, w) if channels is None else (h, w, channels)
    dtype = data.draw(ODD_DTYPES)
    elements = st.one_of(st.floats(-2.0**100, 2.0**100, width=32),
                         st.sampled_from([np.nan, np.inf, -np.inf])) \
        if np.issubdtype(dtype, np.floating) else None
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    path = WORK / "odd.tif"
    tifffile.imwrite(path, array, photometric="rgb" if channels in (3, 4) else "minisblack")
    image = read_image(path)
    assert image.shape == (h, w, 3) and image.dtype == np.uint8


FIELD = st.one_of(st.sampled_from(["0", "1", "5", "-1", "0.5", "1.0", "nan", "inf", "-inf", "1e309",
                                   "1e-400", "-0", "0x10", "", "½", "1,5", "٣"]),
                  st.floats(allow_nan=True).map(repr), st.text(max_size=6))


@settings(FUZZ, max_examples=EXAMPLES["box_files"])
@given(st.one_of(st.binary(max_size=400),
                 st.lists(st.lists(FIELD, max_size=7).map(" ".join), max_size=8)
                 .map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))))
def fuzz_box_files(data: bytes) -> None:
    """A box file reads as an (N, 5) array of valid boxes, or raises DataError."""
    from bloomseg.data.boxes import read_boxes
    from bloomseg.errors import DataError

    COUNT["n"] += 1
    path = WORK / "boxes.txt"
    path.write_bytes(data)
    try:
        boxes = read_boxes(path)
    except DataError:
        return
    assert boxes.shape[1] == 5 and np.isfinite(boxes).all()
    assert ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all() and (boxes[:, 3:] > 0).all()


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_fuzz(target, tmp_path):
    env = os.environ | {"BLOOMSEG_FUZZ_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
                        "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    code = (f"import test_fuzz as f; f.fuzz_{target}(); "
            f"print('examples', f.COUNT['n'])")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=600, preexec_fn=_limit_memory)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    count = int(result.stdout.split()[-1])
    assert count >= EXAMPLES[target], result.stdout

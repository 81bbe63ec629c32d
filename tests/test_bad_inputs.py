"""The bad-input matrix: each kind of bad or odd file that `predict`, `evaluate` and `train`
meet, one test per (command, case), through the command line.

A bad file gets a message naming it and what is wrong. `predict` lists it in summary.csv
and goes on (exit 3), `evaluate` lists it in metrics.json and scores the rest (exit 3),
`train` refuses to start, naming every bad file, before it writes anything (exit 1). An
odd but valid image (16-bit, float, 2-channel, RGBA, CMYK, palette, 1x1, a name that is
not UTF-8 or has spaces) is processed like any other (exit 0).
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from bloomseg.cli import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, main
from bloomseg.data.synthetic import smear

SIZE = (48, 64)  # (height, width) of every good image here


def good_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic smear and its 0/255 mask."""
    image, mask = smear(np.random.default_rng(seed), *SIZE, radius=(6, 10), density=1 / 500)
    return image, mask.astype(np.uint8) * 255


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` RGB pixels and holds almost none."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def _truncated(fmt: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        image, _ = good_pair()
        if fmt == "TIFF":
            tifffile.imwrite(path, image)
        else:
            Image.fromarray(image).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return write


def _pil(mode: str, fmt: str = "PNG") -> Callable[[Path], None]:
    def write(path: Path) -> None:
        image, _ = good_pair()
        Image.fromarray(image).convert(mode).save(path, format=fmt)
    return write


def _tiff(kind: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        image, _ = good_pair()
        grey = image.mean(axis=2)
        if kind == "uint16":  # 12-bit camera data in a 16-bit container
            tifffile.imwrite(path, (grey * 16).astype(np.uint16))
        elif kind == "float32":
            tifffile.imwrite(path, (grey / 255).astype(np.float32))
        else:  # grey + alpha
            tifffile.imwrite(path, np.dstack([grey.astype(np.uint8), np.full(SIZE, 255, np.uint8)]),
                             photometric="minisblack", extrasamples=["unassalpha"])
    return write


def _good(path: Path) -> None:
    Image.fromarray(good_pair()[0]).save(path, format="PNG")


def _loop(path: Path) -> None:
    os.symlink(path.name, path)  # a link to itself


@dataclass(frozen=True)
class Case:
    """A file to put among good ones: its name, how to write it, and the message expected
    (None: it is valid and must be processed)."""

    name: str
    write: Callable[[Path], None]
    error: str | None
    size: tuple[int, int] = SIZE  # of the mask that goes with it


IMAGE_CASES = {c.name: c for c in [
    Case("empty.png", lambda p: p.write_bytes(b""), r"the file is empty \(0 bytes\)"),
    Case("truncated.png", _truncated("PNG"), r"truncated or corrupt image"),
    Case("truncated.jpg", _truncated("JPEG"), r"truncated or corrupt image"),
    Case("truncated.tif", _truncated("TIFF"), r"truncated or corrupt image|cannot be read|not an image"),
    Case("text.png", lambda p: p.write_text("sample 12, field 3\n"),
         r"not an image file bloomseg can read .* starts with b'sample 12"),
    Case("zero.png", lambda p: p.write_bytes(png_header(0, 0)), r"the image has no pixels \(0x0\)"),
    Case("bomb.png", lambda p: p.write_bytes(png_header(30000, 30000)),
         r"refused, 30000x30000 is 900 Mpx, more than the 200 Mpx that --max-pixels allows"),
    Case("loop.png", _loop, r"a symbolic link that leads nowhere \(broken or a loop\)"),
    Case("one.png", lambda p: Image.new("RGB", (1, 1), (90, 40, 60)).save(p), None, (1, 1)),
    Case("uint16.tif", _tiff("uint16"), None),
    Case("float32.tif", _tiff("float32"), None),
    Case("two_channel.tif", _tiff("two"), None),
    Case("rgba.png", _pil("RGBA"), None),
    Case("cmyk.jpg", _pil("CMYK", "JPEG"), None),
    Case("cmyk.tif", _pil("CMYK", "TIFF"), None),
    Case("palette.png", _pil("P"), None),
    Case(os.fsdecode(b"smear \xe9\xff.png"), _good, None),  # Latin-1 bytes: not UTF-8
    Case("smear with spaces.png", _good, None),
]}

MASK_CASES = {c.name: c for c in [
    Case("grey_levels", lambda p: Image.fromarray(
        np.tile(np.array([0, 128, 255], np.uint8), (SIZE[0], SIZE[1] // 3 + 1))[:, :SIZE[1]]).save(p),
        r"a mask holds two values, background and cell .* holds 3 \(0, 128, 255\)"),
    Case("one_side", lambda p: Image.fromarray((good_pair()[1] > 0).astype(np.uint8) * 100).save(p),
         r"two values \(0, 100\) are on the same side of 127"),
    Case("wrong_size", lambda p: Image.new("L", (SIZE[1] + 1, SIZE[0])).save(p),
         r"mask is 65x48 but its image .* is 64x48"),
    Case("zero_one", lambda p: Image.fromarray((good_pair()[1] > 0).astype(np.uint8)).save(p), None),
]}


def write_split(root: Path, split: str, count: int, case: Case | None = None,
                mask_case: Case | None = None) -> Path:
    """``count`` good samples in ``root/split``, plus one with the case's image (a valid
    mask of its size) or the case's mask (a good image)."""
    for sub in ("original", "mask"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = good_pair(i + 1)
        Image.fromarray(image).save(root / split / "original" / f"good{i}.png")
        Image.fromarray(mask).save(root / split / "mask" / f"good{i}.png")
    if case is not None:
        case.write(root / split / "original" / case.name)
        mask = np.zeros(case.size, np.uint8)
        mask[: case.size[0] // 2] = 255
        Image.fromarray(mask).save(root / split / "mask" / f"{Path(case.name).stem}.png")
    if mask_case is not None:
        _good(root / split / "original" / "odd.png")
        mask_case.write(root / split / "mask" / "odd.png")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A one-epoch U-Net run folder (its best.pt is what predict and evaluate load)."""
    root = tmp_path_factory.mktemp("model")
    data = write_split(root / "data", "train", 4)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--backbone", "unet",
                 "--tile", "42", "--epochs", "1", "--cache-dir", str(root / "cache"),
                 "-q"]) == EXIT_OK
    return run


def read_summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_predict(name, model, tmp_path, capsys):
    case = IMAGE_CASES[name]
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _good(inputs / "good.png")
    case.write(inputs / case.name)
    code = main(["predict", str(model), str(inputs), "-o", str(out), "-q"])
    rows = {Path(r["image"]).name: r for r in read_summary(out)}
    shown = os.fsencode(case.name).decode("utf-8", "backslashreplace")  # as summary.csv shows it
    assert set(rows) == {"good.png", shown} and rows["good.png"]["status"] == "ok"
    stem = Path(case.name).stem
    if case.error:
        assert code == EXIT_SKIPPED
        status = rows[shown]["status"]
        assert status.startswith(f"failed: {inputs / case.name}: ")
        assert re.search(case.error, status), status
        assert not list(out.glob(f"{stem}_*"))  # nothing half written for it
        assert "1 of 2 images segmented" in capsys.readouterr().out
    else:
        assert code == EXIT_OK and rows[shown]["status"] == "ok"
        mask = np.array(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == case.size and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{stem}_overlay.png").is_file()
        assert shown in (out / "report.html").read_text("utf-8")


SAMPLE_CASES = [("image", n) for n in IMAGE_CASES] + [("mask", n) for n in MASK_CASES]


def sample_case(kind: str, name: str, root: Path, split: str) -> tuple[Case, Path, str]:
    """(the case, its dataset of three good samples and one odd one, the odd file's path
    relative to the split)."""
    if kind == "image":
        case = IMAGE_CASES[name]
        return case, write_split(root, split, 3, case=case), f"original/{case.name}"
    case = MASK_CASES[name]
    return case, write_split(root, split, 3, mask_case=case), "mask/odd.png"


@pytest.mark.parametrize("kind, name", SAMPLE_CASES)
def test_evaluate(kind, name, model, tmp_path, capsys):
    case, data, odd = sample_case(kind, name, tmp_path / "data", "test")
    out = tmp_path / "eval"
    code = main(["evaluate", str(model), "--data", str(data), "-o", str(out), "-q"])
    metrics = json.loads((out / "metrics.json").read_text())
    if case.error:
        assert code == EXIT_SKIPPED and metrics["num_samples"] == 3
        [skipped] = metrics["skipped"]
        assert skipped["image"] == Path(odd).stem
        assert skipped["reason"].startswith(f"{data / 'test' / odd}: ")
        assert re.search(case.error, skipped["reason"]), skipped["reason"]
        assert Path(odd).name.split()[0] in capsys.readouterr().err
    else:
        assert code == EXIT_OK and metrics["num_samples"] == 4 and metrics["skipped"] == []


def _train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(run), "--backbone", "unet",
                 "--tile", "42", "--epochs", "1", "--tiles_per_image", "2",
                 "--cache-dir", str(run.parent / "cache"), "-q", *extra])


@pytest.mark.parametrize("kind, name", SAMPLE_CASES)
def test_train(kind, name, tmp_path, capsys):
    case, data, odd = sample_case(kind, name, tmp_path / "data", "train")
    code = _train(data, tmp_path / "run")
    if case.error:
        err = capsys.readouterr().err
        # the name's first word: stderr shows the bytes of a non-UTF-8 name as escapes
        assert code == EXIT_FAILED and f"{Path(odd).parent}/{Path(odd).name.split()[0]}" in err
        assert re.search(case.error, err), err
        assert not (tmp_path / "run").exists()  # refused before anything is written
    else:
        assert code == EXIT_OK
        recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
        assert recorded["train_images"] + recorded["val_images"] == 4


@pytest.mark.parametrize("content", ["{not json", '{"train": 3}', "[]", '{"train": [], "val": ["x"]}'])
def test_train_corrupt_splits_file(content, tmp_path, capsys):
    data = write_split(tmp_path / "data", "train", 4)
    (data / "splits.json").write_text(content)
    assert _train(data, tmp_path / "run") == EXIT_FAILED
    assert re.search(r"splits\.json: .*delete it to re-split", capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("version, code", [("9.0.0", EXIT_FAILED), ("0.0.1", EXIT_OK), (None, EXIT_OK)])
def test_train_resume_of_a_run_from_another_version(version, code, tmp_path, capsys):
    data = write_split(tmp_path / "data", "train", 4)
    run = tmp_path / "run"
    assert _train(data, run) == EXIT_OK
    record = json.loads((run / "config.json").read_text())
    if version is None:  # written before versions were recorded
        del record["versions"]
    else:
        record["versions"]["bloomseg"] = version
    if version != "9.0.0":  # an old run lacks the setting added since
        del record["config"]["max_pixels"]
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(run), "-q"]) == code
    if code == EXIT_FAILED:
        assert "config.json: written by bloomseg 9.0.0, newer than this bloomseg" in \
            capsys.readouterr().err


def test_train_resume_of_a_checkpoint_that_does_not_fit_its_settings(tmp_path, capsys):
    data = write_split(tmp_path / "data", "train", 4)
    run = tmp_path / "run"
    assert _train(data, run) == EXIT_OK
    record = json.loads((run / "config.json").read_text())
    record["config"]["unet_levels"] = 3  # last.pt holds a 5-level U-Net
    (run / "config.json").write_text(json.dumps(record))
    assert main(["train", "--resume", str(run), "-q"]) == EXIT_FAILED
    assert "last.pt: does not fit the settings in" in capsys.readouterr().err


def test_predict_refuses_a_model_from_a_newer_version(model, tmp_path, capsys):
    import torch

    payload = torch.load(model / "best.pt", weights_only=True)
    payload["bloomseg"] = "1.7.2"
    torch.save(payload, tmp_path / "newer.pt")
    _good(tmp_path / "good.png")
    code = main(["predict", str(tmp_path / "newer.pt"), str(tmp_path / "good.png"), "-o",
                 str(tmp_path / "out"), "-q"])
    assert code == EXIT_FAILED
    assert "newer.pt: written by bloomseg 1.7.2, newer than this bloomseg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_symlink_loops_in_an_input_folder_end_nothing(model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _good(inputs / "good.png")
    os.symlink(".", inputs / "again")  # a folder that contains itself
    os.symlink("b", inputs / "a")
    os.symlink("a", inputs / "b")  # two links that point at each other
    os.symlink("c.png", inputs / "c.png")
    code = main(["predict", str(model), str(inputs), str(inputs / "again"), "-o",
                 str(tmp_path / "out"), "-q"])
    rows = read_summary(tmp_path / "out")
    assert code == EXIT_SKIPPED
    # the folder given twice (once through its loop) is read once
    assert [(Path(r["image"]).name, r["status"].split(":")[0]) for r in rows] == \
        [("c.png", "failed"), ("good.png", "ok")]
    assert "c.png: a symbolic link that leads nowhere" in rows[0]["status"]


def test_a_30000_px_image_is_accepted_with_max_pixels_and_done_block_by_block(tmp_path):
    """The bomb guard's other side: a genuine 30000x30000 slide (900 Mpx), refused by
    default, is predicted block by block when --max-pixels allows it. A stand-in
    segmenter (dark blobs are cells) keeps this to the block machinery, not the model."""
    import zarr

    from bloomseg.data.images import LazyImage
    from bloomseg.outputs.run import OutputOptions, segment_image
    from conftest import Components

    side, tile, every = 30000, 256, 40
    centres = []

    def tiles():
        blank = np.full((tile, tile), 230, np.uint8)
        dark = blank.copy()
        dark[100:150, 100:150] = 40
        for r in range(0, side, tile):
            for c in range(0, side, tile):
                if r // tile % every == 0 and c // tile % every == 0:
                    centres.append((r + 125, c + 125))
                    yield dark
                else:
                    yield blank

    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(tile, tile),
                     compression="zlib")
    out = tmp_path / "out"
    refused = segment_image(Components(), path, out, OutputOptions(cells=True))
    assert "--max-pixels" in refused["status"] and not out.exists()
    options = OutputOptions(cells=True, block=4096, max_pixels=side * side)
    row = segment_image(Components(), path, out, options)
    assert row["status"] == "ok" and row["cells"] == len(centres) == 9
    assert (out / "slide_mask.tif").is_file()  # the large-image form: a tiled TIFF
    with LazyImage(out / "slide_labels.tif", max_pixels=None) as labels:
        assert labels.shape == (side, side)
    with tifffile.TiffFile(out / "slide_labels.tif") as tif, tif.pages[0].aszarr() as store:
        found = {int(zarr.open(store, mode="r")[r, c]) for r, c in centres}
    assert len(found) == 9 and 0 not in found  # each blob its own cell, where it was drawn

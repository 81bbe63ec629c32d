"""Many files: outputs stay in the output folder whatever the input is called, and what a
killed writer left behind is cleared."""

from __future__ import annotations

import platform

import numpy as np
from PIL import Image

from bloomseg.inference.segmenter import Prediction
from bloomseg.outputs.run import OutputOptions, output_paths, segment_files


class Dark:
    name = "dark"

    def predict(self, image: np.ndarray, instances: bool = False) -> Prediction:
        mask = image.mean(axis=2) < 128
        labels = mask.astype(np.int32) if instances else None
        return Prediction(mask.astype(np.float32), mask, 0.0, None, labels)


HOSTILE = ["..png", "...png", ".hidden.png", "-rf.png", "a b\tc.png", "x\u202eqs.png",
           "%2e%2e%2fx.png", "$(touch pwned).png", "back\\slash.png", "caf\u00e9.png"]


def test_outputs_of_hostile_names_stay_in_the_output_folder(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.full((20, 30, 3), 250, np.uint8)
    image[5:15, 5:15] = 20
    for name in HOSTILE:
        Image.fromarray(image).save(inputs / name, format="PNG")
    out = tmp_path / "out"
    options = OutputOptions(cells=True)
    rows = segment_files(Dark(), sorted(inputs.iterdir()), out, options, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(HOSTILE)
    for path in inputs.iterdir():
        for large in (False, True):
            for target in output_paths(out, path.stem, options, large).values():
                assert target.parent == out and target.resolve().parent == out.resolve()
        assert (out / f"{path.stem}_labels.tif").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing written beside
    assert not (tmp_path / "pwned").exists()


def test_what_a_killed_writer_left_is_cleared_at_the_end(tmp_path):
    image = np.full((20, 30, 3), 20, np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    # a temporary mask file and a block folder, as a process killed mid-write leaves them
    (out / ".a_mask.png.k3j2.tmp").write_bytes(b"half a png")
    (out / ".a_mask.tif.x81.blocks").mkdir()
    (out / ".a_mask.tif.x81.blocks" / "mask0.npy").write_bytes(b"")
    (out / ".other.tmp").write_bytes(b"not ours")
    (out / ".bloomseg").mkdir()
    (out / ".bloomseg" / ".a.json.q1.tmp").write_bytes(b"{")  # a record torn the same way
    rows = segment_files(Dark(), [tmp_path / "a.png"], out, progress=False)
    assert rows[0]["status"] == "ok"
    assert sorted(p.name for p in out.glob(".*")) == [".bloomseg", ".other.tmp"]
    assert [p.name for p in (out / ".bloomseg").iterdir()] == ["a.json"]


def test_input_paths_that_climb_or_are_absolute_write_only_into_the_output_folder(tmp_path):
    """Only an input's final name component names its outputs: `../../x.png` and
    `/abs/x.png` give `OUT/x_*`, never a path outside OUT."""
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 20, np.uint8)).save(tmp_path / "x.png")
    out = deep / "out"
    climbing = deep / ".." / ".." / "x.png"
    for path in (climbing, (tmp_path / "x.png").resolve()):
        rows = segment_files(Dark(), [path], out, OutputOptions(cells=True), overwrite=True,
                             progress=False)
        assert rows[0]["status"] == "ok"
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == sorted(["x_mask.png", "x_overlay.png", "x_labels.tif", "x_cells.csv",
                              "x.geojson", "summary.csv", "report.html"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "x.png"]


def test_corrected_cells_replace_an_images_outputs_and_its_record(tmp_path):
    import csv

    import pytest

    from bloomseg.data.images import read_image, read_labels
    from bloomseg.errors import OutputExistsError
    from bloomseg.outputs.run import finished_row, save_corrected
    from conftest import Components

    image = np.full((40, 60, 3), 250, np.uint8)
    image[5:15, 5:15] = 20
    image[20:35, 30:50] = 20
    path = tmp_path / "smear.png"
    Image.fromarray(image).save(path)
    out, options = tmp_path / "out", OutputOptions(cells=True)
    (row,) = segment_files(Components(), [path], out, options, progress=False)
    assert row["cells"] == 2
    labels = read_labels(out / "smear_labels.tif")
    corrected = np.where(labels == 1, 0, labels)  # one cell erased: cell 2 is left
    diameter = {"diameter": "", "diameter_source": "model", "diameter_note": ""}
    with pytest.raises(OutputExistsError, match="smear_mask.png exists"):
        save_corrected(image, corrected, None, diameter, out, "smear")
    written = save_corrected(image, (corrected > 0).astype(np.int32), None, diameter, out, "smear",
                             overwrite=True)
    assert read_labels(written["labels"]).max() == 1
    with open(written["cells"], encoding="utf-8") as f:
        (cell,) = list(csv.DictReader(f))
    assert int(cell["area"]) == 15 * 20 and cell["image_diameter_source"] == "model"
    np.testing.assert_array_equal(read_image(written["mask"])[..., 0] > 0, corrected > 0)
    # --resume and the summary see the corrected count
    assert finished_row(out, path, options)["cells"] == 1


def test_writing_beside_the_next_prediction_changes_no_file_and_one_bad_image_is_skipped(tmp_path):
    """segment_files writes an image's outputs while the next is predicted: every file
    is byte for byte what segment_image writes alone, rows in input order, and an image
    that cannot be read is one failed row among the others."""
    from bloomseg.outputs.run import segment_image
    from conftest import Components

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image = np.full((120, 160, 3), 230, np.uint8)
        for _ in range(6):
            y, x = rng.integers(10, 110), rng.integers(10, 150)
            image[max(0, y - 8):y + 8, max(0, x - 8):x + 8] = 60
        Image.fromarray(image).save(inputs / f"s{i}.png")
    (inputs / "s2.png").write_bytes(b"not a png")
    paths = sorted(inputs.iterdir())
    options = OutputOptions(cells=True)
    rows = segment_files(Components(), paths, tmp_path / "together", options, progress=False)
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert [r["status"] for r in rows][:2] == ["ok", "ok"] and rows[3]["status"] == "ok"
    assert rows[2]["status"].startswith("failed") and "s2.png" in rows[2]["status"]
    for path in paths:
        alone = segment_image(Components(), path, tmp_path / "alone", options)
        if alone["status"] != "ok":
            continue
        for kind, file in output_paths(tmp_path / "alone", path.stem, options).items():
            if file.exists():
                assert file.read_bytes() == (tmp_path / "together" / file.name).read_bytes(), kind


def test_a_long_run_gives_the_heap_back_every_few_images(tmp_path, monkeypatch):
    import bloomseg.outputs.run as run

    trims = []
    monkeypatch.setattr(run, "trim_heap", lambda: trims.append(1))
    monkeypatch.setattr(run, "TRIM_EVERY", 2)
    image = np.full((20, 30, 3), 20, np.uint8)
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    for path in paths:
        Image.fromarray(image).save(path)
    rows = segment_files(Dark(), paths, tmp_path / "out", progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 5 and len(trims) == 2  # after 2 and 4
    monkeypatch.undo()
    run.trim_heap()  # glibc's malloc_trim; elsewhere nothing, and no error
    assert bool(run._LIBC) == (platform.libc_ver()[0] == "glibc")

"""The command line, run as a user runs it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloomseg.backbone.registry import cached_path
from bloomseg.cli import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, main
from bloomseg.data.images import expand_inputs
from bloomseg.files import sha256sum
from conftest import require_shared_data


def test_python_dash_m_and_version():
    run = subprocess.run([sys.executable, "-m", "bloomseg", "--version"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip().startswith("bloomseg 0.")


def test_weights_list(bloomseg_home, small_checkpoints, capsys):
    assert main(["weights", "list"]) == EXIT_OK
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 9
    assert rows[1].split()[:5] == ["dinobloom-s", "vit_small", "21.6M", "384", "not"]
    assert rows[4].split()[:4] == ["dinobloom-g", "vit_giant2", "1134.8M", "1536"]
    target = cached_path("dinobloom-s")
    target.parent.mkdir(parents=True)
    shutil.copy(small_checkpoints["dinobloom"], target)
    assert main(["weights", "list"]) == EXIT_OK
    assert f"cached: {target}" in capsys.readouterr().out


def test_weights_check(small_checkpoints, capsys):
    path = small_checkpoints["timm"]
    assert main(["weights", "check", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "safetensors, timm layout" in out
    assert "vit_small/14, width 384, depth 12, 6 heads, mlp feed-forward" in out
    assert "21,629,184" in out  # counted by hand from the DINOv2 ViT-S/14 shapes
    assert "16x16 (224 px)" in out
    assert sha256sum(path) in out


def test_weights_check_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 broken")
    assert main(["weights", "check", str(bad)]) == EXIT_FAILED
    assert f"error: {bad}: truncated or corrupt" in capsys.readouterr().err


def test_unknown_weights_name(capsys):
    assert main(["weights", "download", "vit-h"]) == EXIT_FAILED
    assert "unknown backbone 'vit-h'" in capsys.readouterr().err


def _write_images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_features_batch_with_a_bad_image(tmp_path, small_checkpoints, capsys):
    inputs = tmp_path / "in"
    _write_images(inputs, [(60, 90), (230, 100)])
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    argv = ["features", str(inputs), "-o", str(out), "--weights", str(small_checkpoints["timm"]), "-q"]
    assert main(argv) == EXIT_SKIPPED
    assert f"{inputs / 'broken.png'}: " in capsys.readouterr().out
    assert np.load(out / "img0_features.npy").shape == (384, 5, 7)
    assert np.load(out / "img1_features.npy").shape == (384, 17, 8)
    assert Image.open(out / "img1_pca.png").size == (200, 230)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries

    before = (out / "img0_features.npy").stat().st_mtime_ns
    (inputs / "broken.png").unlink()
    assert main(argv) == EXIT_SKIPPED  # outputs exist: kept, reported as skipped
    assert "exists; pass --overwrite" in capsys.readouterr().out
    assert (out / "img0_features.npy").stat().st_mtime_ns == before
    assert main(argv + ["--overwrite"]) == EXIT_OK


def test_features_without_weights_is_a_clear_error(tmp_path, bloomseg_home, capsys):
    _write_images(tmp_path / "in", [(20, 20)])
    assert main(["features", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == EXIT_FAILED
    assert "bloomseg weights download dinobloom-s" in capsys.readouterr().err


def test_explore_command(tmp_path, capsys):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=3, n_test=1)
    out = tmp_path / "explore"
    assert main(["explore", "--data", str(data), "-o", str(out), "-q"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "train: 3 images" in printed and "test: 1 images" in printed
    assert {"summary.md", "summary.json", "per_image.csv", "sample_grid.png"} <= {
        p.name for p in out.iterdir()}
    assert main(["explore", "--data", str(data), "-o", str(out), "-q"]) == EXIT_FAILED
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["explore", "--data", str(data), "-o", str(out), "-q", "--overwrite",
                 "--split", "test"]) == EXIT_OK
    assert list(json.loads((out / "summary.json").read_text())["splits"]) == ["test"]
    assert main(["explore", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "o2")]) == EXIT_FAILED
    assert "no such dataset folder" in capsys.readouterr().err


def test_features_comparison_grid(tmp_path, small_checkpoints, capsys):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", n_train=1, n_test=3, size=(70, 100))
    out = tmp_path / "grid"
    weights = str(small_checkpoints["timm"])
    argv = ["features", "--data", str(data), "-o", str(out), "--images", "2", "--tile", "56",
            "--backbone", "dinobloom-s", "--weights", weights,
            "--backbone", "dinov2-s", "--weights", str(small_checkpoints["dinov2"]), "-q"]
    assert main(argv) == EXIT_OK
    with open(out / "feature_comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["backbone"], r["mode"]) for r in rows[:3]] == [
        ("test_00", "dinobloom-s", m) for m in ("resize", "padding", "tiling")]
    assert {r["image"] for r in rows} == {"test_00", "test_02"} and len(rows) == 12
    assert {r["grid"] for r in rows} == {"4x4", "8x5"}
    for name in {r["figure"] for r in rows}:
        assert Image.open(out / name).size[0] > 500
    assert main(argv) == EXIT_FAILED  # kept without --overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--backbone", "dinobloom-s", "--backbone", "dinobloom-b", "--weights", "w"],
     "2 --backbone but 1 --weights"),
    (["--backbone", "dinobloom-s", "--backbone", "dinobloom-s"], "each --backbone once"),
    (["--data", "d", "IMG"], "give INPUT images, or --data DIR"),
    ([], "give INPUT images, or --data DIR"),
])
def test_features_usage_errors(tmp_path, extra, message, capsys):
    assert main(["features", "-o", str(tmp_path)] + extra) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_expand_inputs(tmp_path):
    _write_images(tmp_path / "a", [(5, 5), (5, 5)])
    (tmp_path / "a" / "notes.txt").write_text("x")
    files = expand_inputs([str(tmp_path / "a"), str(tmp_path / "a" / "img*.png"),
                           str(tmp_path / "missing.png")])
    assert [f.name for f in files] == ["img0.png", "img1.png", "missing.png"]


@pytest.mark.realdata
def test_features_on_a_real_smear(tmp_path, small_checkpoints):
    data = require_shared_data()
    image = sorted((data / "test" / "original").iterdir())[0]
    argv = ["features", str(image), "-o", str(tmp_path), "-q", "--batch-size", "16",
            "--weights", str(small_checkpoints["dinobloom"])]
    assert main(argv) == EXIT_OK
    feats = np.load(tmp_path / f"{image.stem}_features.npy")
    assert feats.shape == (384, 86, 115) and np.isfinite(feats).all()
    assert Image.open(tmp_path / f"{image.stem}_pca.png").size == (3200, 1200)


def test_train_resume_and_refusals(tmp_path, bloomseg_home, capsys):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data")
    run = tmp_path / "run"
    base = ["train", "--data", str(data), "--out", str(run), "--backbone", "unet", "--tile", "42",
            "--tiles_per_image", "2", "--batch_size", "4", "--epochs", "1", "--no-colour-jitter",
            "--early_stopping", "3", "-q"]
    assert main(base + ["--augment", "gamma,blur", "--normalise", "none"]) == EXIT_OK
    assert "best val score" in capsys.readouterr().out
    recorded = json.loads((run / "config.json").read_text())["config"]
    assert (recorded["tiles_per_image"], recorded["colour_jitter"], recorded["early_stopping"],
            recorded["head"]) == (2, False, 3, "unet")
    assert (recorded["augment"], recorded["normalise"]) == (["gamma", "blur"], "none")
    assert recorded["data"] == [str(data)]
    assert main(base) == EXIT_FAILED
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "-q"]) == EXIT_OK
    assert main(["train", "--resume", str(tmp_path / "nothing"), "-q"]) == EXIT_USAGE  # not a run
    assert "not a bloomseg training run" in capsys.readouterr().err
    assert main(["train", "--out", str(run)]) == EXIT_USAGE
    with pytest.raises(SystemExit):
        main(base + ["--mode", "crop"])
    # fine-tuning the run on every image: its weights are the start, any hue is drawn
    tuned = tmp_path / "tuned"
    fine = [str(tuned) if a == str(run) else a for a in base if a != "--no-colour-jitter"]
    capsys.readouterr()
    fine += ["--hue-jitter", "0.5", "--init", str(run), "--val-fraction", "0"]
    assert main(fine) == EXIT_OK
    assert f"no validation images, last epoch 1: {tuned / 'best.pt'}" in capsys.readouterr().out
    recorded = json.loads((tuned / "config.json").read_text())["config"]
    assert (recorded["init"], recorded["hue_jitter"], recorded["val_fraction"]) == (
        str(run / "best.pt"), 0.5, 0.0)


def test_train_takes_several_roots_and_refuses_bad_ones(tmp_path, bloomseg_home, capsys):
    from conftest import write_dataset

    one, two = write_dataset(tmp_path / "one"), write_dataset(tmp_path / "two", seed=1)
    run = tmp_path / "run"
    base = ["train", "--out", str(run), "--backbone", "unet", "--tile", "42", "--epochs", "1",
            "--tiles_per_image", "1", "-q"]
    with pytest.raises(SystemExit) as stop:
        main(base + ["--data", str(one), "--augment", "gamma,sharpen"])
    assert stop.value.code == EXIT_USAGE
    assert "argument --augment: sharpen is not one of contrast" in capsys.readouterr().err
    assert main(base + ["--data", str(one), "--ignore-masks", str(two)]) == EXIT_USAGE
    assert f"ignore_masks: {two} is not one of the --data roots" in capsys.readouterr().err
    assert main(base + ["--data", str(one), "--data", str(one)]) == EXIT_USAGE
    assert "a root is given twice" in capsys.readouterr().err
    assert not run.exists()
    assert main(base + ["--data", str(one), "--data", str(two), "--augment", "none"]) == EXIT_OK
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["data"] == [str(one), str(two)] and record["config"]["augment"] == []
    assert [d["name"] for d in record["data"]["datasets"]] == ["one", "two"]
    # no sizes drawn, nothing for a size head to learn from: the run records none
    assert record["config"]["size_head"] is False


def test_train_names_a_bad_file(tmp_path, bloomseg_home, capsys):
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data")
    (data / "train" / "original" / "train_02.png").write_bytes(b"\x89PNG broken")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--backbone", "unet", "-q"])
    assert code == EXIT_FAILED
    assert "train_02.png" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sigterm_stops_training_like_ctrl_c():
    import os
    import signal

    from bloomseg.cli.train import _interrupt_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    try:
        _interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5)  # give the handler a moment to run
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture()
def unet_run(tmp_path, bloomseg_home) -> tuple[Path, Path]:
    """(dataset, run folder) of a one-epoch U-Net trained through the CLI."""
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data", size=(45, 61), boxes=True)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--backbone", "unet",
                 "--tile", "42", "--epochs", "1", "-q"]) == EXIT_OK
    return data, run


def test_predict_writes_masks_overlays_and_summary(tmp_path, unet_run):
    import csv

    data, run = unet_run
    inputs = tmp_path / "inputs"
    shutil.copytree(data / "test" / "original", inputs)
    Image.new("L", (1, 1), 200).save(inputs / "tiny.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG nonsense")
    out = tmp_path / "pred"
    code = main(["predict", str(run), str(inputs), "-o", str(out), "--save-prob", "-q"])
    assert code == EXIT_SKIPPED
    with open(out / "summary.csv") as f:
        rows = {Path(r["image"]).stem: r for r in csv.DictReader(f)}
    assert rows["broken"]["status"].startswith("failed:") and "broken.png" in rows["broken"]["status"]
    assert [rows[s]["status"] for s in ("test_00", "test_01", "tiny")] == ["ok"] * 3
    for stem, size in (("test_00", (61, 45)), ("tiny", (1, 1))):
        with Image.open(out / f"{stem}_mask.png") as mask:
            assert mask.size == size and set(np.unique(np.array(mask))) <= {0, 255}
        with Image.open(out / f"{stem}_prob.tif") as prob:
            assert prob.mode == "F" and prob.size == size
        assert (out / f"{stem}_overlay.png").is_file()
    assert not (out / "broken_mask.png").exists()
    before = (out / "test_00_mask.png").stat().st_mtime_ns
    main(["predict", str(run / "best.pt"), str(inputs / "test_00.png"), "-o", str(out), "-q"])
    assert (out / "test_00_mask.png").stat().st_mtime_ns == before
    assert "skipped" in (out / "summary.csv").read_text()


def test_training_tunes_edge_slivers_and_resuming_a_finished_run_tunes_again(unet_run):
    from bloomseg.cells.instances import edge_grid_for
    from bloomseg.model.files import read_checkpoint_file

    _, run = unet_run

    def tuned() -> tuple[int, list[dict]]:
        with open(run / "edge_tuning.csv") as f:
            rows = list(csv.DictReader(f))
        return read_checkpoint_file(run / "best.pt")["instances"]["edge_min_area"], rows

    edge, rows = tuned()
    # the sizes tried are those of the model's cells
    diameter = read_checkpoint_file(run / "best.pt")["config"]["cell_diameter"]
    assert [int(r["edge_min_area"]) for r in rows] == list(edge_grid_for(diameter))
    assert edge == int(max(rows, key=lambda r: float(r["score"]))["edge_min_area"])
    (run / "edge_tuning.csv").unlink()
    assert main(["train", "--resume", str(run), "-q"]) == EXIT_OK
    assert tuned() == (edge, rows)
    assert "resuming after epoch 1" in (run / "train.log").read_text()


def test_predict_keep_edges_keeps_the_slivers_the_default_model_drops(tmp_path):
    from scipy import ndimage

    from bloomseg.data.synthetic import smear

    cells: list = []
    image, _ = smear(np.random.default_rng(0), 300, 500, cells, radius=(40, 50), density=1 / 20000)
    # crop so that only the rightmost 6 px of one cell remain, a sliver at the new left edge
    # (about 190 px, under the default's 500 px at its scale: about 350 px at these cells')
    cy, cx, r = next(c for c in cells if c[2] + 5 < c[1] < 300 and 60 < c[0] < 240)
    start = int(cx + r - 6)
    Image.fromarray(image[:, start:]).save(tmp_path / "cut.png")
    masks = {}
    for flag in ([], ["--keep-edges"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["predict", "default", str(tmp_path / "cut.png"), "-o", str(out), "-q",
                     *flag]) == EXIT_OK
        with Image.open(out / "cut_mask.png") as mask:
            masks[bool(flag)] = np.array(mask) > 0
    extra = masks[True] & ~masks[False]
    assert not (masks[False] & ~masks[True]).any()
    assert extra[int(cy) - 3:int(cy) + 3, :3].all()  # the sliver, kept only when asked
    # everything else the option keeps is cut by the image's edge too
    pieces, count = ndimage.label(extra)
    edge = np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]])
    assert set(range(1, count + 1)) <= set(edge.tolist())


def test_predict_instances_writes_every_cell_format(tmp_path, unet_run):
    import tifffile

    from bloomseg.cells.formats import rle_decode

    data, run = unet_run
    out = tmp_path / "cells"
    assert main(["predict", str(run), str(data / "test" / "original"), "-o", str(out),
                 "--instances", "--coco", "-q"]) == EXIT_OK
    with open(out / "summary.csv") as f:
        rows = {Path(r["image"]).stem: r for r in csv.DictReader(f)}
    coco = json.loads((out / "cells_coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["test_00.png", "test_01.png"]
    for image_id, stem in enumerate(("test_00", "test_01"), start=1):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.dtype == np.uint16 and labels.shape == (45, 61)
        n = int(labels.max())
        assert set(np.unique(labels)) == set(range(n + 1))  # 1..N, no gaps
        with open(out / f"{stem}_cells.csv") as f:
            cells = list(csv.DictReader(f))
        assert [int(c["id"]) for c in cells] == list(range(1, n + 1))
        assert [int(c["area"]) for c in cells] == [int((labels == i).sum()) for i in range(1, n + 1)]
        assert int(rows[stem]["cells"]) == n
        assert int(rows[stem]["complete_cells"]) == sum(c["touches_border"] == "False" for c in cells)
        features = json.loads((out / f"{stem}.geojson").read_text())["features"]
        assert len(features) == n
        anns = [a for a in coco["annotations"] if a["image_id"] == image_id]
        assert [a["area"] for a in anns] == [int(c["area"]) for c in cells]
        for a, i in zip(anns, range(1, n + 1)):
            np.testing.assert_array_equal(rle_decode(a["segmentation"]), labels == i)


def test_evaluate_command(tmp_path, unet_run, capsys):
    data, run = unet_run
    capsys.readouterr()
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--data", str(data), "-o", str(out), "--visualize", "1", "-q"]
    assert main(args) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and 0 <= metrics["dice"]["cell"] <= 1
    printed = capsys.readouterr().out
    assert f"Dice {metrics['dice']['cell']:.4f}" in printed
    boxes = metrics["instances"]["boxes"]
    assert f"cells: F1 {boxes['f1']:.4f}" in printed
    assert boxes["images"] == 2 and boxes["tp"] + boxes["fn"] == boxes["true_cells"] > 0
    assert len(list((out / "visualizations").iterdir())) == 2
    assert main(args) == EXIT_FAILED
    assert "--overwrite" in capsys.readouterr().err


def test_doctor_reports_weights_and_data(tmp_path, bloomseg_home, monkeypatch, capsys):
    from bloomseg.backbone.registry import cached_path

    data = main(["synthetic", "-o", str(tmp_path / "data"), "--train", "1", "--test", "1"])
    assert data == EXIT_OK
    assert (tmp_path / "data" / "SYNTHETIC.txt").is_file()
    assert len(list((tmp_path / "data" / "test" / "boxes").iterdir())) == 1
    assert main(["synthetic", "-o", str(tmp_path / "data")]) == EXIT_FAILED  # not empty
    monkeypatch.setenv("BLOOMSEG_DATA", str(tmp_path / "data"))
    cached_path("dinobloom-s").parent.mkdir(parents=True)
    cached_path("dinobloom-s").write_bytes(b"x")
    capsys.readouterr()
    assert main(["doctor"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"found: {tmp_path / 'data'}" in out
    assert f"present: {cached_path('dinobloom-s')}" in out
    assert "bloomseg weights download dinobloom-b" in out  # missing, with the fix
    assert "torch threads" in out and "model default" in out


def test_predict_names_cells_with_the_default_and_not_with_no_classes(tmp_path):
    from bloomseg.data.synthetic import REAL_SCALE, smear

    image, _ = smear(np.random.default_rng(3), 400, 500, radius=REAL_SCALE["radius"],
                     density=REAL_SCALE["density"])
    Image.fromarray(image).save(tmp_path / "s.png")
    headers = {}
    for flag in ([], ["--no-classes"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["predict", "default", str(tmp_path / "s.png"), "-o", str(out),
                     "--instances", "-q", *flag]) == EXIT_OK
        headers[bool(flag)] = (out / "s_cells.csv").read_text().splitlines()[0].split(",")
        with open(out / "summary.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert (rows[-1]["image"] == "(all images)") != bool(flag)
    assert "class" in headers[False] and "p_platelet" in headers[False]
    assert "class" not in headers[True]
    # a classifier that is not one is refused by name, before any image is read
    assert main(["predict", "default", str(tmp_path / "s.png"), "-o", str(tmp_path / "o2"),
                 "--instances", "--classifier", str(tmp_path / "s.png"), "-q"]) == EXIT_FAILED
    assert not (tmp_path / "o2").exists()


def test_classify_names_the_cells_predict_found_with_the_same_counts(tmp_path, capsys):
    from bloomseg.data.synthetic import smear

    image, _ = smear(np.random.default_rng(1), 300, 400, radius=(40, 50), density=1 / 12000)
    Image.fromarray(image).save(tmp_path / "field.png")
    assert main(["predict", "default", str(tmp_path / "field.png"), "-o", str(tmp_path / "pred"),
                 "-q", "--cells"]) == EXIT_OK
    with open(tmp_path / "pred" / "summary.csv", encoding="utf-8") as f:
        predicted = next(csv.DictReader(f))
    # the labels predict wrote, named again as if made elsewhere, at predict's diameter
    assert main(["classify", str(tmp_path / "field.png"), "--labels", str(tmp_path / "pred"),
                 "-o", str(tmp_path / "named"), "--diameter", predicted["diameter"], "-q"]) == EXIT_OK
    with open(tmp_path / "named" / "summary.csv", encoding="utf-8") as f:
        named = next(csv.DictReader(f))
    for column in ("cells", "complete_cells", "red_blood_cell", "infected", "white_blood_cell",
                   "platelet", "diameter"):
        assert named[column] == predicted[column], column
    assert named["diameter_source"] == "given"
    capsys.readouterr()
    # a labels folder that is not there is a bad command line, named
    assert main(["classify", str(tmp_path / "field.png"), "--labels", str(tmp_path / "none"),
                 "-o", str(tmp_path / "x")]) == EXIT_USAGE
    assert "error: --labels " in capsys.readouterr().err
    # an image without its label image is skipped and reported
    Image.fromarray(image).save(tmp_path / "other.png")
    assert main(["classify", str(tmp_path / "field.png"), str(tmp_path / "other.png"),
                 "--labels", str(tmp_path / "pred"), "-o", str(tmp_path / "two"), "-q"]) == EXIT_SKIPPED


def test_predict_gives_each_image_a_quality_verdict_and_strict_totals_leave_flagged_out(
        tmp_path, capsys):
    from bloomseg.data.synthetic import smear

    image, _ = smear(np.random.default_rng(1), 300, 400, radius=(40, 50), density=1 / 12000)
    Image.fromarray(image).save(tmp_path / "field.png")
    Image.fromarray(np.full((300, 400, 3), 235, np.uint8)).save(tmp_path / "empty.png")
    totals = {}
    for strict in (False, True):
        out = tmp_path / f"out{strict}"
        capsys.readouterr()
        assert main(["predict", "default", str(tmp_path / "field.png"), str(tmp_path / "empty.png"),
                     "-o", str(out), "--cells", "-q"] + ["--qc-strict"] * strict) == EXIT_OK
        printed = capsys.readouterr().out
        with open(out / "summary.csv", encoding="utf-8") as f:
            rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
        assert (rows["field.png"]["qc"], rows["field.png"]["qc_reasons"]) == ("ok", "")
        assert (rows["empty.png"]["qc"], rows["empty.png"]["qc_reasons"]) == ("check", "empty")
        assert "1 of 2 images need a look" in printed and "report.html" in printed
        # one field with red cells is too short a run for the run's verdict: it says so once
        assert printed.count("the run's classes: not judged: 1 field(s) with red cells") == 1
        assert rows["(all images)"]["qc"] == ""
        report = (out / "report.html").read_text(encoding="utf-8")
        assert "Check these first" in report and "fewer than 8 cells found" in report
        totals[strict] = rows["(all images)"]
    assert totals[False]["status"] == "total of 2 images"
    assert totals[True]["status"] == "total of 1 images (1 to check left out: --qc-strict)"
    assert totals[True]["cells"] == totals[False]["cells"]  # the empty field had none


def test_train_takes_a_folder_of_images_and_their_labels(tmp_path, bloomseg_home, capsys):
    from scipy import ndimage

    from bloomseg.cells.formats import save_labels
    from bloomseg.data.dataset import read_mask
    from conftest import write_dataset

    data = write_dataset(tmp_path / "data")
    saved = tmp_path / "saved"  # images with the <stem>_labels.tif that Save writes
    saved.mkdir()
    for image in (data / "train" / "original").iterdir():
        (saved / image.name).write_bytes(image.read_bytes())
        mask = read_mask(data / "train" / "mask" / f"{image.stem}.png")
        save_labels(saved / f"{image.stem}_labels.tif", ndimage.label(mask)[0])
    run = tmp_path / "run"
    assert main(["train", "--data", str(saved), "--out", str(run), "--backbone", "unet",
                 "--tile", "42", "--epochs", "1", "--tiles_per_image", "1", "-q"]) == EXIT_OK
    [record] = json.loads((run / "config.json").read_text())["data"]["datasets"]
    assert record["with_masks"] == 6 and record["boxes_only"] == 0
    assert (run / "best.pt").is_file()
    # --adapt: the default fine-tuned on the folder, its model exported with a card
    adapted = tmp_path / "adapted"
    capsys.readouterr()
    assert main(["train", "--adapt", "--data", str(saved), "-o", str(adapted), "--epochs",
                 "1", "--items-per-epoch", "2", "--batch-size", "2", "-q"]) == EXIT_OK
    assert f"adapted model: {adapted / 'model'}" in capsys.readouterr().out
    recorded = json.loads((adapted / "config.json").read_text())["config"]
    assert (recorded["epochs"], recorded["freeze"], recorded["backbone"]) == (1, "norms", "unet")
    assert recorded["init"].endswith("default") and (adapted / "model" / "MODEL_CARD.md").is_file()

"""Training runs end to end on synthetic smears: files, learning, reload, resume, cache."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bloomseg.cells.instances import DEFAULT_CENTRES
from bloomseg.data.dataset import scan_split
from bloomseg.errors import ConfigError, DataError, OutputExistsError
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import InferenceOptions
from bloomseg.model.files import load_model
from bloomseg.model.inputs import normalise
from bloomseg.train.cache import ImageStore
from bloomseg.train.config import RUN_FILES, TrainConfig
from bloomseg.train.examples import read_datasets
from bloomseg.train.run import _Run, resume, train
from conftest import require_shared_data, tiny_vit, write_dataset

HEADS = {"fusion": dict(backbone="dinobloom-s", head="fusion"), "unet": dict(backbone="unet")}


@pytest.fixture()
def dataset(tmp_path, bloomseg_home) -> Path:
    return write_dataset(tmp_path / "data", boxes=True)


def config(dataset: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(dataset), out=str(out), tile=56, tiles_per_image=4, batch_size=4,
                    epochs=2, lr=3e-3, seed=3)
    return TrainConfig(**(settings | overrides))


def backbone_for(kind: str):
    return tiny_vit() if kind == "fusion" else None


@pytest.mark.parametrize("kind", list(HEADS))
def test_two_epoch_run_writes_every_file_and_learns(dataset, tmp_path, kind):
    cfg = config(dataset, tmp_path / "run", **HEADS[kind])
    result = train(cfg, backbone=backbone_for(kind), progress=False)
    run = tmp_path / "run"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_dice"]) for r in rows] == pytest.approx([r["val_dice"] for r in history])
    # the size head's reading is scored per dataset and epoch (a share: 0.1 is 10% off)
    errors = [float(r[f"{dataset.name}_size_error"]) for r in rows]
    assert errors == pytest.approx([r["val_datasets"][dataset.name]["size_error"] for r in history])
    assert all(0 <= e < 10 for e in errors)
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["config"]["data"] == [str(dataset.resolve())]
    assert recorded["versions"]["torch"] == torch.__version__
    assert recorded["data"]["train_images"] == 5 and recorded["data"]["val_images"] == 1
    [record] = recorded["data"]["datasets"]
    assert record == {"name": dataset.name, "root": str(dataset.resolve()), "train_images": 5,
                      "val_images": 1, "val_from": str(dataset.resolve() / "splits.json"),
                      "with_masks": 6, "boxes_only": 0, "exhaustive_boxes": True,
                      "items_per_epoch": record["items_per_epoch"], "share": 1.0}
    assert (recorded["backbone"]["tensor_fingerprint"] is None) == (kind == "unet")
    assert len(set(open(run / "train.log").read().splitlines())) >= 4

    # best.pt is safe to load and gives back the validation score it was saved with
    payload = torch.load(run / "best.pt", weights_only=True)
    assert payload["epoch"] == result.best_epoch
    model, _ = load_model(run / "best.pt", backbone=backbone_for(kind))
    val = json.loads((dataset / "splits.json").read_text())["val"]
    counts = PixelCounts()
    # validation is at the common cell size, as training is
    store = ImageStore(tmp_path / "store")
    datasets = read_datasets(TrainConfig(**recorded["config"]), store, run)
    images = {img.sample.stem: img for d in datasets for img in d.train + d.val}
    assert record["items_per_epoch"] == sum(len(img.views) for img in datasets[0].train)
    with torch.no_grad():
        for stem in val:
            image, mask = images[stem].pixels(store)
            seen = normalise(np.asarray(image), cfg.normalise)  # as the model was trained
            logits = predict_logits(model, seen, InferenceOptions(cfg.mode, cfg.tile))
            assert logits.shape == (2, *mask.shape)  # cell and centre map
            counts = counts + PixelCounts.of((logits[0] > 0).numpy(), mask)
    assert counts.dice == pytest.approx(result.best_dice, abs=1e-9)


@pytest.mark.parametrize("kind", list(HEADS))
def test_resume_after_kill_matches_an_uninterrupted_run(dataset, tmp_path, monkeypatch, kind):
    whole = train(config(dataset, tmp_path / "whole", epochs=3, **HEADS[kind]),
                  backbone=backbone_for(kind), progress=False)

    real_step, calls = _Run._step, []

    def dies_in_epoch_two(self, *args):
        calls.append(1)
        if len(calls) == 7:  # 5 train images x 4 tiles / batch 4 = 5 steps an epoch
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(_Run, "_step", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config(dataset, tmp_path / "killed", epochs=3, **HEADS[kind]),
              backbone=backbone_for(kind), progress=False)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 1
    assert "interrupted in epoch 2" in (tmp_path / "killed" / "train.log").read_text()
    monkeypatch.setattr(_Run, "_step", real_step)

    resumed = resume(tmp_path / "killed", backbone=backbone_for(kind), progress=False)
    drop = ("seconds", "backbone_tiles")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in resumed.history]
            == [{k: v for k, v in r.items() if k not in drop} for r in whole.history])
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        torch.testing.assert_close(a["state"][name], b["state"][name], rtol=1e-6, atol=1e-7)


def test_cache_is_reused_equal_and_keyed_by_backbone(dataset, tmp_path):
    # at the images' own size, so the validation image is 2x2 tiles
    common = dict(flips=False, rotations=False, colour_jitter=True, epochs=2, common_size=False,
                  size_head=False, **HEADS["fusion"])
    first = train(config(dataset, tmp_path / "a", **common), backbone=tiny_vit(), progress=False)
    # 5 images x 4 training tiles + 2x2 stitched validation tiles, then nothing:
    # every view is cached
    assert [r["backbone_tiles"] for r in first.history] == [24, 0]
    again = train(config(dataset, tmp_path / "b", **common), backbone=tiny_vit(), progress=False)
    assert [r["backbone_tiles"] for r in again.history] == [0, 0]
    # cached features give exactly what computed ones gave
    assert ([r["train_loss"] for r in again.history] == [r["train_loss"] for r in first.history])
    other = train(config(dataset, tmp_path / "c", **common), backbone=tiny_vit(seed=1),
                  progress=False)
    assert other.history[0]["backbone_tiles"] == 24
    # one variant per item now: colour jitter is fixed per cached item, so more variants
    # mean more cached items
    more = train(config(dataset, tmp_path / "d", **(common | dict(flips=True))),
                 backbone=tiny_vit(), progress=False)
    assert more.history[0]["backbone_tiles"] > 4


def test_another_weights_file_invalidates_the_cache(dataset, tmp_path, small_weights):
    shapes = {k: v.clone() for k, v in small_weights.items()}
    first_file, second_file = tmp_path / "w1.pth", tmp_path / "w2.pth"
    torch.save(shapes, first_file)
    shapes["blocks.11.ls2.gamma"] += 0.5
    torch.save(shapes, second_file)
    settings = dict(head="linear", epochs=1, tiles_per_image=1, flips=False, rotations=False)
    runs = [train(config(dataset, tmp_path / f"run{i}", weights=str(w), **settings),
                  progress=False) for i, w in enumerate((first_file, second_file, first_file))]
    assert [r.history[0]["backbone_tiles"] for r in runs] == [5 + 4, 5 + 4, 0]
    recorded = json.loads((tmp_path / "run1" / "config.json").read_text())
    from bloomseg.files import sha256sum

    assert recorded["backbone"]["weights_sha256"] == sha256sum(second_file)
    assert recorded["config"]["weights"] == str(second_file.resolve())


@pytest.mark.parametrize("mode", ["padding", "resize"])
def test_whole_image_modes(dataset, tmp_path, mode):
    result = train(config(dataset, tmp_path / "run", mode=mode, epochs=1, **HEADS["fusion"]),
                   backbone=tiny_vit(), progress=False)
    assert 0 <= result.best_dice <= 1
    # 5 training images and one validation image, each one view
    assert result.history[0]["backbone_tiles"] <= 6


def test_unfrozen_blocks_train_and_reload(dataset, tmp_path):
    vit = tiny_vit()
    before = vit.blocks[1].attn.qkv.weight.clone()
    train(config(dataset, tmp_path / "run", unfreeze_blocks=1, epochs=1, **HEADS["fusion"]),
          backbone=vit, progress=False)
    assert not torch.equal(vit.blocks[1].attn.qkv.weight, before)
    model, payload = load_model(tmp_path / "run" / "best.pt", backbone=tiny_vit())
    assert "backbone.blocks.1.attn.qkv.weight" in torch.load(
        tmp_path / "run" / "best.pt", weights_only=True)["state"]
    torch.testing.assert_close(model.backbone.blocks[1].attn.qkv.weight,
                               vit.blocks[1].attn.qkv.weight)


def test_reload_refuses_another_backbone(dataset, tmp_path):
    train(config(dataset, tmp_path / "run", epochs=1, **HEADS["fusion"]), backbone=tiny_vit(),
          progress=False)
    from bloomseg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="other backbone weights"):
        load_model(tmp_path / "run" / "best.pt", backbone=tiny_vit(seed=5))


def test_existing_run_needs_resume_or_overwrite(dataset, tmp_path):
    cfg = config(dataset, tmp_path / "run", epochs=1, **HEADS["unet"])
    train(cfg, progress=False)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, progress=False)
    result = train(cfg, progress=False, overwrite=True)
    assert len(result.history) == 1
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1


def test_resume_of_a_finished_run_changes_nothing(dataset, tmp_path):
    cfg = config(dataset, tmp_path / "run", epochs=1, **HEADS["unet"])
    first = train(cfg, progress=False)
    again = resume(tmp_path / "run", progress=False)
    assert again.history == first.history


def test_early_stopping(dataset, tmp_path):
    result = train(config(dataset, tmp_path / "run", epochs=30, early_stopping=1, lr=1e-7,
                          **HEADS["unet"]), progress=False)
    assert result.stopped_early
    assert len(result.history) < 30
    assert result.history[-1]["epoch"] - result.best_epoch == 1


@pytest.mark.parametrize("scheduler, expected", [
    ("cosine", [1.0, 0.5, 0.0]), ("step", [1.0, 1.0, 0.5]), ("none", [1.0, 1.0, 1.0])])
def test_learning_rate_schedules(dataset, tmp_path, scheduler, expected):
    cfg = config(dataset, tmp_path / "run", epochs=2, scheduler=scheduler, step_size=2,
                 **HEADS["unet"])
    run = _Run(TrainConfig.from_dict(vars(cfg) | {"cache_dir": str(tmp_path / "cache")}),
               tmp_path / "run", None, False, resuming=False)
    assert [run._lr_factor(e) for e in (1, 2, 3)] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("overrides, message", [
    (dict(mode="crop"), "mode 'crop'"), (dict(head="segformer"), "head 'segformer'"),
    (dict(tile=100), "tile must be a multiple of 14, got 100"), (dict(loss="l2"), "loss 'l2'"),
    (dict(backbone="unet", head="fusion"), "own head"), (dict(val_fraction=1), "val_fraction"),
    (dict(epochs=0), "epochs"), (dict(hue_jitter=0.6), "hue_jitter")])
def test_invalid_settings_are_named(dataset, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(config(dataset, tmp_path / "run", **overrides), progress=False)
    assert not (tmp_path / "run").exists()


def _parameters(run: Path) -> dict[str, torch.Tensor]:
    return dict(load_model(run / "best.pt")[0].named_parameters())


def test_init_starts_from_another_runs_weights(dataset, tmp_path):
    train(config(dataset, tmp_path / "a", epochs=1, **HEADS["unet"]), progress=False)
    # a learning rate too small to move the weights: the run ends where it started
    still = dict(epochs=1, seed=4, lr=1e-12, weight_decay=0, **HEADS["unet"])
    train(config(dataset, tmp_path / "b", init=str(tmp_path / "a"), **still), progress=False)
    train(config(dataset, tmp_path / "c", **still), progress=False)
    start, tuned, fresh = (_parameters(tmp_path / r) for r in "abc")
    for name, tensor in start.items():
        torch.testing.assert_close(tuned[name], tensor, atol=1e-6, rtol=0)
    assert not all(torch.allclose(fresh[n], t, atol=1e-3) for n, t in start.items())
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert recorded["init"] == str((tmp_path / "a" / "best.pt").resolve())


def test_init_from_a_model_without_a_size_head_gives_it_a_new_one(dataset, tmp_path):
    train(config(dataset, tmp_path / "a", epochs=1, size_head=False, **HEADS["unet"]),
          progress=False)
    still = dict(epochs=1, seed=4, lr=1e-12, weight_decay=0, **HEADS["unet"])
    train(config(dataset, tmp_path / "b", init=str(tmp_path / "a"), **still), progress=False)
    start, tuned = _parameters(tmp_path / "a"), _parameters(tmp_path / "b")
    assert set(tuned) - set(start) == {n for n in tuned if n.startswith("size_head.")} != set()
    for name, tensor in start.items():
        torch.testing.assert_close(tuned[name], tensor, atol=1e-6, rtol=0)


def test_final_fit_on_every_image_keeps_the_last_epoch_and_inherits_settings(dataset, tmp_path):
    train(config(dataset, tmp_path / "a", epochs=1, **HEADS["unet"]), progress=False)
    start = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert start["instances"] != DEFAULT_CENTRES.as_dict()  # so inheriting them shows
    (dataset / "splits.json").unlink()  # the final fit must neither need nor write one
    result = train(config(dataset, tmp_path / "b", epochs=3, val_fraction=0,
                          init=str(tmp_path / "a"), **HEADS["unet"]), progress=False)
    assert (result.best_epoch, result.best_dice) == (3, None)
    assert not (dataset / "splits.json").exists()
    record = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (record["data"]["val_images"], record["data"]["train_images"]) == (
        0, len(scan_split(dataset, "train").samples))
    assert record["data"]["datasets"][0]["val_from"] == "none"
    rows = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [(r["epoch"], r["val_dice"], r["val_loss"]) for r in rows] == [
        (e, None, None) for e in (1, 2, 3)]
    best, last = (torch.load(tmp_path / "b" / f, weights_only=True) for f in ("best.pt", "last.pt"))
    assert best["epoch"] == last["epoch"] == 3
    for name, tensor in best["state"].items():
        torch.testing.assert_close(tensor, last["state"][name])
    assert best["instances"] == start["instances"]
    assert (tmp_path / "b" / "training_curves.png").stat().st_size > 0
    assert resume(tmp_path / "b", progress=False).best_epoch == 3  # re-tuning inherits again
    retuned = torch.load(tmp_path / "b" / "best.pt", weights_only=True)
    assert retuned["instances"] == start["instances"]
    # without --init there is nothing to inherit: the defaults
    train(config(dataset, tmp_path / "c", epochs=1, val_fraction=0, **HEADS["unet"]),
          progress=False)
    fresh = torch.load(tmp_path / "c" / "best.pt", weights_only=True)["instances"]
    assert fresh == DEFAULT_CENTRES.as_dict()


def test_init_from_a_model_that_does_not_fit_is_refused(dataset, tmp_path):
    from bloomseg.errors import CheckpointError

    train(config(dataset, tmp_path / "a", epochs=1, unet_levels=2, **HEADS["unet"]), progress=False)
    with pytest.raises(ConfigError, match=r"--init .*best.pt: .*unet_levels 2 there, 3 here"):
        train(config(dataset, tmp_path / "b", init=str(tmp_path / "a"), unet_levels=3,
                     **HEADS["unet"]), progress=False)
    train(config(dataset, tmp_path / "f", epochs=1, **HEADS["fusion"]), backbone=tiny_vit(),
          progress=False)
    with pytest.raises(ConfigError, match="trained on another backbone"):
        train(config(dataset, tmp_path / "b", init=str(tmp_path / "f"), **HEADS["fusion"]),
              backbone=tiny_vit(seed=5), progress=False)
    with pytest.raises(ConfigError, match="its weights do not fit a fusion model"):
        train(config(dataset, tmp_path / "b", init=str(tmp_path / "f"), unfreeze_blocks=1,
                     **HEADS["fusion"]), backbone=tiny_vit(), progress=False)
    with pytest.raises(CheckpointError, match="nowhere"):
        train(config(dataset, tmp_path / "b", init=str(tmp_path / "nowhere")), progress=False)
    assert not (tmp_path / "b").exists()


def _fails_cleanly(dataset: Path, tmp_path: Path, match: str) -> None:
    with pytest.raises(DataError, match=match):
        train(config(dataset, tmp_path / "run", **HEADS["unet"]), progress=False)
    assert not (tmp_path / "run").exists()
    assert not (dataset / "splits.json").exists()


def test_unreadable_image_is_named(dataset, tmp_path):
    bad = dataset / "train" / "original" / "train_03.png"
    bad.write_bytes(b"not a png at all")
    _fails_cleanly(dataset, tmp_path, "train_03.png")


def test_wrong_size_mask_names_both_files(dataset, tmp_path):
    from PIL import Image

    Image.new("L", (10, 10)).save(dataset / "train" / "mask" / "train_01.png")
    _fails_cleanly(dataset, tmp_path, r"mask[/\\]train_01.png: mask is 10x10 .*original")


def test_orphan_mask_is_named(dataset, tmp_path):
    shutil.copy(dataset / "train" / "mask" / "train_00.png", dataset / "train" / "mask" / "lost.png")
    _fails_cleanly(dataset, tmp_path, "masks without images: lost")


def test_empty_folder(tmp_path, bloomseg_home):
    (tmp_path / "data" / "train" / "original").mkdir(parents=True)
    _fails_cleanly(tmp_path / "data", tmp_path, "no images")


def test_read_only_data_folder_keeps_splits_in_the_run(dataset, tmp_path):
    for path in [dataset, *dataset.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        if (dataset / "probe").exists() or _writable(dataset):
            pytest.skip("running as a user who can write anywhere")
        train(config(dataset, tmp_path / "run", epochs=1, **HEADS["unet"]), progress=False)
        assert (tmp_path / "run" / "splits.json").is_file()
    finally:
        for path in [dataset, *dataset.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)


def _writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


@pytest.mark.realdata
def test_real_data_smoke(tmp_path, bloomseg_home):
    """Two epochs of the U-Net on six real smears (linked, not copied)."""
    shared = require_shared_data()
    data = tmp_path / "data"
    for sub in ("original", "mask"):
        (data / "train" / sub).mkdir(parents=True)
        for path in sorted((shared / "train" / sub).iterdir())[:6]:
            (data / "train" / sub / path.name).symlink_to(path)
    result = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), backbone="unet",
                               epochs=2, tiles_per_image=4, lr=3e-3), progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_dice > 0.5  # cells cover about a third of a smear
    assert np.isfinite([r["val_loss"] for r in result.history]).all()


def test_missing_weights_file_fails_before_the_run_folder(dataset, tmp_path):
    from bloomseg.errors import WeightsError

    with pytest.raises(WeightsError, match="bloomseg weights download dinobloom-s"):
        train(config(dataset, tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_masked_and_a_boxes_only_dataset_train_one_model(dataset, tmp_path):
    boxed = write_dataset(tmp_path / "boxed", n_train=3, n_test=2, seed=5, boxes=True)
    (boxed / "test").rename(boxed / "val")
    for split in ("train", "val"):
        shutil.rmtree(boxed / split / "mask")
    cfg = config(dataset, tmp_path / "run", **HEADS["unet"])
    cfg.data = [str(dataset), str(boxed)]
    result = train(cfg, progress=False)
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    assert f"val {dataset.name}: Dice " in log and "val boxed: cell F1 " in log
    history = json.loads((run / "history.json").read_text())
    for row in history:
        scores = row["val_datasets"]
        assert set(scores) == {dataset.name, "boxed"}
        assert scores["boxed"]["dice"] is None and 0 <= scores["boxed"]["f1"] <= 1
        assert row["val_dice"] == scores[dataset.name]["dice"]
        assert row["val_score"] == pytest.approx((row["val_dice"] + scores["boxed"]["f1"]) / 2)
    assert result.best_score == max(r["val_score"] for r in history)
    with open(run / "history.csv") as f:
        header = next(csv.reader(f))
    assert {f"{dataset.name}_dice", "boxed_f1", "val_score"} <= set(header)
    records = json.loads((run / "config.json").read_text())["data"]["datasets"]
    assert [(r["name"], r["with_masks"], r["boxes_only"], r["share"]) for r in records] == [
        (dataset.name, 6, 0, 0.5), ("boxed", 0, 5, 0.5)]
    assert records[0]["items_per_epoch"] == records[1]["items_per_epoch"]
    assert (records[1]["val_from"], records[1]["val_images"]) == (f"{boxed.resolve()}/val", 2)

"""A few-image fine-tune (``train --adapt``): the recipe's settings, what it leaves
unchanged, the exported model and its card, progress and cancelling."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from bloomseg.data.images import read_image
from bloomseg.errors import DataError
from bloomseg.inference.segmenter import Segmenter
from bloomseg.model.files import CLASSIFIER_FILES, read_checkpoint_file, resolve_model
from bloomseg.train.adapted import FROZEN
from bloomseg.train.config import ADAPT, FREEZE, TrainConfig
from bloomseg.train.examples import epoch_items
from bloomseg.train.run import resume, train
from conftest import write_dataset

QUICK = dict(epochs=2, items_per_epoch=4, batch_size=4)
"""An adapt run short enough for a test (the recipe's schedule takes minutes)."""


@pytest.fixture()
def dataset(tmp_path, bloomseg_home):
    return write_dataset(tmp_path / "data", n_train=3, n_test=1, boxes=True)


def test_the_recipe_yields_to_the_settings_given():
    cfg = TrainConfig.adapted(data="d", out="o", epochs=3, freeze="none")
    assert (cfg.epochs, cfg.freeze, cfg.adapt) == (3, "none", True)  # given, a default too
    for name in set(ADAPT) - {"epochs", "freeze"}:
        assert getattr(cfg, name) == ADAPT[name], name
    assert TrainConfig.from_dict(asdict(cfg)) == cfg  # a resumed run keeps its settings
    plain = TrainConfig(data="d", out="o")
    assert (plain.init, plain.freeze, plain.items_per_epoch) == (None, "none", None)


def test_the_command_line_gives_the_recipe_only_what_was_not_given():
    from bloomseg.cli import build_parser, explicit

    parser = build_parser()._subparsers._group_actions[0].choices["train"]
    argv = ["train", "--adapt", "--data", "d", "-o", "o", "--freeze", "none", "--lr=1e-3"]
    assert explicit(parser, argv) >= {"adapt", "data", "output", "freeze", "lr"}
    assert not explicit(parser, argv) & {"epochs", "items_per_epoch", "init"}


def test_a_fine_tune_takes_the_start_models_settings_where_none_are_given(dataset, tmp_path):
    train(TrainConfig(data=str(dataset), out=str(tmp_path / "a"), backbone="unet",
                      unet_levels=2, tile=56, epochs=1, tiles_per_image=2), progress=False)
    # no backbone, head or levels given: the start model's (no DinoBloom weights needed)
    train(TrainConfig(data=str(dataset), out=str(tmp_path / "b"), init=str(tmp_path / "a"),
                      epochs=1, tiles_per_image=2), progress=False)
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert (recorded["backbone"], recorded["head"], recorded["unet_levels"], recorded["tile"]) \
        == ("unet", "unet", 2, 56)


def test_items_per_epoch_takes_each_image_in_turn(dataset, tmp_path, bloomseg_home):
    from bloomseg.train.cache import ImageStore
    from bloomseg.train.examples import read_datasets

    cfg = TrainConfig(data=str(dataset), out=str(tmp_path), backbone="unet", tile=56,
                      items_per_epoch=7, val_fraction=0)
    datasets = read_datasets(cfg, ImageStore(tmp_path / "images"), tmp_path)
    for epoch in (1, 2):
        items = epoch_items(cfg, [datasets[0].train], epoch, cached=False)
        per_image = np.unique([img.key for img, *_ in items], return_counts=True)[1]
        assert len(items) == 7 and sorted(per_image) == [2, 2, 3]


def test_hold_out_validates_on_the_named_images(dataset, tmp_path):
    result = train(TrainConfig(data=str(dataset), out=str(tmp_path / "run"), backbone="unet",
                               unet_levels=2, tile=56, epochs=1, tiles_per_image=2,
                               hold_out=["train_01"]), progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert (record["train_images"], record["val_images"]) == (2, 1)
    assert record["datasets"][0]["val_from"] == "--hold-out"
    assert result.best_score is not None
    with pytest.raises(DataError, match="--hold-out: no training image named nothing"):
        train(TrainConfig(data=str(dataset), out=str(tmp_path / "bad"), backbone="unet",
                          hold_out=["nothing"]), progress=False)
    assert not (tmp_path / "bad").exists()


def test_the_card_words_every_freeze():
    assert set(FROZEN) == set(FREEZE)


def test_adapting_the_default_keeps_its_norms_and_exports_a_model_with_a_card(dataset, tmp_path):
    steps = []
    result = train(TrainConfig.adapted(data=str(dataset), out=str(tmp_path / "run"), **QUICK),
                   progress=False,
                   listener=lambda done, total: steps.append((done, total)))
    assert steps == [(i, 2) for i in (1, 2)]  # one step per epoch: 4 tiles, batches of 4
    start = read_checkpoint_file(resolve_model("default"))["state"]
    adapted = read_checkpoint_file(result.model_dir)["state"]
    assert set(adapted) == set(start)
    statistics = [n for n in start if n.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(adapted[n], start[n]) for n in statistics)
    for part in ("head.down.", "head.up."):  # the encoder and the decoder both learn
        assert any(not torch.equal(adapted[n], start[n]) for n in start
                   if n.startswith(part) and n.endswith(".weight"))
    assert result.model_dir == tmp_path / "run" / "model"
    assert all((result.model_dir / name).is_file() for name in CLASSIFIER_FILES)
    card = (result.model_dir / "MODEL_CARD.md").read_text()
    assert "Every batch norm's statistics were left as they were" in card
    assert "Fine-tuned from **default (shipped with bloomseg" in card
    assert all(f"`train_0{i}.png`" in card for i in range(3))
    assert str(tmp_path) not in card and str(tmp_path) not in (
        result.model_dir / "config.json").read_text()  # no path of this machine
    # the separation settings were tuned again on the three images, and the model works
    assert "cell separation tuned on the 3 training images" in (
        tmp_path / "run" / "train.log").read_text()
    image = read_image(dataset / "test" / "original" / "test_00.png")
    cells = Segmenter.load(result.model_dir).predict(image, instances=True)
    assert cells.labels.shape == image.shape[:2]


def test_cancelling_stops_the_run_where_it_can_resume(dataset, tmp_path):
    def cancel(done, total):
        if done == 3:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    settings = dict(data=str(dataset), out=str(run), epochs=3, items_per_epoch=4, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig.adapted(**settings), progress=False, listener=cancel)
    assert "interrupted in epoch 2" in (run / "train.log").read_text()
    assert not (run / "model").exists()
    result = resume(run, progress=False)
    assert result.best_epoch == 3 and (run / "model" / "MODEL_CARD.md").is_file()

"""Backbone + head composition: shapes, freezing, fine-tuning, cached-feature path."""

from __future__ import annotations

import pytest
import torch

from bloomseg.backbone.layouts import build_vit
from bloomseg.errors import OutputExistsError
from bloomseg.model.network import SegmentationModel


@pytest.fixture()
def vit(small_weights):
    return build_vit(small_weights)


@pytest.mark.parametrize("head", ["linear", "transposed_conv", "fusion"])
def test_frozen_backbone_gets_no_gradient(vit, head):
    model = SegmentationModel(head, vit, out_channels=2)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = torch.randn(2, 3, 56, 84)
    out = model(x)
    assert out.shape == (2, 2, 56, 84)
    out.mean().backward()
    assert all(p.grad is None for p in vit.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    opt = torch.optim.AdamW(model.parameter_groups(1e-3))
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert len(model.parameter_groups(1e-3)) == 1


def test_cached_features_path_equals_forward(vit):
    model = SegmentationModel("fusion", vit).eval()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        feats = model.features(x)
        assert [f.shape for f in feats] == [(1, 384, 4, 4)] * 4
        torch.testing.assert_close(model.forward_head(feats, x), model(x))
    assert model.layers == [2, 5, 8, 11]


def test_unfreeze_last_blocks(vit):
    model = SegmentationModel("linear", vit, unfreeze_blocks=2)
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.10.", "blocks.11.", "norm.")) for n in trainable)
    assert any(n.startswith("blocks.10.") for n in trainable)
    model(torch.randn(1, 3, 28, 28)).mean().backward()
    assert vit.blocks[11].attn.qkv.weight.grad is not None and vit.blocks[9].attn.qkv.weight.grad is None
    groups = model.parameter_groups(1e-3, backbone_lr_scale=0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]


def test_train_mode_keeps_backbone_in_eval(vit):
    model = SegmentationModel("transposed_conv", vit).train()
    assert model.head.training and not vit.training
    assert not any(m.training for m in vit.modules())


def test_unet_model():
    model = SegmentationModel("unet", out_channels=2)
    assert model(torch.randn(1, 3, 30, 50)).shape == (1, 2, 30, 50)
    with pytest.raises(ValueError, match="no backbone features"):
        model.features(torch.zeros(1, 3, 28, 28))


def test_bad_combinations(vit):
    with pytest.raises(ValueError, match="needs a backbone"):
        SegmentationModel("linear")
    with pytest.raises(ValueError, match="no backbone to pass"):
        SegmentationModel("unet", vit)
    with pytest.raises(ValueError, match=r"unfreeze_blocks 13 not in 0\.\.12"):
        SegmentationModel("linear", vit, unfreeze_blocks=13)


def _unet_checkpoint(path):
    """A 2-level U-Net with a centre map, its batch-norm statistics not the defaults."""
    from bloomseg.model.files import save_checkpoint

    torch.manual_seed(0)
    model = SegmentationModel("unet", out_channels=2, unet_levels=2)
    for name, t in model.state_dict().items():
        if "running" in name:
            t.copy_(torch.rand_like(t) + 0.5)
    config = {"backbone": "unet", "head": "unet", "mode": "tiling", "tile": 224, "centres": True,
              "unet_levels": 2, "out": "/home/someone/run", "cache_dir": "/home/someone/cache"}
    instances = {"method": "centres", "min_distance": 9, "min_height": 0.3, "min_area": 20}
    save_checkpoint(path, model, {"config": config, "backbone_fingerprint": None,
                                  "instances": instances})


def test_exported_model_predicts_exactly_as_the_run(tmp_path):
    import json

    import numpy as np

    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import export_model

    _unet_checkpoint(tmp_path / "best.pt")
    folder = export_model(tmp_path, tmp_path / "exported")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert "out" not in config["config"] and "cache_dir" not in config["config"]
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    run, exported = Segmenter.load(tmp_path), Segmenter.load(folder)
    assert exported.separation == run.separation and exported.separation.min_distance == 9
    a, b = run.predict(image, instances=True), exported.predict(image, instances=True)
    assert np.array_equal(a.probability, b.probability) and np.array_equal(a.centres, b.centres)
    assert np.array_equal(a.labels, b.labels)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_model(tmp_path, folder)
    export_model(folder, folder, overwrite=True)  # an exported model exports again


def test_exported_model_refuses_damaged_files(tmp_path):
    import pickle

    from bloomseg.errors import CheckpointError
    from bloomseg.model.files import export_model, load_model, resolve_model

    _unet_checkpoint(tmp_path / "best.pt")
    folder = export_model(tmp_path / "best.pt", tmp_path / "exported")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a readable exported model"):
        load_model(resolve_model(folder))
    with pytest.raises(CheckpointError, match="no such model file or folder .*default"):
        resolve_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a training run"):
        resolve_model(tmp_path / "empty")


@pytest.mark.parametrize("change, message", [
    ({"unet_levels": 40}, r"unet_levels must be an integer in \[1, 8\], got 40"),  # 16 * 2**39 channels
    ({"unet_levels": "5"}, "unet_levels must be int"),
    ({"unet_levels": True}, "unet_levels must be int"),
    ({"head": 5}, "head must be str"),
    ({"head": "no-such-head", "backbone": "unet"}, "invalid model settings"),
    ({"tile": 10**12}, r"tile must be an integer in \[14, 4096\], got 1000000000000"),
    ({"tile": 100}, "tile must be a multiple of 14, got 100"),
    ({"mode": "eval(1)"}, "mode 'eval\\(1\\)' is not one of"),
    ({"centres": "yes"}, "centres must be bool"),
    (None, "settings are missing"),
])
def test_model_settings_are_checked_before_anything_is_built(tmp_path, change, message):
    """A model file is data: wrong types and absurd sizes in config.json are refused by
    name, quickly, before any layer is allocated."""
    import json
    import time

    from bloomseg.errors import CheckpointError
    from bloomseg.model.files import export_model, load_model

    folder = export_model("default", tmp_path / "model")
    payload = json.loads((folder / "config.json").read_text())
    if change is None:
        del payload["config"]
    else:
        payload["config"].update(change)
    (folder / "config.json").write_text(json.dumps(payload))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)
    assert time.perf_counter() - start < 5


def test_hostile_instance_settings_are_refused(tmp_path):
    import json

    from bloomseg.errors import CheckpointError
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import export_model

    folder = export_model("default", tmp_path / "model")
    payload = json.loads((folder / "config.json").read_text())
    for bad in ({"method": "centres", "min_area": "x"}, {"__class__": 1}, {"method": "rm -rf"}):
        payload["instances"] = bad
        (folder / "config.json").write_text(json.dumps(payload))
        with pytest.raises(CheckpointError, match="instance settings"):
            Segmenter.load(folder)


def test_the_shipped_default_model_finds_cells():
    """The model in the package loads by name, offline, and separates drawn cells."""
    import numpy as np

    from bloomseg.data.synthetic import smear
    from bloomseg.inference.options import SegmenterSpec
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import PACKAGED, resolve_model

    folder = resolve_model("default")
    assert folder == PACKAGED / "default"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 20 * 2**20
    assert (folder / "MODEL_CARD.md").is_file()
    segmenter = Segmenter.load("default")
    assert segmenter.separation.method == "centres"
    # the training masks leave out slivers of cells at the image edge: so does the model
    assert segmenter.separation.edge_min_area > 0
    assert SegmenterSpec("default", keep_edges=True).load().separation.edge_min_area == 0
    cells: list = []
    image, mask = smear(np.random.default_rng(3), 300, 400, cells, radius=(40, 50), density=1 / 30000)
    prediction = segmenter.predict(image, instances=True)
    dice = 2 * (prediction.mask & mask).sum() / (prediction.mask.sum() + mask.sum())
    assert dice > 0.8
    assert abs(int(prediction.labels.max()) - len(cells)) <= 2


@pytest.mark.realdata
def test_the_shipped_default_model_on_a_real_smear():
    """The default model on a test smear it never saw: mask and cells near its card's figures."""
    from bloomseg.cells.matching import match_boxes
    from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
    from bloomseg.data.dataset import load_sample, scan_split
    from bloomseg.evaluation.pixels import PixelCounts
    from bloomseg.inference.segmenter import Segmenter
    from conftest import require_shared_data

    sample = scan_split(require_shared_data(), "test").samples[-1]
    image, mask = load_sample(sample)
    prediction = Segmenter.load("default").predict(image, instances=True)
    assert PixelCounts.of(prediction.mask, mask).dice > 0.95
    match = match_boxes(prediction.labels, yolo_to_xyxy(read_boxes(sample.boxes), *mask.shape))
    assert match.f1 > 0.9 and match.relative_count_error < 0.1
    # every cell is named, and a thin malaria smear is mostly red cells
    kinds = [t["class"] for t in prediction.classes]
    assert len(kinds) == prediction.labels.max()
    assert kinds.count("red_blood_cell") + kinds.count("infected") >= 0.9 * len(kinds)


def test_an_exported_dinobloom_model_finds_its_weights_in_another_cache(
        tmp_path, small_checkpoints, monkeypatch):
    """Exported on one machine, used on another: the model names its backbone by registry
    name and sha256, never by the first machine's path, and finds it in the cache there."""
    import json
    import shutil

    import numpy as np

    from bloomseg.backbone import load_backbone
    from bloomseg.backbone.registry import cached_path
    from bloomseg.errors import CheckpointError, WeightsError
    from bloomseg.files import sha256sum
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import export_model, module_fingerprint, save_checkpoint
    from bloomseg.model.network import SegmentationModel

    here = tmp_path / "machine-a" / "DinoBloom-S.pth"
    here.parent.mkdir()
    shutil.copy(small_checkpoints["dinobloom"], here)
    backbone = load_backbone("dinobloom-s", here)
    torch.manual_seed(0)
    model = SegmentationModel("linear", backbone).eval()
    config = {"backbone": "dinobloom-s", "head": "linear", "mode": "tiling", "tile": 56,
              "centres": False, "unet_levels": 5, "unfreeze_blocks": 0, "weights": str(here),
              "data": str(tmp_path / "machine-a" / "data"), "out": str(tmp_path / "run")}
    save_checkpoint(tmp_path / "run" / "best.pt", model,
                    {"config": config, "backbone_fingerprint": module_fingerprint(backbone),
                     "weights_sha256": sha256sum(here), "layers": model.layers})
    folder = export_model(tmp_path / "run", tmp_path / "exported")
    text = (folder / "config.json").read_text()
    assert "machine-a" not in text and json.loads(text)["weights_sha256"] == sha256sum(here)
    image = np.random.default_rng(0).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    expected = Segmenter.load(tmp_path / "run").predict(image).probability

    here.unlink()  # machine B: the first machine's file is not there
    monkeypatch.setenv("BLOOMSEG_HOME", str(tmp_path / "machine-b"))
    with pytest.raises(WeightsError, match="bloomseg weights download dinobloom-s"):
        Segmenter.load(folder)
    cached_path("dinobloom-s").parent.mkdir(parents=True)
    shutil.copy(small_checkpoints["dinobloom"], cached_path("dinobloom-s"))
    for model_path in (folder, tmp_path / "run"):  # a run whose weights file moved too
        got = Segmenter.load(model_path).predict(image).probability
        np.testing.assert_array_equal(got, expected)
    # another file under the same name is refused by its sha256, not silently used
    torch.save({k: v + 1 for k, v in torch.load(small_checkpoints["dinov2"]).items()},
               cached_path("dinobloom-s"))
    with pytest.raises(CheckpointError, match="sha256"):
        Segmenter.load(folder)
    np.testing.assert_array_equal(  # --weights still names the file outright
        Segmenter.load(folder, weights=small_checkpoints["timm"]).predict(image).probability,
        expected)

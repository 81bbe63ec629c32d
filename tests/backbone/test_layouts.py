"""Every published layout loads strictly and gives the same model; bad files are named."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from bloomseg.backbone.layouts import (
    build_vit,
    detect_layout,
    infer_config,
    load_vit,
    read_checkpoint,
    remap_state_dict,
)
from bloomseg.backbone.vit import ARCHS
from bloomseg.errors import WeightsError
from conftest import (
    SPECS,
    as_chunked,
    as_dinobloom,
    as_timm,
    dinov2_shapes,
    random_weights,
    reference_features,
)


def test_three_layouts_load_strictly_and_agree(small_checkpoints, small_weights):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    outputs = {}
    for layout, path in small_checkpoints.items():
        model, info = load_vit(path)
        assert info.layout == layout
        assert info.config == ARCHS["vit_small"].with_grid(16)
        assert info.format == ("safetensors" if path.suffix == ".safetensors" else "torch-zip")
        assert info.num_params == sum(v.numel() for v in small_weights.values())
        with torch.inference_mode():
            outputs[layout] = model(x)
    assert outputs["dinobloom"].shape == (2, 384, 16, 16)
    torch.testing.assert_close(outputs["dinobloom"], outputs["dinov2"], atol=0, rtol=0)
    torch.testing.assert_close(outputs["dinobloom"], outputs["timm"], atol=0, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(outputs["timm"], reference_features(small_weights, x, 6),
                                   atol=2e-4, rtol=1e-4)


def test_remap_is_pure_and_exact(small_weights):
    checkpoint = as_dinobloom(small_weights)
    before = {k: v.clone() for k, v in checkpoint["teacher"].items()}
    out = remap_state_dict(checkpoint)
    assert set(out) == set(small_weights)
    assert all(out[k] is small_weights[k] for k in small_weights)  # renamed, never copied
    assert all(torch.equal(before[k], checkpoint["teacher"][k]) for k in before)


@pytest.mark.parametrize("arch", list(SPECS))
@pytest.mark.parametrize("layout", ["dinobloom", "dinov2", "timm", "chunked"])
def test_every_size_and_layout_maps_to_the_model(arch, layout):
    """B/L/G (and S) checked by names and shapes on meta tensors: no memory, no time."""
    grid = 37 if layout == "dinov2" else 16
    sd = random_weights(dinov2_shapes(arch, grid=grid), device="meta")
    checkpoint = {"dinobloom": as_dinobloom, "dinov2": dict, "timm": as_timm,
                  "chunked": as_chunked}[layout](sd)
    assert detect_layout(checkpoint) == ("dinov2" if layout == "chunked" else layout)
    remapped = remap_state_dict(checkpoint)
    assert {k: tuple(v.shape) for k, v in remapped.items()} == dinov2_shapes(arch, grid=grid)
    assert infer_config(remapped) == ARCHS[arch].with_grid(grid)
    model = build_vit(remapped)  # strict load on meta tensors
    assert model.cfg.name == arch


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
])
def test_user_resaved_wrappers_unwrap(small_weights, wrap):
    out = remap_state_dict(wrap(small_weights))
    assert set(out) == set(small_weights)
    assert all(out[k] is small_weights[k] for k in small_weights)


def test_chunked_training_layout_gives_same_features(small_weights):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    plain = build_vit(remap_state_dict(small_weights)).eval()
    chunked = build_vit(remap_state_dict(as_dinobloom(as_chunked(small_weights)))).eval()
    with torch.inference_mode():
        torch.testing.assert_close(plain(x), chunked(x), atol=0, rtol=0)


def test_dinov2_hub_grid_37_is_kept_and_resampled_like_dinov2(tmp_path):
    sd = random_weights(dinov2_shapes("vit_small", grid=37), seed=4)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    model, info = load_vit(path)
    assert info.layout == "dinov2" and info.config.grid == 37
    assert model.interpolate_pos_embed(37, 37) is model.pos_embed  # 518 px: unchanged
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = model(x)
        torch.testing.assert_close(got, reference_features(sd, x, 6), atol=2e-4, rtol=1e-4)
    assert got.shape == (1, 384, 16, 16)


def test_legacy_torch_format_loads(tmp_path, small_weights):
    path = tmp_path / "old.pth"
    torch.save(small_weights, path, _use_new_zipfile_serialization=False)
    model, info = load_vit(path)
    assert info.format == "torch-legacy" and info.layout == "dinov2"


# ---- bad files -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth: no such weights file"):
        load_vit(tmp_path / "nope.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.pth: the file is empty"):
        load_vit(tmp_path / "empty.pth")


def test_not_a_weights_file(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(WeightsError, match=r"notes\.pth: not a PyTorch or safetensors"):
        load_vit(tmp_path / "notes.pth")


@pytest.mark.parametrize("layout", ["dinobloom", "timm"])
def test_truncated_file(tmp_path, small_checkpoints, layout):
    data = small_checkpoints[layout].read_bytes()
    path = tmp_path / ("cut" + small_checkpoints[layout].suffix)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"{path.name}: truncated or corrupt"):
        load_vit(path)


def test_corrupt_bytes_inside_a_zip(tmp_path, small_checkpoints):
    data = bytearray(small_checkpoints["dinov2"].read_bytes())
    data[len(data) - 200: len(data) - 100] = b"\x00" * 100  # damage the zip directory
    path = tmp_path / "damaged.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"damaged\.pth: truncated or corrupt"):
        load_vit(path)


@pytest.mark.parametrize("bad, message", [
    ("nan", r"blocks\.5\.attn\.qkv\.weight holds NaN or Inf"),
    ("inf", r"blocks\.5\.attn\.qkv\.weight holds NaN or Inf"),
])
def test_non_finite_weights(tmp_path, small_weights, bad, message):
    sd = dict(small_weights)
    sd["blocks.5.attn.qkv.weight"] = sd["blocks.5.attn.qkv.weight"].clone()
    sd["blocks.5.attn.qkv.weight"][3, 7] = float(bad)
    path = tmp_path / "bad.pth"
    torch.save(as_dinobloom(sd), path)
    with pytest.raises(WeightsError, match=rf"bad\.pth: tensor {message}"):
        load_vit(path)


@pytest.mark.parametrize("shapes, message", [
    ({"conv1.weight": (64, 3, 7, 7), "fc.weight": (1000, 2048)}, "not a DINOv2 vision transformer"),
    ({**dinov2_shapes("vit_small", depth=1), "patch_embed.proj.weight": (384, 3, 16, 16)},
     "patch embedding is 16x16"),
    (dinov2_shapes("vit_small", depth=6), "width 384, depth 6 .* is not a DINOv2 size"),
    ({**dinov2_shapes("vit_small", depth=1), "register_tokens": (1, 4, 384)}, "register tokens"),
    ({k: v for k, v in dinov2_shapes("vit_small").items() if "ls1" not in k},
     "missing: blocks.0.ls1.gamma"),
    ({**dinov2_shapes("vit_small"), "pos_embed": (1, 200, 384)}, "199 patch positions, not a square"),
])
def test_other_architectures_are_named(tmp_path, shapes, message):
    path = tmp_path / "other.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in shapes.items()}, path)
    with pytest.raises(WeightsError, match=rf"other\.safetensors: .*{message}"):
        load_vit(path)


class _Payload:
    """Pickles to a call of os.mkdir: what a malicious checkpoint would do instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path, small_weights):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "DinoBloom-S.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in small_weights.items()},
                "extra": _Payload(str(marker))}, path)
    with pytest.raises(WeightsError, match=r"DinoBloom-S\.pth: refused: .*could run code"):
        read_checkpoint(path)
    with pytest.raises(WeightsError, match="refused"):
        load_vit(path)
    assert not marker.exists()
    # Control: the file really is malicious, an unsafe load would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_no_code_path_can_unpickle():
    """Every torch.load in bloomseg passes weights_only=True, and nothing calls pickle's
    or numpy's object loaders: model files, caches and configs are data, never code."""
    import ast
    from pathlib import Path

    import bloomseg

    found = []
    for path in sorted(Path(bloomseg.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load":
                found.append((path.name, node.lineno))
                assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}"
            assert name not in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"), \
                f"{path}:{node.lineno}: {name}"
            if name in ("np.load", "numpy.load"):
                assert keywords.get("allow_pickle", "False") == "False", f"{path}:{node.lineno}"
    assert found  # the scan sees the loaders that exist

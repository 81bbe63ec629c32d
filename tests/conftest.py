"""Shared test helpers: DINOv2 checkpoints in the published layouts, with random weights.

The key names and shapes below are written from the published checkpoints (DINOv2 hub
``dinov2_vit*14_pretrain.pth``, DinoBloom's Zenodo ``teacher`` dict, timm's
``vit_*_patch14_dinov2``), independently of ``bloomseg.vit``, so the tests check the
model against the real layout rather than against itself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bloomseg.data.synthetic import smear, write_dataset, yolo_lines  # noqa: F401 (for the tests)
from bloomseg.inference.segmenter import Prediction, Scale

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbbc041seg"

# width, depth, heads, feed-forward, feed-forward hidden width (G: DINOv2's fused SwiGLU)
SPECS = {
    "vit_small": (384, 12, 6, "mlp", 1536),
    "vit_base": (768, 12, 12, "mlp", 3072),
    "vit_large": (1024, 24, 16, "mlp", 4096),
    "vit_giant2": (1536, 40, 24, "swiglu", 4096),
}


def dinov2_shapes(arch: str, grid: int = 16, depth: int | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of an original DINOv2 ``DinoVisionTransformer`` state dict."""
    dim, full_depth, _, ffn, hidden = SPECS[arch]
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth or full_depth):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "ls1.gamma": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "ls2.gamma": (dim,),
        })
        if ffn == "mlp":
            shapes.update({p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                           p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
        else:
            shapes.update({p + "mlp.w12.weight": (2 * hidden, dim), p + "mlp.w12.bias": (2 * hidden,),
                           p + "mlp.w3.weight": (dim, hidden), p + "mlp.w3.bias": (dim,)})
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0,
                   device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random weights of plausible scale. LayerScale gammas are 0.3-1.0, so every block
    changes the output (real DINOv2 gammas are far from the 1e-5 they start at)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if device == "meta":
            out[key] = torch.empty(shape, device="meta")
            continue
        if key.endswith("gamma"):
            t = 0.3 + 0.7 * torch.rand(shape, generator=gen)
        elif "norm" in key and key.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif key == "mask_token":
            t = torch.zeros(shape)
        elif key in ("cls_token", "pos_embed"):  # large enough that position matters
            t = 0.5 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # biases
            t = 0.02 * torch.randn(shape, generator=gen)
        else:  # linear and conv weights: unit-variance outputs
            fan_in = shape[1] if len(shape) == 2 else shape[1] * shape[2] * shape[3]
            t = fan_in**-0.5 * torch.randn(shape, generator=gen)
        out[key] = t
    return out


def as_dinobloom(sd: dict[str, torch.Tensor]) -> dict:
    """The Zenodo DinoBloom layout: a DINOv2 training checkpoint's ``teacher``."""
    teacher = {f"backbone.{k}": v for k, v in sd.items()}
    dim = sd["cls_token"].shape[-1]
    teacher.update({
        "dino_head.mlp.0.weight": torch.randn(64, dim), "dino_head.mlp.0.bias": torch.randn(64),
        "dino_head.last_layer.weight_g": torch.randn(128, 1),
        "ibot_head.mlp.0.weight": torch.randn(64, dim),
        "ibot_head.last_layer.weight_v": torch.randn(128, 64),
    })
    return {"teacher": teacher}


def as_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm / Hugging Face layout: no mask_token, SwiGLU packed as fc1/fc2."""
    out = {}
    for k, v in sd.items():
        if k == "mask_token":
            continue
        out[k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2.")] = v
    return out


def as_chunked(sd: dict[str, torch.Tensor], chunks: int = 4) -> dict[str, torch.Tensor]:
    """DINOv2 training layout with block_chunks > 0: ``blocks.<chunk>.<i>.``."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    size = depth // chunks
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // size}.{i}." + k.split(".", 2)[2]
        out[k] = v
    return out


@pytest.fixture(scope="session")
def small_weights() -> dict[str, torch.Tensor]:
    """Random ViT-S/14 weights in DINOv2 names with DinoBloom's 16x16 position grid."""
    return random_weights(dinov2_shapes("vit_small", grid=16), seed=1)


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory, small_weights) -> dict[str, Path]:
    """The same ViT-S weights written in each published layout."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {
        "dinobloom": folder / "DinoBloom-S.pth",
        "dinov2": folder / "dinov2_vits14_pretrain.pth",
        "timm": folder / "model.safetensors",
    }
    torch.save(as_dinobloom(small_weights), paths["dinobloom"])
    torch.save(small_weights, paths["dinov2"])
    save_file({k: v.contiguous() for k, v in as_timm(small_weights).items()}, paths["timm"])
    return paths


@pytest.fixture()
def bloomseg_home(tmp_path, monkeypatch) -> Path:
    """An empty bloomseg cache for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("BLOOMSEG_HOME", str(home))
    return home


def require_shared_data() -> Path:
    """The real smears, or skip with a message saying where they are expected."""
    if not (SHARED_DATA / "test" / "original").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data); skipping real-data check")
    return SHARED_DATA


def tiny_vit(seed: int = 0):
    """A 2-block, width-32 DINOv2 ViT with random weights: fast enough for training tests."""
    from bloomseg.backbone.vit import DinoVisionTransformer, ViTConfig

    model = DinoVisionTransformer(ViTConfig("vit_tiny_test", 32, 2, 2, grid=4))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_weights(shapes, seed=seed))
    return model.eval().requires_grad_(False)


def reference_features(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2's forward written out with explicit tensor maths (no bloomseg code).

    Patch conv, CLS, position embedding (bicubic with DINOv2's +0.1 scale-factor trick),
    pre-norm blocks with softmax attention and LayerScale, final LayerNorm.
    """
    b, _, h, w = x.shape
    dim = sd["cls_token"].shape[-1]
    rows, cols = h // 14, w // 14
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    t = torch.cat([sd["cls_token"].expand(b, 1, dim), t.flatten(2).transpose(1, 2)], dim=1)
    pos = sd["pos_embed"]
    m = math.isqrt(pos.shape[1] - 1)
    if (rows, cols) != (m, m):
        grid = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)
    t = t + pos
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hd = dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = (y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, -1, dim)
        t = t + sd[p + "ls1.gamma"] * (att @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"])
        y = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        if p + "mlp.w12.weight" in sd:
            gate, value = (y @ sd[p + "mlp.w12.weight"].T + sd[p + "mlp.w12.bias"]).chunk(2, dim=-1)
            y = (F.silu(gate) * value) @ sd[p + "mlp.w3.weight"].T + sd[p + "mlp.w3.bias"]
        else:
            y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        t = t + sd[p + "ls2.gamma"] * y
    t = F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 1:].transpose(1, 2).reshape(b, dim, rows, cols)




class Components:
    """A stand-in segmenter: dark pixels are cell, each connected blob one cell, so the
    whole image's labels are known exactly."""

    name = "components"
    diameter = "model"  # segments every image at its own scale

    def scale_of(self, image, diameter=None) -> Scale:
        return Scale(None, "model")

    def levels_of(self, image) -> None:
        return None

    def predict(self, image: np.ndarray, instances: bool = False, edges=None,
                diameter=None, origin=(0, 0), levels=None, classes=True) -> Prediction:
        from scipy import ndimage

        mask = image.mean(axis=2) < 200
        labels = ndimage.label(mask)[0].astype(np.int32) if instances else None
        return Prediction(mask.astype(np.float32), mask, 0.0, None, labels)


def need_viewer() -> None:
    """Skip the calling test module where napari cannot draw here."""
    pytest.importorskip("napari", reason="the napari plugin's tests need: pip install 'bloomseg[napari]'")
    pytest.importorskip("pytestqt", reason="the napari plugin's tests need pytest-qt (bloomseg[dev])")
    if not os.environ.get("DISPLAY"):
        pytest.skip("napari needs a display: run the tests under xvfb-run (make test does)",
                    allow_module_level=True)


class DarkCells(nn.Module):
    """A pixel-local stand-in model: dark pixels are cell (logit 8 x darkness)."""

    backbone = None
    size_head = None
    grid, reach = 16, 0
    out_channels = 1

    def forward(self, x):
        return 8 * (0.5 - x.mean(dim=1, keepdim=True))  # ImageNet-normalised: cells < 0.5


class Dummy:
    """Stands in for a classifier: what it says comes from :func:`by_colour`. Its one
    training lab's red cells have the features of a cell called red (:func:`by_colour`'s
    features are its probabilities), one field lying 0.1 from the lab's mean."""

    class config:  # noqa: N801 (mirrors ClassifierConfig's attribute)
        infected_threshold = 0.5

    def __init__(self, lab: str = "red_blood_cell") -> None:
        import torch

        from bloomseg.data.vocabulary import CLASSES

        self.lab_centres = torch.zeros(1, len(CLASSES))
        self.lab_centres[0, CLASSES.index(lab)] = 1
        self.lab_scatter = torch.tensor([0.1])


def by_colour(classifier, image, labels, diameter, **_):
    """Bluish cells are white (platelets when small), the rest red; none unfamiliar; the
    features are the probabilities."""
    from bloomseg.data.vocabulary import CLASSES
    from bloomseg.model.classifier import CellCalls

    p = np.zeros((int(labels.max()), len(CLASSES)))
    for cell in range(1, int(labels.max()) + 1):
        pixels = image[labels == cell].astype(float)
        bluish = pixels[:, 2].mean() > pixels[:, 0].mean()
        name = ("platelet" if len(pixels) < 1000 else "white_blood_cell") if bluish \
            else "red_blood_cell"
        p[cell - 1, CLASSES.index(name)] = 1
    return CellCalls(p, np.zeros(len(p), bool), p.astype(np.float32))


def ring_crop(size: int = 40) -> np.ndarray:
    """A cell on black: a disk with a pure black pixel at its centre (a hole)."""
    yy, xx = np.mgrid[:size, :size]
    crop = np.zeros((size, size, 3), np.uint8)
    disk = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 2 - 2) ** 2
    crop[disk] = (150, 100, 160)
    crop[size // 2, size // 2] = 0
    return crop


def write_crops_root(root, manifest: bool = True) -> None:
    """A tiny root of single-cell crops (:mod:`bloomseg.data.crops`): three train crops of
    two sessions, one val crop, and a manifest that renames one crop's stage."""
    for split, stage, name in (("train", "ring", "s1-0001-R0"), ("train", "ring", "s1-0001-R1"),
                               ("train", "trophozoite", "s2-0001-R0"), ("val", "ring", "s3-0001-R0")):
        (root / split / stage).mkdir(parents=True, exist_ok=True)
        Image.fromarray(ring_crop()).save(root / split / stage / f"{name}.png")
    if manifest:
        (root / "manifest.csv").write_text(
            "file,split,stage_reviewed,session_id,equiv_diameter_px\n"
            "train/ring/s1-0001-R0.png,train,ring,s1,60\n"
            "train/ring/s1-0001-R1.png,train,ring,s1,70\n"
            "train/trophozoite/s2-0001-R0.png,train,gametocyte,s2,90\n", encoding="utf-8")

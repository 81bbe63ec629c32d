"""Reading weights files safely and mapping every published layout to the ViT's names.

Three published layouts hold the same DINOv2 ViT under different names:

- ``dinobloom``: the Zenodo DinoBloom ``.pth`` (record 10908163), a DINOv2 training
  checkpoint ``{"teacher": {"backbone.<name>": ..., "dino_head.*", "ibot_head.*"}}``
  with a 16x16 position grid (224 px) and a ``mask_token``;
- ``dinov2``: the original DINOv2 hub ``.pth`` (``dinov2_vits14_pretrain.pth`` ...), the
  model's own names with a 37x37 grid (518 px);
- ``timm``: timm / Hugging Face ``model.safetensors`` (``1aurent/vit_*_patch14_224.dinobloom``),
  no ``mask_token``, SwiGLU packed as ``mlp.fc1``/``mlp.fc2``.

:func:`remap_state_dict` turns any of them into :mod:`bloomseg.backbone.vit` names; the model then
loads with ``strict=True``. Files are read with ``torch.load(weights_only=True)`` or
safetensors only, so a checkpoint is data and never code.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bloomseg.backbone.vit import ARCHS, PATCH_SIZE, DinoVisionTransformer, ViTConfig
from bloomseg.errors import WeightsError

_DROPPED_PREFIXES = ("dino_head.", "ibot_head.", "head.")
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")  # DINOv2 FSDP chunks: blocks.<chunk>.<i>.
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a weights file turned out to hold.

    Attributes:
        path: the file.
        format: container: ``torch-zip``, ``torch-legacy`` or ``safetensors``.
        layout: naming scheme: ``dinobloom``, ``dinov2`` or ``timm``.
        config: the ViT architecture inferred from the tensor shapes.
        num_params: number of backbone parameters (``mask_token`` included).
    """

    path: Path
    format: str
    layout: str
    config: ViTConfig
    num_params: int


def sniff_format(head: bytes) -> str | None:
    """Container format from a file's first bytes, or None if unknown."""
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:2] == b"\x80\x02":  # pickle protocol 2: torch's pre-1.6 format
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then JSON header
        return "safetensors"
    return None


def read_checkpoint(path: str | Path) -> tuple[Mapping[str, Any], str]:
    """Read a weights file without executing anything it contains.

    Args:
        path: a ``.pth``/``.pt``/``.bin`` (PyTorch) or ``.safetensors`` file; the format
            is recognised from the content, not the name.

    Returns:
        (the deserialised mapping, its container format).

    Raises:
        WeightsError: missing, empty, truncated, corrupt, not a weights file, or holding
            Python objects (a pickle that could run code) rather than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise WeightsError(f"{path}: the file is empty")
    fmt = sniff_format(head)
    if fmt is None:
        raise WeightsError(
            f"{path}: not a PyTorch or safetensors weights file (it starts with {head[:8]!r})"
        )
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path}: refused: the checkpoint holds Python objects, not only tensors, and "
            f"loading it could run code ({reason}). bloomseg loads weights only; re-save "
            "a trusted model with torch.save(model.state_dict(), PATH)."
        ) from None
    except Exception as e:  # torch and safetensors raise many types for damaged files
        raise WeightsError(f"{path}: truncated or corrupt {fmt} file ({e})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    return obj, fmt


def _unwrap(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """Find the backbone's tensors inside a checkpoint; also name the layout."""
    if isinstance(checkpoint.get("teacher"), Mapping):
        teacher = checkpoint["teacher"]
        tensors = {k.removeprefix("backbone."): v for k, v in teacher.items()}
        return tensors, "dinobloom"
    for wrapper in ("state_dict", "model"):
        if "cls_token" not in checkpoint and isinstance(checkpoint.get(wrapper), Mapping):
            return _unwrap(checkpoint[wrapper])
    keys = list(checkpoint)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel
        return _unwrap({k.removeprefix("module."): v for k, v in checkpoint.items()})
    return checkpoint, "dinov2" if "mask_token" in checkpoint else "timm"


def detect_layout(checkpoint: Mapping[str, Any]) -> str:
    """``dinobloom``, ``dinov2`` or ``timm``: which published layout a checkpoint uses."""
    return _unwrap(checkpoint)[1]


def remap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Map a checkpoint of any published layout to the names of
    :class:`~bloomseg.backbone.vit.DinoVisionTransformer`.

    Pure: renames and drops entries, never changes a value. Unwraps ``teacher`` and
    ``backbone.``, drops ``dino_head``/``ibot_head``/``head``, flattens DINOv2's chunked
    ``blocks.<chunk>.<i>`` to ``blocks.<i>``, renames timm's packed SwiGLU ``fc1``/``fc2``
    to ``w12``/``w3``, and adds DINOv2's all-zero ``mask_token`` where timm dropped it
    (it only matters for masked-image training).

    Args:
        checkpoint: the mapping :func:`read_checkpoint` returned.

    Returns:
        A flat ``{name: tensor}`` state dict.

    Raises:
        ValueError: the checkpoint has register tokens (DINOv2-reg; DinoBloom has none).
    """
    tensors, _ = _unwrap(checkpoint)
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if not isinstance(value, Tensor) or key.startswith(_DROPPED_PREFIXES):
            continue
        out[_CHUNKED_BLOCK.sub(r"blocks.\1.", key)] = value
    if "register_tokens" in out or "reg_token" in out:
        raise ValueError("it has register tokens (a DINOv2 '_reg' model); DinoBloom has none")
    for key in [k for k in out if k.endswith(".mlp.fc1.weight")]:
        block = key[: -len("fc1.weight")]
        fc2 = out.get(block + "fc2.weight")
        if fc2 is not None and out[key].shape[0] == 2 * fc2.shape[1]:  # packed [gate; value]
            for part in ("weight", "bias"):
                for old, new in (("fc1", "w12"), ("fc2", "w3")):
                    if block + f"{old}.{part}" in out:
                        out[block + f"{new}.{part}"] = out.pop(block + f"{old}.{part}")
    cls = out.get("cls_token")
    if "mask_token" not in out and cls is not None:
        out["mask_token"] = torch.zeros(1, cls.shape[-1], dtype=cls.dtype, device=cls.device)
    return out


def infer_config(state_dict: Mapping[str, Tensor]) -> ViTConfig:
    """The DINOv2 architecture (S/B/L/G and position grid) a remapped state dict holds.

    Raises:
        ValueError: not a ViT, not patch 14, or not one of the four DINOv2 sizes.
    """
    missing = [k for k in ("patch_embed.proj.weight", "pos_embed", "cls_token") if k not in state_dict]
    if missing:
        sample = ", ".join(list(state_dict)[:5]) or "none"
        raise ValueError(
            f"not a DINOv2 vision transformer: no {', '.join(missing)} (first keys: {sample})"
        )
    dim, channels, ph, pw = state_dict["patch_embed.proj.weight"].shape
    if (ph, pw) != (PATCH_SIZE, PATCH_SIZE) or channels != 3:
        raise ValueError(
            f"patch embedding is {ph}x{pw} over {channels} channels; DinoBloom and DINOv2 "
            f"/14 models use {PATCH_SIZE}x{PATCH_SIZE} RGB patches"
        )
    indices = [int(m.group(1)) for k in state_dict if (m := _BLOCK_INDEX.match(k))]
    depth = max(indices) + 1 if indices else 0
    ffn = "swiglu" if "blocks.0.mlp.w12.weight" in state_dict else "mlp"
    arch = next(
        (a for a in ARCHS.values() if (a.embed_dim, a.depth, a.ffn) == (dim, depth, ffn)), None
    )
    if arch is None:
        sizes = ", ".join(f"{a.embed_dim}/{a.depth}/{a.ffn}" for a in ARCHS.values())
        raise ValueError(
            f"a ViT of width {dim}, depth {depth} with a {ffn} feed-forward is not a DINOv2 "
            f"size (width/depth/ffn: {sizes})"
        )
    positions = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ValueError(f"pos_embed has {positions} patch positions, not a square grid")
    return arch.with_grid(grid)


def _check_matches(model: DinoVisionTransformer, state_dict: Mapping[str, Tensor]) -> None:
    """Raise ValueError naming missing, unexpected and mis-shaped tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = [
        f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if items
    ]
    if problems:
        raise ValueError(f"does not match a DINOv2 {model.cfg.name}: " + "; ".join(problems))


def _check_finite(state_dict: Mapping[str, Tensor]) -> None:
    for key, value in state_dict.items():
        if value.is_floating_point() and not value.is_meta and not torch.isfinite(value).all():
            raise ValueError(f"tensor {key} holds NaN or Inf values")


def build_vit(state_dict: Mapping[str, Tensor]) -> DinoVisionTransformer:
    """Build the ViT a remapped state dict describes and load it strictly (float32).

    The model takes the given float32 tensors as its parameters without copying them
    (a ViT-g is 4.5 GB); pass clones if the dict is used elsewhere.

    Raises:
        ValueError: wrong architecture, mismatched tensors, or NaN/Inf weights.
    """
    cfg = infer_config(state_dict)
    with torch.device("meta"):
        model = DinoVisionTransformer(cfg)
    _check_matches(model, state_dict)
    _check_finite(state_dict)
    floats = {k: v.float() for k, v in state_dict.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    return model


def load_vit(path: str | Path) -> tuple[DinoVisionTransformer, CheckpointInfo]:
    """Read, remap, check and load a DinoBloom/DINOv2 weights file of any layout.

    Args:
        path: the weights file.

    Returns:
        (the model in eval mode on the CPU, what the file held).

    Raises:
        WeightsError: naming the file and the problem.
    """
    path = Path(path)
    checkpoint, fmt = read_checkpoint(path)
    try:
        layout = detect_layout(checkpoint)
        model = build_vit(remap_state_dict(checkpoint))
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    num_params = sum(p.numel() for p in model.parameters())
    info = CheckpointInfo(path, fmt, layout, model.cfg, num_params)
    return model.eval(), info

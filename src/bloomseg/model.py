"""The segmentation model: ``features = backbone(x); logits = head(features, x)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bloomseg.errors import CheckpointError
from bloomseg.heads import UNet, build_head, head_layers
from bloomseg.vit import PATCH_SIZE, DinoVisionTransformer


class SegmentationModel(nn.Module):
    """A frozen (or partly fine-tuned) ViT backbone under a head, or a from-scratch U-Net.

    Args:
        head: head name (``linear``, ``transposed_conv``, ``fusion``) or ``unet``.
        backbone: the ViT; required for a head, must be None for ``unet``.
        out_channels: logit channels (channel 0 = cell).
        unfreeze_blocks: fine-tune the last N backbone blocks (and the final norm, which
            every returned layer passes through); 0 keeps the backbone frozen.
        unet_levels: resolution levels of the ``unet`` (widths 16, 32, 64, ...); five
            see about 190 px, two cells across.

    The backbone always runs in eval mode: frozen parts must not change, and DINOv2 has
    no dropout or batch statistics that training mode would use.
    """

    def __init__(self, head: str, backbone: DinoVisionTransformer | None = None,
                 out_channels: int = 1, unfreeze_blocks: int = 0, unet_levels: int = 5) -> None:
        super().__init__()
        self.out_channels = out_channels
        if head == "unet":
            if backbone is not None or unfreeze_blocks:
                raise ValueError("the unet model has no backbone to pass or unfreeze")
            self.backbone, self.layers = None, []
            self.head: nn.Module = UNet(out_channels, tuple(16 * 2**i for i in range(unet_levels)))
            return
        if backbone is None:
            raise ValueError(f"head {head!r} needs a backbone")
        depth = len(backbone.blocks)
        if not 0 <= unfreeze_blocks <= depth:
            raise ValueError(f"unfreeze_blocks {unfreeze_blocks} not in 0..{depth}")
        self.backbone = backbone
        self.layers = head_layers(head, depth)
        self.head = build_head(head, backbone.embed_dim, out_channels)
        backbone.requires_grad_(False)
        if unfreeze_blocks:
            backbone.blocks[depth - unfreeze_blocks:].requires_grad_(True)
            backbone.norm.requires_grad_(True)
        self.train()

    @property
    def grid(self) -> int:
        """px: windows of an image must start on this grid to see it as the whole image
        does (the ViT's patches, the U-Net's pooling)."""
        return PATCH_SIZE if self.backbone is not None else self.head.multiple

    @property
    def reach(self) -> int:
        """px of context that can change an output pixel: a ViT model's heads see about
        8 patches; a U-Net its receptive field."""
        return 8 * PATCH_SIZE if self.backbone is not None else self.head.reach

    def train(self, mode: bool = True) -> "SegmentationModel":
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """Backbone feature maps the head reads: ``len(self.layers)`` x (B, D, H/14, W/14).

        Rounded to float16 precision (and returned as contiguous float32): the feature
        cache stores float16, and rounding here too makes a cached run and a live one
        agree exactly (the memory layout matters as well: convolutions round differently
        on a transposed one).
        """
        if self.backbone is None:
            raise ValueError("the unet model has no backbone features")
        maps = self.backbone.forward_intermediates(x, self.layers)
        return [f.half().float().contiguous() for f in maps]

    def forward_head(self, features: list[Tensor], x: Tensor) -> Tensor:
        """Logits from precomputed (e.g. cached) features and the image: (B, C, H, W)."""
        return self.head(features, x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H, W) logits. For a ViT backbone, H and W
        must be multiples of 14."""
        if self.backbone is None:
            return self.head(x)
        return self.forward_head(self.features(x), x)

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimizer groups: the head at ``lr``, fine-tuned backbone parts at a lower rate."""
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if self.backbone is not None:
            tuned = [p for p in self.backbone.parameters() if p.requires_grad]
            if tuned:
                groups.append({"params": tuned, "lr": lr * backbone_lr_scale})
        return groups


CHECKPOINT_KIND = "bloomseg-segmentation-model"


def trainable_state(model: SegmentationModel) -> dict[str, Tensor]:
    """What training changes: the head (weights and batch-norm statistics) and any
    fine-tuned backbone blocks. The frozen backbone is named by its weights instead."""
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().clone() for name, t in model.state_dict().items()
            if name.startswith("head.") or name in tuned}


def save_checkpoint(path: str | Path, model: SegmentationModel, info: dict) -> None:
    """Write a model checkpoint atomically, readable with ``torch.load(weights_only=True)``.

    Args:
        path: the .pt file.
        model: the trained model.
        info: JSON-like data kept beside the weights; must hold ``config`` (the training
            settings: ``head``, ``backbone``, ``weights``, ``unfreeze_blocks``) and
            ``backbone_fingerprint`` (None for the unet).
    """
    from bloomseg import __version__
    from bloomseg.io import atomic_output

    payload = {"kind": CHECKPOINT_KIND, "bloomseg": __version__, **info,
               "state": trainable_state(model)}
    with atomic_output(path) as f:
        torch.save(payload, f)


PACKAGED = Path(__file__).resolve().parent / "models"
"""Models shipped inside the package, one folder each (``default``: the best model trained
here on real smears, see its MODEL_CARD.md)."""

EXPORT_FILES = ("model.safetensors", "config.json")


def resolve_model(name: str | Path) -> Path:
    """The checkpoint a model name or path means.

    Args:
        name: a packaged model's name (``default``), a run folder (its best.pt), an
            exported model folder (model.safetensors + config.json), or a .pt file.

    Raises:
        CheckpointError: none of these.
    """
    path = Path(name)
    if not path.exists() and (PACKAGED / str(name)).is_dir():
        path = PACKAGED / str(name)
    if path.is_dir():
        if (path / EXPORT_FILES[0]).is_file():
            return path
        if (path / "best.pt").is_file():
            return path / "best.pt"
        raise CheckpointError(f"{path}: neither a training run (best.pt) nor an exported model "
                              f"({' + '.join(EXPORT_FILES)})")
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in PACKAGED.iterdir() if p.is_dir())) \
            if PACKAGED.is_dir() else "none"
        raise CheckpointError(f"{path}: no such model file or folder (models shipped: {shipped})")
    return path


def read_checkpoint_file(path: str | Path) -> dict:
    """A bloomseg model checkpoint as a dict (safely: no code runs while loading), from a
    .pt file or an exported folder.

    Raises:
        CheckpointError: unreadable, or not a bloomseg model checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        return _read_exported(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or unsafe files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a bloomseg model checkpoint (best.pt or last.pt "
                              "of a `bloomseg train` run)")
    check_written_by(payload.get("bloomseg"), path)
    return payload


def check_written_by(version: object, path: str | Path) -> None:
    """Refuse a checkpoint or run written by a newer bloomseg (by major.minor): its
    settings may mean what this version does not know. Older files are read, with the
    defaults of their time for settings added since.

    Raises:
        CheckpointError: naming the file and both versions.
    """
    from bloomseg import __version__

    def major_minor(text: object) -> tuple[int, int]:
        major, minor = (str(text).split(".") + ["0"])[:2]
        return int(major), int(minor)

    if version is None:  # written before versions were recorded
        return
    try:
        written = major_minor(version)
    except ValueError:
        raise CheckpointError(f"{path}: unreadable bloomseg version {version!r}") from None
    if written > major_minor(__version__):
        raise CheckpointError(f"{path}: written by bloomseg {version}, newer than this bloomseg "
                              f"{__version__}; upgrade bloomseg to use it")


def _read_exported(folder: Path) -> dict:
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = (folder / name for name in EXPORT_FILES)
    try:
        payload = json.loads(config.read_text("utf-8"))
        state = load_file(weights)
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{folder}: not a readable exported model ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{config}: not a bloomseg model configuration")
    check_written_by(payload.get("bloomseg"), config)
    return payload | {"state": state}


def export_model(checkpoint: str | Path, folder: str | Path, overwrite: bool = False) -> Path:
    """Write a trained model as model.safetensors + config.json, the form that is shipped
    and shared: tensors in a format that holds no code, settings as readable JSON.

    Args:
        checkpoint: a run folder, its best.pt, or another exported model.
        folder: where to write (created).
        overwrite: replace an exported model already there.

    Returns:
        ``folder`` as a Path.
    """
    from safetensors.torch import save

    from bloomseg.io import atomic_output, save_json

    payload = read_checkpoint_file(resolve_model(checkpoint))
    folder = Path(folder)
    existing = [folder / n for n in EXPORT_FILES if (folder / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    state = {k: v.contiguous() for k, v in payload.pop("state").items()}
    # where it was trained is of no use elsewhere
    payload["config"] = {k: v for k, v in payload["config"].items() if k not in ("out", "cache_dir")}
    with atomic_output(folder / EXPORT_FILES[0]) as f:
        f.write(save(state))
    save_json(folder / EXPORT_FILES[1], payload)
    return folder


def load_model(path: str | Path, backbone: DinoVisionTransformer | None = None,
               weights: str | Path | None = None) -> tuple[SegmentationModel, dict]:
    """Rebuild a trained model, in eval mode on the CPU.

    Args:
        path: the checkpoint: a .pt file or an exported folder (see :func:`resolve_model`).
        backbone: the backbone it was trained on, already loaded; default: load it by
            the name the checkpoint records, from ``weights`` or the weights cache.
        weights: the backbone weights file, if not the cached download.

    Returns:
        (model, the checkpoint dict without its tensors).

    Raises:
        CheckpointError: unreadable, or the backbone is not the one it was trained on.
    """
    from bloomseg.backbone import load_backbone
    from bloomseg.cache import module_fingerprint

    payload = read_checkpoint_file(path)
    cfg = _checked_config(payload, path)
    if cfg["backbone"] != "unet" and backbone is None:
        backbone = load_backbone(cfg["backbone"], weights or cfg.get("weights"))
    if backbone is not None:
        found = module_fingerprint(backbone)
        if found != payload["backbone_fingerprint"]:
            raise CheckpointError(
                f"{path}: trained on other backbone weights than those given "
                f"(tensor fingerprint {payload['backbone_fingerprint'][:12]}, given {found[:12]})")
    try:
        model = SegmentationModel(cfg["head"], backbone, out_channels=2 if cfg.get("centres") else 1,
                                  unfreeze_blocks=cfg.get("unfreeze_blocks", 0),
                                  unet_levels=cfg.get("unet_levels", 4))  # 4: runs before the setting
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid model settings: {e}") from None
    state = payload.pop("state")
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise CheckpointError(f"{path}: weights do not match a {cfg['head']} model "
                              f"({len(set(state) ^ expected)} tensors differ in name)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes that do not fit the settings
        raise CheckpointError(f"{path}: weights do not fit a {cfg['head']} model: {e}") from None
    return model.eval(), payload


MAX_UNET_LEVELS = 8
"""The deepest U-Net a model file may ask for (16 * 2**7 = 2048 channels at the bottom)."""


def _checked_config(payload: dict, path: str | Path) -> dict:
    """The settings a model is rebuilt from, checked before anything is built: a model
    file is data, and a wrong type or an absurd size must not reach the constructors.

    Raises:
        CheckpointError: naming the file and the setting.
    """
    from bloomseg.instances import InstanceParams
    from bloomseg.views import MODES

    cfg = payload.get("config")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: the model settings are missing or not a mapping")
    expected = {"head": str, "backbone": str, "mode": str, "tile": int, "centres": bool,
                "unfreeze_blocks": int, "unet_levels": int}
    for key, kind in expected.items():
        value = cfg.get(key, False if kind is bool else (0 if kind is int else ""))
        # bool is an int to Python, but not a size
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{path}: setting {key} must be {kind.__name__}, got {value!r}")
    problems = []
    if cfg["mode"] not in MODES:
        problems.append(f"mode {cfg['mode']!r} is not one of {', '.join(MODES)}")
    if not (0 < cfg["tile"] <= 4096 and cfg["tile"] % PATCH_SIZE == 0):
        problems.append(f"tile {cfg['tile']} is not a multiple of {PATCH_SIZE} up to 4096")
    if not 1 <= cfg.get("unet_levels", 4) <= MAX_UNET_LEVELS:
        problems.append(f"unet_levels {cfg['unet_levels']} is not in 1..{MAX_UNET_LEVELS}")
    if not 0 <= cfg.get("unfreeze_blocks", 0) <= 64:
        problems.append(f"unfreeze_blocks {cfg['unfreeze_blocks']} is not in 0..64")
    tuned = payload.get("instances")
    if tuned is not None:
        try:
            InstanceParams.from_dict(tuned)
        except (TypeError, ValueError) as e:
            problems.append(f"instance settings {tuned!r}: {e}")
    if problems:
        raise CheckpointError(f"{path}: invalid model settings: " + "; ".join(problems))
    return cfg

"""The model: its settings, network, heads, U-Net, what it sees of an image, and its
files (checkpoints, exported folders, the packaged default)."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "ModelConfig": "bloomseg.model.config",
    "SegmentationModel": "bloomseg.model.network",
    "load_model": "bloomseg.model.files",
    "resolve_model": "bloomseg.model.files",
    "export_model": "bloomseg.model.files",
    "save_checkpoint": "bloomseg.model.files",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "ModelConfig",
    "SegmentationModel",
    "export_model",
    "load_model",
    "resolve_model",
    "save_checkpoint",
]

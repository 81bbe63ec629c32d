"""Training: settings, examples, the feature cache, augmentation, centre targets, losses,
the epoch loop and its history, and adapting a model (and its classes) to a few corrected
images."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "TrainConfig": "bloomseg.train.config",
    "TrainResult": "bloomseg.train.config",
    "train": "bloomseg.train.run",
    "resume": "bloomseg.train.run",
    "adapt_model_classes": "bloomseg.train.adapted",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "adapt_model_classes",
    "TrainConfig",
    "TrainResult",
    "resume",
    "train",
]

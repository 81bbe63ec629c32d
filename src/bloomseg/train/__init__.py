"""Training: settings, examples, the feature cache, augmentation, centre targets, losses,
the epoch loop and its history."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "TrainConfig": "bloomseg.train.config",
    "TrainResult": "bloomseg.train.config",
    "train": "bloomseg.train.run",
    "resume": "bloomseg.train.run",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "TrainConfig",
    "TrainResult",
    "resume",
    "train",
]

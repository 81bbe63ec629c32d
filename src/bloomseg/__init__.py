"""bloomseg: blood-smear cell segmentation on DinoBloom features."""

from bloomseg.backbone import load_backbone
from bloomseg.errors import BloomsegError, DataError, ImageError, WeightsError

__version__ = "0.1.0"

__all__ = ["BloomsegError", "DataError", "ImageError", "WeightsError", "__version__", "load_backbone"]

"""The plugin's sample data: a synthetic smear drawn by bloomseg."""

from __future__ import annotations

import numpy as np


def synthetic_smear(seed: int = 0) -> list[tuple]:
    """A synthetic blood smear of cells the real smears' size, as one RGB image layer.

    Returns:
        [(image (H, W, 3) uint8, layer settings, "image")]
    """
    from bloomseg.data.synthetic import REAL_SCALE, smear

    image, _ = smear(np.random.default_rng(seed), *REAL_SCALE["size"], radius=REAL_SCALE["radius"],
                     density=REAL_SCALE["density"])
    return [(image, {"name": "synthetic smear", "rgb": True}, "image")]

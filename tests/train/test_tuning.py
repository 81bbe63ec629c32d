"""Choosing the cell-separation settings: what a few images must show to change them."""

from __future__ import annotations

import numpy as np

from bloomseg.cells.instances import InstanceParams
from bloomseg.train.tuning import choose_separation


def _cases() -> list:
    """Two images of four separate disks (r 8 px), each boxed."""
    yy, xx = np.mgrid[:64, :64]
    centres = [(16, 16), (16, 48), (48, 16), (48, 48)]
    fg = np.zeros((64, 64), bool)
    for cy, cx in centres:
        fg |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
    boxes = np.array([(cx - 8, cy - 8, cx + 9, cy + 9) for cy, cx in centres], float)
    return [(fg, None, None, boxes)] * 2


def test_a_margin_keeps_the_start_settings_unless_the_tuned_ones_are_better(tmp_path):
    lines = []
    fine = InstanceParams("distance", 7, 0.3, 20, 0)  # finds every disk: as good as any
    kept = choose_separation(_cases(), False, fine, tmp_path, lines.append, "the start",
                             margin=0.02)
    assert kept == fine and any("the settings of the start kept" in line for line in lines)
    assert choose_separation(_cases(), False, fine, tmp_path, lines.append) != fine  # no margin
    blind = InstanceParams("distance", 7, 0.3, 5000, 0)  # drops every cell: F1 0
    tuned = choose_separation(_cases(), False, blind, tmp_path, lines.append, margin=0.02)
    assert tuned != blind and tuned.min_area < 200

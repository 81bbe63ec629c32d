"""History files and the curves figure."""

from __future__ import annotations

import csv
import json

from bloomseg.train.history import COLUMNS, plot_curves, write_history


def test_history_json_csv_and_curves(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.5 + e / 10,
             "val_iou": 0.4 + e / 10, "lr": 1e-3, "seconds": 2.5, "backbone_tiles": 10 - e}
            for e in (1, 2, 3)]
    write_history(tmp_path, rows)
    assert json.loads((tmp_path / "history.json").read_text()) == rows
    with open(tmp_path / "history.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(COLUMNS)
    assert [float(r["val_dice"]) for r in table] == [r["val_dice"] for r in rows]
    plot_curves(rows, tmp_path / "curves.png", "test")
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as img:
        assert img.size == (1000, 400)
    assert not list(tmp_path.glob(".*tmp"))

"""Seconds from Run to the Labels layer in napari's Segment cells widget, against the
command line's time for the same images, side by side in one run.

    xvfb-run -a python benchmarks/napari_widget.py [--data ../shared/data] [--images 5]
                                                    [--model default] [--out out/napari.csv]

Images: the first ``--images`` smears of ``bbbc041seg``'s test split (1600x1200); where
the data is absent, synthetic smears of that size. Per image, in turn:

- widget: Run clicked to the cells layer shown (the worker thread, the model already
  loaded by an earlier Run; the first Run, which loads it, is given apart);
- cli: ``bloomseg predict MODEL IMAGE -o DIR --cells`` as a new process, start to end
  (Python, the model's loading and the files);
- cli_predict: the ``seconds`` the command line itself records for the image (its
  prediction, without start, loading or writing).

Medians over the images are printed and the rows written as CSV.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bloomseg.data.images import read_image
from bloomseg.files import save_csv, save_png

COLUMNS = ("image", "widget_seconds", "cli_seconds", "cli_predict_seconds", "cells_widget",
           "cells_cli")


def images(data: Path, count: int, folder: Path) -> list[Path]:
    """BBBC041 test smears, or synthetic ones of their size where the data is absent."""
    root = data / "bbbc041seg"
    found = sorted((root / "test" / "original").glob("*.png")) if (root / "test").is_dir() else []
    if found:
        return found[:count]
    from bloomseg.data.synthetic import REAL_SCALE, smear

    made = []
    for k in range(count):
        image, _ = smear(np.random.default_rng(k), 1200, 1600, radius=REAL_SCALE["radius"],
                         density=REAL_SCALE["density"])
        save_png(folder / f"synthetic_{k}.png", image)
        made.append(folder / f"synthetic_{k}.png")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--images", default=5, type=int)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/napari.csv", type=Path)
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from bloomseg.viewer.widget import SegmentWidget

    tmp = Path(tempfile.mkdtemp(prefix="napari-bench."))
    paths = images(args.data, args.images, tmp)
    viewer = napari.Viewer(show=False)
    widget = SegmentWidget(viewer)
    widget.model.setCurrentText(args.model)
    app = QApplication.instance()

    def run_widget(image: np.ndarray, name: str) -> float:
        while len(viewer.layers):
            viewer.layers.pop()
        viewer.add_image(image, name=name, rgb=True)
        start = time.perf_counter()
        if widget.run() is None:
            raise SystemExit(widget.status.text())
        while widget.worker is not None:
            app.processEvents()
            time.sleep(0.005)
        if widget.last is None or widget.last.image_name != name:
            raise SystemExit(widget.status.text())
        return time.perf_counter() - start

    first = run_widget(read_image(paths[0]), "warm-up")
    print(f"first Run (loads the model): {first:.2f} s")
    rows = []
    for path in paths:
        image = read_image(path)
        seconds = run_widget(image, path.stem)
        cells_widget = int(widget.last.labels.max())
        out = tmp / f"cli_{path.stem}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bloomseg", "predict", args.model, str(path), "-o",
                        str(out), "--cells", "-q"], check=True)
        cli = time.perf_counter() - start
        with open(out / "summary.csv", encoding="utf-8") as f:
            row = next(csv.DictReader(f))
        rows.append({"image": path.name, "widget_seconds": round(seconds, 3),
                     "cli_seconds": round(cli, 3), "cli_predict_seconds": float(row["seconds"]),
                     "cells_widget": cells_widget, "cells_cli": int(row["cells"])})
        print(rows[-1])
    viewer.close()
    med = {c: float(np.median([r[c] for r in rows])) for c in COLUMNS[1:4]}
    print(f"median of {len(rows)} images: widget {med['widget_seconds']:.2f} s, command line "
          f"{med['cli_seconds']:.2f} s (of which its prediction {med['cli_predict_seconds']:.2f} s); "
          f"first Run {first:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_csv(args.out, rows, COLUMNS)


if __name__ == "__main__":
    main()

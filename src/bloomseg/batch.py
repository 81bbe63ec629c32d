"""Segmenting many image files: outputs per image and a summary, one bad file never
stopping the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.errors import BloomsegError
from bloomseg.export import coco_dataset, geojson_features, read_labels, save_labels
from bloomseg.figures import label_overlay, overlay
from bloomseg.io import atomic_output, read_image, save_csv, save_json, save_png
from bloomseg.measure import COLUMNS as CELL_COLUMNS
from bloomseg.measure import measure_cells
from bloomseg.predict import Segmenter
from bloomseg.report import predict_report

SUMMARY_COLUMNS = ("image", "width", "height", "cell_fraction", "cells", "complete_cells",
                   "seconds", "status")
"""``cells``: labelled cells (with ``instances``); ``complete_cells``: those not cut by
the image border, the count to compare between fields."""
COCO_FILE = "cells_coco.json"


def output_paths(out_dir: Path, stem: str, save_prob: bool = False,
                 instances: bool = False) -> list[Path]:
    """The files ``segment_files`` writes for one image."""
    paths = [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"]
    if save_prob:
        paths.append(out_dir / f"{stem}_prob.tif")
    if instances:
        paths += [out_dir / f"{stem}_labels.tif", out_dir / f"{stem}_cells.csv",
                  out_dir / f"{stem}.geojson"]
    return paths


def _save_cells(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray) -> list[dict]:
    cells = measure_cells(labels, image)
    save_labels(out_dir / f"{stem}_labels.tif", labels)
    save_csv(out_dir / f"{stem}_cells.csv", cells, CELL_COLUMNS)
    save_json(out_dir / f"{stem}.geojson", geojson_features(labels, cells))
    return cells


def segment_files(segmenter: Segmenter, paths: list[Path], out_dir: str | Path,
                  save_prob: bool = False, overwrite: bool = False, progress: bool = True,
                  instances: bool = False, coco: bool = False) -> list[dict]:
    """Segment image files; write ``<stem>_mask.png`` (0/255, the image's size),
    ``<stem>_overlay.png``, optionally ``<stem>_prob.tif`` (float32), summary.csv and
    report.html.

    With ``instances``: also ``<stem>_labels.tif`` (cells 1..N, uint16 or uint32),
    ``<stem>_cells.csv`` (one row of measurements per cell), ``<stem>.geojson`` (QuPath
    detections), cell counts in summary.csv, and cell outlines in the overlay; with
    ``coco`` too, ``cells_coco.json`` for every image that has a label file.

    Returns:
        One summary row per input; ``status`` is ``ok``, ``skipped: ...`` (outputs
        exist) or ``failed: ...`` (the reason, naming the file).
    """
    from PIL import Image
    from tqdm import tqdm

    out_dir = Path(out_dir)
    instances = instances or coco
    rows = []
    for path in tqdm(paths, desc="segmenting", unit="image", disable=not progress):
        row = dict.fromkeys(SUMMARY_COLUMNS, "") | {"image": str(path)}
        rows.append(row)
        outputs = output_paths(out_dir, path.stem, save_prob, instances)
        if not overwrite and any(p.exists() for p in outputs):
            row["status"] = "skipped: outputs exist (use --overwrite)"
            continue
        try:
            image = read_image(path)
        except BloomsegError as e:
            row["status"] = f"failed: {e}"
            if progress:
                tqdm.write(f"skipped {e}")
            continue
        result = segmenter.predict(image, instances=instances)
        save_png(outputs[0], result.mask.astype(np.uint8) * 255)
        if save_prob:
            with atomic_output(outputs[2]) as f:
                Image.fromarray(result.probability.astype(np.float32), mode="F").save(f, format="TIFF")
        if result.labels is not None:
            cells = _save_cells(out_dir, path.stem, image, result.labels)
            row.update(cells=len(cells), complete_cells=sum(not c["touches_border"] for c in cells))
            save_png(outputs[1], label_overlay(image, result.labels))
        else:
            save_png(outputs[1], overlay(image, result.mask))
        row.update(width=image.shape[1], height=image.shape[0],
                   cell_fraction=f"{result.mask.mean():.6f}", seconds=f"{result.seconds:.3f}",
                   status="ok")
    save_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    if coco:
        labelled = [(Path(r["image"]).name, out_dir / f"{Path(r['image']).stem}_labels.tif")
                    for r in rows]
        save_json(out_dir / COCO_FILE, coco_dataset([(name, read_labels(f))
                                                     for name, f in labelled if f.is_file()]))
    predict_report(out_dir, rows, segmenter.name, instances, [COCO_FILE] if coco else [])
    return rows

"""Per-domain benchmark: the default model against a classical baseline on each lab's smears.

    python benchmarks/domains.py [--model default] [--out out/domains.csv] [--split val]

For each test split (``bbbc041seg``; ``txlpbc`` Raabin and PBC apart), at the images' own
resolution and with no size given (the model runs with ``--diameter auto``), side by side:

- the model (``--instances``), as it runs by default and with ``--keep-edges`` (txlpbc
  boxes every cell cut by a crop's border, BBBC041's masks leave the smallest out);
- a classical baseline, defined here and not in the package: Otsu's threshold on the grey
  image (cells are darker than the background), holes filled, then a watershed of the
  distance transform from its maxima deeper than 0.3 of the typical one.

Reported: pixel Dice of the cells found where the split has masks; where it has boxes,
cell F1, precision and recall (one to one, IoU >= 0.5, against every box), the mean
relative count error two ways (cells not cut by the border against boxes, as
``evaluate`` counts, which suits BBBC041's boxes; and every cell against every box, which
suits txlpbc's, where cells cut by a crop's border are boxed), the recall of red cells, white
cells and platelets apart (cells matched to that class's boxes alone: a cell is not given
a class here), and a red-cell F1: red boxes matched and missed (against the red boxes
alone), and as false cells those that match no box of any class. Printed as a table and
written as CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.dataset import read_mask
from bloomseg.data.images import read_image
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.files import save_csv
from bloomseg.inference.segmenter import Segmenter

GROUPS = {"bbbc041": {"red": (0, 1, 2, 3, 4), "white": (5,)},
          "raabin": {"red": (1,), "white": (0,), "platelet": (2,)},
          "pbc": {"red": (1,), "white": (0,), "platelet": (2,)}}
"""Box classes of each domain by kind (each dataset's classes.txt; a BBBC041 parasite
stage is an infected red cell)."""
COLUMNS = ("domain", "method", "images", "dice", "f1", "precision", "recall",
           "count_error_whole", "count_error_all", "red_f1", "red_recall", "white_recall",
           "platelet_recall", "seconds")


def domains(data: Path, split: str = "test"):
    """(domain, image path, boxes path, mask path or None) of every image of a split
    (``val``: BBBC041's held-out train images of its splits.json, txlpbc's val/)."""
    folder = data / "bbbc041seg" / ("train" if split == "val" else split)
    chosen = (set(json.loads((data / "bbbc041seg" / "splits.json").read_text())["val"])
              if split == "val" else None)
    for path in sorted((folder / "original").iterdir()):
        if chosen is None or path.stem in chosen:
            yield ("bbbc041", path, folder / "boxes" / f"{path.stem}.txt",
                   folder / "mask" / f"{path.stem}.png")
    with open(data / "txlpbc" / "manifest.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    for source in ("raabin", "pbc"):
        for r in rows:
            if r["source"] == source:
                path = data / "txlpbc" / split / "original" / r["file"]
                yield source, path, data / "txlpbc" / split / "boxes" / f"{path.stem}.txt", None


def classical(image: np.ndarray) -> np.ndarray:
    """(H, W) int32 cell labels by Otsu + distance-transform watershed."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    grey = image.astype(np.float32).mean(axis=2)
    if grey.max() - grey.min() < 1:
        return np.zeros(grey.shape, np.int32)
    cells = ndimage.binary_fill_holes(ndimage.binary_opening(grey < threshold_otsu(grey)))
    distance = ndimage.distance_transform_edt(cells)
    peaks, count = ndimage.label(h_maxima(distance, 1.0) & (distance >= 2))
    if not count:
        return np.zeros(grey.shape, np.int32)
    typical = float(np.median(ndimage.maximum(distance, peaks, np.arange(1, count + 1))))
    seeds, _ = ndimage.label(h_maxima(distance, max(1.0, 0.3 * typical)) & (distance >= 2))
    return watershed(-distance, seeds, mask=cells).astype(np.int32)


def count_error(match) -> float:
    """|cells - boxes| / boxes of an image, every cell and box counted (a crop cuts many
    cells at its border, and its boxes count them)."""
    return abs(match.tp + match.strict_fp - match.true) / match.true if match.true else 0.0


def score(segment, items) -> dict[str, dict]:
    """Score one method on images.

    Args:
        segment: (H, W, 3) image -> (H, W) cell labels.
        items: (domain, image path, boxes path, mask path or None), as :func:`domains`.

    Returns:
        By domain: its matches against every box, pixel counts, matches per kind of cell
        and seconds per image (what :func:`row_of` reports).
    """
    results: dict[str, dict] = {}
    for domain, path, box_path, mask_path in items:
        image = read_image(path)
        h, w = image.shape[:2]
        boxes = read_boxes(box_path)
        start = time.perf_counter()
        labels = segment(image)
        r = results.setdefault(domain, {"matches": [], "pixels": PixelCounts(), "groups": {},
                                        "seconds": []})
        r["seconds"].append(time.perf_counter() - start)
        r["matches"].append(match_boxes(labels, yolo_to_xyxy(boxes, h, w)))
        if mask_path is not None:
            r["pixels"] = r["pixels"] + PixelCounts.of(labels > 0, read_mask(mask_path))
        for group, classes in GROUPS[domain].items():
            chosen = boxes[np.isin(boxes[:, 0], classes)]
            r["groups"].setdefault(group, []).append(match_boxes(labels, yolo_to_xyxy(chosen, h, w)))
    return results


def row_of(domain: str, method: str, r: dict) -> dict:
    """A table row (:data:`COLUMNS`) of one method's scores on one domain."""
    total = total_boxes(r["matches"])
    row = {"domain": domain, "method": method, "images": len(r["matches"]),
           "dice": f"{r['pixels'].dice:.4f}" if domain == "bbbc041" else "",
           "f1": f"{total.f1:.3f}", "precision": f"{total.precision:.3f}",
           "recall": f"{total.recall:.3f}",
           "count_error_whole": f"{np.mean([m.relative_count_error for m in r['matches']]):.1%}",
           "count_error_all": f"{np.mean([count_error(m) for m in r['matches']]):.1%}",
           "seconds": f"{np.median(r['seconds']):.2f}"}
    for group in ("red", "white", "platelet"):
        matches = r["groups"].get(group)
        row[f"{group}_recall"] = f"{total_boxes(matches).recall:.3f}" if matches else ""
    red = total_boxes(r["groups"]["red"])
    row["red_f1"] = f"{2 * red.tp / max(1, 2 * red.tp + total.fp + red.fn):.3f}"
    return row


def report(rows: list[dict], columns: tuple[str, ...], out: Path) -> None:
    """Print the rows as a Markdown table and write them as CSV to ``out``."""
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_csv(out, rows, columns)
    print(f"-> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/domains.csv", type=Path)
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="val: to choose between models (never choose by test)")
    parser.add_argument("--no-baseline", action="store_true", help="without the classical "
                        "baseline")
    parser.add_argument("--no-keep-edges", action="store_true", help="without the "
                        "--keep-edges run")
    parser.add_argument("--classifier", help="name the cells with this train-classes run (its "
                        "white-cell pieces joined, its platelets kept) instead of the model's own")
    parser.add_argument("--no-classes", action="store_true",
                        help="segment without the model's classifier")
    args = parser.parse_args()
    naming = {"classes": not args.no_classes, "classifier": args.classifier}
    segmenter = Segmenter.load(args.model, **naming)
    kept = Segmenter.load(args.model, keep_edges=True, **naming)
    methods = {f"model ({args.model})": lambda im: segmenter.predict(im, instances=True).labels,
               "model, --keep-edges": lambda im: kept.predict(im, instances=True).labels,
               "Otsu + watershed": classical}
    if args.no_baseline:
        del methods["Otsu + watershed"]
    if args.no_keep_edges:
        del methods["model, --keep-edges"]
    results: dict[tuple[str, str], dict] = {}
    for method, segment in methods.items():
        for domain, scores in score(segment, domains(args.data, args.split)).items():
            results[(domain, method)] = scores
    rows = [row_of(domain, method, r) for (domain, method), r in
            sorted(results.items(), key=lambda kv: list(GROUPS).index(kv[0][0]))]
    report(rows, COLUMNS, args.out)


if __name__ == "__main__":
    main()

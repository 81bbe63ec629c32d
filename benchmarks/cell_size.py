"""Cell size: the automatic diameter estimate, and the default model on smears whose cells
are not its size.

    python benchmarks/cell_size.py --fit [--split val]  # the estimate's calibration and
                                                        # failures, train (or val) splits
    python benchmarks/cell_size.py --survey [--model default] [--classical]
                                                # every split of every dataset: the size
                                                # ``auto`` chooses against the boxes
    python benchmarks/cell_size.py              # everything below, test splits

1. **Estimate vs boxes**, per test image of ``bbbc041seg``, ``txlpbc`` raabin and pbc: the
   automatic estimate against the median of the image's red-cell boxes (the share
   within 15%), and on synthetic smears (cells of 30 to 200 px) resized by 0.4x and 2x.
2. **The default model at the images' own resolution**, with (a) ``--diameter model``,
   (b) the true diameter (the red-cell box median), (c) ``--diameter auto``: cell F1
   against every box (IoU >= 0.5, one to one) and the mean relative count error.
3. **Seconds per 1600x1200 smear** (``bbbc041seg`` test), with the estimate against at
   the model's own scale, median of the smears, in the same run.
4. **Resized smears**: ``bbbc041seg`` test resampled by ``--scales`` (cells about 43 and
   163 px), (a) vs (b) vs (c).

``--survey`` runs ``--diameter auto`` of ``--model`` (the network's reading where the
model has a size head; ``--classical``: the classical estimate alone) on every image of
every split (train, val, test) of ``bbbc041seg`` and ``txlpbc``, and prints per split and
source the share within 15% of the red-cell box median and the images off by more than
30%, among the images with at least :data:`WHOLE` whole red cells (those with fewer are
counted apart: their truth is itself uncertain); ``out/cell_size_survey.csv`` holds
every image.

``--fit`` prints the median ratio of box median to raw estimate over the train splits:
``bloomseg.cells.size.CALIBRATION`` is that figure; test images never choose it. It
also counts, per source, the images whose estimate is off by more than 30%, and those
under 0.7x (the worse failure: the image is enlarged and its cells cut into pieces).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from bloomseg.cells import size
from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.cells.size import estimate_diameter
from bloomseg.data.boxes import box_diameters, read_boxes, yolo_to_xyxy
from bloomseg.data.images import read_image
from bloomseg.data.resampling import resample
from bloomseg.data.synthetic import smear
from bloomseg.inference.segmenter import Segmenter

RED = {"bbbc041": 0, "raabin": 1, "pbc": 1}
"""The red-cell class of each source's boxes (each dataset's classes.txt)."""


def images(data: Path, split: str, limit: int | None = None):
    """(source, image path, boxes path) of a split of ``bbbc041seg`` and ``txlpbc``
    (``val`` of ``bbbc041seg``: the train images its ``splits.json`` holds out)."""
    root = data / "bbbc041seg" / split
    chosen = None
    if split == "val" and not root.is_dir():  # its held-out train images (splits.json)
        root = data / "bbbc041seg" / "train"
        chosen = set(json.loads((data / "bbbc041seg" / "splits.json").read_text())["val"])
    if (root / "original").is_dir():
        paths = [p for p in sorted((root / "original").iterdir())
                 if chosen is None or p.stem in chosen]
        for path in paths[:limit]:
            yield "bbbc041", path, root / "boxes" / f"{path.stem}.txt"
    rows = list(csv.DictReader(open(data / "txlpbc" / "manifest.csv", encoding="utf-8")))
    for source in ("raabin", "pbc"):
        chosen = [r for r in rows if r["split"] == split and r["source"] == source][:limit]
        for r in chosen:
            path = data / "txlpbc" / split / "original" / r["file"]
            yield source, path, data / "txlpbc" / split / "boxes" / f"{path.stem}.txt"


def red_median(boxes: np.ndarray, source: str, h: int, w: int) -> float | None:
    """The median diameter of an image's whole red-cell boxes (None: none)."""
    diameters = box_diameters(boxes[boxes[:, 0] == RED[source]], h, w)
    return float(np.median(diameters)) if len(diameters) else None


def fit(data: Path, limit: int | None, split: str = "train") -> None:
    """Print the median box median / raw estimate over a split, and its failures."""
    ratios: dict[str, list[float]] = {}
    for source, path, box_path in images(data, split, limit):
        image = read_image(path)
        truth = red_median(read_boxes(box_path), source, *image.shape[:2])
        estimate = estimate_diameter(image).diameter
        if truth and estimate:
            ratios.setdefault(source, []).append(truth / (estimate / size.CALIBRATION))
    pooled = [r for v in ratios.values() for r in v]
    for source, values in ratios.items():
        found = size.CALIBRATION / np.array(values)  # estimate / truth
        print(f"{source}: {len(values)} images, box / raw estimate median {np.median(values):.3f}; "
              f"off by > 30%: {int((abs(found - 1) > 0.3).sum())}, under 0.7x: "
              f"{int((found < 0.7).sum())}")
    print(f"pooled, each dataset's images weighted alike: "
          f"{np.median([np.median(v) for v in ratios.values()]):.3f}; all images: "
          f"{np.median(pooled):.3f} (CALIBRATION now {size.CALIBRATION})")


WHOLE = 5
"""Whole red cells an image needs for its box median to be taken as the truth."""


def survey(segmenter: Segmenter, data: Path, limit: int | None, out: Path,
           splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """``auto`` against the red-box median on every split (see the module's docstring)."""
    from bloomseg.files import save_csv

    rows = []
    for split in splits:
        for source, path, box_path in images(data, split, limit):
            image = read_image(path)
            h, w = image.shape[:2]
            boxes = read_boxes(box_path)
            red = box_diameters(boxes[boxes[:, 0] == RED[source]], h, w)
            start = time.perf_counter()
            scale = segmenter.scale_of(image, "auto")
            took = time.perf_counter() - start
            truth = float(np.median(red)) if len(red) else None
            ratio = scale.diameter / truth if truth and scale.diameter else None
            rows.append({"split": split, "source": source, "image": path.name,
                         "whole_red": len(red), "truth": truth, "auto": scale.diameter,
                         "ratio": ratio, "classical": scale.classical,
                         "readings": " ".join(map(str, scale.readings)),
                         "settled": scale.settled, "seconds": round(took, 3),
                         "note": scale.note})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_csv(out, rows, list(rows[0]))
    print(f"\n| split | source | images (>= {WHOLE} whole red) | within 15% | off > 30% "
          f"| worst | fewer whole red: images, off > 30% | median s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for split in splits:
        for source in RED:
            chosen = [r for r in rows if r["split"] == split and r["source"] == source]
            if not chosen:
                continue
            counted = np.array([r["ratio"] or 0.0 for r in chosen if r["whole_red"] >= WHOLE])
            few = np.array([r["ratio"] or 0.0 for r in chosen if r["whole_red"] < WHOLE
                            and r["ratio"]])
            off = abs(np.log(np.maximum(counted, 1e-6)))
            worst = counted[np.argmax(off)] if len(counted) else float("nan")
            print(f"| {split} | {source} | {len(counted)} | {np.mean(off <= np.log(1.15)):.1%} "
                  f"| {int((off > np.log(1.3)).sum())} | {worst:.2f}x "
                  f"| {len(few)}, {int((abs(np.log(few)) > np.log(1.3)).sum()) if len(few) else 0} "
                  f"| {np.median([r['seconds'] for r in chosen]):.2f} |")
    print(f"-> {out}")


def synthetic(scales: list[float]) -> None:
    """Estimate / true diameter on synthetic smears, resized."""
    print("\n| synthetic cells (px) | resized | estimate / truth |")
    print("| --- | --- | --- |")
    for diameter in (30, 60, 100, 200):
        rng = np.random.default_rng(diameter)
        cells: list = []
        side = 12 * diameter
        image, _ = smear(rng, side, side, cells, radius=(0.45 * diameter, 0.55 * diameter),
                         density=0.35 / diameter**2)
        truth = float(np.median([2 * r for _, _, r in cells]))
        for scale in (1.0, *scales):
            resized = image if scale == 1 else resample(image, scale)
            estimate = estimate_diameter(resized).diameter
            ratio = f"{estimate / (truth * scale):.3f}" if estimate else "no cells"
            print(f"| {diameter} | {scale}x | {ratio} |")


def compare(segmenter: Segmenter, data: Path, scales: list[float], limit: int | None) -> None:
    """Sections 1 to 4 of the docstring."""
    kinds = {"(a) model": "model", "(b) true": None, "(c) auto": "auto"}
    table: dict[tuple[str, str], list] = {}
    estimates: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {"estimate alone": []}
    for source, path, box_path in images(data, "test", limit):
        for scale in ((1.0, *scales) if source == "bbbc041" else (1.0,)):
            image = read_image(path)
            image = image if scale == 1 else resample(image, scale)
            h, w = image.shape[:2]
            boxes = read_boxes(box_path)
            truth = red_median(boxes, source, h, w)
            name = source if scale == 1 else f"{source} x{scale}"
            start = time.perf_counter()
            estimate = estimate_diameter(image).diameter
            took = time.perf_counter() - start
            if scale == 1 and truth and estimate:
                estimates.setdefault(source, []).append(estimate / truth)
            for kind, diameter in kinds.items():
                start = time.perf_counter()
                labels = segmenter.predict(image, instances=True,
                                           diameter=diameter or truth or "model").labels
                if name == "bbbc041":
                    seconds.setdefault(kind, []).append(time.perf_counter() - start)
                table.setdefault((name, kind), []).append(
                    match_boxes(labels, yolo_to_xyxy(boxes, h, w)))
            if name == "bbbc041":
                seconds["estimate alone"].append(took)
        print(f"{source} {path.name}: done", flush=True)
    print("\n| test images | estimate / red-box median: median | within 15% |")
    print("| --- | --- | --- |")
    for source, ratios in estimates.items():
        r = np.array(ratios)
        print(f"| {source} ({len(r)}) | {np.median(r):.3f} | {np.mean(abs(r - 1) <= 0.15):.0%} |")
    print("\n| images | diameter | cell F1 | mean count error |")
    print("| --- | --- | --- | --- |")
    for (name, kind), matches in table.items():
        error = np.mean([abs(m.relative_count_error) for m in matches])
        print(f"| {name} | {kind} | {total_boxes(matches).f1:.3f} | {error:.1%} |")
    print("\n| 1600x1200 smear | median s |")
    print("| --- | --- |")
    for kind, values in seconds.items():
        print(f"| {kind} | {np.median(values):.2f} |")
    ratio = np.median(np.array(seconds["(c) auto"]) / np.array(seconds["(a) model"]))
    print(f"\nauto / model seconds, median of per-smear ratios: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.4, 1.5])
    parser.add_argument("--fit", action="store_true", help="fit the calibration on train splits")
    parser.add_argument("--limit", type=int, help="images per dataset and source (all)")
    parser.add_argument("--split", default="train", help="the split --fit reads")
    parser.add_argument("--survey", action="store_true", help="auto against the boxes on "
                        "every split of every dataset")
    parser.add_argument("--classical", action="store_true", help="--survey the classical "
                        "estimate alone (the model's size head is not asked)")
    parser.add_argument("--out", type=Path, default=Path("out/cell_size_survey.csv"))
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                        help="the splits --survey reads")
    args = parser.parse_args()
    if args.survey:
        segmenter = Segmenter.load(args.model)
        if args.classical:
            segmenter.model.size_head = None
        survey(segmenter, args.data, args.limit, args.out, tuple(args.splits))
        return
    if args.fit:
        fit(args.data, args.limit, args.split)
        return
    synthetic([0.4, 2.0])
    segmenter = Segmenter.load(args.model)
    print(f"\nmodel {args.model}: cell diameter {segmenter.cell_diameter} px")
    compare(segmenter, args.data, args.scales, args.limit)


if __name__ == "__main__":
    main()

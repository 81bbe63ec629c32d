"""Cell classes per domain: how well the model names the cells it finds, and at what cost.

    python benchmarks/cell_classes.py [--model default] [--classifier RUN] [--split test|val]
                                 [--crops ../shared/data/mpidb_pf] [--out out/classes.csv]

For each split (``bbbc041seg``; ``txlpbc`` Raabin and PBC apart, and together), at the
images' own resolution with no size given: each kind's boxes, how many of them a cell of
that kind matched (recall over every box: a cell the segmentation missed is missed), the
cells called that kind among the matched ones and their precision; infected-cell recall
with its 95% Wilson interval (the counts are small), and the mean absolute error of each
image's parasitemia in percentage points. For the matched cells of each true kind, the
share called infected (for red cells: the false-call rate) and called white; the cells
called white that hold two true boxes' centres or more (cells merged into one); and each
domain's confusion of the coarse kinds (true rows, called columns). Seconds per image
with classes and without are measured side by side on the same images (medians). Printed
as a table and written as CSV.

With ``--crops``, each single-cell crop of that root's val split (``mpidb_pf``: P.
falciparum from another hospital's microscope; its test is kept back) is put on plain
smear background (:func:`bloomseg.data.crops.on_background`) and named as a cell made
elsewhere at its session's cell diameter: the share called infected, called white, and
called the right stage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from domains import domains  # noqa: E402 (the benchmarks folder is the script's own)

from bloomseg.cells.types import wilson_interval
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.images import read_image
from bloomseg.data.vocabulary import CLASSES, KINDS, read_classes
from bloomseg.evaluation.class_scores import ClassTally, dataset_kinds
from bloomseg.files import save_csv
from bloomseg.inference.segmenter import Segmenter

COLUMNS = ("domain", "kind", "boxes", "found", "recall_all_boxes", "called", "precision",
           "f1", "recall_95_interval", "parasitemia_mae_points", "called_infected",
           "called_white", "white_over_several_boxes", "seconds_classes", "seconds_plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--classifier", help="a train-classes run instead of the model's own")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="val: to choose (never choose by test)")
    parser.add_argument("--crops", type=Path, help="a root of single-cell crops whose val "
                        "split is named too (../shared/data/mpidb_pf)")
    parser.add_argument("--out", default="out/classes.csv", type=Path)
    args = parser.parse_args()
    named = Segmenter.load(args.model, classifier=args.classifier)
    if named.classifier is None:
        parser.error(f"{args.model} has no classifier: give --classifier")
    plain = Segmenter.load(args.model, classes=False)
    tallies: dict[str, ClassTally] = {}
    seconds: dict[str, list[tuple[float, float]]] = {}
    known = {}
    for domain, path, box_path, _ in domains(args.data, args.split):
        root = args.data / ("bbbc041seg" if domain == "bbbc041" else "txlpbc")
        names = read_classes(root)
        image = read_image(path)
        start = time.perf_counter()
        result = named.predict(image, instances=True)
        middle = time.perf_counter()
        plain.predict(image, instances=True)
        seconds.setdefault(domain, []).append((middle - start, time.perf_counter() - middle))
        yolo = read_boxes(box_path)
        xyxy = yolo_to_xyxy(yolo, *image.shape[:2])
        for group in (domain, "txlpbc") if domain != "bbbc041" else (domain,):
            tallies.setdefault(group, ClassTally()).add(path.stem, result.labels, result.classes,
                                                        xyxy, names.targets(yolo[:, 0]))
            known[group] = dataset_kinds(names)
            if group != domain:
                seconds.setdefault(group, []).append(seconds[domain][-1])
    rows = []
    for group, tally in tallies.items():
        summary = tally.summary(known[group])
        timing = np.median(np.array(seconds[group]), axis=0)
        for kind in KINDS:
            v = summary["per_class"].get(kind)
            if v is None:
                continue
            row = {"domain": group, "kind": kind, "boxes": v["boxes"], "found": v["correct"],
                   "recall_all_boxes": _f(v["recall_of_all_boxes"]), "called": v["called"],
                   "precision": _f(v["precision"]), "f1": _f(v["f1"]),
                   "seconds_classes": f"{timing[0]:.2f}", "seconds_plain": f"{timing[1]:.2f}"}
            if kind == "white_blood_cell":
                row["white_over_several_boxes"] = summary["white_cells_over_several_boxes"]
            if kind == "infected" and "infected" in summary:
                low, high = summary["infected"]["recall_95_interval"]
                row["recall_95_interval"] = f"{low:.3f}-{high:.3f}"
                if "parasitemia" in summary:
                    row["parasitemia_mae_points"] = \
                        f"{summary['parasitemia']['mean_absolute_error_points']:.3f}"
            k = KINDS.index(kind)
            matched = tally.confusion[k].sum()
            if matched:
                row["called_infected"] = f"{tally.confusion[k, KINDS.index('infected')] / matched:.4f}"
                row["called_white"] = \
                    f"{tally.confusion[k, KINDS.index('white_blood_cell')] / matched:.4f}"
            rows.append(row)
    if args.crops is not None:
        rows += crop_rows(named, args.crops)
    for group, tally in tallies.items():
        print(f"\n{group}: true kind (rows) by called kind (columns), matched cells")
        print("| true \\ called | " + " | ".join(KINDS) + " |")
        print("|" + " --- |" * (len(KINDS) + 1))
        for k, kind in enumerate(KINDS):
            print(f"| {kind} | " + " | ".join(str(int(n)) for n in tally.confusion[k]) + " |")
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS) + " |")
    save_csv(args.out, rows, COLUMNS)
    print(f"-> {args.out}")


def crop_rows(named: Segmenter, root: Path) -> list[dict]:
    """One row per class of a crops root's val split: each crop on plain background,
    named at its session's cell diameter."""
    from bloomseg.data.crops import on_background, read_crops
    from bloomseg.data.vocabulary import kind_of

    called: dict[str, list[dict]] = {}
    for crop in read_crops(root, "val"):
        image, labels = on_background(read_image(crop.path))
        called.setdefault(crop.label, []).append(named.classes_of(image, labels, crop.diameter)[0])
    rows = []
    for label, types in called.items():
        kind = kind_of(CLASSES.index(label))
        right = [t for t in types if t["class"] == kind]
        rows.append({"domain": f"{root.name} val", "kind": label, "boxes": len(types),
                     "found": len(right), "recall_all_boxes": _f(len(right) / len(types)),
                     "called_infected": _f(np.mean([t["class"] == "infected" for t in types])),
                     "called_white": _f(np.mean([t["class"] == "white_blood_cell"
                                                 for t in types])),
                     "precision": "", "f1": "",
                     "recall_95_interval": "{:.3f}-{:.3f}".format(*wilson_interval(
                         len(right), len(types))) if kind == "infected" else ""})
        if kind == "infected":
            stage = np.mean([t["stage"] == label for t in types])
            print(f"{root.name} val {label}: {len(right)} of {len(types)} called infected, "
                  f"{stage:.1%} called {label}")
    return rows


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()

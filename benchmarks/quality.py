"""The quality verdict measured as a classifier of failures, with classes.

    python benchmarks/quality.py [--split val|test] [--made 30] [--model default]
                                 [--out out/quality-val.csv]
    python benchmarks/quality.py --rescore out/quality-val.csv
    python benchmarks/quality.py --unseen RECIPE [--cache out/unseen]

Every field of a split (``bbbc041seg``; ``txlpbc`` Raabin and PBC apart; on val also
``bccd``) is segmented as ``predict --cells`` does (``--diameter auto``, classes) and
judged (:func:`bloomseg.quality.judge`); each dataset's fields of one way are then
judged as one run (:func:`bloomseg.quality.run.in_run`, the run's verdict printed). A
field **failed** by its cells (:func:`bloomseg.evaluation.verdicts.failed`) where its
cell F1 against its boxes (one to one, IoU >= 0.5) is under 0.8, its count is off by
more than 25% (the cells counted as the F1 counts them: a sliver at the border that
matches no box is neither right nor wrong,
:func:`~bloomseg.evaluation.verdicts.counted_error`), its pixel Dice is under 0.85 where
it has a mask, or it holds fewer than 3 boxes; or by its classes
(:func:`~bloomseg.evaluation.verdicts.classes_failed`: on healthy blood any infected
call; more than 5% of red cells called white; parasitemia more than 1 point off).
BCCD's red cells are not all boxed: its fields are scored by their classes only.

With ``--made N`` (val only), the first N fields of BBBC041, Raabin and PBC are also made
to fail on purpose, each way on its own: a wrong ``--diameter`` (0.3x and 3x the boxes'
median size), heavy blur (Gaussian, sigma a tenth of a cell), a strong orange tint
(40%), JPEG at quality 10, and a near-empty field (all but the cells of one small window
painted with the background). They are judged and scored as the rest: a made field
that still scores well counts as good.

``--unseen RECIPE``: each lab with fields left out in turn (``benchmarks/
classes_unseen.py run RECIPE``), its train and val fields segmented once (cached in
``CACHE/fields-LAB.csv``) and named by the classifier trained without it (with the
red-cell profiles of the labs it learnt, as training keeps them); the lab's fields are
judged as one run. Then the run's verdict of each lab that classifier learnt, over its
val fields, whole and in 100 runs of 10 fields.

Printed per dataset and way: fields, failed, the verdict's recall of failed fields and
the share of good fields flagged, and how often each reason was given; the seconds of
the prediction and of the verdict on each field as it is (medians, and the median of
their ratio: the verdict's cost), and of judging the runs; every field's signals,
scores and verdict go to the CSV, the red-cell profiles beside it (``.npz``: ``--rescore``
judges the runs again; the limits of :data:`bloomseg.quality.verdict.REASONS` were
chosen on val).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from domains import domains  # noqa: E402 (the benchmarks folder is the script's own)

from bloomseg.cells.matching import match_boxes
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.dataset import read_mask
from bloomseg.data.images import read_image
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.evaluation.verdicts import classes_failed, counted_error, failed
from bloomseg.files import save_csv
from bloomseg.inference.segmenter import Segmenter
from bloomseg.quality import CHECK, OK, REASONS, judge, verdict_of
from bloomseg.quality.verdict import RUN_REASONS

SIGNALS = {r.signal for r in REASONS}

WAYS = ("as is", "diameter 0.3x", "diameter 3x", "blur", "tint", "jpeg 10", "near empty")


def made(image: np.ndarray, boxes: np.ndarray, way: str, size: float, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """The image made to fail one way, and the boxes still true of it."""
    from PIL import Image
    from scipy import ndimage

    if way == "blur":
        sigma = size / 10
        return np.stack([ndimage.gaussian_filter(image[..., c].astype(np.float32), sigma)
                         for c in range(3)], axis=2).round().astype(np.uint8), boxes
    if way == "tint":
        return (0.6 * image + 0.4 * np.array([255, 120, 40])).round().astype(np.uint8), boxes
    if way == "jpeg 10":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=10)
        return np.asarray(Image.open(buffer).convert("RGB")), boxes
    if way == "near empty":
        h, w = image.shape[:2]
        grey = image.mean(axis=2)
        background = np.median(image[grey > np.percentile(grey, 80)], axis=0)
        centre = boxes[rng.integers(len(boxes))] if len(boxes) else np.array([0, 0, w, h])
        cx, cy = (centre[0] + centre[2]) / 2, (centre[1] + centre[3]) / 2
        x0, x1 = int(max(0, cx - size)), int(min(w, cx + size))
        y0, y1 = int(max(0, cy - size)), int(min(h, cy + size))
        out = np.empty_like(image)
        out[:] = background.astype(np.uint8)
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
        inside = (boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)
        return out, boxes[inside]
    return image, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--split", default="val", choices=("val", "test"),
                        help="val: to choose the limits (never choose by test)")
    parser.add_argument("--made", type=int, default=0, metavar="N",
                        help="make the first N images of each domain fail on purpose (val)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="the first N images of each domain only (0: all)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rescore", type=Path, metavar="CSV", help="judge a run's stored "
                        "signals again with today's reasons and limits (no image is segmented)")
    parser.add_argument("--unseen", metavar="RECIPE", help="judge each lab left out with "
                        "the classifier trained without it (benchmarks/classes_unseen.py)")
    parser.add_argument("--cache", default="out/unseen", type=Path,
                        help="--unseen: classes_unseen.py's cache")
    args = parser.parse_args()
    if args.unseen:
        rows = unseen(args.unseen, args.data, args.cache)
        save_csv(args.out or Path(f"out/quality-unseen-{args.unseen}.csv"), rows, list(rows[0]))
        table(rows)
        return
    if args.rescore is not None:
        table(rescored(args.rescore, args.model))
        return
    if args.made and args.split != "val":
        parser.error("--made: failures are made from val images only")
    out = args.out or Path(f"out/quality-{args.split}.csv")
    segmenter = Segmenter.load(args.model)
    rng = np.random.default_rng(0)
    rows, seen, seconds, profiles = [], {}, {}, []
    for domain, path, box_path, mask_path in fields(args.data, args.split):
        if args.limit and seen.get(domain, 0) >= args.limit:
            continue
        image = read_image(path)
        h, w = image.shape[:2]
        true = yolo_to_xyxy(read_boxes(box_path), h, w)
        size = float(np.median((true[:, 2] - true[:, 0] + true[:, 3] - true[:, 1]) / 2)) \
            if len(true) else 50.0
        seen[domain] = seen.get(domain, 0) + 1
        # a field made to fail is scored by its cells: BCCD's are not all boxed
        ways = WAYS if seen[domain] <= args.made and domain != "bccd" else WAYS[:1]
        for way in ways:
            shown, boxes = made(image, true, way, size, rng)
            diameter = {"diameter 0.3x": 0.3 * size, "diameter 3x": 3 * size}.get(way, "auto")
            start = time.perf_counter()
            result = segmenter.predict(shown, instances=True, diameter=diameter)
            middle = time.perf_counter()
            verdict = judge(result)
            if way == "as is":
                seconds.setdefault(domain, []).append((middle - start,
                                                       time.perf_counter() - middle))
            match = match_boxes(result.labels, boxes)
            error = counted_error(match)
            row = {"domain": domain, "way": way, "image": path.stem, "boxes": len(boxes),
                   "f1": round(match.f1, 4), "count_error": round(error, 4), "dice": ""}
            dice = None
            if mask_path is not None and way != "near empty":  # the painted field has none
                dice = PixelCounts.of(result.labels > 0, read_mask(mask_path)).dice
                row["dice"] = round(dice, 4)
            # BCCD's red cells are not all boxed: its cells are never scored, its classes are
            bad = domain != "bccd" and failed(match.f1, error, dice, len(boxes))
            bad_classes = classes_failed([t["class"] for t in result.classes],
                                         box_kinds(result.labels, boxes, args.data, domain,
                                                   box_path), domain != "bbbc041")
            rows.append(row | {"failed": int(bad or bad_classes), "cells_failed": int(bad),
                               "classes_failed": int(bad_classes), "verdict": verdict.status,
                               "reasons": " ".join(verdict.reasons),
                               **{k: round(v, 4) for k, v in verdict.signals.items()}})
            profiles.append(result.red_profile)
        print(f"{domain} {path.stem}: {rows[-1]['verdict']} {rows[-1]['reasons']}", flush=True)
    start = time.perf_counter()
    runs = judge_runs(rows, profiles, segmenter.classifier)
    judging = time.perf_counter() - start
    save_csv(out, rows, list(rows[0]))
    width = segmenter.classifier.centres.shape[1]
    np.savez(out.with_suffix(".npz"), kept=np.array([p is not None for p in profiles]),
             profiles=np.array([np.zeros(width, np.float32) if p is None else p for p in profiles]))
    for (domain, way), run in runs.items():
        print(f"run {domain} / {way}: {run.text}")
    print(f"every run judged in {judging:.3f} s ({1000 * judging / len(rows):.2f} ms an image)")
    table(rows)
    for domain, times in seconds.items():
        t = np.array(times)
        print(f"{domain}: predict {np.median(t[:, 0]):.3f} s, verdict {np.median(t[:, 1]):.4f} s "
              f"(median of {len(t)}): with the verdict {np.median(t.sum(axis=1) / t[:, 0]):.3f}x")
    print(f"-> {out}")


def fields(data: Path, split: str):
    """(domain, image, boxes, mask or None) of every field of a split: BBBC041's,
    txlpbc's (Raabin and PBC apart) and, on val, BCCD's (healthy blood; no test split is
    shared)."""
    yield from domains(data, split)
    if split == "val" and (data / "bccd" / "val").is_dir():
        for path in sorted((data / "bccd" / "val" / "original").iterdir()):
            yield "bccd", path, data / "bccd" / "val" / "boxes" / f"{path.stem}.txt", None


ROOTS = {"bbbc041": "bbbc041seg", "raabin": "txlpbc", "pbc": "txlpbc", "bccd": "bccd"}


def box_kinds(labels: np.ndarray, boxes: np.ndarray, data: Path, domain: str,
              box_path: Path) -> list[str]:
    """Each cell's true kind (:data:`~bloomseg.data.vocabulary.KINDS`: a parasite stage is
    ``infected``), from the box it matches one to one ('' where none does)."""
    from bloomseg.cells.matching import box_pairs, cell_boxes
    from bloomseg.data.vocabulary import read_classes

    targets = read_classes(data / ROOTS[domain]).targets(read_boxes(box_path)[:, 0])
    names = [truth_kind(int(t)) for t in targets]
    kinds = [""] * int(labels.max())
    if len(boxes) == len(names) and kinds:
        for cell, box in box_pairs(cell_boxes(labels)[0], boxes):
            kinds[cell] = names[box]
    return kinds


def judge_runs(rows: list[dict], profiles: list, classifier) -> dict:
    """Each dataset's fields, one way, judged as a run (:mod:`bloomseg.quality.run`):
    every row's ``verdict`` and ``reasons`` become its verdict in the run (its own is kept
    as ``own_verdict``), and ``run`` the run's.

    Returns:
        (domain, way) -> the run's verdict.
    """
    from bloomseg.quality.run import in_run, run_status

    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["domain"], r["way"]), []).append(i)
    runs = {}
    for key, members in groups.items():
        run = run_status([profiles[i] for i in members], classifier.lab_centres.numpy(),
                         classifier.lab_scatter.numpy())
        own = [verdict_of({k: float(rows[i][k]) for k in SIGNALS | set(CLASS_SIGNALS)})
               for i in members]
        verdicts, run = in_run(own, run)
        for i, v in zip(members, verdicts):
            rows[i] |= {"own_verdict": rows[i]["verdict"], "verdict": v.status,
                        "reasons": " ".join(v.reasons), "run": run.status,
                        "run_distance": "" if run.distance is None else round(run.distance, 3)}
        runs[key] = run
    return runs


CLASS_SIGNALS = ("white_share", "uncertain_share", "infected", "infected_uncertain", "red",
                 "infected_possible")


SEG_SIGNALS = ("size_methods", "size_found", "cells", "whole_cells", "fragments",
               "cells_per_area", "unsure", "large", "weak_cells")
"""The signals of the cells alone (the class signals come from the classifier judged)."""


def field_rows(data: Path, cache: Path, lab: str) -> list[dict]:
    """Every train and val field of a lab with fields, segmented once by the default model:
    its cells' signals and whether its cells failed (BCCD's boxes are incomplete: its
    cells are never scored), cached in ``cache/fields-LAB.csv``."""
    import csv

    from classes_unseen import lab_samples

    from bloomseg.quality.signals import signals

    path = cache / f"fields-{lab}.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: (v if k == "image" else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    segmenter = Segmenter.load("default")
    rows = []
    for s, (split, samples) in enumerate(lab_samples(data, lab).items()):
        for i, sample in enumerate(samples):
            image = read_image(sample.image)
            true = yolo_to_xyxy(read_boxes(sample.boxes), *image.shape[:2])
            result = segmenter.predict(image, instances=True)
            values = signals(result)
            match = match_boxes(result.labels, true)
            dice = PixelCounts.of(result.labels > 0, read_mask(sample.mask)).dice \
                if sample.mask is not None else None
            bad = lab != "bccd" and failed(match.f1, counted_error(match), dice, len(true))
            rows.append({"image": sample.stem, "field": s * 100000 + i, "cells_failed": int(bad),
                         **{k: values[k] for k in SEG_SIGNALS}})
        print(f"{lab} {split}: {len(samples)} fields segmented", flush=True)
    save_csv(path, rows, list(rows[0]))
    return rows


def truth_kind(y: int) -> str:
    """A window's true class (an index into CLASSES, or negative: no box) as a kind."""
    from bloomseg.data.vocabulary import CLASSES, KINDS, STAGES

    if y < 0:
        return ""
    name = CLASSES[y]
    return "infected" if name in STAGES else name if name in KINDS else ""


def named_fields(model, windows) -> dict:
    """field -> (its red-cell profile, its cells' class rows, their true kinds), of
    view-0 windows named by a classifier as ``predict`` names cells."""
    from bloomseg.cells.types import cell_types
    from bloomseg.model.classifier import red_profile
    from bloomseg.train.classifier import features_of

    logits, features = features_of(model, windows)
    p = torch.softmax(torch.from_numpy(logits) / model.config.temperature, 1).numpy()
    far = model.distances(torch.from_numpy(features)).numpy()[
        np.arange(len(p)), p.argmax(axis=1)] > model.config.distance_limit
    scaled = model.scaled(torch.from_numpy(features)).numpy()
    out = {}
    for f in np.unique(windows.field):
        m = windows.field == f
        out[f] = (red_profile(p[m], scaled[m]),
                  cell_types(p[m], model.config.infected_threshold, far[m]),
                  [truth_kind(y) for y in windows.y[m]])
    return out


def unseen(recipe: str, data: Path, cache: Path) -> list[dict]:
    """Each lab left out, judged by the classifier trained without it (``RECIPE`` of
    ``benchmarks/classes_unseen.py``): every field's verdict (its cells' signals and the
    classes that classifier gives), the run's verdict over the lab's fields, and whether
    each field failed, by its cells or its classes; then the run verdict of every lab it
    trained on, over their val fields (whole, and 10-field runs)."""
    from classes_unseen import HEALTHY, LABS, load, split_windows

    from bloomseg.evaluation.verdicts import classes_failed
    from bloomseg.model.files import load_classifier
    from bloomseg.quality.run import in_run, run_status
    from bloomseg.quality.signals import class_signals
    from bloomseg.train.classifier import set_labs

    labs = {lab: load(cache, lab) for lab in LABS}
    rows, familiar = [], []
    rng = np.random.default_rng(0)
    for left in LABS:
        run = cache / recipe / left
        if left == "mpidb" or not (run / "best.pt").is_file():
            continue
        model = load_classifier(run / "best.pt")[0]
        kept = [lab for lab in LABS if lab != left]
        set_labs(model, split_windows(labs, kept)["train"])
        centres, scatter = model.lab_centres.numpy(), model.lab_scatter.numpy()

        cells = {int(r["field"]): r for r in field_rows(data, cache, left)}
        named = {}
        for s, split in enumerate(("train", "val")):
            w = labs[left][split]
            w = w[w.view == 0]
            named |= {s * 100000 + int(f): v for f, v in named_fields(model, w).items()}
        keys = sorted(set(named) & set(cells))
        values = [{k: float(cells[f][k]) for k in SEG_SIGNALS} | class_signals(named[f][1])
                  for f in keys]
        verdicts = [verdict_of(v) for v in values]
        judged_all, lab_run = in_run(verdicts, run_status([named[f][0] for f in keys],
                                                          centres, scatter))
        for f, own, judged, v in zip(keys, verdicts, judged_all, values):
            kinds = np.array([t["class"] for t in named[f][1]])
            bad_classes = classes_failed(kinds, np.array(named[f][2]), left in HEALTHY)
            rows.append({"domain": f"{left} left out", "way": "as is", "image": cells[f]["image"],
                         "failed": int(bool(cells[f]["cells_failed"]) or bad_classes),
                         "classes_failed": int(bad_classes), "verdict": judged.status,
                         "reasons": " ".join(judged.reasons), "own_verdict": own.status,
                         "run": lab_run.status, "run_distance": round(lab_run.distance or 0, 3),
                         **{k: round(x, 4) for k, x in v.items()}})
        print(f"{left} left out: run {lab_run.status or 'not judged'} ({lab_run.text})", flush=True)
        for lab in kept:
            if lab == "mpidb":
                continue
            w = labs[lab]["val"]
            profiles = [v[0] for v in named_fields(model, w[w.view == 0]).values()]
            whole = run_status(profiles, centres, scatter)
            short = [run_status([profiles[i] for i in rng.choice(len(profiles), 10, replace=False)],
                                centres, scatter) for _ in range(100)]
            familiar.append({"left out": left, "lab (trained on, val)": lab,
                             "fields": whole.fields, "run": whole.status,
                             "distance": round(whole.distance, 3), "limit": round(whole.limit, 3),
                             "10-field runs ok": f"{np.mean([r.status == OK for r in short]):.0%}",
                             "10-field distance max": round(max(r.distance for r in short), 3)})
    print("| " + " | ".join(familiar[0]) + " |\n|" + " --- |" * len(familiar[0]))
    for r in familiar:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    return rows


def rescored(path: Path, model: str = "default") -> list[dict]:
    """A run's rows, each judged again from its stored signals, each dataset and way
    as a run where its red-cell profiles were stored beside the CSV (``.npz``)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        verdict = verdict_of({k: float(v) for k, v in r.items() if k in SIGNALS and v != ""})
        r |= {"failed": int(r["failed"]), "reasons": " ".join(verdict.reasons),
              "verdict": verdict.status}
    stored = path.with_suffix(".npz")
    if stored.is_file():
        with np.load(stored) as saved:
            profiles = [None if not kept else p for p, kept in zip(saved["profiles"], saved["kept"])]
        for (domain, way), run in judge_runs(rows, profiles,
                                             Segmenter.load(model).classifier).items():
            print(f"run {domain} / {way}: {run.text}")
    return rows


def table(rows: list[dict]) -> None:
    """Per dataset and way: failed images, recall of the failed, good flagged, reasons."""
    print("| dataset | way | images | failed | failed flagged | good flagged | reasons |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["domain"], r["way"]), []).append(r)
        groups.setdefault(("all", r["way"] if r["way"] == "as is" else "made"), []).append(r)
    for (domain, way), chosen in groups.items():
        failed = [r for r in chosen if r["failed"]]
        good = [r for r in chosen if not r["failed"]]
        caught = sum(r["verdict"] == CHECK for r in failed)
        flagged = sum(r["verdict"] == CHECK for r in good)
        counts = {n: sum(n in r["reasons"].split() for r in chosen)
                  for n in [r.name for r in REASONS] + list(RUN_REASONS)}
        print(f"| {domain} | {way} | {len(chosen)} | {len(failed)} | "
              f"{caught}/{len(failed)} | {flagged}/{len(good)} | "
              + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + " |")


if __name__ == "__main__":
    main()

"""Cell classes on a lab they never saw: train the classifier without one lab, score it on it.

    python benchmarks/classes_unseen.py cut [--data ../shared/data] [--cache out/unseen]
    python benchmarks/classes_unseen.py run RECIPE [--leave LAB ...] [--epochs 6]
    python benchmarks/classes_unseen.py table [RECIPE ...] [--quantile-scale 1]
    python benchmarks/classes_unseen.py ship RECIPE [--epochs 16]
    python benchmarks/classes_unseen.py profile RECIPE
    python benchmarks/classes_unseen.py score NAME --classifier PATH --leave LAB
    python benchmarks/classes_unseen.py adapt RECIPE [--leave LAB ...] [--way WAY ...]
    python benchmarks/classes_unseen.py user RECIPE [--leave LAB ...]
    python benchmarks/classes_unseen.py ensemble RECIPE RECIPE [...] [--leave LAB ...]

``cut`` segments every train and val image of each lab with the default model once and
keeps every cell's window (the cells a box matches with its class, the others unboxed),
with two augmented views of each training image, in ``CACHE/LAB.npz``. The labs:
``bbbc041`` (P. vivax smears, its splits.json), ``raabin`` and ``pbc`` (txlpbc's two
microscopes, normal blood), ``bccd`` (a fourth lab's normal blood; its unboxed cells
are negatives too) and ``mpidb`` (P. falciparum crops of another hospital).

``run RECIPE`` trains, for each lab left out in turn, a classifier on the other labs'
train windows (the epoch, temperature and infected threshold chosen on their val
windows, exactly as ``train-classes`` does) and names every cell of the left-out lab's
train and val fields (its test split is never read). RECIPE names a row of
:data:`RECIPES`. Per lab left out it writes the cells' probabilities and distances to
``CACHE/RECIPE/LAB/scores.npz``.

``table`` prints, per recipe and lab left out: red cells (matched to a red box) called
infected, and called white; on normal blood, the fields with any infected call (every
cell of the field counted, boxed or not) and every cell called infected; on malaria
labs, the infected cells found and those called white; white cells found; the fields
clean counting only the calls not marked uncertain; and the share of false infected
calls, and of true ones, marked uncertain by the classifier's distance limit (times
``--quantile-scale``). The recipe is chosen by its **worst** lab left out.

``score NAME --classifier PATH --leave LAB`` names the cells of a lab with a classifier
trained elsewhere (the one shipped before, on a lab it never saw) into ``CACHE/NAME``.

``ship RECIPE`` trains the classifier to ship on every lab (``CACHE/RECIPE/all``), the
same way with :data:`SHIP` settings; ``bloomseg export`` puts it beside the model.
``adapt RECIPE`` corrects 2 fields of each healthy lab left out as a user would and
adapts that lab's classifier to them (:func:`adapt`): the recipe of ``train --adapt``
for classes is chosen by its worst lab here, forgetting beside. ``user RECIPE`` takes
the same path with the command line, timed (:func:`user`).
``ensemble R1 R2 ...`` names each lab left out with those recipes' classifiers
together (:func:`ensemble`), for ``table "R1+R2"``.
``profile RECIPE`` keeps every lab's red-cell profile in a classifier ``ship`` trained
before classifiers kept them (what ``ship`` now does at its end; the weights unchanged).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from bloomseg.data.vocabulary import CLASSES
from bloomseg.model.classifier import CROP
from bloomseg.train.classifier import STAGE_INDEX, UNBOXED, Windows
from bloomseg.train.config import HARD_KINDS, HARD_NEGATIVES

LABS = ("bbbc041", "raabin", "pbc", "bccd", "mpidb")
HEALTHY = ("raabin", "pbc", "bccd")
"""Labs of normal blood: every cell is a negative for 'infected'."""
_HARD = {"inputs": "relative", "hard_negatives": 0.3, "hard_kinds": HARD_KINDS}
_ISOLATED = _HARD | {"hard_kinds": HARD_KINDS + ("isolated",)}
RECIPES = {
    "rgb": {"inputs": "rgb", "hard_negatives": 0.0},
    "relative": {"inputs": "relative", "hard_negatives": 0.0},
    "relative-hard": _HARD,
    "relative-hard5": _HARD | {"hard_negatives": 0.5},
    "relative-hard3o": _HARD | {"hard_kinds": HARD_NEGATIVES[:4]},
    "relative-hard-moved": _HARD | {"transplants": 0.5},
    "relative-hard-seed1": _HARD | {"seed": 1},
    "relative-hard-seed2": _HARD | {"seed": 2},
    "relative-hard-platelet": _HARD | {"hard_kinds": HARD_KINDS + ("platelet",)},
    "relative-hard-isolated": _ISOLATED,
    "relative-hard-isolated-seed1": _ISOLATED | {"seed": 1},
    "relative-hard-isolated-zoomed": _ISOLATED | {"zoomed_white": 0.5},
    "relative-hard-isolated-faded": _ISOLATED | {"faded_white": 0.5},
    "relative-hard-isolated-faded-seed1": _ISOLATED | {"faded_white": 0.5, "seed": 1},
    "relative-hard-isolated-moved": _ISOLATED | {"transplants": 0.5},
}
"""ClassesConfig settings of each recipe tried (the rest: :data:`TRAINING`)."""
TRAINING = {"epochs": 6, "items_per_epoch": 3000, "early_stopping": 0, "width": 16}
"""Sized so one training takes about five minutes on one core (two run side by side)."""
SHIP = {"epochs": 16, "items_per_epoch": 4000, "early_stopping": 0, "width": 16}
"""The shipped classifier's training: 3.5 times the windows of a left-out run."""
RED, WHITE = CLASSES.index("red_blood_cell"), CLASSES.index("white_blood_cell")


ROOTS = {"bbbc041": "bbbc041seg", "raabin": "txlpbc", "pbc": "txlpbc", "bccd": "bccd",
         "mpidb": "mpidb_pf"}
"""Each lab's dataset folder under ``--data``."""


def lab_samples(data: Path, lab: str) -> dict[str, list]:
    """The train and val samples of a lab with fields (not ``mpidb``), in the order
    ``cut`` numbers their fields."""
    from bloomseg.train.classifier import split_images
    from bloomseg.train.config import ClassesConfig

    root = str(data / ROOTS[lab])
    train, val = split_images(root, ClassesConfig(data=[root]))
    if lab in ("raabin", "pbc"):
        sources = {}
        with open(data / "txlpbc" / "manifest.csv", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                sources[Path(row["file"]).stem] = row["source"]
        train, val = ([s for s in part if sources.get(s.stem) == lab] for part in (train, val))
    return {"train": train, "val": val}


def cut(data: Path, cache: Path) -> None:
    """Every lab's windows, train (with 2 views) and val, into ``cache/LAB.npz``."""
    from tqdm import tqdm

    from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
    from bloomseg.data.images import read_image
    from bloomseg.data.vocabulary import read_classes
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.classifier import ClassifierConfig
    from bloomseg.train.classifier import crop_windows, image_windows, known_classes

    segmenter = Segmenter.load("default", classes=False)
    config = ClassifierConfig()
    cache.mkdir(parents=True, exist_ok=True)
    for lab in LABS:
        path = cache / f"{lab}.npz"
        if path.is_file():
            continue
        rng = np.random.default_rng(LABS.index(lab))
        root = str(data / ROOTS[lab])
        splits = {}
        if lab == "mpidb":
            for split in ("train", "val"):
                splits[split] = crop_windows(segmenter.normalise, root, split, config,
                                             2 if split == "train" else 0, rng)
        else:
            names = read_classes(root)
            known = known_classes(names.known, lab in HEALTHY)
            for split, samples in lab_samples(data, lab).items():
                parts = []
                for i, sample in enumerate(tqdm(samples, desc=f"{lab} {split}", leave=False)):
                    image = read_image(sample.image)
                    yolo = read_boxes(sample.boxes)
                    cells = image_windows(segmenter, image, yolo_to_xyxy(yolo, *image.shape[:2]),
                                          names.targets(yolo[:, 0]), config,
                                          2 if split == "train" else 0, rng, unboxed=True)
                    cells.known[:], cells.field[:] = known, i
                    parts.append(cells)
                splits[split] = Windows.join(parts, config.crop)
        np.savez(path, **{f"{split}_{f}": getattr(w, f) for split, w in splits.items()
                          for f in Windows.FIELDS})
        print(f"{lab}: " + ", ".join(f"{s} {len(w)} windows" for s, w in splits.items()),
              flush=True)


def load(cache: Path, lab: str) -> dict[str, Windows]:
    with np.load(cache / f"{lab}.npz") as saved:
        return {split: Windows(*(saved[f"{split}_{f}"] for f in Windows.FIELDS))
                for split in ("train", "val")}


def trainable(windows: Windows, lab: str) -> Windows:
    """The windows a classifier may learn from: boxed cells, and every cell of normal
    blood."""
    return windows if lab in HEALTHY else windows[windows.y != UNBOXED]


def split_windows(labs: dict[str, dict[str, Windows]], kept: list[str]) -> dict[str, Windows]:
    """The train and val windows of the ``kept`` labs, each lab its own dataset."""
    parts = {}
    for split in ("train", "val"):
        chosen = []
        for d, lab in enumerate(kept):
            w = trainable(labs[lab][split], lab)
            w.dataset[:] = d
            chosen.append(w)
        parts[split] = Windows.join(chosen, CROP)
    return parts


def ship(recipe: str, cache: Path, epochs: int | None) -> None:
    """The classifier trained on every lab."""
    from bloomseg.train.classifier import fit_classes, run_log
    from bloomseg.train.config import ClassesConfig

    out = cache / recipe / "all"
    out.mkdir(parents=True, exist_ok=True)
    parts = split_windows({lab: load(cache, lab) for lab in LABS}, list(LABS))
    settings = SHIP | RECIPES[recipe] | ({"epochs": epochs} if epochs else {})
    log = run_log(out / "train.log", True)
    log(f"{recipe} on every lab: {len(parts['train'])} train windows, {len(parts['val'])} val, "
        f"{settings}")
    fit_classes(parts["train"], parts["val"], ClassesConfig(data=list(LABS), out=str(out),
                                                            **settings), out, log, resume=True)


def profile(recipe: str, cache: Path) -> None:
    """The red-cell profiles of every lab, and the memory of its cells, kept in a
    classifier ``ship`` trained before they were (``fit_classes`` now keeps them at its
    end, its weights untouched): ``CACHE/RECIPE/all/best.pt`` is rewritten."""
    from bloomseg.model.files import load_classifier, save_classifier
    from bloomseg.train.classifier import keep_memory, set_labs

    path = cache / recipe / "all" / "best.pt"
    model, payload = load_classifier(path)
    parts = split_windows({lab: load(cache, lab) for lab in LABS}, list(LABS))
    labs = set_labs(model, parts["train"])
    memory = keep_memory(model, parts["train"], parts["val"])
    model.config = replace(model.config, labs=labs, memory=memory, lab_names=LABS,
                           max_false_calls=RECIPES[recipe].get("max_false_calls", 0.002))
    save_classifier(path, model, {"config": model.config.as_dict(),
                                  "history": payload.get("history", [])})
    print(f"{path}: the red-cell profiles of {labs} labs kept (scatter "
          f"{', '.join(f'{v:.3g}' for v in model.lab_scatter.tolist())}), {memory} cells in memory")


ADAPT = {"anchored": {},
         "anchor-300": {"anchor": 300.0},
         "anchor-30": {"anchor": 30.0},
         "anchor-10": {"anchor": 10.0},
         "anchor-1": {"anchor": 1.0},
         "anchor-10-long": {"anchor": 10.0, "steps": 400},
         "no-replay": {"anchor": 10.0, "replay": False}}
"""The ways of adapting a classifier to a user's corrected fields tried: settings of
:func:`~bloomseg.train.classifier.adapt_classifier` beside its defaults (``anchored``)."""


def adapt(recipe: str, leave: list[str], cache: Path, ways: list[str]) -> None:
    """For each healthy lab left out: its classifier (``run RECIPE``), given a memory of
    the labs it learnt as ``fit_classes`` keeps one, is shown the first 2 fields with an
    infected call, corrected as a user would (every boxed cell set to its box's class,
    every other infected call to red cell; the other cells as called, confirmed),
    adapted each of ``ways`` (:data:`ADAPT`), its threshold checked again, and scored on
    the lab's other fields; and, for forgetting, on the val cells of the labs it learnt.
    Writes each lab's scores under ``CACHE/RECIPE/LAB-adapted/`` and the table to
    ``CACHE/RECIPE/adapt.csv``."""
    import copy
    import time

    import torch

    from bloomseg.train.classifier import (
        adapt_classifier,
        features_of,
        memory_scores,
        recheck_threshold,
    )

    torch.set_num_threads(1)
    labs = {lab: load(cache, lab) for lab in LABS}
    rows = []
    for left in leave:
        start = remembering(recipe, left, labs, cache)
        kept = [lab for lab in LABS if lab != left]
        seen = fields_of(labs[left])
        fields, said, changed = corrected_as_a_user(start, seen)
        chosen = np.isin(seen.field, fields)
        cells = seen[chosen]
        cells.y = said[chosen]
        cells.known[:] = True
        rest = seen[~chosen]
        rest_features = torch.from_numpy(features_of(start, rest)[1])
        out = cache / recipe / f"{left}-adapted"
        print(f"{left}: {len(cells)} cells of {len(fields)} fields corrected ({changed} calls "
              f"changed); the other {len(np.unique(rest.field))} fields scored", flush=True)
        for way in ["start", *ways]:
            model = copy.deepcopy(start)
            began = time.perf_counter()
            if way != "start":
                settings = dict(ADAPT[way])
                if not settings.pop("replay", True):
                    model.memory_val[:] = True  # nothing to replay; the threshold still checked
                adapt_classifier(model, cells, **settings)
                model.memory_val.copy_(start.memory_val)
                check = recheck_threshold(model, cells)
                model.config = replace(model.config, infected_threshold=check.threshold)
            seconds = time.perf_counter() - began
            row = {"left": left, "way": way, "seconds": round(seconds, 2),
                   "threshold": model.config.infected_threshold}
            score_features(model, rest_features, rest, out / way / "scores.npz")
            v = scores(out / way / "scores.npz")
            row |= {"red_called_infected": v["red_called_infected"], "fields_clean": v["fields_clean"],
                    "red_called_white": v["red_called_white"]}
            forgot = memory_scores(model)
            row |= {f"{lab} {k}": forgot[d][k] for d, lab in enumerate(kept)
                    for k in ("infected_found", "red_called_infected") if d in forgot}
            rows.append(row)
            shown = {k: _pct(v) if isinstance(v, float) and k not in ("seconds", "threshold")
                     else v for k, v in row.items() if k != "left"}
            print("  " + ", ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
    save_rows(cache / recipe / "adapt.csv", rows)


def remembering(recipe: str, left: str, labs: dict, cache: Path):
    """The classifier trained without ``left``, with the memory of the other labs' cells
    that ``fit_classes`` now keeps (it was trained before it kept one)."""
    from bloomseg.model.files import load_classifier
    from bloomseg.train.classifier import keep_memory

    model = load_classifier(cache / recipe / left / "best.pt")[0]
    kept = [lab for lab in LABS if lab != left]
    parts = split_windows(labs, kept)
    memory = keep_memory(model, parts["train"], parts["val"])
    model.config = replace(model.config, memory=memory, lab_names=tuple(kept))
    return model


def fields_of(lab: dict[str, Windows]) -> Windows:
    """A lab's cells (the images, not their views), ``field`` numbering its train and
    val fields apart (split * 100000 + field)."""
    seen = Windows.join([w[w.view == 0] for w in lab.values()], CROP)
    seen.field = np.concatenate([np.full(int((w.view == 0).sum()), s) for s, w in
                                 enumerate(lab.values())]) * 100000 + seen.field
    return seen


def corrected_as_a_user(model, seen: Windows) -> tuple[list[int], np.ndarray, int]:
    """The first 2 fields with an infected call (else the first 2), and what a user says
    of every cell: a boxed cell what its box says, an unboxed one as called, but an
    infected call a red cell.

    Returns:
        (the 2 fields, (N,) the classes said, how many calls of the 2 fields that changes).
    """
    from bloomseg.cells.types import cell_types
    from bloomseg.data.vocabulary import kind_of
    from bloomseg.train.classifier import probabilities

    p = probabilities(model, seen, model.config.temperature)
    kinds = np.array([t["class"] for t in cell_types(p, model.config.infected_threshold)])
    fields = ([f for f in np.unique(seen.field) if (kinds[seen.field == f] == "infected").any()]
              or list(np.unique(seen.field)))[:2]
    called = np.where(kinds == "infected", CLASSES.index("ring"), p.argmax(axis=1))
    said = np.where(np.isin(called, STAGE_INDEX), RED, called)
    said = np.where(seen.y != UNBOXED, seen.y, said)
    chosen = np.isin(seen.field, fields)
    changed = sum(kind_of(int(a)) != kind_of(int(b)) for a, b in zip(called[chosen], said[chosen]))
    return fields, said, int(changed)


def user(recipe: str, left: str, data: Path, cache: Path) -> None:
    """The whole user's path on a healthy lab left out, with the command line: a model
    of the default segmentation and the classifier trained without the lab (with its
    memory), ``bloomseg predict --cells`` of the 2 fields :func:`corrected_as_a_user`
    picks, their ``<stem>_cells.csv`` corrected as a user would (a cell matching a box
    (IoU >= 0.5) what the box says; else an infected call a red cell), then
    ``bloomseg train --adapt`` and ``--adapt-classes-only`` on that folder, each timed
    as a whole command. The adapted classifiers are scored on the lab's other fields
    (the cached cells) beside the start's; ``benchmarks/cell_classes.py --model`` gives
    their BBBC041 test figures. Everything goes to ``CACHE/RECIPE/LAB-user``."""
    import shutil
    import subprocess
    import time

    import torch

    from bloomseg.cells.matching import box_pairs, cell_boxes
    from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
    from bloomseg.data.images import read_image, read_labels
    from bloomseg.data.vocabulary import kind_of, read_classes
    from bloomseg.model.files import export_model, load_classifier, save_classifier
    from bloomseg.train.classifier import features_of

    torch.set_num_threads(2)
    out = cache / recipe / f"{left}-user"
    out.mkdir(parents=True, exist_ok=True)
    labs = {lab: load(cache, lab) for lab in LABS}
    model = remembering(recipe, left, labs, cache)
    save_classifier(out / "classifier.pt", model, {"config": model.config.as_dict()})
    start = export_model("default", out / "start", overwrite=True, classifier=out / "classifier.pt")
    seen = fields_of(labs[left])
    fields, _, changed = corrected_as_a_user(model, seen)
    samples = lab_samples(data, left)
    folder = out / "fields"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    names = read_classes(str(data / ROOTS[left]))
    for f in fields:
        sample = samples[("train", "val")[f // 100000]][f % 100000]
        shutil.copyfile(sample.image, folder / sample.image.name)
        subprocess.run([sys.executable, "-m", "bloomseg", "predict", str(start),
                        str(folder / sample.image.name), "-o", str(folder), "--cells", "-q",
                        "--overwrite"], check=True)
        table = folder / f"{sample.stem}_cells.csv"
        labels = read_labels(folder / f"{sample.stem}_labels.tif")
        yolo = read_boxes(sample.boxes)
        image = read_image(sample.image)
        truth = names.targets(yolo[:, 0])
        boxed = {c + 1: int(truth[b]) for c, b in
                 box_pairs(cell_boxes(labels)[0], yolo_to_xyxy(yolo, *image.shape[:2]))}
        with open(table, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns, rows = reader.fieldnames, list(reader)
        for row in rows:
            said = boxed.get(int(row["id"]))
            if said is not None:
                kind = kind_of(said)
                row["class"], row["stage"] = kind, CLASSES[said] if kind == "infected" else ""
            elif row["class"] == "infected":
                row["class"], row["stage"] = "red_blood_cell", ""
        with open(table, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, columns)
            w.writeheader()
            w.writerows(rows)
    print(f"{left}: 2 fields predicted and corrected as a user would ({changed} calls of the "
          f"cached cells changed) in {folder}", flush=True)
    runs = {"adapt": ["--adapt"], "classes-only": ["--adapt-classes-only"]}
    rest = seen[~np.isin(seen.field, fields)]
    features = torch.from_numpy(features_of(model, rest)[1])
    score_features(model, features, rest, out / "start" / "scores.npz")
    rows = [{"way": "start", "seconds": 0.0} | scores(out / "start" / "scores.npz")]
    for name, flags in runs.items():
        run = out / name
        shutil.rmtree(run, ignore_errors=True)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bloomseg", "train", *flags, "--init", str(start),
                        "--data", str(folder), "-o", str(run), "-q"], check=True)
        seconds = time.perf_counter() - began
        adapted = load_classifier(run / "model")[0]
        score_features(adapted, features, rest, run / "scores.npz")
        rows.append({"way": name, "seconds": round(seconds, 1)} | scores(run / "scores.npz"))
    for row in rows:
        print(f"  {row['way']}: {row['seconds']} s (the whole command); other fields "
              f"{row['fields']}: red called infected {_pct(row['red_called_infected'])}, clean "
              f"{row['fields_clean']:.1%}, red called white {_pct(row['red_called_white'])}",
              flush=True)
    save_rows(out / "user.csv", rows)


def score_features(model, features, windows: Windows, path: Path) -> None:
    """:func:`score_lab` from features computed once (only the last layer moves when a
    classifier adapts)."""
    import torch

    with torch.no_grad():
        p = (model.out(features) / model.config.temperature).softmax(dim=1).numpy()
        d = model.distances(features).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, p=p, d=d, y=windows.y, field=windows.field,
             threshold=model.config.infected_threshold, limit=model.config.distance_limit)


def ensemble(recipes: list[str], leave: list[str], cache: Path) -> None:
    """The labs left out named by the recipes' classifiers together: their calibrated
    probabilities averaged, the infected threshold chosen again on the val cells of the
    labs they learnt (as training chooses it), into ``CACHE/R1+R2.../LAB/scores.npz``
    for ``table`` (no distance limit: no call is marked uncertain)."""
    from bloomseg.model.files import load_classifier
    from bloomseg.train.classifier import probabilities, tune_infected

    labs = {lab: load(cache, lab) for lab in LABS}
    name = "+".join(recipes)
    for left in leave:
        kept = [lab for lab in LABS if lab != left]
        val = split_windows({lab: labs[lab] for lab in kept}, kept)["val"]
        named, budgets = [], []
        for recipe in recipes:
            model = load_classifier(cache / recipe / left / "best.pt")[0]
            named.append(probabilities(model, val, model.config.temperature))
            budgets.append(RECIPES.get(recipe, {}).get("max_false_calls", 0.002))
        threshold, _ = tune_infected(np.mean(named, axis=0), val.y, min(budgets), val.dataset)
        each = [np.load(cache / recipe / left / "scores.npz") for recipe in recipes]
        out = cache / name / left / "scores.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        p = np.mean([s["p"] for s in each], axis=0)
        np.savez(out, p=p, d=np.zeros_like(p), y=each[0]["y"], field=each[0]["field"],
                 threshold=threshold, limit=np.inf)
        print(f"{name} without {left}: infected threshold {threshold} -> {out}")


def save_rows(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    print(f"-> {path}")


def run(recipe: str, leave: list[str], cache: Path, epochs: int | None) -> None:
    """Train without each lab of ``leave`` and score on it."""
    import torch

    from bloomseg.model.files import load_classifier
    from bloomseg.train.classifier import fit_classes, run_log
    from bloomseg.train.config import ClassesConfig

    torch.set_num_threads(1)  # two recipes run side by side, one core each
    labs = {lab: load(cache, lab) for lab in LABS}
    for left in leave:
        out = cache / recipe / left
        if (out / "scores.npz").is_file():
            print(f"{recipe} without {left}: done already ({out})")
            continue
        out.mkdir(parents=True, exist_ok=True)
        kept = [lab for lab in LABS if lab != left]
        parts = split_windows(labs, kept)
        settings = TRAINING | RECIPES[recipe] | ({"epochs": epochs} if epochs else {})
        cfg = ClassesConfig(data=kept, out=str(out), **settings)
        log = run_log(out / "train.log", True)
        log(f"{recipe} without {left}: {len(parts['train'])} train windows, "
            f"{len(parts['val'])} val, {settings}")
        fit_classes(parts["train"], parts["val"], cfg, out, log, resume=True)
        score_lab(load_classifier(out / "best.pt")[0], labs[left], out / "scores.npz")
        log(f"scored the cells of {left} -> {out / 'scores.npz'}")


def score_lab(model, lab: dict[str, Windows], path: Path) -> None:
    """Every cell of a lab's train and val fields named by ``model``: probabilities,
    distances to each class's centre, classes, fields, into ``path``."""
    import torch

    from bloomseg.model.classifier import input_tensor

    seen = Windows.join([w[w.view == 0] for w in lab.values()], CROP)
    fields = np.concatenate([np.full(int((w.view == 0).sum()), s) for s, w in
                             enumerate(lab.values())]) * 100000 + seen.field
    p, d = [], []
    with torch.no_grad():
        for s in range(0, len(seen), 256):
            f = model.features(input_tensor(seen.x[s:s + 256], seen.reference[s:s + 256],
                                            model.config.inputs))
            p.append((model.out(f) / model.config.temperature).softmax(dim=1).numpy())
            d.append(model.distances(f).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, p=np.concatenate(p), d=np.concatenate(d), y=seen.y, field=fields,
             threshold=model.config.infected_threshold, limit=model.config.distance_limit)


def scores(path: Path, limit_scale: float = 1.0) -> dict:
    """The figures of one lab left out from its scores.npz."""
    from bloomseg.cells.types import cell_types

    s = np.load(path)
    p, y, d = s["p"], s["y"], s["d"]
    called = p.argmax(axis=1)
    far = d[np.arange(len(d)), called] > float(s["limit"]) * limit_scale
    types = cell_types(p, float(s["threshold"]), far)
    kind = np.array([t["class"] for t in types])
    uncertain = np.array([t["uncertain"] for t in types])
    infected = kind == "infected"
    red = y == RED
    truth = np.isin(y, STAGE_INDEX)
    out = {"red": int(red.sum()),
           "red_called_infected": float(infected[red].mean()) if red.any() else np.nan,
           "red_called_white": float((kind[red] == "white_blood_cell").mean()) if red.any() else np.nan,
           "white_found": float((kind[y == WHITE] == "white_blood_cell").mean())
           if (y == WHITE).any() else np.nan,
           "infected": int(truth.sum()),
           "infected_found": float(infected[truth].mean()) if truth.any() else np.nan,
           "infected_called_white": float((kind[truth] == "white_blood_cell").mean())
           if truth.any() else np.nan,
           "false_calls_uncertain": float(uncertain[infected & ~truth].mean())
           if (infected & ~truth).any() else np.nan,
           "true_calls_uncertain": float(uncertain[infected & truth].mean())
           if (infected & truth).any() else np.nan}
    fields = np.unique(s["field"])
    dirty = np.unique(s["field"][infected])
    out["fields"] = len(fields)
    out["fields_clean"] = 1 - len(dirty) / len(fields)
    out["cells_called_infected"] = float(infected.mean())
    confident = infected & ~uncertain
    out["fields_clean_confident"] = 1 - len(np.unique(s["field"][confident])) / len(fields)
    return out


def table(recipes: list[str], cache: Path, limit_scale: float) -> None:
    columns = ("recipe", "left out", "red", "red called infected", "red called white",
               "fields clean", "(certain calls only)", "cells called infected", "white found", "infected",
               "infected found", "infected called white", "false calls uncertain",
               "true calls uncertain")
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for recipe in recipes:
        worst = {"red_called_infected": 0.0, "red_called_white": 0.0, "fields_clean": 1.0}
        for lab in LABS:
            path = cache / recipe / lab / "scores.npz"
            if not path.is_file():
                continue
            v = scores(path, limit_scale)
            healthy = lab in HEALTHY
            row = [recipe, lab, v["red"], _pct(v["red_called_infected"]),
                   _pct(v["red_called_white"]),
                   f"{v['fields_clean']:.0%} of {v['fields']}" if healthy else "",
                   f"{v['fields_clean_confident']:.0%}" if healthy else "",
                   _pct(v["cells_called_infected"]) if healthy else "", _pct(v["white_found"]),
                   v["infected"] or "",
                   _pct(v["infected_found"]), _pct(v["infected_called_white"]),
                   _pct(v["false_calls_uncertain"]), _pct(v["true_calls_uncertain"])]
            print("| " + " | ".join(str(c) for c in row) + " |")
            for k in ("red_called_infected", "red_called_white"):
                if not np.isnan(v[k]):
                    worst[k] = max(worst[k], v[k])
            if healthy:
                worst["fields_clean"] = min(worst["fields_clean"], v["fields_clean"])
        print(f"| {recipe} | **worst** | | {_pct(worst['red_called_infected'])} | "
              f"{_pct(worst['red_called_white'])} | {worst['fields_clean']:.0%} | | | | | | | | |")


def _pct(v: float) -> str:
    return "" if v is None or np.isnan(v) else f"{100 * v:.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("cut", "run", "table", "ship", "profile", "score",
                                         "adapt", "user", "ensemble"))
    parser.add_argument("--way", action="append", choices=tuple(ADAPT),
                        help="adapt: how the classifier adapts (repeatable; default: each)")
    parser.add_argument("--classifier", help="score: the classifier (a run folder or an "
                        "exported model's folder)")
    parser.add_argument("recipes", nargs="*", help=f"of {', '.join(RECIPES)}")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--cache", default="out/unseen", type=Path)
    parser.add_argument("--leave", action="append", choices=LABS, help="labs to leave out "
                        "(default: each in turn)")
    parser.add_argument("--epochs", type=int, help=f"(default {TRAINING['epochs']})")
    parser.add_argument("--quantile-scale", type=float, default=1.0, help="the distance limit "
                        "times this (to choose it)")
    args = parser.parse_args()
    if args.step == "score":
        from bloomseg.model.files import load_classifier, resolve_classifier

        if len(args.recipes) != 1 or not args.classifier or not args.leave:
            parser.error("score: name it, and give --classifier and --leave")
        model = load_classifier(resolve_classifier(args.classifier))[0]
        for lab in args.leave:
            score_lab(model, load(args.cache, lab), args.cache / args.recipes[0] / lab / "scores.npz")
        return
    unknown = [r for r in args.recipes if r not in RECIPES and args.step != "table"]
    if unknown:
        parser.error(f"unknown recipe {unknown[0]} (known: {', '.join(RECIPES)})")
    if args.step == "cut":
        if not (args.data / "bccd").is_dir():
            sys.exit(f"{args.data}: the shared data is not there (bbbc041seg, txlpbc, bccd, mpidb_pf)")
        cut(args.data, args.cache)
    elif args.step == "user":
        for lab in args.leave or list(HEALTHY):
            user(args.recipes[0], lab, args.data, args.cache)
    elif args.step == "ensemble":
        if len(args.recipes) < 2:
            parser.error("ensemble: name two recipes or more")
        ensemble(args.recipes, args.leave or [lab for lab in LABS if lab != "mpidb"], args.cache)
    elif args.step == "adapt":
        adapt(args.recipes[0], args.leave or list(HEALTHY), args.cache, args.way or list(ADAPT))
    elif args.step in ("run", "ship", "profile"):
        if len(args.recipes) != 1:
            parser.error(f"{args.step}: name one recipe")
        if args.step == "ship":
            ship(args.recipes[0], args.cache, args.epochs)
        elif args.step == "profile":
            profile(args.recipes[0], args.cache)
        else:
            run(args.recipes[0], args.leave or list(LABS), args.cache, args.epochs)
    else:
        table(args.recipes or list(RECIPES), args.cache, args.quantile_scale)


if __name__ == "__main__":
    main()

"""How few images and minutes adapting a model to a microscope takes (``train --adapt``).

    python benchmarks/adapt.py [--model default] [--split test] [--images 1 3 10]
                               [--domains raabin pbc bbbc041] [--freeze F] [--epochs N]
                               [--out out/adapt.csv]

For each domain (txlpbc's Raabin and PBC, boxes only; BBBC041, masks) and each number of
images, the first N of a seeded draw from the domain's train split (BBBC041's train images
of its splits.json, never its val) are put in a dataset folder of their own, and
``bloomseg train --adapt --init MODEL`` runs on them as a user would run it (every
setting the recipe's, except those given here). The adapted model is then scored on the
domain's split (``--split``: ``val`` to choose a recipe, ``test`` to report) as
``benchmarks/domains.py`` scores (cell F1 against every box, one to one at IoU >= 0.5;
red-cell F1; recall: the cells found as single cells; pixel Dice where there are masks),
and on BBBC041's split (its Dice: what adapting to another microscope costs the smears
the model knew, "forgetting"). The start model is scored the same way first, and each
run's minutes are the whole command's (reading, training, tuning, export), on this
machine's cores.

Printed as a table and written as CSV; the adapted runs stay under ``--work``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from domains import domains, report, row_of, score  # noqa: E402 (the benchmarks folder is the script's own)

from bloomseg.inference.segmenter import Segmenter
from bloomseg.train import TrainConfig, train

COLUMNS = ("model", "domain", "adapted_on", "minutes", "f1", "red_f1", "recall", "dice",
           "count_error_all", "bbbc041_dice")


def train_images(data: Path, domain: str) -> list[tuple[Path, Path, Path | None]]:
    """(image, boxes, mask or None) of a domain's train images, in a seeded order (the
    first N of it are the N images adapted on, so 1 ⊂ 3 ⊂ 10)."""
    if domain == "bbbc041":
        root = data / "bbbc041seg" / "train"
        held = set(json.loads((data / "bbbc041seg" / "splits.json").read_text())["val"])
        stems = sorted(p.stem for p in (root / "original").iterdir() if p.stem not in held)
        found = [(root / "original" / f"{s}.png", root / "boxes" / f"{s}.txt",
                  root / "mask" / f"{s}.png") for s in stems]
    else:
        root = data / "txlpbc" / "train"
        with open(data / "txlpbc" / "manifest.csv", encoding="utf-8") as f:
            files = sorted(r["file"] for r in csv.DictReader(f)
                           if r["split"] == "train" and r["source"] == domain)
        found = [(root / "original" / name, root / "boxes" / f"{Path(name).stem}.txt", None)
                 for name in files]
    order = np.random.default_rng(0).permutation(len(found))
    return [found[i] for i in order]


def dataset_of(images: list[tuple[Path, Path, Path | None]], folder: Path) -> Path:
    """A dataset folder (train/original, boxes, mask) of links to ``images``."""
    for sub in ("original", "boxes", "mask"):
        (folder / "train" / sub).mkdir(parents=True, exist_ok=True)
    for image, boxes, mask in images:
        for source, sub in ((image, "original"), (boxes, "boxes"), (mask, "mask")):
            link = folder / "train" / sub / (source.name if source else "")
            if source is not None and not link.is_symlink():
                link.symlink_to(source.resolve())
    if not any((folder / "train" / "mask").iterdir()):
        (folder / "train" / "mask").rmdir()
    return folder


def scored(model: str | Path, data: Path, domain: str, split: str, name: str) -> dict:
    """A model's row on a domain, with BBBC041's Dice beside it."""
    segmenter = Segmenter.load(model, classes=False)
    segment = lambda im: segmenter.predict(im, instances=True).labels  # noqa: E731
    wanted = {domain, "bbbc041"}
    results = score(segment, (item for item in domains(data, split) if item[0] in wanted))
    row = row_of(domain, name, results[domain])
    row["bbbc041_dice"] = f"{results['bbbc041']['pixels'].dice:.4f}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", default="default", help="the model adapted")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="val: to choose a recipe (never choose by test)")
    parser.add_argument("--images", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--domains", nargs="+", default=["raabin", "pbc", "bbbc041"],
                        choices=("raabin", "pbc", "bbbc041"))
    parser.add_argument("--freeze", help="instead of the recipe's (none, norms, encoder, "
                        "encoder+norms)")
    parser.add_argument("--lr", type=float, help="instead of the recipe's")
    parser.add_argument("--epochs", type=int, help="instead of the recipe's")
    parser.add_argument("--margin-cells", type=int, help="instead of ADAPT_MARGIN_CELLS (how many "
                        "cells' worth of F1 re-tuned separation settings must gain)")
    parser.add_argument("--work", default="out/adapt-bench", type=Path)
    parser.add_argument("--out", default="out/adapt.csv", type=Path)
    args = parser.parse_args()
    given = (("freeze", args.freeze), ("lr", args.lr), ("epochs", args.epochs))
    recipe = {k: v for k, v in given if v is not None}
    tag = "-".join(f"{k}{v}" for k, v in recipe.items()) or "recipe"
    if args.margin_cells is not None:  # an ablation of the rule, not a setting
        import bloomseg.train.run as loop

        loop.ADAPT_MARGIN_CELLS = args.margin_cells
        tag += f"-margin{args.margin_cells}"
    rows = []
    for domain in args.domains:
        row = scored(args.model, args.data, domain, args.split, "start")
        rows.append(row | {"model": args.model, "adapted_on": 0, "minutes": ""})
        print(rows[-1], flush=True)
        pool = train_images(args.data, domain)
        for n in args.images:
            folder = dataset_of(pool[:n], args.work / "data" / f"{domain}-{n}")
            run = args.work / "runs" / f"{Path(args.model).name}-{domain}-{n}-{tag}"
            start = time.perf_counter()
            result = train(TrainConfig.adapted(data=[str(folder)], out=str(run), init=args.model,
                                               cache_dir="out/cache", **recipe),
                           progress=False, overwrite=True)
            minutes = (time.perf_counter() - start) / 60
            row = scored(result.model_dir, args.data, domain, args.split, "adapted")
            rows.append(row | {"model": args.model, "adapted_on": n, "minutes": f"{minutes:.1f}"})
            print(rows[-1], flush=True)
    print(f"\n{args.split}, {tag}:")
    report(rows, COLUMNS, args.out)


if __name__ == "__main__":
    main()

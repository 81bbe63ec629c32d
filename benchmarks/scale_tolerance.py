"""What a wrong cell diameter costs: cell F1 (and BBBC041 Dice) against the error of the
diameter given, per domain, for one or more models side by side.

    python benchmarks/scale_tolerance.py --model default --model out/s54 [--split val]
        [--limit 40] [--out out/tolerance.csv]

Each image of the split (``bbbc041seg``; ``txlpbc`` Raabin and PBC apart, as
``domains.py`` reads them) is segmented with ``--diameter`` set to its red-cell box
median times each of :data:`FACTORS` (0.6: the diameter given is 0.6 of the truth, so the
image is enlarged too much). Cell F1 at IoU 0.5, one to one, against every box; pixel Dice
where the split has masks. Writes the CSV and ``<out>.png`` (a curve per model and
domain). Choose on ``val``; the model card's curve is made the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from cell_size import RED  # the benchmarks folder is the script's own
from domains import domains

from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.data.boxes import box_diameters, read_boxes, yolo_to_xyxy
from bloomseg.data.dataset import read_mask
from bloomseg.data.images import read_image
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.figures import pyplot, save_figure
from bloomseg.files import save_csv
from bloomseg.inference.segmenter import Segmenter

FACTORS = (0.5, 0.6, 0.8, 1.0, 1.25, 1.6, 2.0)
"""Diameter given / true diameter."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--model", action="append", help="repeat to compare (default: default)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--limit", type=int, default=40, help="images per domain (40)")
    parser.add_argument("--out", default="out/tolerance.csv", type=Path)
    args = parser.parse_args()
    models = args.model or ["default"]
    segmenters = {m: Segmenter.load(m, classes=False) for m in models}
    results: dict[tuple[str, str, float], dict] = {}
    seen: dict[str, int] = {}
    for domain, path, box_path, mask_path in domains(args.data, args.split):
        if seen.get(domain, 0) >= args.limit:
            continue
        image = read_image(path)
        h, w = image.shape[:2]
        boxes = read_boxes(box_path)
        red = box_diameters(boxes[boxes[:, 0] == RED[domain]], h, w)
        if not len(red):
            continue
        seen[domain] = seen.get(domain, 0) + 1
        truth = float(np.median(red))
        mask = read_mask(mask_path) if mask_path is not None else None
        for name, segmenter in segmenters.items():
            for factor in FACTORS:
                labels = segmenter.predict(image, instances=True, classes=False,
                                           diameter=round(truth * factor, 1)).labels
                r = results.setdefault((name, domain, factor),
                                       {"matches": [], "pixels": PixelCounts()})
                r["matches"].append(match_boxes(labels, yolo_to_xyxy(boxes, h, w)))
                if mask is not None:
                    r["pixels"] = r["pixels"] + PixelCounts.of(labels > 0, mask)
        print(f"{domain} {path.name}: done", flush=True)
    rows = [{"model": name, "domain": domain, "factor": factor, "images": len(r["matches"]),
             "f1": round(total_boxes(r["matches"]).f1, 4),
             "dice": round(r["pixels"].dice, 4) if domain == "bbbc041" else ""}
            for (name, domain, factor), r in results.items()]
    print("| model | domain | " + " | ".join(f"x{f}" for f in FACTORS) + " |")
    print("| --- | --- |" + " --- |" * len(FACTORS))
    for name in models:
        for domain in dict.fromkeys(d for _, d, _ in results):
            cells = [next(r for r in rows if (r["model"], r["domain"], r["factor"])
                          == (name, domain, f)) for f in FACTORS]
            print(f"| {name} | {domain} | " + " | ".join(f"{c['f1']:.3f}" for c in cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_csv(args.out, rows, list(rows[0]))
    plt = pyplot()
    domains_seen = list(dict.fromkeys(d for _, d, _ in results))
    fig, axes = plt.subplots(1, len(domains_seen), figsize=(5 * len(domains_seen), 4),
                             constrained_layout=True, squeeze=False)
    for ax, domain in zip(axes[0], domains_seen):
        for name in models:
            f1 = [next(r["f1"] for r in rows if (r["model"], r["domain"], r["factor"])
                       == (name, domain, f)) for f in FACTORS]
            ax.plot(FACTORS, f1, "o-", label=name)
        ax.set(xscale="log", xticks=FACTORS, xticklabels=[f"{f:g}" for f in FACTORS],
               xlabel="diameter given / true", ylabel="cell F1", title=f"{domain} ({args.split})")
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, args.out.with_suffix(".png"))
    print(f"-> {args.out}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

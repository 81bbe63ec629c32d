"""Masks learned from boxes against masks learned from masks, on the smears that have both.

    python benchmarks/boxes_vs_masks.py --out out/boxes-vs-masks            # both arms
    python benchmarks/boxes_vs_masks.py --out out/boxes-vs-masks --epochs 8 --tiles-per-image 4

Trains the same U-Net recipe twice on ../shared/data/bbbc041seg/train (its persisted
80/20 split): once on its masks, once on its boxes only (``--ignore-masks``: projection,
interior, background outside the boxes, pairwise colour term and the centre map; validation then
scores cell F1 against the boxes, so no mask is seen anywhere). Then scores both best.pt
on the 10 test smears, at their own scale (``--diameter model``): pixel Dice and IoU, and
cell F1 against the boxes. A stopped arm continues where it stopped (``resume``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bloomseg.evaluation.evaluate import evaluate
from bloomseg.inference.segmenter import Segmenter
from bloomseg.train.config import TrainConfig
from bloomseg.train.run import resume, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc041seg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the two runs and their scores")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tiles-per-image", type=int, default=4)
    parser.add_argument("--arms", default="masks,boxes", help="which arms, joined by commas")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for arm in args.arms.split(","):
        run = out / arm
        start = time.perf_counter()
        if (run / "best.pt").is_file() and (run / "instance_tuning.csv").is_file():
            pass  # trained and tuned already
        elif (run / "config.json").is_file():
            resume(run, progress=False)
        else:
            train(TrainConfig(data=args.data, out=str(run), backbone="unet", epochs=args.epochs,
                              tiles_per_image=args.tiles_per_image, hue_jitter=0.5,
                              ignore_masks=[args.data] if arm == "boxes" else []),
                  progress=False)
        minutes = (time.perf_counter() - start) / 60
        metrics = evaluate(Segmenter.load(run, diameter="model"), args.data, out / f"eval-{arm}",
                           progress=False, overwrite=True)
        boxes = metrics["instances"]["boxes"]
        rows.append((arm, metrics["dice"]["cell"], metrics["iou"]["cell"], boxes["f1"], minutes))
    print(f"{'trained on':<12}{'Dice':>8}{'IoU':>8}{'cell F1':>9}{'minutes':>9}")
    for arm, dice, iou, f1, minutes in rows:
        print(f"{arm:<12}{dice:>8.4f}{iou:>8.4f}{f1:>9.4f}{minutes:>9.1f}")
    if len(rows) == 2:
        print(f"boxes - masks: Dice {rows[1][1] - rows[0][1]:+.4f}")


if __name__ == "__main__":
    main()

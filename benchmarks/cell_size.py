"""Cell size: the default model on smears whose cells are not its size.

    python benchmarks/cell_size.py --scales 0.4 1.5

The 10 test smears of ../shared/data/bbbc041seg are resampled by each scale (so their red
cells are about 43 px or 163 px across instead of 109 px) and segmented twice: at the
model's own scale (no --diameter, as before bloomseg knew cell sizes) and with
--diameter set to the median diameter of each smear's boxes at that scale. Cells are
matched to the scaled boxes (IoU >= 0.5); reported: cell F1 and the mean relative count
error, and seconds per smear.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.data.boxes import box_diameters, read_boxes, yolo_to_xyxy
from bloomseg.data.images import read_image
from bloomseg.inference.segmenter import Segmenter
from bloomseg.model.inputs import resample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/bbbc041seg")
    parser.add_argument("--model", default="default")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.4, 1.5])
    args = parser.parse_args()
    segmenter = Segmenter.load(args.model)
    test = Path(args.data) / "test"
    print(f"model {args.model}: cell diameter {segmenter.cell_diameter} px")
    print("| scale | diameter | cell F1 | mean count error | s / smear |")
    print("| --- | --- | --- | --- | --- |")
    for scale in args.scales:
        results: dict[str, list] = {"model's own": [], "--diameter (boxes' median)": []}
        seconds: dict[str, list] = {k: [] for k in results}
        for path in sorted((test / "original").iterdir()):
            image = resample(read_image(path), scale)
            h, w = image.shape[:2]
            boxes = read_boxes(test / "boxes" / f"{path.stem}.txt")
            truth = float(np.median(box_diameters(boxes, h, w)))
            for kind, diameter in zip(results, (None, truth)):
                start = time.perf_counter()
                labels = segmenter.predict(image, instances=True, diameter=diameter).labels
                seconds[kind].append(time.perf_counter() - start)
                results[kind].append(match_boxes(labels, yolo_to_xyxy(boxes, h, w)))
        for kind, matches in results.items():
            error = np.mean([m.relative_count_error for m in matches])
            print(f"| {scale}x | {kind} | {total_boxes(matches).f1:.3f} | {error:.1%} | "
                  f"{np.median(seconds[kind]):.2f} |")


if __name__ == "__main__":
    main()

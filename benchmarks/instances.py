"""Cell separation and counting on the real smears' test split, four ways side by side.

    python benchmarks/instances.py --model default

(a) the model's mask, cells seeded at its learned centre map (settings tuned on the
validation split during training); (b) the same mask, cells seeded at distance-transform
peaks (settings tuned here on the same validation images); (c) the classical pipeline:
Otsu's threshold, holes filled, distance-transform watershed (tuned the same way);
(d) the ceiling of the instance step: the true mask, seeded at the true boxes' centres.
Scores: cells matched to the true boxes at IoU >= 0.5 (bloomseg.cells.matching), and the mean
relative count error of the cells that do not touch the border.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from train_baseline import DATA, otsu_mask

from bloomseg.cells.instances import InstanceParams, label_cells, tune
from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.data.boxes import read_boxes, yolo_to_cxcywh, yolo_to_xyxy
from bloomseg.data.dataset import load_or_make_splits, load_sample, scan_split
from bloomseg.inference.segmenter import Segmenter
from bloomseg.train.centres import centre_map


def classical_mask(image: np.ndarray) -> np.ndarray:
    """Otsu foreground with holes (pale cell centres) filled."""
    return ndimage.binary_fill_holes(otsu_mask(image))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run folder trained with the centre map")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    segmenter = Segmenter.load(args.model, diameter="model")  # at the model's scale, as measured
    run = Path(args.model)
    # the training split: splits.json beside the data, or made again as training made it
    stems = [s.stem for s in scan_split(args.data, "train").samples]
    splits, _ = load_or_make_splits(args.data, stems)

    def cases(split: str, stems=None):
        for sample in scan_split(args.data, split).samples:
            if stems is None or sample.stem in stems:
                image, mask = load_sample(sample)
                rows = read_boxes(sample.boxes)
                exact = centre_map(yolo_to_cxcywh(rows, *mask.shape), 0, 0, *mask.shape)
                yield image, mask, exact, yolo_to_xyxy(rows, *mask.shape)

    val = [(segmenter.predict(image).mask, classical_mask(image), boxes)
           for image, _, _, boxes in cases("train", set(splits["val"]))]
    model_distance, _ = tune([(m, None, b) for m, _, b in val], "distance")
    otsu_distance, _ = tune([(o, None, b) for _, o, b in val], "distance")
    print(f"model: {run}; instance settings: centres {segmenter.separation}, "
          f"distance (model mask) {model_distance}, distance (Otsu) {otsu_distance}")

    results: dict[str, list] = {"a": [], "b": [], "c": [], "d": []}
    seconds = []
    for image, mask, exact, boxes in cases("test"):
        start = time.perf_counter()
        prediction = segmenter.predict(image, instances=True)
        seconds.append(time.perf_counter() - start)
        results["a"].append(match_boxes(prediction.labels, boxes))
        results["b"].append(match_boxes(label_cells(prediction.mask, None, model_distance), boxes))
        results["c"].append(match_boxes(label_cells(classical_mask(image), None, otsu_distance), boxes))
        results["d"].append(match_boxes(label_cells(mask, exact, InstanceParams("centres", 15, 0.3, 50)),
                                        boxes))
    names = {"a": "model mask + learned centres", "b": "model mask + distance transform",
             "c": "Otsu + distance transform (classical)",
             "d": "true mask + true box centres (ceiling)"}
    print(f"test split: {len(results['a'])} images, {sum(m.true for m in results['a'])} boxes")
    for key, matches in results.items():
        t = total_boxes(matches)
        rel = np.mean([m.relative_count_error for m in matches])
        print(f"  ({key}) {names[key]:<40} F1 {t.f1:.4f} (P {t.precision:.4f}, R {t.recall:.4f}), "
              f"strict F1 {t.strict_f1:.4f}, count error {rel:.2%}")
    print(f"seconds per image (median), mask and cells: {np.median(seconds):.2f}")


if __name__ == "__main__":
    main()

"""Seconds per 1600x1200 smear of two or more models, side by side in one run.

    python benchmarks/side_by_side.py out/default-before21 default [MODEL ...]

Each of the 10 BBBC041 test smears is segmented by each model in turn (mask and cells,
``--diameter auto``, as ``predict --instances`` runs, with classes where the model has a
classifier or ``--classifier`` gives one), and the medians are printed: a
ratio measured on the same machine at the same time, which a shared machine's noise
spares.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bloomseg.data.dataset import load_sample, scan_split
from bloomseg.inference.segmenter import Segmenter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc041seg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="two or more models (default, a run or "
                        "export folder)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--classifier", help="name every model's cells with this classifier "
                        "(a train-classes run or an exported model; default: each model's own)")
    args = parser.parse_args()
    images = [load_sample(s)[0] for s in scan_split(args.data, "test").samples]
    models = {name: Segmenter.load(name, classifier=args.classifier) for name in args.models}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for image in images:
        for name, segmenter in models.items():
            start = time.perf_counter()
            segmenter.predict(image, instances=True)
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        print(f"{name}: median {np.median(values):.2f} s per image ({len(values)} images)")


if __name__ == "__main__":
    main()

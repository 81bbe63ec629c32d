"""Whole-image inference speed: the reference's blended tiles vs bloomseg's stitching.

    python benchmarks/inference.py [--runs 3] [--model RUN --weights W] [--big]

One 1600x1200 test smear, a frozen ViT-S (random weights: speed does not depend on
their values) under a fusion head, in one process, median of ``--runs``:

(a) reference: 224 px tiles at 75% overlap, Gaussian-blended (494 tiles);
(b) bloomseg's default: stitched features, then the head on the whole map;
(c) the floor: the backbone alone over ceil(H/14) x ceil(W/14) patches, as 224 px tiles.

With ``--model RUN`` it also scores that trained model on the 10 test smears with (a)
and (b). ``--big`` segments a 10000x10000 image with (b) in a fresh process and reports
megapixels/s and peak RSS.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bloomseg.backbone import PATCH_SIZE
from bloomseg.backbone.vit import ARCHS, DinoVisionTransformer
from bloomseg.data.dataset import load_sample, scan_split
from bloomseg.data.images import read_image
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.segmenter import Segmenter
from bloomseg.model.inputs import to_tensor
from bloomseg.model.network import SegmentationModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc041seg"
REFERENCE = InferenceOptions(strategy="blend", overlap=0.75, sigma=0.125)
DEFAULT = InferenceOptions()


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big(size: int) -> None:
    """Segment a size x size image (the test smear tiled) and print speed and peak RSS."""
    torch.manual_seed(0)
    model = SegmentationModel("fusion", DinoVisionTransformer(ARCHS["vit_small"])).eval()
    smear = read_image(sorted((DATA / "test" / "original").iterdir())[0])
    image = np.tile(smear, (math.ceil(size / smear.shape[0]), math.ceil(size / smear.shape[1]), 1))
    image = np.ascontiguousarray(image[:size, :size])
    start = time.perf_counter()
    result = Segmenter(model, DEFAULT, diameter="model").predict(image)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{size}x{size}: {seconds:.1f} s, {size * size / 1e6 / seconds:.2f} megapixels/s, "
          f"peak RSS {rss:.2f} GiB, mask {result.mask.shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", help="a trained run folder to score with (a) and (b)")
    parser.add_argument("--weights", help="its backbone weights file")
    parser.add_argument("--big", action="store_true", help="also the 10000x10000 case")
    parser.add_argument("--big-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_only:
        big(args.big_only)
        return
    torch.manual_seed(0)
    model = SegmentationModel("fusion", DinoVisionTransformer(ARCHS["vit_small"])).eval()
    image = read_image(sorted((DATA / "test" / "original").iterdir())[0])
    h, w = image.shape[:2]
    patches = math.ceil(h / PATCH_SIZE) * math.ceil(w / PATCH_SIZE)
    floor_tiles = torch.cat([to_tensor(image[:224, :224])] * math.ceil(patches / 256))
    with torch.no_grad():
        t_ref = timed(lambda: predict_logits(model, image, REFERENCE), args.runs)
        t_ours = timed(lambda: predict_logits(model, image, DEFAULT), args.runs)
        t_floor = timed(lambda: [model.backbone(floor_tiles[i:i + 8])
                                 for i in range(0, len(floor_tiles), 8)], args.runs)
    print(f"image {w}x{h}, ViT-S + fusion head, {torch.get_num_threads()} threads, "
          f"median of {args.runs}")
    print(f"(a) reference, 224 tiles at 75% overlap, Gaussian blend: {t_ref:.2f} s")
    print(f"(b) bloomseg default, stitched features:                 {t_ours:.2f} s")
    print(f"(c) floor, backbone over {patches} patches ({len(floor_tiles)} tiles):      {t_floor:.2f} s")
    if args.model:
        seg = {name: Segmenter.load(args.model, weights=args.weights, diameter="model",
                                     **vars(opts))
               for name, opts in (("a", REFERENCE), ("b", DEFAULT))}
        counts = {name: PixelCounts() for name in seg}
        for sample in scan_split(DATA, "test").samples:
            test_image, mask = load_sample(sample)
            for name, s in seg.items():
                counts[name] = counts[name] + PixelCounts.of(s.predict(test_image).mask, mask)
        print(f"test Dice of {args.model}: (a) {counts['a'].dice:.4f}, (b) {counts['b'].dice:.4f}, "
              f"difference {counts['b'].dice - counts['a'].dice:+.4f}")
    if args.big:
        subprocess.run([sys.executable, __file__, "--big-only", "10000"], check=True)
    print(f"speedup_vs_reference: {t_ref / t_ours:.1f}")
    print(f"over_floor: {t_ours / t_floor:.2f}")


if __name__ == "__main__":
    main()

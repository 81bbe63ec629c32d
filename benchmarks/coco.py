"""What ``--coco`` costs on a whole-slide-size image, block-wise.

    python benchmarks/coco.py --size 8000 --repeats 2

Writes a synthetic smear (cells the size of the real smears' red cells) as a tiled TIFF
and segments it block by block with a stand-in segmenter (dark blobs are cells, so the
time is the output machinery's, not a model's), with cells and without and with the COCO
file, each run in its own process. Reports per setting the median seconds of the image's
outputs and of the run's end (summary, COCO file, report), and the peak resident memory
(VmHWM); the COCO cost is the difference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bloomseg.data.synthetic import write_slide

RUN = """
import re, time
from pathlib import Path
import numpy as np
from scipy import ndimage
from bloomseg.inference.segmenter import Prediction, Scale
from bloomseg.outputs.options import OutputOptions
from bloomseg.outputs.run import finish_run, segment_image

class Components:
    name = "dark blobs"
    diameter = "model"
    def scale_of(self, image, diameter=None):
        return Scale(None, "model")
    def levels_of(self, image):
        return None
    def predict(self, image, instances=False, edges=None, diameter=None, origin=(0, 0),
                levels=None):
        mask = image.mean(axis=2) < 200
        labels = ndimage.label(mask)[0].astype(np.int32) if instances else None
        return Prediction(mask.astype(np.float32), mask, 0.0, None, labels)

options = OutputOptions(cells=True, coco={coco}, large=True)
out = Path({out!r})
start = time.perf_counter()
row = segment_image(Components(), Path({image!r}), out, options)
middle = time.perf_counter()
finish_run(out, [row], options, "dark blobs")
end = time.perf_counter()
assert row["status"] == "ok", row
peak = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(row["cells"], middle - start, end - middle, int(peak) // 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8000, help="side of the square image, px")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "slide.tif"
        write_slide(image_path, args.size)
        results: dict[bool, list[list[float]]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for coco in (False, True):  # side by side, alternating
                out = Path(tmp) / f"out-{coco}-{repeat}"
                code = RUN.format(coco=coco, out=str(out), image=str(image_path))
                done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                      text=True, check=True)
                results[coco].append([float(v) for v in done.stdout.split()])
        print(f"{args.size}x{args.size}, {int(results[True][0][0])} cells, medians of "
              f"{args.repeats} runs each")
        print("| | image outputs, s | run's end, s | peak RSS, MiB |")
        print("| --- | --- | --- | --- |")
        for coco in (False, True):
            rows = results[coco]
            print(f"| cells{' + COCO' if coco else ''} | "
                  f"{statistics.median(r[1] for r in rows):.1f} | "
                  f"{statistics.median(r[2] for r in rows):.2f} | "
                  f"{statistics.median(r[3] for r in rows):.0f} |")


if __name__ == "__main__":
    main()

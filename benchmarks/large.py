"""A whole-slide-size image: block-wise against in memory, with the shipped model.

    python benchmarks/large.py --size 8000

Writes a synthetic smear (cells the size of the real smears' red cells) as a tiled TIFF,
segments it with cells once block-wise and once whole in memory, each in its own process,
and reports seconds, peak resident memory (VmHWM) and how well the two label images
agree (cells matched one-to-one at IoU >= 0.5, and their mean IoU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bloomseg.cells.matching import match_masks
from bloomseg.data.images import read_labels
from bloomseg.data.synthetic import write_slide

RUN = """
import re, sys
from pathlib import Path
from bloomseg.outputs.run import OutputOptions, segment_image
from bloomseg.inference.segmenter import Segmenter
row = segment_image(Segmenter.load({model!r}, diameter="model"), Path({image!r}), Path({out!r}),
                    OutputOptions(cells=True, large={large}, block={block}))
assert row["status"] == "ok", row
peak = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(row["cells"], int(peak) // 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8000, help="side of the square image, px")
    parser.add_argument("--model", default="default")
    parser.add_argument("--block", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "slide.tif"
        write_slide(image_path, args.size)
        results = {}
        for large in (True, False):
            out = Path(tmp) / ("blocks" if large else "memory")
            code = RUN.format(model=args.model, image=str(image_path), out=str(out),
                              large=large, block=args.block)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr)
            cells, peak = (int(v) for v in done.stdout.split())
            results[large] = (cells, peak, time.perf_counter() - start, read_labels(out / "slide_labels.tif"))
        blocks, memory = results[True], results[False]
        match = match_masks(blocks[3], memory[3])
    print(f"{args.size}x{args.size} synthetic smear, model {args.model}, block {args.block} px")
    print(f"{'':<10} {'cells':>6} {'peak RSS MiB':>13} {'seconds':>8}")
    for name, (cells, peak, seconds, _) in (("block-wise", blocks), ("in memory", memory)):
        print(f"{name:<10} {cells:>6} {peak:>13} {seconds:>8.1f}")
    print(f"cells matched one-to-one at IoU >= 0.5: {match.tp} of {memory[0]} "
          f"(mean IoU {match.sum_iou / max(match.tp, 1):.4f}; {match.fp} and {match.fn} unmatched)")


if __name__ == "__main__":
    main()

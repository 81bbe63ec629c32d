"""Batch throughput on the real test smears: in this process, and on local Dask clusters
of 1 and 2 worker processes, side by side in one run.

    python benchmarks/cluster.py --repeats 3

Each configuration segments the same images (with cells) into a fresh folder. Workers
are started and have loaded the model before the clock starts (startup is reported on
its own), so the figures compare steady throughput. Medians over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from train_baseline import DATA

from bloomseg.data.images import expand_inputs
from bloomseg.inference.options import SegmenterSpec
from bloomseg.outputs.cluster import connect, segment_files_on_cluster
from bloomseg.outputs.run import OutputOptions, segment_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = expand_inputs([str(Path(args.data) / "test" / "original")])
    spec, options = SegmenterSpec(args.model), OutputOptions(cells=True)
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        segmenter = spec.load()
        for r in range(args.repeats):
            start = time.perf_counter()
            segment_files(segmenter, paths, Path(tmp) / f"in{r}", options, progress=False)
            seconds.setdefault("in process", []).append(time.perf_counter() - start)
        for workers in (1, 2):
            start = time.perf_counter()
            with connect(workers) as client:
                # start-up: workers up and each holding the model
                segment_files_on_cluster(client, spec, paths[:workers], Path(tmp) / f"w{workers}",
                                         options, progress=False)
                print(f"{workers} worker(s): started and loaded in {time.perf_counter() - start:.1f} s")
                for r in range(args.repeats):
                    start = time.perf_counter()
                    rows = segment_files_on_cluster(client, spec, paths, Path(tmp) / f"w{workers}_{r}",
                                                    options, progress=False)
                    assert all(row["status"] == "ok" for row in rows)
                    seconds.setdefault(f"{workers} worker(s)", []).append(time.perf_counter() - start)
    base = statistics.median(seconds["in process"])
    print(f"{len(paths)} images of 1600x1200, with cells; median of {args.repeats} runs")
    print(f"{'':<12} {'seconds':>8} {'images/s':>9} {'vs in process':>14}")
    for name, runs in seconds.items():
        s = statistics.median(runs)
        print(f"{name:<12} {s:>8.1f} {len(paths) / s:>9.3f} {base / s:>13.2f}x")


if __name__ == "__main__":
    main()

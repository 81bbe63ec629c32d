"""The main job's throughput: the README's command against the network's own cost.

    python benchmarks/throughput.py [--data ../shared/data] [--smears 10] [--runs 3]
                                    [--workers 1 --workers 2] [--out out/throughput.csv]
    python benchmarks/throughput.py --memory 10 --memory 200
    python benchmarks/throughput.py --compare OLD_OUT NEW_OUT
    python benchmarks/throughput.py --baseline OLD_CHECKOUT   # before and after, side by side

On BBBC041's 10 held-out 1600x1200 smears, side by side in one run, medians of
``--runs``:

- **end to end**: ``bloomseg predict default DIR -o OUT --cells`` in a fresh process on
  all N smears and on 1; seconds per smear = (T(N) - T(1)) / (N - 1), so the process
  start and the model load are not counted; T(1) is the **cold start** (import, load,
  one smear). With ``--workers``, each number of workers is timed the same way.
- **the floor**: the segmentation network's forward pass at the model's cell size (each
  smear resampled as ``predict`` does, then the network alone), per smear, in this
  process; the ratio of the two.
- **per stage**: the same command's work in this process, one image after the other
  (nothing overlapping, so each stage's share is its own), each stage's seconds and CPU
  seconds (every thread: the network's own) per smear: reading, the size, the network,
  the cells, the classes, the verdict, and each output file.
- with ``--baseline OLD``: the same command from another checkout's ``src`` (an earlier
  bloomseg: ``git worktree add OLD COMMIT``), timed in turn with this one in every run,
  so that a change's gain is read on the same machine at the same moment.

Printed as tables and written as CSV. ``--memory N`` instead runs the command on N
smears (the 10 in turn, each under its own name) and prints its peak resident memory
(``/usr/bin/time``), for each N given: a long run's memory must stay flat.
``--compare`` checks that two output folders of the same smears (one written by an
earlier bloomseg: ``PYTHONPATH=OLD/src python -m bloomseg predict ...``) differ only in
time: label TIFFs, masks' and overlays' pixels and cell tables the same, the GeoJSON
outlines within 1 px, summary.csv the same but for ``seconds``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STAGES = {
    "read": ("bloomseg.data.images", "read_image"),
    "size": ("bloomseg.inference.segmenter", "Segmenter.scale_of"),
    "size: classical estimate": ("bloomseg.cells.size", "estimate_diameter"),
    "size: network readings": ("bloomseg.inference.scale", "read_size"),
    "network": ("bloomseg.inference.segmenter", "Segmenter.logits"),
    "cells": ("bloomseg.inference.segmenter", "separate"),
    "classes": ("bloomseg.inference.segmenter", "Segmenter._name_cells"),
    "classes: classifier": ("bloomseg.inference.segmenter", "classify"),
    "verdict": ("bloomseg.outputs.run", "judge"),
    "measure": ("bloomseg.cells.measure", "measure_cells"),
    "labels file": ("bloomseg.cells.formats", "save_labels"),
    "cell table": ("bloomseg.outputs.run", "save_cell_table"),
    "geojson": ("bloomseg.cells.formats", "geojson_features"),
    "overlay": ("bloomseg.figures", "label_overlay"),
    "gallery": ("bloomseg.figures", "cell_gallery"),
    "png files": ("bloomseg.files", "save_png"),
    "run's end": ("bloomseg.outputs.run", "finish_run"),
}
"""Each stage timed: the module and the name in it (``Class.method``) of its function,
where the code that runs it looks it up (``a: b`` is part of stage ``a``)."""


def command(smears: list[Path], out: Path, workers: int, source: Path | None = None) -> float:
    """Seconds of the README's command on ``smears`` in a fresh process (of the bloomseg in
    ``source``, a checkout's ``src``, where given)."""
    folder = out / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for s in smears:
        (folder / s.name).symlink_to(s.resolve())
    extra = ["--workers", str(workers)] if workers > 1 else []
    env = os.environ | ({"PYTHONPATH": str(source)} if source else {})
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bloomseg", "predict", "default", str(folder), "-o",
                    str(out / "out"), "--cells", "-q", "--overwrite", *extra], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def peak_memory(smears: list[Path], count: int, out: Path) -> int:
    """Peak resident KiB of the README's command on ``count`` smears (``smears`` in turn)."""
    folder = out / f"memory-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(count):
        s = smears[i % len(smears)]
        copy = folder / f"{i:04d}-{s.name}"
        # not a symbolic link: a file reached twice through links is read once
        try:
            os.link(s.resolve(), copy)
        except OSError:  # another file system
            shutil.copyfile(s, copy)
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "bloomseg",
                           "predict", "default", str(folder), "-o", str(out / f"out-{count}"),
                           "--cells", "-q", "--overwrite"], check=True, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return int(done.stderr.strip().splitlines()[-1])


def _to_chain(point, chain) -> float:
    import numpy as np

    a, d = chain[:-1], np.diff(chain, axis=0)
    t = np.clip(((point - a) * d).sum(axis=1) / np.maximum((d * d).sum(axis=1), 1e-12), 0, 1)
    return float(np.hypot(*(point - a - t[:, None] * d).T).min())


def compare(old: Path, new: Path) -> bool:
    """Print how two output folders of the same smears differ; True where only in time."""
    import json

    import numpy as np

    from bloomseg.data.images import read_image, read_labels

    same = True
    for labels in sorted(old.glob("*_labels.tif")):
        stem = labels.name.removesuffix("_labels.tif")
        checks = {"labels": np.array_equal(read_labels(labels), read_labels(new / labels.name)),
                  "cells.csv": (old / f"{stem}_cells.csv").read_bytes()
                  == (new / f"{stem}_cells.csv").read_bytes()}
        for kind in ("mask", "overlay"):
            checks[kind] = np.array_equal(read_image(old / f"{stem}_{kind}.png"),
                                          read_image(new / f"{stem}_{kind}.png"))
        a, b = (json.loads((f / f"{stem}.geojson").read_text())["features"] for f in (old, new))
        worst = 0.0
        for fa, fb in zip(a, b):
            checks["geojson properties"] = checks.get("geojson properties", True) and \
                fa["properties"] == fb["properties"]
            for ra, rb in zip(fa["geometry"]["coordinates"], fb["geometry"]["coordinates"]):
                ra, rb = np.array(ra), np.array(rb)
                worst = max(worst, *(_to_chain(p, rb) for p in ra), *(_to_chain(p, ra) for p in rb))
        checks["geojson within 1 px"] = len(a) == len(b) and worst <= 1.0
        same &= all(checks.values())
        print(f"{stem}: " + ", ".join(f"{k} {'same' if v else 'DIFFERENT'}" for k, v in checks.items())
              + f" (outlines at most {worst:.2f} px apart)")
    rows = [list(csv.DictReader(open(f / "summary.csv", encoding="utf-8"))) for f in (old, new)]
    differ = sorted({k for ra, rb in zip(*rows) for k in ra if ra[k] != rb.get(k)} - {"seconds"})
    print(f"summary.csv: {'the same but for seconds' if not differ else f'DIFFERENT in {differ}'}")
    return same and not differ


def floor(smears: list[Path]) -> list[float]:
    """The network's forward pass per smear at the model's cell size, as predict runs it."""
    from bloomseg.data.images import read_image
    from bloomseg.data.resampling import grid_factor, resample
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.inputs import normalise

    segmenter = Segmenter.load("default")
    times = []
    for s in smears:
        image = read_image(s)
        seen = normalise(image, segmenter.normalise, None)
        scale = segmenter.scale_of(image, None, seen)
        factor = grid_factor(segmenter.cell_diameter / scale.diameter)
        scaled = seen if factor == 1 else resample(seen, factor)
        start = time.perf_counter()
        segmenter.logits(scaled)
        times.append(time.perf_counter() - start)
    return times


def stages(smears: list[Path], out: Path) -> dict[str, tuple[float, float]]:
    """Seconds per smear in each stage of the README's command, run one image after the
    other in this process (``segment_image``, nothing overlapping): (wall, CPU of every
    thread of the process: the network's threads included)."""
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.outputs.options import OutputOptions
    from bloomseg.outputs.run import segment_image

    spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    undo = []
    for stage, (module, path) in STAGES.items():
        holder = importlib.import_module(module)
        *owners, name = path.split(".")
        for owner in owners:
            holder = getattr(holder, owner)
        original = getattr(holder, name)

        def timed(*args, _original=original, _stage=stage, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_stage][0] += time.perf_counter() - wall
                spent[_stage][1] += time.process_time() - cpu

        setattr(holder, name, functools.wraps(original)(timed))
        undo.append((holder, name, original))
    try:
        segmenter = Segmenter.load("default")
        wall, cpu = time.perf_counter(), time.process_time()
        for smear in smears:
            segment_image(segmenter, smear, out / "stages", OutputOptions(cells=True))
        spent["total"] = [time.perf_counter() - wall, time.process_time() - cpu]
    finally:
        for holder, name, original in undo:
            setattr(holder, name, original)
    return {k: (w / len(smears), c / len(smears)) for k, (w, c) in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--smears", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, action="append", help="(default: 1)")
    parser.add_argument("--memory", type=int, action="append", metavar="N",
                        help="the peak memory of a run of N smears instead (repeatable)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                        help="check that two output folders differ only in time")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also time an earlier bloomseg's checkout, in turn with this one")
    parser.add_argument("--out", default="out/throughput.csv", type=Path)
    args = parser.parse_args()
    if args.compare:
        sys.exit(0 if compare(*args.compare) else 1)
    folder = args.data / "bbbc041seg" / "test" / "original"
    if not folder.is_dir():
        sys.exit(f"{folder}: the shared data is not there")
    smears = sorted(folder.iterdir())[:args.smears]
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            print("| smears | peak resident memory |\n| --- | --- |")
            for count in args.memory:
                print(f"| {count} | {peak_memory(smears, count, Path(tmp)) / 1024:.0f} MiB |",
                      flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_worker = defaultdict(list)
        cold, net, before, before_cold = [], [], [], []
        base = args.baseline.resolve() / "src" if args.baseline else None
        for run in range(args.runs):  # side by side: each run times every way once
            for workers in args.workers or [1]:
                many = command(smears, tmp / f"w{workers}", workers)
                one = command(smears[:1], tmp / f"w{workers}-1", workers)
                per_worker[workers].append((many - one) / (len(smears) - 1))
                if workers == 1:
                    cold.append(one)
            if base:
                many = command(smears, tmp / "before", 1, base)
                before_cold.append(command(smears[:1], tmp / "before-1", 1, base))
                before.append((many - before_cold[-1]) / (len(smears) - 1))
            net.append(statistics.median(floor(smears)))
            print(f"run {run + 1}: " + ", ".join(f"{w} worker(s) {v[-1]:.2f} s/smear"
                                                 for w, v in per_worker.items())
                  + (f", before {before[-1]:.2f} s/smear (cold {before_cold[-1]:.2f} s)"
                     if base else "")
                  + f", network {net[-1]:.2f} s, cold start {cold[-1]:.2f} s", flush=True)
        parts = stages(smears, tmp)
    network = statistics.median(net)
    print("\n| workers | seconds per smear | x the network's forward |\n| --- | --- | --- |")
    for workers, values in per_worker.items():
        v = statistics.median(values)
        print(f"| {workers} | {v:.2f} | {v / network:.2f} |")
        rows.append({"what": f"end to end, {workers} worker(s)", "seconds": round(v, 3),
                     "ratio": round(v / network, 3)})
    if base:
        v = statistics.median(before)
        print(f"| before ({args.baseline}) | {v:.2f} | {v / network:.2f} |")
        rows.append({"what": "end to end before, 1 worker", "seconds": round(v, 3),
                     "ratio": round(v / network, 3)})
    print(f"\nthe network's forward pass at the model's cell size: {network:.3f} s per smear; "
          f"cold start (import, load, one smear): {statistics.median(cold):.2f} s"
          + (f" (before: {statistics.median(before_cold):.2f} s)" if base else ""))
    rows += [{"what": "network forward", "seconds": round(network, 3), "ratio": 1.0},
             {"what": "cold start", "seconds": round(statistics.median(cold), 3), "ratio": ""}]
    if base:
        rows.append({"what": "cold start before", "seconds": round(statistics.median(before_cold), 3),
                     "ratio": ""})
    print("\n| stage (one image after the other) | seconds per smear | CPU seconds (all threads) |"
          "\n| --- | --- | --- |")
    for stage, (wall, cpu) in sorted(parts.items(), key=lambda kv: -kv[1][1]):
        print(f"| {stage} | {wall:.3f} | {cpu:.3f} |")
        rows.append({"what": f"stage: {stage}", "seconds": round(wall, 3), "ratio": "",
                     "cpu": round(cpu, 3)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, ["what", "seconds", "ratio", "cpu"])
        w.writeheader()
        w.writerows(rows)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

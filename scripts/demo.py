"""`make demo`: the main job end to end with the shipped default model, offline.

Segments the ../shared/data test smears cell by cell (`bloomseg predict default ...
--instances`) and ends with the path of report.html. Where the real smears are not
found it says so and runs on a small synthetic smear dataset instead, labelled synthetic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bloomseg.cli import main as bloomseg
from bloomseg.tools.doctor import find_data

OUT = Path(__file__).resolve().parents[1] / "out"


def run() -> int:
    data = find_data()
    if data is None:
        print("Real smears not found (../shared/data/bbbc041seg, or set $BLOOMSEG_DATA).\n"
              "Running on SYNTHETIC smears instead: drawn disks, not real cells.\n")
        data, out = OUT / "demo-synthetic-data", OUT / "demo-synthetic"
        bloomseg(["synthetic", "-o", str(data), "--train", "0", "--test", "2", "--overwrite"])
    else:
        out = OUT / "demo"
    argv = ["predict", "default", str(data / "test" / "original"), "-o", str(out),
            "--instances", "--overwrite"]
    print(f"$ bloomseg {' '.join(argv)}")
    code = bloomseg(argv)
    print(f"\nOpen the report: {(out / 'report.html').resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(run())

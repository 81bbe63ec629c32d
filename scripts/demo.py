"""`make demo`: the main job end to end on real smears, offline.

Extracts DinoBloom-S patch features of ../shared/data test smears and writes PCA pictures.
Needs the DinoBloom-S weights in the cache (`bloomseg weights download dinobloom-s`, or
copy DinoBloom-S.pth there by hand); says exactly what to do where they are missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bloomseg.cli import main as bloomseg
from bloomseg.weights import cached_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bbbc041seg" / "test" / "original"
OUT = ROOT / "out" / "demo"


def run() -> int:
    print("$ bloomseg weights list")
    bloomseg(["weights", "list"])
    weights = cached_path("dinobloom-s")
    if not weights.is_file():
        print(f"\nDinoBloom-S weights are not at {weights}.\n"
              "Get them with `bloomseg weights download dinobloom-s` (internet needed), or download\n"
              "https://zenodo.org/records/10908163/files/DinoBloom-S.pth elsewhere and copy it\n"
              "there; then run `make demo` again.")
        return 1
    if not DATA.is_dir():
        print(f"\nNo real smears at {DATA}; pass your own: bloomseg features IMAGE... -o OUT")
        return 1
    images = sorted(DATA.iterdir())[:2]
    argv = ["features", *map(str, images), "-o", str(OUT), "--overwrite"]
    print(f"\n$ bloomseg {' '.join(argv)}")
    code = bloomseg(argv)
    print(f"\nPCA pictures: {OUT}/*_pca.png")
    return code


if __name__ == "__main__":
    sys.exit(run())

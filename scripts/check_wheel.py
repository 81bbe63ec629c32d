"""`make wheel`: build the wheel and check it as a user would meet it.

1. ``pip wheel`` builds ``dist/bloomseg-<version>-py3-none-any.whl``;
2. it must carry the default model (segmenter, classifier, their settings and card), the
   napari manifest and its entry point, at the version ``bloomseg.__version__`` gives;
3. a fresh virtual environment installs torch (the CPU build, pinned) and then the wheel,
   and ``bloomseg predict default`` segments a synthetic smear there, cells and classes.

Exits non-zero, saying what is wrong, at the first failure.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the Makefile's pin: pip never resolves a CUDA build
PACKAGED = "bloomseg/model/packaged/default/"
NEEDED = [PACKAGED + name for name in ("model.safetensors", "config.json", "classifier.safetensors",
                                       "classifier.json", "MODEL_CARD.md")] + ["bloomseg/viewer/napari.yaml"]


def run(*argv: str, cwd: Path | None = None) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=cwd)


def build(dist: Path) -> Path:
    for old in dist.glob("bloomseg-*.whl"):
        old.unlink()
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT))
    (wheel,) = dist.glob("bloomseg-*.whl")
    return wheel


def check_contents(wheel: Path, version: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        missing = [n for n in NEEDED if n not in names]
        if missing:
            sys.exit(f"{wheel.name}: missing {', '.join(missing)}")
        points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        if "napari.manifest" not in z.read(points).decode():
            sys.exit(f"{wheel.name}: no napari.manifest entry point")
    if f"bloomseg-{version}-" not in wheel.name:
        sys.exit(f"{wheel.name}: not version {version}")
    print(f"{wheel.name}: {len(names)} files, the default model, classifier and napari manifest in it")


def check_install(wheel: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        python = str(env / "bin" / "python")
        run(python, "-m", "pip", "install", "--quiet", TORCH)
        run(python, "-m", "pip", "install", "--quiet", str(wheel))
        bloomseg = str(env / "bin" / "bloomseg")
        run(bloomseg, "synthetic", "-o", f"{tmp}/data", "--train", "0", "--test", "1")
        run(bloomseg, "predict", "default", f"{tmp}/data/test/original", "-o", f"{tmp}/out",
            "--cells", "-q", cwd=Path(tmp))  # not from the clone: the wheel's own files
        with open(Path(tmp) / "out" / "summary.csv", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
        if len(rows) != 1 or not int(rows[0]["cells"] or 0):
            sys.exit(f"the installed wheel's predict wrote {rows}")
        print(f"installed in a fresh environment: predict found {rows[0]['cells']} cells")


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from bloomseg import __version__

    wheel = build(ROOT / "dist")
    check_contents(wheel, __version__)
    check_install(wheel)


if __name__ == "__main__":
    main()

"""What this installation has: versions, threads, caches, weights, models and data.

Answers the first questions of any bug report, and tells a new user what is missing.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

DATA_NAME = "bbbc041seg"


def find_data() -> Path | None:
    """The real smears in the layout of ../shared/data, if found.

    Looked for in ``$BLOOMSEG_DATA``, then ``shared/data/bbbc041seg`` and
    ``../shared/data/bbbc041seg`` from the working folder, then beside the source tree of
    an editable install.
    """
    candidates = [Path(os.environ["BLOOMSEG_DATA"])] if os.environ.get("BLOOMSEG_DATA") else []
    here = Path.cwd()
    source_root = Path(__file__).resolve().parents[3]  # repo root of an editable install
    candidates += [here / "shared" / "data" / DATA_NAME, here.parent / "shared" / "data" / DATA_NAME,
                   source_root.parent / "shared" / "data" / DATA_NAME]
    for path in candidates:
        if (path / "test" / "original").is_dir():
            return path
    return None


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def findings() -> list[tuple[str, str]]:
    """(item, finding) rows describing this installation."""
    import torch

    from bloomseg import __version__
    from bloomseg.backbone.registry import REGISTRY, cached_path, home
    from bloomseg.model.files import EXPORT_FILES, PACKAGED

    rows = [("bloomseg", f"{__version__} ({Path(__file__).resolve().parents[1]})"),
            ("python", f"{platform.python_version()} ({platform.platform()})")]
    rows += [(name, _version(name)) for name in
             ("torch", "numpy", "scipy", "scikit-image", "pillow", "tifffile", "safetensors",
              "matplotlib", "dask", "distributed")]
    rows.append(("torch threads", f"{torch.get_num_threads()} of {os.cpu_count()} CPUs"
                 + (", CUDA available" if torch.cuda.is_available() else ", CPU only")))
    rows.append(("cache folder", f"{home()} ($BLOOMSEG_HOME)"))
    for entry in REGISTRY.values():
        path = cached_path(entry.name)
        rows.append((f"weights {entry.name}", f"present: {path}" if path.is_file()
                     else f"missing (bloomseg weights download {entry.name})"))
    shipped = sorted(p for p in PACKAGED.iterdir() if p.is_dir()) if PACKAGED.is_dir() else []
    for folder in shipped:
        ok = all((folder / n).is_file() for n in EXPORT_FILES)
        rows.append((f"model {folder.name}", f"present: {folder}" if ok else f"incomplete: {folder}"))
    if not shipped:
        rows.append(("models", f"none shipped in {PACKAGED}"))
    data = find_data()
    rows.append(("real data", f"found: {data}" if data else
                 f"not found (../shared/data/{DATA_NAME}; or set $BLOOMSEG_DATA)"))
    return rows

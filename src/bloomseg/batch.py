"""Segmenting many image files: outputs per image and a summary, one bad file never
stopping the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.errors import BloomsegError
from bloomseg.figures import overlay
from bloomseg.io import atomic_output, read_image, save_csv, save_png
from bloomseg.predict import Segmenter

SUMMARY_COLUMNS = ("image", "width", "height", "cell_fraction", "seconds", "status")


def output_paths(out_dir: Path, stem: str, save_prob: bool) -> list[Path]:
    """The files ``segment_files`` writes for one image."""
    paths = [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"]
    return paths + [out_dir / f"{stem}_prob.tif"] if save_prob else paths


def segment_files(segmenter: Segmenter, paths: list[Path], out_dir: str | Path,
                  save_prob: bool = False, overwrite: bool = False,
                  progress: bool = True) -> list[dict]:
    """Segment image files; write ``<stem>_mask.png`` (0/255, the image's size),
    ``<stem>_overlay.png``, optionally ``<stem>_prob.tif`` (float32), and summary.csv.

    Returns:
        One summary row per input; ``status`` is ``ok``, ``skipped: ...`` (outputs
        exist) or ``failed: ...`` (the reason, naming the file).
    """
    from PIL import Image
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rows = []
    for path in tqdm(paths, desc="segmenting", unit="image", disable=not progress):
        row = dict.fromkeys(SUMMARY_COLUMNS, "") | {"image": str(path)}
        rows.append(row)
        outputs = output_paths(out_dir, path.stem, save_prob)
        if not overwrite and any(p.exists() for p in outputs):
            row["status"] = "skipped: outputs exist (use --overwrite)"
            continue
        try:
            image = read_image(path)
        except BloomsegError as e:
            row["status"] = f"failed: {e}"
            if progress:
                tqdm.write(f"skipped {e}")
            continue
        result = segmenter.predict(image)
        save_png(outputs[0], result.mask.astype(np.uint8) * 255)
        save_png(outputs[1], overlay(image, result.mask))
        if save_prob:
            with atomic_output(outputs[2]) as f:
                Image.fromarray(result.probability.astype(np.float32), mode="F").save(f, format="TIFF")
        row.update(width=image.shape[1], height=image.shape[0],
                   cell_fraction=f"{result.mask.mean():.6f}", seconds=f"{result.seconds:.3f}",
                   status="ok")
    save_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    return rows

"""Reading images into RGB uint8 and writing output files atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import numpy as np

from bloomseg.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _to_uint8(array: np.ndarray, peak: float | None = None) -> np.ndarray:
    """Scale an integer or float image to uint8 without clipping its data.

    ``peak`` is the whole image's largest value where ``array`` is only part of it, so
    every part is scaled alike (default: ``array``'s own)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        peak = int(array.max(initial=0)) if peak is None else peak
        # Cameras write 10-16 bit data into 16-bit containers: scale by the container
        # depth that holds the data, so a 12-bit image is not crushed into the dark end.
        depth = next((d for d in (8, 10, 12, 14, 16, 32) if peak < 2**d), 32)
        return (array.astype(np.float64) * (255.0 / (2**depth - 1))).round().astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64))
    if (array.max(initial=0.0) if peak is None else peak) <= 1.0:
        array = array * 255.0
    return np.clip(array, 0, 255).round().astype(np.uint8)


def to_rgb(array: np.ndarray, name: str | Path, peak: float | None = None) -> np.ndarray:
    """(H, W), (H, W, 1-4) pixel data -> (H, W, 3) uint8: grey repeated, alpha dropped,
    values scaled by :func:`_to_uint8`.

    Raises:
        ImageError: naming ``name``, for any other shape.
    """
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and array.shape[2] in (2, 4):  # drop alpha
        array = array[..., :-1]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ImageError(f"{name}: unsupported image shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(_to_uint8(array, peak))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8, honouring EXIF orientation.

    Greyscale is repeated to three channels, alpha dropped, palette and CMYK converted,
    16-bit and float data scaled to 0-255.

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        ImageError: naming the file: missing, unreadable, or not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            array = np.array(img)  # a writable copy, detached from PIL
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file bloomseg can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels to decode safely ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: truncated or corrupt image ({e})") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: the image has no pixels ({array.shape[1]}x{array.shape[0]})")
    return to_rgb(array, path)


_UMASK = os.umask(0o022)  # reading the umask means setting it: once, at import
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name; on success
    it is flushed to disk and renamed over ``path``.

    A crash or an exception leaves either the old file or no file, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for sharing
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` on success
    (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def save_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_output(path, "w") as f:
        json.dump(data, f, indent=1)


def save_csv(path: str | Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Write rows (dicts holding at least ``columns``) as CSV with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path, "w") as f:
        f.write(buffer.getvalue())


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    from PIL import Image

    with atomic_output(path) as f:
        Image.fromarray(array).save(f, format="PNG")

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

from bloomseg.errors import ImageError, OutputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 200_000_000
"""Images with more pixels than this (about 14000x14000) are refused unless the limit is
raised (``--max-pixels``): a small file can claim a huge size, and decoding it would
take the machine's memory (a decompression bomb)."""


def check_pixels(path: str | Path, height: int, width: int, max_pixels: int | None) -> None:
    """Refuse an image larger than ``max_pixels`` (None: no limit).

    Raises:
        ImageError: naming the file, its size and the ``--max-pixels`` option.
    """
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(
            f"{path}: refused, {width}x{height} is {height * width / 1e6:,.0f} Mpx, more than "
            f"the {max_pixels / 1e6:,.0f} Mpx that --max-pixels allows (a guard against "
            f"decompression bombs); if the image is genuine, pass --max-pixels "
            f"{height * width} or more")


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check off while a file is opened: opening reads only the
    header, and :func:`check_pixels` then refuses with a message that names the option
    (PIL's limit is not the user's)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def header_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of a PNG, JPEG, TIFF or BMP file from its header, without decoding it."""
    from PIL import Image

    with _own_pixel_limit(), Image.open(path) as img:
        return img.size[1], img.size[0]


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
        scaled = array.astype(np.float64) * (255.0 / (2**depth - 1))
        return np.clip(scaled, 0, 255).round().astype(np.uint8)  # negatives: black
    array = np.nan_to_num(array.astype(np.float64))
    with np.errstate(over="ignore"):  # huge values only saturate
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


def check_file(path: Path) -> None:
    """Raise ImageError naming ``path`` unless it is a file that exists."""
    if not path.is_file():
        kind = "a symbolic link that leads nowhere (broken or a loop)" if path.is_symlink() \
            else "no such image file"
        raise ImageError(f"{path}: {kind}")


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8, honouring EXIF orientation.

    Greyscale is repeated to three channels, alpha dropped, palette and CMYK converted,
    16-bit and float data scaled to 0-255.

    Args:
        path: the file.
        max_pixels: refuse larger images from their header, before decoding (None: no
            limit).

    Returns:
        (H, W, 3) uint8 array.

    Raises:
        ImageError: naming the file: missing, unreadable, not an image, or too large.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    check_file(path)
    try:
        with _own_pixel_limit(), Image.open(path) as img:
            check_pixels(path, img.size[1], img.size[0], max_pixels)
            img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            array = np.array(img)  # a writable copy, detached from PIL
    except UnidentifiedImageError:
        array = _read_tiff(path, max_pixels)
        if array is None:
            raise ImageError(f"{path}: {_unreadable(path)}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        array = _read_tiff(path, max_pixels)
        if array is None:
            raise ImageError(f"{path}: truncated or corrupt image ({e})") from None
    if array.ndim >= 2 and 0 in array.shape[:2]:
        raise ImageError(f"{path}: the image has no pixels ({array.shape[1]}x{array.shape[0]})")
    return to_rgb(array, path)


def _read_tiff(path: Path, max_pixels: int | None) -> np.ndarray | None:
    """A TIFF that PIL cannot decode (signed, float or 16-bit colour samples, ...) read
    with tifffile: its first image, or None where that fails too or it is no TIFF."""
    import tifffile

    with open(path, "rb") as f:
        if f.read(4) not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            check_pixels(path, page.imagelength, page.imagewidth, max_pixels)
            if page.photometric not in (1, 2) or page.planarconfig not in (1, 2):
                return None  # colour models tifffile does not convert: no guessing
            array = page.asarray()
    except ImageError:
        raise
    except Exception:  # tifffile raises many types for damaged files
        return None
    if array.ndim not in (2, 3):
        return None
    if page.planarconfig == 2 and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    return array


def _unreadable(path: Path) -> str:
    """Why PIL could not identify a file, as far as its first bytes tell."""
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            return f"the image has no pixels ({width}x{height})"
    return (f"not an image file bloomseg can read ({', '.join(s[1:].upper() for s in IMAGE_SUFFIXES)}); "
            f"it starts with {head[:16]!r}")


_UMASK = os.umask(0o022)  # reading the umask means setting it: once, at import
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name; on success
    it is flushed to disk and renamed over ``path``.

    A crash or an exception leaves either the old file or no file, never a torn one.

    Raises:
        OutputError: naming ``path``, where the disk is full or the folder not writable.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot be written ({e.strerror or e})") from None
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
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot be written ({e.strerror or e}); nothing was left "
                          "half written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` on success
    (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def printable(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name shown as ``\\xff`` escapes, so
    it can be written as UTF-8 (Python keeps such bytes as lone surrogates)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def remove_stale_temporaries(out_dir: str | Path, names: Iterable[str]) -> None:
    """Remove temporary files and block folders that a killed process left for these
    output names (a finished write renames its temporary file away)."""
    import glob
    import shutil

    out_dir = Path(out_dir)
    for name in names:
        for stale in out_dir.glob(f".{glob.escape(name)}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            elif stale.suffix == ".tmp":
                stale.unlink(missing_ok=True)


def save_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_output(path, "w") as f:
        json.dump(data, f, indent=1)


def save_csv(path: str | Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Write rows (dicts holding at least ``columns``) as CSV with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
                     for row in rows)
    with atomic_output(path, "w", encoding="utf-8") as f:
        f.write(buffer.getvalue())


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    from PIL import Image

    with atomic_output(path) as f:
        Image.fromarray(array).save(f, format="PNG")

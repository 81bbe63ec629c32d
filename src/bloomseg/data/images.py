"""Reading images: files of any common format into RGB uint8, large TIFF and zarr images
region by region, label images, and the inputs a command is given."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bloomseg.errors import ImageError
from bloomseg.grids import blocks

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
            try:
                array = page.asarray()
            except ValueError:
                array = _unpack_bits(tif, page)
                if array is None:
                    raise
    except ImageError:
        raise
    except Exception:  # tifffile raises many types for damaged files
        return None
    if array.ndim not in (2, 3):
        return None
    if page.planarconfig == 2 and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    return array


def _unpack_bits(tif, page) -> np.ndarray | None:
    """An uncompressed, interleaved 1-bit image that tifffile cannot unpack (it fails on
    rows of several samples that do not fill whole bytes): each row is padded to a byte.
    None for any other kind of page."""
    if page.bitspersample != 1 or page.compression != 1 or page.planarconfig != 1:
        return None
    h, w, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    row_bytes = -(-w * samples // 8)
    fh, parts = tif.filehandle, []
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        fh.seek(offset)
        parts.append(fh.read(count))
    data = b"".join(parts)
    rows = np.frombuffer(data, np.uint8)[:h * row_bytes].reshape(h, row_bytes)
    bits = np.unpackbits(rows, axis=1)[:, :w * samples].astype(bool)
    return bits.reshape(h, w, samples) if samples > 1 else bits.reshape(h, w)


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


def read_labels(path: str | Path) -> np.ndarray:
    """A label image from a TIFF or PNG as int64 (H, W), without rescaling values.

    Raises:
        ImageError: unreadable, or not a single-channel integer image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                data = np.asarray(img)
    except Exception as e:  # tifffile and PIL raise many types for bad files
        raise ImageError(f"{path}: not a readable label image ({type(e).__name__}: {e})") from None
    data = np.squeeze(data)
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
        raise ImageError(f"{path}: a label image must be one integer channel, got "
                         f"{data.shape} {data.dtype}")
    return data.astype(np.int64)


TILE = 256
"""Side of the tiles large images are read and written in."""


def _open_tiff(path: Path):
    """(lazy array, planar) of a TIFF's first series, full resolution."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes
    if axes not in ("YX", "YXS", "SYX"):
        raise ImageError(f"{path}: a TIFF of axes {axes} is not one 2D image (YX, YXS or SYX)")
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    return zarr.open(store, mode="r"), axes == "SYX", store


class ArrayImage:
    """An image array read region by region as RGB uint8, as :class:`LazyImage` reads a
    file: a numpy array, or a lazy one (dask, zarr) of (H, W), (H, W, C) or, with
    ``planar``, (C, H, W). Integer and float images are scaled by the whole image's peak.

    Args:
        array: the pixels.
        name: what errors call the image (a layer's name, a file).
        planar: channels first.

    Attributes:
        path: ``name`` as a path (for messages).
        shape: (H, W).
    """

    def __init__(self, array, name: str | Path = "image", planar: bool = False) -> None:
        self.path = Path(name)
        self._array, self._planar, self._peak = array, planar, None
        shape = array.shape
        problem = f"unsupported image shape {shape}" if len(shape) not in (2, 3) else None
        if problem is None:
            self.shape = (int(shape[1]), int(shape[2])) if planar else (int(shape[0]), int(shape[1]))
            if 0 in self.shape:
                problem = f"the image has no pixels ({self.shape[1]}x{self.shape[0]})"
        if problem:
            self.close()
            raise ImageError(f"{self.path}: {problem}")

    def _raw(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if self._planar:
            return np.moveaxis(np.asarray(self._array[:, r0:r1, c0:c1]), 0, -1)
        return np.asarray(self._array[r0:r1, c0:c1])

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, columns c0:c1 as (h, w, 3) uint8 RGB."""
        try:
            if self._peak is None and np.dtype(self._array.dtype) not in (np.uint8, bool):
                # every region must be scaled alike: by the whole image's peak, found
                # once with one more pass over the image
                self._peak = max(float(np.nanmax(self._raw(*box), initial=0))
                                 for box in blocks(*self.shape, 4 * TILE))
            raw = self._raw(r0, r1, c0, c1)
        except Exception as e:
            raise ImageError(f"{self.path}: rows {r0}-{r1}, columns {c0}-{c1} cannot be read "
                             f"({type(e).__name__}: {e})") from None
        return to_rgb(raw, self.path, self._peak)

    def close(self) -> None:
        """Release what the image holds open (nothing for an array)."""

    def __enter__(self) -> ArrayImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LazyImage(ArrayImage):
    """An image file read region by region: TIFF (through tifffile's zarr store) and zarr
    arrays lazily, other formats decoded once. Use it as a context manager.

    Args:
        path: the file.
        max_pixels: refuse larger images (None: no limit); see :func:`read_image`.

    Attributes:
        path: the file.
        shape: (H, W).

    Raises:
        ImageError: naming the file: missing, unreadable, not one 2D image, or too large.
    """

    def __init__(self, path: str | Path, max_pixels: int | None = MAX_PIXELS) -> None:
        path, planar, self._store = Path(path), False, None
        suffix = path.suffix.lower()
        if not path.exists():
            raise ImageError(f"{path}: no such image file")
        try:
            if suffix in (".tif", ".tiff"):
                array, planar, self._store = _open_tiff(path)
            elif suffix == ".zarr":
                import zarr

                array = zarr.open_array(path, mode="r")
            else:
                array = read_image(path, max_pixels)
        except ImageError:
            raise
        except Exception as e:  # tifffile and zarr raise many types for bad files
            raise ImageError(f"{path}: not an image bloomseg can read "
                             f"({type(e).__name__}: {e})") from None
        super().__init__(array, path, planar)
        try:
            check_pixels(self.path, *self.shape, max_pixels)
        except ImageError:
            self.close()
            raise

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def image_pixels(path: str | Path) -> int:
    """H * W of an image from its header, without decoding it (0 where unknown)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".zarr"):
            with LazyImage(path, max_pixels=None) as image:
                return image.shape[0] * image.shape[1]
        height, width = header_shape(path)
        return height * width
    except Exception:  # the full read that follows reports what is wrong
        return 0


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order.

    A zarr array folder (``*.zarr``) is an image. Folders are not searched below their
    top level, so links that loop cannot trap the search. A path that does not exist is
    kept, so the caller reports it like any bad input.
    """
    def is_image(p: Path) -> bool:
        # a broken or looping link with an image's name is kept, to be reported
        return ((p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_SUFFIXES) or \
            (p.is_dir() and p.suffix.lower() == ".zarr")

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_image(path):
            found += sorted(p for p in path.iterdir() if is_image(p))
        elif not path.exists() and glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file() or is_image(Path(p)))
        else:
            found.append(path)
    # one file reached twice (through links, or a folder given twice) is read once
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())

"""On-disk caches for training: decoded images and frozen-backbone features.

A frozen backbone gives the same features for the same input every epoch, so they are
computed once and read back memory-mapped. Entries are named by content, never by file
name or date:

    ROOT/images/<image key>.rgb.npy, .mask.npy        decoded image and mask (uint8, bool;
                                                      no mask file for boxes only),
                                                      scaled: <image key>-x<factor>
    ROOT/features/<identity>/identity.json            what produced the features
    ROOT/features/<identity>/<image key>/<view>_k<k>.npy   (layers, D, h, w) float16

``identity`` hashes the backbone's tensors, the layers read and the colour-jitter
settings, so another backbone or weights file lands in another folder and never reads
stale features; a view's name carries its position and size (``t224_0_197``).

Every file is written atomically and ends with a BLAKE2b checksum of its contents, checked
before the file is first used: a file damaged after it was written (a bad disk, a copy
cut short) is a cache miss, recomputed and replaced, never data.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from bloomseg.data.dataset import Sample, load_sample
from bloomseg.data.images import MAX_PIXELS, check_file, read_image
from bloomseg.files import atomic_output, sha256sum

FORMAT_VERSION = 2  # 2: checksums
DIGEST_SIZE = 16


def content_key(sample: Sample) -> str:
    """A short hash of an image file's and its mask file's bytes.

    Raises:
        ImageError: naming a file that is missing or a link that leads nowhere.
    """
    # the labels stand for the mask where there is none (a mask file keeps its old key)
    cells = sample.mask if sample.mask is not None else sample.labels
    for path in (sample.image, cells):
        if path is not None:
            check_file(path)
    parts = [sha256sum(sample.image), sha256sum(cells) if cells else "-"]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:20]


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


def save_checked(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy followed by its checksum, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    with atomic_output(path) as f:
        f.write(data + _digest(data))


def load_checked(path: Path, mmap: bool = False) -> np.ndarray | None:
    """An array written by :func:`save_checked`, or None where the file is missing or
    its checksum does not match (memory-mapped with ``mmap``: NumPy ignores the
    checksum after the data)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body = data[:-DIGEST_SIZE]
    if len(data) <= DIGEST_SIZE or _digest(body) != data[-DIGEST_SIZE:]:
        return None
    try:
        return np.load(path, mmap_mode="r") if mmap else np.load(io.BytesIO(body))
    except (OSError, ValueError):
        return None


class ImageStore:
    """Decoded images and masks as memory-mapped .npy files, decoded once per content.

    Random crops then read a few rows of a file instead of decoding a whole PNG.
    """

    def __init__(self, root: str | Path, max_pixels: int | None = MAX_PIXELS) -> None:
        self.root, self.max_pixels = Path(root), max_pixels
        self._checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(self, sample: Sample, key: str | None = None, factor: float = 1.0
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W, 3) uint8 image and (H, W) bool mask (None: the sample has boxes only)
        of a sample, read-only memmaps, scaled by ``factor`` (both to the same size; see
        :func:`scaled_key`).

        Raises:
            ImageError, DataError: the image or mask cannot be read or differ in size.
        """
        key = scaled_key(key or content_key(sample), factor)
        if key not in self._checked:  # checksums read once per process
            rgb_path, mask_path = self.root / f"{key}.rgb.npy", self.root / f"{key}.mask.npy"
            masked = sample.masked
            rgb = load_checked(rgb_path, mmap=True)
            mask = load_checked(mask_path, mmap=True) if masked else None
            if rgb is None or (masked and mask is None):
                if masked:
                    image, truth = load_sample(sample, self.max_pixels)
                else:
                    image, truth = read_image(sample.image, self.max_pixels), None
                if factor != 1:
                    from bloomseg.data.resampling import resample

                    image = resample(image, factor)
                    if masked:
                        truth = resample(truth.astype(np.uint8) * 255, factor) > 127
                save_checked(rgb_path, image)
                rgb = load_checked(rgb_path, mmap=True)
                if masked:
                    save_checked(mask_path, truth)
                    mask = load_checked(mask_path, mmap=True)
            self._checked[key] = (rgb, mask)
        return self._checked[key]


def scaled_key(key: str, factor: float) -> str:
    """The content key of an image scaled by ``factor`` (itself at 1): what its cached
    pixels and features are stored under."""
    return key if factor == 1 else f"{key}-x{factor:.5f}"


class FeatureCache:
    """Backbone features per (image, view, flip/rotation variant), float16 on disk.

    Args:
        root: the features folder (``ROOT/features``).
        identity: JSON-able description of everything that determines the features.
    """

    def __init__(self, root: str | Path, identity: dict) -> None:
        identity = {"format": FORMAT_VERSION, **identity}
        text = json.dumps(identity, sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]
        marker = self.folder / "identity.json"
        if not marker.is_file():
            with atomic_output(marker, "w") as f:
                f.write(json.dumps(identity, sort_keys=True, indent=1))

    def _path(self, image_key: str, view: str, k: int) -> Path:
        return self.folder / image_key / f"{view}_k{k}.npy"

    def get(self, image_key: str, view: str, k: int) -> np.ndarray | None:
        """The (layers, D, h, w) float16 features stored for this item, or None."""
        return load_checked(self._path(image_key, view, k))  # None: absent or damaged

    def put(self, image_key: str, view: str, k: int, features: np.ndarray) -> None:
        """Store (layers, D, h, w) features as float16 (atomically)."""
        save_checked(self._path(image_key, view, k), features.astype(np.float16))

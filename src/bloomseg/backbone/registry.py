"""The weights registry, the local cache, and the one command that uses the network.

Nothing in bloomseg downloads at run time: :func:`download` runs only when a person
asks for it (``bloomseg weights download NAME``). Everything else reads the cache
(``$BLOOMSEG_HOME/weights``, default ``~/.cache/bloomseg/weights``) or a given path.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bloomseg.errors import DownloadError, WeightsError
from bloomseg.files import sha256sum

_ZENODO = "https://zenodo.org/records/10908163/files"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable backbone.

    Attributes:
        name: registry name used on the command line (``dinobloom-s``).
        arch: :data:`bloomseg.backbone.vit.ARCHS` key the file must hold.
        url: where the file is published (https).
        filename: name of the file in the cache.
        sha256: published checksum, or None where none is published (then the download
            prints the checksum it computed so the user can compare it by hand).
        grid: side of the file's position-embedding grid (16 = 224 px, 37 = 518 px).
    """

    name: str
    arch: str
    url: str
    filename: str
    sha256: str | None
    grid: int = 16


REGISTRY: dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in [
        # DinoBloom-S sha256: the value KatherLab's STAMP verifies before loading this file.
        # Zenodo publishes md5 sums only; no sha256 is published for B/L/G or DINOv2.
        WeightsEntry("dinobloom-s", "vit_small", f"{_ZENODO}/DinoBloom-S.pth", "DinoBloom-S.pth",
                     "c2f7990b003e89bcece80e379fb8fe0ba2ec392ce19b286e8a294abd99568e44"),
        WeightsEntry("dinobloom-b", "vit_base", f"{_ZENODO}/DinoBloom-B.pth", "DinoBloom-B.pth", None),
        WeightsEntry("dinobloom-l", "vit_large", f"{_ZENODO}/DinoBloom-L.pth", "DinoBloom-L.pth", None),
        WeightsEntry("dinobloom-g", "vit_giant2", f"{_ZENODO}/DinoBloom-G.pth", "DinoBloom-G.pth", None),
    ] + [
        WeightsEntry(f"dinov2-{size}", arch, f"{_DINOV2}/dinov2_vit{size}14/dinov2_vit{size}14_pretrain.pth",
                     f"dinov2_vit{size}14_pretrain.pth", None, grid=37)
        for size, arch in [("s", "vit_small"), ("b", "vit_base"), ("l", "vit_large"), ("g", "vit_giant2")]
    ]
}
"""Backbones by name. DinoBloom weights: Zenodo record 10908163."""

_CHUNK = 1 << 20
_TIMEOUT_S = 10.0


def home() -> Path:
    """bloomseg's cache folder: ``$BLOOMSEG_HOME`` or ``~/.cache/bloomseg``."""
    return Path(os.environ.get("BLOOMSEG_HOME") or Path.home() / ".cache" / "bloomseg")


def get_entry(name: str) -> WeightsEntry:
    """Registry entry by name.

    Raises:
        WeightsError: unknown name (the message lists the known ones).
    """
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise WeightsError(f"unknown backbone {name!r}; known: {', '.join(REGISTRY)}") from None


def cached_path(name: str) -> Path:
    """Where the weights of ``name`` live in the cache (whether or not they are there)."""
    return home() / "weights" / get_entry(name).filename


def _check_url(url: str) -> None:
    """Only https, or plain http to this machine (a local mirror or a test server)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise DownloadError(f"refusing to download from {url!r}: only https URLs are allowed")


def download(name: str, dest_dir: str | Path | None = None, *, url: str | None = None,
             sha256: str | None = None, progress: bool = True,
             timeout: float = _TIMEOUT_S) -> Path:
    """Download registry weights into the cache, resumably and atomically.

    The file grows as ``<file>.part`` (a later call resumes it with an HTTP Range
    request), is checked against the published sha256, fsynced, and only then renamed
    to its final name. A checksum mismatch deletes the partial file.

    Args:
        name: registry name (``dinobloom-s`` ...).
        dest_dir: folder for the file; default the cache's ``weights`` folder.
        url: override the registry URL (a local mirror; https or loopback http only).
        sha256: override the expected checksum (default: the registry's).
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server to connect or send data.

    Returns:
        Path of the complete file.

    Raises:
        DownloadError: unreachable, interrupted (partial file kept for resume), or a
            checksum mismatch (nothing kept). The message says where to put the file by hand.
    """
    entry = get_entry(name)
    url = url or entry.url
    expected = (sha256 or entry.sha256 or "").lower() or None
    _check_url(url)
    dest = Path(dest_dir) if dest_dir is not None else home() / "weights"
    final = dest / entry.filename
    if final.is_file() and (expected is None or sha256sum(final) == expected):
        return final
    dest.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    by_hand = (f"Download {entry.url} on a machine with internet access and copy it to "
               f"{final}, or pass --weights PATH to any command.")

    _fetch(url, part, progress=progress, timeout=timeout, by_hand=by_hand)
    actual = sha256sum(part)
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: checksum mismatch (sha256 {actual}, expected {expected}); the file was "
            f"deleted. {by_hand}"
        )
    if expected is None:
        print(f"note: no sha256 is published for {name}; the downloaded file has sha256 {actual}")
    os.replace(part, final)
    return final


def _fetch(url: str, part: Path, *, progress: bool, timeout: float, by_hand: str) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its current size."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bloomseg"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is complete
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}. {by_hand}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason}). {by_hand}") from None
    with response:
        if have and response.status != 206:  # server ignored Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        received = 0
        with open(part, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
            desc=part.name.removesuffix(".part"),
        ) as bar:
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise DownloadError(
                    f"{url}: interrupted after {have + received} bytes ({e}); run the same "
                    f"command again to resume. {by_hand}"
                ) from None
            finally:
                out.flush()
                os.fsync(out.fileno())
        if length is not None and received != int(length):
            raise DownloadError(
                f"{url}: interrupted after {have + received} of {total} bytes; run the same "
                f"command again to resume. {by_hand}"
            )

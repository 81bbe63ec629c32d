"""The weights download against a real HTTP server on 127.0.0.1, and the registry."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bloomseg.backbone.registry import REGISTRY, cached_path, download, get_entry, home
from bloomseg.errors import DownloadError, WeightsError
from bloomseg.files import sha256sum

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size
GOOD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = get_entry("dinobloom-s").filename


class _Server:
    """Serves PAYLOAD with Range support; ``cut_at`` drops the connection mid-body."""

    def __init__(self) -> None:
        self.cut_at: int | None = None
        self.body = PAYLOAD
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                body = server.body[start:]
                if start >= len(server.body) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_at is not None:
                    body = body[: server.cut_at]
                    server.cut_at = None  # only the first response is cut
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/DinoBloom-S.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


def test_complete_download(server, bloomseg_home):
    path = download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False)
    assert path == home() / "weights" / FILENAME == cached_path("dinobloom-s")
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == [FILENAME]  # no .part left
    # A second call finds the verified file and does not touch the network.
    assert download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False) == path
    assert len(server.ranges) == 1


def test_resume_after_a_cut(server, bloomseg_home):
    server.cut_at = 300_000
    with pytest.raises(DownloadError, match="interrupted after 300000 .*run the same command again"):
        download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False)
    part = home() / "weights" / (FILENAME + ".part")
    assert part.stat().st_size == 300_000
    assert not (home() / "weights" / FILENAME).exists()  # nothing usable before it is verified

    path = download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False)
    assert server.ranges == [None, "bytes=300000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_checksum_mismatch_leaves_nothing(server, bloomseg_home):
    server.body = PAYLOAD[:-1] + b"X"
    with pytest.raises(DownloadError, match=f"checksum mismatch .*expected {GOOD_SHA}"):
        download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False)
    assert list((home() / "weights").iterdir()) == []


def test_registry_checksum_is_enforced(server, bloomseg_home):
    """Without an override the registry's published sha256 is the one checked."""
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download("dinobloom-s", url=server.url, progress=False)
    assert list((home() / "weights").iterdir()) == []


def test_no_network_fails_fast_and_says_what_to_do(bloomseg_home):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download("dinobloom-s", url=f"http://127.0.0.1:{port}/x.pth", progress=False)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "cannot connect" in message
    assert str(home() / "weights" / FILENAME) in message and "--weights" in message
    assert REGISTRY["dinobloom-s"].url in message


def test_unresolvable_host_fails_fast(bloomseg_home):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot connect"):
        download("dinobloom-s", url="https://weights.invalid/DinoBloom-S.pth", progress=False)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("url", ["http://example.org/w.pth", "ftp://127.0.0.1/w.pth",
                                 "file:///etc/passwd"])
def test_only_https_or_loopback(url, bloomseg_home):
    with pytest.raises(DownloadError, match="only https"):
        download("dinobloom-s", url=url, progress=False)
    assert not (home() / "weights").exists()


def test_registry():
    names = list(REGISTRY)
    assert names[:4] == ["dinobloom-s", "dinobloom-b", "dinobloom-l", "dinobloom-g"]
    for entry in REGISTRY.values():
        assert entry.url.startswith("https://")
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert all(REGISTRY[n].url.startswith("https://zenodo.org/records/10908163/") for n in names[:4])
    assert get_entry("DinoBloom-S") is REGISTRY["dinobloom-s"]
    with pytest.raises(WeightsError, match="unknown backbone 'vit-h'.*dinobloom-s"):
        get_entry("vit-h")


def test_home_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("BLOOMSEG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home() == tmp_path / ".cache" / "bloomseg"


def test_sha256sum(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert sha256sum(tmp_path / "f") == GOOD_SHA


def test_part_file_already_complete_is_verified_and_kept(server, bloomseg_home):
    """A crash between the last byte and the rename: the next run asks for the rest (416)."""
    weights = home() / "weights"
    weights.mkdir(parents=True)
    (weights / (FILENAME + ".part")).write_bytes(PAYLOAD)
    path = download("dinobloom-s", url=server.url, sha256=GOOD_SHA, progress=False)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert path.read_bytes() == PAYLOAD

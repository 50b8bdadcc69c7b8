"""The download rule's code against a local HTTP server: redirects, a cut transfer, resume."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from varprune.data.archive import ArchiveError
from varprune.data.download import DownloadError, download_archive, use_local_archive


class ArchiveServer(BaseHTTPRequestHandler):
    """Serves one payload with HTTP Range support; /cut.zip breaks its first transfer halfway."""

    payload = b""
    cut_remaining = 0  # transfers of /cut.zip still to break
    ranges: list[str | None] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).ranges.append(self.headers.get("Range"))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/cut.zip")
            self.end_headers()
            return
        if self.path == "/page.html":
            body = b"<html>please log in</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path not in ("/archive.zip", "/cut.zip"):
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut.zip" and type(self).cut_remaining > 0:
            type(self).cut_remaining -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tiny_archive):
    ArchiveServer.payload = tiny_archive.read_bytes()
    ArchiveServer.cut_remaining = 1
    ArchiveServer.ranges = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_cut_transfer_is_resumed_with_a_range_request(server, tiny_archive, tmp_path):
    out = tmp_path / "raw" / "3Dircadb1.zip"
    patients = download_archive(f"{server}/redirect", out, retries=2, backoff_s=0)
    assert out.read_bytes() == tiny_archive.read_bytes()
    assert patients == [1, 2, 3]
    resumed = [r for r in ArchiveServer.ranges if r is not None]
    assert resumed and all(int(r[6:-1]) > 0 for r in resumed)  # continued (via the redirect)
    assert not (out.parent / "3Dircadb1.zip.part").exists()


def test_a_failed_run_leaves_a_partial_file_that_the_next_run_resumes(server, tiny_archive, tmp_path):
    out = tmp_path / "3Dircadb1.zip"
    with pytest.raises(DownloadError, match="rerun to resume"):
        download_archive(f"{server}/cut.zip", out, retries=0, backoff_s=0)
    part = tmp_path / "3Dircadb1.zip.part"
    have = part.stat().st_size
    assert not out.exists() and 0 < have < len(ArchiveServer.payload)
    download_archive(f"{server}/cut.zip", out, retries=0, backoff_s=0)  # a new run
    assert out.read_bytes() == tiny_archive.read_bytes()
    assert ArchiveServer.ranges[-1] == f"bytes={have}-"


def test_a_download_that_is_not_the_archive_is_refused_and_removed(server, tmp_path):
    out = tmp_path / "3Dircadb1.zip"
    with pytest.raises(DownloadError, match="not usable.*not a readable zip"):
        download_archive(f"{server}/page.html", out, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_are_not_retried_and_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing: HTTP 404"):
        download_archive(f"{server}/missing", tmp_path / "a.zip", retries=3, backoff_s=0)
    assert ArchiveServer.ranges == [None]


def test_local_archive_is_validated_and_linked(tiny_archive, tmp_path):
    out = tmp_path / "raw" / "3Dircadb1.zip"
    assert use_local_archive(tiny_archive, out) == [1, 2, 3]
    assert out.read_bytes() == tiny_archive.read_bytes()
    with pytest.raises(ArchiveError, match="does not exist"):
        use_local_archive(tmp_path / "nope.zip", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()

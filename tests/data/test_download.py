"""Tests for imr_outcome.data.download against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imr_outcome.data.download import download
from imr_outcome.errors import DownloadError, InvalidInputError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 1024


@dataclass
class ServerState:
    """What the handler serves, and what it saw."""

    payload: bytes = PAYLOAD
    honor_range: bool = True
    status: int | None = None  # force this status with an empty body
    range_shift: int = 0  # serve a 206 starting this many bytes away from the request
    cuts: list[int] = field(default_factory=list)  # per request: body bytes before cutting
    ranges: list[str | None] = field(default_factory=list)  # Range header of each request


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        state = self.state
        requested = self.headers.get("Range")
        state.ranges.append(requested)
        size = len(state.payload)
        if state.status is not None:
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        if state.honor_range and match is not None:
            start = int(match.group(1)) + state.range_shift
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = state.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cuts:
            self.wfile.write(body[: state.cuts.pop(0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    """A loopback HTTP server on a free port; yields (file URL, its state)."""
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/imr.csv", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_full_download_writes_file_and_sidecar(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "sub" / "imr.csv"
    seen: list[tuple[int, int | None]] = []

    result = download(url, dest, chunk_size=CHUNK, progress=lambda d, t: seen.append((d, t)))

    assert dest.read_bytes() == PAYLOAD
    assert (result.path, result.sha256, result.bytes, result.resumed) == (
        dest,
        PAYLOAD_SHA256,
        len(PAYLOAD),
        False,
    )
    assert (tmp_path / "sub" / "imr.csv.sha256").read_text() == f"{PAYLOAD_SHA256}  imr.csv\n"
    assert not (tmp_path / "sub" / "imr.csv.part").exists()
    assert state.ranges == [None]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == list(range(CHUNK, len(PAYLOAD) + 1, CHUNK))


def test_matching_checksum_is_accepted_in_any_case(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, _ = server
    result = download(url, tmp_path / "imr.csv", sha256=PAYLOAD_SHA256.upper())
    assert result.sha256 == PAYLOAD_SHA256


def test_interrupted_download_keeps_part_and_resumes(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    dest = tmp_path / "imr.csv"
    part = tmp_path / "imr.csv.part"
    state.cuts = [10_000, 10_000]  # the first two responses stop after 10,000 body bytes

    with pytest.raises(DownloadError) as first:
        download(url, dest, chunk_size=CHUNK)
    # Only whole chunks reach the disk: 9 x 1024 of the 10,000 bytes received.
    assert part.read_bytes() == PAYLOAD[:9216]
    assert str(first.value).startswith(f"could not download {url}: RemoteProtocolError: ")
    assert str(first.value).endswith(
        f"; 9216 bytes are kept in {part}; check the network connection (or proxy) "
        "and run again to resume"
    )

    with pytest.raises(DownloadError):
        download(url, dest, chunk_size=CHUNK)
    assert part.read_bytes() == PAYLOAD[:18432]  # the .part grew

    result = download(url, dest, chunk_size=CHUNK)

    assert state.ranges == [None, "bytes=9216-", "bytes=18432-"]
    assert result.resumed is True
    assert (result.sha256, result.bytes) == (PAYLOAD_SHA256, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    state.honor_range = False
    (tmp_path / "imr.csv.part").write_bytes(b"stale bytes from another file")

    result = download(url, tmp_path / "imr.csv", sha256=PAYLOAD_SHA256)

    assert state.ranges == ["bytes=29-"]
    assert result.resumed is False
    assert (tmp_path / "imr.csv").read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_verified_and_kept(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    (tmp_path / "imr.csv.part").write_bytes(PAYLOAD)

    result = download(url, tmp_path / "imr.csv", sha256=PAYLOAD_SHA256)

    assert state.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert (result.resumed, result.bytes) == (True, len(PAYLOAD))
    assert (tmp_path / "imr.csv").read_bytes() == PAYLOAD


def test_oversized_part_answered_416_restarts_from_zero(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, state = server
    (tmp_path / "imr.csv.part").write_bytes(PAYLOAD + b"extra")

    result = download(url, tmp_path / "imr.csv")

    assert state.ranges == [f"bytes={len(PAYLOAD) + 5}-", None]
    assert result.resumed is False
    assert (tmp_path / "imr.csv").read_bytes() == PAYLOAD


def test_206_for_another_range_is_an_error(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.range_shift = -100
    part = tmp_path / "imr.csv.part"
    part.write_bytes(PAYLOAD[:1000])

    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path / "imr.csv")

    assert str(excinfo.value) == (
        f"{url} answered a request for bytes 1000- with Content-Range "
        f"'bytes 900-{len(PAYLOAD) - 1}/{len(PAYLOAD)}'; delete {part} and download again"
    )
    assert part.read_bytes() == PAYLOAD[:1000]


def test_checksum_mismatch_raises_and_leaves_no_file(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    url, _ = server
    dest = tmp_path / "imr.csv"
    wrong = "ab" * 32

    with pytest.raises(DownloadError) as excinfo:
        download(url, dest, sha256=wrong)

    assert str(excinfo.value) == (
        f"checksum mismatch for {url}: expected sha256 {wrong}, got {PAYLOAD_SHA256}; the "
        "download was deleted. If the publisher updated the file, pass the new digest "
        "(or sha256=None)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_http_error_status_raises(server: tuple[str, ServerState], tmp_path: Path) -> None:
    url, state = server
    state.status = 404

    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path / "imr.csv")

    assert str(excinfo.value) == (
        f"GET {url} returned HTTP 404; check that the URL is current "
        "(the publisher may have moved the file)"
    )
    assert not (tmp_path / "imr.csv").exists()


def test_connection_refused_raises_with_hint(tmp_path: Path) -> None:
    with socket.socket() as sock:  # reserve a free port, then close it: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/imr.csv"

    with pytest.raises(DownloadError) as excinfo:
        download(url, tmp_path / "imr.csv")

    message = str(excinfo.value)
    assert message.startswith(f"could not download {url}: ConnectError: ")
    assert message.endswith(
        f"; 0 bytes are kept in {tmp_path / 'imr.csv.part'}; check the network connection "
        "(or proxy) and run again to resume"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sha256": "abc"}, "sha256: expected 64 hex digits, got 'abc'"),
        ({"chunk_size": 0}, "chunk_size: expected a positive byte count, got 0"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        download("http://127.0.0.1:9/never-contacted", tmp_path / "x.csv", **kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


def test_cli_download_dmhc_reports_errors_then_saves_and_verifies(
    server: tuple[str, ServerState], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from imr_outcome.cli import app

    url, state = server
    dest = tmp_path / "dmhc.csv"
    args = ["data", "download", "dmhc", "--url", url, "--out", str(dest)]
    state.cuts = [CHUNK * 2]

    cut = CliRunner().invoke(app, args)
    assert cut.exit_code == 2 and "error:" in cut.output

    wrong = CliRunner().invoke(app, [*args, "--sha256", "0" * 64])
    assert wrong.exit_code == 2 and "checksum mismatch" in wrong.output
    assert not dest.exists()

    right = CliRunner().invoke(app, [*args, "--sha256", PAYLOAD_SHA256])
    assert right.exit_code == 0, right.output
    assert dest.read_bytes() == PAYLOAD
    assert (tmp_path / "dmhc.csv.sha256").read_text() == f"{PAYLOAD_SHA256}  dmhc.csv\n"

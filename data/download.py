"""Resumable, checksummed HTTP downloads of source data files.

A download streams into ``<dest>.part``; an interrupted one is resumed from the bytes
already there with an HTTP ``Range`` request. Only a complete file whose SHA-256 matches
(when one is given) is renamed to ``dest``, next to a ``<dest>.sha256`` sidecar in
``sha256sum`` format, so a later step can fingerprint the exact bytes it read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from imr_outcome.errors import DownloadError, InvalidInputError

logger = logging.getLogger(__name__)

#: The DMHC "Independent Medical Review (IMR) Determinations, Trend" export (current
#: portal schema, with Findings), from the CHHS Open Data Portal dataset
#: ``independent-medical-review-imr-determinations-trend`` (data.chhs.ca.gov). The file
#: changes whenever DMHC publishes new determinations, so no checksum is pinned; the
#: digest of each download is recorded in its ``.sha256`` sidecar.
DMHC_EXPORT_URL: Final[str] = (
    "https://data.chhs.ca.gov/dataset/b79b3447-4c10-4ae6-84e2-1076f83bb24e/resource/"
    "3340c5d7-4054-4d03-90e0-5f44290ed095/download/"
    "independent-medical-review-imr-determinations-trends.csv"
)

_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE: Final = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_TIMEOUT: Final = httpx.Timeout(60.0, connect=15.0)


@dataclass(frozen=True)
class DownloadResult:
    """A completed download.

    Attributes:
        path: the final file (``dest``).
        sha256: lowercase hex SHA-256 of the file, 64 characters.
        bytes: file size in bytes.
        resumed: True when bytes from an earlier interrupted download were kept.
    """

    path: Path
    sha256: str
    bytes: int
    resumed: bool


def _file_sha256(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parse ``Content-Range`` into (first byte, total size); None where unknown."""
    match = _CONTENT_RANGE_RE.fullmatch((header or "").strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (
        int(first) if first is not None else None,
        int(total) if total != "*" else None,
    )


def _stream(
    client: httpx.Client,
    url: str,
    part: Path,
    chunk_size: int,
    progress: Callable[[int, int | None], None] | None,
) -> bool:
    """Fetch ``url`` into ``part``, resuming it if present; return True if resumed.

    Returns False (after deleting ``part``) when the server says the range is
    unsatisfiable but the partial file is larger than the remote one.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:
            _, total = _content_range(response.headers.get("Content-Range"))
            if total is not None and total != offset:
                logger.warning(
                    "%s holds %d bytes but %s has %d; restarting from zero",
                    part,
                    offset,
                    url,
                    total,
                )
                part.unlink()
                return False
            logger.info("%s is already complete (%d bytes)", part, offset)
            return True
        if status == 206 and offset:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != offset:
                raise DownloadError(
                    f"{url} answered a request for bytes {offset}- with "
                    f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} "
                    "and download again"
                )
            mode, resumed = "ab", True
        elif status == 200:
            if offset:
                logger.info("%s ignored the Range request; restarting from zero", url)
            offset, mode, resumed = 0, "wb", False
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(
                f"GET {url} returned HTTP {status}; check that the URL is current "
                "(the publisher may have moved the file)"
            )
        done = offset
        with part.open(mode) as f:
            for chunk in response.iter_bytes(chunk_size):
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done != total:
        raise DownloadError(
            f"{url} ended after {done} of {total} bytes; run again to resume from {part}"
        )
    return resumed


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    chunk_size: int = 1 << 20,
    client: httpx.Client | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> DownloadResult:
    """Download ``url`` to ``dest``, resuming an interrupted download and checking SHA-256.

    Bytes stream into ``dest`` + ``".part"``. If that file exists, the request carries
    ``Range: bytes=<size>-``: a 206 answer is appended, a 200 answer (range ignored)
    restarts from zero, and a 416 answer means the partial file is already complete. The
    finished file is hashed; on success it is renamed atomically to ``dest`` and
    ``dest`` + ``".sha256"`` is written as ``"<hex>  <name>\\n"``.

    Args:
        url: the http(s) URL, e.g. :data:`DMHC_EXPORT_URL`.
        dest: the final path; its parent folder is created if missing.
        sha256: expected hex digest (64 characters, any case), or None to accept any.
        chunk_size: bytes per read and write, > 0. On an interrupted transfer up to
            ``chunk_size - 1`` received bytes are not yet written and are fetched again.
        client: an httpx client to use (not closed here); by default a new one that
            follows redirects, with a 60 s read timeout.
        progress: called after each chunk with (bytes so far, total bytes or None).

    Returns:
        The final path, its SHA-256, its size in bytes, and whether earlier bytes were kept.

    Raises:
        InvalidInputError: ``sha256`` is not 64 hex digits or ``chunk_size`` < 1.
        DownloadError: a network error or incomplete body (the ``.part`` file is kept, so
            running again resumes), an HTTP error status, or a checksum mismatch (the
            ``.part`` file is deleted; the message names the URL and both digests).
    """
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None and not _SHA256_RE.fullmatch(expected):
        raise InvalidInputError("sha256", f"expected 64 hex digits, got {sha256!r}")
    if chunk_size < 1:
        raise InvalidInputError("chunk_size", f"expected a positive byte count, got {chunk_size}")
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=_TIMEOUT)
    try:
        resumed = _stream(http, url, part, chunk_size, progress)
        if not part.exists():  # a stale, oversized .part was dropped: start over once
            resumed = _stream(http, url, part, chunk_size, progress)
    except httpx.HTTPError as exc:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(
            f"could not download {url}: {exc.__class__.__name__}: {exc}; {kept} bytes are "
            f"kept in {part}; check the network connection (or proxy) and run again to resume"
        ) from exc
    finally:
        if own_client:
            http.close()

    actual = _file_sha256(part, chunk_size)
    if expected is not None and actual != expected:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the "
            "download was deleted. If the publisher updated the file, pass the new digest "
            "(or sha256=None)"
        )
    size = part.stat().st_size
    os.replace(part, dest)
    sidecar = dest.with_name(dest.name + ".sha256")
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{actual}  {dest.name}\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    logger.info("downloaded %s to %s (%d bytes, sha256 %s)", url, dest, size, actual)
    return DownloadResult(path=dest, sha256=actual, bytes=size, resumed=resumed)

"""Tests for imr_outcome.data.dwc_download against a loopback imitation of the DWC search.

The server imitates the DWC "IMR Decision Search" (www.dir.ca.gov/dwc/imr/
IMRDecisionSearch.asp): ``GET ?caseno=`` and the paged ``POST`` form answer an HTML
results table linking case numbers to letter PDFs; the letters honour ``Range``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imr_outcome.data.dwc_download import (
    USER_AGENT,
    check_case_numbers,
    download_dwc_letters,
    parse_decision_date,
    read_case_numbers,
)
from imr_outcome.errors import DownloadError, InvalidInputError

SEARCH_PATH = "/dwc/imr/IMRDecisionSearch.asp"
LETTERS = {
    "CM16-0000001": b"%PDF-1.4 letter one " + bytes(range(256)) * 40,
    "CM16-0000002": b"%PDF-1.4 letter two " + bytes(range(256)) * 30,
    "CM17-0000003": b"%PDF-1.4 letter three " + bytes(range(256)) * 20,
    "CM17-0000004": b"<html>Temporarily unavailable</html>",  # not a PDF
}
#: The decision-date search answers these pages, in order.
PAGES = [["CM16-0000001", "CM16-0000002"], ["CM17-0000003"]]


@dataclass
class Seen:
    """What the imitation server saw and how it misbehaves."""

    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    agents: set[str] = field(default_factory=set)
    forms: list[dict[str, str]] = field(default_factory=list)
    ranges: dict[str, list[str | None]] = field(default_factory=dict)
    cut_first: set[str] = field(default_factory=set)  # letters whose first answer is cut
    search_status: int = 200


def _page(cases: list[str], more: bool) -> bytes:
    rows = "".join(
        f'<tr><td><a href="/dwc/imr/letters/{c}.pdf">{c}</a></td><td>Upheld</td></tr>'
        for c in cases
    )
    nav = '<form name="Nextpage" method="post"><input name="newpageno"></form>' if more else ""
    return (
        "<html><body><table class=tabborder><tr><th>Case Number</th><th>Outcome</th></tr>"
        f"{rows}</table><p><strong>{len(cases)}</strong> results</p>{nav}</body></html>"
    ).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Seen

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.seen.requests.append(("POST", self.path))
        self.seen.agents.add(self.headers.get("User-Agent", ""))
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode(), True))
        self.seen.forms.append(form)
        page = int(form.get("newpageno", "1"))
        self._send(200, _page(PAGES[page - 1], more=page < len(PAGES)))

    def do_GET(self) -> None:
        self.seen.requests.append(("GET", self.path))
        self.seen.agents.add(self.headers.get("User-Agent", ""))
        url = urllib.parse.urlsplit(self.path)
        if url.path == SEARCH_PATH:
            if self.seen.search_status != 200:
                self._send(self.seen.search_status, b"")
                return
            case = urllib.parse.parse_qs(url.query).get("caseno", [""])[0]
            self._send(200, _page([case] if case in LETTERS else [], more=False))
            return
        match = re.fullmatch(r"/dwc/imr/letters/(.+)\.pdf", url.path)
        if match is None or match.group(1) not in LETTERS:
            self._send(404, b"")
            return
        case, body = match.group(1), LETTERS[match.group(1)]
        requested = self.headers.get("Range")
        self.seen.ranges.setdefault(case, []).append(requested)
        start = int(requested[6:-1]) if requested else 0
        if case in self.seen.cut_first:
            self.seen.cut_first.discard(case)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:3000])
            self.wfile.flush()
            self.close_connection = True
            return
        if start:
            headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            self._send(206, body[start:], headers)
        else:
            self._send(200, body)


@pytest.fixture
def dwc() -> Iterator[tuple[str, Seen]]:
    """A loopback DWC search imitation; yields (search URL, what it saw)."""
    seen = Seen()
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{SEARCH_PATH}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _sha(case: str) -> str:
    return hashlib.sha256(LETTERS[case]).hexdigest()


def test_case_numbers_are_found_saved_checksummed_politely(
    dwc: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = dwc
    waits: list[float] = []
    done: list[tuple[str, int, int]] = []

    report = download_dwc_letters(
        tmp_path,
        case_numbers=["cm16-0000001", "CM17-0000003", "CM99-0000009"],
        search_url=url,
        delay_s=5.0,
        sleep=waits.append,
        progress=lambda case, i, n: done.append((case, i, n)),
    )

    assert report.saved == ["CM16-0000001", "CM17-0000003"]
    assert report.not_found == ["CM99-0000009"]
    assert (report.already_present, report.failed) == ([], [])
    for case in report.saved:
        assert (tmp_path / f"{case}.pdf").read_bytes() == LETTERS[case]
        assert (tmp_path / f"{case}.pdf.sha256").read_text() == f"{_sha(case)}  {case}.pdf\n"
    assert not (tmp_path / "CM99-0000009.pdf").exists()
    assert seen.agents == {USER_AGENT}
    # 3 searches + 2 letters = 5 requests, each but the first after a wait of at most 5 s
    assert len(seen.requests) == 5
    assert len(waits) == 4 and all(0 < w <= 5.0 for w in waits)
    assert done == [("CM16-0000001", 1, 3), ("CM17-0000003", 2, 3), ("CM99-0000009", 3, 3)]


def test_a_rerun_resumes_a_cut_letter_and_skips_saved_ones(
    dwc: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = dwc
    seen.cut_first = {"CM16-0000002"}
    cases = ["CM16-0000001", "CM16-0000002"]

    kwargs = {"case_numbers": cases, "search_url": url, "delay_s": 0.0, "chunk_size": 1024}

    first = download_dwc_letters(tmp_path, **kwargs)  # type: ignore[arg-type]

    assert first.saved == ["CM16-0000001"]
    assert [case for case, _ in first.failed] == ["CM16-0000002"]
    assert "run again to resume" in first.failed[0][1]
    part = tmp_path / "CM16-0000002.pdf.part"
    assert part.read_bytes() == LETTERS["CM16-0000002"][:2048]  # whole chunks of the 3000

    seen.requests.clear()
    second = download_dwc_letters(tmp_path, **kwargs)  # type: ignore[arg-type]

    assert (second.saved, second.already_present) == (["CM16-0000002"], ["CM16-0000001"])
    assert seen.ranges["CM16-0000002"] == [None, "bytes=2048-"]
    assert not part.exists()
    assert (tmp_path / "CM16-0000002.pdf").read_bytes() == LETTERS["CM16-0000002"]
    # the saved letter was neither searched nor fetched again
    assert not any("CM16-0000001" in path for _, path in seen.requests)


def test_a_changed_file_is_fetched_again(dwc: tuple[str, Seen], tmp_path: Path) -> None:
    url, _ = dwc
    download_dwc_letters(tmp_path, case_numbers=["CM16-0000001"], search_url=url, delay_s=0)
    (tmp_path / "CM16-0000001.pdf").write_bytes(b"%PDF-corrupted")

    report = download_dwc_letters(
        tmp_path, case_numbers=["CM16-0000001"], search_url=url, delay_s=0
    )

    assert report.saved == ["CM16-0000001"]
    assert (tmp_path / "CM16-0000001.pdf").read_bytes() == LETTERS["CM16-0000001"]


def test_a_date_range_follows_every_result_page(dwc: tuple[str, Seen], tmp_path: Path) -> None:
    url, seen = dwc

    report = download_dwc_letters(
        tmp_path,
        case_numbers=["CM16-0000001"],
        decided_from=dt.date(2016, 12, 1),
        decided_to=dt.date(2017, 2, 28),
        search_url=url,
        delay_s=0,
    )

    assert report.saved == ["CM16-0000001", "CM16-0000002", "CM17-0000003"]
    assert seen.forms == [
        {
            "Fname": "Case",
            "Caseno": "",
            "DecStart": "12/01/2016",
            "DecEnd": "02/28/2017",
            "Submit": "Submit",
        },
        {
            "Fname": "Case",
            "Caseno": "",
            "DecStart": "12/01/2016",
            "DecEnd": "02/28/2017",
            "Submit": "Next",
            "newpageno": "2",
        },
    ]
    # the listed case was not searched again by number
    assert [m for m, p in seen.requests if "caseno" in p] == []


def test_a_response_that_is_not_a_pdf_is_not_saved(dwc: tuple[str, Seen], tmp_path: Path) -> None:
    url, _ = dwc

    report = download_dwc_letters(
        tmp_path, case_numbers=["CM17-0000004"], search_url=url, delay_s=0
    )

    assert report.saved == []
    assert report.failed == [
        (
            "CM17-0000004",
            f"{url.rsplit('/', 1)[0]}/letters/CM17-0000004.pdf did not answer a PDF (starts "
            "with b'<html'); nothing was saved",
        )
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failing_search_is_a_download_error(dwc: tuple[str, Seen], tmp_path: Path) -> None:
    url, seen = dwc
    seen.search_status = 503

    with pytest.raises(DownloadError, match=r"returned HTTP 503; check --search-url"):
        download_dwc_letters(tmp_path, case_numbers=["CM16-0000001"], search_url=url, delay_s=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "case_numbers: give case numbers (or a file of them) or a decision-date range"),
        (
            {"decided_from": dt.date(2017, 1, 1)},
            "decided_from/decided_to: give both ends of the decision-date range, or neither",
        ),
        (
            {"decided_from": dt.date(2017, 1, 2), "decided_to": dt.date(2017, 1, 1)},
            "decided_to: 2017-01-01 is before decided_from 2017-01-02; swap them",
        ),
        (
            {"case_numbers": ["CM16-0000001"], "delay_s": -1.0},
            "delay_s: expected seconds >= 0, got -1.0",
        ),
        (
            {"case_numbers": ["16-0000001"]},
            "case_numbers: '16-0000001' is not a DWC IMR case number; expected e.g. CM16-0213037",
        ),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        download_dwc_letters(tmp_path, search_url="http://127.0.0.1:9/never", **kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


def test_case_number_lists_and_files(tmp_path: Path) -> None:
    assert check_case_numbers([" cm16-0213037 ", "", "CM16-0213037", "CM17-0001234 # note"]) == [
        "CM16-0213037",
        "CM17-0001234",
    ]
    cases = tmp_path / "cases.txt"
    cases.write_text("# from the DWC search\nCM16-0213037, CM17-0001234\ncm17-0000003\n")
    assert read_case_numbers(cases) == ["CM16-0213037", "CM17-0001234", "CM17-0000003"]
    with pytest.raises(InvalidInputError, match=r"cases_file: .* is not a file"):
        read_case_numbers(tmp_path / "missing.txt")
    assert parse_decision_date("2017-02-28", "decided_to") == dt.date(2017, 2, 28)
    with pytest.raises(InvalidInputError, match=r"decided_to: expected a date YYYY-MM-DD"):
        parse_decision_date("02/28/2017", "decided_to")


def test_cli_download_dwc_saves_letters_and_exits_1_when_some_fail(
    dwc: tuple[str, Seen], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from imr_outcome.cli import app

    url, _ = dwc
    cases = tmp_path / "cases.txt"
    cases.write_text("CM17-0000003\nCM17-0000004\n")
    out = tmp_path / "letters"
    base = ["data", "download", "dwc", "--out", str(out), "--search-url", url, "--delay", "0"]

    ok = CliRunner().invoke(app, [*base, "--case", "CM16-0000001"])
    assert ok.exit_code == 0, ok.output
    assert "1 saved" in ok.output
    assert (out / "CM16-0000001.pdf").read_bytes() == LETTERS["CM16-0000001"]

    partial = CliRunner().invoke(app, [*base, "--cases-file", str(cases)])
    assert partial.exit_code == 1, partial.output
    assert "1 saved" in partial.output and "1 failed" in partial.output

    dated = CliRunner().invoke(app, [*base, "--from", "2016-12-01", "--to", "2017-02-28"])
    assert dated.exit_code == 0, dated.output
    assert "1 saved, 2 already present" in dated.output

    bad = CliRunner().invoke(app, [*base, "--from", "12/01/2016", "--to", "2017-02-28"])
    assert bad.exit_code == 2 and "error:" in bad.output

"""Download published DWC IMR final determination letters (PDF), politely and resumably.

The California Division of Workers' Compensation (DWC) publishes every IMR final
determination letter, with identifying information removed (Cal. Labor Code
§4610.6), behind its "IMR Decision Search" page :data:`DWC_SEARCH_URL`
(www.dir.ca.gov/dwc/imr/IMRDecisionSearch.asp):

- ``GET <search>?caseno=CM16-0213037`` answers an HTML results table whose first column
  links each case number to its letter PDF;
- ``POST <search>`` with the form fields ``Fname=Case``, ``DecStart``/``DecEnd`` (decision
  dates, ``MM/DD/YYYY``) and ``Submit=Submit`` answers the first page of cases decided in
  that range; while the page holds a form named ``Nextpage``, ``newpageno=<n>`` with
  ``Submit=Next`` answers page ``n``.

(Field names as used by the public 2017 crawler ``talhaabacus/IMRCrawler``; no network
is reachable from the build machines, so the search URL is a documented, overridable
constant.)

Each letter is fetched with :func:`imr_outcome.data.download.download`, so an interrupted
file resumes from its ``.part`` and every saved PDF gets a ``.sha256`` sidecar. A letter
already saved whose sidecar matches its bytes is not fetched again, so a rerun resumes a
batch. Requests are spaced by ``delay_s`` seconds and carry :data:`USER_AGENT`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Final
from urllib.parse import urljoin

import httpx

from imr_outcome.data.download import download
from imr_outcome.errors import DownloadError, InvalidInputError

logger = logging.getLogger(__name__)

#: The DWC "IMR Decision Search" page (California Department of Industrial Relations).
DWC_SEARCH_URL: Final[str] = "https://www.dir.ca.gov/dwc/imr/IMRDecisionSearch.asp"
#: Sent with every request, so the publisher can tell who is fetching and why.
USER_AGENT: Final[str] = (
    "imr-outcome/0.1 (research download of published IMR determinations; "
    "one request at a time, rate limited)"
)
#: Default pause between two requests, in seconds.
DEFAULT_DELAY_S: Final[float] = 2.0
#: A DWC IMR case number, e.g. ``CM16-0213037``.
CASE_NUMBER_RE: Final = re.compile(r"[A-Z]{2}\d{2}-\d{5,8}")
#: Result pages followed at most for one date range (a guard against a paging loop).
MAX_PAGES: Final[int] = 2000
_PDF_MAGIC: Final = b"%PDF-"
_TIMEOUT: Final = httpx.Timeout(60.0, connect=15.0)


@dataclass
class DwcDownloadReport:
    """What one ``download_dwc_letters`` run did.

    Attributes:
        saved: case numbers whose letter was downloaded in this run.
        already_present: case numbers whose letter was on disk with a matching checksum.
        not_found: case numbers the search did not list (no published letter).
        failed: ``(case number, reason)`` for letters that could not be saved.
    """

    saved: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts, e.g. ``"2 saved, 1 already present, 0 not found, 0 failed"``."""
        return (
            f"{len(self.saved)} saved, {len(self.already_present)} already present, "
            f"{len(self.not_found)} not found, {len(self.failed)} failed"
        )


class _LetterLinks(HTMLParser):
    """Collect (case number, href) of anchors whose text is a case number, and paging."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.has_next = False
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a":
            self._href, self._text = values.get("href"), []
        elif tag == "form" and (values.get("name") or "").lower() == "nextpage":
            self.has_next = True

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            text = "".join(self._text).strip()
            if CASE_NUMBER_RE.fullmatch(text):
                self.links.append((text, self._href))
            self._href = None


def _parse_results(html_text: str, base_url: str) -> tuple[dict[str, str], bool]:
    """Map case number -> absolute letter URL from a results page; and whether more pages."""
    parser = _LetterLinks()
    parser.feed(html_text)
    links = {case: urljoin(base_url, href) for case, href in parser.links}
    return links, parser.has_next


def check_case_numbers(case_numbers: Iterable[str]) -> list[str]:
    """Strip, upper-case, de-duplicate (keeping order) and validate case numbers.

    Args:
        case_numbers: e.g. ``["cm16-0213037", " CM17-0001234 "]``; blank entries and
            ``#`` comments are ignored.

    Returns:
        The case numbers, e.g. ``["CM16-0213037", "CM17-0001234"]``.

    Raises:
        InvalidInputError: a case number is not two letters, two digits, a dash and
            5-8 digits (the message names it).
    """
    seen: dict[str, None] = {}
    for raw in case_numbers:
        value = raw.split("#", 1)[0].strip().upper()
        if not value:
            continue
        if not CASE_NUMBER_RE.fullmatch(value):
            raise InvalidInputError(
                "case_numbers",
                f"{raw.strip()!r} is not a DWC IMR case number; expected e.g. CM16-0213037",
            )
        seen.setdefault(value)
    return list(seen)


def read_case_numbers(path: Path) -> list[str]:
    """Read case numbers from a text file: one per line, or separated by commas/spaces.

    Raises:
        InvalidInputError: the file is missing, or holds an invalid case number.
    """
    if not path.is_file():
        raise InvalidInputError("cases_file", f"{path} is not a file")
    tokens = re.split(r"[\s,;]+", re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8")))
    return check_case_numbers(tokens)


def parse_decision_date(value: str, name: str) -> dt.date:
    """Parse a ``YYYY-MM-DD`` decision date.

    Raises:
        InvalidInputError: ``value`` is not an ISO date (the message names ``name``).
    """
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(name, f"expected a date YYYY-MM-DD, got {value!r}") from exc


def _verified(dest: Path) -> bool:
    """True when ``dest`` and its ``.sha256`` sidecar exist and agree."""
    sidecar = dest.with_name(dest.name + ".sha256")
    if not (dest.is_file() and sidecar.is_file()):
        return False
    recorded = sidecar.read_text(encoding="utf-8").split(maxsplit=1)[:1]
    return recorded == [hashlib.sha256(dest.read_bytes()).hexdigest()]


class _PoliteClient:
    """An httpx client that waits ``delay_s`` seconds between requests."""

    def __init__(
        self, client: httpx.Client, delay_s: float, sleep: Callable[[float], None]
    ) -> None:
        self.client = client
        self._delay_s = delay_s
        self._sleep = sleep
        self._last: float | None = None

    def wait(self) -> None:
        if self._last is not None:
            remaining = self._delay_s - (time.monotonic() - self._last)
            if remaining > 0:
                self._sleep(remaining)
        self._last = time.monotonic()

    def get(self, url: str, params: dict[str, str]) -> httpx.Response:
        self.wait()
        return self.client.get(url, params=params)

    def post(self, url: str, data: dict[str, str]) -> httpx.Response:
        self.wait()
        return self.client.post(url, data=data)


def _checked(response: httpx.Response) -> str:
    if response.status_code != 200:
        raise DownloadError(
            f"{response.request.method} {response.request.url} returned HTTP "
            f"{response.status_code}; check --search-url (the DWC may have moved the search)"
        )
    return response.text


def _search_case(http: _PoliteClient, search_url: str, case: str) -> str | None:
    """The letter URL of one case number, or None when the search does not list it."""
    text = _checked(http.get(search_url, params={"caseno": case}))
    return _parse_results(text, search_url)[0].get(case)


def search_decided(
    http: _PoliteClient, search_url: str, decided_from: dt.date, decided_to: dt.date
) -> dict[str, str]:
    """Every case decided in ``[decided_from, decided_to]``: case number -> letter URL."""
    form = {
        "Fname": "Case",
        "Caseno": "",
        "DecStart": decided_from.strftime("%m/%d/%Y"),
        "DecEnd": decided_to.strftime("%m/%d/%Y"),
        "Submit": "Submit",
    }
    letters: dict[str, str] = {}
    for page in range(1, MAX_PAGES + 1):
        if page > 1:
            form |= {"newpageno": str(page), "Submit": "Next"}
        links, has_next = _parse_results(_checked(http.post(search_url, form)), search_url)
        letters |= links
        if not has_next or not links:
            break
    logger.info("%d cases decided %s..%s", len(letters), decided_from, decided_to)
    return letters


def download_dwc_letters(
    out_dir: Path,
    *,
    case_numbers: Sequence[str] = (),
    decided_from: dt.date | None = None,
    decided_to: dt.date | None = None,
    search_url: str = DWC_SEARCH_URL,
    delay_s: float = DEFAULT_DELAY_S,
    chunk_size: int = 1 << 16,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str, int, int], None] | None = None,
) -> DwcDownloadReport:
    """Download DWC IMR final determination letters into ``out_dir/<case number>.pdf``.

    Letters are found through the DWC IMR Decision Search (see the module docstring):
    by case number, by decision-date range, or both (the union). A letter already in
    ``out_dir`` with a matching ``.sha256`` sidecar is skipped; an interrupted one
    resumes from its ``.part`` file. A response that is not a PDF is not saved.

    Args:
        out_dir: the folder for the PDFs (created if missing).
        case_numbers: case numbers, checked by :func:`check_case_numbers`.
        decided_from / decided_to: an inclusive decision-date range; both or neither.
        search_url: the search page, :data:`DWC_SEARCH_URL` by default.
        delay_s: seconds between two requests, >= 0.
        chunk_size: bytes per read and write of a letter, > 0 (an interrupted letter
            keeps its whole chunks in ``.part``).
        client: an httpx client (not closed here); by default one with
            :data:`USER_AGENT` that follows redirects.
        sleep: how to wait (tests pass a recorder).
        progress: called after each letter with (case number, done, total).

    Returns:
        The :class:`DwcDownloadReport`; one letter's failure does not stop the batch.

    Raises:
        InvalidInputError: no case numbers and no date range, half a range, a range that
            ends before it starts, a negative delay or chunk size, or an invalid case number.
        DownloadError: the search itself fails (network error or HTTP error status).
    """
    cases = check_case_numbers(case_numbers)
    if (decided_from is None) != (decided_to is None):
        raise InvalidInputError(
            "decided_from/decided_to", "give both ends of the decision-date range, or neither"
        )
    if decided_from is not None and decided_to is not None and decided_to < decided_from:
        raise InvalidInputError(
            "decided_to", f"{decided_to} is before decided_from {decided_from}; swap them"
        )
    if not cases and decided_from is None:
        raise InvalidInputError(
            "case_numbers", "give case numbers (or a file of them) or a decision-date range"
        )
    if delay_s < 0:
        raise InvalidInputError("delay_s", f"expected seconds >= 0, got {delay_s}")
    if chunk_size < 1:
        raise InvalidInputError("chunk_size", f"expected a positive byte count, got {chunk_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    own = client is None
    raw = client or httpx.Client(
        follow_redirects=True, timeout=_TIMEOUT, headers={"User-Agent": USER_AGENT}
    )
    http = _PoliteClient(raw, delay_s, sleep)
    report = DwcDownloadReport()
    try:
        letters: dict[str, str | None] = {}
        if decided_from is not None and decided_to is not None:
            letters |= search_decided(http, search_url, decided_from, decided_to)
        for case in cases:
            if case not in letters and not _verified(out_dir / f"{case}.pdf"):
                letters[case] = _search_case(http, search_url, case)
            else:
                letters.setdefault(case, None)
        for done, (case, url) in enumerate(letters.items(), start=1):
            _fetch_one(http, out_dir, case, url, report, chunk_size)
            if progress is not None:
                progress(case, done, len(letters))
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"could not search {search_url}: {exc.__class__.__name__}: {exc}; letters saved "
            "so far are kept, run again to resume"
        ) from exc
    finally:
        if own:
            raw.close()
    logger.info("DWC letters into %s: %s", out_dir, report.summary())
    return report


def _fetch_one(
    http: _PoliteClient,
    out_dir: Path,
    case: str,
    url: str | None,
    report: DwcDownloadReport,
    chunk_size: int,
) -> None:
    """Download one letter into ``report``; a failure is recorded, not raised."""
    dest = out_dir / f"{case}.pdf"
    if _verified(dest):
        report.already_present.append(case)
        return
    if url is None:
        report.not_found.append(case)
        return
    http.wait()
    try:
        download(url, dest, client=http.client, chunk_size=chunk_size)
    except DownloadError as exc:
        report.failed.append((case, str(exc)))
        return
    with dest.open("rb") as f:
        magic = f.read(len(_PDF_MAGIC))
    if magic != _PDF_MAGIC:
        dest.unlink()
        dest.with_name(dest.name + ".sha256").unlink()
        report.failed.append(
            (case, f"{url} did not answer a PDF (starts with {magic!r}); nothing was saved")
        )
        return
    report.saved.append(case)

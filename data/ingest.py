"""Ingest sources (letter files, folders of letters, DMHC tables) into dataset rows.

Ingestion never stops at the first bad file and never drops one silently: every file
found ends up in the :class:`IngestReport` as parsed, failed (with the section that
failed) or skipped (not a source type), and excluded table rows are listed too.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imr_outcome.data.dataset import records_from_letter
from imr_outcome.data.dmhc import load_dmhc
from imr_outcome.data.dmhc_findings import FindingsStats
from imr_outcome.data.extract import LETTER_SUFFIXES
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.schema import ItemRecord, Letter
from imr_outcome.errors import InvalidInputError, ParseError

logger = logging.getLogger(__name__)

#: Suffix of DMHC table exports.
TABLE_SUFFIXES: frozenset[str] = frozenset({".csv"})


@dataclass(frozen=True)
class IngestFailure:
    """A source file that could not be read.

    Attributes:
        source: the file path.
        section: the part that failed (see :class:`imr_outcome.errors.ParseError`).
        reason: what went wrong and the fix.
    """

    source: str
    section: str
    reason: str


@dataclass
class IngestReport:
    """What ingestion saw, in counts (no rows, no case text).

    Attributes:
        failures: files that failed, with reasons.
        skipped: files in the given folders that are neither letters nor tables.
        excluded_rows: table rows left out, as ``{"source", "id", "reason"}``.
        files_read: number of source files attempted (parsed + failed).
        letters_parsed: number of letter files parsed.
        records_read: number of dataset rows from letters and tables.
        dmhc_findings: the DMHC ``Findings`` sentence split counts (rows kept and excluded
            by reason, sentences kept and dropped, background lengths), summed over tables.
    """

    failures: list[IngestFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded_rows: list[dict[str, str]] = field(default_factory=list)
    files_read: int = 0
    letters_parsed: int = 0
    records_read: int = 0
    dmhc_findings: FindingsStats = field(default_factory=FindingsStats)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (no case text): counts, failures, skips, exclusions."""
        return {
            "files_read": self.files_read,
            "letters_parsed": self.letters_parsed,
            "records": self.records_read,
            "failures": [asdict(f) for f in self.failures],
            "skipped": self.skipped,
            "excluded_rows": self.excluded_rows,
            "dmhc_findings": self.dmhc_findings.to_json(),
        }

    def write(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path`` (parent folders created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


@dataclass
class IngestedRows(IngestReport):
    """The report of :func:`ingest` with every parsed letter and row held in memory.

    Attributes:
        letters: parsed letters, in file order.
        records: dataset rows from letters and tables, in file order.
    """

    letters: list[Letter] = field(default_factory=list)
    records: list[ItemRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedSource:
    """The rows of one source file that was read.

    Attributes:
        path: the file.
        letter: the parsed letter (None for a table).
        records: its dataset rows, in file order.
    """

    path: Path
    letter: Letter | None
    records: list[ItemRecord]


def discover(sources: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Expand source paths into source files.

    Args:
        sources: files or folders; folders are searched recursively.

    Returns:
        ``(files, skipped)``: letter and table files in sorted order, and files in the
        folders that are neither (e.g. README.md).

    Raises:
        InvalidInputError: when a given path does not exist.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for source in sources:
        if not source.exists():
            raise InvalidInputError("sources", f"{source} does not exist")
        if source.is_file():
            files.append(source)
            continue
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            if path.suffix.lower() in LETTER_SUFFIXES | TABLE_SUFFIXES:
                files.append(path)
            else:
                skipped.append(str(path))
    return files, skipped


#: Letters per task handed to a parsing process (amortises the hand-off; ~50 ms a PDF).
PARSE_CHUNK = 8

#: Tasks handed out ahead of the reader, per process: enough to keep every process busy,
#: few enough that parsed letters never pile up (memory stays flat in the input size).
CHUNKS_AHEAD_PER_WORKER = 4


def _parse_letter(path: Path) -> tuple[Letter, list[ItemRecord]] | IngestFailure:
    """One letter and its rows, or the failure; never raises (runs in a worker process)."""
    try:
        letter = parse_letter_file(path)
        return letter, records_from_letter(letter)
    except ParseError as exc:
        return IngestFailure(exc.source, exc.section, exc.reason)
    except Exception as exc:
        # A bug or an unforeseen file must not stop a batch: record it and go on.
        return IngestFailure(str(path), "file", f"{type(exc).__name__}: {exc}")


def _parse_letters(paths: list[Path]) -> list[tuple[Letter, list[ItemRecord]] | IngestFailure]:
    """:func:`_parse_letter` of each path (one task of a worker process)."""
    return [_parse_letter(path) for path in paths]


def _start_method() -> str:
    """fork where the parent is still light (``data build``: the workers start at once,
    1.81x one core on 194 PDFs with 2 cores, against 1.13x with spawn, whose workers
    re-import pypdf and the parser); spawn once torch is loaded (``retrain``), whose
    OpenMP threads must not be forked."""
    if "torch" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _parsed_letters(
    paths: list[Path], workers: int
) -> Iterator[tuple[Letter, list[ItemRecord]] | IngestFailure]:
    """:func:`_parse_letter` of each path, in the order given, over ``workers`` processes
    (in this process when ``workers`` is 1 or there are too few letters to share).

    At most ``workers *`` :data:`CHUNKS_AHEAD_PER_WORKER` tasks of :data:`PARSE_CHUNK`
    letters are parsed ahead of the caller (``Executor.map`` would submit them all and
    hold every result a slow reader has not taken yet)."""
    if workers <= 1 or len(paths) < 2 * PARSE_CHUNK:
        yield from map(_parse_letter, paths)
        return
    context = multiprocessing.get_context(_start_method())
    chunks = (paths[i : i + PARSE_CHUNK] for i in range(0, len(paths), PARSE_CHUNK))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        ahead: deque[Future[list[tuple[Letter, list[ItemRecord]] | IngestFailure]]] = deque(
            pool.submit(_parse_letters, chunk)
            for chunk in itertools.islice(chunks, workers * CHUNKS_AHEAD_PER_WORKER)
        )
        while ahead:
            parsed = ahead.popleft().result()
            for chunk in itertools.islice(chunks, 1):
                ahead.append(pool.submit(_parse_letters, chunk))
            yield from parsed


def iter_ingest(
    sources: Iterable[Path], report: IngestReport, workers: int | None = None
) -> Iterator[ParsedSource]:
    """Parse every source file, one at a time, collecting failures instead of stopping.

    Letters are parsed in parallel processes, a bounded number ahead of the caller; the
    sources come out in file order, the same as on one core, so the dataset fingerprint
    does not depend on ``workers``. ``report`` is filled in as they go: complete once the
    iterator is exhausted. Nothing is kept here, so memory does not grow with the input.

    Args:
        sources: letter files (``.pdf``/``.txt``), DMHC tables (``.csv``) or folders.
        report: the report to fill (counts, failures, skipped files, excluded rows).
        workers: parsing processes, >= 1; default ``os.cpu_count()``.

    Returns:
        An iterator of the :class:`ParsedSource` of each file read without failure.

    Raises:
        InvalidInputError: when a given path does not exist, or ``workers`` < 1 (at once,
            before the first source).
    """
    if workers is not None and workers < 1:
        raise InvalidInputError("workers", f"expected at least 1, found {workers}")
    files, skipped = discover(sources)
    report.skipped.extend(skipped)
    return _ingest_files(files, report, workers or os.cpu_count() or 1)


def _ingest_files(files: list[Path], report: IngestReport, workers: int) -> Iterator[ParsedSource]:
    """The iterator of :func:`iter_ingest` over discovered files."""
    letter_paths = [path for path in files if path.suffix.lower() not in TABLE_SUFFIXES]
    letters = _parsed_letters(letter_paths, workers)
    for path in files:
        report.files_read += 1
        if path.suffix.lower() not in TABLE_SUFFIXES:
            parsed = next(letters)
            if isinstance(parsed, IngestFailure):
                report.failures.append(parsed)
                logger.warning("failed to ingest %s: %s", path, parsed.reason)
            else:
                report.letters_parsed += 1
                report.records_read += len(parsed[1])
                yield ParsedSource(path, *parsed)
            continue
        try:
            table = load_dmhc(path)
        except ParseError as exc:
            report.failures.append(IngestFailure(exc.source, exc.section, exc.reason))
        except Exception as exc:
            report.failures.append(IngestFailure(str(path), "file", f"{type(exc).__name__}: {exc}"))
        else:
            report.records_read += len(table.records)
            report.dmhc_findings = report.dmhc_findings.merge(table.findings)
            report.excluded_rows.extend(
                {"source": str(path), "id": row.reference_id, "reason": row.reason}
                for row in table.excluded
            )
            yield ParsedSource(path, None, table.records)
            continue
        logger.warning("failed to ingest %s: %s", path, report.failures[-1].reason)


def ingest(sources: Iterable[Path], workers: int | None = None) -> IngestedRows:
    """Parse every source file into rows held in memory (see :func:`iter_ingest`).

    Args:
        sources: letter files (``.pdf``/``.txt``), DMHC tables (``.csv``) or folders.
        workers: parsing processes, >= 1; default ``os.cpu_count()``.

    Returns:
        The :class:`IngestedRows`: the report with every letter and row, in file order.

    Raises:
        InvalidInputError: when a given path does not exist, or ``workers`` < 1.
    """
    report = IngestedRows()
    for parsed in iter_ingest(sources, report, workers):
        if parsed.letter is not None:
            report.letters.append(parsed.letter)
        report.records.extend(parsed.records)
    return report

"""Ingest sources (letter files, folders of letters, DMHC tables) into dataset rows.

Ingestion never stops at the first bad file and never drops one silently: every file
found ends up in the :class:`IngestReport` as parsed, failed (with the section that
failed) or skipped (not a source type), and excluded table rows are listed too.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
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
    """Everything ingestion saw.

    Attributes:
        letters: parsed letters, in file order.
        records: dataset rows from letters and tables.
        failures: files that failed, with reasons.
        skipped: files in the given folders that are neither letters nor tables.
        excluded_rows: table rows left out, as ``{"source", "id", "reason"}``.
        files_read: number of source files attempted (parsed + failed).
        dmhc_findings: the DMHC ``Findings`` sentence split counts (rows kept and excluded
            by reason, sentences kept and dropped, background lengths), summed over tables.
    """

    letters: list[Letter] = field(default_factory=list)
    records: list[ItemRecord] = field(default_factory=list)
    failures: list[IngestFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded_rows: list[dict[str, str]] = field(default_factory=list)
    files_read: int = 0
    dmhc_findings: FindingsStats = field(default_factory=FindingsStats)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary (no case text): counts, failures, skips, exclusions."""
        return {
            "files_read": self.files_read,
            "letters_parsed": len(self.letters),
            "records": len(self.records),
            "failures": [asdict(f) for f in self.failures],
            "skipped": self.skipped,
            "excluded_rows": self.excluded_rows,
            "dmhc_findings": self.dmhc_findings.to_json(),
        }

    def write(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path`` (parent folders created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


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
    (in this process when ``workers`` is 1 or there are too few letters to share)."""
    if workers <= 1 or len(paths) < 2 * PARSE_CHUNK:
        yield from map(_parse_letter, paths)
        return
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_parse_letter, paths, chunksize=PARSE_CHUNK)


def ingest(sources: Iterable[Path], workers: int | None = None) -> IngestReport:
    """Parse every source file into rows, collecting failures instead of stopping.

    Letters are parsed in parallel processes; rows, letters and failures come out in file
    order, the same as on one core, so the dataset fingerprint does not depend on
    ``workers``.

    Args:
        sources: letter files (``.pdf``/``.txt``), DMHC tables (``.csv``) or folders.
        workers: parsing processes, >= 1; default ``os.cpu_count()``.

    Returns:
        The :class:`IngestReport`.

    Raises:
        InvalidInputError: when a given path does not exist, or ``workers`` < 1.
    """
    if workers is not None and workers < 1:
        raise InvalidInputError("workers", f"expected at least 1, found {workers}")
    files, skipped = discover(sources)
    report = IngestReport(skipped=skipped)
    letter_paths = [path for path in files if path.suffix.lower() not in TABLE_SUFFIXES]
    letters = _parsed_letters(letter_paths, workers or os.cpu_count() or 1)
    for path in files:
        report.files_read += 1
        if path.suffix.lower() not in TABLE_SUFFIXES:
            parsed = next(letters)
            if isinstance(parsed, IngestFailure):
                report.failures.append(parsed)
                logger.warning("failed to ingest %s: %s", path, parsed.reason)
            else:
                report.letters.append(parsed[0])
                report.records.extend(parsed[1])
            continue
        try:
            table = load_dmhc(path)
        except ParseError as exc:
            report.failures.append(IngestFailure(exc.source, exc.section, exc.reason))
        except Exception as exc:
            report.failures.append(IngestFailure(str(path), "file", f"{type(exc).__name__}: {exc}"))
        else:
            report.records.extend(table.records)
            report.dmhc_findings = report.dmhc_findings.merge(table.findings)
            report.excluded_rows.extend(
                {"source": str(path), "id": row.reference_id, "reason": row.reason}
                for row in table.excluded
            )
            continue
        logger.warning("failed to ingest %s: %s", path, report.failures[-1].reason)
    return report

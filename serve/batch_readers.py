"""Reading batch-scoring input: format by suffix, CSV charset, header and column checks, rows.

Inputs are CSV, JSON Lines or Parquet, chosen by suffix (:data:`FORMATS`). Rows are read
one at a time (CSV with the standard ``csv`` module, JSON Lines line by line, Parquet with
``pyarrow.parquet.ParquetFile.iter_batches``) as :class:`RawRow` objects: the values of the
configured :class:`Columns`, or why the row cannot be read (undecodable bytes, bad quoting,
a wrong field count, invalid JSON, a Parquet row group that fails to decode). CSV input is
UTF-8 unless its bytes say otherwise (:func:`csv_encoding`). Used by
:func:`imr_outcome.serve.batch.score_file`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.errors import InvalidInputError

logger = logging.getLogger(__name__)

Format = Literal["csv", "jsonl", "parquet"]

#: File suffix -> format.
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
#: Largest CSV field read, in characters; a larger field makes its row unreadable (an
#: error row) instead of exhausting memory. Far above the default text limit.
CSV_FIELD_LIMIT = 1 << 24


@dataclass(frozen=True)
class Columns:
    """Input column names."""

    id: str
    request: str
    summary: str
    metadata: dict[str, str]

    @property
    def needed(self) -> list[str]:
        """Every column read, deduplicated, in a stable order."""
        return list(dict.fromkeys([self.id, self.request, self.summary, *self.metadata.values()]))


def checked_metadata_columns(metadata_columns: Mapping[str, str] | None) -> dict[str, str]:
    """The ``field -> column`` map, with every field a pre-filing one.

    Raises:
        InvalidInputError: a key that is not in :data:`PREFILING_FIELDS` (field
            ``metadata_columns``), e.g. a reviewer field known only after filing.
    """
    metadata = dict(metadata_columns or {})
    unknown = sorted(set(metadata) - set(PREFILING_FIELDS))
    if unknown:
        raise InvalidInputError(
            "metadata_columns",
            f"unknown or post-filing field(s) {unknown}; allowed: {list(PREFILING_FIELDS)}",
        )
    return metadata


@dataclass(frozen=True)
class RawRow:
    """One input row: its values, or why it cannot be read (and its raw id if known)."""

    row: int
    values: dict[str, Any] | None
    problem: str | None = None
    raw_id: Any = None


def file_format(path: Path, what: str) -> Format:
    """The format of ``path`` by its suffix (see :data:`FORMATS`).

    Raises:
        InvalidInputError: an unsupported suffix (field ``what``: ``input`` or ``output``).
    """
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InvalidInputError(
            what,
            f"{path}: unsupported suffix {path.suffix!r}; expected one of {sorted(FORMATS)}",
        ) from None


def _has_surrogates(value: Any) -> bool:
    """True for text decoded with ``surrogateescape`` from bytes that were not UTF-8."""
    return isinstance(value, str) and re.search("[\udc80-\udcff]", value) is not None


#: The 8-bit encoding chosen when charset-normalizer finds it as clean as its best guess.
PREFERRED_8BIT = "cp1252"
#: Bytes of lines with non-ASCII bytes handed to charset-normalizer (plus the file's start).
DETECTION_SAMPLE_BYTES = 1 << 20


def csv_encoding(path: Path) -> str:
    """The text encoding of a CSV file: UTF-8 unless its bytes say otherwise.

    A file whose non-ASCII bytes are all valid UTF-8 is UTF-8 (a BOM is skipped). A file
    with some valid multi-byte UTF-8 characters is UTF-8 with damaged rows (they become
    error rows). Otherwise (no valid UTF-8 multi-byte character at all: a legacy 8-bit
    file such as Excel's cp1252 "CSV (Comma delimited)", or UTF-16) the encoding is
    detected with charset-normalizer from the file's first 64 KiB and its lines holding
    non-ASCII bytes (up to :data:`DETECTION_SAMPLE_BYTES`); :data:`PREFERRED_8BIT` wins a
    tie with its best guess.

    Args:
        path: the CSV file.

    Returns:
        A Python codec name (``"utf-8-sig"``, ``"cp1252"``, ``"utf_16"``, ...).
    """
    from charset_normalizer import from_bytes

    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    head = b""
    sample: list[bytes] = []
    sampled = 0
    valid_utf8 = True
    multibyte = False
    with path.open("rb") as handle:
        for line in handle:
            if len(head) < 65536:
                head += line[: 65536 - len(head)]
            if line.isascii():
                continue
            if sampled < DETECTION_SAMPLE_BYTES:
                sample.append(line)
                sampled += len(line)
            try:
                decoder.decode(line)
                multibyte = True
            except UnicodeDecodeError:
                valid_utf8 = False
                decoder.reset()
    if valid_utf8 or multibyte:
        return "utf-8-sig"
    matches = from_bytes(head + b"".join(sample))
    best = matches.best()
    if best is None:
        return "utf-8-sig"
    encoding = str(best.encoding)
    # short samples tie between Western code pages (cp775, cp1250, cp1252 read "Café"
    # equally cleanly); Excel's default on Western Windows is cp1252, so it wins a tie
    if any(PREFERRED_8BIT in m.could_be_from_charset and m.chaos <= best.chaos for m in matches):
        encoding = PREFERRED_8BIT
    logger.info("%s: read as %s (not UTF-8)", path, encoding)
    return encoding


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_header(fmt: Format, path: Path, encoding: str) -> list[str] | None:
    """The column names of a CSV header or Parquet schema; None for JSON Lines.

    Raises:
        InvalidInputError: an unreadable CSV header or Parquet file.
    """
    if fmt == "jsonl":
        return None
    if fmt == "parquet":
        return list(_parquet(path).schema_arrow.names)
    with (
        path.open("r", encoding=encoding, errors="replace", newline="") as handle,
        _csv_field_limit(CSV_FIELD_LIMIT),
    ):
        try:
            return next(csv.reader(handle), [])
        except csv.Error as exc:
            raise InvalidInputError("input", f"{path}: unreadable header ({exc})") from exc


def prefiling_columns(
    header: Sequence[str] | None, explicit: Mapping[str, str], taken: Sequence[str]
) -> dict[str, str]:
    """Pre-filing metadata columns: ``explicit`` plus every column named like a field.

    Args:
        header: the input's column names, or None when unknown (JSON Lines: every
            field is looked up by its own name in each object).
        explicit: field -> column given by the caller (``--metadata-column``); it wins.
        taken: the id, request and summary columns, never read as metadata.

    Returns:
        Field -> column, e.g. ``{"patient_age": "age", "patient_sex": "patient_sex"}``.
    """
    found = dict(explicit)
    for field in PREFILING_FIELDS:
        if field in found or field in taken:
            continue
        if header is None or field in header:
            found[field] = field
    return found


def check_columns(fmt: Format, path: Path, columns: Columns, header: list[str] | None) -> None:
    """Fail early when a CSV header or Parquet schema lacks a configured column.

    Raises:
        InvalidInputError: naming the option (``id_column``, ...) and the columns found.
    """
    if header is None or (fmt == "csv" and not header):
        return  # JSON Lines, or a CSV file without a header line: no rows to score
    options = {"id_column": columns.id, "request_column": columns.request}
    options["summary_column"] = columns.summary
    options.update({f"metadata_columns[{k}]": v for k, v in columns.metadata.items()})
    for option, name in options.items():
        if name not in header:
            raise InvalidInputError(
                option, f"column {name!r} is not in {path} (columns: {list(header)})"
            )


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError("input", f"{path}: not a readable Parquet file ({exc})") from exc


def _read_csv(path: Path, columns: Columns, encoding: str) -> Iterator[RawRow]:
    """CSV rows; undecodable bytes, bad quoting or a wrong field count make a problem row."""
    with (
        _csv_field_limit(CSV_FIELD_LIMIT),
        path.open("r", encoding=encoding, errors="surrogateescape", newline="") as handle,
    ):
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        positions = {name: header.index(name) for name in columns.needed}
        id_position = positions[columns.id]
        row = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RawRow(row, None, f"unreadable row: {exc}")
                row += 1
                continue
            if not fields:
                continue  # a blank line is not a row
            raw_id = fields[id_position] if id_position < len(fields) else None
            if _has_surrogates(raw_id):
                raw_id = None
            if len(fields) != len(header):
                problem = f"unreadable row: expected {len(header)} fields, found {len(fields)}"
                yield RawRow(row, None, problem, raw_id)
            else:
                values = {name: fields[position] for name, position in positions.items()}
                if any(_has_surrogates(value) for value in values.values()):
                    yield RawRow(row, None, "unreadable row: not valid UTF-8 text", raw_id)
                else:
                    yield RawRow(row, values)
            row += 1


def _read_jsonl(path: Path, columns: Columns) -> Iterator[RawRow]:
    """JSON Lines rows; invalid UTF-8, invalid JSON or a non-object make a problem row."""
    row = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            problem = None
            try:
                value = json.loads(line.decode("utf-8-sig" if number == 0 else "utf-8"))
            except UnicodeDecodeError:
                problem = "unreadable row: not valid UTF-8 text"
            except json.JSONDecodeError as exc:
                problem = f"unreadable row: invalid JSON ({exc.msg} at column {exc.colno})"
            else:
                if not isinstance(value, dict):
                    problem = (
                        f"unreadable row: expected a JSON object, found {type(value).__name__}"
                    )
            if problem is None:
                yield RawRow(row, {name: value.get(name) for name in columns.needed})
            else:
                yield RawRow(row, None, problem)
            row += 1


def _read_parquet(path: Path, columns: Columns, batch_size: int) -> Iterator[RawRow]:
    """Parquet rows; a row group that fails to decode yields one problem row per row."""
    parquet = _parquet(path)
    row = 0
    for group in range(parquet.num_row_groups):
        expected = parquet.metadata.row_group(group).num_rows
        produced = 0
        try:
            for batch in parquet.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=columns.needed
            ):
                for values in batch.to_pylist():
                    yield RawRow(row, values)
                    row += 1
                    produced += 1
        except (pa.ArrowException, OSError) as exc:
            problem = f"unreadable row: row group {group} cannot be decoded ({exc})"
            for _ in range(expected - produced):
                yield RawRow(row, None, problem)
                row += 1


def read_rows(
    fmt: Format, path: Path, columns: Columns, chunk_size: int, encoding: str
) -> Iterator[RawRow]:
    """Every data row of ``path`` in order (``chunk_size``: Parquet rows per decoded batch)."""
    if fmt == "csv":
        return _read_csv(path, columns, encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, columns)
    return _read_parquet(path, columns, chunk_size)


def count_rows(fmt: Format, path: Path, encoding: str) -> int:
    """Data rows in the input (one extra pass for CSV and JSON Lines)."""
    if fmt == "parquet":
        return int(_parquet(path).metadata.num_rows)
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    with (
        _csv_field_limit(CSV_FIELD_LIMIT),
        path.open("r", encoding=encoding, errors="surrogateescape", newline="") as handle,
    ):
        reader = csv.reader(handle)
        count = -1  # the header
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return max(count, 0)
            except csv.Error:
                fields = ["unreadable"]
            count += 1 if fields else 0

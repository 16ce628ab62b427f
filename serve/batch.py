"""Score a file of items into a predictions file: streamed in chunks, resumable, lossless.

Inputs and outputs are CSV, JSON Lines or Parquet, chosen by suffix (``.csv``,
``.jsonl``/``.ndjson``, ``.parquet``). Input rows are read one chunk at a time (CSV with
the standard ``csv`` module, JSON Lines line by line, Parquet with
``pyarrow.parquet.ParquetFile.iter_batches``), so memory is bounded by the chunk size
plus the set of ids seen (needed to detect duplicates).

Every input row appears exactly once in the output, in input order, as a result or with
an ``error`` message: empty or missing text, a value of the wrong type, oversize text, a
missing, malformed or duplicate id, or a row that cannot be read at all. Output columns
(:data:`OUTPUT_COLUMNS`):

- ``id``: the row's id as text (null when missing or malformed);
- ``p_overturned``, ``p_upheld``: calibrated probabilities in [0, 1] summing to 1;
- ``label``: ``Upheld`` or ``Overturned`` at the model's threshold;
- ``evidence``: a list of evidence spans (``[]`` unless asked for);
- ``warnings``: a list of plain-language warning messages;
- ``warning_details``: a list of ``{code, message, figures}`` objects, one per warning
  (see :mod:`imr_outcome.serve.warnings`);
- ``error``: null, or why the row has no prediction (then the columns above are null);
- ``row``: the row's 0-based position among the input's data rows (blank lines skipped).

The three list columns are JSON arrays in JSON Lines output and JSON text in CSV and
Parquet output. CSV input is UTF-8 unless its bytes say otherwise (:func:`csv_encoding`
detects cp1252 files from Excel and UTF-16 with charset-normalizer). Columns named like a
pre-filing field (``patient_age``, ``patient_sex``, ...; see :func:`prefiling_columns`)
are read as metadata without being mapped. A request or summary that is not text a model
can read (:func:`~imr_outcome.data.text_checks.check_text`) makes an error row; an empty
(0-byte) input file is refused.

Crash safety: CSV and JSON Lines outputs are appended one chunk at a time as whole lines
(every output row is a single line), flushed and fsynced; Parquet outputs are written as
one part file per chunk into ``<output>.parts/`` (each written to a temporary name, fsynced
and renamed) and combined into ``<output>`` at the end. ``resume=True`` reads the rows
already written (truncating a torn last line left by a killed run), skips them and
appends the rest, so a killed and resumed run writes the same rows as an uninterrupted one.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.data.text_checks import check_text
from imr_outcome.errors import ImrOutcomeError, InvalidInputError
from imr_outcome.serve.predictor import PredictInput, Predictor
from imr_outcome.serve.schemas import Prediction

logger = logging.getLogger(__name__)

Format = Literal["csv", "jsonl", "parquet"]

#: File suffix -> format.
FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
#: Output columns, in order (see the module docstring).
OUTPUT_COLUMNS: tuple[str, ...] = (
    "id",
    "p_overturned",
    "p_upheld",
    "label",
    "evidence",
    "warnings",
    "warning_details",
    "error",
    "row",
)
#: Output columns holding JSON lists: arrays in JSON Lines, JSON text in CSV and Parquet.
JSON_COLUMNS: tuple[str, ...] = ("evidence", "warnings", "warning_details")
#: The Parquet schema of the output (every column nullable).
OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("p_overturned", pa.float64()),
        ("p_upheld", pa.float64()),
        ("label", pa.string()),
        ("evidence", pa.string()),
        ("warnings", pa.string()),
        ("warning_details", pa.string()),
        ("error", pa.string()),
        ("row", pa.int64()),
    ]
)
#: Largest CSV field read, in characters; a larger field makes its row unreadable (an
#: error row) instead of exhausting memory. Far above the default text limit.
CSV_FIELD_LIMIT = 1 << 24

#: Called after each chunk with (rows done, total rows or None when not counted).
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class ScoreSummary:
    """Row counts of one :func:`score_file` run.

    Attributes:
        total: input rows read; ``total == scored + failed + skipped_existing``.
        scored: rows written with a prediction by this run.
        failed: rows written with an error by this run.
        skipped_existing: rows already in the output (``resume=True``), not rescored.
        failed_existing: how many of the skipped rows carry an error.
    """

    total: int
    scored: int
    failed: int
    skipped_existing: int
    failed_existing: int = 0


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


def _format(path: Path, what: str) -> Format:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InvalidInputError(
            what,
            f"{path}: unsupported suffix {path.suffix!r}; expected one of {sorted(FORMATS)}",
        ) from None


def one_line(message: str) -> str:
    """A message on one line (output rows must be single lines)."""
    return " ".join(message.split())


def _has_surrogates(value: Any) -> bool:
    """True for text decoded with ``surrogateescape`` from bytes that were not UTF-8."""
    return isinstance(value, str) and re.search("[\udc80-\udcff]", value) is not None


# ------------------------------------------------------------------------------ readers

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


def _header(fmt: Format, path: Path, encoding: str) -> list[str] | None:
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


def _check_columns(fmt: Format, path: Path, columns: Columns, header: list[str] | None) -> None:
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


def _read(
    fmt: Format, path: Path, columns: Columns, chunk_size: int, encoding: str
) -> Iterator[RawRow]:
    if fmt == "csv":
        return _read_csv(path, columns, encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, columns)
    return _read_parquet(path, columns, chunk_size)


def _count_rows(fmt: Format, path: Path, encoding: str) -> int:
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


# ---------------------------------------------------------------------- row validation


def normalize_id(value: Any, column: str) -> tuple[str | None, str | None]:
    """A row's id as text, or why it has none.

    Args:
        value: the raw value (text, integer, None, ...).
        column: the id column's name, for the message.

    Returns:
        ``(id, None)`` for a usable id (integers become their decimal text), else
        ``(None, message)``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"id: expected text or an integer, got {type(value).__name__}"
    text = str(value)
    if not text.strip():
        return None, f"id: missing; every row needs a unique id in column {column!r}"
    if "\n" in text or "\r" in text:
        return None, "id: contains a line break; an id must be one line"
    return text, None


def _metadata(values: Mapping[str, Any], columns: Columns) -> tuple[dict[str, Any], str | None]:
    """Pre-filing metadata from the mapped columns; ages given as text become integers."""
    metadata: dict[str, Any] = {}
    for field, column in columns.metadata.items():
        value = values.get(column)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        if field == "patient_age":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            return {}, f"metadata.{field}: expected text or an integer, got {type(value).__name__}"
        metadata[field] = value
    return metadata, None


@dataclass(frozen=True)
class PreparedRow:
    row: int
    id: str | None
    item: PredictInput | None
    error: str | None


def prepare_row(raw: RawRow, columns: Columns, seen: set[str], max_chars: int) -> PreparedRow:
    """Validate one row; registers its id in ``seen`` (duplicates become errors)."""
    values = raw.values
    row_id, id_problem = normalize_id(
        raw.raw_id if values is None else values.get(columns.id), columns.id
    )
    if row_id is not None:
        if row_id in seen:
            id_problem = id_problem or f"id: duplicate of an earlier row's id {row_id!r}"
        seen.add(row_id)
    if values is None:
        return PreparedRow(raw.row, row_id, None, raw.problem or "unreadable row")
    if id_problem is not None:
        return PreparedRow(raw.row, row_id, None, id_problem)
    metadata, problem = _metadata(values, columns)
    if problem is not None:
        return PreparedRow(raw.row, row_id, None, problem)
    request, summary = values.get(columns.request), values.get(columns.summary)
    try:
        item = PredictInput.of(
            "" if request is None else request,
            "" if summary is None else summary,
            metadata,
            max_chars=max_chars,
        )
        check_text("request", item.request)
        if item.summary:
            check_text("summary", item.summary)
    except InvalidInputError as exc:
        return PreparedRow(raw.row, row_id, None, str(exc))
    return PreparedRow(raw.row, row_id, item, None)


# ------------------------------------------------------------------------------ scoring


def describe_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ImrOutcomeError) else f"{type(exc).__name__}: {exc}"


def predict_rows(
    predictor: Predictor, items: Sequence[PredictInput], explain: bool
) -> list[Prediction | str]:
    """Predictions for ``items``; when the batch fails, item by item (errors as text)."""
    if not items:
        return []
    try:
        return list(predictor.predict_batch(items, explain=explain))
    except Exception as exc:
        logger.info(
            "a batch of %d failed (%s); scoring it item by item", len(items), type(exc).__name__
        )
    results: list[Prediction | str] = []
    for item in items:
        try:
            results.append(predictor.predict_batch([item], explain=explain)[0])
        except Exception as exc:  # one bad item must not lose the others
            logger.warning("an item failed: %s", type(exc).__name__)
            logger.debug("item failure", exc_info=True)
            results.append(describe_error(exc))
    return results


def _record(prepared: PreparedRow, outcome: Prediction | str | None) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(OUTPUT_COLUMNS)
    record["id"], record["row"] = prepared.id, prepared.row
    if isinstance(outcome, Prediction):
        record.update(
            p_overturned=outcome.p_overturned,
            p_upheld=outcome.p_upheld,
            label=outcome.label,
            evidence=[span.model_dump() for span in outcome.evidence],
            warnings=list(outcome.warnings),
            warning_details=[detail.model_dump() for detail in outcome.warning_details],
        )
    else:
        record["error"] = one_line(prepared.error or outcome or "unknown error")
    return record


# -------------------------------------------------------------------------------- sinks


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class _Sink(Protocol):
    #: rows already in the output -> their id
    done: dict[int, str | None]
    failed_existing: int

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


def _csv_text(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _as_json_text(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its :data:`JSON_COLUMNS` lists as JSON text (CSV and Parquet)."""
    return {
        column: json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
        for column, value in record.items()
    }


def _encode_csv(records: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([[_csv_text(r[c]) for c in OUTPUT_COLUMNS] for r in records])
    return buffer.getvalue().encode("utf-8", errors="backslashreplace")


def _decode_csv(line: str) -> dict[str, Any]:
    fields = next(csv.reader([line]))
    if len(fields) != len(OUTPUT_COLUMNS):
        raise ValueError(f"expected {len(OUTPUT_COLUMNS)} fields, found {len(fields)}")
    record: dict[str, Any] = {
        c: (f if f != "" else None) for c, f in zip(OUTPUT_COLUMNS, fields, strict=True)
    }
    return record


def _encode_jsonl(records: list[dict[str, Any]]) -> bytes:
    lines = [
        json.dumps({c: r[c] for c in OUTPUT_COLUMNS}, ensure_ascii=False) + "\n" for r in records
    ]
    return "".join(lines).encode("utf-8", errors="backslashreplace")


def _decode_jsonl(line: str) -> dict[str, Any]:
    record = json.loads(line)
    if not isinstance(record, dict) or set(record) != set(OUTPUT_COLUMNS):
        raise ValueError(f"expected an object with keys {list(OUTPUT_COLUMNS)}")
    return record


def _not_ours(path: Path, where: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        "output",
        f"{path}: {where} is not `imr-outcome score` output ({why}); choose another output "
        "path or delete the file",
    )


class _LineSink:
    """CSV or JSON Lines output, appended one fsynced chunk of whole lines at a time."""

    def __init__(self, path: Path, fmt: Format, *, resume: bool) -> None:
        self.path = path
        self.done: dict[int, str | None] = {}
        self.failed_existing = 0
        if fmt == "csv":
            self._header = (",".join(OUTPUT_COLUMNS) + "\n").encode()
            self._encode, self._decode = _encode_csv, _decode_csv
        else:
            self._header = b""
            self._encode, self._decode = _encode_jsonl, _decode_jsonl
        if not (resume and path.exists() and self._recover()):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                handle.write(self._header)
                handle.flush()
                os.fsync(handle.fileno())
            _fsync_dir(path.parent)
        self._handle = path.open("ab")

    def _recover(self) -> bool:
        """Read the rows already written and cut a torn last line; False: start afresh."""
        good = 0
        with self.path.open("rb") as handle:
            if self._header:
                first = handle.readline()
                if first != self._header:
                    if self._header.startswith(first):  # killed while writing the header
                        return False
                    raise _not_ours(self.path, "the header", f"found {first[:200]!r}")
                good = len(first)
            for number, line in enumerate(handle, start=2 if self._header else 1):
                if not line.endswith(b"\n"):
                    break  # torn by a kill mid-write: only ever the last line
                try:
                    record = self._decode(line.decode("utf-8"))
                    row = int(record["row"])
                except (ValueError, TypeError, KeyError) as exc:
                    raise _not_ours(self.path, f"line {number}", str(exc)) from exc
                self.done[row] = record["id"]
                self.failed_existing += record["error"] is not None
                good += len(line)
        if good < self.path.stat().st_size:
            logger.warning("%s: cut a torn last line left by an interrupted run", self.path)
            with self.path.open("r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())
        return True

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as whole lines, then flush and fsync."""
        self._handle.write(self._encode(records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def finish(self) -> None:
        """Nothing to combine: the file is complete after the last chunk."""

    def close(self) -> None:
        self._handle.close()


class _ParquetSink:
    """Parquet output: one part file per chunk in ``<output>.parts/``, combined at the end."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.parts = parts_dir(path)
        self.done: dict[int, str | None] = {}
        self.failed_existing = 0
        self._next = 0
        if resume and self.path.exists():
            if self.parts.exists():  # killed after combining, before removing the parts
                self.path.unlink()
            else:  # a finished output: it becomes the first part
                self.parts.mkdir(parents=True)
                os.replace(self.path, self.parts / _part_name(0))
        self.parts.mkdir(parents=True, exist_ok=True)
        for leftover in self.parts.glob("*.tmp"):
            leftover.unlink()
        for index, part in _parts(self.parts):
            try:
                table = pq.read_table(part, columns=["row", "id", "error"])
            except (pa.ArrowException, OSError) as exc:
                raise _not_ours(self.path, part.name, str(exc)) from exc
            rows, ids, errors = (table.column(c).to_pylist() for c in ("row", "id", "error"))
            for row, row_id, error in zip(rows, ids, errors, strict=True):
                self.done[int(row)] = row_id
                self.failed_existing += error is not None
            self._next = index + 1

    def write(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` as the next part file (temporary name, fsync, rename)."""
        final = self.parts / _part_name(self._next)
        temporary = final.with_name(final.name + ".tmp")
        table = pa.Table.from_pylist([_as_json_text(r) for r in records], schema=OUTPUT_SCHEMA)
        pq.write_table(table, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        _fsync_dir(self.parts)
        self._next += 1

    def finish(self) -> None:
        """Combine the parts, in order, into the output file; then remove the parts."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with pq.ParquetWriter(temporary, OUTPUT_SCHEMA) as writer:
            wrote = False
            for _, part in _parts(self.parts):
                writer.write_table(pq.read_table(part, schema=OUTPUT_SCHEMA))
                wrote = True
            if not wrote:
                writer.write_table(OUTPUT_SCHEMA.empty_table())
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        _fsync_dir(self.path.parent)
        shutil.rmtree(self.parts)

    def close(self) -> None:
        """Nothing held open between chunks."""


def parts_dir(output: Path) -> Path:
    """Where the part files of a Parquet output are kept until it is combined."""
    return output.with_name(output.name + ".parts")


def _part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _parts(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for part in directory.glob("part-*.parquet"):
        with contextlib.suppress(ValueError):
            found.append((int(part.stem.removeprefix("part-")), part))
    return sorted(found)


def _open_sink(fmt: Format, path: Path, *, resume: bool, overwrite: bool) -> _Sink:
    leftovers = [p for p in (path, parts_dir(path)) if p.exists()]
    if leftovers and not resume:
        if not overwrite:
            raise InvalidInputError(
                "output",
                f"{leftovers[0]} exists; pass --resume to continue that run or --overwrite "
                "to replace it",
            )
        for leftover in leftovers:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    if fmt == "parquet":
        return _ParquetSink(path, resume=resume)
    return _LineSink(path, fmt, resume=resume)


# ------------------------------------------------------------------------------- driver


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    predictor: Predictor,
    *,
    id_column: str = "id",
    request_column: str = "request",
    summary_column: str = "summary",
    metadata_columns: Mapping[str, str] | None = None,
    chunk_size: int = 1000,
    resume: bool = False,
    explain: bool = False,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> ScoreSummary:
    """Score every row of ``input_path`` into ``output_path`` (see the module docstring).

    Args:
        input_path: a ``.csv`` (UTF-8, header row), ``.jsonl`` (one object per line) or
            ``.parquet`` file.
        output_path: a ``.csv``, ``.jsonl`` or ``.parquet`` path (parent folders created).
        predictor: the loaded model.
        id_column: the column with each row's unique id (text or integer).
        request_column: the column with the disputed request.
        summary_column: the column with the case summary (null/empty means none).
        metadata_columns: pre-filing field -> input column, e.g. ``{"patient_age": "age"}``;
            ages given as text (CSV) are read as integers.
        chunk_size: rows per chunk (>= 1): one batched prediction and one fsynced write.
        resume: continue an interrupted run into the same output, skipping the rows it
            holds (cutting a torn last line).
        explain: add evidence spans (slower: one explanation per row).
        progress: called after each chunk with (rows done, total rows); the total is
            counted up front (one extra pass over CSV/JSON Lines) only when given.
        overwrite: replace an existing output instead of refusing (ignored with resume).

    Returns:
        The :class:`ScoreSummary`.

    Raises:
        InvalidInputError: unsupported suffix, missing input, a configured column absent
            from the CSV header or Parquet schema, an unknown metadata field, a bad chunk
            size, an existing output without ``resume``/``overwrite``, or an output that
            was not written by this function (or belongs to another input).
    """
    source, target = Path(input_path), Path(output_path)
    in_format, out_format = _format(source, "input"), _format(target, "output")
    if not source.is_file():
        raise InvalidInputError("input", f"{source} does not exist or is not a file")
    if source.stat().st_size == 0:
        raise InvalidInputError(
            "input", f"{source} is empty (0 bytes); give a file with a header and rows to score"
        )
    if target.resolve() == source.resolve():
        raise InvalidInputError("output", f"{target} is the input file; choose another path")
    if chunk_size < 1:
        raise InvalidInputError("chunk_size", f"expected at least 1, got {chunk_size}")
    metadata = checked_metadata_columns(metadata_columns)
    encoding = csv_encoding(source) if in_format == "csv" else "utf-8-sig"
    header = _header(in_format, source, encoding)
    metadata = prefiling_columns(header, metadata, [id_column, request_column, summary_column])
    columns = Columns(id_column, request_column, summary_column, metadata)
    _check_columns(in_format, source, columns, header)
    total = _count_rows(in_format, source, encoding) if progress is not None else None
    sink = _open_sink(out_format, target, resume=resume, overwrite=overwrite)
    seen = {row_id for row_id in sink.done.values() if row_id is not None}
    rows = scored = failed = skipped = 0
    try:
        if progress is not None:
            progress(len(sink.done), total)
        reader = _read(in_format, source, columns, chunk_size, encoding)
        while chunk := list(itertools.islice(reader, chunk_size)):
            rows += len(chunk)
            todo = []
            for raw in chunk:
                if raw.row in sink.done:
                    _check_same_row(raw, sink.done[raw.row], columns, target)
                    skipped += 1
                else:
                    todo.append(prepare_row(raw, columns, seen, predictor.max_chars))
            if not todo:
                continue
            outcomes = iter(predict_rows(predictor, [p.item for p in todo if p.item], explain))
            records = [_record(p, next(outcomes) if p.item else None) for p in todo]
            sink.write(records)
            chunk_failed = sum(r["error"] is not None for r in records)
            failed += chunk_failed
            scored += len(records) - chunk_failed
            logger.info("rows %d-%d: %d failed", todo[0].row, todo[-1].row, chunk_failed)
            if progress is not None:
                progress(len(sink.done) + scored + failed, total)
        sink.finish()
    finally:
        sink.close()
    return ScoreSummary(rows, scored, failed, skipped, sink.failed_existing)


def _check_same_row(raw: RawRow, written_id: str | None, columns: Columns, output: Path) -> None:
    """A skipped row's id must match the output's, or the output is another input's.

    Raises:
        InvalidInputError: the ids differ.
    """
    value = raw.raw_id if raw.values is None else raw.values.get(columns.id)
    row_id, _ = normalize_id(value, columns.id)
    if row_id != written_id:
        raise InvalidInputError(
            "output",
            f"{output}: row {raw.row} has id {written_id!r} there but {row_id!r} in the input; "
            "it belongs to another input, so it cannot be resumed; choose another output path",
        )

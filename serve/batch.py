"""Score a file of items into a predictions file: streamed in chunks, resumable, lossless.

Inputs and outputs are CSV, JSON Lines or Parquet, chosen by suffix (``.csv``,
``.jsonl``/``.ndjson``, ``.parquet``). Input rows are read one chunk at a time (CSV with
the standard ``csv`` module, JSON Lines line by line, Parquet with
``pyarrow.parquet.ParquetFile.iter_batches``), so memory is bounded by the chunk size
plus the set of ids seen (needed to detect duplicates).

Every input row appears exactly once in the output, in input order, as a result or with
an ``error`` message: empty or missing text, a value of the wrong type, oversize text, a
missing, malformed or duplicate id, or a row that cannot be read at all. Output columns
(:data:`~imr_outcome.serve.batch_sinks.OUTPUT_COLUMNS`): ``id`` (the row's id as text,
null when missing or malformed), the one output row of every path
(:data:`~imr_outcome.model.scoring.OUTPUT_FIELDS`: probabilities, label, band, base rate,
relative risk, warnings, ``error``, model name and version), ``evidence`` (``[]`` unless
asked for) and ``row`` (the row's 0-based position among the input's data rows, blank
lines skipped). A row with an ``error`` has null scores.

The list columns (``evidence``, ``warnings``, ``warning_details``) are JSON arrays in
JSON Lines output and JSON text in CSV and Parquet output. CSV input is UTF-8
unless its bytes say otherwise
(:func:`~imr_outcome.serve.batch_readers.csv_encoding` detects cp1252 files from Excel and
UTF-16 with charset-normalizer). Columns named like a pre-filing field (``patient_age``,
``patient_sex``, ...; see :func:`~imr_outcome.serve.batch_readers.prefiling_columns`) are
read as metadata without being mapped. A request or summary that is not text a model can
read (:func:`~imr_outcome.data.text_checks.check_text`) makes an error row; an empty
(0-byte) input file is refused.

Crash safety: CSV and JSON Lines outputs are appended one chunk at a time as whole lines
(every output row is a single line), flushed and fsynced; Parquet outputs are written as
one part file per chunk into ``<output>.parts/`` (each written to a temporary name, fsynced
and renamed) and combined into ``<output>`` at the end. ``resume=True`` reads the rows
already written (truncating a torn last line left by a killed run), skips them and
appends the rest, so a killed and resumed run writes the same rows as an uninterrupted one.

Reading is in :mod:`~imr_outcome.serve.batch_readers`, writing and resuming in
:mod:`~imr_outcome.serve.batch_sinks`; this module holds the row rules and the driver.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.prediction import Prediction
from imr_outcome.model.scoring import check_record, error_row, output_row, predict_each
from imr_outcome.serve.batch_readers import (
    Columns,
    RawRow,
    check_columns,
    checked_metadata_columns,
    count_rows,
    csv_encoding,
    file_format,
    prefiling_columns,
    read_header,
    read_rows,
)
from imr_outcome.serve.batch_sinks import open_sink
from imr_outcome.serve.predictor import PredictInput, Predictor

logger = logging.getLogger(__name__)

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
    record = {"request": values.get(columns.request), "summary": values.get(columns.summary)}
    record |= {field: values.get(column) for field, column in columns.metadata.items()}
    checked = check_record(record, max_chars)
    if isinstance(checked, str):
        return PreparedRow(raw.row, row_id, None, checked)
    return PreparedRow(raw.row, row_id, checked, None)


# ------------------------------------------------------------------------------ scoring


#: Rows per model call inside a chunk: the progress callback moves after each (a chunk
#: is also the unit of the fsynced write, 1,000 rows by default, far too coarse for a bar).
#: 32 rows fill the transformer's 32-window inference batches at least once.
PROGRESS_ROWS = 32


def predict_rows(
    predictor: Predictor, items: Sequence[PredictInput], explain: bool
) -> list[Prediction | str]:
    """Predictions for ``items``; when the batch fails, item by item (errors as text)."""
    return predict_each(lambda batch: predictor.predict_batch(batch, explain=explain), items)


def _record(
    prepared: PreparedRow, outcome: Prediction | str | None, predictor: Predictor
) -> dict[str, Any]:
    if isinstance(outcome, Prediction):
        row = output_row(outcome)
        evidence = [span.model_dump() for span in outcome.evidence]
    else:
        message = prepared.error or outcome or "unknown error"
        row = error_row(message, predictor.model_name, predictor.model_version)
        evidence = None
    return {"id": prepared.id, **row, "evidence": evidence, "row": prepared.row}


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
        progress: called after every :data:`PROGRESS_ROWS` rows scored and after each
            chunk with (rows done, total rows); the total is counted up front (one extra
            pass over CSV/JSON Lines) only when given.
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
    in_format, out_format = file_format(source, "input"), file_format(target, "output")
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
    header = read_header(in_format, source, encoding)
    metadata = prefiling_columns(header, metadata, [id_column, request_column, summary_column])
    columns = Columns(id_column, request_column, summary_column, metadata)
    check_columns(in_format, source, columns, header)
    total = count_rows(in_format, source, encoding) if progress is not None else None
    sink = open_sink(out_format, target, resume=resume, overwrite=overwrite)
    seen = {row_id for row_id in sink.done.values() if row_id is not None}
    rows = scored = failed = skipped = 0
    try:
        if progress is not None:
            progress(len(sink.done), total)
        reader = read_rows(in_format, source, columns, chunk_size, encoding)
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
            items = [p.item for p in todo if p.item]
            predicted: list[Prediction | str] = []
            for start in range(0, len(items), PROGRESS_ROWS):
                predicted += predict_rows(predictor, items[start : start + PROGRESS_ROWS], explain)
                if progress is not None and len(predicted) < len(items):  # the chunk's own
                    progress(len(sink.done) + scored + failed + len(predicted), total)  # follows
            outcomes = iter(predicted)
            records = [_record(p, next(outcomes) if p.item else None, predictor) for p in todo]
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

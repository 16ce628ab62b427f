"""Writing batch-scoring output crash-safely, and reading it back to resume.

Outputs are CSV, JSON Lines or Parquet with the columns :data:`OUTPUT_COLUMNS` (described in
:mod:`imr_outcome.serve.batch`). CSV and JSON Lines outputs are appended one chunk at a time
as whole lines (every output row is a single line), flushed and fsynced; Parquet outputs are
written as one part file per chunk into ``<output>.parts/`` (:func:`parts_dir`; each written
to a temporary name, fsynced and renamed) and combined into ``<output>`` at the end. A sink
opened with ``resume=True`` reads the rows already written (``Sink.done``), cutting a torn
last line left by a killed run, so that the run can skip them and append the rest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.scoring import OUTPUT_FIELDS
from imr_outcome.serve.batch_readers import Format

logger = logging.getLogger(__name__)

#: Output columns, in order: the id, the one output row
#: (:data:`~imr_outcome.model.scoring.OUTPUT_FIELDS`), the evidence and the row number.
OUTPUT_COLUMNS: tuple[str, ...] = ("id", *OUTPUT_FIELDS, "evidence", "row")
#: Output columns holding JSON lists: arrays in JSON Lines, JSON text in CSV and Parquet.
JSON_COLUMNS: tuple[str, ...] = (
    "evidence",
    "outcome_rates",
    "similar_ids",
    "warnings",
    "warning_details",
)
_FLOAT_COLUMNS = ("p_overturned", "p_upheld", "base_rate", "relative_risk")
#: The Parquet schema of the output (every column nullable).
OUTPUT_SCHEMA = pa.schema(
    [
        (
            name,
            pa.int64()
            if name == "row"
            else pa.float64()
            if name in _FLOAT_COLUMNS
            else pa.string(),
        )
        for name in OUTPUT_COLUMNS
    ]
)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class Sink(Protocol):
    """An open output: rows already written (when resumed), chunk writes, the final step."""

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


def open_sink(fmt: Format, path: Path, *, resume: bool, overwrite: bool) -> Sink:
    """The sink writing ``path``: resumed, replaced (``overwrite``) or new.

    Raises:
        InvalidInputError: ``path`` (or its parts folder) exists without ``resume`` or
            ``overwrite``, or an existing output was not written by ``imr-outcome score``.
    """
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

"""Build the dataset from rows streamed past it: audits, folds, fingerprint, files.

The global steps (duplicate ids, leakage audits, near-duplicate groups, folds, the check
that no merged group straddles folds, the fingerprint) need every row, but only a small
part of each: its id, group, label and time split, the findings of the per-row audits, a
MinHash of its summary, and its fingerprint bytes (kept on disk). :class:`DatasetBuilder`
takes rows as they are read (:func:`imr_outcome.data.ingest.iter_ingest`), writes their
cells to a working file per source and keeps just those parts, so the memory of
``imr-outcome data build`` stays flat in the number of letters; :meth:`DatasetBuilder.finish`
runs the global steps and writes each split batch by batch
(:class:`~imr_outcome.data.dataset_files.SplitWriter`). :func:`build_dataset` is the same
build for rows already in memory, so each step has one implementation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from imr_outcome.data.audit import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    LeakageFinding,
    NearDuplicateGroups,
    audit_display_only,
    dmhc_reasoning_findings,
    outcome_language_findings,
    straddling_groups,
)
from imr_outcome.data.dataset import (
    BATCH_ROWS,
    DERIVED_COLUMNS,
    BuildConfig,
    BuiltDataset,
    assign_folds,
    dataset_features,
    fingerprint_line,
    fingerprint_of_lines,
    load_dataset,
    record_cells,
    time_split,
)
from imr_outcome.data.dataset_files import SplitWriter, write_dataset_dict
from imr_outcome.data.schema import ItemRecord
from imr_outcome.errors import InvalidInputError, LeakageError

logger = logging.getLogger(__name__)


class _SourceRows:
    """The rows of one source so far: cells in an Arrow stream file, small parts here.

    Args:
        path: the working file for the cells (created).
        schema: the Arrow schema of the :class:`ItemRecord` columns.
        thresholds: the near-duplicate thresholds to group summaries at.
    """

    def __init__(self, path: Path, schema: pa.Schema, thresholds: Iterable[float]) -> None:
        self.path = path
        self._schema = schema
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, schema)
        self._pending: list[dict[str, Any]] = []
        self.group_ids: list[str] = []
        self.labels = array("b")
        self.time_splits: list[str | None] = []
        self.near_duplicates = {t: NearDuplicateGroups(threshold=t) for t in thresholds}

    def add(self, record: ItemRecord, cells: dict[str, Any], split: str | None) -> None:
        """Add one row: its ``cells`` (:func:`record_cells`) and its time ``split``."""
        self._pending.append(cells)
        if len(self._pending) >= BATCH_ROWS:
            self._flush()
        self.group_ids.append(record.group_id)
        self.labels.append(record.label)
        self.time_splits.append(split)
        for groups in self.near_duplicates.values():
            groups.add(record.group_id, record.summary)

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._pending, self._schema))
            self._pending = []

    def close(self) -> None:
        """Write the last rows and close the working file."""
        self._flush()
        self._writer.close()
        self._sink.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The cells back, in row order, a batch of up to :data:`BATCH_ROWS` rows at a
        time (ordinary reads, not a memory map)."""
        with pa.OSFile(str(self.path), "rb") as source:
            yield from pa.ipc.open_stream(source)


class DatasetBuilder:
    """The dataset build, fed rows a source file at a time; see the module docstring.

    Use one builder for one build: :meth:`add` the rows of every source, in file order,
    then :meth:`finish` once.

    Args:
        config: the build settings.
        workdir: a folder for the working files (created; the caller removes it).
    """

    def __init__(self, config: BuildConfig, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self._workdir = workdir
        self._features = dataset_features()
        self._record_schema = pa.schema(
            [f for f in self._features.arrow_schema if f.name not in DERIVED_COLUMNS]
        )
        self._thresholds = {config.near_duplicate_threshold, DEFAULT_NEAR_DUPLICATE_THRESHOLD}
        self._sources: dict[str, _SourceRows] = {}
        self._ids: list[str] = []
        self._lines_path = workdir / "fingerprint-lines"
        self._lines = self._lines_path.open("wb")
        self._line_ends = array("q")
        self._outcome_findings: list[LeakageFinding] = []
        self._reasoning_findings: list[LeakageFinding] = []

    def add(self, records: Iterable[ItemRecord]) -> None:
        """Add rows (of any source), in file order: their cells go to disk, the per-row
        audits run now, and only the small parts of each row stay in memory."""
        for record in records:
            cells = record_cells(record)
            self._lines.write(fingerprint_line(cells))
            self._line_ends.append(self._lines.tell())
            self._ids.append(record.id)
            self._outcome_findings.extend(outcome_language_findings(record))
            self._reasoning_findings.extend(dmhc_reasoning_findings(record))
            rows = self._sources.get(record.source)
            if rows is None:
                path = self._workdir / f"rows-{len(self._sources)}.arrow"
                rows = _SourceRows(path, self._record_schema, self._thresholds)
                self._sources[record.source] = rows
            cutoff = self.config.time_split_cutoffs.get(record.source)
            rows.add(record, cells, time_split(record.event_date, cutoff))

    def finish(self, out_dir: Path) -> BuiltDataset:
        """Check every row, assign folds, and write the dataset to ``out_dir``.

        Writes what :func:`~imr_outcome.data.dataset.save_dataset` writes (``hf/`` and
        ``items-<split>.parquet``), one split per source, rows in the order added.

        Args:
            out_dir: the output folder (created if missing); nothing is written there
                when a check fails.

        Returns:
            The :class:`BuiltDataset`, its splits memory-mapped from ``out_dir`` and its
            ``parquet`` files set.

        Raises:
            InvalidInputError: for no rows, duplicate ids, or too few groups for the folds.
            LeakageError: when a model input reads a display-only column or contains
                outcome language, or near-duplicate items would sit in different folds.
        """
        self._lines.close()
        for rows in self._sources.values():
            rows.close()
        self._check_rows()
        merged_total = 0
        derived: dict[str, tuple[list[str], list[int]]] = {}
        for source in sorted(self._sources):
            rows = self._sources[source]
            merged = rows.near_duplicates[self.config.near_duplicate_threshold].merged()
            merged_total += sum(1 for group, root in merged.items() if group != root)
            groups = [merged[group] for group in rows.group_ids]
            folds = assign_folds(rows.labels, groups, self.config.n_folds, self.config.seed)
            by_default = rows.near_duplicates[DEFAULT_NEAR_DUPLICATE_THRESHOLD].merged()
            straddling = straddling_groups(rows.group_ids, by_default, folds)
            if straddling:
                raise LeakageError(
                    f"near-duplicate items sit in different folds: groups {straddling[:5]}"
                )
            derived[source] = (groups, folds)
            logger.info("source %s: %d items, %d folds", source, len(folds), self.config.n_folds)
        digest = fingerprint_of_lines(self._lines_in_id_order(), self.config)
        parquet = {
            source: self._write_split(out_dir, source, *derived[source], digest)
            for source in sorted(self._sources)
        }
        write_dataset_dict(out_dir, sorted(self._sources))
        return BuiltDataset(
            dataset=load_dataset(out_dir),
            fingerprint=digest,
            config=self.config,
            merged_groups=merged_total,
            parquet=parquet,
        )

    def _check_rows(self) -> None:
        """The checks over all rows that come before the folds (see :meth:`finish`)."""
        if not self._ids:
            raise InvalidInputError("sources", "no items were read; check the source paths")
        id_counts = Counter(self._ids)
        if len(id_counts) != len(self._ids):
            duplicated = sorted(i for i, count in id_counts.items() if count > 1)[:5]
            raise InvalidInputError(
                "sources", f"duplicate item ids {duplicated}: was a letter given twice?"
            )
        read = audit_display_only()
        if read:
            raise LeakageError(f"model inputs read the display-only column(s) {read}")
        findings = self._outcome_findings + self._reasoning_findings
        if findings:
            shown = "; ".join(f"{f.item_id} {f.segment}: {f.pattern}" for f in findings[:5])
            raise LeakageError(
                f"{len(findings)} model input(s) contain outcome language, e.g. {shown}. "
                "Fix the parser so decision text stays out of the request and summary."
            )

    def _lines_in_id_order(self) -> Iterator[bytes]:
        """Every row's fingerprint line, read back from disk in id order."""
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        with self._lines_path.open("rb") as lines:
            for row in order:
                start = self._line_ends[row - 1] if row else 0
                lines.seek(start)
                yield lines.read(self._line_ends[row] - start)

    def _write_split(
        self, out_dir: Path, source: str, groups: list[str], folds: list[int], digest: str
    ) -> Path:
        """Write one source's split: its cells read back, plus the derived columns."""
        rows = self._sources[source]
        split_fingerprint = hashlib.sha256(f"{digest}\n{source}".encode()).hexdigest()[:16]
        schema = self._features.arrow_schema
        start = 0
        with SplitWriter(out_dir, source, self._features, split_fingerprint) as writer:
            for batch in rows.batches():
                stop = start + batch.num_rows
                derived = [
                    pa.array(groups[start:stop], pa.string()),
                    pa.array(folds[start:stop], pa.int32()),
                    pa.array(rows.time_splits[start:stop], pa.string()),
                ]
                writer.write(pa.RecordBatch.from_arrays([*batch.columns, *derived], schema=schema))
                start = stop
        return writer.parquet


def build_dataset(records: Sequence[ItemRecord], config: BuildConfig) -> BuiltDataset:
    """Assign folds, audit for leakage, and assemble the ``DatasetDict``, in memory.

    The :class:`DatasetBuilder` build, through a temporary folder, with the splits then
    read into memory.

    Args:
        records: rows from every source; ids must be unique.
        config: the build settings.

    Returns:
        The :class:`BuiltDataset` (``parquet`` empty: nothing stays on disk).

    Raises:
        InvalidInputError: for no rows, duplicate ids, or too few groups for the folds.
        LeakageError: when a model input reads a display-only column or contains
            outcome language, or near-duplicate items would sit in different folds.
    """
    with tempfile.TemporaryDirectory(prefix="imr-build-") as work:
        builder = DatasetBuilder(config, Path(work) / "rows")
        builder.add(records)
        built = builder.finish(Path(work) / "dataset")
        in_memory = load_dataset(Path(work) / "dataset", keep_in_memory=True)
    return dataclasses.replace(built, dataset=in_memory, parquet={})

"""Write dataset splits batch by batch: a Parquet file and a Hugging Face split each.

:func:`imr_outcome.data.dataset.save_dataset` writes a ``DatasetDict`` that is already
built, with ``datasets``. The streamed build (:mod:`imr_outcome.data.dataset_build`)
instead writes each batch of rows as it reads it back from its working files, so no
split is ever whole in memory; nor is it memory-mapped and read through, whose pages
would count as resident memory too. The files are the ones ``save_dataset`` writes: the
``DatasetDict.save_to_disk`` layout under ``hf/`` (one shard per split, written with
``datasets``' own ``ArrowWriter``), which :func:`~imr_outcome.data.dataset.load_dataset`
reads, and ``items-<split>.parquet`` with the same Arrow schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.arrow_writer import ArrowWriter

#: The folder of the Hugging Face copy, under a dataset's output folder.
HF_FOLDER = "hf"

#: The one shard file of a split in the Hugging Face layout.
SHARD_FILE = "data-00000-of-00001.arrow"


def parquet_path(out_dir: Path, split: str) -> Path:
    """The Parquet file of ``split`` in the output folder ``out_dir``."""
    return out_dir / f"items-{split}.parquet"


class SplitWriter:
    """Writes one split, batch by batch, to ``items-<split>.parquet`` and ``hf/<split>/``.

    Use as a context manager: the Hugging Face ``state.json`` and ``dataset_info.json``
    are written on a clean exit, so a failed build leaves no loadable split.

    Args:
        out_dir: the dataset's output folder (created if missing).
        split: the split name (the source, e.g. ``"dwc"``).
        features: the columns and their types; every batch must have this schema.
        fingerprint: the split's ``datasets`` fingerprint (16 hex digits), recorded in
            ``state.json`` for the library's caches.
    """

    def __init__(
        self, out_dir: Path, split: str, features: datasets.Features, fingerprint: str
    ) -> None:
        self.folder = out_dir / HF_FOLDER / split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.parquet = parquet_path(out_dir, split)
        self._features = features
        self._fingerprint = fingerprint
        self._schema = features.arrow_schema
        self._arrow = ArrowWriter(features=features, path=str(self.folder / SHARD_FILE))
        self._parquet = pq.ParquetWriter(self.parquet, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` (rows in dataset order, columns of ``features``) to both files.

        Raises:
            ValueError: when the batch's schema is not that of ``features``.
        """
        if not batch.schema.equals(self._schema, check_metadata=False):
            raise ValueError(f"batch schema {batch.schema} is not the split's {self._schema}")
        self._parquet.write_batch(batch)
        self._arrow.write_table(pa.Table.from_batches([batch]))

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._parquet.close()
        self._arrow.finalize()
        self._arrow.close()
        if exc_type is None:
            self._write_state()

    def _write_state(self) -> None:
        """``state.json`` as ``Dataset.save_to_disk`` writes it for an unformatted dataset
        of one shard, and ``dataset_info.json`` (the features)."""
        state: dict[str, object] = {
            "_data_files": [{"filename": SHARD_FILE}],
            "_fingerprint": self._fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.folder / datasets.config.DATASET_STATE_JSON_FILENAME).write_text(
            json.dumps(state, indent=2, sort_keys=True), encoding="utf-8"
        )
        datasets.DatasetInfo(features=self._features).write_to_directory(
            str(self.folder), pretty_print=True
        )


def write_dataset_dict(out_dir: Path, splits: Sequence[str]) -> Path:
    """Write ``hf/dataset_dict.json`` naming ``splits`` (written by :class:`SplitWriter`).

    Args:
        out_dir: the dataset's output folder.
        splits: the split names, in order.

    Returns:
        The ``hf`` folder, loadable with ``datasets.load_from_disk``.
    """
    folder = out_dir / HF_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / datasets.config.DATASETDICT_JSON_FILENAME).write_text(
        json.dumps({"splits": list(splits)}), encoding="utf-8"
    )
    return folder

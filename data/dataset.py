"""The itemized dataset: rows, build settings, folds, fingerprint, files on disk.

The build itself (records -> audits -> folds -> ``datasets.DatasetDict``) is in
:mod:`imr_outcome.data.dataset_build`. One row per disputed item. Each source (``dwc``
letters, ``dmhc`` table) is its own split of the ``DatasetDict``, because the two are
different prediction tasks with different inputs. Within a source, every row gets a
cross-validation fold from ``StratifiedGroupKFold`` over merged groups (letters whose
summaries are near-duplicates are one group), and optionally a time split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.audit import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    MAX_NEAR_DUPLICATE_THRESHOLD,
    LeakageFinding,
)
from imr_outcome.data.categories import request_category
from imr_outcome.data.dataset_files import HF_FOLDER, parquet_path
from imr_outcome.data.excerpt import rationale_excerpt
from imr_outcome.data.model_input import prefiling_metadata
from imr_outcome.data.schema import (
    DISPLAY_ONLY_FIELDS,
    LABELS,
    ItemRecord,
    Letter,
    OutcomeText,
)
from imr_outcome.errors import InvalidInputError

#: Version of the on-disk dataset layout; bump when columns change (2: the display-only
#: ``decision_date`` and ``rationale_excerpt``).
DATASET_FORMAT_VERSION = 2

#: Rows per batch where a split is written or read in batches.
BATCH_ROWS = 1000

#: The columns a build adds to the :class:`ItemRecord` fields.
DERIVED_COLUMNS: tuple[str, ...] = ("fold_group", "fold", "time_split")


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a dataset build (recorded in the card and the fingerprint).

    Attributes:
        n_folds: cross-validation folds per source, >= 2.
        seed: random seed for fold assignment.
        time_split_cutoffs: per source (``"dwc"``, ``"dmhc"``), rows whose
            ``event_date`` is before the cutoff get ``time_split="train"``, the rest
            ``"test"``; sources without a cutoff get no time split (None).
        near_duplicate_threshold: MinHash Jaccard threshold in (0, 0.98] above which two
            summaries are treated as the same case (:data:`MAX_NEAR_DUPLICATE_THRESHOLD`).
    """

    n_folds: int = 5
    seed: int = 13
    time_split_cutoffs: dict[str, dt.date] = field(default_factory=dict)
    near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise InvalidInputError("n_folds", f"must be >= 2, got {self.n_folds}")
        if not 0.0 < self.near_duplicate_threshold <= MAX_NEAR_DUPLICATE_THRESHOLD:
            raise InvalidInputError(
                "near_duplicate_threshold",
                f"must be in (0, {MAX_NEAR_DUPLICATE_THRESHOLD}], got "
                f"{self.near_duplicate_threshold}; MinHash LSH cannot band a higher "
                f"threshold, and {MAX_NEAR_DUPLICATE_THRESHOLD} already merges only "
                "near-identical summaries",
            )


@dataclass
class BuiltDataset:
    """The result of :func:`~imr_outcome.data.dataset_build.build_dataset`.

    Attributes:
        dataset: one split per source; columns are the :class:`ItemRecord` fields plus
            ``fold_group`` (merged group), ``fold`` (0..n_folds-1) and ``time_split``.
        fingerprint: SHA-256 hex digest of the rows and the build config.
        config: the build settings.
        merged_groups: number of groups merged into another by near-duplicate detection.
        leakage: outcome-language findings (empty, or the build would have failed).
        parquet: the Parquet file of each split when the build wrote the dataset to disk
            itself (:func:`imr_outcome.data.dataset_build.build_dataset_to_disk`; then
            ``dataset`` is memory-mapped from its folder); empty when built in memory.
    """

    dataset: datasets.DatasetDict
    fingerprint: str
    config: BuildConfig
    merged_groups: int
    leakage: list[LeakageFinding] = field(default_factory=list)
    parquet: dict[str, Path] = field(default_factory=dict)

    def batches(self, split: str, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The ``columns`` of ``split``, in row order, a table of up to
        :data:`BATCH_ROWS` rows at a time.

        A split written to disk is read from its Parquet file (ordinary reads, freed
        batch by batch), not through the memory-mapped ``dataset``, whose pages stay
        resident once read: a pass over a large split keeps memory flat.

        Args:
            split: a split name of ``dataset``.
            columns: column names.

        Returns:
            An iterator of Arrow tables with exactly ``columns``.
        """
        if split in self.parquet:
            parquet = pq.ParquetFile(self.parquet[split])
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
                yield pa.Table.from_batches([batch])
            return
        data = self.dataset[split].select_columns(list(columns)).with_format("arrow")
        yield from data.iter(batch_size=BATCH_ROWS)


def records_from_letter(letter: Letter) -> list[ItemRecord]:
    """Turn a parsed letter into dataset rows, one per disputed item.

    Args:
        letter: a parsed DWC letter.

    Returns:
        Rows with id ``<letter_id>#<item index>`` and group id ``<letter_id>``; each
        carries its decision date and the excerpt of its own rationale (display only).
    """
    rows: list[ItemRecord] = []
    for item in letter.items:
        rows.append(
            ItemRecord(
                id=f"{letter.letter_id}#{item.index}",
                group_id=letter.letter_id,
                source="dwc",
                source_file=letter.source,
                request=item.request.value,
                summary=letter.summary.value,
                label=item.outcome.decision.value.label_id,
                partial_authorization=item.partial_authorization,
                **prefiling_metadata(letter),
                request_category=request_category(item.request.value),
                reviewer_specialty=(
                    letter.reviewer.specialties[0] if letter.reviewer.specialties else None
                ),
                event_date=(
                    letter.date_assigned.value.isoformat() if letter.date_assigned else None
                ),
                report_year=letter.decision_date.value.year if letter.decision_date else None,
                decision_date=(
                    letter.decision_date.value.isoformat() if letter.decision_date else None
                ),
                rationale_excerpt=rationale_excerpt(item.outcome.rationale),
            )
        )
    return rows


def dataset_features() -> datasets.Features:
    """The columns of every split and their types: the :class:`ItemRecord` fields
    (``label`` a ``ClassLabel`` of :data:`LABELS`), then :data:`DERIVED_COLUMNS`."""
    types: dict[str, Any] = {}
    for f in dataclasses.fields(ItemRecord):
        if f.name == "label":
            types[f.name] = datasets.ClassLabel(names=list(LABELS))
        elif f.name == "partial_authorization":
            types[f.name] = datasets.Value("bool")
        elif f.name in ("patient_age", "report_year"):
            types[f.name] = datasets.Value("int32")
        else:
            types[f.name] = datasets.Value("string")
    types["fold_group"] = datasets.Value("string")
    types["fold"] = datasets.Value("int32")
    types["time_split"] = datasets.Value("string")
    return datasets.Features(types)


def assign_folds(
    labels: Sequence[int], groups: Sequence[str], n_folds: int, seed: int
) -> list[int]:
    """Assign each row a fold so that no group straddles folds, stratified by label.

    Uses scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded).

    Args:
        labels: the label of each row of one source.
        groups: the (merged) group of each row, aligned with ``labels``.
        n_folds: number of folds, >= 2.
        seed: random seed.

    Returns:
        The fold (0..n_folds-1) of each row.

    Raises:
        InvalidInputError: when there are fewer distinct groups than folds.
    """
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise InvalidInputError(
            "n_folds",
            f"{n_folds} folds need at least {n_folds} letters/cases, found {n_groups}; "
            "add sources or lower --folds",
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.zeros(len(labels), dtype=int)
    rows = np.zeros(len(labels))
    for fold, (_, test_index) in enumerate(splitter.split(rows, np.asarray(labels), groups)):
        folds[test_index] = fold
    return [int(f) for f in folds]


def time_split(event_date: str | None, cutoff: dt.date | None) -> str | None:
    """``"train"`` for an ISO ``event_date`` before ``cutoff``, else ``"test"``; None
    without a cutoff or a date."""
    if cutoff is None or event_date is None:
        return None
    return "train" if dt.date.fromisoformat(event_date) < cutoff else "test"


def fingerprint_line(cells: Mapping[str, Any]) -> bytes:
    """The bytes a row adds to the :func:`fingerprint`: its :func:`record_cells` as
    sorted-key JSON."""
    return json.dumps(cells, sort_keys=True).encode()


def fingerprint_of_lines(lines: Iterable[bytes], config: BuildConfig) -> str:
    """The :func:`fingerprint` from the :func:`fingerprint_line` of every row, in id order.

    Args:
        lines: one line per row, the rows sorted by id.
        config: the build settings.

    Returns:
        A 64-character hex digest.
    """
    digest = hashlib.sha256()
    digest.update(f"format={DATASET_FORMAT_VERSION}\n".encode())
    digest.update(json.dumps(dataclasses.asdict(config), default=str, sort_keys=True).encode())
    for line in lines:
        digest.update(b"\n")
        digest.update(line)
    return digest.hexdigest()


def fingerprint(records: Sequence[ItemRecord], config: BuildConfig) -> str:
    """SHA-256 over the rows (in id order) and the build config.

    Args:
        records: all rows.
        config: the build settings.

    Returns:
        A 64-character hex digest; equal inputs give equal digests.
    """
    ordered = sorted(records, key=lambda r: r.id)
    return fingerprint_of_lines((fingerprint_line(record_cells(r)) for r in ordered), config)


def _cell(value: Any) -> Any:
    """A record value as stored in the dataset: outcome text as its (display-only) text."""
    return value.reveal() if isinstance(value, OutcomeText) else value


def record_cells(record: ItemRecord) -> dict[str, Any]:
    """A record's fields as dataset cells (outcome text as its text), by column name."""
    return {f.name: _cell(getattr(record, f.name)) for f in dataclasses.fields(ItemRecord)}


def records_from_split(split: datasets.Dataset) -> list[ItemRecord]:
    """Turn a saved split back into the :class:`ItemRecord` rows it was built from.

    The derived columns (``fold_group``, ``fold``, ``time_split``) are dropped: they are
    recomputed by :func:`~imr_outcome.data.dataset_build.build_dataset`, so a snapshot
    plus new rows can be rebuilt.

    Args:
        split: one split of a dataset written by :func:`save_dataset`.

    Returns:
        The rows, in dataset order; ``label`` is the integer label id; the rationale
        excerpt comes back as :class:`OutcomeText` (offsets 0 to its length: the letter's
        offsets are not stored). A dataset of layout 1 (before the display-only columns)
        gives None for them.

    Raises:
        InvalidInputError: when the split lacks an :class:`ItemRecord` column.
    """
    names = [f.name for f in dataclasses.fields(ItemRecord)]
    missing = sorted(set(names) - set(split.column_names) - set(DISPLAY_ONLY_FIELDS))
    if missing:
        raise InvalidInputError(
            "dataset", f"missing columns {missing}; rebuild it with `imr-outcome data build`"
        )
    present = [name for name in names if name in split.column_names]
    columns = split.select_columns(present).to_dict()
    for name in DISPLAY_ONLY_FIELDS:
        columns.setdefault(name, [None] * len(split))
    columns["rationale_excerpt"] = [
        OutcomeText(text, 0, len(text)) if text else None for text in columns["rationale_excerpt"]
    ]
    return [ItemRecord(**{name: columns[name][i] for name in names}) for i in range(len(split))]


def save_dataset(built: BuiltDataset, out_dir: Path) -> dict[str, Path]:
    """Write the dataset to disk: Hugging Face format plus one Parquet file per split.

    Args:
        built: the dataset to write.
        out_dir: the output folder (created if missing).

    Returns:
        Paths written, keyed ``"hf"`` and ``"parquet:<split>"``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"hf": out_dir / HF_FOLDER}
    built.dataset.save_to_disk(str(written["hf"]))
    for split, data in built.dataset.items():
        path = parquet_path(out_dir, split)
        data.to_parquet(str(path))
        written[f"parquet:{split}"] = path
    return written


def load_dataset(out_dir: Path, *, keep_in_memory: bool = False) -> datasets.DatasetDict:
    """Load a dataset written by :func:`save_dataset` (or a build to disk).

    Args:
        out_dir: the folder given to ``save_dataset``.
        keep_in_memory: read the splits into memory instead of memory-mapping them.

    Returns:
        The ``DatasetDict``.

    Raises:
        InvalidInputError: when no dataset is found there.
    """
    hf = out_dir / HF_FOLDER
    if not (hf / "dataset_dict.json").is_file():
        raise InvalidInputError(
            "dataset", f"no dataset at {out_dir}; run `imr-outcome data build` first"
        )
    loaded = datasets.load_from_disk(str(hf), keep_in_memory=keep_in_memory)
    if not isinstance(loaded, datasets.DatasetDict):
        raise InvalidInputError("dataset", f"{hf} holds a single Dataset, not a DatasetDict")
    return loaded

"""Build the itemized dataset: records -> folds -> audited ``datasets.DatasetDict``.

One row per disputed item. Each source (``dwc`` letters, ``dmhc`` table) is its own
split of the ``DatasetDict``, because the two are different prediction tasks with
different inputs. Within a source, every row gets a cross-validation fold from
``StratifiedGroupKFold`` over merged groups (letters whose summaries are near-duplicates
are one group), and optionally a time split.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.audit import (
    LeakageFinding,
    audit_display_only,
    audit_outcome_language,
    folds_straddled,
    near_duplicate_groups,
)
from imr_outcome.data.categories import request_category
from imr_outcome.data.excerpt import rationale_excerpt
from imr_outcome.data.model_input import prefiling_metadata
from imr_outcome.data.schema import (
    DISPLAY_ONLY_FIELDS,
    LABELS,
    ItemRecord,
    Letter,
    OutcomeText,
)
from imr_outcome.errors import InvalidInputError, LeakageError

logger = logging.getLogger(__name__)

#: Version of the on-disk dataset layout; bump when columns change (2: the display-only
#: ``decision_date`` and ``rationale_excerpt``).
DATASET_FORMAT_VERSION = 2


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a dataset build (recorded in the card and the fingerprint).

    Attributes:
        n_folds: cross-validation folds per source, >= 2.
        seed: random seed for fold assignment.
        time_split_cutoffs: per source (``"dwc"``, ``"dmhc"``), rows whose
            ``event_date`` is before the cutoff get ``time_split="train"``, the rest
            ``"test"``; sources without a cutoff get no time split (None).
        near_duplicate_threshold: MinHash Jaccard threshold in (0, 1] above which two
            summaries are treated as the same case.
    """

    n_folds: int = 5
    seed: int = 13
    time_split_cutoffs: dict[str, dt.date] = field(default_factory=dict)
    near_duplicate_threshold: float = 0.8

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise InvalidInputError("n_folds", f"must be >= 2, got {self.n_folds}")
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise InvalidInputError(
                "near_duplicate_threshold",
                f"must be in (0, 1], got {self.near_duplicate_threshold}",
            )


@dataclass
class BuiltDataset:
    """The result of :func:`build_dataset`.

    Attributes:
        dataset: one split per source; columns are the :class:`ItemRecord` fields plus
            ``fold_group`` (merged group), ``fold`` (0..n_folds-1) and ``time_split``.
        fingerprint: SHA-256 hex digest of the rows and the build config.
        config: the build settings.
        merged_groups: number of groups merged into another by near-duplicate detection.
        leakage: outcome-language findings (empty, or the build would have failed).
    """

    dataset: datasets.DatasetDict
    fingerprint: str
    config: BuildConfig
    merged_groups: int
    leakage: list[LeakageFinding] = field(default_factory=list)


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


def _features() -> datasets.Features:
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
    records: Sequence[ItemRecord], groups: Sequence[str], n_folds: int, seed: int
) -> list[int]:
    """Assign each row a fold so that no group straddles folds, stratified by label.

    Uses scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded).

    Args:
        records: rows of one source.
        groups: the (merged) group of each row, aligned with ``records``.
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
    labels = np.array([r.label for r in records])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.zeros(len(records), dtype=int)
    for fold, (_, test_index) in enumerate(splitter.split(np.zeros(len(records)), labels, groups)):
        folds[test_index] = fold
    return [int(f) for f in folds]


def _time_split(record: ItemRecord, cutoff: dt.date | None) -> str | None:
    if cutoff is None or record.event_date is None:
        return None
    return "train" if dt.date.fromisoformat(record.event_date) < cutoff else "test"


def fingerprint(records: Sequence[ItemRecord], config: BuildConfig) -> str:
    """SHA-256 over the rows (in id order) and the build config.

    Args:
        records: all rows.
        config: the build settings.

    Returns:
        A 64-character hex digest; equal inputs give equal digests.
    """
    digest = hashlib.sha256()
    digest.update(f"format={DATASET_FORMAT_VERSION}\n".encode())
    digest.update(json.dumps(dataclasses.asdict(config), default=str, sort_keys=True).encode())
    for record in sorted(records, key=lambda r: r.id):
        digest.update(b"\n")
        digest.update(json.dumps(_row(record), sort_keys=True).encode())
    return digest.hexdigest()


def _cell(value: Any) -> Any:
    """A record value as stored in the dataset: outcome text as its (display-only) text."""
    return value.reveal() if isinstance(value, OutcomeText) else value


def _row(record: ItemRecord) -> dict[str, Any]:
    """A record's fields as dataset cells (see :func:`_cell`)."""
    return {f.name: _cell(getattr(record, f.name)) for f in dataclasses.fields(ItemRecord)}


def build_dataset(records: Sequence[ItemRecord], config: BuildConfig) -> BuiltDataset:
    """Assign folds, audit for leakage, and assemble the ``DatasetDict``.

    Args:
        records: rows from every source; ids must be unique.
        config: the build settings.

    Returns:
        The :class:`BuiltDataset`.

    Raises:
        InvalidInputError: for no rows, duplicate ids, or too few groups for the folds.
        LeakageError: when a model input reads a display-only column or contains
            outcome language, or near-duplicate items would sit in different folds.
    """
    if not records:
        raise InvalidInputError("sources", "no items were read; check the source paths")
    id_counts = Counter(r.id for r in records)
    if len(id_counts) != len(records):
        duplicated = sorted(i for i, count in id_counts.items() if count > 1)[:5]
        raise InvalidInputError(
            "sources", f"duplicate item ids {duplicated}: was a letter given twice?"
        )
    read = audit_display_only()
    if read:
        raise LeakageError(f"model inputs read the display-only column(s) {read}")
    findings = audit_outcome_language(records)
    if findings:
        shown = "; ".join(f"{f.item_id} {f.segment}: {f.pattern}" for f in findings[:5])
        raise LeakageError(
            f"{len(findings)} model input(s) contain outcome language, e.g. {shown}. "
            "Fix the parser so decision text stays out of the request and summary."
        )
    splits: dict[str, datasets.Dataset] = {}
    merged_total = 0
    features = _features()
    for source in sorted({r.source for r in records}):
        rows = [r for r in records if r.source == source]
        merged = near_duplicate_groups(rows, threshold=config.near_duplicate_threshold)
        merged_total += sum(1 for group, root in merged.items() if group != root)
        groups = [merged[r.group_id] for r in rows]
        folds = assign_folds(rows, groups, config.n_folds, config.seed)
        straddling = folds_straddled(rows, folds)
        if straddling:
            raise LeakageError(
                f"near-duplicate items sit in different folds: groups {straddling[:5]}"
            )
        table: dict[str, list[Any]] = {f.name: [] for f in dataclasses.fields(ItemRecord)}
        for record in rows:
            for name, values in table.items():
                values.append(_cell(getattr(record, name)))
        table["fold_group"] = groups
        table["fold"] = folds
        cutoff = config.time_split_cutoffs.get(source)
        table["time_split"] = [_time_split(r, cutoff) for r in rows]
        splits[source] = datasets.Dataset.from_dict(table, features=features)
        logger.info("source %s: %d items, %d folds", source, len(rows), config.n_folds)
    return BuiltDataset(
        dataset=datasets.DatasetDict(splits),
        fingerprint=fingerprint(records, config),
        config=config,
        merged_groups=merged_total,
    )


def records_from_split(split: datasets.Dataset) -> list[ItemRecord]:
    """Turn a saved split back into the :class:`ItemRecord` rows it was built from.

    The derived columns (``fold_group``, ``fold``, ``time_split``) are dropped: they are
    recomputed by :func:`build_dataset`, so a snapshot plus new rows can be rebuilt.

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
    written: dict[str, Path] = {"hf": out_dir / "hf"}
    built.dataset.save_to_disk(str(written["hf"]))
    for split, data in built.dataset.items():
        path = out_dir / f"items-{split}.parquet"
        data.to_parquet(str(path))
        written[f"parquet:{split}"] = path
    return written


def load_dataset(out_dir: Path) -> datasets.DatasetDict:
    """Load a dataset written by :func:`save_dataset`.

    Args:
        out_dir: the folder given to ``save_dataset``.

    Returns:
        The ``DatasetDict``.

    Raises:
        InvalidInputError: when no dataset is found there.
    """
    hf = out_dir / "hf"
    if not (hf / "dataset_dict.json").is_file():
        raise InvalidInputError(
            "dataset", f"no dataset at {out_dir}; run `imr-outcome data build` first"
        )
    loaded = datasets.load_from_disk(str(hf))
    if not isinstance(loaded, datasets.DatasetDict):
        raise InvalidInputError("dataset", f"{hf} holds a single Dataset, not a DatasetDict")
    return loaded

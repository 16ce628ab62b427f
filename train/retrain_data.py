"""The data side of a retrain: snapshot + new sources -> rebuilt dataset -> fair split.

* :func:`load_snapshot` reads the existing dataset snapshot (rows, fingerprint, build
  settings) so it can be rebuilt with the same settings.
* :func:`new_records` ingests the new sources and de-duplicates them by letter id (the
  case number, or the file stem when a letter's header lost it): a letter already in the
  snapshot, or given twice, counts once. The snapshot's rows win, so the rows a champion
  trained on never change under it.
* :func:`comparison_split` holds out part of the new letters for the champion/challenger
  comparison; the challenger trains on everything else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.dataset import BuildConfig, load_dataset, records_from_split
from imr_outcome.data.ingest import IngestReport, ingest
from imr_outcome.data.schema import LABELS, ItemRecord
from imr_outcome.errors import InvalidInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """An existing dataset snapshot written by ``imr-outcome data build`` (or a retrain).

    Attributes:
        directory: its folder.
        dataset: every split.
        records: the rows of every split, as built (derived columns dropped).
        fingerprint: the card's fingerprint (64 hex characters).
        build_config: the settings it was built with (reused for the rebuild).
    """

    directory: Path
    dataset: datasets.DatasetDict
    records: list[ItemRecord]
    fingerprint: str
    build_config: BuildConfig

    def group_ids(self, split: str) -> set[str]:
        """The letter/case ids of ``split``."""
        return {r.group_id for r in self.records if r.source == split}


def load_snapshot(directory: Path, split: str) -> Snapshot:
    """Load a dataset snapshot and check it has ``split`` with the project's label set.

    Args:
        directory: the snapshot folder (``data.dataset_dir``).
        split: the source split the run trains on (``"dwc"`` or ``"dmhc"``).

    Returns:
        The :class:`Snapshot`.

    Raises:
        InvalidInputError: no dataset or card there, no such split, or a label set other
            than :data:`~imr_outcome.data.schema.LABELS`.
    """
    dataset = load_dataset(directory)
    if split not in dataset:
        raise InvalidInputError(
            "data.split",
            f"{split!r} is not in {directory} (splits: {sorted(dataset)}); build the "
            "snapshot with that source first (`imr-outcome data build`)",
        )
    names = list(getattr(dataset[split].features["label"], "names", []))
    if names != list(LABELS):
        raise InvalidInputError(
            "data.dataset_dir",
            f"{directory} labels {names}, this code predicts {list(LABELS)}; rebuild it",
        )
    card_path = directory / "card.json"
    if not card_path.is_file():
        raise InvalidInputError("data.dataset_dir", f"{card_path} is missing; rebuild the dataset")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    settings = card["config"]
    build_config = BuildConfig(
        n_folds=int(settings["n_folds"]),
        seed=int(settings["seed"]),
        time_split_cutoffs={
            source: dt.date.fromisoformat(day)
            for source, day in settings.get("time_split_cutoffs", {}).items()
        },
        near_duplicate_threshold=float(settings["near_duplicate_threshold"]),
    )
    records = [r for name in sorted(dataset) for r in records_from_split(dataset[name])]
    return Snapshot(directory, dataset, records, str(card["fingerprint"]), build_config)


@dataclass(frozen=True)
class NewRecords:
    """What the new sources add to a snapshot.

    Attributes:
        records: rows of new letters only (of the trained split), de-duplicated.
        letters: ids of the new letters, sorted.
        duplicates: ids of letters already in the snapshot or given more than once.
        report: the full ingest report (failures, skips).
    """

    records: list[ItemRecord]
    letters: list[str]
    duplicates: list[str]
    report: IngestReport


def new_records(sources: Sequence[Path], snapshot: Snapshot, split: str) -> NewRecords:
    """Ingest ``sources`` and keep the rows of letters the snapshot does not hold.

    Args:
        sources: letter files or folders (and tables, for the ``dmhc`` split).
        snapshot: the snapshot the new rows are added to.
        split: the source split trained on; rows of other sources are ignored.

    Returns:
        The :class:`NewRecords`.

    Raises:
        InvalidInputError: no sources given, a path that does not exist, or sources
            that parse to zero new items (the message gives the counts).
    """
    if not sources:
        raise InvalidInputError("--sources", "give at least one letter file or folder")
    report = ingest(sources)
    known = snapshot.group_ids(split)
    first_file: dict[str, str] = {}
    duplicates: set[str] = set()
    kept: list[ItemRecord] = []
    for record in report.records:
        if record.source != split:
            continue
        group = record.group_id
        if group in known:
            duplicates.add(group)
            continue
        owner = first_file.setdefault(group, record.source_file)
        if owner != record.source_file:
            duplicates.add(group)
            continue
        kept.append(record)
    if not kept:
        raise InvalidInputError(
            "--sources",
            f"no new {split} items: {report.files_read} file(s) read, "
            f"{len(report.failures)} failed to parse, {len(duplicates)} letter(s) already in "
            f"the snapshot {snapshot.directory}; add letters that are not in it",
        )
    letters = sorted({r.group_id for r in kept})
    logger.info(
        "%d new letters (%d items); %d duplicates skipped", len(letters), len(kept), len(duplicates)
    )
    return NewRecords(kept, letters, sorted(duplicates), report)


@dataclass(frozen=True)
class ComparisonSplit:
    """Row indices of the rebuilt split for the challenger and for the comparison.

    Attributes:
        train: rows the challenger trains on (snapshot + the rest of the new letters).
        held_out: rows of the held-out new letters that neither model trained on.
        held_out_letters: their letter ids, sorted.
    """

    train: list[int]
    held_out: list[int]
    held_out_letters: list[str]


def comparison_split(
    split: datasets.Dataset,
    new_letters: Iterable[str],
    champion_letters: Iterable[str],
    *,
    fraction: float,
    seed: int,
) -> ComparisonSplit:
    """Hold out about ``fraction`` of the new letters, grouped and stratified by label.

    Only a merged fold group (``fold_group``: near-duplicate letters are one group) made
    entirely of new letters, none of them seen by the champion, may be held out; it is
    then excluded from the challenger's training as a whole. One fold of a seeded
    ``StratifiedGroupKFold(n_splits=round(1 / fraction))`` over those groups is held out.

    Args:
        split: the rebuilt split (columns ``group_id``, ``fold_group``, ``label``).
        new_letters: ids of the letters the new sources added.
        champion_letters: ids of the letters the champion was fitted or calibrated on.
        fraction: share of the eligible new letters to hold out, in (0, 1).
        seed: seeds the split.

    Returns:
        The :class:`ComparisonSplit`.

    Raises:
        InvalidInputError: too few eligible new letters, or held-out letters of one
            class only (the comparison needs both Upheld and Overturned items).
    """
    groups = list(split["group_id"])
    fold_groups = list(split["fold_group"])
    labels = np.asarray(split["label"], dtype=np.int64)
    new, seen = set(new_letters), set(champion_letters)
    members: dict[str, set[str]] = {}
    for group, fold_group in zip(groups, fold_groups, strict=True):
        members.setdefault(fold_group, set()).add(group)
    eligible = {fg for fg, letters in members.items() if letters <= new and not letters & seen}
    candidates = [i for i, fg in enumerate(fold_groups) if fg in eligible]
    n_splits = max(2, round(1 / fraction))
    if len(eligible) < n_splits:
        raise InvalidInputError(
            "--sources",
            f"{len(eligible)} new letter group(s) that the champion never saw; at least "
            f"{n_splits} are needed to hold out {fraction:g} of them for the comparison; "
            "add new letters or raise promotion.eval_fraction",
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, test = next(
        splitter.split(
            np.zeros(len(candidates)), labels[candidates], [fold_groups[i] for i in candidates]
        )
    )
    held_out = sorted(candidates[int(i)] for i in test)
    held_groups = {fold_groups[i] for i in held_out}
    n_overturned = int(labels[held_out].sum())
    if not 0 < n_overturned < len(held_out):
        raise InvalidInputError(
            "promotion.eval_fraction",
            f"the {len(held_groups)} held-out new letter group(s) hold {len(held_out)} items, "
            f"{n_overturned} Overturned: both Upheld and Overturned items are needed to "
            "compare AUROC; add new letters (with both outcomes) or raise "
            "promotion.eval_fraction",
        )
    train = [i for i, fg in enumerate(fold_groups) if fg not in held_groups]
    return ComparisonSplit(train, held_out, sorted({groups[i] for i in held_out}))

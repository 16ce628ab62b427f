from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from imr_outcome.data.dataset import BuildConfig, load_dataset, save_dataset
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.schema import LABELS, ItemRecord
from imr_outcome.errors import InvalidInputError, LeakageError

from records import make_record


def _records(n_groups: int = 20) -> list[ItemRecord]:
    rows = []
    for g in range(n_groups):
        for k in range(1 + g % 3):
            n = g * 10 + k
            rows.append(make_record(n, group=g, label=int(g % 4 == 0)))
    return rows


def test_folds_keep_each_letter_whole_and_stratify_labels() -> None:
    records = _records()

    built = build_dataset(records, BuildConfig(n_folds=4, seed=3))

    data = built.dataset["dwc"]
    assert len(data) == len(records)
    fold_of: dict[str, set[int]] = {}
    for group, fold in zip(data["group_id"], data["fold"], strict=True):
        fold_of.setdefault(group, set()).add(fold)
    assert all(len(folds) == 1 for folds in fold_of.values())
    assert set(data["fold"]) == {0, 1, 2, 3}
    positives_per_fold = [
        sum(1 for f, y in zip(data["fold"], data["label"], strict=True) if f == k and y == 1)
        for k in range(4)
    ]
    assert min(positives_per_fold) >= 1
    assert data.features["label"].names == list(LABELS)


def test_near_duplicate_letters_share_a_fold() -> None:
    records = _records()
    twin = dataclasses.replace(
        make_record(999, group=99, label=1), summary=records[0].summary + " Seen again."
    )

    built = build_dataset([*records, twin], BuildConfig(n_folds=5))

    data = built.dataset["dwc"].to_pandas()
    pair = data[data["group_id"].isin([records[0].group_id, twin.group_id])]
    assert pair["fold"].nunique() == 1
    assert set(pair["fold_group"]) == {records[0].group_id}
    assert built.merged_groups == 1


def test_fingerprint_is_stable_and_sensitive() -> None:
    records = _records()
    config = BuildConfig()

    first = build_dataset(records, config).fingerprint
    again = build_dataset(list(reversed(records)), config).fingerprint
    changed = build_dataset(
        [dataclasses.replace(records[0], label=1 - records[0].label), *records[1:]], config
    ).fingerprint

    assert first == again
    assert first != changed
    assert len(first) == 64


def test_time_split_uses_the_cutoff() -> None:
    records = _records()

    built = build_dataset(records, BuildConfig(time_split_cutoffs={"dwc": dt.date(2016, 7, 1)}))

    data = built.dataset["dwc"]
    for event_date, split in zip(data["event_date"], data["time_split"], strict=True):
        assert split == ("train" if event_date < "2016-07-01" else "test")


def test_duplicate_ids_are_rejected() -> None:
    records = _records()

    with pytest.raises(InvalidInputError, match=r"duplicate item ids \['CM99-0000000#0'\]"):
        build_dataset([*records, records[0]], BuildConfig())


def test_too_few_letters_for_the_folds_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="5 folds need at least 5 letters/cases, found 2"):
        build_dataset(_records(2), BuildConfig())


@pytest.mark.parametrize("threshold", [0.0, 0.99, 1.0])
def test_a_near_duplicate_threshold_lsh_cannot_band_is_refused(threshold: float) -> None:
    with pytest.raises(
        InvalidInputError, match=r"near_duplicate_threshold: must be in \(0, 0.98\]"
    ):
        BuildConfig(near_duplicate_threshold=threshold)


def test_the_highest_near_duplicate_threshold_builds() -> None:
    built = build_dataset(_records(), BuildConfig(near_duplicate_threshold=0.98))

    assert built.config.near_duplicate_threshold == 0.98


def test_leaky_input_fails_the_build() -> None:
    records = _records()
    leaky = dataclasses.replace(records[3], request="MRI of the knee: Upheld")

    with pytest.raises(LeakageError, match="1 model input"):
        build_dataset([*records[:3], leaky, *records[4:]], BuildConfig())


def test_bad_config_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"^n_folds: must be >= 2, got 1$"):
        BuildConfig(n_folds=1)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    built = build_dataset(_records(), BuildConfig())

    written = save_dataset(built, tmp_path)
    loaded = load_dataset(tmp_path)

    assert written["parquet:dwc"].is_file()
    assert loaded["dwc"].to_list() == built.dataset["dwc"].to_list()


def test_loading_a_missing_dataset_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="run `imr-outcome data build` first"):
        load_dataset(tmp_path)

"""The streamed build (rows fed a file at a time, written to disk) equals the in-memory one."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from imr_outcome.data.audit import near_duplicate_groups
from imr_outcome.data.card import build_card
from imr_outcome.data.dataset import (
    BATCH_ROWS,
    BuildConfig,
    assign_folds,
    fingerprint,
    load_dataset,
    save_dataset,
)
from imr_outcome.data.dataset_build import DatasetBuilder, build_dataset
from imr_outcome.data.ingest import IngestReport
from imr_outcome.data.schema import ItemRecord
from imr_outcome.errors import InvalidInputError, LeakageError

from records import make_record

CONFIG = BuildConfig(
    n_folds=3,
    seed=7,
    time_split_cutoffs={"dwc": dt.date(2016, 7, 1), "dmhc": dt.date(2016, 3, 1)},
)


def _records() -> list[ItemRecord]:
    """Two sources, interleaved (DMHC rows without a summary, as in the old tables);
    letters of 1-3 items; a near-duplicate pair of letters;
    ids out of file order (so the fingerprint's id order differs from the row order)."""
    rows: list[ItemRecord] = []
    for g in range(30, 0, -1):
        source = "dmhc" if g % 4 == 0 else "dwc"
        for k in range(1 + g % 3):
            row = make_record(g * 10 + k, group=g, label=int(g % 3 == 0), source=source)
            rows.append(dataclasses.replace(row, summary="") if source == "dmhc" else row)
    twin = make_record(999, group=99, label=1)
    rows.append(dataclasses.replace(twin, summary=rows[0].summary + " Seen again."))
    return rows


def _stream(records: list[ItemRecord], config: BuildConfig, work: Path) -> DatasetBuilder:
    """A builder fed ``records`` a letter (source file) at a time, in order."""
    builder = DatasetBuilder(config, work)
    by_letter: dict[str, list[ItemRecord]] = {}
    for record in records:
        by_letter.setdefault(record.group_id, []).append(record)
    for letter in by_letter.values():  # a source file at a time, in file order
        builder.add(letter)
    return builder


def test_the_streamed_build_writes_what_the_in_memory_build_saves(tmp_path: Path) -> None:
    records = _records()
    in_memory = build_dataset(records, CONFIG)
    save_dataset(in_memory, tmp_path / "saved")

    streamed = _stream(records, CONFIG, tmp_path / "work").finish(tmp_path / "out")

    assert streamed.fingerprint == in_memory.fingerprint == fingerprint(records, CONFIG)
    assert streamed.merged_groups == in_memory.merged_groups == 2  # the twin, and one more
    assert list(streamed.dataset) == ["dmhc", "dwc"]
    for split in ("dmhc", "dwc"):
        written = pd.read_parquet(tmp_path / "out" / f"items-{split}.parquet")
        saved = pd.read_parquet(tmp_path / "saved" / f"items-{split}.parquet")
        pd.testing.assert_frame_equal(written, saved)
        assert streamed.parquet[split] == tmp_path / "out" / f"items-{split}.parquet"
        reloaded = load_dataset(tmp_path / "out")[split]
        assert reloaded.features == in_memory.dataset[split].features
        assert reloaded.to_list() == in_memory.dataset[split].to_list()
    dwc = pd.read_parquet(tmp_path / "out" / "items-dwc.parquet")
    assert list(dwc["id"]) == [r.id for r in records if r.source == "dwc"]  # file order
    merged = near_duplicate_groups([r for r in records if r.source == "dwc"])
    assert list(dwc["fold_group"]) == [merged[g] for g in dwc["group_id"]]
    assert list(dwc["fold"]) == assign_folds(list(dwc["label"]), list(dwc["fold_group"]), 3, 7)
    assert dwc.groupby("fold_group")["fold"].nunique().max() == 1
    assert set(dwc["time_split"]) == {"train", "test"}


def test_the_card_of_a_streamed_build_equals_that_of_the_in_memory_build(tmp_path: Path) -> None:
    records = _records()
    streamed = _stream(records, CONFIG, tmp_path / "work").finish(tmp_path / "out")

    cards = [
        build_card(built, IngestReport(), ["tests"])
        for built in (streamed, build_dataset(records, CONFIG))
    ]

    for card in cards:
        card.pop("created")
    assert cards[0] == cards[1]
    assert cards[0]["splits"]["dwc"]["items"] == sum(r.source == "dwc" for r in records)


def test_a_split_larger_than_a_batch_keeps_its_rows_in_order(tmp_path: Path) -> None:
    records = [make_record(n, group=n // 2, label=n % 2) for n in range(BATCH_ROWS + 37)]

    built = _stream(records, BuildConfig(), tmp_path / "work").finish(tmp_path / "out")

    batches = list(built.batches("dwc", ["id", "fold"]))
    assert [len(batch) for batch in batches] == [BATCH_ROWS, 37]
    assert [i for batch in batches for i in batch.column("id").to_pylist()] == [
        r.id for r in records
    ]
    assert built.fingerprint == fingerprint(records, BuildConfig())


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda rows: [*rows, rows[0]],
            InvalidInputError,
            r"duplicate item ids \['CM99-0000030#300'\]",
        ),
        (
            lambda rows: [dataclasses.replace(rows[0], request="MRI: Overturned"), *rows[1:]],
            LeakageError,
            "1 model input",
        ),
        (lambda rows: [], InvalidInputError, "no items were read"),
    ],
)
def test_a_failed_check_raises_the_in_memory_error_and_writes_nothing(
    tmp_path: Path,
    change: Callable[[list[ItemRecord]], list[ItemRecord]],
    error: type[Exception],
    message: str,
) -> None:
    records = change(_records())
    builder = _stream(records, CONFIG, tmp_path / "work")

    with pytest.raises(error, match=message):
        builder.finish(tmp_path / "out")
    with pytest.raises(error, match=message):
        build_dataset(records, CONFIG)
    assert not (tmp_path / "out").exists()


def test_a_non_default_threshold_groups_at_it_and_still_checks_straddling(
    tmp_path: Path,
) -> None:
    records = _records()
    config = dataclasses.replace(CONFIG, near_duplicate_threshold=0.6)

    built = _stream(records, config, tmp_path / "work").finish(tmp_path / "out")

    merged = near_duplicate_groups([r for r in records if r.source == "dwc"], threshold=0.6)
    assert built.merged_groups == sum(group != root for group, root in merged.items()) > 2
    dwc = pd.read_parquet(built.parquet["dwc"])
    assert list(dwc["fold_group"]) == [merged[g] for g in dwc["group_id"]]
    assert built.fingerprint == fingerprint(records, config)

"""A small, learnable, invented dataset written the way `imr-outcome data build` writes it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from imr_outcome.data.card import build_card, write_card
from imr_outcome.data.dataset import BuildConfig, save_dataset
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.ingest import IngestReport
from imr_outcome.data.schema import ItemRecord

from records import make_record

OVERTURNED_CUE = "The physician documented functional improvement and return to full duty."
UPHELD_CUE = "There was no objective functional improvement after prior sessions."


def learnable_records(n_letters: int = 40) -> list[ItemRecord]:
    """Letters of 1-2 items; a quarter are Overturned, with a cue sentence in the summary."""
    rows = []
    for letter in range(n_letters):
        overturned = letter % 4 == 0
        for k in range(1 + letter % 2):
            base = make_record(letter * 10 + k, group=letter, label=int(overturned))
            cue = OVERTURNED_CUE if overturned else UPHELD_CUE
            rows.append(
                dataclasses.replace(
                    base,
                    summary=f"{base.summary} {cue}",
                    reviewer_specialty=("Family Practice", "Occupational Medicine")[letter % 2],
                    request_category="physical medicine",
                )
            )
    return rows


def write_dataset(directory: Path, records: list[ItemRecord] | None = None) -> Path:
    """Build, save and card the dataset into ``directory``; returns it."""
    config = BuildConfig(n_folds=4, seed=1, time_split_cutoffs={"dwc": dt.date(2016, 7, 1)})
    built = build_dataset(records or learnable_records(), config)
    save_dataset(built, directory)
    write_card(build_card(built, IngestReport(), ["tests"]), directory)
    return directory

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imr_outcome.data.audit import audit_display_only
from imr_outcome.data.dataset import (
    BuildConfig,
    load_dataset,
    records_from_letter,
    records_from_split,
    save_dataset,
)
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.excerpt import EXCERPT_CHARS, excerpt_text, rationale_excerpt
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.schema import DISPLAY_ONLY_FIELDS, MODEL_INPUT_FIELDS, OutcomeText

from conftest import LETTER_FIXTURES
from records import make_record

GOOD = ["single_upheld.txt", "mixed_multi.txt", "many_items.txt", "partial_authorization.txt"]


@pytest.mark.parametrize("name", GOOD)
def test_each_item_keeps_the_opening_sentences_of_its_own_rationale(name: str) -> None:
    letter = parse_letter_file(LETTER_FIXTURES / name)

    records = records_from_letter(letter)

    for item, record in zip(letter.items, records, strict=True):
        rationale = item.outcome.rationale
        assert rationale is not None
        excerpt = record.rationale_excerpt
        assert isinstance(excerpt, OutcomeText)
        text = excerpt.reveal()
        assert 0 < len(text) <= EXCERPT_CHARS
        assert " ".join(rationale.reveal().split()).startswith(text.removesuffix("…"))
        assert text.endswith((".", "…")) or text == rationale.reveal()
        assert record.decision_date == letter.decision_date.value.isoformat()  # type: ignore[union-attr]


def test_a_long_rationale_is_cut_at_the_last_sentence_that_fits() -> None:
    first = "The guidelines recommend a trial of four to six sessions of therapy. "
    text = first * 3 + "x" * 400

    assert excerpt_text(text) == (first * 3).strip()
    assert excerpt_text("word " * 200).endswith("…")
    assert len(excerpt_text("word " * 200)) <= EXCERPT_CHARS
    assert excerpt_text("Short rationale.") == "Short rationale."
    assert rationale_excerpt(None) is None
    assert rationale_excerpt(OutcomeText("   ", 0, 3)) is None


def test_the_excerpt_is_a_string_column_and_comes_back_as_outcome_text(tmp_path: Path) -> None:
    records = [
        dataclasses.replace(
            make_record(n, group=n, label=int(n % 4 == 0)),
            rationale_excerpt=OutcomeText(f"Rationale of item {n}.", 0, 20),
            decision_date="2016-12-01",
        )
        for n in range(12)
    ]
    built = build_dataset(records, BuildConfig(n_folds=3))
    save_dataset(built, tmp_path)

    split = load_dataset(tmp_path)["dwc"]
    back = records_from_split(split)

    assert split["rationale_excerpt"][3] == "Rationale of item 3."
    assert isinstance(back[3].rationale_excerpt, OutcomeText)
    assert back[3].rationale_excerpt.reveal() == "Rationale of item 3."
    assert back[3].decision_date == "2016-12-01"
    assert "Rationale of item 3." not in str(back[3])


def test_no_model_input_column_is_display_only() -> None:
    assert audit_display_only() == []
    assert audit_display_only([*MODEL_INPUT_FIELDS, "rationale_excerpt"]) == ["rationale_excerpt"]
    assert set(DISPLAY_ONLY_FIELDS).isdisjoint(MODEL_INPUT_FIELDS)

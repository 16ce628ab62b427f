from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from imr_outcome.data.model_input import build_model_input
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.model import OutcomeModel
from imr_outcome.train.faithfulness import (
    FaithfulnessReport,
    erase,
    faithfulness,
    items_of,
    pooled,
    rationale_sizes,
)
from imr_outcome.train.pipeline import Rows

from toy_cue import CUE, Item, toy_frame, toy_transformer
from toy_cue import toy_inputs as _inputs
from toy_cue import toy_items as _items
from toy_cue import wrap_toy as _wrap


@pytest.fixture(scope="module")
def transformer(tiny_bert: Path) -> OutcomeModel:
    return _wrap(toy_transformer(tiny_bert), "integrated_gradients")


@pytest.fixture(scope="module")
def tfidf() -> TfidfLogReg:
    items, labels = _items(24, seed=0)
    return TfidfLogReg(ngram_max=1, min_df=1).fit(toy_frame(items), labels)


def _check_ranges(report: FaithfulnessReport, n_items: int) -> None:
    assert report.n_items == n_items
    for value in (
        report.comprehensiveness,
        report.sufficiency,
        report.random_comprehensiveness,
        report.random_sufficiency,
    ):
        assert -1.0 <= value <= 1.0


def test_integrated_gradients_beat_random_words_on_a_cue_model(
    transformer: OutcomeModel,
) -> None:
    # Training items (the toy model fits them all; unseen filler orders it may not).
    items, labels = _items(16, seed=0)
    assert transformer.predict(_inputs(items)) == [LABELS[y] for y in labels]

    # The saturated toy model flips sharply along the path: 16 points can miss the flip.
    report = faithfulness(transformer, items, seed=0, n_steps=128)

    _check_ranges(report, 16)
    assert report.comprehensiveness > report.random_comprehensiveness + 0.05, report
    assert report.ratio == pytest.approx(report.comprehensiveness / report.random_comprehensiveness)
    assert report.ratio > 1.0


def test_tfidf_coefficients_beat_random_words_and_suffice(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    items, _ = _items(20, seed=3, n_filler=4)

    report = faithfulness(model, items, seed=0)

    _check_ranges(report, 20)
    assert report.comprehensiveness > report.random_comprehensiveness + 0.05
    assert report.sufficiency < report.random_sufficiency


def test_the_random_baseline_is_seeded(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    items, _ = _items(10, seed=4, n_filler=4)

    first = faithfulness(model, items, seed=5)
    again = faithfulness(model, items, seed=5)
    other = faithfulness(model, items, seed=6)

    assert first == again
    assert other.comprehensiveness == first.comprehensiveness
    assert (other.random_comprehensiveness, other.random_sufficiency) != (
        first.random_comprehensiveness,
        first.random_sufficiency,
    )


def test_a_one_word_request_can_be_erased_entirely(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    items: list[Item] = [("Physiotherapy", CUE[1], {"patient_age": 40}), ("MRI", CUE[0], None)]

    report = faithfulness(model, items)

    _check_ranges(report, 2)


def test_faithfulness_needs_items_and_an_explainer_that_scores_words(
    tfidf: TfidfLogReg,
) -> None:
    with pytest.raises(InvalidInputError, match="items: expected at least one"):
        faithfulness(_wrap(tfidf, "tfidf_coefficients"), [])
    with pytest.raises(IncompatibleModelError, match="explainer 'none' scores no words"):
        faithfulness(_wrap(tfidf, "none"), _items(2, seed=0)[0])


def test_ratio_is_nan_without_a_random_effect() -> None:
    report = FaithfulnessReport(0.2, 0.1, 0.0, 0.1, n_items=3)

    assert math.isnan(report.ratio)


def test_excess_over_random_keeps_its_sign_when_random_removal_helps() -> None:
    faithful = FaithfulnessReport(0.067, -0.05, -0.005, 0.007, n_items=40)
    unfaithful = FaithfulnessReport(-0.019, 0.01, -0.005, 0.007, n_items=40)

    assert faithful.excess == pytest.approx(0.072)
    assert unfaithful.excess == pytest.approx(-0.014)
    # the ratio ranks them the wrong way round when the random baseline is negative
    assert unfaithful.ratio > faithful.ratio


def test_erase_deletes_exactly_the_given_characters() -> None:
    assert erase("No\timprovement  documented.", [(16, 27), (0, 2)]) == "\timprovement  "
    assert erase("café 東京", []) == "café 東京"


def test_rationale_sizes_round_up_and_keep_at_least_one_word() -> None:
    assert rationale_sizes(10) == [1, 1, 1, 2, 5]
    assert rationale_sizes(3) == [1, 1, 1, 1, 2]
    assert rationale_sizes(1) == [1, 1, 1, 1, 1]
    assert rationale_sizes(200) == [2, 10, 20, 40, 100]


def test_items_of_recovers_the_strings_the_model_read() -> None:
    items, labels = _items(6, seed=1)
    inputs = _inputs(items)
    rows = Rows(
        ids=[str(i) for i in range(6)],
        groups=[str(i) for i in range(6)],
        inputs=inputs,
        metadata=[dict(metadata or {}) for _, _, metadata in items],
        labels=np.array(labels, dtype=np.int64),
        context={},
    )

    drawn = items_of(rows, 4, seed=0)
    everything = items_of(rows, 10, seed=0)

    assert len(drawn) == 4
    assert drawn == items_of(rows, 4, seed=0)
    assert [(r, s) for r, s, _ in everything] == [(r, s) for r, s, _ in items]
    for request, summary, metadata in drawn:
        rebuilt = build_model_input(request, summary, metadata)
        assert rebuilt in inputs
    with pytest.raises(InvalidInputError, match="n: expected at least 1"):
        items_of(rows, 0, seed=0)


def test_pooled_reports_weight_by_items() -> None:
    one = FaithfulnessReport(0.4, 0.1, 0.2, 0.3, n_items=1)
    three = FaithfulnessReport(0.0, 0.5, 0.2, 0.3, n_items=3)

    both = pooled([one, three])

    assert both.n_items == 4
    assert both.comprehensiveness == pytest.approx(0.1)
    assert both.sufficiency == pytest.approx(0.4)
    assert both.random_comprehensiveness == pytest.approx(0.2)
    with pytest.raises(InvalidInputError, match="reports"):
        pooled([])

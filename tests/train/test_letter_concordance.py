"""Within-letter concordance and spread on hand-made letters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imr_outcome.errors import InvalidInputError
from imr_outcome.train.letter_concordance import (
    letter_pairs,
    within_letter_concordance,
    within_letter_spread,
)

# Letter A: one Overturned (0.6) and two Upheld (0.2, 0.7); letter B: all Upheld;
# letter C: one Overturned tied with its Upheld item.
GROUPS = ["A", "A", "A", "B", "B", "C", "C"]
LABELS = [1, 0, 0, 0, 0, 1, 0]
SCORES = [0.6, 0.2, 0.7, 0.1, 0.1, 0.4, 0.4]


def test_pairs_are_counted_only_inside_letters_with_both_outcomes() -> None:
    letters = letter_pairs(GROUPS, LABELS, SCORES)

    assert [(letter.correct, letter.pairs) for letter in letters] == [(1.0, 2), (0.5, 1)]


def test_concordance_pools_the_pairs_of_every_mixed_letter() -> None:
    point, low, high, n_pairs, n_letters = within_letter_concordance(GROUPS, LABELS, SCORES)

    assert point == pytest.approx(1.5 / 3)
    assert (n_pairs, n_letters) == (3, 2)
    assert 0.0 <= low <= point <= high <= 1.0


def test_a_model_that_scores_every_item_of_a_letter_alike_is_a_coin() -> None:
    letter_score = {"A": 0.3, "B": 0.1, "C": 0.9}
    same = [letter_score[g] for g in GROUPS]

    point, *_ = within_letter_concordance(GROUPS, LABELS, same)
    spread = within_letter_spread(GROUPS, same)

    assert point == 0.5
    assert spread["median_spread"] == spread["max_spread"] == 0.0
    assert spread["within_variance_share"] == 0.0


def test_spread_and_within_variance_share() -> None:
    spread = within_letter_spread(GROUPS, SCORES)
    p = np.array(SCORES)
    within = sum(
        (
            (
                p[[i for i, g in enumerate(GROUPS) if g == k]]
                - p[[i for i, g in enumerate(GROUPS) if g == k]].mean()
            )
            ** 2
        ).sum()
        for k in "ABC"
    )

    assert spread["median_spread"] == pytest.approx(0.0)  # A 0.5, B 0, C 0
    assert spread["max_spread"] == pytest.approx(0.5)
    assert spread["within_variance_share"] == pytest.approx(within / ((p - p.mean()) ** 2).sum())
    assert spread["letters"] == 3


def test_no_mixed_letter_gives_nan_and_mismatched_lengths_are_refused() -> None:
    point, low, high, n_pairs, n_letters = within_letter_concordance(["A", "B"], [0, 1], [0.1, 0.9])
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)
    assert (n_pairs, n_letters) == (0, 0)
    with pytest.raises(InvalidInputError, match="differ in length: 2, 2, 1"):
        within_letter_concordance(["A", "B"], [0, 1], [0.1])

from __future__ import annotations

import numpy as np
import pytest

from imr_outcome.errors import InvalidInputError
from imr_outcome.train.threshold import choose_threshold

# Five items; predicted Overturned when p >= t. Candidates: the p values, .5 and 1.
#   p  .1 .3 .4 .6 .8
#   y   0  1  0  1  1
#   t     TP FP FN   F1 = 2TP/(2TP+FP+FN)   cost = FP + c*FN
#   .1    3  2  0    6/8 = .750             2
#   .3    3  1  0    6/7 = .857             1
#   .4    2  1  1    4/6 = .667             1 + c
#   .5    2  0  1    4/5 = .800             c
#   .6    2  0  1    4/5 = .800             c
#   .8    1  0  2    2/4 = .500             2c
#   1.0   0  0  3    0                      3c
Y = [0, 1, 0, 1, 1]
P = [0.1, 0.3, 0.4, 0.6, 0.8]


def test_f1_threshold_matches_the_hand_computed_table() -> None:
    assert choose_threshold(Y, P) == 0.3


def test_f1_ties_go_to_the_threshold_closest_to_one_half() -> None:
    # p .1 .2 .6 .8 / y 1 0 0 1: t=.1 gives 2TP 2FP -> 4/6; t=.8 gives 1TP 1FN -> 2/3;
    # t=.2 -> 2/5, t=.5 and .6 -> 2/4. The tie .1 vs .8 goes to .8 (.3 from .5, not .4).
    assert choose_threshold([1, 0, 0, 1], [0.1, 0.2, 0.6, 0.8]) == 0.8


def test_one_half_is_a_candidate_even_when_no_p_equals_it() -> None:
    # p .2 .9 / y 0 1: t=.2 -> F1 2/3; t=.5 and t=.9 -> F1 1; .5 is closer to .5.
    assert choose_threshold([0, 1], [0.2, 0.9]) == 0.5


@pytest.mark.parametrize(
    ("cost_ratio", "expected"),
    [
        (4.0, 0.3),  # costs 2, 1, 5, 4, 4, 8, 12 -> .3
        # costs 2, 1, 1.5, .5, .5, 1, 1.5 -> tie .5 / .6, Bayes point 1/1.5 = .667 -> .6
        (0.5, 0.6),
    ],
)
def test_cost_threshold_matches_the_hand_computed_table(cost_ratio: float, expected: float) -> None:
    assert choose_threshold(Y, P, objective="cost", cost_ratio=cost_ratio) == expected


def test_cost_can_choose_to_flag_nothing() -> None:
    # p .2 .6 .9 / y 0 1 0, c = .5: t=.2 -> 2 FP = 2; t=.5/.6 -> 1 FP = 1; t=.9 -> 1 FP +
    # 1 FN = 1.5; t=1 -> 1 FN = .5. A miss is cheap, so flag nothing.
    assert choose_threshold([0, 1, 0], [0.2, 0.6, 0.9], objective="cost", cost_ratio=0.5) == 1.0


@pytest.mark.parametrize("cost_ratio", [1.0, 3.0, 9.0])
def test_cost_threshold_on_calibrated_p_is_near_the_bayes_threshold(cost_ratio: float) -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(p.size) < p).astype(int)  # p is the true P(Overturned)

    chosen = choose_threshold(y, p, objective="cost", cost_ratio=cost_ratio)

    assert chosen == pytest.approx(1 / (1 + cost_ratio), abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"objective": "accuracy"},
            "objective: expected one of ['bayes', 'f1', 'cost'], found 'accuracy'",
        ),
        (
            {"objective": "cost"},
            "cost_ratio: expected a positive number with objective='cost', found None",
        ),
        (
            {"objective": "cost", "cost_ratio": -2.0},
            "cost_ratio: expected a positive number with objective='cost', found -2.0",
        ),
        (
            {"cost_ratio": 3.0},
            "cost_ratio: applies only to objective='cost', found 3.0 with objective='f1'; "
            "drop it or set objective='cost'",
        ),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        choose_threshold(Y, P, **kwargs)  # type: ignore[arg-type]

    assert str(excinfo.value) == message


def test_f1_needs_an_overturned_label() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        choose_threshold([0, 0], [0.2, 0.7])

    assert str(excinfo.value) == (
        "y_true: expected at least one Overturned (1) label to choose an F1 threshold"
    )


def test_probabilities_are_validated() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        choose_threshold(Y, [0.1, 0.3, 0.4, 0.6, 3.2])

    assert excinfo.value.field == "p_overturned"


@pytest.mark.parametrize(("cost_ratio", "expected"), [(None, 0.5), (1.0, 0.5), (4.0, 0.2)])
def test_bayes_threshold_is_fixed_by_the_cost_ratio(
    cost_ratio: float | None, expected: float
) -> None:
    # the same value for any scores: it does not move when the model is refitted
    assert choose_threshold(Y, P, objective="bayes", cost_ratio=cost_ratio) == expected
    assert choose_threshold(Y, P[::-1], objective="bayes", cost_ratio=cost_ratio) == expected

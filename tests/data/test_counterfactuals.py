from __future__ import annotations

import pytest

from imr_outcome.data.counterfactuals import (
    REWRITES,
    augment_rows,
    dates_to_long,
    dates_to_numeric,
    normalize_text,
    sex_swap,
    two_digit_year,
)
from imr_outcome.errors import InvalidInputError


def test_rewrites_are_named() -> None:
    assert set(REWRITES) == {
        "house_style_to_patient",
        "house_style_to_injured_worker",
        "house_style_to_applicant",
        "sex_swap",
        "dates_to_long",
        "dates_to_numeric",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He said his knee hurt.", "She said her knee hurt."),
        ("She said her knee hurt.", "He said his knee hurt."),
        (
            "The doctor told her that surgery was an option.",
            "The doctor told him that surgery was an option.",
        ),
        ("Therapy helped her.", "Therapy helped him."),
        ("It was hard for her to walk.", "It was hard for him to walk."),
        ("Her left shoulder and her 2 sessions.", "His left shoulder and his 2 sessions."),
        ("She hurt herself; he hurt himself.", "He hurt himself; she hurt herself."),
        ("A 40-year-old male, a man, two men.", "A 40-year-old female, a woman, two women."),
        ("A 40-year-old female, a woman.", "A 40-year-old male, a man."),
        ("The gentleman and the lady.", "The lady and the gentleman."),
        ("Mr. Smith met Ms. Jones and Mrs. Lee.", "Ms. Smith met Mr. Jones and Mr. Lee."),
        ("HE SAID", "SHE SAID"),
        ("The book is hers.", "The book is his."),
    ],
)
def test_sex_swap(text: str, expected: str) -> None:
    assert sex_swap(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The mechanic fixed the manual therapy machine; MS was ruled out.",
        "Theme: the hemangioma and the shell.",
        "Msg sent. Mr",
    ],
)
def test_sex_swap_leaves_other_words(text: str) -> None:
    assert sex_swap(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Injury on 3/17/14.", "Injury on March 17, 2014."),
        ("Injury on 03/17/2014.", "Injury on March 17, 2014."),
        ("Seen 10-13-16 and 1-3-17.", "Seen October 13, 2016 and January 3, 2017."),
        ("Born 03-17-1956.", "Born March 17, 1956."),
        ("Born 3/17/69; seen 3/17/68.", "Born March 17, 1969; seen March 17, 2068."),
        ("Pain 7/10 at L4-5, PT 2x6.", "Pain 7/10 at L4-5, PT 2x6."),
        ("Codes 1/2/3/4 and 2/30/16 and 13/02/2014.", "Codes 1/2/3/4 and 2/30/16 and 13/02/2014."),
        ("Mixed 3/17-14 separators.", "Mixed 3/17-14 separators."),
    ],
)
def test_dates_to_long(text: str, expected: str) -> None:
    assert dates_to_long(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Injury on March 17, 2014.", "Injury on 3/17/2014."),
        ("Seen November 05, 2016 and Sept. 3rd 2015.", "Seen 11/5/2016 and 9/3/2015."),
        ("Seen Oct 1 2016.", "Seen 10/1/2016."),
        (
            "Since March 2014; on February 30, 2016; in may 5, 2016.",
            "Since March 2014; on February 30, 2016; in may 5, 2016.",
        ),
    ],
)
def test_dates_to_numeric(text: str, expected: str) -> None:
    assert dates_to_numeric(text) == expected


def test_dates_round_trip() -> None:
    text = "Injured on 3/17/2014, seen 10/1/2016."
    assert dates_to_numeric(dates_to_long(text)) == text


def test_two_digit_year_pivot() -> None:
    assert [two_digit_year(y) for y in (0, 14, 68, 69, 99)] == [2000, 2014, 2068, 1969, 1999]


def test_normalize_text_undoes_every_rewrite_with_offsets() -> None:
    text = "The injured worker is a 40-year-old woman injured on 3/17/14. She fell."
    expected = "The patient is a 40-year-old man injured on March 17, 2014. He fell."
    normalized = normalize_text(text, sex=True)
    assert normalized.text == expected
    for rewrite in REWRITES.values():
        assert normalize_text(rewrite(text), sex=True).text == expected
    start = expected.index("injured on")
    assert normalized.to_source_span(start, start + len("injured on")) == (
        text.index("injured on"),
        text.index("injured on") + len("injured on"),
    )
    start = expected.index("March")
    span = normalized.to_source_span(start, start + len("March 17, 2014"))
    assert text[span[0] : span[1]] == "3/17/14"
    assert normalize_text(text).text == (
        "The patient is a 40-year-old woman injured on March 17, 2014. She fell."
    )


ROWS = [
    ("MRI of the knee", "The injured worker is a man. He fell.", 1),
    ("Physical therapy", "The patient is a woman. She fell.", 0),
    ("Acupuncture", "Knee pain after a fall.", 0),
]


def test_augment_rows_flips_house_style_and_keeps_labels() -> None:
    copies = augment_rows(ROWS, seed=0, sex_swap_fraction=0.0)
    assert [(c.source_index, c.summary, c.label, c.rewrites) for c in copies] == [
        (0, "The patient is a man. He fell.", 1, ("house_style_to_patient",)),
        (1, "The injured worker is a woman. She fell.", 0, ("house_style_to_injured_worker",)),
    ]


def test_augment_rows_sex_swaps_all_with_fraction_one_and_is_seeded() -> None:
    copies = augment_rows(ROWS, seed=3, sex_swap_fraction=1.0)
    assert [c.summary for c in copies] == [
        "The patient is a woman. She fell.",
        "The injured worker is a man. He fell.",
    ]
    assert all(c.rewrites[-1] == "sex_swap" for c in copies)
    half = augment_rows(ROWS * 20, seed=7, sex_swap_fraction=0.5)
    assert half == augment_rows(ROWS * 20, seed=7, sex_swap_fraction=0.5)
    swapped = sum("sex_swap" in c.rewrites for c in half)
    assert 0 < swapped < len(half)


def test_augment_rows_rejects_a_bad_fraction() -> None:
    with pytest.raises(
        InvalidInputError, match="sex_swap_fraction: expected a share between 0 and 1"
    ):
        augment_rows(ROWS, sex_swap_fraction=1.5)

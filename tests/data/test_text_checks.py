"""check_text / check_unicode: lone surrogates and text without letters are invalid input."""

from __future__ import annotations

import json
import re

import pytest

from imr_outcome.data.text_checks import LETTER_PATTERN, check_text, check_unicode
from imr_outcome.errors import InvalidInputError


@pytest.mark.parametrize(
    "text",
    [
        "Physical therapy 6 sessions for the lumbar spine",
        "x",
        "Norco 10/325mg #90",
        "\u041c\u0420\u0422 \u0441\u043f\u0438\u043d\u044b"  # Cyrillic,
        "腰椎 MRI",
        json.loads('"TENS \\ud83d\\ude00 unit"'),  # a surrogate pair decodes to one character
        "\x00MRI\x07",
    ],
)
def test_text_with_a_letter_is_returned_unchanged(text: str) -> None:
    assert check_text("request", text) is text


@pytest.mark.parametrize(
    ("text", "code_point", "at"),
    [
        (json.loads('"\\ud800MRI"'), "D800", 0),
        ("MRI \udfff", "DFFF", 4),
        ("lumbar " + json.loads('"\\ude00\\ud83d"'), "DE00", 7),  # a pair in the wrong order
    ],
)
def test_a_lone_surrogate_is_refused_with_its_position(text: str, code_point: str, at: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_text("items[2].summary", text)

    assert caught.value.field == "items[2].summary"
    assert caught.value.reason.startswith(
        f"holds an unpaired UTF-16 surrogate (U+{code_point}) at character {at}, which is "
        "not text; send valid Unicode"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty; write it out in words"),
        ("  \t\r\n ", "is empty; write it out in words"),
        (
            "\x00\x01\x1f",
            "has no letters (only digits, punctuation, symbols or control characters)",
        ),
        ("?!... -- ##", "has no letters"),
        ("12/03/2015 4.5 #90", "has no letters"),
        ("___ -- 0_9", "has no letters"),
        ("\u2014 \u2022 \u00a7\u00a7", "has no letters"),
    ],
    ids=["empty", "whitespace", "controls", "punctuation", "digits", "underscore", "symbols"],
)
def test_text_without_letters_is_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_text("summary", text)

    assert caught.value.field == "summary"
    assert caught.value.reason.startswith(reason)
    assert caught.value.reason.endswith("write it out in words")


def test_check_unicode_allows_text_without_letters() -> None:
    assert check_unicode("metadata.age_range", "41-50") == "41-50"
    with pytest.raises(InvalidInputError, match=r"^metadata\.patient_sex: holds an unpaired"):
        check_unicode("metadata.patient_sex", "\ud83d")


@pytest.mark.parametrize("char", ["a", "Z", "é", "ж", "腰", "²", "_", "5", "!", " ", "\u0301"])
def test_the_schema_pattern_and_the_check_agree(char: str) -> None:
    text = f"{char} 12"
    try:
        check_text("request", text)
        accepted = True
    except InvalidInputError:
        accepted = False

    assert accepted == bool(re.search(LETTER_PATTERN, text))

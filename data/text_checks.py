"""Is a caller's text usable as model input? One check for the API, batch scoring and the CLI.

Two things make text invalid input (not merely uninformative):

- **Lone UTF-16 surrogates** (U+D800-U+DFFF). JSON may carry them (``"\\ud800MRI"`` is
  valid JSON), Python keeps them in ``str``, but they are not Unicode text: UTF-8 cannot
  encode them and tokenizers raise ``TypeError`` on them.
- **No letters** once whitespace, control characters, digits and punctuation are set
  aside (``""``, ``"   "``, ``"\\x00\\x01"``, ``"?!"``, ``"12/3"``): there is nothing for
  a model to read, so a probability for it would be a guess dressed up as an estimate.

A *letter* is a character matched by :data:`LETTER_PATTERN` (Python ``re``, Unicode): a
word character that is neither a decimal digit nor ``_``, i.e. a letter of any script (and
a few number signs such as ``²`` or ``½``, which Python counts as word characters). The
HTTP schema states the same pattern, so a request its schema allows is never refused as
"no letters".
"""

from __future__ import annotations

import re

from imr_outcome.errors import InvalidInputError

#: At least one letter, as a regular expression (Python ``re`` syntax, searched, not
#: anchored). Also the ``pattern`` of text fields in the HTTP API's OpenAPI schema.
LETTER_PATTERN = r"[^\W\d_]"

_LETTER_RE = re.compile(LETTER_PATTERN)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def check_unicode(field: str, value: str) -> str:
    """Return ``value`` unchanged when it is valid Unicode text (no lone surrogates).

    Args:
        field: the field's name for the message (``request``, ``items[2].summary``,
            ``metadata.patient_sex``).
        value: the text as received.

    Returns:
        ``value``, unchanged.

    Raises:
        InvalidInputError: naming ``field``, the surrogate's code point and its position
            (0-based character index) and the fix.
    """
    found = _SURROGATE_RE.search(value)
    if found is not None:
        raise InvalidInputError(
            field,
            f"holds an unpaired UTF-16 surrogate (U+{ord(found.group()):04X}) at character "
            f"{found.start()}, which is not text; send valid Unicode (in JSON, a \\uD800-"
            "\\uDBFF escape must be followed by a \\uDC00-\\uDFFF escape)",
        )
    return value


def check_text(field: str, value: str) -> str:
    """Return ``value`` unchanged when it is text a model can read.

    Args:
        field: the field's name for the message (``request``, ``items[2].summary``, a
            CSV column).
        value: the text as received; never modified, so character offsets into it stay
            valid.

    Returns:
        ``value``, unchanged.

    Raises:
        InvalidInputError: naming ``field``: an unpaired surrogate (see
            :func:`check_unicode`), empty or whitespace-only text, or text with no letter
            (only digits, punctuation, symbols or control characters).
    """
    check_unicode(field, value)
    if not value.strip():
        raise InvalidInputError(field, "is empty; write it out in words")
    if _LETTER_RE.search(value) is None:
        raise InvalidInputError(
            field,
            "has no letters (only digits, punctuation, symbols or control characters); "
            "write it out in words",
        )
    return value

"""A short, display-only excerpt of a decision's rationale.

The rationale explains the outcome, so it is never a model input (it is held as
:class:`~imr_outcome.data.schema.OutcomeText`); a person deciding whether to file may
still read how similar past requests were decided. The excerpt is the rationale's first
sentences up to :data:`EXCERPT_CHARS` characters, cut at a sentence end (sentences from
the rule-based ``pysbd`` splitter, Sadvilkar & Neumann 2020), or at a word end with an
ellipsis when the first sentence alone is longer.
"""

from __future__ import annotations

from imr_outcome.data.dmhc_findings import split_sentences
from imr_outcome.data.schema import OutcomeText

#: The longest excerpt, in characters (the ellipsis of a cut sentence included).
EXCERPT_CHARS = 300


def excerpt_text(text: str, max_chars: int = EXCERPT_CHARS) -> str:
    """The first whole sentences of ``text`` that fit in ``max_chars`` characters.

    Args:
        text: whitespace-normalised prose.
        max_chars: the longest result, >= 20.

    Returns:
        Whole leading sentences joined by single spaces, at most ``max_chars`` long; when
        the first sentence alone is longer, its first words and ``"…"`` (still at most
        ``max_chars``); ``""`` for blank text.

    Raises:
        ValueError: ``max_chars`` below 20.
    """
    if max_chars < 20:
        raise ValueError(f"max_chars must be >= 20, got {max_chars}")
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    kept = ""
    for sentence in split_sentences(text):
        sentence = sentence.strip()
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        kept = candidate
    if kept:
        return kept
    cut = text[: max_chars - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def rationale_excerpt(
    rationale: OutcomeText | None, max_chars: int = EXCERPT_CHARS
) -> OutcomeText | None:
    """The display-only excerpt of an item's decision rationale (:func:`excerpt_text`).

    Args:
        rationale: the item's "Decision rationale:" paragraph(s), or None.
        max_chars: the longest excerpt.

    Returns:
        The excerpt as :class:`OutcomeText` (offsets: those of the whole rationale in the
        letter), or None for no or blank rationale.
    """
    if rationale is None:
        return None
    excerpt = excerpt_text(rationale.reveal(), max_chars)
    if not excerpt:
        return None
    return OutcomeText(excerpt, rationale.start, rationale.end)

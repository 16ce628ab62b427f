"""Evidence spans: the model's strongest attributions as spans of the caller's text.

The attribution itself (integrated gradients, TF-IDF contributions; see
:mod:`imr_outcome.model.attribution`) belongs to the model object
(:meth:`imr_outcome.model.model.OutcomeModel.explain`); this module only turns its
stretches into the HTTP/CLI contract. Every span's offsets index the exact ``request``
or ``summary`` string the caller passed:
``span.text == (request if span.field == "request" else summary)[span.start:span.end]``.

People read the spans, so a stretch is shown trimmed to its content words: leading and
trailing function words and punctuation are cut ("of the lumbar spine," -> "lumbar spine"),
and a stretch of function words only ("of the", "a") is not shown at all. Function words
are scikit-learn's ``ENGLISH_STOP_WORDS`` (the Glasgow Information Retrieval Group's
stop list, 318 words) less its negations (:data:`NEGATIONS`: "not medically necessary"
must not be shown as "medically necessary"); a content word is any other run of letters or
digits.
"""

from __future__ import annotations

import re

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.attribution_spans import Attribution
from imr_outcome.model.defaults import IG_STEPS
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.prediction import EvidenceSpan

#: A word for trimming: a run of letters or digits (of any script), e.g. ``lumbar``,
#: ``10``, ``325mg``, ``patient`` and ``s`` in ``patient's``.
_WORD_RE = re.compile(r"[^\W_]+")
#: Stop words that reverse a clinical statement ("no improvement", "without relief"):
#: kept as content words.
NEGATIONS: frozenset[str] = frozenset(
    {"no", "not", "nor", "never", "without", "cannot", "none", "nothing", "neither"}
)
#: Words a span is trimmed of (see the module docstring).
FUNCTION_WORDS: frozenset[str] = frozenset(ENGLISH_STOP_WORDS) - NEGATIONS
#: Stretches asked of the explainer per direction for each span shown: spare candidates
#: for the stretches dropped as function words only.
CANDIDATE_FACTOR = 3


def content_bounds(text: str) -> tuple[int, int] | None:
    """Where the content words of ``text`` start and end.

    Args:
        text: a stretch of text.

    Returns:
        ``(start, end)`` offsets into ``text`` from the first content word's first
        character to the last content word's last character (function words and
        punctuation between content words are kept), or None when ``text`` has no
        content word (only :data:`FUNCTION_WORDS`, punctuation or symbols).
    """
    content = [
        match for match in _WORD_RE.finditer(text) if match.group().lower() not in FUNCTION_WORDS
    ]
    if not content:
        return None
    return content[0].start(), content[-1].end()


def to_span(item: Attribution, request: str, summary: str) -> EvidenceSpan | None:
    """One scored stretch as an evidence span trimmed to its content words, or None when it
    has none (weight ``|score|`` of the whole stretch, direction its sign)."""
    text = request if item.field == "request" else summary
    bounds = content_bounds(text[item.start : item.end])
    if bounds is None:
        return None
    start, end = item.start + bounds[0], item.start + bounds[1]
    return EvidenceSpan(
        field=item.field,
        start=start,
        end=end,
        text=text[start:end],
        weight=abs(item.score),
        direction="Overturned" if item.score > 0 else "Upheld",
    )


def explain(
    model: OutcomeModel,
    model_input: ModelInput,
    request: str,
    summary: str,
    *,
    top_k: int = 5,
    n_steps: int = IG_STEPS,
    deadline: float | None = None,
) -> list[EvidenceSpan]:
    """Evidence spans for one item with the model's configured explainer.

    Args:
        model: the loaded model; ``model.info.explainer`` picks the method.
        model_input: ``build_model_input(request, summary, metadata)``.
        request: the request string exactly as the caller sent it.
        summary: the summary string exactly as the caller sent it.
        top_k: most spans per direction, >= 1.
        n_steps: integrated-gradients quadrature points, >= 1 (ignored by other methods).
        deadline: a :func:`time.monotonic` value after which the work stops, or None.

    Returns:
        At most ``top_k`` Overturned and ``top_k`` Upheld spans, by weight, strongest
        first, each trimmed to its content words (see :func:`to_span`); stretches of
        function words only are left out. Empty for the ``"none"`` explainer.

    Raises:
        IncompatibleModelError: the explainer is unknown or does not fit the model kind.
        InvalidInputError: ``top_k`` or ``n_steps`` below 1, or a ``model_input`` not built
            from ``request`` and ``summary``.
        DeadlineExceededError: ``deadline`` passed before the work finished.
    """
    if top_k < 1:
        raise InvalidInputError("top_k", f"expected an integer >= 1, found {top_k}")
    stretches = model.explain(
        model_input,
        request,
        summary,
        top_k=top_k * CANDIDATE_FACTOR,
        n_steps=n_steps,
        deadline=deadline,
    )
    spans: list[EvidenceSpan] = []
    shown = {"Overturned": 0, "Upheld": 0}
    for item in stretches:
        span = to_span(item, request, summary)
        if span is not None and shown[span.direction] < top_k:
            shown[span.direction] += 1
            spans.append(span)
    return spans

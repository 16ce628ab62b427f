"""Evidence spans: the model's strongest attributions as spans of the caller's text.

The attribution itself (integrated gradients, TF-IDF contributions; see
:mod:`imr_outcome.train.attribution`) belongs to the model object
(:meth:`imr_outcome.train.model.OutcomeModel.explain`); this module only turns its
stretches into the HTTP/CLI contract. Every span's offsets index the exact ``request``
or ``summary`` string the caller passed:
``span.text == (request if span.field == "request" else summary)[span.start:span.end]``.
"""

from __future__ import annotations

from imr_outcome.data.model_input import ModelInput
from imr_outcome.serve.schemas import EvidenceSpan
from imr_outcome.train.attribution import IG_STEPS, Attribution
from imr_outcome.train.model import OutcomeModel


def to_span(item: Attribution, request: str, summary: str) -> EvidenceSpan:
    """One scored stretch as an evidence span (weight ``|score|``, direction its sign)."""
    text = request if item.field == "request" else summary
    return EvidenceSpan(
        field=item.field,
        start=item.start,
        end=item.end,
        text=text[item.start : item.end],
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
        first. Empty for the ``"none"`` explainer.

    Raises:
        IncompatibleModelError: the explainer is unknown or does not fit the model kind.
        InvalidInputError: ``top_k`` or ``n_steps`` below 1, or a ``model_input`` not built
            from ``request`` and ``summary``.
        DeadlineExceededError: ``deadline`` passed before the work finished.
    """
    stretches = model.explain(
        model_input, request, summary, top_k=top_k, n_steps=n_steps, deadline=deadline
    )
    return [to_span(item, request, summary) for item in stretches]

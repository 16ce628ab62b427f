"""Attribution: which stretches of the caller's text pushed a prediction, and which way.

The explainer is a named, swappable choice saved with the model (``ModelInfo.explainer``,
from the run config's ``explainer``) and looked up in :data:`EXPLAINERS`:

- ``"integrated_gradients"`` (transformer kinds): Integrated Gradients (Sundararajan et
  al. 2017, "Axiomatic Attribution for Deep Networks", ICML) of the Overturned-minus-
  Upheld logit margin with respect to the word embeddings, computed with Captum's
  ``LayerIntegratedGradients``; word-piece attributions are summed into words and words
  into short same-sign phrases.
- ``"gradient_x_input"`` (transformer kinds): gradient of the margin x word embedding, one
  forward and backward pass per batch of windows (see
  :func:`~imr_outcome.model.attribution_tokens.token_attributions`).
- ``"occlusion"`` (transformer kinds): margin drop when runs of tokens are hidden, all
  occluded copies scored in batched forward passes.
- ``"tfidf_coefficients"`` (``tfidf_lr``): the exact linear split of the log-odds into
  coefficient x tf-idf weight per n-gram
  (:meth:`imr_outcome.model.baselines.TfidfLogReg.feature_contributions`), mapped to every
  occurrence of the n-gram.
- ``"none"`` (any kind): no evidence.

Every attribution's offsets index the exact ``request`` or ``summary`` string the caller passed:
``span.text == (request if span.field == "request" else summary)[span.start:span.end]``,
whatever the tokenizer lowercases, strips or normalizes. Text of the metadata prefix is
never evidence. torch and Captum are imported only when an explainer that needs them
runs. :mod:`imr_outcome.serve.evidence` turns the strongest stretches into
:class:`~imr_outcome.model.prediction.EvidenceSpan` objects.

Callers can bound the work: every explainer takes ``deadline`` (a
:func:`time.monotonic` value) and raises
:class:`~imr_outcome.errors.DeadlineExceededError` when it is passed between batches of
integrated-gradients windows.

The word-piece scores of the transformer methods are in
:mod:`~imr_outcome.model.attribution_tokens`; words, phrases and the choice of the
strongest stretches in :mod:`~imr_outcome.model.attribution_spans`. This module holds the
explainers, their registry and the entry points :func:`explain` and
:func:`word_attributions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.artifact import ModelInfo
from imr_outcome.model.attribution_spans import (
    Attribution,
    Field,
    WordAttribution,
    field_text,
    phrase_spans,
    strongest_disjoint,
    top_attributions,
    word_scores,
)
from imr_outcome.model.attribution_tokens import (
    Method,
    check_positive,
    token_attributions,
)
from imr_outcome.model.base import Classifier
from imr_outcome.model.defaults import IG_STEPS

if TYPE_CHECKING:
    from imr_outcome.model.baselines import TfidfLogReg
    from imr_outcome.model.transformer import TransformerClassifier

C = TypeVar("C")


class Explainable(Protocol):
    """What the explainers read of a model: its classifier and the explainer it was saved
    with (:class:`~imr_outcome.model.model.OutcomeModel` is one; naming it here would make
    this module and the model object import each other)."""

    @property
    def classifier(self) -> Classifier:
        """The fitted classifier."""
        ...

    @property
    def info(self) -> ModelInfo:
        """Provenance and settings; ``info.explainer`` names the explainer."""
        ...


def _check_input(model_input: ModelInput, request: str, summary: str) -> None:
    """Raise unless ``model_input`` was built from exactly ``request`` and ``summary``."""
    if model_input.caller_request != request or model_input.caller_summary != summary:
        raise InvalidInputError(
            "model_input",
            "was not built from the request and summary passed with it, so evidence offsets "
            "would not index them; build it with build_model_input(request, summary, metadata)",
        )


def _model_texts(model_input: ModelInput) -> tuple[str, str]:
    """The request and summary as the model read them (style-blind, see
    :func:`~imr_outcome.data.model_input.style_blind`)."""
    return model_input.text[model_input.request_offset :], model_input.text_pair


A = TypeVar("A", bound=Attribution)


def to_caller_offsets(spans: list[A], model_input: ModelInput) -> list[A]:
    """``spans`` found on the model's (style-blind) text, re-indexed on the caller's strings.

    A span touching a rewritten phrase ("the patient" read for "the applicant") grows to
    the caller's whole phrase; spans that land on one caller stretch (the three words of
    "January 2, 2013" read for "01/02/2013") are merged, their scores summed.

    Args:
        spans: attributions with offsets into ``model_input``'s request / summary.
        model_input: the item they were computed on.

    Returns:
        The spans with offsets into ``model_input.caller_request`` / ``caller_summary``,
        in the input order of their first member.
    """
    if model_input.request is None and model_input.summary is None:
        return spans
    merged: dict[tuple[str, int, int], A] = {}
    for span in spans:
        start, end = model_input.to_caller_span(span.field, span.start, span.end)
        key = (span.field, start, end)
        if key in merged:
            merged[key] = replace(merged[key], score=merged[key].score + span.score)
        else:
            merged[key] = replace(span, start=start, end=end)
    return list(merged.values())


def _classifier_of(model: Explainable, kind: type[C], method: str) -> C:
    """``model.classifier`` if it is a ``kind``, else IncompatibleModelError naming both."""
    classifier = model.classifier
    if not isinstance(classifier, kind):
        raise IncompatibleModelError(
            f"{method} needs a {kind.__name__}, found {type(classifier).__name__}"
        )
    return classifier


# --------------------------------------------------------- gradient explainers


def _transformer(model: Explainable) -> TransformerClassifier:
    from imr_outcome.model.transformer import TransformerClassifier

    return _classifier_of(model, TransformerClassifier, "the integrated-gradients explainer")


def _words_with(method: Method) -> WordFunction:
    def scored_words(
        model: Explainable,
        model_input: ModelInput,
        request: str,
        summary: str,
        n_steps: int,
        deadline: float | None,
    ) -> list[WordAttribution]:
        tokens = token_attributions(
            _transformer(model), model_input, n_steps, deadline=deadline, method=method
        )
        return word_scores(tokens, request, summary)

    return scored_words


def _phrases_with(method: Method) -> StretchFunction:
    words_of = _words_with(method)

    def phrases(
        model: Explainable,
        model_input: ModelInput,
        request: str,
        summary: str,
        n_steps: int,
        deadline: float | None,
    ) -> list[Attribution]:
        scored = words_of(model, model_input, request, summary, n_steps, deadline)
        return [
            phrase
            for field in ("request", "summary")
            for phrase in phrase_spans(
                [word for word in scored if word.field == field],
                field_text(field, request, summary),
            )
        ]

    return phrases


_ig_words = _words_with("integrated_gradients")
_ig_phrases = _phrases_with("integrated_gradients")


# ---------------------------------------------------------------------------- TF-IDF


def _tfidf(model: Explainable) -> TfidfLogReg:
    from imr_outcome.model.baselines import TfidfLogReg

    return _classifier_of(model, TfidfLogReg, "the tfidf-coefficients explainer")


def ngram_occurrences(
    classifier: TfidfLogReg, model_input: ModelInput, *, first_only: bool = False
) -> list[Attribution]:
    """Every occurrence of every n-gram of the item with the n-gram's contribution.

    A contribution is coefficient x tf-idf weight
    (:meth:`~imr_outcome.model.baselines.TfidfLogReg.feature_contributions`); every
    occurrence carries the n-gram's whole contribution. Occurrences in the metadata prefix
    (or starting inside it) are dropped; zero contributions are left out.

    Args:
        classifier: a fitted ``tfidf_lr`` classifier.
        model_input: the item.
        first_only: keep only the first occurrence of each n-gram (evidence lists each
            n-gram once; the word scores for faithfulness need every occurrence).

    Returns:
        Occurrences with offsets into the request (``text[request_offset:]``) or summary
        (``text_pair``); scores in log-odds of Overturned.
    """
    from imr_outcome.model.ngrams import ngram_spans

    offset = model_input.request_offset
    found: list[Attribution] = []
    for segment, ngram, contribution in classifier.feature_contributions(model_input):
        if contribution == 0:
            continue
        if segment == "text":
            field: Field = "request"
            spans = [
                (start - offset, end - offset)
                for start, end in ngram_spans(model_input.text, ngram)
                if start >= offset
            ]
        else:
            field, spans = "summary", ngram_spans(model_input.text_pair, ngram)
        found.extend(
            Attribution(field, start, end, contribution)
            for start, end in spans[: 1 if first_only else None]
        )
    return found


def _tfidf_words(
    model: Explainable,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[WordAttribution]:
    return word_scores(ngram_occurrences(_tfidf(model), model_input), request, summary)


def _tfidf_stretches(
    model: Explainable,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[Attribution]:
    return strongest_disjoint(ngram_occurrences(_tfidf(model), model_input, first_only=True))


# -------------------------------------------------------------------------- registry


def _nothing(
    model: Explainable,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[Attribution]:
    return []


StretchFunction = Callable[
    ["Explainable", ModelInput, str, str, int, float | None], list[Attribution]
]
WordFunction = Callable[
    ["Explainable", ModelInput, str, str, int, float | None], list[WordAttribution]
]


@dataclass(frozen=True)
class Explainer:
    """A named evidence method.

    Attributes:
        kinds: classifier kinds it can explain; None for any kind.
        stretches: ``(model, model_input, request, summary, n_steps, deadline) ->``
            candidate stretches (phrases, n-gram occurrences) to rank as evidence.
        words: ``(model, model_input, request, summary, n_steps, deadline) -> word
            scores`` for the faithfulness metrics; None when the method scores nothing.
    """

    kinds: frozenset[str] | None
    stretches: StretchFunction
    words: WordFunction | None

    def fits(self, kind: str) -> bool:
        """Whether this explainer can explain a classifier of ``kind``."""
        return self.kinds is None or kind in self.kinds


#: Explainers by the name a run config's ``explainer`` holds.
EXPLAINERS: dict[str, Explainer] = {
    "integrated_gradients": Explainer(frozenset({"transformer"}), _ig_phrases, _ig_words),
    "gradient_x_input": Explainer(
        frozenset({"transformer"}),
        _phrases_with("gradient_x_input"),
        _words_with("gradient_x_input"),
    ),
    "occlusion": Explainer(
        frozenset({"transformer"}), _phrases_with("occlusion"), _words_with("occlusion")
    ),
    "tfidf_coefficients": Explainer(
        frozenset({"tfidf_lr", "two_stage"}), _tfidf_stretches, _tfidf_words
    ),
    "none": Explainer(None, _nothing, None),
}


def check_explainer(name: str, kind: str) -> Explainer:
    """The explainer called ``name``, checked against the classifier ``kind``.

    Raises:
        IncompatibleModelError: an unknown explainer name, or one that does not fit the
            classifier kind (the message names both and the explainers that fit).
    """
    explainer = EXPLAINERS.get(name)
    if explainer is None:
        raise IncompatibleModelError(
            f"unknown explainer {name!r}; known explainers: {sorted(EXPLAINERS)}"
        )
    if not explainer.fits(kind):
        fitting = sorted(other for other, entry in EXPLAINERS.items() if entry.fits(kind))
        raise IncompatibleModelError(
            f"explainer {name!r} does not fit classifier kind {kind!r} (it explains "
            f"{sorted(explainer.kinds or [])}); retrain with explainer set to one of {fitting}"
        )
    return explainer


def explainer_for(model: Explainable) -> Explainer:
    """The explainer ``model.info.explainer`` names, checked against the classifier kind
    (see :func:`check_explainer`)."""
    return check_explainer(model.info.explainer, model.classifier.kind)


def explain(
    model: Explainable,
    model_input: ModelInput,
    request: str,
    summary: str,
    *,
    top_k: int = 5,
    n_steps: int = IG_STEPS,
    deadline: float | None = None,
) -> list[Attribution]:
    """The strongest stretches for one item with the model's configured explainer.

    Args:
        model: the loaded model; ``model.info.explainer`` picks the method (see
            :data:`EXPLAINERS`).
        model_input: ``build_model_input(request, summary, metadata)``.
        request: the request string exactly as the caller sent it.
        summary: the summary string exactly as the caller sent it.
        top_k: most stretches per direction, >= 1.
        n_steps: integrated-gradients quadrature points, >= 1 (ignored by other methods).
        deadline: a :func:`time.monotonic` value after which the work stops, or None.

    Returns:
        At most ``top_k`` Overturned (positive) and ``top_k`` Upheld (negative)
        stretches, by ``|score|``, strongest first; offsets index ``request`` /
        ``summary``. Empty for ``"none"``.

    Raises:
        IncompatibleModelError: see :func:`explainer_for`.
        InvalidInputError: ``top_k`` or ``n_steps`` below 1, or a ``model_input`` not built
            from ``request`` and ``summary``.
        DeadlineExceededError: ``deadline`` passed before the work finished.
    """
    explainer = explainer_for(model)
    check_positive("top_k", top_k)
    check_positive("n_steps", n_steps)
    _check_input(model_input, request, summary)
    read_request, read_summary = _model_texts(model_input)
    stretches = explainer.stretches(
        model, model_input, read_request, read_summary, n_steps, deadline
    )
    return top_attributions(to_caller_offsets(stretches, model_input), top_k)


def word_attributions(
    model: Explainable,
    model_input: ModelInput,
    request: str,
    summary: str,
    *,
    n_steps: int = IG_STEPS,
    deadline: float | None = None,
) -> list[WordAttribution]:
    """Per-word scores of the model's explainer (for faithfulness metrics).

    Args:
        model: the loaded model.
        model_input: ``build_model_input(request, summary, metadata)``.
        request: the caller's request string.
        summary: the caller's summary string.
        n_steps: integrated-gradients quadrature points, >= 1.
        deadline: see :func:`explain`.

    Returns:
        Every word of the request, then of the summary (see
        :func:`~imr_outcome.model.attribution_spans.word_scores`).

    Raises:
        IncompatibleModelError: see :func:`explainer_for`, or an explainer that scores
            nothing (``"none"``).
        InvalidInputError: as for :func:`explain`.
    """
    explainer = explainer_for(model)
    if explainer.words is None:
        raise IncompatibleModelError(
            f"explainer {model.info.explainer!r} scores no words; pick one of "
            f"{sorted(name for name, entry in EXPLAINERS.items() if entry.words is not None)}"
        )
    check_positive("n_steps", n_steps)
    _check_input(model_input, request, summary)
    read_request, read_summary = _model_texts(model_input)
    scored = explainer.words(model, model_input, read_request, read_summary, n_steps, deadline)
    return to_caller_offsets(scored, model_input)

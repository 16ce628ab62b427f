"""Attribution: which stretches of the caller's text pushed a prediction, and which way.

The explainer is a named, swappable choice saved with the model (``ModelInfo.explainer``,
from the run config's ``explainer``) and looked up in :data:`EXPLAINERS`:

- ``"integrated_gradients"`` (transformer kinds): Integrated Gradients (Sundararajan et
  al. 2017, "Axiomatic Attribution for Deep Networks", ICML) of the Overturned-minus-
  Upheld logit margin with respect to the word embeddings, computed with Captum's
  ``LayerIntegratedGradients``; word-piece attributions are summed into words and words
  into short same-sign phrases.
- ``"gradient_x_input"`` (transformer kinds): gradient of the margin x word embedding, one
  forward and backward pass per batch of windows (see :func:`token_attributions`).
- ``"occlusion"`` (transformer kinds): margin drop when runs of tokens are hidden, all
  occluded copies scored in batched forward passes.
- ``"tfidf_coefficients"`` (``tfidf_lr``): the exact linear split of the log-odds into
  coefficient x tf-idf weight per n-gram
  (:meth:`imr_outcome.train.baselines.TfidfLogReg.feature_contributions`), mapped to every
  occurrence of the n-gram.
- ``"none"`` (any kind): no evidence.

Every attribution's offsets index the exact ``request`` or ``summary`` string the caller passed:
``span.text == (request if span.field == "request" else summary)[span.start:span.end]``,
whatever the tokenizer lowercases, strips or normalizes. Text of the metadata prefix is
never evidence. torch and Captum are imported only when an explainer that needs them
runs. :mod:`imr_outcome.serve.evidence` turns the strongest stretches into
:class:`~imr_outcome.serve.schemas.EvidenceSpan` objects.

Callers can bound the work: every explainer takes ``deadline`` (a
:func:`time.monotonic` value) and raises
:class:`~imr_outcome.errors.DeadlineExceededError` when it is passed between batches of
integrated-gradients windows.
"""

from __future__ import annotations

import bisect
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import DeadlineExceededError, IncompatibleModelError, InvalidInputError

if TYPE_CHECKING:
    import torch

    from imr_outcome.train.baselines import TfidfLogReg
    from imr_outcome.train.model import OutcomeModel
    from imr_outcome.train.transformer import TransformerClassifier

logger = logging.getLogger(__name__)

Field = Literal["request", "summary"]
C = TypeVar("C")

#: Longest phrase, in words, that adjacent same-sign words are merged into.
MAX_SPAN_WORDS = 8

#: Integrated-gradients quadrature points per explanation, the default of the run config's
#: ``ig_steps`` (used by serving and by the faithfulness evaluation). Cost grows linearly
#: (about this many forward + backward passes per token window); 16 keeps the
#: completeness error of the fine-tuned MiniLM within tolerance on real items
#: (experiments/README.md).
IG_STEPS = 16

#: Rows (interpolation steps x windows) per forward/backward pass of integrated gradients;
#: bounds memory (e.g. 64 x 256 tokens of MiniLM-L6 is well under 1 GiB).
IG_BATCH_ROWS = 64

#: (absolute logits, fraction of the margin change): a window whose attributions miss
#: ``margin(x) - margin(baseline)`` by more than ``a + r * |change|`` logs a warning.
COMPLETENESS_TOLERANCE: tuple[float, float] = (0.05, 0.1)

#: A word is a maximal run of non-whitespace characters (Python's ``str.isspace``, which
#: includes tabs, newlines, no-break and ideographic spaces).
_WORD_RE = re.compile(r"\S+")

#: Characters that end a sentence when they end a word (after closing quotes/brackets):
#: . ! ? and the ellipsis, ideographic full stop, fullwidth exclamation and question marks.
_SENTENCE_END = frozenset(".!?\u2026\u3002\uff01\uff1f")
_CLOSERS = "\"')]}»”’"


# ---------------------------------------------------------------------- attributions


@dataclass(frozen=True)
class Attribution:
    """A scored stretch of one input field.

    Attributes:
        field: ``"request"`` or ``"summary"``: the caller's string the offsets index.
        start: first character, 0-based.
        end: one past the last character, ``end > start``.
        score: signed attribution in the explainer's units (logit-margin units for
            integrated gradients, log-odds for TF-IDF); positive pushes toward Overturned.
    """

    field: Field
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class TokenAttribution(Attribution):
    """One word piece: its character stretch and its integrated-gradients attribution.

    Overlapping windows of a chunked input each attribute the tokens they share; the score
    is the mean over the windows holding the token (a request token sits in every window).
    """


@dataclass(frozen=True)
class WordAttribution(Attribution):
    """One whitespace-delimited word and the summed attribution of its pieces (0 if none)."""


def words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (maximal runs of non-whitespace).

    Args:
        text: any string.

    Returns:
        ``(start, end)`` per word, in text order; ``text[start:end]`` holds no whitespace.
    """
    return [match.span() for match in _WORD_RE.finditer(text)]


def _field_text(field: Field, request: str, summary: str) -> str:
    return request if field == "request" else summary


def _check_input(model_input: ModelInput, request: str, summary: str) -> None:
    """Raise unless ``model_input`` was built from exactly ``request`` and ``summary``."""
    if (
        model_input.text[model_input.request_offset :] != request
        or model_input.text_pair != summary
    ):
        raise InvalidInputError(
            "model_input",
            "was not built from the request and summary passed with it, so evidence offsets "
            "would not index them; build it with build_model_input(request, summary, metadata)",
        )


def _classifier_of(model: OutcomeModel, kind: type[C], method: str) -> C:
    """``model.classifier`` if it is a ``kind``, else IncompatibleModelError naming both."""
    classifier = model.classifier
    if not isinstance(classifier, kind):
        raise IncompatibleModelError(
            f"{method} needs a {kind.__name__}, found {type(classifier).__name__}"
        )
    return classifier


def check_deadline(deadline: float | None, what: str) -> None:
    """Raise when ``deadline`` (a :func:`time.monotonic` value) has passed.

    Raises:
        DeadlineExceededError: naming ``what`` was cut short.
    """
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceededError(f"{what}: the time budget ran out before it finished")


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise InvalidInputError(name, f"expected an integer >= 1, found {value}")


def word_scores(
    attributions: Iterable[Attribution], request: str, summary: str
) -> list[WordAttribution]:
    """Sum token (or n-gram) attributions into the words of ``request`` and ``summary``.

    A stretch's score is split evenly among the words it overlaps: a word piece lies in one
    word (whitespace around it is ignored), a TF-IDF n-gram may span several.

    Args:
        attributions: scored stretches of either field.
        request: the caller's request string.
        summary: the caller's summary string.

    Returns:
        Every word of the request, then every word of the summary, in text order, each
        with its summed score (0.0 for a word no stretch touches).
    """
    by_field: dict[Field, list[Attribution]] = {"request": [], "summary": []}
    for attribution in attributions:
        by_field[attribution.field].append(attribution)
    result: list[WordAttribution] = []
    for field in ("request", "summary"):
        text = _field_text(field, request, summary)
        spans = words(text)
        starts = [start for start, _ in spans]
        scores = np.zeros(len(spans), dtype=np.float64)
        for item in by_field[field]:
            first = bisect.bisect_right(starts, item.start) - 1
            if first < 0 or item.start >= spans[first][1]:
                first += 1  # the stretch starts in whitespace: the next word
            last = bisect.bisect_left(starts, item.end) - 1  # last word starting before end
            if first > last:
                continue  # whitespace only
            scores[first : last + 1] += item.score / (last - first + 1)
        result.extend(
            WordAttribution(field, start, end, float(score))
            for (start, end), score in zip(spans, scores, strict=True)
        )
    return result


# --------------------------------------------------------------------------- phrases


def _ends_sentence(word: str) -> bool:
    stripped = word.rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in _SENTENCE_END


def phrase_spans(
    word_attributions: Sequence[WordAttribution], text: str, *, max_words: int = MAX_SPAN_WORDS
) -> list[Attribution]:
    """Merge adjacent words of one field with the same sign into phrases.

    A phrase never crosses a sentence end (a word ending in ``. ! ? …`` or their CJK forms,
    or a line break between words), a zero-score word, or ``max_words`` words.

    Args:
        word_attributions: the words of one field, in text order.
        text: that field's string (the one the offsets index).
        max_words: longest phrase in words, >= 1.

    Returns:
        Phrases in text order; score = the sum of their words' scores (never 0).
    """
    phrases: list[Attribution] = []
    run: list[WordAttribution] = []

    def flush() -> None:
        if run:
            total = float(sum(word.score for word in run))
            phrases.append(Attribution(run[0].field, run[0].start, run[-1].end, total))
            run.clear()

    for word in word_attributions:
        sign = np.sign(word.score)
        if run:
            previous = run[-1]
            if (
                sign != np.sign(previous.score)
                or len(run) >= max_words
                or _ends_sentence(text[previous.start : previous.end])
                or "\n" in text[previous.end : word.start]
            ):
                flush()
        if sign == 0:
            flush()
        else:
            run.append(word)
    flush()
    return phrases


def top_attributions(candidates: Iterable[Attribution], top_k: int) -> list[Attribution]:
    """The ``top_k`` strongest non-zero candidates per direction, strongest first overall
    (positive scores push toward Overturned, negative toward Upheld)."""
    ranked = sorted(
        (item for item in candidates if item.score != 0),
        key=lambda item: (-abs(item.score), item.field, item.start),
    )
    chosen: list[Attribution] = []
    taken = {True: 0, False: 0}
    for item in ranked:
        if taken[item.score > 0] >= top_k:
            continue
        taken[item.score > 0] += 1
        chosen.append(item)
    return chosen


# --------------------------------------------------------------- integrated gradients


def _transformer(model: OutcomeModel) -> TransformerClassifier:
    from imr_outcome.train.transformer import TransformerClassifier

    return _classifier_of(model, TransformerClassifier, "the integrated-gradients explainer")


def _check_completeness(totals: npt.NDArray[Any], errors: npt.NDArray[Any], n_steps: int) -> None:
    """Warn when the attributions of a window miss its margin change by more than
    :data:`COMPLETENESS_TOLERANCE` (a sign that ``n_steps`` is too small for the model).

    Args:
        totals: shape ``(b,)``, summed attributions per window, in logits.
        errors: shape ``(b,)``, Captum's convergence delta: ``totals - (f(x) - f(baseline))``.
        n_steps: the quadrature points used.
    """
    changes = totals - errors
    absolute, relative = COMPLETENESS_TOLERANCE
    worst = np.abs(errors) - (absolute + relative * np.abs(changes))
    index = int(np.argmax(worst))
    logger.debug(
        "integrated gradients: %d windows, n_steps=%d, max |completeness error| %.3g",
        len(errors),
        n_steps,
        float(np.abs(errors).max()),
    )
    if worst[index] > 0:
        logger.warning(
            "integrated gradients did not converge with n_steps=%d: attributions miss the "
            "margin change of %.3g logits by %.3g; evidence weights are unreliable, raise n_steps",
            n_steps,
            float(changes[index]),
            float(errors[index]),
        )


Method = Literal["integrated_gradients", "gradient_x_input", "occlusion"]

#: Content tokens hidden together by the occlusion explainer (one forward row per run).
OCCLUSION_TOKENS = 16


def token_attributions(
    classifier: TransformerClassifier,
    model_input: ModelInput,
    n_steps: int = IG_STEPS,
    *,
    deadline: float | None = None,
    method: Method = "integrated_gradients",
) -> list[TokenAttribution]:
    """Attribution of every request and summary word piece to the logit margin.

    ``method`` picks how a window's tokens are scored (all three explain the
    Overturned-minus-Upheld logit margin):

    - ``integrated_gradients`` (Sundararajan et al. 2017, "Axiomatic Attribution for Deep
      Networks") integrates the gradient of the margin along the straight line from a
      baseline to the input in the word-embedding space (Captum
      ``LayerIntegratedGradients`` on ``model.get_input_embeddings()``, Gauss-Legendre
      quadrature with ``n_steps`` points; all steps of all windows of a batch go through
      the model together, ``internal_batch_size``), and multiplies by (input - baseline);
      the result is summed over the hidden dimension, one number per token. The baseline
      is the same window with every token replaced by [PAD] except the special tokens
      ([CLS], [SEP]), with the input's attention mask and token types. By completeness, a
      window's token attributions sum to ``margin(window) - margin(baseline)`` up to the
      quadrature error.
    - ``gradient_x_input`` (Shrikumar et al. 2016, "Not Just a Black Box"; Captum
      ``LayerGradientXActivation``): the gradient of the margin at the input times the
      word embedding, summed over the hidden dimension: one forward and backward pass.
    - ``occlusion`` (Zeiler & Fergus 2014; batched): each run of
      :data:`OCCLUSION_TOKENS` content tokens of a window is replaced by [PAD] and the
      margin drop is shared equally by the run's tokens; all occluded copies of all
      windows are scored in batched forward passes (no gradients).

    Every window of a chunked input is attributed (in fp32, no autocast, always on the
    torch model even when scoring uses ONNX Runtime); a token held by several windows gets
    the mean of its window attributions, matched by character offsets. Tokens of the
    metadata prefix are dropped.

    Args:
        classifier: a fitted transformer classifier.
        model_input: the item, from ``build_model_input``.
        n_steps: integrated-gradients quadrature points, >= 1 (ignored by the others); cost
            is about ``n_steps`` forward and backward passes per window.
        deadline: a :func:`time.monotonic` value checked before each batch of windows,
            or None for no limit.
        method: see above.

    Returns:
        One attribution per distinct (field, start, end) token stretch, request tokens
        first, then summary tokens, each in text order. Offsets index
        ``model_input.text[request_offset:]`` (field ``"request"``) or
        ``model_input.text_pair`` (``"summary"``); scores are in logit-margin units.

    Raises:
        InvalidInputError: ``n_steps < 1``, or an input the windows cannot hold (see
            :func:`imr_outcome.train.encoders.encode_windows`).
        IncompatibleModelError: a tokenizer without a pad token.
        sklearn.exceptions.NotFittedError: an unfitted classifier.
        DeadlineExceededError: ``deadline`` passed before the last batch of windows.
    """
    import torch

    from imr_outcome.train.encoders import collate

    _check_positive("n_steps", n_steps)
    model, tokenizer, config = classifier.model, classifier.tokenizer, classifier.model_config
    if tokenizer.pad_token_id is None:
        raise IncompatibleModelError(
            f"tokenizer of {config.base_model!r} has no pad token; {method} needs one "
            "for its [PAD] baseline"
        )
    pad_id = int(tokenizer.pad_token_id)
    windows = classifier.encode([model_input])
    device = next(model.parameters()).device
    model.train(False)

    def margin(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits: torch.Tensor = model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits.float()
        return logits[:, 1] - logits[:, 0]  # (rows,)

    offset = model_input.request_offset
    sums: dict[tuple[Field, int, int], float] = defaultdict(float)
    counts: dict[tuple[Field, int, int], int] = defaultdict(int)
    for first in range(0, len(windows), IG_BATCH_ROWS):
        check_deadline(deadline, method.replace("_", " "))
        chosen = range(first, min(first + IG_BATCH_ROWS, len(windows)))
        batch = collate([windows.features(w) for w in chosen], pad_id)
        input_ids = batch["input_ids"].to(device)  # (b, t)
        width = input_ids.shape[1]
        keep = torch.tensor(  # [CLS] and [SEP] stay in the baseline; padding is [PAD] anyway
            [
                [sequence is None for sequence in windows.sequence_ids[w]]
                + [False] * (width - len(windows.sequence_ids[w]))
                for w in chosen
            ],
            dtype=torch.bool,
            device=device,
        )
        extra = tuple(
            batch[key].to(device) for key in ("attention_mask", "token_type_ids") if key in batch
        )
        if method == "integrated_gradients":
            scores = _ig_scores(margin, model, input_ids, keep, extra, pad_id, n_steps)
        elif method == "gradient_x_input":
            scores = _gxi_scores(margin, model, input_ids, extra)
        else:
            scores = _occlusion_scores(margin, input_ids, keep, extra, pad_id)
        for row, window in enumerate(chosen):
            per_window: dict[tuple[Field, int, int], float] = defaultdict(float)
            for position, (sequence, (start, end)) in enumerate(
                zip(windows.sequence_ids[window], windows.offset_mapping[window], strict=True)
            ):
                if sequence is None or end <= start:
                    continue
                if sequence == 0:
                    if start < offset:
                        continue  # metadata prefix
                    key: tuple[Field, int, int] = ("request", start - offset, end - offset)
                else:
                    key = ("summary", start, end)
                per_window[key] += float(scores[row, position])
            for key, value in per_window.items():
                sums[key] += value
                counts[key] += 1
    order = {"request": 0, "summary": 1}
    return [
        TokenAttribution(field, start, end, sums[(field, start, end)] / counts[(field, start, end)])
        for field, start, end in sorted(sums, key=lambda key: (order[key[0]], key[1], key[2]))
    ]


def _ig_scores(
    margin: Callable[..., torch.Tensor],
    model: Any,
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    pad_id: int,
    n_steps: int,
) -> npt.NDArray[np.float64]:
    """Integrated-gradients token scores ``(b, t)`` of a batch of windows."""
    import torch
    from captum.attr import LayerIntegratedGradients

    integrated = LayerIntegratedGradients(margin, model.get_input_embeddings())
    baselines = torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))
    rows = n_steps * input_ids.shape[0]  # all steps of all windows in one pass if they fit
    with torch.enable_grad():
        attributions, delta = integrated.attribute(
            input_ids,
            baselines=baselines,
            additional_forward_args=extra,
            n_steps=n_steps,
            internal_batch_size=min(rows, IG_BATCH_ROWS),
            return_convergence_delta=True,
        )
    scores: npt.NDArray[np.float64] = (
        attributions.detach().double().sum(dim=-1).cpu().numpy()
    )  # (b, t)
    _check_completeness(scores.sum(axis=1), delta.detach().double().cpu().numpy(), n_steps)
    return scores


def _gxi_scores(
    margin: Callable[..., torch.Tensor],
    model: Any,
    input_ids: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
) -> npt.NDArray[np.float64]:
    """Gradient x input token scores ``(b, t)`` on the word embeddings."""
    import torch
    from captum.attr import LayerGradientXActivation

    explainer = LayerGradientXActivation(margin, model.get_input_embeddings())
    with torch.enable_grad():
        attributions = explainer.attribute(input_ids, additional_forward_args=extra)
    scores: npt.NDArray[np.float64] = attributions.detach().double().sum(dim=-1).cpu().numpy()
    return scores


def _occlusion_scores(
    margin: Callable[..., torch.Tensor],
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    pad_id: int,
) -> npt.NDArray[np.float64]:
    """Occlusion token scores ``(b, t)``: the margin drop when a run of
    :data:`OCCLUSION_TOKENS` content tokens is [PAD]ded, shared by its tokens."""
    import torch

    attention = extra[0]
    content = (~keep) & (attention > 0)  # (b, t): real, non-special tokens
    copies: list[tuple[int, torch.Tensor]] = []
    for row in range(input_ids.shape[0]):
        positions = torch.nonzero(content[row]).flatten()
        for first in range(0, len(positions), OCCLUSION_TOKENS):
            copies.append((row, positions[first : first + OCCLUSION_TOKENS]))
    scores = np.zeros(tuple(input_ids.shape), dtype=np.float64)
    with torch.no_grad():
        full = margin(input_ids, *extra).double().cpu().numpy()  # (b,)
        for first in range(0, len(copies), IG_BATCH_ROWS):
            part = copies[first : first + IG_BATCH_ROWS]
            rows = torch.tensor([row for row, _ in part], device=input_ids.device)
            ids = input_ids[rows].clone()
            for index, (_, positions) in enumerate(part):
                ids[index, positions] = pad_id
            occluded = margin(ids, *(tensor[rows] for tensor in extra)).double().cpu().numpy()
            for index, (row, positions) in enumerate(part):
                scores[row, positions.cpu().numpy()] = (full[row] - occluded[index]) / len(
                    positions
                )
    return scores


def _words_with(method: Method) -> WordFunction:
    def scored_words(
        model: OutcomeModel,
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
        model: OutcomeModel,
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
                _field_text(field, request, summary),
            )
        ]

    return phrases


_ig_words = _words_with("integrated_gradients")
_ig_phrases = _phrases_with("integrated_gradients")


# ---------------------------------------------------------------------------- TF-IDF


def _tfidf(model: OutcomeModel) -> TfidfLogReg:
    from imr_outcome.train.baselines import TfidfLogReg

    return _classifier_of(model, TfidfLogReg, "the tfidf-coefficients explainer")


def ngram_occurrences(classifier: TfidfLogReg, model_input: ModelInput) -> list[Attribution]:
    """Every occurrence of every n-gram of the item with the n-gram's contribution.

    A contribution is coefficient x tf-idf weight
    (:meth:`~imr_outcome.train.baselines.TfidfLogReg.feature_contributions`); every
    occurrence carries the n-gram's whole contribution. Occurrences in the metadata prefix
    (or starting inside it) are dropped; zero contributions are left out.

    Args:
        classifier: a fitted ``tfidf_lr`` classifier.
        model_input: the item.

    Returns:
        Occurrences with offsets into the request (``text[request_offset:]``) or summary
        (``text_pair``); scores in log-odds of Overturned.
    """
    from imr_outcome.train.baselines import ngram_spans

    offset = model_input.request_offset
    found: list[Attribution] = []
    for segment, ngram, contribution in classifier.feature_contributions(model_input):
        if contribution == 0:
            continue
        if segment == "text":
            found.extend(
                Attribution("request", start - offset, end - offset, contribution)
                for start, end in ngram_spans(model_input.text, ngram)
                if start >= offset
            )
        else:
            found.extend(
                Attribution("summary", start, end, contribution)
                for start, end in ngram_spans(model_input.text_pair, ngram)
            )
    return found


def merge_overlapping(spans: Iterable[Attribution]) -> list[Attribution]:
    """Merge overlapping stretches of a field into one, keeping the larger weight.

    A merged stretch runs from the first start to the last end of its members and takes
    the score (and so the direction) of the member with the largest ``|score|``.

    Args:
        spans: scored stretches of either field.

    Returns:
        Non-overlapping stretches, by field then start.
    """
    merged: list[Attribution] = []
    for span in sorted(spans, key=lambda item: (item.field, item.start, item.end)):
        last = merged[-1] if merged else None
        if last is not None and last.field == span.field and span.start < last.end:
            score = span.score if abs(span.score) > abs(last.score) else last.score
            merged[-1] = Attribution(last.field, last.start, max(last.end, span.end), score)
        else:
            merged.append(span)
    return merged


def _tfidf_words(
    model: OutcomeModel,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[WordAttribution]:
    return word_scores(ngram_occurrences(_tfidf(model), model_input), request, summary)


def _tfidf_stretches(
    model: OutcomeModel,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[Attribution]:
    return merge_overlapping(ngram_occurrences(_tfidf(model), model_input))


# -------------------------------------------------------------------------- registry


def _nothing(
    model: OutcomeModel,
    model_input: ModelInput,
    request: str,
    summary: str,
    n_steps: int,
    deadline: float | None,
) -> list[Attribution]:
    return []


StretchFunction = Callable[
    ["OutcomeModel", ModelInput, str, str, int, float | None], list[Attribution]
]
WordFunction = Callable[
    ["OutcomeModel", ModelInput, str, str, int, float | None], list[WordAttribution]
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
    "tfidf_coefficients": Explainer(frozenset({"tfidf_lr"}), _tfidf_stretches, _tfidf_words),
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


def explainer_for(model: OutcomeModel) -> Explainer:
    """The explainer ``model.info.explainer`` names, checked against the classifier kind
    (see :func:`check_explainer`)."""
    return check_explainer(model.info.explainer, model.classifier.kind)


def explain(
    model: OutcomeModel,
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
    _check_positive("top_k", top_k)
    _check_positive("n_steps", n_steps)
    _check_input(model_input, request, summary)
    stretches = explainer.stretches(model, model_input, request, summary, n_steps, deadline)
    return top_attributions(stretches, top_k)


def word_attributions(
    model: OutcomeModel,
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
        Every word of the request, then of the summary (see :func:`word_scores`).

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
    _check_positive("n_steps", n_steps)
    _check_input(model_input, request, summary)
    return explainer.words(model, model_input, request, summary, n_steps, deadline)

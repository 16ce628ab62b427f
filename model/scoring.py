"""One output row for every consumer: validate, score, decide and warn in one place.

The HTTP API, ``predict --json``, batch files, Spark, the pyfunc and ``mlflow models
serve`` all produce their rows here, so they agree field for field
(:data:`OUTPUT_FIELDS`):

- :func:`check_record` turns one raw row (a mapping with ``request``, ``summary`` and
  pre-filing metadata columns) into a :class:`~imr_outcome.model.inputs.PredictInput`,
  or the message of why it cannot be scored;
- :func:`predict_items` scores validated items in one batch and attaches the band, the
  base rate, the relative risk and the warnings of each;
- :func:`score_records` does both for raw rows and never raises on a bad row: that row
  comes back with ``error`` set and null scores;
- :func:`output_row` / :func:`error_row` are the one place a row's fields are written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from imr_outcome.data.model_input import ModelInput, build_model_input, coerce_metadata_value
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.data.text_checks import check_text
from imr_outcome.errors import ImrOutcomeError, InvalidInputError
from imr_outcome.model.decision import DecisionRule, headline_without_rule
from imr_outcome.model.defaults import (
    MAX_TEXT_CHARS,
    MIN_REQUEST_CLINICAL_TERMS,
    MIN_SUMMARY_CLINICAL_TERMS,
)
from imr_outcome.model.inputs import PredictInput
from imr_outcome.model.model import FloatArray, OutcomeModel
from imr_outcome.model.outcome_rates import Rate, describe_rate
from imr_outcome.model.precedents import Precedent
from imr_outcome.model.prediction import Direction, OutcomeRate, Prediction, SimilarDecision
from imr_outcome.model.record import embedding_function
from imr_outcome.model.warnings import (
    Source,
    WarningDetail,
    clinical_terms,
    custom_warning,
    encoder_ood_warning,
    input_source,
    short_summary_warning,
    source_warning,
    vocabulary_warning,
    windows_warning,
)

logger = logging.getLogger(__name__)

#: Out-of-distribution hook: given the model input, return a warning or None.
OodDetector = Callable[[ModelInput], str | None]

#: The fields of every output row, in order (see :class:`Prediction` for their meaning).
#: ``error`` is null on a scored row; on a row that could not be scored it says why and
#: every score field is null. ``similar`` (the full similar decisions) is not among them:
#: the API and ``predict --similar`` add it when asked; every row has ``similar_ids``.
OUTPUT_FIELDS: tuple[str, ...] = (
    "p_overturned",
    "p_upheld",
    "label",
    "headline",
    "band",
    "band_reason",
    "base_rate",
    "relative_risk",
    "outcome_rates",
    "rate_summary",
    "similar_ids",
    "warnings",
    "warning_details",
    "error",
    "model_name",
    "model_version",
)


def one_line(message: str) -> str:
    """A message on one line (output rows are single lines in CSV and JSON Lines)."""
    return " ".join(message.split())


def describe_error(exc: Exception) -> str:
    """An exception as a row's ``error``: our own errors as they read, others with the
    exception's type first."""
    return str(exc) if isinstance(exc, ImrOutcomeError) else f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------ validation


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_record(record: Mapping[str, Any], max_chars: int = MAX_TEXT_CHARS) -> PredictInput | str:
    """Validate one raw row: the rule every path applies.

    Args:
        record: ``request`` (required), ``summary`` (null or missing means none) and any
            pre-filing metadata columns (:data:`~imr_outcome.data.schema.PREFILING_FIELDS`;
            ``patient_age`` may be integral text, as CSV gives it). Other keys are ignored.
        max_chars: the longest accepted request or summary, in characters.

    Returns:
        The validated input, or one line saying which field is wrong and how to fix it.
    """
    try:
        metadata = {}
        for name in PREFILING_FIELDS:
            value = coerce_metadata_value(name, record.get(name))
            if value is not None:
                metadata[name] = value
        request, summary = record.get("request"), record.get("summary")
        item = PredictInput.of(
            "" if _missing(request) else request,
            "" if _missing(summary) else summary,
            metadata,
            max_chars=max_chars,
        )
        check_text("request", item.request)
        if item.summary:
            check_text("summary", item.summary)
    except InvalidInputError as exc:
        return one_line(str(exc))
    return item


# --------------------------------------------------------------------------- scoring


def decision_fields(
    model: OutcomeModel,
    rule: DecisionRule | None,
    item: PredictInput,
    p_overturned: float,
    label: Direction,
    clinical_term_count: int,
) -> dict[str, Any]:
    """The :class:`Prediction` fields of the model's saved band rule for one item.

    Args:
        clinical_term_count: clinical terms in the request and summary together.

    Returns:
        ``headline``, ``base_rate``, ``relative_risk``, ``band``, ``band_reason``,
        ``band_accuracy`` and ``band_support``; only ``headline`` (the label and its
        probability) for a model saved without a rule.
    """
    if rule is None:
        p_label = p_overturned if label == LABELS[1] else 1.0 - p_overturned
        return {"headline": headline_without_rule(label, p_label)}
    band, reason = rule.decide(
        p_overturned,
        summary_words=len(item.summary.split()) if model.classifier.reads_summary else None,
        clinical_terms=clinical_term_count,
    )
    record = rule.records.get(band)
    return {
        "headline": rule.headline(p_overturned, band, reason),
        "base_rate": rule.base_rate,
        "relative_risk": rule.relative_risk(p_overturned),
        "band": band,
        "band_reason": reason,
        "band_accuracy": record.accuracy if record else None,
        "band_support": record.n if record and record.accuracy is not None else None,
    }


def item_warnings(
    model: OutcomeModel,
    rule: DecisionRule | None,
    item: PredictInput,
    model_input: ModelInput,
    terms: tuple[set[str], set[str]],
    n_windows: int = 1,
    ood_distance: float | None = None,
    ood_detector: OodDetector | None = None,
) -> list[WarningDetail]:
    """The reasons to trust one prediction less (:mod:`imr_outcome.model.warnings`).

    The short-summary warning uses the decision rule's ``min_summary_words`` (the one
    "too little input" rule; the band abstains on the same count).

    Args:
        terms: the clinical terms of the item's request and of its summary
            (:func:`~imr_outcome.model.warnings.clinical_terms`).

    Returns:
        Warnings in a fixed order: summary length, windows, vocabulary, source, OOD.
    """
    classifier = model.classifier
    found: list[WarningDetail] = []
    summary_words = len(item.summary.split())
    min_words = rule.min_summary_words if rule is not None else DecisionRule.min_summary_words
    if classifier.reads_summary and summary_words < min_words:
        found.append(short_summary_warning(summary_words, min_words))
    if n_windows > 1:
        found.append(windows_warning(n_windows))
    request_terms, summary_terms = (len(found_terms) for found_terms in terms)
    if classifier.reads_request and request_terms < MIN_REQUEST_CLINICAL_TERMS:
        found.append(vocabulary_warning("request", request_terms))
    few_summary_terms = summary_terms < MIN_SUMMARY_CLINICAL_TERMS
    if classifier.reads_summary and item.summary.strip() and few_summary_terms:
        found.append(vocabulary_warning("summary", summary_terms))
    source = input_source(item.metadata, item.source)
    trained_on = model.info.split
    if source is not None and trained_on in ("dwc", "dmhc") and source != trained_on:
        found.append(source_warning(source, cast(Source, trained_on)))
    detector = classifier.ood
    if ood_distance is not None and detector is not None and ood_distance >= detector.threshold:
        found.append(encoder_ood_warning(ood_distance, detector.threshold, detector.quantile))
    if ood_detector is not None and (ood := ood_detector(model_input)):
        found.append(custom_warning(ood))
    return found


#: Similar-decision ids in every row (the full decisions come on request).
SIMILAR_IDS = 3


def record_fields(
    model: OutcomeModel,
    inputs: Sequence[ModelInput],
    metadata: Sequence[Mapping[str, Any]],
    *,
    similar_k: int = 0,
    exclude_groups: Sequence[str | None] | None = None,
    embeddings: FloatArray | None = None,
) -> list[dict[str, Any]]:
    """The :class:`Prediction` fields of the model's record for n inputs.

    Args:
        model: the model; a model saved without a record gets empty fields.
        inputs / metadata: the n model inputs and their pre-filing metadata.
        embeddings: the inputs' item embeddings, shape ``(n, d)``, when scoring already
            computed them (:attr:`Scores.embeddings`); else an encoder record embeds here.
        similar_k: similar decisions to return in full (0: ids only).
        exclude_groups: per input, a letter's case number whose decisions are never
            returned (the input's own letter).

    Returns:
        n dicts with ``outcome_rates`` (finest first), ``rate_summary``, ``similar_ids``
        and ``similar``.
    """
    if model.record is None or not inputs:
        return [{} for _ in inputs]
    vectors = None
    if model.record.representation == "encoder":
        embed = embedding_function(model.classifier)
        vectors = embeddings if embeddings is not None or embed is None else embed(inputs)
    found = model.record.lookup(
        inputs,
        vectors,
        metadata=metadata,
        k=max(SIMILAR_IDS, similar_k),
        exclude_groups=exclude_groups,
    )
    # Rows of one batch share rate groups and precedents: validate each distinct one once.
    rate_rows: dict[Rate, OutcomeRate] = {}
    decisions: dict[Precedent, SimilarDecision] = {}
    fields = []
    for lookup in found:
        rates = lookup.rates.rates()
        precedents = [_validated_once(decisions, SimilarDecision, p) for p in lookup.similar]
        fields.append(
            {
                "outcome_rates": [_validated_once(rate_rows, OutcomeRate, r) for r in rates],
                "rate_summary": describe_rate(rates[0]) if rates else None,
                "similar_ids": [p.item_id for p in precedents[:SIMILAR_IDS]],
                "similar": precedents[:similar_k],
            }
        )
    return fields


_Row = TypeVar("_Row", bound=BaseModel)


def _validated_once(cache: dict[Any, _Row], schema: type[_Row], value: Any) -> _Row:
    """``schema`` of the flat dataclass ``value``, validated once per distinct value."""
    if value not in cache:
        cache[value] = schema.model_validate(value, from_attributes=True)
    return cache[value]


def saved_rule(model: OutcomeModel) -> DecisionRule | None:
    """The decision rule saved with ``model``, or None for a model saved without one."""
    return DecisionRule.from_dict(model.info.decision) if model.info.decision else None


def predict_items(
    model: OutcomeModel,
    items: Sequence[PredictInput],
    *,
    ood_detector: OodDetector | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    similar_k: int = 0,
    exclude_groups: Sequence[str | None] | None = None,
) -> list[tuple[Prediction, ModelInput]]:
    """Score validated items in one batch (no evidence).

    Args:
        model: the loaded model.
        items: n validated inputs.
        ood_detector: an extra out-of-distribution check (see :data:`OodDetector`).
        model_name / model_version: what the rows call the model (default ``model.name``
            / ``model.version``).
        similar_k / exclude_groups: see :func:`record_fields`.

    Returns:
        n ``(prediction, model input)`` pairs in input order; the model input is what
        evidence is computed on.

    Raises:
        InvalidInputError: the model rejects an input (e.g. a request too long for a
            transformer window); see :func:`score_records` for the per-row version.
    """
    if not items:
        return []
    rule = saved_rule(model)
    metadata = [{k: v for k, v in item.metadata.items() if v is not None} for item in items]
    inputs = [
        build_model_input(item.request, item.summary, meta)
        for item, meta in zip(items, metadata, strict=True)
    ]
    scores = model.score(inputs, metadata)
    records = record_fields(
        model,
        inputs,
        metadata,
        similar_k=similar_k,
        exclude_groups=exclude_groups,
        embeddings=scores.embeddings,
    )
    overturned, upheld = model.info.labels.index(LABELS[1]), model.info.labels.index(LABELS[0])
    results = []
    for index, (item, model_input) in enumerate(zip(items, inputs, strict=True)):
        p_overturned = min(max(float(scores.proba[index, overturned]), 0.0), 1.0)
        distance = None if scores.ood_distance is None else float(scores.ood_distance[index])
        label = cast(Direction, scores.labels[index])
        terms = clinical_terms(item.request), clinical_terms(item.summary)
        warnings = item_warnings(
            model,
            rule,
            item,
            model_input,
            terms,
            int(scores.windows[index]),
            distance,
            ood_detector,
        )
        prediction = Prediction(
            p_overturned=p_overturned,
            p_upheld=min(max(float(scores.proba[index, upheld]), 0.0), 1.0),
            label=label,
            threshold=model.threshold,
            **decision_fields(model, rule, item, p_overturned, label, len(terms[0] | terms[1])),
            model_name=model.name if model_name is None else model_name,
            model_version=model.version if model_version is None else model_version,
            **records[index],
            **Prediction.warning_fields(warnings),
        )
        results.append((prediction, model_input))
    return results


def predict_each(
    predict: Callable[[Sequence[PredictInput]], Sequence[Prediction]],
    items: Sequence[PredictInput],
) -> list[Prediction | str]:
    """``predict(items)``; when the batch fails, item by item, errors as row messages.

    One bad item (one the model rejects) must not lose the others of its batch.
    """
    if not items:
        return []
    try:
        return list(predict(items))
    except Exception as exc:
        logger.info(
            "a batch of %d failed (%s); scoring item by item", len(items), type(exc).__name__
        )
    results: list[Prediction | str] = []
    for item in items:
        try:
            results.append(predict([item])[0])
        except Exception as exc:
            logger.warning("an item failed: %s", type(exc).__name__)
            logger.debug("item failure", exc_info=True)
            results.append(one_line(describe_error(exc)))
    return results


# ------------------------------------------------------------------------------ rows


def output_row(prediction: Prediction) -> dict[str, Any]:
    """The :data:`OUTPUT_FIELDS` of a scored item, JSON-ready (``warning_details`` as
    ``{code, message, figures}`` objects)."""
    row = prediction.model_dump(include=set(OUTPUT_FIELDS), mode="json")
    return {name: row[name] for name in OUTPUT_FIELDS}


def error_row(message: str, model_name: str, model_version: str) -> dict[str, Any]:
    """The :data:`OUTPUT_FIELDS` of a row that could not be scored: ``error`` says why;
    every other field but the model's name and version is null."""
    row: dict[str, Any] = dict.fromkeys(OUTPUT_FIELDS)
    row.update(error=one_line(message), model_name=model_name, model_version=model_version)
    return row


def score_records(
    model: OutcomeModel,
    records: Sequence[Mapping[str, Any]],
    *,
    max_chars: int = MAX_TEXT_CHARS,
) -> list[dict[str, Any]]:
    """Score raw rows into output rows; never raises on a bad row.

    Args:
        model: the loaded model.
        records: n raw rows (see :func:`check_record`).
        max_chars: the longest accepted request or summary, in characters.

    Returns:
        n rows of :data:`OUTPUT_FIELDS`, in input order: scored rows, and rows the
        checks or the model refused, with ``error`` set.
    """
    checked = [check_record(record, max_chars) for record in records]
    items = [item for item in checked if isinstance(item, PredictInput)]
    outcomes = iter(predict_each(lambda batch: [p for p, _ in predict_items(model, batch)], items))
    rows = []
    for item in checked:
        outcome = next(outcomes) if isinstance(item, PredictInput) else item
        rows.append(
            output_row(outcome)
            if isinstance(outcome, Prediction)
            else error_row(outcome, model.name, model.version)
        )
    return rows

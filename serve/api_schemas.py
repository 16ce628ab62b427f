"""The HTTP contract: pydantic request and response bodies of the ``/v1`` API.

Predictions are :class:`~imr_outcome.model.prediction.Prediction` unchanged, so evidence
offsets index the exact ``request`` / ``summary`` strings of the request body (for a
letter upload: the ``request`` and ``summary`` strings returned beside each prediction).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from imr_outcome.data.text_checks import LETTER_PATTERN, check_text, check_unicode
from imr_outcome.model.defaults import SIMILAR_K, TOP_K
from imr_outcome.model.prediction import (
    Direction,
    OutcomeRate,
    Prediction,
    SimilarDecision,
)

#: Evidence spans per direction when the caller does not say.
DEFAULT_TOP_K = TOP_K
#: Most evidence spans per direction a caller may ask for.
MAX_TOP_K = 20
#: Longest metadata text value (``patient_sex``, ``imr_type``, ...), in characters; the
#: longest DMHC diagnosis subcategory is under 100.
MAX_METADATA_CHARS = 200

#: The OpenAPI facts of ``request`` / ``summary`` that the validators below enforce
#: (``maxLength`` is the server's ``max_chars``, added by :func:`state_limits`).
_TEXT_SCHEMA: dict[str, Any] = {"minLength": 1, "pattern": LETTER_PATTERN}


def _integral(value: Any) -> Any:
    """``6.0`` -> ``6``: JSON Schema counts a number with a zero fraction as an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: A whole number as JSON Schema defines ``integer`` (``6`` or ``6.0``; not ``6.5``,
#: ``"6"`` or ``true``) is what these accept. The bounds come before the conversion, so
#: the OpenAPI document states them as ``minimum`` / ``maximum``.
#: An age in years, 0-120 (as :func:`~imr_outcome.data.model_input.metadata_prefix` checks).
Age = Annotated[int, Field(ge=0, le=120), BeforeValidator(_integral)]
#: Evidence spans per direction, 1-:data:`MAX_TOP_K`.
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K), BeforeValidator(_integral)]

RequestText = Annotated[
    str,
    Field(
        description="The requested treatment or item, in words (at least one letter).",
        json_schema_extra=_TEXT_SCHEMA,
    ),
]
SummaryText = Annotated[
    str,
    Field(
        description="The clinical case summary, in words (at least one letter). Leave the "
        "field out when there is none; a short summary gets a warning.",
        json_schema_extra=_TEXT_SCHEMA,
    ),
]


class Metadata(BaseModel):
    """Pre-filing metadata of one item; every field may be left out or null (unknown).

    The fields are :data:`~imr_outcome.data.schema.PREFILING_FIELDS`: nothing known only
    after filing (reviewer, decision) is accepted.

    Attributes:
        patient_age: the patient's age in years, 0-120 (DWC letters).
        patient_sex: the patient's sex as written (``"male"``, ``"female"``).
        age_range: the DMHC age band (``"41-50"``).
        imr_type: the DMHC review type (``"Medical Necessity"``).
        diagnosis_category / diagnosis_subcategory: the DMHC diagnosis taxonomy.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    patient_age: Age | None = None
    patient_sex: str | None = Field(default=None, max_length=MAX_METADATA_CHARS)
    age_range: str | None = Field(default=None, max_length=MAX_METADATA_CHARS)
    imr_type: str | None = Field(default=None, max_length=MAX_METADATA_CHARS)
    diagnosis_category: str | None = Field(default=None, max_length=MAX_METADATA_CHARS)
    diagnosis_subcategory: str | None = Field(default=None, max_length=MAX_METADATA_CHARS)

    @field_validator(
        "patient_sex", "age_range", "imr_type", "diagnosis_category", "diagnosis_subcategory"
    )
    @classmethod
    def _unicode(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_unicode(str(info.field_name), value)

    def values(self) -> dict[str, str | int]:
        """The known values, keyed by field name (None values left out)."""
        return self.model_dump(exclude_none=True)


class _Item(BaseModel):
    """The text and metadata of one item (see :class:`PredictRequest`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request: RequestText
    summary: SummaryText = ""
    metadata: Metadata | None = None

    # A default is not validated: a summary left out is "none"; a summary sent must be text.
    @field_validator("request", "summary")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return check_text(str(info.field_name), value)


class PredictRequest(_Item):
    """``POST /v1/predict``: one disputed item.

    Attributes:
        request: the requested treatment: text with at least one letter, at most the
            server's ``max_chars`` characters (no lone UTF-16 surrogates).
        summary: the clinical case summary, under the same rules; leave it out when there
            is none (``""`` is refused: it holds no letters). A short summary gets a
            warning.
        metadata: pre-filing metadata (:class:`Metadata`), or None.
        explain: also return evidence spans (slower: integrated gradients for transformer
            models); items longer than the server's ``max_explain_chars`` get none and a
            warning.
        top_k: evidence spans per direction, 1-20.
        similar: also return the 5 most similar past decisions in full (``similar``);
            every prediction carries the ids of the top 3 (``similar_ids``) regardless.
    """

    explain: bool = False
    top_k: TopK = DEFAULT_TOP_K
    similar: bool = False


class SimilarRequest(_Item):
    """``POST /v1/similar``: the past decisions most like one item.

    Attributes:
        request, summary, metadata: as for :class:`PredictRequest`.
        k: how many decisions, 1-20.
    """

    k: TopK = SIMILAR_K


class SimilarResponse(BaseModel):
    """How past decisions of this kind came out, and the most similar ones.

    Attributes:
        outcome_rates: the Overturned rates of the item's groups, finest first.
        rate_summary: the finest of them in one sentence.
        similar: the k most similar past decisions, most similar first; each shows the
            start of its own rationale (display only: no model reads it).
        model_name / model_version: whose training decisions these are.
    """

    outcome_rates: list[OutcomeRate]
    rate_summary: str | None
    similar: list[SimilarDecision]
    model_name: str
    model_version: str


class BatchItem(_Item):
    """One item of ``POST /v1/predict/batch`` (see :class:`PredictRequest`)."""


class BatchRequest(BaseModel):
    """``POST /v1/predict/batch``: 1 to the server's ``max_batch_items`` items.

    Attributes:
        items: the items, predicted together in input order.
        explain: also return evidence spans for every item (within the evidence budget).
        top_k: evidence spans per direction, 1-20.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[BatchItem]
    explain: bool = False
    top_k: TopK = DEFAULT_TOP_K


class BatchResponse(BaseModel):
    """Predictions in the order of the request's items."""

    predictions: list[Prediction]


class LetterItem(BaseModel):
    """One disputed item of an uploaded letter and its prediction.

    Attributes:
        index: 0-based position of the item in the letter.
        request: the disputed request as parsed; evidence with ``field == "request"``
            indexes this string.
        letter_decision: the decision printed in the letter, for comparison only; it is
            never a model input.
        prediction: predicted from the request, the case summary and the patient's
            age/sex only.
    """

    index: int
    request: str
    letter_decision: Direction
    prediction: Prediction


class LetterResponse(BaseModel):
    """``POST /v1/letters``: a parsed letter's items with predictions.

    Attributes:
        filename: the uploaded file's name as sent by the client.
        case_number: the letter's case number, when the header has one.
        summary: the clinical case summary as parsed; evidence with
            ``field == "summary"`` indexes this string.
        items: one entry per disputed item, in letter order.
    """

    filename: str
    case_number: str | None
    summary: str
    items: list[LetterItem]


#: What one check of a followed alias found (see :class:`ReloadReport`).
ReloadOutcome = Literal["swapped", "unchanged", "refused", "postponed", "unavailable"]


class ReloadReport(BaseModel):
    """One check of the followed registry alias (``POST /v1/admin/reload``, ``/v1/model``).

    Attributes:
        outcome: ``swapped`` (the alias pointed at another version, which loaded, passed
            its test prediction and now answers), ``unchanged`` (the alias points at the
            version answering), ``refused`` (that version failed to load or to predict; the
            old one keeps answering), ``postponed`` (the version swapped out last still
            answers requests, so a third model is not loaded; the next check retries) or
            ``unavailable`` (the registry could not be read; the old version keeps answering).
        uri: the alias followed, ``models:/<name>@<alias>``.
        version: the version the alias pointed at; None when the registry was unavailable.
        serving: the version answering after the check.
        previous: the version replaced (``swapped`` only), else None.
        reason: why a version was refused or postponed or the registry was unavailable,
            else None.
        checked_at: ISO 8601 UTC time at which the check ended.
        seconds: how long the check took (alias lookup, load and test prediction), >= 0.
    """

    outcome: ReloadOutcome
    uri: str
    version: str | None
    serving: str
    previous: str | None = None
    reason: str | None = None
    checked_at: str
    seconds: float


class ModelCard(BaseModel):
    """``GET /v1/model``: which model answers, and how good it was on held-out data.

    Attributes:
        uri: the URI the server was started with.
        name / version: as resolved (registry name and version number; the local path
            and ``"local"`` for a model directory).
        alias: the registry alias the server was started with (``models:/name@alias``),
            else the aliases that point at this version joined by ``","``, else None.
        kind: classifier kind (``tfidf_lr``, ``transformer``, ...).
        split: the source it was trained for (``dwc`` or ``dmhc``).
        base_model: encoder name for transformer kinds, else ``""``.
        labels: label names in label-id order.
        threshold: P(Overturned) at or above which the label is Overturned.
        data_fingerprint: fingerprint of the training dataset.
        created: ISO 8601 UTC time of training.
        config_name: the training run config's name.
        explainer: the evidence method.
        metrics: the registered run's held-out ``test.*`` metrics with their bootstrap
            intervals (``.ci_low`` / ``.ci_high``), subgroup metrics left out; empty when
            the model is not a registry version or the store has none.
        max_chars: the longest request or summary this server accepts, in characters.
        max_batch_items: the most items one batch or letter may have.
        follows: the alias URI the server follows (``models:/<name>@<alias>``: a new
            version it points at replaces this one), or None for a pinned URI.
        follow_interval_s: seconds between checks of that alias; None when not followed
            or the timer is off (``--follow-interval 0``: ``POST /v1/admin/reload`` only).
        last_check: the latest check of the alias, or None (none yet, or not followed).
        last_reload: the latest check that found another version (``swapped``,
            ``refused`` or ``postponed``), or None.
    """

    uri: str
    name: str
    version: str
    alias: str | None
    kind: str
    split: str
    base_model: str
    labels: list[str]
    threshold: float
    data_fingerprint: str
    created: str
    config_name: str
    explainer: str
    metrics: dict[str, float]
    max_chars: int
    max_batch_items: int
    follows: str | None = None
    follow_interval_s: float | None = None
    last_check: ReloadReport | None = None
    last_reload: ReloadReport | None = None


class Health(BaseModel):
    """``GET /healthz`` and ``GET /readyz``.

    Attributes:
        status: ``"ok"`` (alive / ready), ``"loading"``, ``"failed"`` or ``"draining"``
            (shutting down after SIGTERM).
        detail: why the server is not ready, else None.
    """

    status: str
    detail: str | None = None


class ErrorItem(BaseModel):
    """One problem with a request.

    Attributes:
        field: the offending field (``request``, ``items[2].summary``, ``file``,
            ``body``, ...).
        message: what was wrong and how to fix it.
    """

    field: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx response body of the API."""

    detail: list[ErrorItem]


def state_limits(openapi: dict[str, Any], *, max_chars: int, max_batch_items: int) -> None:
    """Write a server's limits into its OpenAPI document, in place.

    The bodies above are shared by every server; the limits are per server (flags), so
    the generated document gets them afterwards: ``maxLength`` of every ``request`` and
    ``summary``, ``minItems``/``maxItems`` of a batch's ``items``. A request within them
    is not refused for its size.

    Args:
        openapi: the document from :func:`fastapi.openapi.utils.get_openapi`.
        max_chars: the longest request or summary, in characters.
        max_batch_items: the most items in one batch.
    """
    schemas = openapi.get("components", {}).get("schemas", {})
    for name in ("PredictRequest", "BatchItem"):
        for text in ("request", "summary"):
            schemas[name]["properties"][text]["maxLength"] = max_chars
    items = schemas["BatchRequest"]["properties"]["items"]
    items["minItems"], items["maxItems"] = 1, max_batch_items

"""The HTTP contract: pydantic request and response bodies of the ``/v1`` API.

Predictions are :class:`~imr_outcome.serve.schemas.Prediction` unchanged, so evidence
offsets index the exact ``request`` / ``summary`` strings of the request body (for a
letter upload: the ``request`` and ``summary`` strings returned beside each prediction).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from imr_outcome.data.model_input import MetadataValue
from imr_outcome.serve.schemas import Direction, Prediction

#: Evidence spans per direction when the caller does not say.
DEFAULT_TOP_K = 5
#: Most evidence spans per direction a caller may ask for.
MAX_TOP_K = 20


class PredictRequest(BaseModel):
    """``POST /v1/predict``: one disputed item.

    Attributes:
        request: the requested treatment, non-empty text.
        summary: the clinical case summary (``""`` when there is none; a short summary
            gets a warning).
        metadata: pre-filing metadata (``patient_age`` 0-120 in years, ``patient_sex``,
            and the DMHC fields ``age_range``, ``imr_type``, ``diagnosis_category``,
            ``diagnosis_subcategory``), or None.
        explain: also return evidence spans (slower: integrated gradients for transformer
            models).
        top_k: evidence spans per direction, 1-20.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    request: str
    summary: str = ""
    metadata: dict[str, MetadataValue] | None = None
    explain: bool = False
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)


class BatchItem(BaseModel):
    """One item of ``POST /v1/predict/batch`` (see :class:`PredictRequest`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request: str
    summary: str = ""
    metadata: dict[str, MetadataValue] | None = None


class BatchRequest(BaseModel):
    """``POST /v1/predict/batch``: 1 to the server's ``max_batch_items`` items.

    Attributes:
        items: the items, predicted together in input order.
        explain: also return evidence spans for every item.
        top_k: evidence spans per direction, 1-20.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[BatchItem]
    explain: bool = False
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)


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


class Health(BaseModel):
    """``GET /healthz`` and ``GET /readyz``.

    Attributes:
        status: ``"ok"`` (alive / ready), ``"loading"`` or ``"failed"``.
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

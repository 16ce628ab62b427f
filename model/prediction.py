"""The prediction contract: pydantic schemas shared by the Python API, CLI and HTTP API.

Evidence spans are character offsets into the exact strings the caller passed, so a UI
can highlight ``request[start:end]`` or ``summary[start:end]`` directly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imr_outcome.model.warnings import WarningDetail

Direction = Literal["Overturned", "Upheld"]
#: The bands a person reads (see ``imr_outcome.model.decision``).
BandName = Literal["likely upheld", "uncertain", "likely overturned", "insufficient information"]


class EvidenceSpan(BaseModel):
    """A stretch of input text that pushed the prediction one way.

    Attributes:
        field: which input string the offsets index: ``"request"`` or ``"summary"``.
        start: first character, 0-based, into that string.
        end: one past the last character; ``text == <field string>[start:end]``.
        text: the highlighted text.
        weight: attribution mass of the span (sum over its tokens), >= 0; larger pushes
            harder. Units are the explainer's (logit units for integrated gradients).
        direction: the outcome the span pushes toward.
    """

    model_config = ConfigDict(frozen=True)

    field: Literal["request", "summary"]
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str
    weight: float = Field(ge=0)
    direction: Direction

    @model_validator(mode="after")
    def _ordered(self) -> EvidenceSpan:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if len(self.text) != self.end - self.start:
            raise ValueError("text must be exactly the characters from start to end")
        return self


class OutcomeRate(BaseModel):
    """How past decisions of one kind came out (see
    :class:`~imr_outcome.model.outcome_rates.Rate`, whose fields these are).

    Attributes:
        level: ``"item"`` (e.g. "Hydrocodone"), ``"diagnosis"`` (DMHC), ``"category"`` or
            ``"source"`` (every training decision).
        key: the group's name.
        n / overturned: decided items in the group and how many were Overturned.
        rate: ``overturned / n``; ci_low / ci_high: its Wilson 95% interval (Wilson 1927).
        shrunk_rate: the empirical-Bayes rate, pulled toward ``parent`` (beta-binomial,
            method of moments); prior_strength: the parent's pseudo-cases.
        small_sample: ``n`` < 10: read ``rate`` with care.
        year_min / year_max: the years of those decisions; source: where they come from.
    """

    model_config = ConfigDict(frozen=True)

    level: str
    key: str
    n: int = Field(ge=1)
    overturned: int = Field(ge=0)
    rate: float = Field(ge=0, le=1)
    ci_low: float = Field(ge=0, le=1)
    ci_high: float = Field(ge=0, le=1)
    shrunk_rate: float = Field(ge=0, le=1)
    parent: str | None
    prior_strength: float = Field(ge=0)
    small_sample: bool
    year_min: int | None
    year_max: int | None
    source: str


class SimilarDecision(BaseModel):
    """One similar past decision (see :class:`~imr_outcome.model.precedents.Precedent`).

    Attributes:
        item_id: the decided item, e.g. ``CM16-0213037#1``; case_number: its letter.
        decision_date / year: when it was decided (None when unknown).
        request: what was requested; outcome: ``"Upheld"`` or ``"Overturned"``.
        rationale_excerpt: the start of that decision's own rationale: shown to people,
            never read by a model (a test proves it).
        request_category: its request category.
        similarity: cosine similarity to this item in the model's own representation.
    """

    model_config = ConfigDict(frozen=True)

    item_id: str
    case_number: str
    decision_date: str | None
    year: int | None
    request: str
    outcome: Direction
    rationale_excerpt: str | None
    request_category: str | None
    similarity: float


class Prediction(BaseModel):
    """A calibrated prediction for one disputed item.

    Attributes:
        p_overturned / p_upheld: calibrated probabilities in [0, 1] that sum to 1.
        label: the predicted outcome at the model's saved threshold (for machines; a
            person should read ``band``).
        threshold: P(Overturned) at or above which the label is Overturned.
        headline: the sentence a person reads first, the same on every path: the band,
            the estimate against the usual rate and the probability ("Uncertain: less
            likely than usual to be overturned, 7% (usual: 11%).";
            :meth:`~imr_outcome.model.decision.DecisionRule.headline`), or why there is
            not enough information to estimate.
        base_rate: the training prior of Overturned for the model's source, in (0, 1)
            (None for models saved without a decision rule).
        relative_risk: ``p_overturned / base_rate`` (2.0: twice the usual rate), or None.
        band: "likely upheld", "uncertain", "likely overturned" or "insufficient
            information" (too little text to rank; the probability is still given), or
            None for models saved without a decision rule.
        band_reason: why this band, in words.
        band_accuracy: how often this band was right on held-out letters (out-of-fold
            items of the training rows): the Upheld share for "likely upheld", the
            Overturned share for "likely overturned"; None for the other bands.
        band_support: how many held-out items that figure rests on.
        model_name / model_version: registry name and version (or the local path and
            ``"local"`` for an unregistered model directory).
        evidence: spans, strongest first within each direction (empty when not asked).
        warnings: reasons to trust this prediction less (short summary, chunked input,
            out-of-distribution text, other data source than training), as plain-language
            messages that say what to do.
        warning_details: the same warnings, in the same order, with a stable ``code`` and
            the ``figures`` behind each (see :mod:`imr_outcome.model.warnings`).
        outcome_rates: how past decisions of this kind of request came out, finest group
            first (item, category, all decisions); empty for models saved without a record.
        rate_summary: the finest of them in one plain sentence, or None.
        similar_ids: the ``item_id`` of the 3 most similar past decisions (never from the
            item's own letter when it comes from one).
        similar: those decisions in full (k of them, 5 by default), when asked for
            (``similar: true`` on the API, ``predict --similar``); else empty.
        error: always null here: the field of the one output row
            (:data:`~imr_outcome.model.scoring.OUTPUT_FIELDS`) that says why a row of a
            batch could not be scored; a single call with bad input is refused instead.
    """

    model_config = ConfigDict(frozen=True)

    p_overturned: float = Field(ge=0, le=1)
    p_upheld: float = Field(ge=0, le=1)
    label: Direction
    threshold: float = Field(ge=0, le=1)
    headline: str = ""
    base_rate: float | None = Field(default=None, gt=0, lt=1)
    relative_risk: float | None = Field(default=None, ge=0)
    band: BandName | None = None
    band_reason: str = ""
    band_accuracy: float | None = Field(default=None, ge=0, le=1)
    band_support: int | None = Field(default=None, ge=0)
    model_name: str
    model_version: str
    evidence: list[EvidenceSpan] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    warning_details: list[WarningDetail] = Field(default_factory=list)
    outcome_rates: list[OutcomeRate] = Field(default_factory=list)
    rate_summary: str | None = None
    similar_ids: list[str] = Field(default_factory=list)
    similar: list[SimilarDecision] = Field(default_factory=list)
    error: None = None

    @model_validator(mode="after")
    def _warnings_match_details(self) -> Prediction:
        if self.warning_details and self.warnings != [w.message for w in self.warning_details]:
            raise ValueError("warnings must be the messages of warning_details, in order")
        return self

    @classmethod
    def warning_fields(cls, details: list[WarningDetail]) -> dict[str, list[Any]]:
        """``warnings`` and ``warning_details`` keyword arguments for ``details``."""
        return {"warnings": [w.message for w in details], "warning_details": list(details)}

    def with_warning(self, detail: WarningDetail) -> Prediction:
        """A copy with ``detail`` appended to ``warnings`` and ``warning_details``."""
        return self.model_copy(
            update={
                "warnings": [*self.warnings, detail.message],
                "warning_details": [*self.warning_details, detail],
            }
        )

"""Typed records for IMR letters, their disputed items, and table rows.

Outcome-side text (the decision's guideline citations and rationale) is held in
:class:`OutcomeText`, which is not a ``str``: it cannot be concatenated, formatted or
passed where model-input text is expected without an explicit :meth:`OutcomeText.reveal`,
and mypy rejects it in :func:`imr_outcome.data.model_input.build_model_input`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

#: The label names in label-id order. ``Overturned`` (id 1) is the positive class
#: everywhere metrics are computed. This tuple is the only place label ids are defined.
LABELS: tuple[str, str] = ("Upheld", "Overturned")


class Decision(StrEnum):
    """An IMR decision on one disputed item, as worded in the letter."""

    UPHELD = "Upheld"
    OVERTURNED = "Overturned"

    @property
    def label_id(self) -> int:
        """The integer label: 0 for Upheld, 1 for Overturned (see :data:`LABELS`)."""
        return LABELS.index(self.value)


@dataclass(frozen=True)
class Located(Generic[T]):
    """A parsed value with its provenance.

    Attributes:
        value: the cleaned value (wrapped lines joined, whitespace collapsed).
        start: character offset where the value's raw text begins in ``Letter.text``.
        end: character offset one past its end; ``Letter.text[start:end]`` is the raw text
            the value was read from (before joining wrapped lines).
    """

    value: T
    start: int
    end: int


class OutcomeText:
    """Text that states or explains an IMR outcome; never a model input.

    It deliberately is not a ``str``: ``str()``/``repr()``/f-strings show only a
    placeholder, so outcome text cannot slip into model input by formatting or
    concatenation. Call :meth:`reveal` where the text itself is needed (reports, audits).

    Args:
        text: the outcome text, whitespace-normalized.
        start: character offset of its raw text in ``Letter.text``.
        end: one past the last character of its raw text.
    """

    __slots__ = ("_text", "end", "start")

    def __init__(self, text: str, start: int, end: int) -> None:
        self._text = text
        self.start = start
        self.end = end

    def reveal(self) -> str:
        """Return the outcome text. Never feed the result to a model."""
        return self._text

    def __len__(self) -> int:
        return len(self._text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutcomeText) and (self._text, self.start, self.end) == (
            other._text,
            other.start,
            other.end,
        )

    def __hash__(self) -> int:
        return hash((self._text, self.start, self.end))

    def __repr__(self) -> str:
        return f"<OutcomeText {len(self._text)} chars at {self.start}:{self.end}>"

    __str__ = __repr__


@dataclass(frozen=True)
class Outcome:
    """The outcome side of one disputed item (section 3 of a letter). Never a model input.

    Attributes:
        decision: Upheld or Overturned, with the offsets of the decision word.
        claims_administrator_guideline: the "Claims Administrator guideline:" paragraph.
        maximus_guideline: the "MAXIMUS guideline:" paragraph.
        rationale: the "Decision rationale:" paragraph(s).
    """

    decision: Located[Decision]
    claims_administrator_guideline: OutcomeText | None
    maximus_guideline: OutcomeText | None
    rationale: OutcomeText | None


@dataclass(frozen=True)
class Item:
    """One disputed item of a letter: one labeled example.

    Attributes:
        index: 0-based position of the item in its letter.
        request: the disputed request (for a partial authorization, the remaining
            IMR-eligible portion), wrapped lines joined.
        partial_authorization: True when the claims administrator authorized part of
            the original request and only the remainder went to IMR.
        original_request: the original request, for partial authorizations; else None.
        outcome: the decision and its reasons (outcome side, never model input).
    """

    index: int
    request: Located[str]
    partial_authorization: bool
    original_request: Located[str] | None
    outcome: Outcome


@dataclass(frozen=True)
class Reviewer:
    """The expert reviewer's credentials (assigned after filing: not a model input).

    Attributes:
        licensure_states: US states of licensure, in letter order.
        specialties: specialties / board certifications, in letter order.
    """

    licensure_states: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()


@dataclass(frozen=True)
class Letter:
    """A parsed DWC IMR final determination letter.

    Attributes:
        source: path (or label) of the file the letter was read from.
        text: the normalized full text; every ``Located`` offset indexes into it.
        case_number: e.g. ``CM16-0213037``; None when the export dropped the header.
        date_assigned / decision_date / ur_denial_date / date_received: header dates.
        priority: e.g. ``Standard`` or ``Expedited`` when the header states it.
        reviewer: licensure states and specialty of the expert reviewer.
        patient_age: age in years stated in the case summary, if any.
        patient_sex: ``"female"`` or ``"male"`` when the summary states it.
        injury_date: the date of injury stated in the case summary (the header's
            "Date of Injury" is altered by redaction, so it is not trusted).
        summary: the clinical case summary without the fixed preamble sentence.
        items: the decided items, in letter order (at least one).
    """

    source: str
    text: str
    case_number: Located[str] | None
    date_assigned: Located[dt.date] | None
    decision_date: Located[dt.date] | None
    ur_denial_date: Located[dt.date] | None
    date_received: Located[dt.date] | None
    priority: Located[str] | None
    reviewer: Reviewer
    patient_age: Located[int] | None
    patient_sex: Located[str] | None
    injury_date: Located[dt.date] | None
    summary: Located[str]
    items: tuple[Item, ...] = field(default_factory=tuple)

    @property
    def letter_id(self) -> str:
        """The case number, or the source file's stem when the header was dropped."""
        if self.case_number is not None:
            return self.case_number.value
        return Path(self.source).stem


#: Metadata fields known before an IMR is filed; the only metadata a model may see.
PREFILING_FIELDS: tuple[str, ...] = (
    "patient_age",
    "patient_sex",
    "age_range",
    "imr_type",
    "diagnosis_category",
    "diagnosis_subcategory",
)


@dataclass(frozen=True)
class ItemRecord:
    """One dataset row: a disputed item with its pre-filing inputs and label.

    The fields split four ways. Model inputs: ``request``, ``summary`` and the
    :data:`PREFILING_FIELDS`. Grouping and splitting: ``id``, ``group_id``,
    ``event_date``, ``report_year``. Context for subgroup reports only (known after
    filing, never a model input): ``reviewer_specialty``, ``request_category``.
    Display only (shown beside similar past decisions, never a model input, see
    :data:`DISPLAY_ONLY_FIELDS`): ``decision_date``, ``rationale_excerpt``.

    Attributes:
        id: unique row id, e.g. ``CM16-0213037#0`` or a DMHC reference id.
        group_id: the letter or case the item belongs to; items of one group never
            straddle folds.
        source: ``"dwc"`` (workers' comp letters) or ``"dmhc"`` (health-plan table).
        source_file: the file the row was read from.
        request: the disputed treatment request text.
        summary: the pre-decision case summary/background ("" when the source has none).
        label: 0 = Upheld, 1 = Overturned (see :data:`LABELS`).
        partial_authorization: the request is the remainder of a partly authorized one.
        patient_age: age in years, 0-120, when stated.
        patient_sex: ``"female"`` / ``"male"`` when stated.
        age_range: DMHC age band, e.g. ``"41-50"``.
        imr_type: DMHC IMR type, e.g. ``"Medical Necessity"``.
        diagnosis_category / diagnosis_subcategory: DMHC diagnosis taxonomy.
        request_category: DWC-derived or DMHC treatment category (subgroup reports).
        reviewer_specialty: expert reviewer's first specialty (subgroup reports).
        event_date: ISO date the IMR was assigned (DWC) or the last day of the report
            year (DMHC, where only the year is published); used by time splits.
        report_year: calendar year of the decision.
        decision_date: ISO date of the decision (DWC letters; None for DMHC, which
            publishes the year only). Display only.
        rationale_excerpt: the first ~300 characters of the item's own decision rationale,
            cut at a sentence end (:func:`imr_outcome.data.letters.rationale_excerpt`);
            outcome text, held as :class:`OutcomeText` so it cannot reach a model input
            by accident. None where the source has no rationale. Display only.
    """

    id: str
    group_id: str
    source: str
    source_file: str
    request: str
    summary: str
    label: int
    partial_authorization: bool = False
    patient_age: int | None = None
    patient_sex: str | None = None
    age_range: str | None = None
    imr_type: str | None = None
    diagnosis_category: str | None = None
    diagnosis_subcategory: str | None = None
    request_category: str | None = None
    reviewer_specialty: str | None = None
    event_date: str | None = None
    report_year: int | None = None
    decision_date: str | None = None
    rationale_excerpt: OutcomeText | None = None


#: Dataset columns that are shown to a person and never read by a model: the outcome
#: side of an item (its decision's rationale) and when it was decided. The leakage audit
#: (:func:`imr_outcome.data.audit.audit_display_only`) and the tests prove that no model
#: input reads them.
DISPLAY_ONLY_FIELDS: tuple[str, ...] = ("decision_date", "rationale_excerpt")

#: The columns a model input is built from (:func:`~imr_outcome.data.model_input.
#: record_model_input`): the request, the summary and the pre-filing metadata.
MODEL_INPUT_FIELDS: tuple[str, ...] = ("request", "summary", *PREFILING_FIELDS)

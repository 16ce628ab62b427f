"""The one function that builds model input text.

A model may see only what exists before an IMR is filed: the requested item, the case
summary, and the pre-filing metadata named in :data:`PREFILING_FIELDS`. Training,
evaluation and serving all call :func:`build_model_input`, so no other code path can
add outcome text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from imr_outcome.data.counterfactuals import normalize_text
from imr_outcome.data.house_style import NormalizedText
from imr_outcome.data.schema import PREFILING_FIELDS, ItemRecord, Letter
from imr_outcome.errors import InvalidInputError, LeakageError

MetadataValue = str | int | None


class LetterMetadata(TypedDict):
    """The pre-filing metadata a DWC letter states."""

    patient_age: int | None
    patient_sex: str | None


def prefiling_metadata(letter: Letter) -> LetterMetadata:
    """A DWC letter's pre-filing metadata: the patient's age (years) and sex stated in
    its case summary; None where the letter does not say."""
    return LetterMetadata(
        patient_age=letter.patient_age.value if letter.patient_age else None,
        patient_sex=letter.patient_sex.value if letter.patient_sex else None,
    )


def coerce_metadata_value(field: str, value: object) -> MetadataValue:
    """One pre-filing metadata value as a table or JSON row gives it, in the model's type.

    Missing values (None, NaN, empty text) become None. ``patient_age`` becomes an int
    from an int, a whole float (Excel and pandas read integer columns with gaps as
    floats) or digit text; every other field keeps its text (or int). The one rule for
    batch scoring and the MLflow pyfunc.

    Args:
        field: a name from :data:`PREFILING_FIELDS`.
        value: the raw cell.

    Returns:
        ``str``, ``int`` or None.

    Raises:
        InvalidInputError: (field ``metadata.<field>``) an age that is not a whole number,
            or a value that is neither text nor an integer (e.g. a bool or a list).
    """
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if field == "patient_age":
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidInputError(f"metadata.{field}", f"expected an integer 0-120, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(
            f"metadata.{field}", f"expected text or an integer, got {type(value).__name__}"
        )
    return value


@dataclass(frozen=True)
class ModelInput:
    """A text pair for a sequence-pair classifier, in the one style every model reads.

    The request and summary are normalised (:func:`style_blind`): house style ("the
    injured worker", "the applicant", "the claimant" -> "the patient", and the openers),
    numeric dates -> long dates, and the patient's sex -> one sex. The case summary is
    written by the IMR reviewer, who is assigned after filing, so its house style tells
    who reviewed the case: leakage, not only unfairness (issue 22).

    Attributes:
        text: segment A: the metadata prefix followed by the normalised request.
        text_pair: segment B: the normalised case summary ("" when the source has none).
        request_offset: where the (normalised) request starts in ``text``.
        request: the normalised request with its map back to the caller's request (its
            ``source``); None when normalisation changed nothing.
        summary: the same for the summary.
    """

    text: str
    text_pair: str
    request_offset: int
    request: NormalizedText | None = field(default=None, compare=False, repr=False)
    summary: NormalizedText | None = field(default=None, compare=False, repr=False)

    @property
    def caller_request(self) -> str:
        """The request exactly as the caller passed it."""
        return self.request.source if self.request else self.text[self.request_offset :]

    @property
    def caller_summary(self) -> str:
        """The summary exactly as the caller passed it."""
        return self.summary.source if self.summary else self.text_pair

    def to_caller_span(self, field_name: str, start: int, end: int) -> tuple[int, int]:
        """Map a span of the normalised request (``text[request_offset:]``) or summary
        (``text_pair``) to offsets into the caller's string.

        Args:
            field_name: ``"request"`` or ``"summary"``.
            start: span start in the normalised field, 0 <= start <= end.
            end: span end (exclusive).

        Returns:
            ``(start, end)`` in the caller's string; a span touching a rewritten phrase
            grows to the whole original phrase (:meth:`NormalizedText.to_source_span`).

        Raises:
            InvalidInputError: an unknown field, or a span outside the field.
        """
        if field_name not in ("request", "summary"):
            raise InvalidInputError("field", f"expected 'request' or 'summary', got {field_name!r}")
        normalized = self.request if field_name == "request" else self.summary
        if normalized is None:
            return start, end
        return normalized.to_source_span(start, end)


def style_blind(text: str) -> NormalizedText:
    """``text`` with house style, date formats and the patient's sex normalised
    (:func:`~imr_outcome.data.counterfactuals.normalize_text` with ``dates`` and ``sex``),
    keeping the map back to ``text``."""
    return normalize_text(text, dates=True, sex=True)


def metadata_prefix(metadata: Mapping[str, MetadataValue] | None) -> str:
    """Render pre-filing metadata as a short sentence, e.g. ``"48-year-old patient. "``.

    ``patient_sex`` is validated but never rendered: the patient's sex must not move a
    text model's score (issue 10's invariance check); metadata-only kinds read it from the
    metadata dict instead.

    Args:
        metadata: values keyed by names from :data:`PREFILING_FIELDS`; None or missing
            values are left out. ``patient_age`` is in years (0-120).

    Returns:
        The prefix, ending in ``". "``, or ``""`` when nothing is known.

    Raises:
        InvalidInputError: for a key that is not a pre-filing field (for example a
            reviewer field, known only after filing) or an age outside 0-120.
    """
    if not metadata:
        return ""
    unknown = sorted(set(metadata) - set(PREFILING_FIELDS))
    if unknown:
        raise InvalidInputError(
            "metadata",
            f"unknown or post-filing field(s) {unknown}; allowed: {list(PREFILING_FIELDS)}",
        )
    parts: list[str] = []
    age = metadata.get("patient_age")
    if age is not None:
        if not isinstance(age, int) or not 0 <= age <= 120:
            raise InvalidInputError(
                "metadata.patient_age", f"expected an integer 0-120, got {age!r}"
            )
        parts.append(f"{age}-year-old patient")
    if metadata.get("age_range"):
        parts.append(f"age {metadata['age_range']}")
    if metadata.get("imr_type"):
        parts.append(f"{metadata['imr_type']} review")
    diagnosis = [
        str(metadata[key])
        for key in ("diagnosis_category", "diagnosis_subcategory")
        if metadata.get(key)
    ]
    if diagnosis:
        parts.append("diagnosis " + " / ".join(diagnosis))
    return ". ".join(parts) + ". " if parts else ""


def build_model_input(
    request: str, summary: str, metadata: Mapping[str, MetadataValue] | None = None
) -> ModelInput:
    """Build the model input from pre-filing information only.

    Args:
        request: the disputed treatment request, non-empty.
        summary: the clinical case summary (may be empty for table sources).
        metadata: pre-filing metadata; see :func:`metadata_prefix`.

    Returns:
        The :class:`ModelInput` text pair, style-blind (:func:`style_blind`), with the
        maps back to ``request`` and ``summary``.

    Raises:
        LeakageError: when ``request`` or ``summary`` is not a plain ``str`` (for
            example an ``OutcomeText`` from the decision section).
        InvalidInputError: for an empty request or bad metadata.
    """
    for name, value in (("request", request), ("summary", summary)):
        if not isinstance(value, str):
            raise LeakageError(
                f"{name}: expected plain text, got {type(value).__name__}; outcome text "
                "(decision, guidelines, rationale) must never be a model input"
            )
    if not request.strip():
        raise InvalidInputError("request", "is empty; give the requested treatment or item")
    prefix = metadata_prefix(metadata)
    normalized_request, normalized_summary = style_blind(request), style_blind(summary)
    return ModelInput(
        text=prefix + normalized_request.text,
        text_pair=normalized_summary.text,
        request_offset=len(prefix),
        request=normalized_request if normalized_request.text != request else None,
        summary=normalized_summary if normalized_summary.text != summary else None,
    )


def record_model_input(record: ItemRecord) -> ModelInput:
    """Build the model input of a dataset row (its request, summary, pre-filing fields).

    Args:
        record: a dataset row.

    Returns:
        The :class:`ModelInput` for the row.
    """
    metadata = {name: getattr(record, name) for name in PREFILING_FIELDS}
    return build_model_input(record.request, record.summary, metadata)

"""The validated input of one prediction: :class:`PredictInput` and the text-length limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from imr_outcome.data.model_input import MetadataValue, metadata_prefix
from imr_outcome.data.text_checks import check_text
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.defaults import MAX_TEXT_CHARS
from imr_outcome.model.warnings import Source

__all__ = ["MAX_TEXT_CHARS", "PredictInput", "check_length"]


def _invalid(exc: ValidationError) -> InvalidInputError:
    """The first problem of a pydantic error as an :class:`InvalidInputError`."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidInputError):
        return InvalidInputError(cause.field, cause.reason)
    field = ".".join(str(part) for part in error["loc"]) or "input"
    if error["type"] in {"string_type", "dict_type"}:
        expected = "text" if error["type"] == "string_type" else "a mapping of field to value"
        reason = f"expected {expected}, got {type(error['input']).__name__}"
    else:
        reason = str(error["msg"])
    return InvalidInputError(field, reason)


class PredictInput(BaseModel):
    """One item to predict: pre-filing text and metadata only.

    Build it with :meth:`of` to get :class:`InvalidInputError` (naming the field) instead
    of pydantic's ``ValidationError``.

    Attributes:
        request: the disputed treatment request; non-empty, at most ``max_chars``.
        summary: the clinical case summary; ``""`` when the source has none.
        metadata: pre-filing metadata keyed by
            :data:`~imr_outcome.data.schema.PREFILING_FIELDS` (``patient_age`` an integer
            0-120 in years; the others text); None values mean unknown.
        source: the data source when the caller knows it (``"dwc"`` for a letter,
            ``"dmhc"`` for a DMHC table row); inferred from the metadata otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    request: str
    summary: str = ""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    source: Source | None = None

    @field_validator("request")
    @classmethod
    def _request_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise InvalidInputError("request", "is empty; give the requested treatment or item")
        return check_text("request", value)

    # The API's rule (imr_outcome.data.text_checks): "" means no summary; a summary given
    # must hold a letter.
    @field_validator("summary")
    @classmethod
    def _summary_text(cls, value: str) -> str:
        return value if value == "" else check_text("summary", value)

    @field_validator("request", "summary")
    @classmethod
    def _not_too_long(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, Mapping) else {}
        limit = int(context.get("max_chars", MAX_TEXT_CHARS))
        field = str(info.field_name)
        check_length(field, value, limit)
        return value

    @field_validator("metadata")
    @classmethod
    def _prefiling_only(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        metadata_prefix(value)  # raises InvalidInputError naming the field
        return value

    @classmethod
    def of(
        cls,
        request: Any,
        summary: Any = "",
        metadata: Mapping[str, Any] | None = None,
        *,
        source: Source | None = None,
        max_chars: int = MAX_TEXT_CHARS,
    ) -> PredictInput:
        """Validate one item.

        Args:
            request: the request text.
            summary: the case summary text.
            metadata: pre-filing metadata, or None.
            source: the data source, if known.
            max_chars: the longest accepted request or summary, in characters.

        Returns:
            The validated input.

        Raises:
            InvalidInputError: an empty request, text that is not ``str`` or longer than
                ``max_chars``, or a metadata key outside ``PREFILING_FIELDS`` / an age
                outside 0-120; the field is named (``request``, ``metadata.patient_age``).
        """
        try:
            return cls.model_validate(
                {
                    "request": request,
                    "summary": summary,
                    "metadata": dict(metadata or {}),
                    "source": source,
                },
                context={"max_chars": max_chars},
            )
        except ValidationError as exc:
            raise _invalid(exc) from None


def check_length(field: str, text: str, max_chars: int) -> None:
    """Raise when ``text`` is longer than ``max_chars`` characters.

    Raises:
        InvalidInputError: naming ``field``, the length and the limit.
    """
    if len(text) > max_chars:
        raise InvalidInputError(
            field,
            f"{len(text)} characters, more than the limit of {max_chars}; shorten the text "
            "or raise the limit (max_chars)",
        )

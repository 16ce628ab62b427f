"""The MLflow pyfunc wrapper: request + summary columns in, calibrated probabilities out.

Works with ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` (probabilities only;
evidence spans come from ``imr_outcome.serve``). The model directory travels as a pyfunc
artifact; nothing is pickled but this small class, by reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from imr_outcome.data.model_input import build_model_input, coerce_metadata_value
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.model_uri import ARTIFACT_KEY

_INTEGER_FIELDS = {"patient_age"}

#: Input columns: request and summary required; pre-filing metadata optional.
_INPUT_COLUMNS: list[ColSpec | TensorSpec] = [
    ColSpec("string", "request"),
    ColSpec("string", "summary"),
    *(
        ColSpec("double" if name in _INTEGER_FIELDS else "string", name, required=False)
        for name in PREFILING_FIELDS
    ),
]
SIGNATURE = ModelSignature(
    inputs=Schema(_INPUT_COLUMNS),
    outputs=Schema(
        [
            ColSpec("double", f"p_{LABELS[0].lower()}"),
            ColSpec("double", f"p_{LABELS[1].lower()}"),
            ColSpec("string", "label"),
        ]
    ),
)


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The row's pre-filing metadata (:func:`coerce_metadata_value`; missing ones left out).

    Raises:
        InvalidInputError: a value of the wrong type (field ``metadata.<name>``).
    """
    values = {name: coerce_metadata_value(name, row.get(name)) for name in PREFILING_FIELDS}
    return {name: value for name, value in values.items() if value is not None}


def _text(row: dict[str, Any], column: str, n: int) -> str:
    """Row ``n``'s ``column`` as text; a missing (null/NaN) summary is ``""``.

    Raises:
        InvalidInputError: a missing or empty request (never scored as the text "None").
    """
    value = row.get(column)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        value = ""
    text = str(value)
    if column == "request" and not text.strip():
        raise InvalidInputError(
            f"request[{n}]", "is missing or empty; give the requested treatment or item"
        )
    return text


class ImrOutcomePyfunc(PythonModel):
    """Calibrated P(Upheld), P(Overturned) and the label at the saved threshold."""

    model: OutcomeModel

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model directory from the pyfunc artifacts."""
        self.model = OutcomeModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        """Score a DataFrame with ``request`` and ``summary`` columns.

        Args:
            context: the pyfunc context (unused after loading).
            model_input: one row per item; optional pre-filing metadata columns.
            params: unused.

        Returns:
            A DataFrame with ``p_upheld``, ``p_overturned`` (rows sum to 1) and ``label``.

        Raises:
            InvalidInputError: a required column is missing, or a request is missing
                (null) or empty (named ``request[<row>]``).
        """
        missing = {"request", "summary"} - set(model_input.columns)
        if missing:
            raise InvalidInputError("columns", f"missing {sorted(missing)}")
        rows: list[dict[str, Any]] = [
            {str(k): v for k, v in row.items()} for row in model_input.to_dict(orient="records")
        ]
        metadata = [_metadata(row) for row in rows]
        inputs = [
            build_model_input(_text(row, "request", n), _text(row, "summary", n) or "", meta)
            for n, (row, meta) in enumerate(zip(rows, metadata, strict=True))
        ]
        scores = self.model.score(inputs, metadata)
        return pd.DataFrame(
            {
                f"p_{LABELS[0].lower()}": scores.proba[:, 0],
                f"p_{LABELS[1].lower()}": scores.proba[:, 1],
                "label": scores.labels,
            }
        )

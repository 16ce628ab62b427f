"""The MLflow pyfunc: raw rows in, the one output row out (never raises on a bad row).

Works with ``mlflow.pyfunc.load_model``, ``mlflow.pyfunc.spark_udf`` and ``mlflow models
serve``. Each input row gives the fields of :data:`~imr_outcome.model.scoring.OUTPUT_FIELDS`
(:func:`~imr_outcome.model.scoring.score_records`): a row that cannot be scored comes back
with ``error`` set, never as an exception, so one bad row does not fail a Spark task or
an ``/invocations`` call. Evidence spans come from ``imr_outcome.serve``.

List fields travel as the types MLflow and Spark carry: ``warnings`` and ``similar_ids``
are lists of strings; ``warning_details`` and ``outcome_rates`` (lists of objects) are JSON
text, as in batch CSV and Parquet output. The model directory travels as a pyfunc artifact; nothing
is pickled but this small class, by reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.model.defaults import MAX_TEXT_CHARS
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.model_uri import ARTIFACT_KEY
from imr_outcome.model.scoring import OUTPUT_FIELDS, score_records

#: The "models from code" file MLflow runs to load the pyfunc.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")

#: Input columns, all optional and text, so that a bad value reaches the row checks
#: (and comes back as that row's ``error``) instead of failing MLflow's schema check for
#: the whole call. ``request`` is required by the row checks, not the schema.
_INPUT_COLUMNS: list[ColSpec | TensorSpec] = [
    ColSpec("string", name, required=False) for name in ("request", "summary", *PREFILING_FIELDS)
]
_OUTPUT_TYPES: dict[str, Any] = {
    "p_overturned": "double",
    "p_upheld": "double",
    "base_rate": "double",
    "relative_risk": "double",
    "warnings": Array(DataType.string),
    "similar_ids": Array(DataType.string),
}
#: Fields of lists of objects, carried as JSON text.
JSON_TEXT_FIELDS = ("outcome_rates", "warning_details")
SIGNATURE = ModelSignature(
    inputs=Schema(_INPUT_COLUMNS),
    outputs=Schema([ColSpec(_OUTPUT_TYPES.get(name, "string"), name) for name in OUTPUT_FIELDS]),
)


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Output rows as the pyfunc's DataFrame: :data:`OUTPUT_FIELDS` columns, in order,
    with the :data:`JSON_TEXT_FIELDS` as JSON text."""
    frame = pd.DataFrame(rows, columns=list(OUTPUT_FIELDS))
    for name in JSON_TEXT_FIELDS:
        frame[name] = [None if value is None else json.dumps(value) for value in frame[name]]
    for name in OUTPUT_FIELDS:
        if _OUTPUT_TYPES.get(name) != "double":  # null text stays None, not NaN
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _logged_model_id(folder: Path) -> str | None:
    """The ``model_id`` in ``folder/MLmodel`` (MLflow 3 logged models), else None."""
    from mlflow.models import Model

    try:
        return Model.load(str(folder / "MLmodel")).model_id
    except Exception:  # no MLmodel there (a bare model directory), or an older MLflow
        return None


class ImrOutcomePyfunc(PythonModel):
    """The one output row per input row (see the module docstring)."""

    model: OutcomeModel
    max_chars: int = MAX_TEXT_CHARS

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model directory from the pyfunc artifacts.

        The rows name the model as the ``model_config`` says (``model_name``,
        ``model_version``: Spark scoring saves the driver's), else as a
        ``models:/<model_id>`` URI would (name
        ``models:/<model_id>``, version ``model:<model_id>``) when the logged model's
        ``MLmodel`` file gives its id: a pyfunc cannot know the registry version it was
        loaded through.
        """
        directory = Path(context.artifacts[ARTIFACT_KEY])
        self.model = OutcomeModel.load(directory)
        config = context.model_config or {}
        self.max_chars = int(config.get("max_chars", MAX_TEXT_CHARS))
        if "model_name" in config:  # saved by a caller that resolved a registry URI
            self.model.name = str(config["model_name"])
            self.model.version = str(config["model_version"])
        elif model_id := _logged_model_id(directory.parent.parent):
            self.model.name, self.model.version = f"models:/{model_id}", f"model:{model_id}"

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        """Score a DataFrame of raw rows.

        Args:
            context: the pyfunc context (unused after loading).
            model_input: one row per item: ``request``, ``summary`` and optional
                pre-filing metadata columns; missing columns read as null.
            params: unused.

        Returns:
            One row per input row, in order, with the :data:`OUTPUT_FIELDS` columns;
            a bad row has ``error`` set and null scores.
        """
        records = [{str(k): v for k, v in row.items()} for row in model_input.to_dict("records")]
        return to_frame(score_records(self.model, records, max_chars=self.max_chars))

"""The model as a Spark UDF: its output struct, the ``spark_udf`` over the project's
pyfunc, and the struct of a row refused before scoring.

The model is resolved once on the driver (a bad URI fails before any task starts) and
its directory, as loaded (a transformer's ONNX exports and their timings with it, so the
executors serve the backend the driver serves), is wrapped in a pyfunc model folder that
``mlflow.pyfunc.spark_udf`` (``env_manager="local"``) puts on every node; the executors
never contact the tracking store. See :mod:`imr_outcome.serve.spark` for the DataFrame and
table side.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imr_outcome.model.model_uri import ARTIFACT_KEY
from imr_outcome.model.pyfunc import PYFUNC_CODE, SIGNATURE
from imr_outcome.model.scoring import OUTPUT_FIELDS
from imr_outcome.serve.predictor import Predictor

logger = logging.getLogger(__name__)

_SPARK_TYPES: dict[str, T.DataType] = {
    "p_overturned": T.DoubleType(),
    "p_upheld": T.DoubleType(),
    "base_rate": T.DoubleType(),
    "relative_risk": T.DoubleType(),
    "warnings": T.ArrayType(T.StringType()),
    "similar_ids": T.ArrayType(T.StringType()),
}
#: The prediction struct: the one output row (see the module docstring); all nullable.
PREDICTION_TYPE = T.StructType(
    [T.StructField(name, _SPARK_TYPES.get(name, T.StringType())) for name in OUTPUT_FIELDS]
)
PREDICTION_FIELDS: tuple[str, ...] = tuple(PREDICTION_TYPE.names)


def pyfunc_udf(spark: SparkSession, model_uri: str, max_chars: int) -> tuple[Any, Predictor]:
    """Resolve ``model_uri`` on the driver and wrap it as a ``spark_udf`` over the pyfunc.

    Returns:
        The UDF (struct of input columns in, :data:`PREDICTION_TYPE` out) and the driver's
        predictor (for its name and version).

    Raises:
        ModelNotFoundError, IncompatibleModelError: see :meth:`Predictor.load`.
    """
    predictor = Predictor.load(model_uri, max_chars=max_chars)
    folder = Path(tempfile.mkdtemp(prefix="imr-spark-model-"))
    atexit.register(shutil.rmtree, folder, True)  # tasks may read it until the driver exits
    pyfunc = save_pyfunc(predictor, folder, max_chars)
    logger.info(
        "scoring with %s model %s version %s on the executors",
        predictor.model.info.kind,
        predictor.model_name,
        predictor.model_version,
    )
    with warnings.catch_warnings():
        # "local" is the point: executors run this very environment (see module docstring)
        warnings.filterwarnings("ignore", message='.*env_manager="local"')
        udf = mlflow.pyfunc.spark_udf(
            spark, str(pyfunc), result_type=PREDICTION_TYPE, env_manager="local"
        )
    return udf, predictor


def save_pyfunc(predictor: Predictor, folder: Path, max_chars: int) -> Path:
    """Save the predictor's model as a pyfunc model folder ``folder/pyfunc``; returns it.

    The model directory it was loaded from goes in as it is (a model built in memory is
    saved to ``folder/imr_model`` first), with its resolved name and version in the
    pyfunc's ``model_config``, so Spark rows name it as the local paths do.
    """
    source = predictor.model.directory
    if source is None:
        source = predictor.model.save(folder / "imr_model")
    target = folder / "pyfunc"
    mlflow.pyfunc.save_model(
        target,
        python_model=str(PYFUNC_CODE),
        artifacts={ARTIFACT_KEY: str(source)},
        signature=SIGNATURE,
        model_config={
            "model_name": predictor.model_name,
            "model_version": predictor.model_version,
            "max_chars": max_chars,
        },
    )
    return target


def error_struct(problem: Column, predictor: Predictor) -> Column:
    """A :data:`PREDICTION_TYPE` value for a row refused before scoring."""
    fields = {
        "error": problem,
        "model_name": F.lit(predictor.model_name),
        "model_version": F.lit(predictor.model_version),
    }
    return F.struct(
        *[
            fields.get(f.name, F.lit(None).cast(f.dataType)).alias(f.name)
            for f in PREDICTION_TYPE.fields
        ]
    )

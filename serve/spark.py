"""Score Spark DataFrames and tables: every row once, with a result or an error.

For requests that already sit in a data lake: :func:`score_dataframe` adds a prediction
column to a DataFrame in the caller's own Spark job, :func:`score_table` reads Parquet,
CSV or a table of the Spark session and writes partitioned Parquet (``imr-outcome score
INPUT --out OUTPUT --engine spark``). Needs the ``spark`` extra (PySpark 4) and Java 17
or 21, and a classic (not Spark Connect) session. The executors need this package
installed, as they need any library a UDF imports.

The prediction column is a struct (:data:`PREDICTION_TYPE`):

- ``p_overturned``, ``p_upheld``: calibrated probabilities in [0, 1] summing to 1;
- ``label``: ``Upheld`` or ``Overturned`` at the model's threshold;
- ``band``: the decision band; always null until the model has bands;
- ``warnings``: why to trust the prediction less (see :mod:`imr_outcome.serve.predictor`);
- ``error``: null, or why the row has no prediction (then the five above are null).

The rules are those of local scoring (:func:`imr_outcome.serve.batch.score_file`), and
the row checks and scoring are its very functions, so the two agree row for row: a bad
row (null or empty request, oversize text, a malformed or duplicate id, text that is not
valid UTF-8, a row the CSV reader cannot parse) becomes an error row and never fails the
job; an empty or null summary is scored (with a warning); a later row repeating an
earlier row's id is kept, with a duplicate-id error, like locally. Each row gets ``row``,
its 0-based position in Spark's scan of the input (for one file, the file's row order;
equal to the local ``row``), so duplicate ids stay apart and reruns give the same rows.
The input must scan the same way twice (files and tables do; persist or checkpoint a
DataFrame built with a random or otherwise non-deterministic step first).

Why neither of the two library UDFs:

- ``mlflow.pyfunc.spark_udf`` returns the pyfunc's output (``p_upheld``,
  ``p_overturned``, ``label``): no warnings and no per-row error, and one bad row raises
  inside the pyfunc, which fails the Spark task and so the job.
- ``pyspark.ml.functions.predict_batch_udf`` checks results as dense tensors: a struct
  result must be a dict of arrays (an ``array<string>`` field then needs a 2-D array, so
  no ragged warning lists) or a list of dicts whose first row holds numpy scalars in every
  scalar field (``np.isscalar(None)`` is false, so a null ``error`` is rejected).

So the scoring is a plain iterator ``pandas_udf`` built the way both are: the model is
resolved once on the driver (a bad URI fails before any task starts), saved to a local
folder and put on every node with ``SparkContext.addFile`` (as ``spark_udf`` does with
``env_manager="local"``), loaded once per Python worker and cached, and fed Arrow
batches cut into chunks of ``batch_size`` rows for
:meth:`~imr_outcome.serve.predictor.Predictor.predict_batch`.

Spark stages: one job counts rows per input partition (for ``row``); the ids are grouped
to find repeats (only repeated ids are broadcast back); texts with invalid UTF-8 are
nulled in SQL (``is_valid_utf8``) before Arrow could fail on them; then the UDF.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pyspark import SparkFiles
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.functions import pandas_udf

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.prediction import Prediction
from imr_outcome.serve.batch import (
    PreparedRow,
    ScoreSummary,
    describe_error,
    one_line,
    predict_rows,
    prepare_row,
)
from imr_outcome.serve.batch_readers import Columns, RawRow, checked_metadata_columns
from imr_outcome.serve.predictor import MAX_TEXT_CHARS, Predictor

logger = logging.getLogger(__name__)

#: The model scored when none is named.
DEFAULT_MODEL_URI = "models:/imr-outcome@champion"
#: The prediction struct (see the module docstring); every field nullable.
PREDICTION_TYPE = T.StructType(
    [
        T.StructField("p_overturned", T.DoubleType()),
        T.StructField("p_upheld", T.DoubleType()),
        T.StructField("label", T.StringType()),
        T.StructField("band", T.StringType()),
        T.StructField("warnings", T.ArrayType(T.StringType())),
        T.StructField("error", T.StringType()),
    ]
)
PREDICTION_FIELDS: tuple[str, ...] = tuple(PREDICTION_TYPE.names)
#: Columns of a :func:`score_table` output, before any kept input columns.
OUTPUT_COLUMNS: tuple[str, ...] = ("id", "row", *PREDICTION_FIELDS)
#: The error of a row whose text the SQL check found not to be valid UTF-8 (the local
#: reader's message for the same row).
UNREADABLE_UTF8 = "unreadable row: not valid UTF-8 text"
#: The error of a row the CSV reader could not parse (wrong field count, bad quoting).
UNREADABLE_CSV = "unreadable row: not a well-formed CSV record"

InputFormat = Literal["auto", "parquet", "csv", "table"]

#: Helper columns, dropped before a result is returned.
_PREFIX = "__imr_"
_PROBLEM = f"{_PREFIX}problem"
_DUPLICATE = f"{_PREFIX}duplicate"
_KEY = f"{_PREFIX}key"
_FIRST = f"{_PREFIX}first"
_CORRUPT = f"{_PREFIX}corrupt_record"
#: ``monotonically_increasing_id``: partition index above bit 33, position below.
_PARTITION_SHIFT = 33
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _col(name: str) -> Column:
    """The column called ``name`` exactly (dots and spaces are part of the name)."""
    return F.col("`" + name.replace("`", "``") + "`")


def spark_session(master: str | None = None, app_name: str = "imr-outcome") -> SparkSession:
    """The active Spark session, or a new one whose Python workers run this interpreter
    (unless ``PYSPARK_PYTHON`` names another).

    Args:
        master: a master URL (``local[2]``, ``spark://host:7077``, ``yarn``); None keeps
            the one ``spark-submit`` gives, else ``local[*]``.
        app_name: the application name shown by Spark.

    Returns:
        The session (``getOrCreate``: an active session is returned as it is).
    """
    # PySpark starts its Python workers with $PYSPARK_PYTHON, else whatever `python3` is
    # on PATH (not necessarily the environment this package is installed in).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    return builder.getOrCreate()


# ------------------------------------------------------------------------- the model


def _ship_model(spark: SparkSession, model_uri: str, max_chars: int) -> str:
    """Load ``model_uri`` on the driver, save it and add it to every node's SparkFiles.

    Returns:
        The name to pass to ``SparkFiles.get`` on an executor.

    Raises:
        ModelNotFoundError, IncompatibleModelError: see :meth:`Predictor.load`.
    """
    predictor = Predictor.load(model_uri, max_chars=max_chars)
    folder = Path(tempfile.mkdtemp(prefix="imr-spark-model-"))
    atexit.register(shutil.rmtree, folder, True)  # tasks may read it until the driver exits
    name = f"imr-model-{uuid.uuid4().hex}"
    predictor.model.save(folder / name)
    spark.sparkContext.addFile(str(folder / name), recursive=True)
    logger.info(
        "shipping %s model %s version %s to the executors",
        predictor.model.info.kind,
        predictor.model_name,
        predictor.model_version,
    )
    return name


@functools.lru_cache(maxsize=2)
def _worker_predictor(name: str, max_chars: int) -> Predictor:
    """The shipped model, loaded once per Python worker (workers are reused across tasks)."""
    return Predictor.load(SparkFiles.get(name), max_chars=max_chars)


# --------------------------------------------------------------------------- the UDF


def _result(error: str | None, outcome: Prediction | str | None) -> dict[str, Any]:
    if isinstance(outcome, Prediction):
        return {
            "p_overturned": outcome.p_overturned,
            "p_upheld": outcome.p_upheld,
            "label": outcome.label,
            "band": None,
            "warnings": list(outcome.warnings),
            "error": None,
        }
    return dict.fromkeys(PREDICTION_FIELDS) | {
        "error": one_line(error or outcome or "unknown error")
    }


def _prepare_record(record: Mapping[Any, Any], columns: Columns, max_chars: int) -> PreparedRow:
    """One UDF input row through :mod:`~imr_outcome.serve.batch`'s row checks."""
    values = {str(name): value for name, value in record.items()}
    problem, duplicate = values.pop(_PROBLEM), values.pop(_DUPLICATE)
    raw = RawRow(0, None if problem else values, problem, values[columns.id])
    seen = {str(values[columns.id])} if duplicate else set()
    return prepare_row(raw, columns, seen, max_chars)


def score_frame(
    predictor: Predictor, frame: pd.DataFrame, columns: Columns, batch_size: int
) -> pd.DataFrame:
    """Score one Arrow batch of UDF input with the local rules (runs on the executors).

    Args:
        predictor: the loaded model.
        frame: n rows: the input columns named in ``columns`` (the id as text), the
            problem found in SQL (or null) and whether an earlier row has the same id.
        columns: the input column names.
        batch_size: rows per :meth:`Predictor.predict_batch` call.

    Returns:
        n rows with the :data:`PREDICTION_FIELDS`, in input order.
    """
    # missing values as None (pandas gives NaN for a null string or number)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    results: list[dict[str, Any]] = []
    for start in range(0, len(records), batch_size):
        prepared: list[PreparedRow | str] = []
        for record in records[start : start + batch_size]:
            try:
                prepared.append(_prepare_record(record, columns, predictor.max_chars))
            except Exception as exc:  # a row the rules did not foresee must not fail the job
                logger.warning("a row could not be prepared: %s", type(exc).__name__)
                prepared.append(describe_error(exc))
        items = [p.item for p in prepared if isinstance(p, PreparedRow) and p.item is not None]
        outcomes = iter(predict_rows(predictor, items, explain=False))
        for p in prepared:
            if isinstance(p, str):
                results.append(_result(p, None))
            else:
                results.append(_result(p.error, next(outcomes) if p.item is not None else None))
    return pd.DataFrame(results, columns=list(PREDICTION_FIELDS))


def _scoring_udf(model_name: str, max_chars: int, columns: Columns, batch_size: int) -> Any:
    """The iterator pandas UDF: a struct of inputs in, a :data:`PREDICTION_TYPE` out."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        predictor = _worker_predictor(model_name, max_chars)
        for batch in batches:
            yield score_frame(predictor, batch, columns, batch_size)

    return pandas_udf(score, PREDICTION_TYPE)  # type: ignore[call-overload]


# --------------------------------------------------------------------- DataFrame side


def _with_row_index(df: DataFrame, column: str) -> DataFrame:
    """``df`` with ``column``: each row's 0-based position in the scan (one counting job)."""
    indexed = df.withColumn(column, F.monotonically_increasing_id())
    partition = F.shiftright(_col(column), _PARTITION_SHIFT)
    counts = {
        int(r["p"]): int(r["count"])
        for r in indexed.groupBy(partition.alias("p")).count().collect()
    }
    if not counts:
        return indexed
    offsets, total = [], 0
    for index in range(max(counts) + 1):
        offsets.append(total)
        total += counts.get(index, 0)
    position = _col(column).bitwiseAND((1 << _PARTITION_SHIFT) - 1)
    start = F.element_at(F.array(*[F.lit(o) for o in offsets]), partition.cast("int") + 1)
    return indexed.withColumn(column, position + start)


def _check_schema(df: DataFrame, columns: Columns, reserved: Mapping[str, str]) -> None:
    """Fail before any job when a column is missing or of a type no row could pass.

    Raises:
        InvalidInputError: naming the option and what was found.
    """
    types = {field.name: field.dataType for field in df.schema.fields}
    options = {"id_column": columns.id, "request_column": columns.request}
    options["summary_column"] = columns.summary
    options.update({f"metadata_columns[{k}]": v for k, v in columns.metadata.items()})
    for option, name in options.items():
        if name not in types:
            raise InvalidInputError(
                option, f"column {name!r} is not in the input (columns: {df.columns})"
            )
    id_type = types[columns.id]
    if not isinstance(id_type, (T.StringType, *_INTEGRAL)):
        raise InvalidInputError(
            "id_column",
            f"column {columns.id!r} has type {id_type.simpleString()}; expected string or an "
            "integer type; cast it or name another column",
        )
    for option, name in (("request_column", columns.request), ("summary_column", columns.summary)):
        if not isinstance(types[name], T.StringType):
            raise InvalidInputError(
                option,
                f"column {name!r} has type {types[name].simpleString()}; expected string",
            )
    for option, name in reserved.items():
        if name in types:
            raise InvalidInputError(
                option, f"{name!r} is already an input column; choose another name"
            )


def score_dataframe(
    spark: SparkSession,
    df: DataFrame,
    model_uri: str = DEFAULT_MODEL_URI,
    *,
    id_column: str = "id",
    request_column: str = "request",
    summary_column: str = "summary",
    metadata_columns: Mapping[str, str] | None = None,
    max_chars: int = MAX_TEXT_CHARS,
    batch_size: int = 1000,
    prediction_column: str = "prediction",
    row_column: str = "row",
    unreadable_column: str | None = None,
) -> DataFrame:
    """Add a prediction struct and a row index to ``df`` (lazily, like any transformation).

    Example, in a Spark job::

        from imr_outcome.serve.spark import score_dataframe
        pending = spark.table("claims.pending_imr")
        scored = score_dataframe(spark, pending, "models:/imr-outcome@champion",
                                 id_column="case_id")
        scored.select("case_id", "row", "prediction.*").write.parquet("s3a://bucket/scores")

    Args:
        spark: the session ``df`` belongs to (classic, not Spark Connect).
        df: one row per item.
        model_uri: as for :meth:`Predictor.load`, resolved on the driver
            (``MLFLOW_TRACKING_URI``); the executors never contact the tracking store.
        id_column: each row's id (string or integer type); repeats are kept as rows with
            a duplicate-id error after the first.
        request_column: the disputed request (string).
        summary_column: the case summary (string; null or empty means none).
        metadata_columns: pre-filing field -> column, e.g. ``{"patient_age": "age"}``.
        max_chars: the longest accepted request or summary, in characters.
        batch_size: rows per model call on an executor (>= 1).
        prediction_column: name of the added :data:`PREDICTION_TYPE` column.
        row_column: name of the added ``bigint`` row index (see the module docstring).
        unreadable_column: a column that is non-null for rows the reader could not parse
            (Spark's ``columnNameOfCorruptRecord``); those rows become error rows.

    Returns:
        ``df``'s columns, ``row_column`` and ``prediction_column``.

    Raises:
        InvalidInputError: a missing column or one of an unusable type, an unknown
            metadata field, a taken output column name, or ``batch_size`` < 1.
        ModelNotFoundError, IncompatibleModelError: see :meth:`Predictor.load`.
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", f"expected at least 1, got {batch_size}")
    metadata = checked_metadata_columns(metadata_columns)
    columns = Columns(id_column, request_column, summary_column, metadata)
    _check_schema(df, columns, {"prediction_column": prediction_column, "row_column": row_column})
    if prediction_column == row_column:
        raise InvalidInputError("row_column", "must differ from prediction_column")
    model_name = _ship_model(spark, model_uri, max_chars)

    types = {field.name: field.dataType for field in df.schema.fields}
    indexed = _with_row_index(df, row_column).withColumn(_KEY, _col(id_column).cast("string"))
    repeats = (
        indexed.where(F.col(_KEY).isNotNull())
        .groupBy(_KEY)
        .agg(F.min(_col(row_column)).alias(_FIRST), F.count(F.lit(1)).alias("n"))
        .where(F.col("n") > 1)
        .drop("n")
    )
    joined = indexed.join(F.broadcast(repeats), on=_KEY, how="left")

    def invalid(name: str) -> Column:
        if not isinstance(types[name], T.StringType):
            return F.lit(False)
        return F.coalesce(~F.is_valid_utf8(_col(name)), F.lit(False))

    unreadable = F.lit(False)
    for name in columns.needed:
        unreadable = unreadable | invalid(name)
    problem = F.when(unreadable, F.lit(UNREADABLE_UTF8))
    if unreadable_column is not None:
        problem = F.when(_col(unreadable_column).isNotNull(), F.lit(UNREADABLE_CSV)).otherwise(
            problem
        )
    fields = []
    for name in columns.needed:
        if name == id_column:
            fields.append(F.when(~invalid(name), F.col(_KEY)).alias(name))
        else:
            fields.append(F.when(~unreadable, _col(name)).alias(name))
    duplicate = F.coalesce(_col(row_column) > F.col(_FIRST), F.lit(False))
    inputs = F.struct(*fields, problem.alias(_PROBLEM), duplicate.alias(_DUPLICATE))
    udf = _scoring_udf(model_name, max_chars, columns, batch_size)
    return joined.withColumn(prediction_column, udf(inputs)).drop(_KEY, _FIRST)


# -------------------------------------------------------------------------- table side


def _input_format(spark: SparkSession, source: str) -> Literal["parquet", "csv", "table"]:
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".parquet" or "://" in source or Path(source).is_dir():
        return "parquet"
    if spark.catalog.tableExists(source):
        return "table"
    raise InvalidInputError(
        "input",
        f"{source}: not a .csv or .parquet path, a folder of Parquet files, or a table of "
        "the Spark session; check the name or give the format (--input-format)",
    )


def read_input(
    spark: SparkSession, source: str, input_format: InputFormat = "auto"
) -> tuple[DataFrame, str | None]:
    """Read Parquet, CSV (UTF-8, header row, RFC 4180 quoting) or a table of the session.

    Args:
        spark: the session.
        source: a path or URI, or a table name (``db.table``; Delta or Hive where the
            session has them).
        input_format: ``auto`` picks by suffix (``.csv``, ``.parquet``), a folder or URI
            as Parquet, else a table of the session's catalog.

    Returns:
        The DataFrame (CSV: every column a string, fields may span lines) and the name of
        its unreadable-row column (CSV only, else None).

    Raises:
        InvalidInputError: the input cannot be found or read; names ``input``.
    """
    fmt = _input_format(spark, source) if input_format == "auto" else input_format
    try:
        if fmt == "table":
            return spark.table(source), None
        if fmt == "parquet":
            return spark.read.parquet(source), None
        reader = spark.read.options(header=True, multiLine=True, escape='"', mode="PERMISSIVE")
        header = reader.csv(source).columns
        schema = T.StructType(
            [T.StructField(name, T.StringType()) for name in header]
            + [T.StructField(_CORRUPT, T.StringType())]
        )
        frame = reader.schema(schema).option("columnNameOfCorruptRecord", _CORRUPT).csv(source)
        return frame, _CORRUPT
    except AnalysisException as exc:
        raise InvalidInputError(
            "input", f"{source}: cannot be read ({one_line(str(exc))})"
        ) from exc


def score_table(
    spark: SparkSession,
    source: str,
    output: str,
    model_uri: str = DEFAULT_MODEL_URI,
    *,
    input_format: InputFormat = "auto",
    partition_by: Sequence[str] = (),
    keep_columns: Sequence[str] = (),
    overwrite: bool = False,
    id_column: str = "id",
    request_column: str = "request",
    summary_column: str = "summary",
    metadata_columns: Mapping[str, str] | None = None,
    max_chars: int = MAX_TEXT_CHARS,
    batch_size: int = 1000,
) -> ScoreSummary:
    """Score every row of ``source`` into a Parquet dataset at ``output``.

    The output has :data:`OUTPUT_COLUMNS` (``id`` as text, ``row``, the prediction
    fields) and the ``keep_columns`` and ``partition_by`` input columns. Rerunning with
    ``overwrite`` replaces the whole output, so it never holds a row twice.

    Args:
        spark: the session.
        source: see :func:`read_input`.
        output: a folder path or URI (``s3a://``, ``hdfs://``, ...).
        model_uri: see :func:`score_dataframe`.
        input_format: see :func:`read_input`.
        partition_by: output or input columns to partition by (``label``, ``region``).
        keep_columns: input columns to copy to the output (never the texts, unless named).
        overwrite: replace an existing output instead of refusing.
        id_column, request_column, summary_column, metadata_columns, max_chars,
            batch_size: see :func:`score_dataframe`.

    Returns:
        Row counts (``skipped_existing`` is always 0: Spark retries failed tasks itself).

    Raises:
        InvalidInputError: unreadable input, output equal to the input, an existing output
            without ``overwrite``, an unknown or clashing partition/kept column, or as
            :func:`score_dataframe`.
        ModelNotFoundError, IncompatibleModelError: see :meth:`Predictor.load`.
    """
    if Path(output).resolve() == Path(source).resolve():
        raise InvalidInputError("output", f"{output} is the input; choose another path")
    df, unreadable = read_input(spark, source, input_format)
    inputs = [c for c in df.columns if c != unreadable]
    extra = list(dict.fromkeys([*keep_columns, *partition_by]))
    for option, names in (("keep_columns", keep_columns), ("partition_by", partition_by)):
        for name in names:
            if name not in inputs and name not in OUTPUT_COLUMNS:
                raise InvalidInputError(
                    option,
                    f"column {name!r} is neither an input column ({inputs}) nor an output "
                    f"column ({list(OUTPUT_COLUMNS)})",
                )
            if name in keep_columns and name in OUTPUT_COLUMNS:
                raise InvalidInputError(
                    option, f"{name!r} is an output column; rename the input column first"
                )
    scored = score_dataframe(
        spark,
        df,
        model_uri,
        id_column=id_column,
        request_column=request_column,
        summary_column=summary_column,
        metadata_columns=metadata_columns,
        max_chars=max_chars,
        batch_size=batch_size,
        prediction_column=f"{_PREFIX}prediction",
        row_column=f"{_PREFIX}row",
        unreadable_column=unreadable,
    )
    if df.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:
        # a CSV file is read whole (fields may span lines), as one partition: spread the
        # scoring over the cores (after the row index is taken from the scan)
        scored = scored.repartition(spark.sparkContext.defaultParallelism)
    flat = scored.select(
        _col(id_column).cast("string").alias("id"),
        F.col(f"{_PREFIX}row").alias("row"),
        *[F.col(f"{_PREFIX}prediction.{name}").alias(name) for name in PREDICTION_FIELDS],
        *[_col(name) for name in extra if name not in OUTPUT_COLUMNS],
    )
    writer = flat.write.mode("overwrite" if overwrite else "errorifexists")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        writer.parquet(output)
    except AnalysisException as exc:
        if "exists" in str(exc).lower():
            raise InvalidInputError(
                "output", f"{output} exists; pass --overwrite to replace it"
            ) from exc
        raise
    counts = {
        bool(r["failed"]): int(r["count"])
        for r in spark.read.parquet(output)
        .groupBy(F.col("error").isNotNull().alias("failed"))
        .count()
        .collect()
    }
    total = sum(counts.values())
    return ScoreSummary(total, counts.get(False, 0), counts.get(True, 0), 0)


def score_with_spark(
    source: str | Path,
    output: str | Path,
    model_uri: str,
    *,
    master: str | None = None,
    partition_by: Sequence[str] = (),
    resume: bool = False,
    explain: bool = False,
    **options: Any,
) -> ScoreSummary:
    """``imr-outcome score --engine spark``: :func:`score_table` in a session of its own.

    Args:
        source, output, model_uri: see :func:`score_table`.
        master: see :func:`spark_session`.
        partition_by: see :func:`score_table`.
        resume: refused: Spark retries failed tasks; rerun with ``overwrite``.
        explain: refused: evidence spans are not computed on Spark.
        **options: passed to :func:`score_table`.

    Returns:
        The row counts.

    Raises:
        InvalidInputError: ``resume`` or ``explain``, or as :func:`score_table`.
    """
    if resume:
        raise InvalidInputError(
            "--resume", "not with --engine spark (Spark retries failed tasks); use --overwrite"
        )
    if explain:
        raise InvalidInputError(
            "--explain", "evidence spans are not computed with --engine spark; use local"
        )
    created = SparkSession.getActiveSession() is None
    spark = spark_session(master, "imr-outcome score")
    try:
        return score_table(
            spark, str(source), str(output), model_uri, partition_by=partition_by, **options
        )
    finally:
        if created:
            spark.stop()

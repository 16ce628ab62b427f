"""Score Spark DataFrames and tables: every row once, with a result or an error.

For requests that already sit in a data lake: :func:`score_dataframe` adds a prediction
column to a DataFrame in the caller's own Spark job, :func:`score_table` reads Parquet,
CSV or a table of the Spark session and writes partitioned Parquet (``imr-outcome score
INPUT --out OUTPUT --engine spark``). Needs the ``spark`` extra (PySpark 4) and Java 17
or 21, and a classic (not Spark Connect) session. The executors need this package
installed, as they need any library a UDF imports.

The prediction column is a struct (:data:`PREDICTION_TYPE`) of the one output row of
every path (:data:`~imr_outcome.model.scoring.OUTPUT_FIELDS`): probabilities, label,
band, band reason, base rate, relative risk, ``warnings`` (array of strings),
``warning_details`` (JSON text, as in batch CSV and Parquet output), ``error`` and the
model's name and version. It is computed by ``mlflow.pyfunc.spark_udf`` over the
project's pyfunc (:mod:`imr_outcome.model.pyfunc`), which never raises on a bad row: the
row comes back with ``error`` set, so one bad row never fails a task.

The rules are those of local scoring (:func:`imr_outcome.serve.batch.score_file`), so the
two agree row for row: a bad row (null or empty request, oversize text, a malformed or
duplicate id, text that is not valid UTF-8, a row the CSV reader cannot parse) becomes an
error row; an empty or null summary is scored (with a warning); a later row repeating an
earlier row's id is kept, with a duplicate-id error, like locally. Each row gets ``row``,
its 0-based position in Spark's scan of the input (for one file, the file's row order;
equal to the local ``row``), so duplicate ids stay apart and reruns give the same rows.
The input must scan the same way twice (files and tables do; persist or checkpoint a
DataFrame built with a random or otherwise non-deterministic step first).

The model is resolved once on the driver (a bad URI fails before any task starts) and
saved as a pyfunc model folder that ``spark_udf`` (``env_manager="local"``) puts on every
node; the executors never contact the tracking store. Spark stages: one job counts rows
per input partition (for ``row``); the ids are grouped to find repeats (only repeated ids
are broadcast back); ids and texts are checked in SQL (missing or multi-line ids,
``is_valid_utf8``) before Arrow could fail on them; then the UDF.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.defaults import MAX_TEXT_CHARS
from imr_outcome.model.scoring import OUTPUT_FIELDS, one_line
from imr_outcome.serve.batch import ScoreSummary
from imr_outcome.serve.batch_readers import Columns, checked_metadata_columns
from imr_outcome.serve.spark_session import spark_session
from imr_outcome.serve.spark_udf import PREDICTION_FIELDS, PREDICTION_TYPE, error_struct, pyfunc_udf

logger = logging.getLogger(__name__)

#: The model scored when none is named.
DEFAULT_MODEL_URI = "models:/imr-outcome@champion"
#: Columns of a :func:`score_table` output, before any kept input columns.
OUTPUT_COLUMNS: tuple[str, ...] = ("id", "row", *PREDICTION_FIELDS)
#: The error of a row whose text the SQL check found not to be valid UTF-8 (the local
#: reader's message for the same row).
UNREADABLE_UTF8 = "unreadable row: not valid UTF-8 text"
#: The error of a row the CSV reader could not parse (wrong field count, bad quoting).
UNREADABLE_CSV = "unreadable row: not a well-formed CSV record"
#: The error of a row whose id holds a line break (the local reader's message).
ID_LINE_BREAK = "id: contains a line break; an id must be one line"

InputFormat = Literal["auto", "parquet", "csv", "table"]

#: Helper columns, dropped before a result is returned.
_PREFIX = "__imr_"
_KEY = f"{_PREFIX}key"
_FIRST = f"{_PREFIX}first"
_CORRUPT = f"{_PREFIX}corrupt_record"
#: ``monotonically_increasing_id``: partition index above bit 33, position below.
_PARTITION_SHIFT = 33
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _col(name: str) -> Column:
    """The column called ``name`` exactly (dots and spaces are part of the name)."""
    return F.col("`" + name.replace("`", "``") + "`")


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
        batch_size: rows per model call on an executor (>= 1); sets the session's
            ``spark.sql.execution.arrow.maxRecordsPerBatch``.
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
    udf, predictor = pyfunc_udf(spark, model_uri, max_chars)
    # spark_udf hands the pyfunc one Arrow batch at a time
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))

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
    parallelism = spark.sparkContext.defaultParallelism
    if df.rdd.getNumPartitions() < parallelism:
        # A CSV file is read whole (fields may span lines), as one partition: spread the
        # model calls over the cores. The row index is taken from the scan, before this.
        joined = joined.repartition(parallelism)

    def invalid(name: str) -> Column:
        if not isinstance(types[name], T.StringType):
            return F.lit(False)
        return F.coalesce(~F.is_valid_utf8(_col(name)), F.lit(False))

    unreadable = F.lit(False)
    for name in columns.needed:
        unreadable = unreadable | invalid(name)
    key = F.col(_KEY)
    # the messages of serve.batch.normalize_id and its duplicate check
    problem = (
        F.when(unreadable, F.lit(UNREADABLE_UTF8))
        .when(
            key.isNull() | (F.trim(key) == ""),
            F.lit(f"id: missing; every row needs a unique id in column {id_column!r}"),
        )
        .when(key.contains("\n") | key.contains("\r"), F.lit(ID_LINE_BREAK))
        .when(
            F.coalesce(_col(row_column) > F.col(_FIRST), F.lit(False)),
            F.concat(F.lit("id: duplicate of an earlier row's id '"), key, F.lit("'")),
        )
    )
    if unreadable_column is not None:
        problem = F.when(_col(unreadable_column).isNotNull(), F.lit(UNREADABLE_CSV)).otherwise(
            problem
        )
    texts = {"request": columns.request, "summary": columns.summary, **columns.metadata}
    inputs = F.struct(
        *[
            F.when(problem.isNull(), _col(column).cast("string")).alias(field)
            for field, column in texts.items()
        ]
    )
    scored = udf(inputs)
    # MLflow's spark_udf casts a text field holding any value with astype(str), so a null
    # there arrives as the text "None" (mlflow.pyfunc._convert_struct_values); no field
    # of the row can hold that text, so it is turned back into null.
    scored = F.struct(
        *[
            F.when(scored[f.name] != "None", scored[f.name]).alias(f.name)
            if isinstance(f.dataType, T.StringType)
            else scored[f.name].alias(f.name)
            for f in PREDICTION_TYPE.fields
        ]
    )
    prediction = F.when(problem.isNull(), scored).otherwise(error_struct(problem, predictor))
    return joined.withColumn(prediction_column, prediction).drop(_KEY, _FIRST)


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
    flat = scored.select(
        _col(id_column).cast("string").alias("id"),
        F.col(f"{_PREFIX}row").alias("row"),
        *[F.col(f"{_PREFIX}prediction.{name}").alias(name) for name in OUTPUT_FIELDS],
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

"""Spark batch scoring: the local rules on Spark local[2], and parity with `imr-outcome score`.

Skipped when PySpark or Java is missing, unless ``IMR_REQUIRE_SPARK=1`` (CI), then failed.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.errors import InvalidInputError, ModelNotFoundError
from imr_outcome.model.warnings import WARN_NO_SUMMARY
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor
from imr_outcome.train.run import TrainResult

from dataset_factory import OVERTURNED_CUE, UPHELD_CUE
from model_factory import export_test_onnx, registered_tfidf_store, write_untrained_transformer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

if importlib.util.find_spec("pyspark") is not None:
    from imr_outcome.serve import spark as scoring
    from imr_outcome.serve.spark_udf import save_pyfunc

MODEL_URI = "models:/imr-outcome@champion"
#: Text limit of both scorers, in characters (keeps oversize rows small).
LIMIT = 2000
COLUMNS: dict[str, Any] = {
    "id_column": "case_id",
    "request_column": "item",
    "summary_column": "background",
    "metadata_columns": {"patient_age": "age", "patient_sex": "sex"},
}
SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness. "
)
REQUESTS = (
    "Physical therapy {n} sessions",
    "Norco 10/325mg #{n}",
    "MRI of the lumbar spine, {n} views",
    "Acupuncture {n} visits",
    "TENS unit rental {n} months",
)
EMPTY_REQUEST = "request: is empty; give the requested treatment or item"

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainResult]:
    """A tfidf model trained and registered (@champion) in a temporary SQLite store."""
    with registered_tfidf_store(tmp_path_factory.mktemp("store")) as result:
        yield result


# -------------------------------------------------------------------------- inputs


def good(n: int) -> dict[str, Any]:
    """An invented, well-formed row; every third carries the Overturned cue."""
    cue = OVERTURNED_CUE if n % 3 == 0 else UPHELD_CUE
    summary = SUMMARY * (1 + n % 3) + cue
    if n % 11 == 0:
        summary = f"Short note.\n{cue}"  # a line break inside a CSV field; a short summary
    return {
        "case_id": f"case-{n}",
        "item": REQUESTS[n % len(REQUESTS)].format(n=n % 9 + 2),
        "background": summary,
        "age": str(25 + n % 50),
        "sex": ("female", "male")[n % 2],
        "region": ("north", "south", "west")[n % 3],
    }


def parity_rows(n: int = 400) -> list[dict[str, Any]]:
    """``n`` rows: mostly good, with every kind of bad row a CSV can hold."""
    rows = [good(i) for i in range(n)]
    rows[5] = {**rows[5], "item": ""}  # no request (CSV: null)
    rows[17] = {**rows[17], "background": ""}  # no summary: scored, with a warning
    rows[29] = {**rows[29], "background": "x " * LIMIT}  # oversize summary
    rows[41] = {**rows[41], "case_id": "case-40"}  # a repeated id
    rows[53] = {**rows[53], "case_id": "   "}  # a blank id
    rows[67] = {**rows[67], "age": "abc"}  # a malformed age
    rows[71] = {**rows[71], "item": "y" * (LIMIT + 1)}  # oversize request
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def collect(df: DataFrame, row_column: str = "row") -> list[dict[str, Any]]:
    """Rows as dicts, ordered by the row index."""
    return [r.asDict(recursive=True) for r in df.orderBy(row_column).collect()]


# -------------------------------------------------------------------------- parity


def test_the_executors_serve_the_backend_the_driver_serves(tiny_bert: Path, tmp_path: Path) -> None:
    # The model goes to the executors as the directory it was loaded from: a copy saved
    # again lost the ONNX exports, and the executors scored on torch (0.41x bare int8).
    import mlflow.pyfunc

    model_dir = write_untrained_transformer(tiny_bert, tmp_path / "model")
    export_test_onnx(model_dir)
    driver = Predictor.load(str(model_dir), max_chars=LIMIT)

    folder = save_pyfunc(driver, tmp_path / "spark", LIMIT)
    executor = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model().model

    assert driver.model.backend.startswith("onnx-")
    assert executor.backend == driver.model.backend


def test_spark_matches_local_score_row_for_row(
    spark: SparkSession, store: TrainResult, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "pending.csv", parity_rows())
    predictor = Predictor.load(MODEL_URI, max_chars=LIMIT)
    local = score_file(source, tmp_path / "local.parquet", predictor, **COLUMNS)
    assert local.total == 400

    summary = scoring.score_table(
        spark, str(source), str(tmp_path / "spark"), MODEL_URI, max_chars=LIMIT, **COLUMNS
    )

    assert (summary.total, summary.scored, summary.failed) == (
        local.total,
        local.scored,
        local.failed,
    )
    expected = pq.read_table(tmp_path / "local.parquet").to_pylist()
    got = sorted(pq.read_table(tmp_path / "spark").to_pylist(), key=lambda r: r["row"])
    assert [r["row"] for r in got] == [r["row"] for r in expected] == list(range(400))
    worst = 0.0
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["error"] == theirs["error"], mine["row"]
        if theirs["error"] is not None:
            assert mine["p_overturned"] is None and mine["label"] is None
            continue
        assert mine["id"] == theirs["id"]
        assert mine["label"] == theirs["label"]
        assert mine["warnings"] == json.loads(theirs["warnings"])
        assert json.loads(mine["warning_details"]) == json.loads(theirs["warning_details"])
        for field in ("band", "band_reason", "base_rate", "model_name", "model_version"):
            assert mine[field] == theirs[field]
        worst = max(worst, abs(mine["p_overturned"] - theirs["p_overturned"]))
    assert worst <= 1e-6
    errors = {r["row"]: r["error"] for r in got if r["error"] is not None}
    assert errors[5] == EMPTY_REQUEST
    assert errors[41] == "id: duplicate of an earlier row's id 'case-40'"
    assert errors[71].startswith(f"request: {LIMIT + 1} characters, more than the limit")
    assert sorted(errors) == [5, 29, 41, 53, 67, 71]
    assert WARN_NO_SUMMARY in got[17]["warnings"]


# ------------------------------------------------------------------ row rules, DataFrames


def test_bad_rows_become_error_rows_and_never_fail_the_job(
    spark: SparkSession, store: TrainResult
) -> None:
    from pyspark.sql import functions as F

    base = good(1)
    rows: list[tuple[Any, ...]] = [
        ("ok", b"Physical therapy 6 sessions", base["background"]),
        ("dup", b"Acupuncture 6 visits", base["background"]),
        ("dup", b"Acupuncture 6 visits", base["background"]),
        ("null-request", None, base["background"]),
        ("blank-request", b"   ", base["background"]),
        ("empty-summary", b"TENS unit rental", ""),
        ("null-summary", b"TENS unit rental", None),
        ("oversize", b"z" * (LIMIT + 1), base["background"]),
        ("latin-1", b"Caf\xe9 therapy", base["background"]),
        ("lone-surrogate", b"\xed\xa0\x80 therapy", base["background"]),
        (None, b"Physical therapy 6 sessions", base["background"]),
        ("two\nlines", b"Physical therapy 6 sessions", base["background"]),
    ]
    df = spark.createDataFrame(rows, "case_id string, item_bytes binary, background string")
    df = df.withColumn("item", F.col("item_bytes").cast("string")).drop("item_bytes")

    scored = scoring.score_dataframe(
        spark,
        df,
        MODEL_URI,
        id_column="case_id",
        request_column="item",
        summary_column="background",
        max_chars=LIMIT,
        batch_size=3,
    )

    out = collect(scored)
    assert [r["row"] for r in out] == list(range(len(rows)))
    assert [r["case_id"] for r in out] == [r[0] for r in rows]  # ids untouched
    errors = [r["prediction"]["error"] for r in out]
    assert errors == [
        None,
        None,
        "id: duplicate of an earlier row's id 'dup'",
        EMPTY_REQUEST,
        EMPTY_REQUEST,
        None,
        None,
        f"request: {LIMIT + 1} characters, more than the limit of {LIMIT}; shorten the text "
        "or raise the limit (max_chars)",
        scoring.UNREADABLE_UTF8,
        scoring.UNREADABLE_UTF8,
        "id: missing; every row needs a unique id in column 'case_id'",
        "id: contains a line break; an id must be one line",
    ]
    for row in out:
        prediction = row["prediction"]
        if prediction["error"] is None:
            assert 0.0 <= prediction["p_overturned"] <= 1.0
            assert prediction["p_overturned"] + prediction["p_upheld"] == pytest.approx(1.0)
            assert prediction["label"] in {"Upheld", "Overturned"}
            assert isinstance(prediction["warnings"], list)
            assert prediction["band"] in {"uncertain", "insufficient information"}
        else:  # null, not NaN or a default
            assert prediction["p_overturned"] is None and prediction["p_upheld"] is None
            assert prediction["label"] is None and prediction["warnings"] is None
            assert prediction["band"] is None and prediction["model_version"] == "1"
    assert WARN_NO_SUMMARY in out[5]["prediction"]["warnings"]
    assert WARN_NO_SUMMARY in out[6]["prediction"]["warnings"]


def test_integer_ids_are_text_and_repeats_are_errors(
    spark: SparkSession, store: TrainResult
) -> None:
    item, summary = "Physical therapy 6 sessions", good(2)["background"]
    df = spark.createDataFrame(
        [(7, item, summary), (8, item, summary), (7, item, summary), (None, item, summary)],
        "case_id bigint, request string, summary string",
    )

    out = collect(scoring.score_dataframe(spark, df, MODEL_URI, id_column="case_id"))

    assert [r["prediction"]["error"] for r in out] == [
        None,
        None,
        "id: duplicate of an earlier row's id '7'",
        "id: missing; every row needs a unique id in column 'case_id'",
    ]


def test_a_one_partition_input_is_scored_on_every_core(
    spark: SparkSession, store: TrainResult
) -> None:
    rows = [good(n) for n in range(12)]
    df = spark.createDataFrame(rows).coalesce(1)  # as a CSV whose fields span lines is read

    scored = scoring.score_dataframe(spark, df, MODEL_URI, **COLUMNS)
    plan = scored._jdf.queryExecution().executedPlan().toString().splitlines()

    model_call = next(i for i, line in enumerate(plan) if "EvalPython" in line)
    spread = next(i for i, line in enumerate(plan) if "RoundRobinPartitioning(2" in line)
    assert model_call < spread  # the plan tree lists a node above its input
    assert sorted(r["row"] for r in collect(scored)) == list(range(12))


def test_schema_and_model_problems_fail_before_any_job(
    spark: SparkSession, store: TrainResult
) -> None:
    df = spark.createDataFrame([("a", 1, "s")], "id string, request int, summary string")
    with pytest.raises(InvalidInputError, match=r"request_column: column 'request' has type int"):
        scoring.score_dataframe(spark, df, MODEL_URI)
    with pytest.raises(InvalidInputError, match=r"summary_column: column 'notes' is not in"):
        scoring.score_dataframe(spark, df, MODEL_URI, summary_column="notes")
    with pytest.raises(InvalidInputError, match=r"row_column: 'id' is already an input column"):
        scoring.score_dataframe(spark, df, MODEL_URI, row_column="id", request_column="summary")
    fine = spark.createDataFrame([("a", "PT", "s")], "id string, request string, summary string")
    with pytest.raises(ModelNotFoundError, match="no registered model named 'nope'"):
        scoring.score_dataframe(spark, fine, "models:/nope@champion")


# ---------------------------------------------------------------------------- tables


def test_partitioned_output_and_rerun_without_duplicates(
    spark: SparkSession, store: TrainResult, tmp_path: Path
) -> None:
    rows = [good(i) for i in range(30)]
    source = tmp_path / "pending.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source, row_group_size=8)
    output = tmp_path / "scores"
    options: dict[str, Any] = {**COLUMNS, "partition_by": ["region"], "max_chars": LIMIT}

    first = scoring.score_table(spark, str(source), str(output), MODEL_URI, **options)
    with pytest.raises(InvalidInputError, match="exists; pass --overwrite"):
        scoring.score_table(spark, str(source), str(output), MODEL_URI, **options)
    again = scoring.score_table(
        spark, str(source), str(output), MODEL_URI, overwrite=True, **options
    )

    assert first == again
    assert (again.total, again.scored, again.failed) == (30, 30, 0)
    assert sorted(p.name for p in output.glob("region=*")) == [
        "region=north",
        "region=south",
        "region=west",
    ]
    written = spark.read.parquet(str(output))
    assert written.count() == 30
    assert sorted(r["row"] for r in written.select("row").collect()) == list(range(30))
    by_row = {r["row"]: (r["id"], r["region"]) for r in written.collect()}
    assert by_row == {i: (row["case_id"], row["region"]) for i, row in enumerate(rows)}
    assert "item" not in written.columns and "background" not in written.columns


def test_table_of_the_session_and_malformed_csv_records(
    spark: SparkSession, store: TrainResult, tmp_path: Path
) -> None:
    rows = [good(i) for i in range(4)]
    spark.createDataFrame(rows).createOrReplaceTempView("pending_imr")
    summary = scoring.score_table(
        spark, "pending_imr", str(tmp_path / "from-table"), MODEL_URI, **COLUMNS
    )
    assert (summary.total, summary.failed) == (4, 0)

    source = write_csv(tmp_path / "ragged.csv", rows)
    with source.open("a", encoding="utf-8") as handle:
        handle.write("short,row\n")
    scoring.score_table(spark, str(source), str(tmp_path / "from-csv"), MODEL_URI, **COLUMNS)
    written = sorted(pq.read_table(tmp_path / "from-csv").to_pylist(), key=lambda r: r["row"])
    assert [r["error"] for r in written] == [None] * 4 + [scoring.UNREADABLE_CSV]
    assert written[4]["id"] == "short"

    with pytest.raises(InvalidInputError, match=r"input: no_such_table: not a \.csv or \.parquet"):
        scoring.score_table(spark, "no_such_table", str(tmp_path / "x"), MODEL_URI)


def test_cli_engine_spark_in_a_fresh_process_prints_only_our_own_lines(
    spark: SparkSession, store: TrainResult, tmp_path: Path
) -> None:
    # A new JVM and Python workers, as a user's `imr-outcome score --engine spark` starts:
    # Spark's log banner and WARN lines, its stage bar, PySpark's pandas FutureWarning and
    # MLflow's warnings stay off the console without -v.
    source = write_csv(tmp_path / "pending.csv", [good(i) for i in range(6)])
    output = tmp_path / "scores"
    args = ["score", str(source), "--out", str(output), "--engine", "spark"]
    args += ["--spark-master", "local[2]", "--id-column", "case_id", "--request-column", "item"]
    args += ["--summary-column", "background"]
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}

    done = subprocess.run(
        [str(Path(sys.executable).with_name("imr-outcome")), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )

    assert done.returncode == 0, done.stderr
    assert "".join(done.stdout.split()) == "".join(
        f"6 rows: 6 scored, 0 failed -> {output}".split()
    )
    # The JVM itself reports the vector module Spark 4 adds; nothing else may appear.
    jvm = "WARNING: Using incubator modules: jdk.incubator.vector"
    assert [line for line in done.stderr.splitlines() if line.strip() and line != jvm] == []


def test_cli_engine_spark(spark: SparkSession, store: TrainResult, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "pending.csv", [good(i) for i in range(6)])
    output = tmp_path / "scores"
    args = ["score", str(source), "--out", str(output), "--engine", "spark"]
    args += ["--spark-master", "local[2]", "--id-column", "case_id", "--request-column", "item"]
    args += ["--summary-column", "background", "--partition-by", "label"]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "6 rows: 6 scored, 0 failed" in result.output
    assert {p.name.partition("=")[0] for p in output.glob("label=*")} == {"label"}
    assert not spark.sparkContext._jsc.sc().isStopped()  # the CLI leaves a caller's session

    refused = runner.invoke(app, [*args, "--resume"])
    assert refused.exit_code != 0
    assert "--resume" in refused.output

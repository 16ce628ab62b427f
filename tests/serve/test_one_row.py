"""One output row everywhere: the same 48 rows through the six paths give the same rows.

The paths: the HTTP API, ``predict --json``, batch files, Spark, the pyfunc and ``mlflow
models serve``. 40 rows are good (with and without summary and metadata) and 8 are bad
in every way a row can be. Batch, Spark, the pyfunc and ``/invocations`` return a row
for each, with ``error`` set on the bad ones; the API and the CLI refuse a bad single
call, naming the same field.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imr_outcome.cli import app as cli_app
from imr_outcome.model.scoring import OUTPUT_FIELDS
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor
from imr_outcome.train.run import TrainResult

from dataset_factory import OVERTURNED_CUE, UPHELD_CUE
from model_factory import registered_tfidf_store

MODEL_URI = "models:/imr-outcome@champion"
TOO_LONG = 100_001  # one over the default text limit of every path
SUMMARY = (
    "The injured worker is a 51 year old female with chronic neck pain after a fall at "
    "work. Examination showed cervical tenderness and reduced range of motion. Treatment "
    "to date included medications, physical therapy and a home exercise program. "
)
REQUESTS = (
    "Physical therapy 8 sessions for the cervical spine",
    "Norco 10/325mg #60",
    "MRI of the cervical spine",
    "Acupuncture 6 visits",
    "TENS unit rental 2 months",
)

runner = CliRunner()


def good_rows() -> list[dict[str, Any]]:
    """40 good rows: cues both ways, full, short and missing summaries, some metadata."""
    rows = []
    for n in range(40):
        cue = OVERTURNED_CUE if n % 3 == 0 else UPHELD_CUE
        summary = {0: SUMMARY + cue, 1: SUMMARY, 2: "Neck pain.", 3: ""}[n % 4]
        row: dict[str, Any] = {"request": REQUESTS[n % 5], "summary": summary}
        if n % 2 == 0:
            row["patient_age"] = 30 + n
        if n % 5 == 0:
            row["patient_sex"] = "Female"
        rows.append(row)
    return rows


#: 8 bad rows and the field each error names.
BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"request": "", "summary": SUMMARY}, "request"),
    ({"request": None, "summary": SUMMARY}, "request"),
    ({"request": "   \t", "summary": SUMMARY}, "request"),
    ({"request": "1234 / 5678", "summary": SUMMARY}, "request"),
    ({"request": "x" * TOO_LONG, "summary": SUMMARY}, "request"),
    ({"request": REQUESTS[0], "summary": "12/01/2016 ###"}, "summary"),
    ({"request": REQUESTS[0], "summary": SUMMARY, "patient_age": 200}, "metadata.patient_age"),
    ({"request": REQUESTS[1], "summary": SUMMARY, "patient_age": "forty"}, "metadata.patient_age"),
]


def all_rows() -> list[dict[str, Any]]:
    """The 48 rows, the bad ones spread among the good."""
    rows = good_rows()
    for index, (row, _) in enumerate(BAD_ROWS):
        rows.insert(index * 6 + 3, row)
    return rows


def as_text_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as a CSV or Spark table holds them: every column text (null when missing)."""
    columns = ("request", "summary", "patient_age", "patient_sex")
    return [{c: None if row.get(c) is None else str(row[c]) for c in columns} for row in rows]


def canonical(row: dict[str, Any]) -> dict[str, Any]:
    """The :data:`OUTPUT_FIELDS` of a row, JSON text decoded, NaN as None."""
    out = {}
    for name in OUTPUT_FIELDS:
        value = row.get(name)
        if isinstance(value, float) and value != value:
            value = None
        if name in ("warning_details", "outcome_rates", "similar_ids") and isinstance(value, str):
            value = json.loads(value)
        if name in ("warnings", "similar_ids") and value is not None:
            value = list(value)
        out[name] = value
    return out


def assert_same_rows(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], *, compare_model: bool = True
) -> None:
    """Rows equal field by field; probabilities to 1e-6."""
    assert len(got) == len(expected)
    for n, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        for name in OUTPUT_FIELDS:
            if name in ("model_name", "model_version") and not compare_model:
                continue
            a, b = mine[name], theirs[name]
            if isinstance(a, float) and isinstance(b, float):
                assert abs(a - b) <= 1e-6, (n, name, a, b)
            else:
                assert a == b, (n, name, a, b)


# -------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TrainResult, str]]:
    """A registered TF-IDF model (@champion) and its tracking URI, set for the module."""
    root = tmp_path_factory.mktemp("one-row")
    with registered_tfidf_store(root) as result:
        pass
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        yield result, tracking_uri


@pytest.fixture(scope="module")
def batch_rows(
    store: tuple[TrainResult, str], tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """The reference: the 48 rows through ``score_file`` (JSON Lines in and out)."""
    folder = tmp_path_factory.mktemp("batch")
    source = folder / "in.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for n, row in enumerate(all_rows()):
            handle.write(json.dumps({"id": f"r{n}", **row}) + "\n")
    summary = score_file(source, folder / "out.jsonl", Predictor.load(MODEL_URI))
    assert (summary.total, summary.failed) == (48, 8)
    lines = (folder / "out.jsonl").read_text(encoding="utf-8").splitlines()
    return [canonical(json.loads(line)) for line in lines]


def test_batch_rows_are_the_one_row_with_errors_naming_the_field(
    batch_rows: list[dict[str, Any]],
) -> None:
    errors = [row["error"] for row in batch_rows if row["error"] is not None]
    assert [e.partition(":")[0] for e in errors] == [field for _, field in BAD_ROWS]
    scored = [row for row in batch_rows if row["error"] is None]
    assert len(scored) == 40
    for row in scored:
        assert row["p_overturned"] + row["p_upheld"] == pytest.approx(1.0)
        assert row["band"] is not None and row["base_rate"] is not None
        assert row["relative_risk"] == pytest.approx(row["p_overturned"] / row["base_rate"])
        assert (row["model_name"], row["model_version"]) == ("imr-outcome", "1")
        assert row["outcome_rates"][-1]["level"] == "source"  # finest first, all last
        assert row["rate_summary"].startswith("Of ") and len(row["similar_ids"]) == 3
    no_summary = [r for r, row in zip(scored, good_rows(), strict=True) if not row["summary"]]
    assert {r["band_reason"] for r in no_summary} == {"there is no case summary, only the request"}


def test_the_pyfunc_gives_the_same_rows(
    store: tuple[TrainResult, str], batch_rows: list[dict[str, Any]]
) -> None:
    pyfunc = mlflow.pyfunc.load_model(MODEL_URI)
    frame = pd.DataFrame(as_text_columns(all_rows()))

    got = [canonical(row) for row in pyfunc.predict(frame).to_dict("records")]

    assert_same_rows(got, batch_rows, compare_model=False)
    model_id = pyfunc.metadata.model_id
    assert {(r["model_name"], r["model_version"]) for r in got} == {
        (f"models:/{model_id}", f"model:{model_id}")
    }


def test_spark_gives_the_same_rows(
    spark: Any, store: tuple[TrainResult, str], batch_rows: list[dict[str, Any]]
) -> None:
    from imr_outcome.serve import spark as scoring

    rows = [{"id": f"r{n}", **row} for n, row in enumerate(as_text_columns(all_rows()))]
    df = spark.createDataFrame(
        rows, "id string, request string, summary string, patient_age string, patient_sex string"
    )

    scored = scoring.score_dataframe(
        spark,
        df,
        MODEL_URI,
        metadata_columns={"patient_age": "patient_age", "patient_sex": "patient_sex"},
    )

    got = [
        canonical(r["prediction"].asDict(recursive=True)) for r in scored.orderBy("row").collect()
    ]
    assert_same_rows(got, batch_rows)


def test_the_api_gives_the_same_rows_and_refuses_the_bad_ones(
    store: tuple[TrainResult, str], batch_rows: list[dict[str, Any]]
) -> None:
    settings = ServeSettings(model_uri=MODEL_URI, max_batch_items=64, max_upload_bytes=1_000_000)
    items = []
    for row in good_rows():
        item: dict[str, Any] = {"request": row["request"]}
        if row["summary"]:
            item["summary"] = row["summary"]
        metadata = {k: row[k] for k in ("patient_age", "patient_sex") if k in row}
        if metadata:
            item["metadata"] = metadata
        items.append(item)
    with TestClient(create_app(settings)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.02)
        response = client.post("/v1/predict/batch", json={"items": items})
        refusals = [
            client.post(
                "/v1/predict",
                json={k: v for k, v in bad.items() if v is not None and not k.startswith("patient")}
                | (
                    {"metadata": {k: v for k, v in bad.items() if k.startswith("patient")}}
                    if any(k.startswith("patient") for k in bad)
                    else {}
                ),
            )
            for bad, _ in BAD_ROWS
        ]

    assert response.status_code == 200, response.text
    got = [canonical(p) for p in response.json()["predictions"]]
    assert_same_rows(got, [r for r in batch_rows if r["error"] is None])
    for refusal, (_, field) in zip(refusals, BAD_ROWS, strict=True):
        assert refusal.status_code in (413, 422), refusal.text
        if refusal.status_code == 422:
            fields = [d["field"] for d in refusal.json()["detail"]]
            assert any(f.startswith(field.split(".")[0]) for f in fields), (field, fields)


def test_predict_json_gives_the_same_rows_and_refuses_the_bad_ones(
    store: tuple[TrainResult, str], batch_rows: list[dict[str, Any]]
) -> None:
    def call(row: dict[str, Any]) -> Any:
        args = ["predict", "--model", MODEL_URI, "--json", "--no-evidence"]
        if row.get("request") is not None:
            args += ["--request", row["request"]]
        if row.get("summary"):
            args += ["--summary", row["summary"]]
        for key in ("patient_age", "patient_sex"):
            if key in row:
                args += ["--metadata", f"{key}={row[key]}"]
        return runner.invoke(cli_app, args)

    got = []
    for row in good_rows():
        result = call(row)
        assert result.exit_code == 0, result.output
        (prediction,) = json.loads(result.stdout)
        got.append(canonical(prediction))
    assert_same_rows(got, [r for r in batch_rows if r["error"] is None])
    for bad, field in BAD_ROWS:
        result = call(bad)
        assert result.exit_code != 0
        assert field.split(".")[0] in result.output + (result.stderr or "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_mlflow_models_serve_answers_invocations_with_the_same_rows(
    store: tuple[TrainResult, str], batch_rows: list[dict[str, Any]]
) -> None:
    _, tracking_uri = store
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            MODEL_URI,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            # mlflow runs uvicorn from PATH: this environment's
            "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        body = json.dumps({"dataframe_records": as_text_columns(all_rows())}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    got = [canonical(row) for row in predictions]
    assert_same_rows(got, batch_rows, compare_model=False)

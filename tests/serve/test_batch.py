"""Batch scoring: every input row exactly once, bad rows as errors, crash-safe resume."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.errors import InvalidInputError
from imr_outcome.serve import batch
from imr_outcome.serve.batch import ScoreSummary, score_file
from imr_outcome.serve.batch_readers import csv_encoding, prefiling_columns
from imr_outcome.serve.batch_sinks import OUTPUT_COLUMNS, parts_dir
from imr_outcome.serve.predictor import PredictInput, Predictor
from imr_outcome.train.run import TrainResult

from dataset_factory import OVERTURNED_CUE, UPHELD_CUE
from model_factory import registered_tfidf_store

MODEL_URI = "models:/imr-outcome@champion"
#: Text limit of the test predictor, in characters (keeps oversize rows small).
LIMIT = 2000
COLUMNS: dict[str, Any] = {
    "id_column": "case_id",
    "request_column": "item",
    "summary_column": "background",
}
METADATA = {"patient_age": "age", "patient_sex": "sex"}
SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness. "
)

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainResult]:
    """A tfidf model trained and registered (@champion) in a temporary SQLite store."""
    with registered_tfidf_store(tmp_path_factory.mktemp("store")) as result:
        yield result


@pytest.fixture(scope="module")
def predictor(store: TrainResult) -> Predictor:
    loaded = Predictor.load(MODEL_URI)
    loaded.max_chars = LIMIT
    return loaded


# ---------------------------------------------------------------- input construction


@dataclasses.dataclass(frozen=True)
class Entry:
    """One input row: values (or a raw line for CSV/JSONL), and what the output must say."""

    values: dict[str, Any] | None
    raw: bytes | None = None
    id: str | None = None
    error: str | None = None


def good(n: int) -> Entry:
    cue = OVERTURNED_CUE if n % 3 == 0 else UPHELD_CUE
    values = {
        "case_id": f"case-{n}",
        "item": f"Physical therapy {n % 7 + 2} sessions",
        "background": SUMMARY + cue,
        "age": str(30 + n % 40),
        "sex": ("female", "male")[n % 2],
    }
    return Entry(values, id=f"case-{n}")


def bad(values: dict[str, Any], error: str, row_id: str | None) -> Entry:
    return Entry(values, id=row_id, error=error)


def common_bad_rows() -> list[Entry]:
    """Bad rows every format can hold."""
    base = good(1000).values
    assert base is not None
    return [
        bad(
            {**base, "case_id": "empty", "item": ""},
            "request: is empty; give the requested treatment or item",
            "empty",
        ),
        bad(
            {**base, "case_id": "oversize", "background": "x" * (LIMIT + 1)},
            f"summary: {LIMIT + 1} characters, more than the limit of {LIMIT}; shorten the "
            "text or raise the limit (max_chars)",
            "oversize",
        ),
        bad(
            {**base, "case_id": "case-1"}, "id: duplicate of an earlier row's id 'case-1'", "case-1"
        ),
        bad(
            {**base, "case_id": ""},
            "id: missing; every row needs a unique id in column 'case_id'",
            None,
        ),
        bad(
            {**base, "case_id": "old", "age": "abc"},
            "metadata.patient_age: expected an integer 0-120, got 'abc'",
            "old",
        ),
    ]


def entries_for(fmt: str) -> list[Entry]:
    rows = [good(n) for n in range(12)]
    rows[3:3] = common_bad_rows()
    base = good(2000).values
    assert base is not None
    if fmt == "csv":
        # valid UTF-8 elsewhere makes the file UTF-8, so the cp1252 byte below is damage
        rows[0] = dataclasses.replace(
            rows[0], values={**(rows[0].values or {}), "item": "Physiothérapie 6 sessions"}
        )
        rows.insert(
            1,
            Entry(None, b"wide,a,b,c,d,e\n", "wide", "unreadable row: expected 5 fields, found 6"),
        )
        rows.insert(
            6,
            Entry(
                None,
                b"latin,Physical therapy,Caf\xe9 owner,40,male\n",
                "latin",
                "unreadable row: not valid UTF-8 text",
            ),
        )
    if fmt == "jsonl":
        rows.insert(
            1, Entry(None, b'{"case_id": "broken", \n', None, "unreadable row: invalid JSON")
        )
        rows.insert(
            2, Entry(None, b"[1, 2]\n", None, "unreadable row: expected a JSON object, found list")
        )
        rows.insert(
            4,
            bad(
                {**base, "case_id": "typed", "item": 42}, "request: expected text, got int", "typed"
            ),
        )
        rows.insert(
            5, bad({**base, "case_id": ["x"]}, "id: expected text or an integer, got list", None)
        )
        rows.insert(6, Entry({**base, "case_id": 77}, id="77"))  # an integer id is fine
    return rows


def write_input(path: Path, entries: list[Entry]) -> Path:
    columns = ["case_id", "item", "background", "age", "sex"]
    if path.suffix == ".parquet":
        table = pa.Table.from_pylist([e.values for e in entries if e.values is not None])
        pq.write_table(table.select(columns), path, row_group_size=7)
        return path
    with path.open("wb") as handle:
        if path.suffix == ".csv":
            handle.write((",".join(columns) + "\n").encode())
        for entry in entries:
            if entry.raw is not None:
                handle.write(entry.raw)
            elif path.suffix == ".csv":
                buffer = io.StringIO()
                assert entry.values is not None
                csv.writer(buffer, lineterminator="\n").writerow(entry.values[c] for c in columns)
                handle.write(buffer.getvalue().encode())
            else:
                handle.write((json.dumps(entry.values) + "\n").encode())
    return path


def lists(value: Any) -> Any:
    """A list column's value: JSON text in CSV and Parquet, an array in JSON Lines."""
    return json.loads(value) if isinstance(value, str) else value


def read_output(path: Path) -> list[dict[str, Any]]:
    """Output rows with typed values (CSV text converted back)."""
    if path.suffix == ".parquet":
        return list(pq.read_table(path).to_pylist())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in record.items()}
            row["row"] = int(row["row"])
            for key in ("p_overturned", "p_upheld"):
                row[key] = None if row[key] is None else float(row[key])
            rows.append(row)
    return rows


# -------------------------------------------------------------------- row accounting


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_input_row_appears_once_with_a_result_or_an_error(
    predictor: Predictor, tmp_path: Path, fmt: str
) -> None:
    entries = entries_for(fmt)
    source = write_input(tmp_path / f"items.{fmt}", entries)
    target = tmp_path / f"scored.{fmt}"

    summary = score_file(
        source, target, predictor, metadata_columns=METADATA, chunk_size=4, **COLUMNS
    )

    out = read_output(target)
    assert [r["row"] for r in out] == list(range(len(entries)))
    assert [r["id"] for r in out] == [e.id for e in entries]
    for row, entry in zip(out, entries, strict=True):
        if entry.error is None:
            assert row["error"] is None
        elif entry.error == "unreadable row: invalid JSON":
            assert row["error"].startswith("unreadable row: invalid JSON (")
        else:
            assert row["error"] == entry.error
        if row["error"] is not None:
            assert [
                row[c]
                for c in (
                    "p_overturned",
                    "p_upheld",
                    "label",
                    "evidence",
                    "warnings",
                    "warning_details",
                )
            ] == [None] * 6
    n_failed = sum(e.error is not None for e in entries)
    assert summary == ScoreSummary(len(entries), len(entries) - n_failed, n_failed, 0, 0)
    assert list(out[0]) == list(OUTPUT_COLUMNS)

    scored = [(row, e) for row, e in zip(out, entries, strict=True) if e.error is None]
    items = [
        PredictInput.of(
            e.values["item"],
            e.values["background"],
            {"patient_age": int(e.values["age"]), "patient_sex": e.values["sex"]},
        )
        for _, e in scored
        if e.values is not None
    ]
    expected = predictor.predict_batch(items)
    np.testing.assert_allclose(
        [[r["p_upheld"], r["p_overturned"]] for r, _ in scored],
        [[p.p_upheld, p.p_overturned] for p in expected],
        rtol=0,
        atol=1e-12,
    )
    assert [r["label"] for r, _ in scored] == [p.label for p in expected]
    assert [lists(r["warnings"]) for r, _ in scored] == [p.warnings for p in expected]
    assert [lists(r["warning_details"]) for r, _ in scored] == [
        [w.model_dump() for w in p.warning_details] for p in expected
    ]
    assert all(lists(r["evidence"]) == [] for r, _ in scored)
    if fmt == "jsonl":  # arrays, not JSON text
        assert all(isinstance(r["warnings"], list) for r, _ in scored)
    if fmt == "parquet":
        assert not parts_dir(target).exists()


def test_a_csv_input_can_be_written_as_parquet(predictor: Predictor, tmp_path: Path) -> None:
    entries = [good(n) for n in range(5)]
    source = write_input(tmp_path / "items.csv", entries)

    score_file(source, tmp_path / "scored.parquet", predictor, metadata_columns=METADATA, **COLUMNS)

    table = pq.read_table(tmp_path / "scored.parquet")
    assert table.column_names == list(OUTPUT_COLUMNS)
    assert table.column("id").to_pylist() == [e.id for e in entries]


def test_a_failing_batch_is_retried_item_by_item(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [good(n) for n in range(6)]
    assert entries[2].values is not None
    entries[2].values["item"] = "poison"
    source = write_input(tmp_path / "items.jsonl", entries)
    original = predictor.predict_batch

    def flaky(items: Any, **kwargs: Any) -> Any:
        if any(item.request == "poison" for item in items):
            raise RuntimeError("model exploded")
        return original(items, **kwargs)

    monkeypatch.setattr(predictor, "predict_batch", flaky)

    summary = score_file(source, tmp_path / "scored.jsonl", predictor, chunk_size=6, **COLUMNS)

    out = read_output(tmp_path / "scored.jsonl")
    assert [r["error"] for r in out] == [
        None,
        None,
        "RuntimeError: model exploded",
        None,
        None,
        None,
    ]
    assert (summary.scored, summary.failed) == (5, 1)


def test_evidence_is_written_as_json_when_asked(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("imr_outcome.serve.evidence")
    entries = [good(n) for n in range(3)]
    source = write_input(tmp_path / "items.csv", entries)

    score_file(source, tmp_path / "scored.csv", predictor, explain=True, **COLUMNS)

    for row, entry in zip(read_output(tmp_path / "scored.csv"), entries, strict=True):
        spans = json.loads(row["evidence"])
        assert spans and entry.values is not None
        texts = {"request": entry.values["item"], "summary": entry.values["background"]}
        assert all(texts[s["field"]][s["start"] : s["end"]] == s["text"] for s in spans)


def test_progress_reports_rows_done_and_the_total(predictor: Predictor, tmp_path: Path) -> None:
    source = write_input(tmp_path / "items.csv", [good(n) for n in range(10)])
    calls: list[tuple[int, int | None]] = []

    score_file(
        source,
        tmp_path / "scored.csv",
        predictor,
        chunk_size=4,
        progress=lambda d, t: calls.append((d, t)),
        **COLUMNS,
    )

    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


def test_progress_moves_inside_a_chunk_every_few_rows(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One 1,000-row chunk used to move the bar once; it now moves per model call.
    monkeypatch.setattr(batch, "PROGRESS_ROWS", 4)
    source = write_input(tmp_path / "items.csv", [good(n) for n in range(10)])
    calls: list[tuple[int, int | None]] = []

    score_file(
        source,
        tmp_path / "scored.csv",
        predictor,
        progress=lambda d, t: calls.append((d, t)),
        **COLUMNS,
    )

    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


# ----------------------------------------------------------------------------- resume


class Crash(Exception):
    """Stands in for a kill between two chunks."""


def _crash_after(chunks: int) -> Any:
    calls = {"n": 0}

    def progress(done: int, total: int | None) -> None:
        calls["n"] += 1
        if calls["n"] > chunks:  # the first call comes before any chunk
            raise Crash

    return progress


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_resumed_run_writes_what_an_uninterrupted_run_writes(
    predictor: Predictor, tmp_path: Path, fmt: str
) -> None:
    entries = [good(n) for n in range(40)]
    entries[10:10] = common_bad_rows()
    source = write_input(tmp_path / f"items.{fmt}", entries)
    full, resumed = tmp_path / f"full.{fmt}", tmp_path / f"resumed.{fmt}"
    options: dict[str, Any] = {"metadata_columns": METADATA, "chunk_size": 6, **COLUMNS}
    score_file(source, full, predictor, **options)

    with pytest.raises(Crash):
        score_file(source, resumed, predictor, progress=_crash_after(3), **options)
    if fmt == "parquet":
        assert not resumed.exists() and len(list(parts_dir(resumed).glob("part-*"))) == 3
        (parts_dir(resumed) / "part-000003.parquet.tmp").write_bytes(b"PAR1 half a part")
    else:
        whole = resumed.read_bytes()
        torn = full.read_bytes()[len(whole) : len(whole) + 25]
        assert b"\n" not in torn
        resumed.write_bytes(whole + torn)  # killed in the middle of a line

    summary = score_file(source, resumed, predictor, resume=True, **options)

    assert summary.skipped_existing == 18
    assert summary.total == len(entries)
    assert summary.scored + summary.failed + summary.skipped_existing == summary.total
    assert summary.failed + summary.failed_existing == 5
    if fmt == "parquet":
        assert pq.read_table(resumed).equals(pq.read_table(full))
        assert not parts_dir(resumed).exists()
    else:
        assert resumed.read_bytes() == full.read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_resuming_a_finished_output_changes_nothing(
    predictor: Predictor, tmp_path: Path, fmt: str
) -> None:
    source = write_input(tmp_path / f"items.{fmt}", [good(n) for n in range(9)])
    target = tmp_path / f"scored.{fmt}"
    score_file(source, target, predictor, chunk_size=4, **COLUMNS)
    before = read_output(target)

    summary = score_file(source, target, predictor, chunk_size=4, resume=True, **COLUMNS)

    assert summary == ScoreSummary(total=9, scored=0, failed=0, skipped_existing=9)
    assert read_output(target) == before


def test_an_existing_output_needs_resume_or_overwrite(predictor: Predictor, tmp_path: Path) -> None:
    source = write_input(tmp_path / "items.csv", [good(n) for n in range(3)])
    target = tmp_path / "scored.csv"
    score_file(source, target, predictor, **COLUMNS)

    with pytest.raises(InvalidInputError) as caught:
        score_file(source, target, predictor, **COLUMNS)
    replaced = score_file(source, target, predictor, overwrite=True, **COLUMNS)

    assert str(caught.value) == (
        f"output: {target} exists; pass --resume to continue that run or --overwrite to replace it"
    )
    assert replaced.scored == 3 and len(read_output(target)) == 3


def test_resume_refuses_the_output_of_another_input(predictor: Predictor, tmp_path: Path) -> None:
    target = tmp_path / "scored.csv"
    score_file(
        write_input(tmp_path / "a.csv", [good(n) for n in range(3)]), target, predictor, **COLUMNS
    )
    other = write_input(tmp_path / "b.csv", [good(n) for n in range(5, 9)])

    with pytest.raises(InvalidInputError) as caught:
        score_file(other, target, predictor, resume=True, **COLUMNS)

    assert str(caught.value) == (
        f"output: {target}: row 0 has id 'case-0' there but 'case-5' in the input; it belongs "
        "to another input, so it cannot be resumed; choose another output path"
    )


def test_resume_leaves_a_file_it_did_not_write_alone(predictor: Predictor, tmp_path: Path) -> None:
    source = write_input(tmp_path / "items.csv", [good(n) for n in range(3)])
    target = tmp_path / "notes.csv"
    target.write_text("name,phone\nAda,555\n")

    with pytest.raises(InvalidInputError) as caught:
        score_file(source, target, predictor, resume=True, **COLUMNS)

    assert str(caught.value).startswith(
        f"output: {target}: the header is not `imr-outcome score` output"
    )
    assert target.read_text() == "name,phone\nAda,555\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_column": "text"}, "request_column: column 'text' is not in {source}"),
        (
            {"metadata_columns": {"reviewer": "age"}},
            "metadata_columns: unknown or post-filing field(s) ['reviewer']",
        ),
        ({"chunk_size": 0}, "chunk_size: expected at least 1, got 0"),
    ],
)
def test_bad_arguments_fail_before_any_output(
    predictor: Predictor, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    source = write_input(tmp_path / "items.csv", [good(0)])
    options: dict[str, Any] = {**COLUMNS, **kwargs}

    with pytest.raises(InvalidInputError) as caught:
        score_file(source, tmp_path / "scored.csv", predictor, **options)

    assert str(caught.value).startswith(message.format(source=source))
    assert not (tmp_path / "scored.csv").exists()


def test_an_unsupported_suffix_is_named(predictor: Predictor, tmp_path: Path) -> None:
    source = write_input(tmp_path / "items.csv", [good(0)])

    with pytest.raises(InvalidInputError) as caught:
        score_file(source, tmp_path / "scored.xlsx", predictor, **COLUMNS)

    assert str(caught.value) == (
        f"output: {tmp_path / 'scored.xlsx'}: unsupported suffix '.xlsx'; expected one of "
        "['.csv', '.jsonl', '.ndjson', '.parquet']"
    )


# --------------------------------------------------------------- a real SIGKILL, resumed

#: Runs the real CLI with each batch slowed down, so that a kill lands mid-run.
SLOW_CLI = """
import time
from imr_outcome.serve.predictor import Predictor
batch = Predictor.predict_batch
def slow(self, items, **kwargs):
    time.sleep(0.03)
    return batch(self, items, **kwargs)
Predictor.predict_batch = slow
from imr_outcome.cli import app
app(prog_name="imr-outcome")
"""


def _data_lines(path: Path) -> int:
    return max(path.read_bytes().count(b"\n") - 1, 0) if path.exists() else 0


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_output(
    store: TrainResult, tmp_path: Path
) -> None:
    entries = [good(n) for n in range(3000)]
    entries[1500:1500] = common_bad_rows()
    source = write_input(tmp_path / "items.csv", entries)
    full, killed = tmp_path / "full.csv", tmp_path / "killed.csv"
    arguments = [
        "score", str(source), "--model", MODEL_URI, "--chunk-size", "20",
        "--id-column", "case_id", "--request-column", "item", "--summary-column", "background",
        "--metadata-column", "patient_age=age", "--metadata-column", "patient_sex=sex",
    ]  # fmt: skip
    # the CLI's default text limit: the oversize row of common_bad_rows() fits it
    uninterrupted = Predictor.load(MODEL_URI)
    score_file(source, full, uninterrupted, metadata_columns=METADATA, chunk_size=20, **COLUMNS)

    log = (tmp_path / "stderr.txt").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *arguments, "--out", str(killed)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 180
    while process.poll() is None and _data_lines(killed) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.fail(f"the run ended (code {process.returncode}) before it could be killed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    written = _data_lines(killed)
    assert process.returncode == -signal.SIGKILL
    assert 0 < written < len(entries)

    result = runner.invoke(app, [*arguments, "--out", str(killed), "--resume"])

    assert result.exit_code == 1, result.output  # the bad rows failed
    assert f"{written} already in the output" in " ".join(result.output.split())
    assert killed.read_bytes() == full.read_bytes()
    out = read_output(killed)
    assert [r["row"] for r in out] == list(range(len(entries)))
    assert [r["id"] for r in out] == [e.id for e in entries]


# ------------------------------------------------------------------------ papercuts


def test_a_cp1252_csv_from_excel_scores_with_its_accents(
    predictor: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "excel.csv"
    lines = [
        "case_id,item,background",
        f"a,Physiothérapie 6 sessions,{SUMMARY}Café owner.",
        f"b,Physical therapy 6 sessions,{SUMMARY}Naïve follow-up.",
    ]
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    assert csv_encoding(source) == "cp1252"

    summary = score_file(source, tmp_path / "scored.jsonl", predictor, **COLUMNS)

    assert (summary.scored, summary.failed) == (2, 0)
    out = read_output(tmp_path / "scored.jsonl")
    expected = predictor.predict_batch(
        [
            PredictInput.of("Physiothérapie 6 sessions", f"{SUMMARY}Café owner."),
            PredictInput.of("Physical therapy 6 sessions", f"{SUMMARY}Naïve follow-up."),
        ]
    )
    assert [r["p_overturned"] for r in out] == pytest.approx([p.p_overturned for p in expected])


def test_a_utf8_file_with_one_damaged_row_stays_utf8(tmp_path: Path) -> None:
    source = tmp_path / "mixed.csv"
    source.write_bytes(b"id,request\n1,Physioth\xc3\xa9rapie\n2,Caf\xe9\n")

    assert csv_encoding(source) == "utf-8-sig"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_an_empty_input_is_refused_with_exit_2(
    store: TrainResult, tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"empty{suffix}"
    source.write_bytes(b"")

    result = runner.invoke(app, ["score", str(source), "--out", str(tmp_path / "out.csv")])

    assert result.exit_code == 2, result.output
    assert "is empty (0 bytes)" in " ".join(result.output.split())
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_columns_named_like_prefiling_fields_are_used_and_validated(
    predictor: Predictor, tmp_path: Path, fmt: str
) -> None:
    rows = [
        {"case_id": "a", "item": "Physical therapy", "background": SUMMARY, "patient_age": "44"},
        {"case_id": "b", "item": "Physical therapy", "background": SUMMARY, "patient_age": "old"},
        {"case_id": "c", "item": "Physical therapy", "background": SUMMARY, "patient_age": ""},
    ]
    source = tmp_path / f"items.{fmt}"
    if fmt == "csv":
        with source.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    score_file(source, tmp_path / "scored.jsonl", predictor, **COLUMNS)

    out = read_output(tmp_path / "scored.jsonl")
    (with_age,) = predictor.predict_batch(
        [PredictInput.of("Physical therapy", SUMMARY, {"patient_age": 44})]
    )
    (without,) = predictor.predict_batch([PredictInput.of("Physical therapy", SUMMARY)])
    assert out[0]["p_overturned"] == pytest.approx(with_age.p_overturned)
    assert out[1]["error"] == "metadata.patient_age: expected an integer 0-120, got 'old'"
    assert out[2]["p_overturned"] == pytest.approx(without.p_overturned)
    assert prefiling_columns(["patient_sex", "sex", "id"], {"patient_age": "age"}, ["id"]) == {
        "patient_age": "age",
        "patient_sex": "patient_sex",
    }


def test_text_a_model_cannot_read_makes_an_error_row(predictor: Predictor, tmp_path: Path) -> None:
    rows = [
        {"case_id": "a", "item": "12/3", "background": SUMMARY},
        {"case_id": "b", "item": "Physical therapy", "background": "?!"},
        {"case_id": "c", "item": "Physical therapy", "background": ""},
    ]
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    score_file(source, tmp_path / "scored.jsonl", predictor, **COLUMNS)

    errors = [r["error"] for r in read_output(tmp_path / "scored.jsonl")]
    assert errors[0] is not None and errors[0].startswith("request: has no letters")
    assert errors[1] is not None and errors[1].startswith("summary: has no letters")
    assert errors[2] is None

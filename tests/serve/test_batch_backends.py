"""Batch scoring gives the same rows on ONNX Runtime as on torch (issue 11)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor

from model_factory import write_untrained_transformer

SUMMARY = (
    "The injured worker is a 52-year-old warehouse employee with chronic low back pain "
    "radiating to the left leg after lifting boxes at work. Treatment to date included "
    "medications, six sessions of physical therapy and a home exercise program. "
)
ROWS = [
    ("a", "Physical therapy 6 sessions for the lumbar spine", SUMMARY),
    ("b", "MRI of the lumbar spine without contrast", SUMMARY * 3),  # several windows
    ("c", "Norco 10/325 mg #90", "12/03/2015 -- #90 ..."),  # no letters: an error row
    ("d", "Lumbar epidural steroid injection L4-L5", SUMMARY[:160]),
]


def _score(tiny_bert: Path, folder: Path, backend: str) -> tuple[str, list[dict[str, str]]]:
    model_dir = write_untrained_transformer(tiny_bert, folder / backend, backend=backend)
    predictor = Predictor.load(str(model_dir))
    source = folder / "pending.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "request", "summary"])
        writer.writerows(ROWS)
    output = folder / f"scored-{backend}.csv"
    score_file(source, output, predictor, explain=True, chunk_size=3)
    with output.open(encoding="utf-8") as handle:
        return predictor.model.backend, list(csv.DictReader(handle))


def test_onnx_batch_rows_match_torch_rows(tiny_bert: Path, tmp_path: Path) -> None:
    torch_backend, on_torch = _score(tiny_bert, tmp_path, "torch")
    onnx_backend, on_onnx = _score(tiny_bert, tmp_path, "onnx")

    assert (torch_backend, onnx_backend) == ("torch", "onnx-fp32")
    assert [row["id"] for row in on_torch] == [row["id"] for row in on_onnx] == ["a", "b", "c", "d"]
    for torch_row, onnx_row in zip(on_torch, on_onnx, strict=True):
        assert (torch_row["error"] != "") == (onnx_row["error"] != "")
        if torch_row["error"]:
            assert torch_row["id"] == "c" and "summary" in torch_row["error"]
            continue
        assert float(onnx_row["p_overturned"]) == pytest.approx(
            float(torch_row["p_overturned"]), abs=1e-5
        )
        assert onnx_row["label"] == torch_row["label"]
        # evidence needs gradients: both backends explain on the torch model
        assert json.loads(onnx_row["evidence"]) == json.loads(torch_row["evidence"])

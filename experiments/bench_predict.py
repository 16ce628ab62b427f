"""Benchmark: prediction latency, latency with evidence, batch throughput and peak memory.

Usage:
    python experiments/bench_predict.py [--model models:/imr-outcome@champion]
        [--dataset artifacts/dataset] [--threads 2] [--items 60] [--explain-items 20]
        [--batch-rows 400]

Items are real DWC items from the built dataset (read from ``../shared`` by ``make
dataset``; nothing is copied into the repo): the ``--items`` items whose request + summary
word count is closest to the median, so the figures are for median-length inputs.

- ``predict``: one :meth:`Predictor.predict` call per item, ``explain=False``; three
  warm-up calls first; p50/p95 over the items.
- ``predict`` with evidence: the same with ``explain=True`` (integrated gradients with the
  explainer's default quadrature points for transformers) on ``--explain-items`` items.
- batch: :func:`imr_outcome.serve.batch.score_file` on a CSV of ``--batch-rows`` rows
  (the items repeated, distinct ids), no evidence, default chunk size; items/s of the
  whole call, file reading and writing included.
- peak memory: the process's maximum resident set size (``ru_maxrss``) at the end.

Prints the settings used: torch threads, the model's inference precision, the allocator
(glibc malloc unless ``LD_PRELOAD`` names another).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imr_outcome.data.dataset import load_dataset
from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor


def _median_items(dataset: Path, n: int) -> list[dict[str, Any]]:
    """The ``n`` DWC items whose request + summary word count is closest to the median."""
    split = load_dataset(dataset)["dwc"]
    rows = [
        {
            "request": row["request"],
            "summary": row["summary"],
            "metadata": {k: row[k] for k in PREFILING_FIELDS if row[k] is not None},
        }
        for row in split
    ]
    lengths = np.array([len(f"{r['request']} {r['summary']}".split()) for r in rows])
    median = float(np.median(lengths))
    order = np.argsort(np.abs(lengths - median), kind="stable")[:n]
    print(
        f"items: {len(order)} of {len(rows)} DWC items nearest the median length "
        f"({median:.0f} words; these span {lengths[order].min()}-{lengths[order].max()})"
    )
    return [rows[i] for i in order]


def _percentiles(name: str, seconds: list[float]) -> None:
    ms = np.array(seconds) * 1000
    print(
        f"{name}: n={len(ms)} p50 {np.percentile(ms, 50):.1f} ms, "
        f"p95 {np.percentile(ms, 95):.1f} ms, mean {statistics.fmean(ms):.1f} ms"
    )


def _timed_predictions(
    predictor: Predictor, items: list[dict[str, Any]], explain: bool
) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        predictor.predict(
            item["request"], item["summary"], item["metadata"], explain=explain, source="dwc"
        )
        seconds.append(time.perf_counter() - started)
    return seconds


def _batch(predictor: Predictor, items: list[dict[str, Any]], rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "pending.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "request", "summary", *PREFILING_FIELDS])
            for index in range(rows):
                item = items[index % len(items)]
                meta = [item["metadata"].get(field, "") for field in PREFILING_FIELDS]
                writer.writerow([f"row-{index}", item["request"], item["summary"], *meta])
        started = time.perf_counter()
        summary = score_file(
            source,
            Path(folder) / "scored.csv",
            predictor,
            metadata_columns={field: field for field in PREFILING_FIELDS},
        )
        wall = time.perf_counter() - started
    print(
        f"batch score_file: {summary.scored} scored, {summary.failed} failed in {wall:.1f} s "
        f"-> {summary.scored / wall:.1f} items/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/imr-outcome@champion")
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--explain-items", type=int, default=20)
    parser.add_argument("--batch-rows", type=int, default=400)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    items = _median_items(args.dataset, args.items)
    started = time.perf_counter()
    predictor = Predictor.load(args.model)
    print(
        f"loaded {predictor.model_name} v{predictor.model_version} in "
        f"{time.perf_counter() - started:.1f} s"
    )
    classifier: Any = predictor.model.classifier
    precision = getattr(getattr(classifier, "training_config", None), "precision", "n/a")
    print(
        f"settings: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} threads {torch.get_num_threads()}, "
        f"inference precision {precision}, allocator "
        f"{os.environ.get('LD_PRELOAD') or 'glibc malloc'}, kind {predictor.model.info.kind}"
    )

    _timed_predictions(predictor, items[:3], explain=False)
    _percentiles("predict", _timed_predictions(predictor, items, explain=False))
    _timed_predictions(predictor, items[:1], explain=True)
    explained = _timed_predictions(predictor, items[: args.explain_items], explain=True)
    _percentiles("predict with evidence", explained)
    _batch(predictor, items, args.batch_rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()

"""Benchmark: rows/s of local `imr-outcome score` and Spark scoring against the model's own
bare scoring at batch 32, Spark start-up apart.

Usage:
    python experiments/bench_spark.py [--model models:/imr-outcome@champion] [--rows 2000]
        [--master local[2]] [--summary-words 300] [--no-spark] [--rounds 3]

``--model fresh:offline:minilm`` scores with the offline MiniLM and an untrained head
(``bench_predict.fresh_model``: a transformer's cost without training one; local only,
as it is not a registered MLflow model).

Rows are invented (no real text is read or written): a request from a small list and a
case summary of about ``--summary-words`` words of clinical-sounding sentences, distinct
ids, written to a CSV in a temporary folder.

- bare: the loaded model's own ``predict_proba`` (whatever backend it serves) over the
  same rows in batches of 32, model inputs built outside the timer: no reading, row checks,
  warnings, record or writing. The issue 18 target is batch >= 0.9x this.
- local: :func:`imr_outcome.serve.batch.score_file` (what ``imr-outcome score`` runs) with
  the model already loaded, CSV in, Parquet out; rows/s of the whole call.
- bare and local are timed in turns, ``--rounds`` times after one untimed pass of each
  (the first pass of a fresh process runs up to 2x slower), and the median of each is
  reported with the ratio, so drift of a shared machine hits both alike.
- Spark start-up: creating the ``--master`` session and running one trivial job (JVM,
  Python workers), measured alone.
- Spark: :func:`imr_outcome.serve.spark.score_table` on the same CSV into partitioned
  Parquet, twice: the first run includes resolving and shipping the model and each Python
  worker loading it; the second shows a warm session. Rows/s of each whole call.
- parity: the largest |P(Overturned)| difference between the local and Spark outputs,
  row for row, and whether the error columns agree.

Prints the CPU model, core count and SIMD flags (avx2 / avx512* / amx) of this machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from imr_outcome.data.model_input import build_model_input
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor

REQUESTS = (
    "Physical therapy 12 sessions for the lumbar spine",
    "Norco 10/325mg #90",
    "MRI of the cervical spine without contrast",
    "Acupuncture 6 visits",
    "TENS unit rental for 3 months",
    "Lumbar epidural steroid injection L4-L5",
)
SENTENCES = (
    "The injured worker reports chronic low back pain radiating to the left leg.",
    "Examination showed lumbar tenderness and reduced range of motion.",
    "Prior treatment included physical therapy, medications and a home exercise program.",
    "There was no objective functional improvement after prior sessions.",
    "The physician documented functional improvement and return to full duty.",
    "An MRI showed a disc protrusion at L4-L5 without nerve root compression.",
    "Current medications include ibuprofen and cyclobenzaprine.",
    "The patient has difficulty sitting for more than thirty minutes.",
)


def cpu_line() -> str:
    """CPU model, logical cores and the SIMD flags that matter for inference."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
            elif line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
    except OSError:
        pass
    simd = [f for f in sorted(flags) if f == "avx2" or f.startswith(("avx512", "amx"))]
    return f"{model}, {os.cpu_count()} logical cores, flags: {' '.join(simd) or 'none'}"


def write_rows(path: Path, n: int, summary_words: int) -> Path:
    """``n`` invented rows with distinct ids; summaries of about ``summary_words`` words."""
    rng = random.Random(0)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "request", "summary", "region"])
        for i in range(n):
            words: list[str] = []
            while len(words) < summary_words:
                words += rng.choice(SENTENCES).split()
            region = ("north", "south", "west")[i % 3]
            writer.writerow([f"bench-{i}", rng.choice(REQUESTS), " ".join(words), region])
    return path


#: Rows per model call for the bare figure (issue 18: "at batch 32").
BARE_BATCH = 32


def bare_rows_per_second(predictor: Predictor, source: Path) -> float:
    """Rows/s of ``predictor.model.predict_proba`` alone over the rows of ``source``, in
    batches of :data:`BARE_BATCH` (one warm-up batch first; inputs built before timing)."""
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    inputs = [build_model_input(row["request"], row["summary"]) for row in rows]
    batches = [inputs[i : i + BARE_BATCH] for i in range(0, len(inputs), BARE_BATCH)]
    predictor.model.predict_proba(batches[0])
    started = time.perf_counter()
    for batch in batches:
        predictor.model.predict_proba(batch)
    return len(inputs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/imr-outcome@champion")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--summary-words", type=int, default=300)
    parser.add_argument("--no-spark", action="store_true", help="local figures only")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of bare and local")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    print(cpu_line())
    print(f"python {platform.python_version()}, {args.rows} invented rows, model {args.model}")

    with tempfile.TemporaryDirectory(prefix="bench-spark-") as folder:
        work = Path(folder)
        source = write_rows(work / "rows.csv", args.rows, args.summary_words)

        model_uri = args.model
        if model_uri.startswith("fresh:"):
            from bench_predict import fresh_model

            model_uri = str(fresh_model(model_uri.removeprefix("fresh:"), work))
            args.no_spark = True
        predictor = Predictor.load(model_uri)
        bare_rates, local_rates = [], []
        for round_ in range(args.rounds + 1):
            bare = bare_rows_per_second(predictor, source)
            started = time.perf_counter()
            output = work / f"local-{round_}.parquet"
            local = score_file(source, output, predictor)
            if round_:  # round 0 warms both paths up
                bare_rates.append(bare)
                local_rates.append(local.total / (time.perf_counter() - started))
        bare, local_rate = statistics.median(bare_rates), statistics.median(local_rates)
        print(
            f"bare predict_proba, batch {BARE_BATCH}: {bare:.0f} rows/s, median of "
            f"{args.rounds} ({predictor.model.info.kind}, backend {predictor.model.backend})"
        )
        print(
            f"local score_file: {local_rate:.0f} rows/s, median of {args.rounds} "
            f"= {local_rate / bare:.2f}x bare"
        )

        if args.no_spark:
            return

        from pyspark.sql import SparkSession

        from imr_outcome.serve.spark import score_table

        started = time.perf_counter()
        spark = (
            SparkSession.builder.master(args.master)
            .appName("bench_spark")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        spark.range(8).repartition(2).count()  # start the executors and Python workers
        startup = time.perf_counter() - started
        print(f"Spark {spark.version} {args.master} start-up: {startup:.1f} s")

        for attempt in ("first", "second"):
            output = work / f"spark-{attempt}"
            started = time.perf_counter()
            summary = score_table(
                spark, str(source), str(output), args.model, partition_by=["region"]
            )
            seconds = time.perf_counter() - started
            print(
                f"Spark score_table ({attempt} run): {summary.total} rows in {seconds:.2f} s = "
                f"{summary.total / seconds:.0f} rows/s = {summary.total / seconds / bare:.2f}x bare"
            )

        expected = pq.read_table(work / "local-0.parquet").to_pylist()
        got = sorted(pq.read_table(output).to_pylist(), key=lambda r: r["row"])
        worst = max(
            abs(a["p_overturned"] - b["p_overturned"])
            for a, b in zip(got, expected, strict=True)
            if b["error"] is None
        )
        same_errors = all(a["error"] == b["error"] for a, b in zip(got, expected, strict=True))
        print(f"parity: max |dP(Overturned)| = {worst:.3g}, errors identical: {same_errors}")
        spark.stop()


if __name__ == "__main__":
    main()

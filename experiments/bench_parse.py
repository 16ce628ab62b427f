"""Benchmark: letters parsed per second on one core, PDF and text separately.

Usage: python experiments/bench_parse.py DIR_OR_FILE... [--repeat N]

Prints, per format, the number of letters, items, wall time and letters/s (the median of
N passes, after one warm-up pass). Runs single-threaded in this process (one core).
Then ``ingest`` (what ``data build`` runs) on all the sources with 1 worker and with
``--workers`` processes (default: every core), the letters/s of each and their ratio, and
the CPU flags.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from imr_outcome.data.ingest import discover, ingest
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.model.hardware import cpu_flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    files, _ = discover(args.sources)
    for suffix in (".pdf", ".txt"):
        chosen = [f for f in files if f.suffix.lower() == suffix]
        if not chosen:
            continue
        items = sum(len(parse_letter_file(f).items) for f in chosen)  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for path in chosen:
                parse_letter_file(path)
            times.append(time.perf_counter() - start)
        wall = statistics.median(times)
        print(
            f"{suffix[1:]}: {len(chosen)} letters, {items} items, median {wall:.2f} s "
            f"over {args.repeat} passes -> {len(chosen) / wall:.1f} letters/s (1 core)"
        )
    rates = {}
    for workers in (1, args.workers):
        start = time.perf_counter()
        report = ingest(args.sources, workers=workers)
        wall = time.perf_counter() - start
        rates[workers] = report.files_read / wall
        print(
            f"ingest, {workers} worker(s): {report.files_read} files in {wall:.2f} s -> "
            f"{rates[workers]:.1f} files/s"
        )
    print(
        f"ratio {args.workers} workers / 1: {rates[args.workers] / rates[1]:.2f} "
        f"(cpu: {cpu_flags().describe()}, {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

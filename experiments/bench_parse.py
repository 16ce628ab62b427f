"""Benchmark: letters parsed per second on one core, PDF and text separately.

Usage: python experiments/bench_parse.py DIR_OR_FILE... [--repeat N]

Prints, per format, the number of letters, items, wall time and letters/s (the median of
N passes, after one warm-up pass). Runs single-threaded in this process (one core).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from imr_outcome.data.ingest import discover
from imr_outcome.data.letters import parse_letter_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
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


if __name__ == "__main__":
    main()

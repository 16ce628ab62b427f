"""Benchmark: peak RSS and letters/s of ``imr-outcome data build`` on 1,000 and 10,000 letters.

Usage: python experiments/bench_build_memory.py PDF_DIR [--sizes 1000 10000] [--keep DIR]

The large inputs are copies of the real letters under new case numbers, made here in a
temporary folder and deleted afterwards (never committed): each real letter's text is read
once (:func:`imr_outcome.data.extract.read_letter_text`), and copy ``k`` replaces every
occurrence of its case number with ``CM99-<k>`` and is written as a ``.txt`` letter. Text
letters parse about 20x faster than PDFs, so the run stays short; what grows with the
input (rows, near-duplicate groups, the dataset) is the same.

Each size runs ``imr-outcome data build`` in its own process (every core, as a user runs
it) and reports that process tree's peak RSS (``ru_maxrss`` of the waited-for children:
the largest single process of the tree), the wall time and letters/s.
The issue 18 target: peak RSS on 10,000 letters within 1.3x that on 1,000.
Prints the CPU flags.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imr_outcome.data.extract import read_letter_text
from imr_outcome.data.letters import parse_letter
from imr_outcome.model.hardware import cpu_flags

#: Runs one command and prints the peak RSS (KiB) of it and its waited-for descendants.
PEAK_RSS = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def letter_texts(pdf_dir: Path) -> list[tuple[str, str]]:
    """``(case number, text)`` of every real letter in ``pdf_dir`` that has a case number."""
    texts = []
    for path in sorted(pdf_dir.glob("*.pdf")):
        text = read_letter_text(path)
        letter = parse_letter(text, str(path))
        if letter.case_number is not None:
            texts.append((letter.case_number.value, text))
    return texts


def write_copies(texts: list[tuple[str, str]], n: int, folder: Path) -> None:
    """``n`` text letters in ``folder``, cycling through ``texts``, case numbers renewed."""
    folder.mkdir(parents=True)
    for k in range(n):
        case_number, text = texts[k % len(texts)]
        new = f"CM99-{k:07d}"
        (folder / f"{new}.txt").write_text(text.replace(case_number, new), encoding="utf-8")


def build(letters: Path, out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of ``imr-outcome data build letters --out out``."""
    cli = Path(sys.executable).with_name("imr-outcome")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_RSS,
            str(cli),
            "data",
            "build",
            str(letters),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdf_dir", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--keep", type=Path, help="write the copies here and keep them")
    args = parser.parse_args()
    texts = letter_texts(args.pdf_dir)
    print(f"{len(texts)} real letters as templates; {os.cpu_count()} cores")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-build-"))
    peaks = {}
    try:
        for n in args.sizes:
            write_copies(texts, n, work / f"letters-{n}")
            wall, peak = build(work / f"letters-{n}", work / f"out-{n}")
            peaks[n] = peak
            print(f"{n} letters: {wall:.1f} s, {n / wall:.0f} letters/s, peak RSS {peak} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    small, large = min(peaks), max(peaks)
    print(
        f"peak RSS {large} / {small} letters: {peaks[large] / peaks[small]:.2f}x "
        f"(target <= 1.3x; cpu: {cpu_flags().describe()})"
    )
    print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()

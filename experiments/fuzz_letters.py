"""Mutation fuzzing of the letter reader and parser, at scale (not run in CI).

Mutates letter files -- the invented fixture letters as text, as generated PDFs (AES
encrypted like the real letters, and plain), the real DWC letters when
``../shared/data/dwc-imr-letters/pdf`` is present, and decompression-bomb PDFs -- with
the mutations of ``tests/letter_mutations.py`` (byte flips, zeroed chunks, truncation,
duplicated/shuffled lines, Unicode junk, parser-steering lines, long lines,
re-encoding), parses each with :func:`imr_outcome.data.letters.parse_letter_file` and
counts the outcomes: parsed, typed errors (by class and section), untyped exceptions (by
type, with a reproducer), cases over the time limit, and the slowest case (wall clock,
and CPU time of the parsing thread, which other load on the machine does not inflate).

Every case is reproducible from ``--seed`` and its index. Only counts, exception types and
file names are printed: never letter text.

Usage::

    .venv/bin/python experiments/fuzz_letters.py --cases 10000
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from letter_mutations import MUTATIONS, mutate  # noqa: E402

from imr_outcome.data.letters import parse_letter_file  # noqa: E402
from imr_outcome.errors import ImrOutcomeError, ParseError  # noqa: E402

from pdf_factory import BOMB_KINDS, bomb_pdf_bytes, make_letter_pdf  # noqa: E402

LETTER_FIXTURES = ROOT / "tests" / "fixtures" / "letters"
REAL_LETTERS = ROOT.parent / "shared" / "data" / "dwc-imr-letters" / "pdf"
#: Wall-clock seconds after which a case is stopped and counted as a hang.
HANG_S = 120.0


@dataclass(frozen=True)
class Base:
    """One unmutated letter file: its group (for the counts), label, suffix and bytes."""

    group: str
    label: str
    suffix: str
    data: bytes


class _Hang(BaseException):
    """Raised by the alarm when one case runs past :data:`HANG_S`."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang


def load_bases(work: Path, real: Path | None) -> dict[str, list[Base]]:
    """The unmutated files by group: fixture text, fixture PDFs, real PDFs, bombs."""
    bases: dict[str, list[Base]] = collections.defaultdict(list)
    for path in sorted(LETTER_FIXTURES.glob("*.txt")):
        bases["fixture-txt"].append(Base("fixture-txt", path.name, ".txt", path.read_bytes()))
        for encrypt in (True, False):
            pdf = make_letter_pdf(
                path.read_text(encoding="utf-8"),
                work / f"{path.stem}-{encrypt}.pdf",
                encrypt=encrypt,
            )
            label = f"{path.stem}.pdf ({'AES' if encrypt else 'plain'})"
            bases["fixture-pdf"].append(Base("fixture-pdf", label, ".pdf", pdf.read_bytes()))
    if real is not None and real.is_dir():
        for path in sorted(real.glob("*.pdf")):
            bases["real-pdf"].append(Base("real-pdf", path.name, ".pdf", path.read_bytes()))
    for kind in BOMB_KINDS:
        bases["bomb-pdf"].append(Base("bomb-pdf", kind, ".pdf", bomb_pdf_bytes(kind)))
    return bases


def run(cases: int, seed: int, real: Path | None, slow_s: float) -> int:
    """Run the fuzz cases and print the counts; returns the number of untyped exceptions."""
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)  # pypdf warns on every bad file
    signal.signal(signal.SIGALRM, _on_alarm)
    outcomes: collections.Counter[str] = collections.Counter()
    by_group: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    untyped: dict[str, list[str]] = collections.defaultdict(list)
    slow: list[str] = []
    max_s, max_case = 0.0, ""
    max_cpu: dict[str, float] = collections.defaultdict(float)
    max_wall: dict[str, float] = collections.defaultdict(float)
    with tempfile.TemporaryDirectory(prefix="fuzz-letters-") as folder:
        work = Path(folder)
        t0 = time.perf_counter()
        bases = load_bases(work, real)
        # Groups in turn, so the real letters do not crowd out the fixtures; bombs rarer.
        weights = {"fixture-txt": 4, "fixture-pdf": 3, "real-pdf": 3, "bomb-pdf": 0.3}
        groups = [g for g in weights if bases.get(g)]
        print(
            "bases: "
            + ", ".join(f"{g} {len(bases[g])}" for g in groups)
            + f" (built in {time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        start = time.perf_counter()
        for index in range(cases):
            rng = random.Random(seed * 1_000_003 + index)
            group = rng.choices(groups, weights=[weights[g] for g in groups])[0]
            base = rng.choice(bases[group])
            names = [n for n in MUTATIONS if n != "reencode" or base.suffix == ".txt"]
            chosen = [rng.choice(names) for _ in range(rng.randint(1, 3))]
            if group == "bomb-pdf" and rng.random() < 0.5:
                chosen = []  # the bomb as built, half of the time
            data = mutate(base.data, chosen, rng)
            path = work / f"case{base.suffix}"
            path.write_bytes(data)
            case = f"case {index} ({group} {base.label}; {'+'.join(chosen) or 'as built'})"
            signal.setitimer(signal.ITIMER_REAL, HANG_S)
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                parse_letter_file(path)
                outcome = "parsed"
            except ParseError as exc:
                outcome = f"ParseError[{exc.section}]"
            except ImrOutcomeError as exc:
                outcome = type(exc).__name__
            except _Hang:
                outcome = f"HANG over {HANG_S:.0f} s"
                untyped[outcome].append(case)
            except Exception as exc:  # the point of the fuzz: count what escapes
                outcome = f"UNTYPED {type(exc).__name__}"
                where = traceback.extract_tb(exc.__traceback__)[-1]
                detail = f"{Path(where.filename).name}:{where.lineno}"
                untyped[outcome].append(f"{case} at {detail}: {str(exc)[:120]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - t
            max_cpu[group] = max(max_cpu[group], time.thread_time() - cpu)
            max_wall[group] = max(max_wall[group], elapsed)
            outcomes[outcome] += 1
            by_group[group][outcome] += 1
            if elapsed > slow_s:
                slow.append(f"{case}: {elapsed:.1f} s -> {outcome}")
            if elapsed > max_s:
                max_s, max_case = elapsed, case
            if (index + 1) % 500 == 0:
                print(
                    f"  {index + 1} cases, {time.perf_counter() - start:.0f} s, "
                    f"untyped {sum(len(v) for v in untyped.values())}",
                    flush=True,
                )
    total_s = time.perf_counter() - start
    print(f"\n{cases} cases in {total_s:.0f} s (seed {seed})")
    for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {outcome}")
    print("by source:")
    for group, counter in by_group.items():
        print(f"  {group}: " + ", ".join(f"{k} {v}" for k, v in counter.most_common()))
        print(f"    max wall {max_wall[group]:.2f} s, max CPU {max_cpu[group]:.2f} s")
    n_untyped = sum(len(v) for v in untyped.values())
    print(f"untyped exceptions: {n_untyped}")
    for outcome, examples in untyped.items():
        for example in examples[:3]:
            print(f"  {outcome}: {example}")
    print(f"cases over {slow_s:g} s: {len(slow)}")
    for line in slow[:10]:
        print(f"  {line}")
    print(f"max time: {max_s:.2f} s ({max_case})")
    return n_untyped


def main() -> None:
    """Parse the flags and run; exit 1 when any exception escaped untyped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="number of mutated files")
    parser.add_argument("--seed", type=int, default=0, help="base seed; case i uses seed and i")
    parser.add_argument(
        "--real",
        type=Path,
        default=REAL_LETTERS,
        help="folder of real letter PDFs to mutate too (skipped when absent)",
    )
    parser.add_argument("--slow", type=float, default=5.0, help="report cases over this (s)")
    args = parser.parse_args()
    sys.exit(1 if run(args.cases, args.seed, args.real, args.slow) else 0)


if __name__ == "__main__":
    main()

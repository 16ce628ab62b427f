"""Fuzzing the letter reader and parser in CI: mutated letters parse or fail typed.

The invented fixture letters, as text and as generated PDFs (AES-encrypted like the
real letters, and plain), are mutated by ``tests/letter_mutations.py`` (byte flips,
zeroed chunks, truncation, duplicated/shuffled lines, Unicode junk with lone surrogates
and control characters, parser-steering lines, long lines, re-encoding), and
decompression-bomb PDFs are read as built. Every outcome must be a parsed letter whose
offsets hold, or an :class:`ImrOutcomeError`; every case must stay within a few seconds
of CPU. Hypothesis runs derandomized without an example database, so CI sees the same
examples on every run; ``experiments/fuzz_letters.py`` runs 10,000 cases outside CI.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from letter_mutations import MUTATIONS, mutate

from imr_outcome.data.extract import MAX_LETTER_CHARS, MAX_PDF_CPU_S
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.schema import Letter, Located
from imr_outcome.errors import ImrOutcomeError, ParseError

from conftest import LETTER_FIXTURES
from pdf_factory import BOMB_KINDS, bomb_pdf_bytes, make_letter_pdf

TEXT_LETTERS = sorted(LETTER_FIXTURES.glob("*.txt"))
#: Fixture letters also rendered as PDFs (a single item, several items, a partial one).
PDF_LETTERS = ("single_upheld.txt", "mixed_multi.txt", "partial_authorization.txt")
#: CPU seconds one case may take (reading + parsing); real letters take under 0.6 s.
CASE_CPU_S = 3.0
#: Wall seconds after which a case is stopped as a hang.
HANG_S = 60

_FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Hang(BaseException):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang


@pytest.fixture(scope="module")
def pdf_letters(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """``(label, bytes)`` of each of :data:`PDF_LETTERS`, encrypted and plain."""
    folder = tmp_path_factory.mktemp("fuzz-pdfs")
    out: list[tuple[str, bytes]] = []
    for name in PDF_LETTERS:
        text = (LETTER_FIXTURES / name).read_text(encoding="utf-8")
        for encrypt in (True, False):
            path = make_letter_pdf(
                text, folder / f"{Path(name).stem}-{encrypt}.pdf", encrypt=encrypt
            )
            out.append((f"{name} as PDF (encrypt={encrypt})", path.read_bytes()))
    return out


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder for the mutated files, and the hang alarm for the module's tests."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    yield tmp_path_factory.mktemp("fuzz-cases")
    signal.signal(signal.SIGALRM, previous)


def _assert_offsets_hold(letter: Letter) -> None:
    """Every located value is what its raw text says, whitespace collapsed."""
    text = letter.text
    assert len(text) <= MAX_LETTER_CHARS
    text.encode("utf-8")  # no lone surrogates: the text can be stored and sent
    fields: list[Located[str]] = [letter.summary]
    fields += [item.request for item in letter.items]
    for field in fields:
        assert 0 <= field.start <= field.end <= len(text)
        assert " ".join(text[field.start : field.end].split()) == field.value
    assert letter.items


def _read(path: Path, data: bytes) -> tuple[str, float]:
    """Write ``data`` to ``path`` and parse it; returns the outcome and the CPU seconds.

    Raises AssertionError when anything but a letter or an ImrOutcomeError comes out.
    """
    path.write_bytes(data)
    signal.alarm(HANG_S)
    start = time.thread_time()
    try:
        letter = parse_letter_file(path)
    except _Hang:
        pytest.fail(f"reading {len(data)} bytes ran over {HANG_S} s")
    except ImrOutcomeError as exc:
        outcome = type(exc).__name__
        if isinstance(exc, ParseError):
            outcome += f"[{exc.section}]"
    else:
        _assert_offsets_hold(letter)
        outcome = "parsed"
    finally:
        signal.alarm(0)
    return outcome, time.thread_time() - start


_MUTATION_NAMES = st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3)


@settings(_FUZZ, max_examples=150)
@given(
    index=st.integers(0, len(TEXT_LETTERS) - 1),
    names=_MUTATION_NAMES,
    rng=st.randoms(use_true_random=False),
)
def test_mutated_text_letters_parse_or_fail_typed(
    case_dir: Path, index: int, names: list[str], rng: random.Random
) -> None:
    data = mutate(TEXT_LETTERS[index].read_bytes(), names, rng)

    outcome, cpu_s = _read(case_dir / "case.txt", data)

    assert cpu_s < CASE_CPU_S, f"{outcome} after {cpu_s:.1f} s CPU"


@settings(_FUZZ, max_examples=60)
@given(
    index=st.integers(0, 2 * len(PDF_LETTERS) - 1),
    names=_MUTATION_NAMES.map(lambda names: [n for n in names if n != "reencode"] or ["truncate"]),
    rng=st.randoms(use_true_random=False),
)
def test_mutated_pdf_letters_parse_or_fail_typed(
    case_dir: Path,
    pdf_letters: list[tuple[str, bytes]],
    index: int,
    names: list[str],
    rng: random.Random,
) -> None:
    label, original = pdf_letters[index]
    data = mutate(original, names, rng)

    outcome, cpu_s = _read(case_dir / "case.pdf", data)

    assert cpu_s < CASE_CPU_S, f"{label}: {outcome} after {cpu_s:.1f} s CPU"


def test_the_fuzz_covers_parsed_and_failed_outcomes(
    case_dir: Path, pdf_letters: list[tuple[str, bytes]]
) -> None:
    """The mutations neither always break a letter nor always leave it intact."""
    outcomes = set()
    for seed in range(40):
        rng = random.Random(seed)
        original = pdf_letters[seed % len(pdf_letters)][1]
        outcomes.add(_read(case_dir / "case.pdf", mutate(original, ["zero_chunk"], rng))[0])
        text = TEXT_LETTERS[seed % len(TEXT_LETTERS)].read_bytes()
        outcomes.add(_read(case_dir / "case.txt", mutate(text, ["insert_junk"], rng))[0])

    assert {"parsed", "ParseError[pdf structure]", "ParseError[document]"} <= outcomes


#: What each bomb ends in: the limit that stops it, or (for the self-drawing form, which
#: pypdf cuts at the first repeat) the text parser finding no letter.
BOMB_OUTCOMES = {
    "flate": ("pdf structure", "over a reading limit"),
    "nested_flate": ("pdf structure", "over a reading limit"),
    "run_length": ("pdf structure", "over a reading limit"),
    "many_pages": ("pdf structure", "bytes of content"),
    "page_tree": ("pdf structure", "over a reading limit"),
    "xobject_loop": ("document", "not an IMR final determination letter"),
}


def test_every_bomb_kind_has_an_expected_outcome() -> None:
    assert set(BOMB_OUTCOMES) == set(BOMB_KINDS)


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_decompression_bombs_are_refused_fast(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pdf"
    path.write_bytes(bomb_pdf_bytes(kind, inflated_bytes=32 * 1024 * 1024))
    start = time.thread_time()

    with pytest.raises(ParseError) as excinfo:
        parse_letter_file(path)

    assert time.thread_time() - start < MAX_PDF_CPU_S
    section, reason = BOMB_OUTCOMES[kind]
    assert excinfo.value.section == section
    assert reason in excinfo.value.reason

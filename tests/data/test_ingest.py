from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from imr_outcome.data.ingest import ingest
from imr_outcome.errors import InvalidInputError

from conftest import LETTER_FIXTURES

GOOD = ["single_upheld.txt", "mixed_multi.txt", "partial_authorization.txt"]
BAD = {"not_a_letter.txt": "document", "truncated.txt": "decisions"}


@pytest.fixture
def letter_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "letters"
    (folder / "nested").mkdir(parents=True)
    for name in GOOD[:2]:
        shutil.copy(LETTER_FIXTURES / name, folder / name)
    shutil.copy(LETTER_FIXTURES / GOOD[2], folder / "nested" / GOOD[2])
    for name in BAD:
        shutil.copy(LETTER_FIXTURES / name, folder / name)
    (folder / "README.md").write_text("notes", encoding="utf-8")
    return folder


def test_every_file_is_parsed_failed_or_skipped(letter_dir: Path, tmp_path: Path) -> None:
    report = ingest([letter_dir])

    assert report.files_read == 5
    assert sorted(Path(letter.source).name for letter in report.letters) == sorted(GOOD)
    assert {Path(f.source).name: f.section for f in report.failures} == BAD
    assert report.skipped == [str(letter_dir / "README.md")]
    assert len(report.records) == sum(len(letter.items) for letter in report.letters)

    report.write(tmp_path / "report.json")
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["files_read"] == 5 and len(written["failures"]) == 2
    case_text = next(iter(report.letters)).summary.value[:60]
    assert case_text not in json.dumps(written)


def test_an_unexpected_error_in_one_file_does_not_stop_the_batch(
    letter_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imr_outcome.data.letters import parse_letter_file
    from imr_outcome.data.schema import Letter

    def flaky(path: Path) -> Letter:
        if path.name == "single_upheld.txt":
            raise RuntimeError("boom")
        return parse_letter_file(path)

    monkeypatch.setattr("imr_outcome.data.ingest.parse_letter_file", flaky)

    report = ingest([letter_dir])

    failure = next(f for f in report.failures if f.source.endswith("single_upheld.txt"))
    assert (failure.section, failure.reason) == ("file", "RuntimeError: boom")
    assert len(report.letters) == 2


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^sources: .*/nope does not exist$"):
        ingest([tmp_path / "nope"])


def test_damaged_pdfs_are_failure_rows_not_a_crash(letter_dir: Path) -> None:
    from pdf_factory import make_letter_pdf

    text = (LETTER_FIXTURES / "single_upheld.txt").read_text(encoding="utf-8")
    good = make_letter_pdf(text, letter_dir / "good.pdf").read_bytes()
    # Cut in half, and an encryption handler pypdf does not implement (NotImplementedError).
    (letter_dir / "cut.pdf").write_bytes(good[: len(good) // 2])
    (letter_dir / "handler.pdf").write_bytes(good.replace(b"/Standard", b"/Standarx", 1))

    report = ingest([letter_dir])

    failures = {Path(f.source).name: f for f in report.failures}
    assert {name: failures[name].section for name in ("cut.pdf", "handler.pdf")} == {
        "cut.pdf": "pdf structure",
        "handler.pdf": "pdf structure",
    }
    assert failures["handler.pdf"].reason.startswith("cannot read the PDF (NotImplementedError: ")
    assert "good.pdf" in {Path(letter.source).name for letter in report.letters}
    assert report.files_read == 8


def test_parallel_parsing_gives_the_rows_and_failures_of_one_core_in_file_order(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    names = [*GOOD, *BAD]
    for n in range(24):  # more than two chunks, so the letters really go to the workers
        name = names[n % len(names)]
        shutil.copy(LETTER_FIXTURES / name, folder / f"{n:02d}-{name}")

    serial = ingest([folder], workers=1)
    parallel = ingest([folder], workers=2)

    assert [r.id for r in parallel.records] == [r.id for r in serial.records]
    assert parallel.records == serial.records
    assert [f.source for f in parallel.failures] == [f.source for f in serial.failures]
    assert len(parallel.failures) == 9  # n % 5 in (3, 4) for n < 24
    assert [letter.source for letter in parallel.letters] == sorted(
        str(p) for p in folder.iterdir() if p.name.split("-", 1)[1] not in BAD
    )


def test_workers_must_be_positive(letter_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"workers.*at least 1, found 0"):
        ingest([letter_dir], workers=0)


def test_workers_fork_from_a_light_parent_and_spawn_once_torch_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from imr_outcome.data import ingest as ingest_module

    monkeypatch.setitem(sys.modules, "torch", sys)  # any module object stands in
    assert ingest_module._start_method() == "spawn"
    monkeypatch.delitem(sys.modules, "torch")
    assert ingest_module._start_method() == "fork"


def test_iter_ingest_reads_lazily_in_file_order_and_fills_the_report(letter_dir: Path) -> None:
    from imr_outcome.data.ingest import IngestReport, iter_ingest

    report = IngestReport()
    stream = iter_ingest([letter_dir], report, workers=1)

    assert report.files_read == 0  # nothing is read before the first source is asked for
    first = next(stream)
    assert report.files_read == 1 and first.letter is not None
    rest = list(stream)

    parsed = [first, *rest]
    assert [p.path.relative_to(letter_dir).as_posix() for p in parsed] == [
        "mixed_multi.txt",
        "nested/partial_authorization.txt",
        "single_upheld.txt",
    ]
    assert report.files_read == 5 and report.letters_parsed == 3
    assert report.records_read == sum(len(p.records) for p in parsed)
    assert report.to_json()["letters_parsed"] == 3
    assert report.to_json()["records"] == report.records_read
    assert {Path(f.source).name for f in report.failures} == set(BAD)


def test_parallel_parsing_hands_out_a_bounded_number_of_tasks_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from imr_outcome.data import ingest as ingest_module

    submitted: list[int] = []

    class CountingPool(ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            submitted.append(len(args[0]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "ProcessPoolExecutor", CountingPool)
    paths = [tmp_path / f"{n:03d}.txt" for n in range(200)]
    for path in paths:
        shutil.copy(LETTER_FIXTURES / GOOD[0], path)

    parsed = ingest_module._parsed_letters(paths, workers=2)
    next(parsed)
    ahead = 2 * ingest_module.CHUNKS_AHEAD_PER_WORKER
    assert len(submitted) == ahead + 1  # the first task's result taken, one more handed out
    rest = list(parsed)

    assert len(rest) == len(paths) - 1
    assert sum(submitted) == len(paths)
    assert len(submitted) == -(-len(paths) // ingest_module.PARSE_CHUNK)

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

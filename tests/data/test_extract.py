from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.errors import LimitReachedError, PdfReadError, PdfStreamError

from imr_outcome.data import extract
from imr_outcome.data.extract import (
    blank_page_furniture,
    read_letter_text,
    undo_double_spacing,
)
from imr_outcome.data.letters import parse_letter_file
from imr_outcome.errors import ParseError

from conftest import LETTER_FIXTURES
from pdf_factory import make_letter_pdf

LETTER = LETTER_FIXTURES / "single_upheld.txt"


def test_double_spacing_is_undone_keeping_real_blank_lines() -> None:
    original = "Line one \nline two\n \nAfter a blank line\n\nafter an empty line"
    doubled = "\n\n".join(original.split("\n"))

    assert undo_double_spacing(doubled) == original


def test_single_spaced_text_is_left_alone() -> None:
    text = "CLINICAL CASE SUMMARY\nThe injured worker\nis 40.\n\nNext"

    assert undo_double_spacing(text) == text


def test_page_furniture_is_blanked_without_moving_offsets() -> None:
    text = "end of page one\nPage 2 of 6\n 3 \nstart of page two"

    blanked = blank_page_furniture(text)

    assert len(blanked) == len(text)
    assert blanked.split("\n") == ["end of page one", " " * 11, " " * 3, "start of page two"]


def test_cp1252_text_export_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "letter.txt"
    path.write_bytes(b"the patient\x92s knee, 90\xb0 flexion")

    assert read_letter_text(path) == "the patient’s knee, 90° flexion"


def test_utf8_mojibake_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "letter.txt"
    path.write_text("the workerâ€™s back", encoding="utf-8")

    assert read_letter_text(path) == "the worker’s back"


def test_unsupported_suffix_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "letter.docx"
    path.write_bytes(b"PK")

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "file"
    assert (
        str(excinfo.value)
        == f"{path}: file: unsupported suffix '.docx'; expected one of .pdf, .txt"
    )


def test_truncated_pdf_is_a_pdf_structure_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pdf"
    path.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert "truncated" in excinfo.value.reason


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig", "utf-16-le", "utf-16-be"])
def test_utf16_and_utf32_text_letters_read_like_utf8(tmp_path: Path, encoding: str) -> None:
    text = LETTER.read_text(encoding="utf-8")
    path = tmp_path / "letter.txt"
    path.write_bytes(text.encode(encoding))

    assert read_letter_text(path) == read_letter_text(LETTER)
    assert parse_letter_file(path).items == parse_letter_file(LETTER).items


def test_lone_surrogates_and_control_characters_do_not_survive_reading(tmp_path: Path) -> None:
    path = tmp_path / "letter.txt"
    path.write_bytes(
        "\ufeffknee \ud800MRI\x00\x1b of the \udfffspine".encode("utf-16-le", "surrogatepass")
    )

    text = read_letter_text(path)

    assert text == "knee \ufffdMRI of the \ufffdspine"
    text.encode("utf-8")


def _pdf_bytes(tmp_path: Path, *, encrypt: bool) -> bytes:
    text = LETTER.read_text(encoding="utf-8")
    return make_letter_pdf(text, tmp_path / "letter.pdf", encrypt=encrypt).read_bytes()


# Real-shaped damage that makes pypdf raise NotImplementedError (found by the fuzz).
DAMAGE = {
    "unknown encryption handler": (True, b"/Filter /Standard", b"/Filter /Standarx"),
    "encryption version 0": (True, b"/V 4", b"/V 0"),
    "unknown stream filter": (False, b"/Filter /FlateDecode", b"/Filter /FlateDecodX"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_pypdf_does_not_implement_is_a_pdf_structure_error(
    tmp_path: Path, damage: str
) -> None:
    encrypt, old, new = DAMAGE[damage]
    path = tmp_path / "damaged.pdf"
    path.write_bytes(_pdf_bytes(tmp_path, encrypt=encrypt).replace(old, new, 1))

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert excinfo.value.reason.startswith("cannot read the PDF (NotImplementedError: ")
    assert excinfo.value.reason.endswith(
        "the file is damaged or truncated - download or export it again"
    )


@pytest.mark.parametrize(
    "error",
    [
        TypeError("'NullObject' object is not subscriptable"),
        AttributeError("'IndirectObject' object has no attribute 'get_data'"),
        AssertionError(),
        KeyError("/Root"),
        IndexError("list index out of range"),
        ValueError("invalid literal for int() with base 10: b'R'"),
        RecursionError("maximum recursion depth exceeded"),
        ZeroDivisionError("float division by zero"),
        zlib.error("Error -3 while decompressing data: invalid block type"),
        struct.error("unpack requires a buffer of 4 bytes"),
        PdfReadError("Invalid Elementary Object starting with b'\\x00'"),
        PdfStreamError("Stream has ended unexpectedly"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_error_pypdf_raises_on_damage_is_a_pdf_structure_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The error types pypdf 7 raised on byte-flipped and zeroed real letters."""
    path = tmp_path / "letter.pdf"
    path.write_bytes(_pdf_bytes(tmp_path, encrypt=True))

    def damaged(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(PdfReader, "__init__", damaged)

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert excinfo.value.reason.startswith(f"cannot read the PDF ({type(error).__name__}: ")
    assert excinfo.value.__cause__ is error


def test_a_limit_pypdf_reaches_is_named_as_a_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(_pdf_bytes(tmp_path, encrypt=False))
    # Below the size of the fixture's first page content stream (FlateDecode).
    monkeypatch.setitem(extract._PYPDF_LIMITS, "zlib_maximum_output_length", 100)

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert "decompression bomb" in excinfo.value.reason
    assert isinstance(excinfo.value.__cause__, LimitReachedError)


def test_a_pdf_locked_by_a_password_says_so(tmp_path: Path) -> None:
    path = make_letter_pdf(LETTER.read_text(), tmp_path / "locked.pdf", user_password="s3cret")

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert excinfo.value.reason.startswith(
        "the PDF is encrypted and does not open without a password"
    )


def test_a_pdf_over_the_page_limit_is_refused(tmp_path: Path) -> None:
    lines = [f"line {i}" for i in range(extract.MAX_PDF_PAGES + 1)]
    path = make_letter_pdf("\n".join(lines), tmp_path / "long.pdf", lines_per_page=1)

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert (excinfo.value.section, excinfo.value.reason.split(";")[0]) == (
        "pdf structure",
        f"{extract.MAX_PDF_PAGES + 1} pages is over the {extract.MAX_PDF_PAGES}-page limit "
        "for one letter (real IMR letters have about 3-10)",
    )


def test_a_pdf_over_the_cpu_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(_pdf_bytes(tmp_path, encrypt=True))
    monkeypatch.setattr(extract, "MAX_PDF_CPU_S", 0.0)

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "pdf structure"
    assert excinfo.value.reason.startswith("reading the PDF used more than 0 s of CPU")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(extract.MAX_LETTER_BYTES + 1)  # sparse: nothing is written

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "file"
    assert excinfo.value.reason.startswith(
        f"{extract.MAX_LETTER_BYTES + 1:,} bytes is over the {extract.MAX_LETTER_BYTES:,}-byte"
    )


def test_text_over_the_character_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("word " * (extract.MAX_LETTER_CHARS // 5 + 1), encoding="utf-8")

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.section == "document"
    assert f"over the {extract.MAX_LETTER_CHARS:,}-character limit" in excinfo.value.reason


def test_the_text_parser_still_names_its_own_section_for_a_pdf(tmp_path: Path) -> None:
    text = (LETTER_FIXTURES / "truncated.txt").read_text(encoding="utf-8")
    path = make_letter_pdf(text, tmp_path / "truncated.pdf")

    with pytest.raises(ParseError) as excinfo:
        parse_letter_file(path)

    assert excinfo.value.section == "decisions"


def test_pypdf_messages_stay_on_the_pypdf_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _pdf_bytes(tmp_path, encrypt=False)
    path = tmp_path / "damaged.pdf"
    # A wrong startxref offset: pypdf warns, rebuilds the cross-reference table and reads on.
    startxref = data.rindex(b"startxref\n") + len(b"startxref\n")
    path.write_bytes(data[:startxref] + b"1" + data[startxref:])

    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="pypdf"):
        read_letter_text(path)

    assert caplog.records, "expected pypdf to warn about the damage"
    assert {record.name.split(".")[0] for record in caplog.records} == {"pypdf"}


def test_a_pdf_error_does_not_quote_the_file_bytes(tmp_path: Path) -> None:
    data = _pdf_bytes(tmp_path, encrypt=False)
    path = tmp_path / "damaged.pdf"
    path.write_bytes(data.replace(b"xref", b"xref-broken", 1))

    with pytest.raises(ParseError) as excinfo:
        read_letter_text(path)

    assert excinfo.value.reason.startswith("cannot read the PDF (PdfReadError: Invalid ")
    assert "b'" not in excinfo.value.reason
    assert "endobj" not in excinfo.value.reason

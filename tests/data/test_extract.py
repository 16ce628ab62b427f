from __future__ import annotations

from pathlib import Path

import pytest

from imr_outcome.data.extract import blank_page_furniture, read_letter_text, undo_double_spacing
from imr_outcome.errors import ParseError


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

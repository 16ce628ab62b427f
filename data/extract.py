"""Text extraction from letter files: PDF (pypdf) and plain-text exports.

Both paths return one normalized string. The letter parser's character offsets index
into exactly this string, so normalization happens here and only here.
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path

import ftfy
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from imr_outcome.errors import ParseError

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_letter_text` accepts.
LETTER_SUFFIXES: frozenset[str] = frozenset({".pdf", ".txt"})

# Page furniture that some exports repeat at every page break ("Page 2 of 6", a bare
# page number, a form feed). Blanked in place so offsets do not move.
_PAGE_FURNITURE = re.compile(r"^[ \t]*(?:Page \d+ of \d+|-? ?\d{1,3} ?-?|\f)[ \t]*$", re.M)


def read_letter_text(path: Path) -> str:
    """Read a letter file (``.pdf`` or ``.txt``) into normalized text.

    Args:
        path: a PDF (possibly AES-encrypted with an empty password, as the DWC letters
            are) or a plain-text export (pdftotext style, any common encoding).

    Returns:
        The text with ``\\n`` line ends, mojibake repaired, pdftotext double spacing
        removed and page furniture blanked (replaced by spaces of the same length).

    Raises:
        ParseError: section ``"file"`` for a missing file or unknown suffix,
            ``"pdf structure"`` for a damaged or truncated PDF, ``"pdf text layer"`` for a
            PDF with no extractable text (a scan: run OCR first, e.g. ``ocrmypdf``).
    """
    if not path.is_file():
        raise ParseError(path, "file", "not found or not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = _read_pdf(path)
    elif suffix == ".txt":
        text = _read_text_export(path.read_bytes())
    else:
        raise ParseError(path, "file", f"unsupported suffix {suffix!r}; expected one of .pdf, .txt")
    return blank_page_furniture(text)


def _read_pdf(path: Path) -> str:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise ParseError(
            path, "pdf structure", f"cannot read the PDF ({exc}); the file may be truncated"
        ) from exc
    text = "\n".join(pages).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ParseError(
            path,
            "pdf text layer",
            f"no extractable text on {len(pages)} page(s); the PDF looks scanned - "
            "run OCR first (e.g. `ocrmypdf in.pdf out.pdf`)",
        )
    return text


def _read_text_export(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    text = ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return undo_double_spacing(text)


def undo_double_spacing(text: str) -> str:
    """Collapse pdftotext-style double spacing (an empty line after every line).

    A text is double-spaced when (almost) no two non-empty lines are adjacent: real
    exports have the odd slip, so up to 5% of non-empty lines may be followed directly
    by another. Then a run of ``k`` empty lines stood for ``(k - 1) // 2`` empty lines.

    Args:
        text: text with ``\\n`` line ends.

    Returns:
        The text unchanged when it is not double-spaced, else the collapsed text.
    """
    lines = text.split("\n")
    non_empty = sum(1 for line in lines if line)
    adjacent = sum(1 for a, b in itertools.pairwise(lines) if a and b)
    if non_empty < 3 or adjacent > 0.05 * non_empty:
        return text
    out: list[str] = []
    empties = 0
    for line in lines:
        if line:
            out.extend([""] * ((empties - 1) // 2 if out else empties // 2))
            out.append(line)
            empties = 0
        else:
            empties += 1
    out.extend([""] * (empties // 2))
    return "\n".join(out)


def blank_page_furniture(text: str) -> str:
    """Replace page-furniture lines ("Page 2 of 6", bare page numbers) by spaces.

    Args:
        text: normalized letter text.

    Returns:
        Text of the same length, so character offsets are unchanged.
    """
    return _PAGE_FURNITURE.sub(lambda m: " " * len(m.group(0)), text)

"""Build letter-shaped PDFs for tests, so tests never need the real (uncommittable) letters.

:func:`make_letter_pdf` lays out letter text one text line per PDF line in a core font and,
like the real DWC letters, encrypts the file with AES-128, an EMPTY user password and a
non-empty owner password. pypdf (with ``cryptography`` installed) opens such a file without a
password, and ``PdfReader(path).pages[i].extract_text()`` gives back the lines of page ``i``
in order, trailing spaces and whitespace-only lines included.

:func:`make_scanned_pdf` writes a PDF whose pages carry only a raster image and vector shapes,
with no text layer: what a scanned letter looks like before OCR.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import EncryptionMethod, XPos, YPos
from PIL import Image, ImageDraw

#: Owner password of the encrypted test PDFs (the user password is empty, as in real letters).
OWNER_PASSWORD = "imr-outcome-test-owner"

#: Text lines per PDF page before a page break is forced.
LINES_PER_PAGE = 50

_FONT = "Helvetica"
_FONT_SIZE_PT = 9.0
_LINE_HEIGHT_MM = 4.8
_MARGIN_LEFT_MM = 18.0
_MARGIN_TOP_MM = 16.0

# Typographic characters the core fonts cannot encode, and their closest ASCII spelling.
_ASCII_FALLBACK: dict[str, str] = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2013": "-",
    "\u2014": "--",
    "\u2022": "*",
    "\u2026": "...",
    "\u2122": "(TM)",
    "\u20ac": "EUR",
    "\t": " ",
    "\f": "",
}


def core_font_text(line: str) -> str:
    """Make a line encodable in the PDF core fonts (Latin-1).

    Args:
        line: one line of text.

    Returns:
        The line with common typographic characters (curly quotes, dashes, ellipsis, ...)
        replaced by ASCII look-alikes and any other character outside Latin-1 replaced by
        ``?``. Latin-1 characters such as the degree and registered signs are kept.
    """
    replaced = "".join(_ASCII_FALLBACK.get(ch, ch) for ch in line)
    return replaced.encode("latin-1", errors="replace").decode("latin-1")


def paginate(
    lines: Iterable[str],
    *,
    lines_per_page: int = LINES_PER_PAGE,
    break_on_empty_line: bool = True,
) -> list[list[str]]:
    """Split text lines into pages.

    Args:
        lines: the text lines, without line ends.
        lines_per_page: the most lines one page holds; must be at least 1.
        break_on_empty_line: when True, an empty line (``""``, what pypdf leaves where two
            pages' texts are joined) starts a new page instead of being drawn; a run of
            empty lines starts one page. Whitespace-only lines such as ``" "`` are always
            drawn as lines.

    Returns:
        The pages, each a non-empty list of lines; one empty page when there are no lines.

    Raises:
        ValueError: if ``lines_per_page`` is less than 1.
    """
    if lines_per_page < 1:
        raise ValueError(f"lines_per_page must be at least 1, got {lines_per_page}")
    pages: list[list[str]] = [[]]
    for line in lines:
        if line == "" and break_on_empty_line:
            if pages[-1]:
                pages.append([])
            continue
        if len(pages[-1]) >= lines_per_page:
            pages.append([])
        pages[-1].append(line)
    if len(pages) > 1 and not pages[-1]:
        pages.pop()
    return pages


def make_letter_pdf(
    text: str,
    path: Path,
    *,
    encrypt: bool = True,
    lines_per_page: int = LINES_PER_PAGE,
    break_on_empty_line: bool = True,
    user_password: str = "",
) -> Path:
    """Render letter text into a PDF, one text line per PDF line.

    Args:
        text: the letter text, e.g. a fixture under ``tests/fixtures/letters``. Line ends may
            be ``\\n``, ``\\r\\n`` or ``\\r``. Characters the core font cannot encode are
            replaced (see :func:`core_font_text`).
        path: where to write the PDF; parent folders must exist.
        encrypt: when True (the default), encrypt with AES-128, an empty user password and
            the non-empty :data:`OWNER_PASSWORD`, like the real DWC letters.
        lines_per_page: the most lines per page; longer texts continue on further pages.
        break_on_empty_line: when True, an empty line starts a new page (see
            :func:`paginate`); such lines do not come back from text extraction.
        user_password: the password needed to open the file (with ``encrypt``); empty,
            as in the real letters, unless a test needs a locked PDF.

    Returns:
        ``path``, for chaining.

    Raises:
        ValueError: if ``lines_per_page`` is less than 1.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    pages = paginate(lines, lines_per_page=lines_per_page, break_on_empty_line=break_on_empty_line)
    pdf = FPDF(orientation="portrait", unit="mm", format="letter")
    pdf.set_auto_page_break(auto=False)
    pdf.set_margins(left=_MARGIN_LEFT_MM, top=_MARGIN_TOP_MM, right=_MARGIN_LEFT_MM)
    pdf.set_creator("imr-outcome tests/pdf_factory.py")
    pdf.set_font(_FONT, size=_FONT_SIZE_PT)
    for page in pages:
        pdf.add_page()
        for line in page:
            pdf.cell(
                w=0,
                h=_LINE_HEIGHT_MM,
                text=core_font_text(line),
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
    return _save(pdf, path, encrypt, user_password)


def _scan_image(width_px: int = 850, height_px: int = 1100) -> Image.Image:
    """Draw a grey page image with dark bars where a scan would show lines of print."""
    image = Image.new("L", (width_px, height_px), color=236)
    draw = ImageDraw.Draw(image)
    margin = width_px // 10
    y = height_px // 12
    row = 0
    while y < height_px - height_px // 12:
        # Ragged right edge and a short last line every sixth row, like paragraphs.
        right = width_px - margin - (row * 37) % (width_px // 6)
        if row % 6 == 5:
            right = margin + (right - margin) // 3
        draw.rectangle((margin, y, right, y + 9), fill=40)
        y += 22 if row % 6 != 5 else 44
        row += 1
    draw.line((margin, height_px // 20, width_px - margin, height_px // 20), fill=90, width=3)
    return image


def make_scanned_pdf(path: Path, *, pages: int = 1, encrypt: bool = False) -> Path:
    """Write a PDF that looks like a scanned letter: an image and shapes, no text layer.

    ``PdfReader(path).pages[i].extract_text()`` returns an empty (or whitespace-only)
    string for every page of the result.

    Args:
        path: where to write the PDF; parent folders must exist.
        pages: how many pages; must be at least 1.
        encrypt: when True, encrypt like :func:`make_letter_pdf` does.

    Returns:
        ``path``, for chaining.

    Raises:
        ValueError: if ``pages`` is less than 1.
    """
    if pages < 1:
        raise ValueError(f"pages must be at least 1, got {pages}")
    pdf = FPDF(orientation="portrait", unit="mm", format="letter")
    pdf.set_auto_page_break(auto=False)
    pdf.set_creator("imr-outcome tests/pdf_factory.py")
    image = _scan_image()
    for _ in range(pages):
        pdf.add_page()
        pdf.image(image, x=0, y=0, w=pdf.w, h=pdf.h)
        # A vector stamp box and signature stroke on top of the raster page.
        pdf.set_draw_color(60, 60, 60)
        pdf.set_line_width(0.6)
        pdf.rect(x=pdf.w - 70, y=18, w=52, h=20)
        pdf.line(x1=30, y1=pdf.h - 40, x2=90, y2=pdf.h - 34)
        pdf.set_fill_color(200, 200, 200)
        pdf.ellipse(x=pdf.w - 62, y=22, w=12, h=12, style="DF")
    return _save(pdf, path, encrypt)


def _save(pdf: FPDF, path: Path, encrypt: bool, user_password: str = "") -> Path:
    """Write ``pdf`` to ``path``, AES-128 encrypted when ``encrypt``, with an empty user
    password (as the real DWC letters are) unless ``user_password`` is given."""
    if encrypt:
        pdf.set_encryption(
            owner_password=OWNER_PASSWORD,
            user_password=user_password,
            encryption_method=EncryptionMethod.AES_128,
        )
    pdf.output(str(path))
    return path


def assemble_pdf(objects: list[bytes]) -> bytes:
    """Assemble a PDF file from object bodies, with a correct cross-reference table.

    Args:
        objects: the body of object ``i + 1`` at index ``i`` (e.g. ``b"<< /Type /Catalog
            /Pages 2 0 R >>"`` or a dictionary followed by ``stream ... endstream``);
            object 1 must be the document catalog.

    Returns:
        The bytes of a PDF 1.7 file.
    """
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def stream_object(data: bytes, filters: list[str] | None = None, extra: bytes = b"") -> bytes:
    """The body of a stream object holding ``data`` (already encoded by ``filters``).

    Args:
        data: the encoded stream bytes.
        filters: filter names in decoding order, e.g. ``["FlateDecode"]``; None for none.
        extra: more dictionary entries, e.g. ``b"/Type /XObject /Subtype /Form"``.

    Returns:
        ``<< /Length n /Filter [...] extra >> stream ... endstream``.
    """
    names = b" ".join(b"/" + name.encode("ascii") for name in filters or [])
    filter_entry = b" /Filter [%s]" % names if filters else b""
    return (
        b"<< /Length %d%s %s >>\nstream\n" % (len(data), filter_entry, extra)
        + data
        + b"\nendstream"
    )


def _flate(data: bytes, times: int = 1) -> bytes:
    for _ in range(times):
        data = zlib.compress(data, 9)
    return data


#: The kinds of decompression bomb :func:`make_bomb_pdf` writes.
BOMB_KINDS: tuple[str, ...] = (
    "flate",
    "nested_flate",
    "run_length",
    "many_pages",
    "page_tree",
    "xobject_loop",
)


def bomb_pdf_bytes(kind: str, inflated_bytes: int = 64 * 1024 * 1024) -> bytes:
    """A small PDF whose page content decodes to a huge size, or loops.

    Every kind starts its content with a real text operator (``(IMR letter) Tj``), so a
    reader that does not stop early would extract text from it.

    Args:
        kind: one of :data:`BOMB_KINDS`:
            ``"flate"``: one page, one FlateDecode stream inflating to ``inflated_bytes``;
            ``"nested_flate"``: the same stream compressed twice (``[/FlateDecode
            /FlateDecode]``), so the file is a few hundred bytes;
            ``"run_length"``: one RunLengthDecode stream (128x expansion);
            ``"many_pages"``: 40 page references to one page whose content inflates to
            ``inflated_bytes // 40``;
            ``"page_tree"``: 5,000 page references to one small page;
            ``"xobject_loop"``: a form XObject that draws itself.
        inflated_bytes: the decoded size of the bomb's content, in bytes.

    Returns:
        The PDF bytes (unencrypted).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    head = b"BT /F1 9 Tf 72 720 Td (IMR letter) Tj ET\n"
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    resources = b"/Resources << /Font << /F1 5 0 R >> /XObject << /X0 6 0 R >> >>"
    xobject = stream_object(
        b"/X0 Do", extra=b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources
    )
    pages_count = 1
    if kind == "flate":
        content = stream_object(_flate(head + b" " * inflated_bytes), ["FlateDecode"])
    elif kind == "nested_flate":
        content = stream_object(
            _flate(head + b" " * inflated_bytes, times=2), ["FlateDecode", "FlateDecode"]
        )
    elif kind == "run_length":
        runs = (inflated_bytes + 127) // 128
        encoded = bytes([len(head) - 1]) + head + bytes([129, ord(" ")]) * runs + b"\x80"
        content = stream_object(encoded, ["RunLengthDecode"])
    elif kind == "many_pages":
        pages_count = 40
        content = stream_object(
            _flate(head + b" " * (inflated_bytes // pages_count)), ["FlateDecode"]
        )
    elif kind == "page_tree":
        pages_count = 5000
        content = stream_object(head)
    elif kind == "xobject_loop":
        content = stream_object(head + b"/X0 Do\n")
    else:
        raise ValueError(f"unknown bomb kind {kind!r}; expected one of {BOMB_KINDS}")
    kids = b" ".join([b"3 0 R"] * pages_count)
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages_count),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            + resources
            + b" >>",
            content,
            font,
            xobject,
        ]
    )

"""Text extraction from letter files: PDF (pypdf) and plain-text exports.

Both paths return one normalized string. The letter parser's character offsets index
into exactly this string, so normalization happens here and only here.

Letter files are untrusted input (uploads, downloads), so reading one is bounded: the
file size, the PDF page count, the decoded page content and the extracted text each have
a ceiling well above the largest real letter, and pypdf's own decompression limits are
set explicitly. Every failure of pypdf on a damaged file becomes a :class:`ParseError`
with section ``"pdf structure"``; pypdf's log messages stay on the ``pypdf`` logger.
"""

from __future__ import annotations

import codecs
import io
import itertools
import logging
import re
import struct
import time
import zlib
from pathlib import Path

import charset_normalizer
import ftfy
from pypdf import PasswordType, PdfReader, apply_configuration
from pypdf.errors import LimitReachedError, PyPdfError

from imr_outcome.errors import ParseError

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_letter_text` accepts.
LETTER_SUFFIXES: frozenset[str] = frozenset({".pdf", ".txt"})

# Ceilings on the work one letter may cause. The 194 real DWC letters (12/2016-02/2017)
# have at most 101 KB per file, 10 pages, 28 KB of decoded content per page, 123 KB per
# letter and 27,282 extracted characters; each ceiling leaves a wide margin above that.

#: Largest letter file read, in bytes (16 MiB).
MAX_LETTER_BYTES = 16 * 1024 * 1024
#: Most PDF pages read from one letter.
MAX_PDF_PAGES = 50
#: Most decoded page-content bytes (all pages together) one PDF letter may hold (1 MiB).
MAX_PDF_CONTENT_BYTES = 1024 * 1024
#: Most characters of letter text (after extraction, before parsing).
MAX_LETTER_CHARS = 500_000
#: Most CPU seconds (of the reading thread) pypdf may spend on one PDF; the slowest real
#: letter takes 0.52 s (parse included; AMD EPYC, avx2, no avx512). Junk that pypdf's
#: recovery parses token by token would otherwise take minutes for a few MB.
MAX_PDF_CPU_S = 1.5
#: Most bytes any single PDF stream may decode to, for every pypdf filter (4 MiB; pypdf's
#: default is 75 MB). A decompression bomb stops at this size with ``LimitReachedError``.
MAX_PDF_STREAM_BYTES = 4 * 1024 * 1024

# pypdf >= 6.18 reads its limits from a context-local Configuration
# (https://pypdf.readthedocs.io/en/stable/modules/configuration.html); these replace the
# deprecated module constants pypdf.filters.ZLIB_MAX_OUTPUT_LENGTH etc.
_PYPDF_LIMITS: dict[str, int] = {
    "maximum_declared_stream_length": MAX_LETTER_BYTES,
    "array_based_stream_maximum_output_length": MAX_PDF_STREAM_BYTES,
    "zlib_maximum_output_length": MAX_PDF_STREAM_BYTES,
    "zlib_maximum_recovery_input_length": MAX_PDF_STREAM_BYTES,
    "lzw_maximum_output_length": MAX_PDF_STREAM_BYTES,
    "run_length_maximum_output_length": MAX_PDF_STREAM_BYTES,
    "jbig2_maximum_output_length": MAX_PDF_STREAM_BYTES,
    "image_maximum_buffer_size": MAX_PDF_STREAM_BYTES,
    "page_tree_maximum_entries": 10 * MAX_PDF_PAGES,
    "xform_maximum_invocations_per_extraction": 100,
}

# What pypdf raises on damaged input: its own errors and, from deeper in its parser,
# plain Python errors (NotImplementedError for an unknown filter, TypeError/
# AttributeError/KeyError for an object of the wrong type, AssertionError, RecursionError
# for self-referencing objects, zlib/struct errors for corrupt streams). Caught around the
# pypdf calls only; the text parser's own errors are ParseErrors and pass through.
_PYPDF_FAILURES: tuple[type[Exception], ...] = (
    PyPdfError,
    ValueError,  # includes UnicodeDecodeError and binascii.Error
    LookupError,  # KeyError, IndexError
    TypeError,
    AttributeError,
    AssertionError,
    NotImplementedError,
    RecursionError,
    ArithmeticError,  # ZeroDivisionError, OverflowError
    EOFError,
    OSError,
    zlib.error,
    struct.error,
)

# Byte-order marks, longest first (the UTF-32-LE mark starts with the UTF-16-LE one).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FTFY_SEGMENT_CHARS = 10_000
_WIDE_ENCODINGS = ["utf_16_le", "utf_16_be", "utf_32_le", "utf_32_be"]
_SURROGATE = re.compile("[\ud800-\udfff]")
_QUOTED_BYTES = re.compile(r"\bb['\"]")

# Page furniture that some exports repeat at every page break ("Page 2 of 6", a bare
# page number, a form feed). Blanked in place so offsets do not move.
_PAGE_FURNITURE = re.compile(r"^[ \t]*(?:Page \d+ of \d+|-? ?\d{1,3} ?-?|\f)[ \t]*$", re.M)


class _OverBudget(BaseException):
    """Raised inside pypdf when a PDF has used up :data:`MAX_PDF_CPU_S`.

    A BaseException, not an Exception, so pypdf's ``except Exception`` recovery paths
    cannot swallow it.
    """


class _BudgetedStream(io.BytesIO):
    """The PDF's bytes as a stream that stops pypdf once the CPU budget is spent.

    pypdf reads every token it parses from this stream, so checking the reading thread's
    CPU time every 256 reads bounds the time of any parse of the file, however damaged.
    """

    def __init__(self, data: bytes, budget_s: float) -> None:
        super().__init__(data)
        self._deadline = time.thread_time() + budget_s
        self._reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self._reads += 1
        if self._reads % 256 == 0:
            self.check()
        return super().read(size)

    def check(self) -> None:
        """Raise :class:`_OverBudget` when the budget is spent."""
        if time.thread_time() > self._deadline:
            raise _OverBudget


def read_letter_text(path: Path) -> str:
    """Read a letter file (``.pdf`` or ``.txt``) into normalized text.

    Args:
        path: a PDF (possibly AES-encrypted with an empty password, as the DWC letters
            are) or a plain-text export (pdftotext style; UTF-8, UTF-16/32 with or without
            a byte-order mark, or cp1252).

    Returns:
        The text with ``\\n`` line ends, mojibake repaired, lone UTF-16 surrogates
        replaced by U+FFFD, pdftotext double spacing removed and page furniture blanked
        (replaced by spaces of the same length). At most :data:`MAX_LETTER_CHARS` long.

    Raises:
        ParseError: section ``"file"`` for a missing file, an unknown suffix or a file
            over :data:`MAX_LETTER_BYTES`; ``"pdf structure"`` for a PDF pypdf cannot read
            (damaged, truncated, password-protected, a decompression bomb, over
            :data:`MAX_PDF_PAGES` pages or :data:`MAX_PDF_CONTENT_BYTES` of content, or
            over :data:`MAX_PDF_CPU_S` of CPU time);
            ``"pdf text layer"`` for a PDF with no extractable text (a scan: run OCR first,
            e.g. ``ocrmypdf``); ``"document"`` for text over :data:`MAX_LETTER_CHARS`.
    """
    if not path.is_file():
        raise ParseError(path, "file", "not found or not a regular file")
    suffix = path.suffix.lower()
    if suffix not in LETTER_SUFFIXES:
        raise ParseError(path, "file", f"unsupported suffix {suffix!r}; expected one of .pdf, .txt")
    size = path.stat().st_size
    if size > MAX_LETTER_BYTES:
        raise ParseError(
            path,
            "file",
            f"{size:,} bytes is over the {MAX_LETTER_BYTES:,}-byte limit for one letter "
            "(real IMR letters are under 200 KB); check that this is a single letter",
        )
    data = path.read_bytes()
    text = _read_pdf(data, path) if suffix == ".pdf" else _read_text_export(data, path)
    return blank_page_furniture(_SURROGATE.sub("\ufffd", _within_length(text, path)))


def _within_length(text: str, path: Path) -> str:
    """``text``, or ParseError (section ``"document"``) when over :data:`MAX_LETTER_CHARS`."""
    if len(text) > MAX_LETTER_CHARS:
        raise ParseError(
            path,
            "document",
            f"{len(text):,} characters of text is over the {MAX_LETTER_CHARS:,}-character "
            "limit for one letter (real IMR letters have under 30,000); check that this "
            "is a single letter",
        )
    return text


def _read_pdf(data: bytes, path: Path) -> str:
    """Extract the text of every page, within the limits above; see :func:`read_letter_text`."""
    try:
        with apply_configuration(None, **_PYPDF_LIMITS):
            pages = _pdf_page_texts(data, path)
    except _OverBudget:
        raise ParseError(
            path,
            "pdf structure",
            f"reading the PDF used more than {MAX_PDF_CPU_S:g} s of CPU (real letters take "
            "under 1 s); the file is damaged or is not a text letter",
        ) from None
    except LimitReachedError as exc:
        raise ParseError(
            path,
            "pdf structure",
            f"the PDF is over a reading limit ({exc}); it is not a single letter, or it "
            "is built to exhaust memory (a decompression bomb)",
        ) from exc
    except _PYPDF_FAILURES as exc:
        # The message without the file bytes pypdf quotes (b'...'): they may be letter text.
        detail = " ".join(_QUOTED_BYTES.split(str(exc))[0].split())[:160]
        raise ParseError(
            path,
            "pdf structure",
            f"cannot read the PDF ({type(exc).__name__}: {detail}); the file is damaged or "
            "truncated - download or export it again",
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


def _pdf_page_texts(data: bytes, path: Path) -> list[str]:
    """The text of each page; raises what pypdf raises, or ParseError for a limit."""
    stream = _BudgetedStream(data, MAX_PDF_CPU_S)
    reader = PdfReader(stream)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise ParseError(
            path,
            "pdf structure",
            "the PDF is encrypted and does not open without a password; if it has one, "
            "save an unprotected copy, otherwise the file is damaged - download it again",
        )
    n_pages = len(reader.pages)
    if n_pages > MAX_PDF_PAGES:
        raise ParseError(
            path,
            "pdf structure",
            f"{n_pages} pages is over the {MAX_PDF_PAGES}-page limit for one letter (real "
            "IMR letters have about 3-10); check that this is a single letter",
        )
    pages: list[str] = []
    content_bytes = 0
    chars = 0
    for page in reader.pages:
        stream.check()
        contents = page.get_contents()
        content_bytes += len(contents.get_data()) if contents is not None else 0
        if content_bytes > MAX_PDF_CONTENT_BYTES:
            raise ParseError(
                path,
                "pdf structure",
                f"the pages hold over {MAX_PDF_CONTENT_BYTES:,} bytes of content (real IMR "
                "letters hold under 200 KB); check that this is a single text letter",
            )
        pages.append(page.extract_text() or "")
        chars += len(pages[-1])
        if chars > MAX_LETTER_CHARS:
            break  # read_letter_text refuses the text with the character count
    return pages


def _read_text_export(raw: bytes, path: Path) -> str:
    # Refuse an over-long text before ftfy, whose time grows with the length.
    text = _within_length(_decode(raw), path)
    # ftfy fixes a text in segments (lines, cut at max_decode_length). Letter lines are
    # under 200 characters; a 10,000-character cap keeps a junk line of 400,000 from
    # costing ~1 s of CPU (its default cap is 1,000,000).
    text = ftfy.fix_text(
        text, normalization="NFC", uncurl_quotes=False, max_decode_length=_FTFY_SEGMENT_CHARS
    )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return undo_double_spacing(text)


def _decode(raw: bytes) -> str:
    """Decode a text export: a byte-order mark wins; bytes with NULs are tried as
    UTF-16/32 (detected by charset-normalizer); then UTF-8, else cp1252. Undecodable
    bytes become U+FFFD; ftfy then repairs mojibake and drops control characters."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw.decode(encoding, errors="replace")
    wide = _wide_encoding(raw)
    if wide is not None:
        return raw.decode(wide, errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return raw.decode("cp1252", errors="replace")


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


def _wide_encoding(raw: bytes) -> str | None:
    """UTF-16/32 (as charset-normalizer detects it) for bytes with NULs, else None.

    Text in a byte encoding never holds NUL bytes; UTF-16/32 text is full of them. An
    English letter decodes to mostly ASCII; binary data that merely decodes (``b"abc\\x00
    \\x01\\x02"`` is three CJK/Latin characters in UTF-16) does not.
    """
    if b"\x00" not in raw:
        return None
    guess = charset_normalizer.from_bytes(raw, cp_isolation=_WIDE_ENCODINGS).best()
    if guess is None or guess.encoding is None:
        return None
    text = raw.decode(guess.encoding, errors="replace")
    return guess.encoding if sum(ch.isascii() for ch in text) >= 0.5 * len(text) else None

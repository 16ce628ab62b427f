"""Letter uploads: bytes of a PDF or TXT letter -> a parsed :class:`Letter`.

The bytes go through the same reader and parser as ``imr-outcome predict --letter``
(:func:`imr_outcome.data.letters.parse_letter_file`), from a private temporary file named
by this module (never by the client's file name). Only each item's request, the case
summary and the patient's age/sex become model inputs (:func:`letter_inputs`); the
decisions and rationales of the upload never do.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path, PurePosixPath

from imr_outcome.data.letters import parse_letter_file
from imr_outcome.data.model_input import LetterMetadata, prefiling_metadata
from imr_outcome.data.schema import Letter
from imr_outcome.errors import ImrOutcomeError, InvalidInputError, ParseError

logger = logging.getLogger(__name__)

_PDF_MAGIC = b"%PDF-"
_PDF_TYPES = {"application/pdf", "application/x-pdf"}


class UnsupportedUpload(ImrOutcomeError):
    """An upload that is not a PDF or plain-text file.

    Args:
        field: the form field (``"file"``).
        reason: what was found and which file types are accepted.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _kind(data: bytes, filename: str, content_type: str) -> str:
    """``".pdf"`` or ``".txt"`` for the upload, from its bytes, name and declared type."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if data.startswith(_PDF_MAGIC):
        return ".pdf"
    if suffix == ".pdf" or content_type in _PDF_TYPES:
        raise UnsupportedUpload(
            "file", "declared a PDF but does not start with %PDF-; upload the original PDF"
        )
    if suffix not in ("", ".txt") and not content_type.startswith("text/"):
        raise UnsupportedUpload(
            "file",
            f"unsupported file type {suffix!r} ({content_type or 'no content type'}); "
            "upload the letter as .pdf or .txt",
        )
    if b"\x00" in data[:4096] and not _utf16_or_32(data):
        raise UnsupportedUpload(
            "file", "binary data, not text; upload the letter as .pdf or as plain .txt"
        )
    return ".txt"


#: Byte order marks of the UTF-16/32 encodings (UTF-32 first: its LE mark starts like
#: UTF-16's).
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def _utf16_or_32(data: bytes) -> bool:
    """Whether text bytes with NULs are UTF-16/32 (a byte order mark, or UTF-16 without
    one: every other byte of the first 4 KiB NUL, as for Latin text), not binary data.

    Windows tools ("Unicode" in Notepad, PowerShell's ``Out-File``) write UTF-16 LE with
    a BOM; the bytes then go to the same reader as ``predict --letter``, which decodes them.
    """
    head = data[:4096]
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            try:
                head[: len(head) - len(head) % 4].decode(encoding)
            except UnicodeDecodeError:
                return False
            return True
    even, odd = head[0::2], head[1::2]
    if len(head) < 4:
        return False
    return even.count(0) == len(even) or odd.count(0) == len(odd)


def parse_upload(data: bytes, filename: str, content_type: str) -> Letter:
    """Parse an uploaded letter.

    Args:
        data: the file's bytes (a PDF, or text in UTF-8 or another common encoding).
        filename: the client's file name (used in messages only; may be ``""``).
        content_type: the declared media type (may be ``""``).

    Returns:
        The parsed letter; its ``source`` is ``filename``.

    Raises:
        InvalidInputError: an empty file (field ``file``).
        UnsupportedUpload: not a PDF and not text (field ``file``).
        ParseError: not an IMR letter, or a damaged/scanned PDF; ``source`` is
            ``filename``, ``section`` says which part failed.
    """
    if not data:
        raise InvalidInputError("file", "is empty; upload a .pdf or .txt IMR letter")
    suffix = _kind(data, filename, content_type.split(";")[0].strip().lower())
    label = filename or f"upload{suffix}"
    with tempfile.TemporaryDirectory(prefix="imr-upload-") as folder:
        path = Path(folder) / f"letter{suffix}"
        path.write_bytes(data)
        try:
            letter = parse_letter_file(path)
        except ParseError as exc:
            raise ParseError(label, exc.section, exc.reason) from None
        except (ImrOutcomeError, MemoryError, RecursionError):
            raise
        except Exception as exc:
            if suffix != ".pdf":
                raise
            # a backstop for damaged PDFs: the reader should raise ParseError itself
            logger.warning("pdf reader raised %s on an upload", type(exc).__name__)
            raise ParseError(
                label,
                "pdf structure",
                f"cannot read the PDF ({type(exc).__name__}); the file is damaged or uses "
                "features the reader does not support - upload the original letter or a .txt",
            ) from None
    return dataclasses.replace(letter, source=label)


def letter_metadata(letter: Letter) -> LetterMetadata:
    """The letter's pre-filing metadata: the patient's age and sex stated in the summary
    (:func:`~imr_outcome.data.model_input.prefiling_metadata`, as ``predict --letter``)."""
    return prefiling_metadata(letter)

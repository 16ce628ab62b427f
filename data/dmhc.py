"""Load the California DMHC "Independent Medical Review (IMR) Determinations, Trend" table.

Source: California Department of Managed Health Care (DMHC), published on the CHHS Open
Data Portal (data.chhs.ca.gov) as dataset ``independent-medical-review-imr-determinations-trend``
("DMHC IMR Data, 2001 - Current"). One row is one IMR case with its determination.

Two schemas are read, told apart by the header line:

- ``"2016-structured"``: the 2016 snapshot, ``;``-separated, unquoted, columns
  ``Reference ID;Report Year;...;Patient Gender`` and no ``Findings`` narrative, so every
  record's ``summary`` is ``""``.
- ``"portal"``: the current portal CSV, ``,``-separated and quoted, columns ``ReferenceID``,
  ``ReportYear``, ..., ``Findings``; encoded Windows-1252, with HTML entities and mojibake.

Only the pre-decision background of ``Findings`` (the "Nature of Statutory Criteria/Case
Summary:" paragraph) becomes ``summary``; the reviewer's findings and result are outcome
text and are cut off. A portal row whose background cannot be isolated safely is excluded
and reported in :attr:`DmhcLoadResult.excluded`, never guessed.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import ftfy
import ftfy.bad_codecs  # registers the "sloppy-windows-1252" codec
import ftfy.fixes
import pandas as pd

from imr_outcome.data.schema import LABELS, ItemRecord
from imr_outcome.errors import InvalidInputError, ParseError

logger = logging.getLogger(__name__)

DmhcSchema = Literal["2016-structured", "portal"]

#: File column -> internal name, per schema, in file order.
_COLUMNS: Final[dict[DmhcSchema, dict[str, str]]] = {
    "2016-structured": {
        "Reference ID": "reference_id",
        "Report Year": "report_year",
        "Diagnosis Category": "diagnosis_category",
        "Diagnosis Sub Category": "diagnosis_subcategory",
        "Treatment Category": "treatment_category",
        "Treatment Sub Category": "treatment_subcategory",
        "Determination": "determination",
        "Type": "type",
        "Age Range": "age_range",
        "Patient Gender": "patient_gender",
    },
    "portal": {
        "ReferenceID": "reference_id",
        "ReportYear": "report_year",
        "DiagnosisCategory": "diagnosis_category",
        "DiagnosisSubCategory": "diagnosis_subcategory",
        "TreatmentCategory": "treatment_category",
        "TreatmentSubCategory": "treatment_subcategory",
        "Determination": "determination",
        "Type": "type",
        "AgeRange": "age_range",
        "PatientGender": "patient_gender",
        "IMRType": "imr_type_detail",
        "DaysToReview": "days_to_review",
        "DaysToAdopt": "days_to_adopt",
        "Findings": "findings",
    },
}
_SEPARATORS: Final[dict[DmhcSchema, str]] = {"2016-structured": ";", "portal": ","}

#: Determination text (case-folded) -> label id; ids come from :data:`LABELS`.
_LABEL_IDS: Final[dict[str, int]] = {
    "upheld decision of health plan": LABELS.index("Upheld"),
    "overturned decision of health plan": LABELS.index("Overturned"),
    "upheld": LABELS.index("Upheld"),
    "overturned": LABELS.index("Overturned"),
}
_ACCEPTED_DETERMINATIONS: Final[str] = (
    "'Upheld Decision of Health Plan', 'Overturned Decision of Health Plan', 'Upheld', 'Overturned'"
)
#: Internal columns that feed :class:`ItemRecord` fields.
_RECORD_COLUMNS: Final[tuple[str, ...]] = (
    "reference_id",
    "diagnosis_category",
    "diagnosis_subcategory",
    "treatment_category",
    "treatment_subcategory",
    "type",
    "age_range",
    "patient_gender",
)
#: A UTF-8 lead byte then a continuation byte (0x80-0xBF), read as Windows-1252 or Latin-1.
_CONTINUATION_BYTES: Final = bytes(range(0x80, 0xC0))
_MOJIBAKE_HINT_RE: Final = re.compile(
    "[\u00c2-\u00f4]["
    + re.escape(
        _CONTINUATION_BYTES.decode("sloppy-windows-1252") + _CONTINUATION_BYTES.decode("latin-1")
    )
    + "]"
)
#: A run of non-blank characters holding at least one non-ASCII character.
_NON_ASCII_TOKEN_RE: Final = re.compile(r"[^ \t\r\n]*[^\x00-\x7f][^ \t\r\n]*")
_SEXES: Final[frozenset[str]] = frozenset({"female", "male"})

#: Start of the pre-decision background inside ``Findings``.
_START_RE: Final = re.compile(r"nature\s+of\s+statutory\s+criteria\s*/\s*case\s+summary\s*:", re.I)
#: Phrases that open the reviewer's findings or result; the background ends at the first.
END_MARKERS: Final[tuple[str, ...]] = (
    "Findings:",
    "The physician reviewer found",
    "The reviewer found",
    "Final Result",
    "The reviewer determined",
    "reviewers determined",
    "Credentials/Qualifications",
)
_END_RE: Final = re.compile(
    r"\b(?:" + "|".join(r"\s+".join(map(re.escape, m.split())) for m in END_MARKERS) + ")",
    re.I,
)
#: Words that always state an outcome.
_OUTCOME_RE: Final = re.compile(r"\b(?:overturn(?:s|ed|ing)?|upheld|uphold(?:s|ing)?)\b", re.I)
#: Phrases that state an outcome unless the sentence attributes them to a party.
_SOFT_OUTCOME_RE: Final = re.compile(r"\b(?:should\s+(?:not\s+)?be|medically\s+necessary)\b", re.I)
_ATTRIBUTION_RE: Final = re.compile(
    r"\b(?:(?:health|the)\s+plan(?:'s|s)?|denied|denies|deny|denial|believes?|contends?"
    r"|asserts?|argues?|states?|stated|stating|maintains?|indicated|indicates|according"
    r"|recommended|recommends)\b",
    re.I,
)
_SENTENCE_SPLIT_RE: Final = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ExcludedRow:
    """A portal row left out of the records because its background could not be isolated.

    Attributes:
        reference_id: the row's DMHC reference id, e.g. ``"MN16-22639"``.
        reason: why no background was isolated, e.g. ``"no end marker ..."``.
    """

    reference_id: str
    reason: str


@dataclass(frozen=True)
class DmhcLoadResult:
    """The rows of one DMHC export file.

    Attributes:
        records: one :class:`ItemRecord` per kept row, in file order.
        excluded: the rows left out, in file order.
        schema: ``"2016-structured"`` or ``"portal"``, detected from the header.
    """

    records: list[ItemRecord]
    excluded: list[ExcludedRow]
    schema: DmhcSchema


def _isolate_background(findings: str) -> tuple[str | None, str]:
    """Return ``(background, "")``, or ``(None, reason)`` when none can be isolated."""
    if not findings.strip():
        return None, "Findings is empty"
    start = _START_RE.search(findings)
    if start is None:
        return None, "no 'Nature of Statutory Criteria/Case Summary:' marker in Findings"
    end = _END_RE.search(findings, start.end())
    if end is None:
        return None, (
            "no end marker (e.g. 'Findings:' or 'Final Result') after the case summary, "
            "so the decision may be inside it"
        )
    background = _fix_text(findings[start.end() : end.start()])
    if not background:
        return None, "the case summary is empty"
    hit = _OUTCOME_RE.search(background)  # conclusive in any sentence
    if hit is None and _SOFT_OUTCOME_RE.search(background):
        for sentence in _SENTENCE_SPLIT_RE.split(background):
            hit = _SOFT_OUTCOME_RE.search(sentence)
            if hit is not None and not _ATTRIBUTION_RE.search(sentence):
                break
            hit = None
    if hit is not None:
        phrase = hit.group(0).lower()
        return None, f"the case summary states an outcome ('{phrase}' in a conclusive sentence)"
    return background, ""


def extract_background(findings: str) -> str | None:
    """Isolate the pre-decision background from a DMHC ``Findings`` narrative.

    The background is the text after "Nature of Statutory Criteria/Case Summary:" and
    before the earliest of :data:`END_MARKERS` (case-insensitive, any of them may be
    missing), with whitespace collapsed to single spaces.

    A sentence of the background is conclusive, and the background is rejected, when it
    contains "overturn(ed)", "upheld" or "uphold", or when it contains "should (not) be" or
    "medically necessary" without attributing it to a party (the health plan, a denial,
    or someone who believes/states/recommends it). So "The health plan denied the request
    as not medically necessary." is kept; "The requested surgery is medically necessary."
    is not.

    Args:
        findings: the ``Findings`` text of one row, already decoded and unescaped.

    Returns:
        The background (non-empty, single-spaced), or None when the start marker is
        missing, no end marker follows it (the verdict might be inside), the background is
        empty, or it contains a conclusive outcome sentence.
    """
    return _isolate_background(findings)[0]


def _decode(raw: bytes) -> tuple[str, str]:
    """Decode the file as UTF-8 if it is valid UTF-8, else as Windows-1252."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Windows-1252 with the five unassigned bytes kept as Latin-1 controls.
        return raw.decode("sloppy-windows-1252"), "windows-1252"


def _detect_schema(header: str, source: Path) -> DmhcSchema:
    """Return the schema whose columns all appear in the header line."""
    header = header.lstrip("\ufeff")
    for schema, sep in _SEPARATORS.items():
        fields = next(csv.reader([header], delimiter=sep), [])
        if set(_COLUMNS[schema]) <= {f.strip() for f in fields}:
            return schema
    expected = "; ".join(
        f"{schema} ({_SEPARATORS[schema]!r}-separated): {', '.join(_COLUMNS[schema])}"
        for schema in _COLUMNS
    )
    raise ParseError(
        source,
        "header",
        f"not a DMHC IMR export header; expected the columns of {expected}; found {header[:300]!r}",
    )


def _fix_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if _MOJIBAKE_HINT_RE.search(token):
        return ftfy.fix_text(token, unescape_html=False)
    return ftfy.fixes.uncurl_quotes(token)


def _fix_text(value: str) -> str:
    """Repair mojibake (ftfy), straighten curly quotes and collapse whitespace.

    ftfy costs about 2 ms per kilobyte, so it runs only on the space-delimited tokens that
    hold a UTF-8 lead character followed by a continuation character, the mark of UTF-8
    read as Windows-1252; other non-ASCII tokens only have their quotes straightened.
    """
    if not value.isascii():
        value = _NON_ASCII_TOKEN_RE.sub(_fix_token, value)
    return " ".join(value.split())


def _read_frame(path: Path) -> tuple[pd.DataFrame, DmhcSchema]:
    """Read, decode and clean the file; columns renamed to internal names."""
    text, encoding = _decode(path.read_bytes())
    newline = text.find("\n")
    header = (text if newline < 0 else text[:newline]).rstrip("\r")
    if not header.strip():
        raise ParseError(path, "header", "the file is empty or its first line is blank")
    schema = _detect_schema(header, path)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=_SEPARATORS[schema],
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE if schema == "2016-structured" else csv.QUOTE_MINIMAL,
            index_col=False,
        )
    except pd.errors.ParserError as exc:
        raise ParseError(
            path, "rows", f"{str(exc).strip()}; a value with an unquoted separator splits the row"
        ) from exc
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    frame = frame.rename(columns=_COLUMNS[schema])
    used = [*_RECORD_COLUMNS, "report_year", "determination"]
    if schema == "portal":
        # Entities decode everywhere; Findings is cleaned after the background is cut out.
        frame = frame[[*used, "findings"]].map(lambda v: html.unescape(v) if "&" in v else v)
    else:
        frame = frame[used]
    frame[used] = frame[used].map(_fix_text)
    logger.info("read %d rows (%s schema, %s) from %s", len(frame), schema, encoding, path)
    return frame, schema


def _check_ids(frame: pd.DataFrame, path: Path, column: str) -> None:
    """Raise ParseError for an empty or duplicated reference id."""
    ids = frame["reference_id"]
    empty = ids == ""
    if empty.any():
        row = int(empty.to_numpy().argmax()) + 1
        raise ParseError(path, f"data row {row}", f"column {column} is empty")
    duplicated = ids.duplicated()
    if duplicated.any():
        ref = ids[duplicated].iloc[0]
        raise ParseError(
            path,
            f"row {ref}",
            f"column {column}: reference id appears more than once; ids must be unique, "
            "drop the duplicate rows",
        )


def _labels(frame: pd.DataFrame, path: Path) -> list[int]:
    """Map Determination to label ids; an unknown value raises ParseError."""
    labels = frame["determination"].str.casefold().map(_LABEL_IDS)
    unknown = labels.isna()
    if unknown.any():
        first = unknown.to_numpy().argmax()
        raise ParseError(
            path,
            f"row {frame['reference_id'].iloc[first]}",
            f"column Determination: unknown value {frame['determination'].iloc[first]!r}; "
            f"expected one of {_ACCEPTED_DETERMINATIONS} "
            f"({int(unknown.sum())} row(s) in the file have unknown values)",
        )
    return [int(v) for v in labels]


def _years(frame: pd.DataFrame, path: Path, column: str) -> list[int]:
    """Parse the four-digit report years; anything else raises ParseError."""
    bad = ~frame["report_year"].str.fullmatch(r"\d{4}")
    if bad.any():
        first = bad.to_numpy().argmax()
        raise ParseError(
            path,
            f"row {frame['reference_id'].iloc[first]}",
            f"column {column}: expected a four-digit year, "
            f"found {frame['report_year'].iloc[first]!r}",
        )
    return [int(v) for v in frame["report_year"]]


def _request(category: str, subcategory: str) -> str:
    """``"Category: Subcategory"``, or whichever one is non-empty."""
    if category and subcategory:
        return f"{category}: {subcategory}"
    return category or subcategory


def load_dmhc(path: str | Path) -> DmhcLoadResult:
    """Load a DMHC IMR determinations export into item records.

    Source: DMHC "Independent Medical Review (IMR) Determinations, Trend", CHHS Open Data
    Portal dataset ``independent-medical-review-imr-determinations-trend``. The schema
    (``"2016-structured"`` or ``"portal"``) is detected from the header line.

    Each row becomes one :class:`ItemRecord` with ``id = group_id =`` the reference id,
    ``source = "dmhc"``, ``label`` 0 (Upheld) or 1 (Overturned), ``request`` =
    ``"TreatmentCategory: TreatmentSubCategory"``, ``summary`` = the isolated background
    (``""`` for the 2016 schema, which has no Findings), ``age_range`` with the ``11_20``
    typo written ``11-20``, ``patient_sex`` ``"female"``/``"male"``/None, ``imr_type``
    from ``Type``, ``request_category`` = TreatmentCategory, ``report_year`` (2001-...), and
    ``event_date = "<year>-12-31"``: only the year is published, so the last day of the
    report year stands in for the decision date. Empty strings become None.

    Args:
        path: the CSV file, UTF-8 or Windows-1252.

    Returns:
        The kept records and the excluded rows, each with a reason: portal rows whose
        background cannot be isolated (see :func:`extract_background`), and rows of either
        schema with neither a treatment category nor a subcategory (no request to predict).

    Raises:
        InvalidInputError: ``path`` does not exist.
        ParseError: the header matches neither schema; a row has too many fields; a
            reference id is empty or repeated; a report year is not four digits; or a
            Determination is not one of the known values (named with its reference id).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            "path",
            f"{path} is not a file; download the export with "
            "imr_outcome.data.download.download(DMHC_EXPORT_URL, dest)",
        )
    frame, schema = _read_frame(path)
    names = {internal: column for column, internal in _COLUMNS[schema].items()}
    _check_ids(frame, path, names["reference_id"])
    labels = _labels(frame, path)
    years = _years(frame, path, names["report_year"])
    frame["age_range"] = frame["age_range"].str.replace(r"^(\d+)_(\d+)$", r"\1-\2", regex=True)
    if schema == "portal":
        isolated = [_isolate_background(text) for text in frame["findings"]]
    else:
        isolated = [("", "")] * len(frame)

    records: list[ItemRecord] = []
    excluded: list[ExcludedRow] = []
    columns = {name: frame[name].tolist() for name in _RECORD_COLUMNS}
    for i, (summary, reason) in enumerate(isolated):
        ref = columns["reference_id"][i]
        if summary is None:
            excluded.append(ExcludedRow(ref, reason))
            continue
        category = columns["treatment_category"][i]
        request = _request(category, columns["treatment_subcategory"][i])
        if not request:
            # The treatment is the request itself: without it there is nothing to predict.
            excluded.append(ExcludedRow(ref, "no treatment category or subcategory"))
            continue
        sex = columns["patient_gender"][i].lower()
        records.append(
            ItemRecord(
                id=ref,
                group_id=ref,
                source="dmhc",
                source_file=str(path),
                request=request,
                summary=summary,
                label=labels[i],
                patient_sex=sex if sex in _SEXES else None,
                age_range=columns["age_range"][i] or None,
                imr_type=columns["type"][i] or None,
                diagnosis_category=columns["diagnosis_category"][i] or None,
                diagnosis_subcategory=columns["diagnosis_subcategory"][i] or None,
                request_category=category or None,
                event_date=f"{years[i]}-12-31",
                report_year=years[i],
            )
        )
    logger.info(
        "loaded %d DMHC records from %s (%d excluded: no isolable background)",
        len(records),
        path,
        len(excluded),
    )
    return DmhcLoadResult(records=records, excluded=excluded, schema=schema)

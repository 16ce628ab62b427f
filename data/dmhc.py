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

Only the pre-decision background of ``Findings`` becomes ``summary``: the request
sentence and the facts about this patient up to the reviewer's first evaluative sentence,
split sentence by sentence by :func:`imr_outcome.data.dmhc_findings.split_findings`; the
reviewer's guideline quotes, judgements, verdict and credentials are dropped. A portal
row without a request sentence is excluded and reported in
:attr:`DmhcLoadResult.excluded`, never guessed.

Text rows (portal) and no-text rows (2016 snapshot) are one source, ``"dmhc"``, and so
one split of the dataset: the same population (the full portal export covers
2001-present and is the 2016 snapshot plus ``Findings``), the same label and the same
pre-filing metadata; a row without text simply has ``summary == ""``.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import ftfy.bad_codecs  # noqa: F401  (registers the "sloppy-windows-1252" codec)
import pandas as pd

from imr_outcome.data.dmhc_findings import FindingsStats, fix_text, split_many
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
_SEXES: Final[frozenset[str]] = frozenset({"female", "male"})


@dataclass(frozen=True)
class ExcludedRow:
    """A row left out of the records, with the reason.

    Attributes:
        reference_id: the row's DMHC reference id, e.g. ``"MN16-22639"``.
        reason: why, e.g. :data:`imr_outcome.data.dmhc_findings.NO_REQUEST_REASON`.
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
        findings: counts of the ``Findings`` split (rows kept and excluded by reason,
            sentences kept and dropped, background lengths); all zero for the 2016
            schema, which has no ``Findings``.
    """

    records: list[ItemRecord]
    excluded: list[ExcludedRow]
    schema: DmhcSchema
    findings: FindingsStats = field(default_factory=FindingsStats)


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
    # Findings is cleaned by split_findings, sentence by sentence.
    frame = frame[[*used, "findings"]] if schema == "portal" else frame[used]
    frame[used] = frame[used].map(lambda v: fix_text(html.unescape(v) if "&" in v else v))
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


def load_dmhc(path: str | Path, *, n_jobs: int | None = None) -> DmhcLoadResult:
    """Load a DMHC IMR determinations export into item records.

    Source: DMHC "Independent Medical Review (IMR) Determinations, Trend", CHHS Open Data
    Portal dataset ``independent-medical-review-imr-determinations-trend``. The schema
    (``"2016-structured"`` or ``"portal"``) is detected from the header line.

    Each row becomes one :class:`ItemRecord` with ``id = group_id =`` the reference id,
    ``source = "dmhc"``, ``label`` 0 (Upheld) or 1 (Overturned), ``request`` =
    ``"TreatmentCategory: TreatmentSubCategory"``, ``summary`` = the kept background of
    ``Findings`` (request sentence first; ``""`` for the 2016 schema, which has none),
    ``age_range`` with the ``11_20`` typo written ``11-20``, ``patient_sex``
    ``"female"``/``"male"``/None, ``imr_type`` from ``Type``, ``request_category`` =
    TreatmentCategory, ``report_year`` (2001-...), and
    ``event_date = "<year>-12-31"``: only the year is published, so the last day of the
    report year stands in for the decision date. Empty strings become None.

    Args:
        path: the CSV file, UTF-8 or Windows-1252.
        n_jobs: processes splitting ``Findings`` (see
            :func:`~imr_outcome.data.dmhc_findings.split_many`; None: all cores from
            2,000 rows on).

    Returns:
        The kept records, the excluded rows, each with a reason (portal rows whose
        ``Findings`` have no request sentence, see
        :func:`~imr_outcome.data.dmhc_findings.split_findings`, and rows of either schema
        with neither a treatment category nor a subcategory: no request to predict), and
        the counts of the ``Findings`` split.

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
    stats = FindingsStats()
    isolated: list[tuple[str | None, str]] = [("", "")] * len(frame)
    if schema == "portal":
        for i, split in enumerate(split_many(frame["findings"].tolist(), n_jobs)):
            stats.add(split)
            isolated[i] = (split.background, split.reason)

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
    logger.info("loaded %d DMHC records from %s (%d excluded)", len(records), path, len(excluded))
    return DmhcLoadResult(records=records, excluded=excluded, schema=schema, findings=stats)

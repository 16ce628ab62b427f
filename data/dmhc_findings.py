"""Split a DMHC ``Findings`` text into kept background and dropped reviewer reasoning.

A DMHC IMR ``Findings`` text (CHHS Open Data Portal dataset
``independent-medical-review-imr-determinations-trend``) opens with "Nature of Statutory
Criteria/Case Summary:" (sometimes after, or replaced by, "Findings: The physician
reviewer found that"), then one sentence stating the request ("The patient has requested
authorization and coverage for ..."), then, with no marker, background facts mixed with
the reviewer's guideline quotes and judgements, and at the end "Findings: Two of the three
physician reviewers ...", "Final Result: ..." and "Credentials/Qualifications: ...".

The split works sentence by sentence (sentences from pySBD, Sadvilkar & Neumann 2020,
"PySBD: Pragmatic Sentence Boundary Disambiguation", a maintained rule-based splitter
that handles abbreviations, decimals and quotations):

1. Clean: HTML entities unescaped, mojibake repaired (ftfy), quotes straightened,
   whitespace collapsed, and a space put back where a period is glued to the next
   sentence ("tablets.A federal agency").
2. The leading "Findings: The physician reviewer found that" is dropped (a label, not a
   sentence); text after the first later section label ("Findings:", "Final Result",
   "Credentials/Qualifications", "Reviewer #1") is verdict, reviewer count or
   credentials and is dropped.
3. The request sentence is the first sentence with a request verb ("has requested",
   "requested", "is requesting"); it is always kept. A row without one is excluded.
4. Each later sentence is classified with :func:`imr_outcome.data.reasoning_cues.find_cues`:
   a section or connective cue, a judgement about this patient, or a patient sentence
   that repeats a number from a dropped guideline sentence (a criterion applied to the
   patient, e.g. "height z-score remained above -2.25") is the reviewer's first
   evaluative sentence: it and everything after it are dropped. Literature, guideline
   and general statements (no reference to this patient) are dropped without ending the
   background. What is left, a sentence about this patient with no cue, is a kept fact.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Literal

import ftfy
import ftfy.bad_codecs  # registers the "sloppy-windows-1252" codec
import ftfy.fixes
import joblib
import numpy as np
import pysbd

from imr_outcome.data.reasoning_cues import find_cues, is_about_patient

SentenceLabel = Literal[
    "request",
    "fact",
    "before_request",
    "literature",
    "general",
    "connective",
    "judgement",
    "threshold",
    "section",
    "after_reasoning",
]
#: Labels of kept sentences; every other label is a reason to drop.
KEPT_LABELS: Final[frozenset[str]] = frozenset({"request", "fact"})

#: Exclusion reasons (the only ones :func:`split_findings` gives).
EMPTY_REASON: Final = "Findings is empty"
NO_REQUEST_REASON: Final = (
    "no request sentence (e.g. 'The patient has requested authorization and coverage "
    "for ...') in the case summary of Findings"
)
REQUEST_CUE_REASON: Final = "the request sentence holds a reviewer-reasoning cue"

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
#: Non-ASCII dashes and spaces that read the same as their ASCII forms.
_ASCII_FORMS: Final = str.maketrans({"\u2011": "-", "\u2010": "-", "\u00a0": " "})

#: Start of the case summary.
_START_RE: Final = re.compile(r"nature\s+of\s+statutory\s+criteria\s*/\s*case\s+summary\s*:", re.I)
#: "Findings: The physician reviewer found that" at the very start: a label, not a sentence.
_LEAD_RE: Final = re.compile(
    r"^\s*findings\s*:\s*(?:the\s+)?(?:physician\s+)?reviewers?\s+(?:found|determined)"
    r"(?:\s+that)?\s*",
    re.I,
)
#: Section labels after which everything is verdict, reviewer counts or credentials.
_SECTION_RE: Final = re.compile(
    r"\bfindings\s*:|\bfinal\s+result\b|\bcredentials\s*/\s*qualifications\b"
    r"|\breviewer\s*#\s*\d",
    re.I,
)
#: A period glued to the next sentence ("tablets.A federal agency").
_GLUED_RE: Final = re.compile(r"(?<=[a-z0-9)\]\"'%])\.(?=[A-Z](?:[a-z]|\s))")
#: A request verb (not the adjective in "the requested surgery").
_REQUEST_RE: Final = re.compile(
    r"(?<!\bthe\s)(?<!\bthis\s)(?<!\bthese\s)(?<!\bsuch\s)"
    r"\b(?:requested|requesting|requests|seeks|seeking|sought|asked\s+for|applied\s+for)\b"
    r"|^\s*(?:an?\s+|the\s+)?request\s+for\b",
    re.I,
)
#: A number of a guideline threshold ("-2.25", "27"); single digits are too common.
_NUMBER_RE: Final = re.compile(r"\d+\.\d+|\d{2,}")
_PERCENTILES: Final = (5, 25, 50, 75, 95)
#: From this many rows on, :func:`split_many` uses every core by default: pySBD takes
#: about 20-80 ms per 2.4 kB Findings text on one core (AVX2, no AVX-512), so the
#: ~40k-row portal export is tens of minutes on one core.
PARALLEL_MIN_ROWS: Final = 2000


@dataclass(frozen=True)
class Sentence:
    """One sentence of a ``Findings`` text and what the split did with it.

    Attributes:
        text: the cleaned sentence.
        label: ``"request"`` or ``"fact"`` (kept), or the reason it was dropped.
        cue: the name of the first reasoning cue found, or None.
    """

    text: str
    label: SentenceLabel
    cue: str | None = None

    @property
    def kept(self) -> bool:
        """True for the request sentence and kept facts."""
        return self.label in KEPT_LABELS


@dataclass(frozen=True)
class FindingsSplit:
    """The split of one ``Findings`` text.

    Attributes:
        sentences: every sentence, in text order, with its label.
        background: the kept sentences joined by single spaces (request first), or None
            when the row is excluded.
        reason: why the row is excluded (one of the module's ``*_REASON`` constants), or
            ``""``.
    """

    sentences: tuple[Sentence, ...]
    background: str | None
    reason: str


@dataclass
class FindingsStats:
    """Per-build counts of the DMHC ``Findings`` split (figures only, never text).

    Attributes:
        rows: rows whose ``Findings`` were split.
        kept: rows kept (with a request sentence).
        request_only: kept rows whose background is the request sentence alone.
        excluded: excluded rows by reason.
        sentences_kept: kept sentences (request sentences included).
        sentences_dropped: dropped sentences by label.
        background_words: words of each kept background, in row order.
    """

    rows: int = 0
    kept: int = 0
    request_only: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    sentences_kept: int = 0
    sentences_dropped: Counter[str] = field(default_factory=Counter)
    background_words: list[int] = field(default_factory=list)

    def add(self, split: FindingsSplit) -> None:
        """Count one row's split."""
        self.rows += 1
        if split.background is None:
            self.excluded[split.reason] += 1
        else:
            self.kept += 1
            self.background_words.append(len(split.background.split()))
        kept = sum(s.kept for s in split.sentences)
        self.request_only += int(split.background is not None and kept == 1)
        self.sentences_kept += kept if split.background is not None else 0
        for sentence in split.sentences:
            if split.background is None or not sentence.kept:
                self.sentences_dropped[sentence.label] += 1

    def merge(self, other: FindingsStats) -> FindingsStats:
        """The sum of two builds' counts (a new object)."""
        return FindingsStats(
            rows=self.rows + other.rows,
            kept=self.kept + other.kept,
            request_only=self.request_only + other.request_only,
            excluded=self.excluded + other.excluded,
            sentences_kept=self.sentences_kept + other.sentences_kept,
            sentences_dropped=self.sentences_dropped + other.sentences_dropped,
            background_words=[*self.background_words, *other.background_words],
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready counts; background words as p5/p25/p50/p75/p95/max (0 when empty)."""
        words = np.array(self.background_words or [0])
        return {
            "rows_with_findings": self.rows,
            "rows_kept": self.kept,
            "rows_request_only": self.request_only,
            "rows_excluded": dict(sorted(self.excluded.items())),
            "sentences_kept": self.sentences_kept,
            "sentences_dropped": sum(self.sentences_dropped.values()),
            "sentences_dropped_by_label": dict(sorted(self.sentences_dropped.items())),
            "background_words": {f"p{p}": int(np.percentile(words, p)) for p in _PERCENTILES}
            | {"max": int(words.max())},
        }


def _fix_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if _MOJIBAKE_HINT_RE.search(token):
        token = ftfy.fix_text(token, unescape_html=False)
    return ftfy.fixes.uncurl_quotes(token).translate(_ASCII_FORMS)


def fix_text(value: str) -> str:
    """Repair mojibake (ftfy), straighten curly quotes and collapse whitespace.

    ftfy costs about 2 ms per kilobyte, so it runs only on the space-delimited tokens that
    hold a UTF-8 lead character followed by a continuation character, the mark of UTF-8
    read as Windows-1252 or Latin-1 (``â€™``, or twice, ``Ã¢Â€Â™``); other non-ASCII
    tokens only have their quotes straightened and non-breaking hyphens and spaces made
    ASCII.

    Args:
        value: any text.

    Returns:
        The repaired text, single-spaced and stripped.
    """
    if not value.isascii():
        value = _NON_ASCII_TOKEN_RE.sub(_fix_token, value)
    return " ".join(value.split())


def clean_findings(findings: str) -> str:
    """Unescape HTML entities (twice, for ``&amp;#8217;``), repair mojibake, unglue periods.

    Args:
        findings: one raw ``Findings`` value.

    Returns:
        The cleaned, single-spaced text.
    """
    for _ in range(2):
        if "&" not in findings:
            break
        findings = html.unescape(findings)
    return _GLUED_RE.sub(". ", fix_text(findings))


@cache
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False, char_span=False)


def split_sentences(text: str) -> list[str]:
    """Split text into sentences with pySBD (English rules, no cleaning).

    Args:
        text: cleaned text (see :func:`clean_findings`).

    Returns:
        The non-empty sentences, stripped, in order.
    """
    if not text.strip():
        return []
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


def _capitalized(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _classify(sentences: list[str]) -> tuple[list[Sentence], str]:
    """Label the case-summary sentences; return them and an exclusion reason or ``""``."""
    request_at = next((i for i, s in enumerate(sentences) if _REQUEST_RE.search(s)), None)
    if request_at is None:
        return [Sentence(s, "before_request") for s in sentences], NO_REQUEST_REASON
    labelled = [Sentence(s, "before_request") for s in sentences[:request_at]]
    request = _capitalized(sentences[request_at])
    bad = find_cues(request, position=True)
    labelled.append(Sentence(request, "request", bad[0].name if bad else None))
    if bad:
        return labelled, REQUEST_CUE_REASON
    guideline_numbers: set[str] = set()
    stopped = False
    for text in sentences[request_at + 1 :]:
        if stopped:
            labelled.append(Sentence(text, "after_reasoning"))
            continue
        hits = find_cues(text)
        kinds = {h.kind for h in hits}
        about = is_about_patient(text)
        cue = hits[0].name if hits else None
        numbers = set(_NUMBER_RE.findall(text))
        label: SentenceLabel
        if "section" in kinds or "connective" in kinds:
            cue = next(h.name for h in hits if h.kind in ("section", "connective"))
            label, stopped = ("section" if "section" in kinds else "connective"), True
        elif "judgement" in kinds and about:
            cue = next(h.name for h in hits if h.kind == "judgement")
            label, stopped = "judgement", True
        elif hits or not about:
            label = "literature" if "literature" in kinds else "general"
            guideline_numbers |= numbers
        elif numbers & guideline_numbers:
            label, stopped, cue = "threshold", True, "guideline number"
        else:
            label = "fact"
        labelled.append(Sentence(text, label, cue))
    return labelled, ""


def split_findings(findings: str) -> FindingsSplit:
    """Split one ``Findings`` text into the kept background and dropped sentences.

    See the module docstring for the rules. The request sentence is kept even when it is
    the only sentence kept: the request plus the row's metadata is pre-filing
    information.

    Args:
        findings: one raw ``Findings`` value (HTML entities and mojibake allowed).

    Returns:
        The labelled sentences and the background, or the exclusion reason: the text is
        empty; no request sentence; or the request sentence itself holds a section or
        connective cue (then the reviewer's words are inside it).
    """
    text = clean_findings(findings)
    if not text:
        return FindingsSplit((), None, EMPTY_REASON)
    text = _LEAD_RE.sub("", text, count=1)
    start = _START_RE.search(text)
    before: list[Sentence] = []
    if start is not None:
        before = [Sentence(s, "before_request") for s in split_sentences(text[: start.start()])]
        text = text[start.end() :]
    section = _SECTION_RE.search(text)
    tail = [
        Sentence(s, "section", "section label")
        for s in split_sentences(text[section.start() :] if section else "")
    ]
    body = text[: section.start()] if section else text
    labelled, reason = _classify(split_sentences(body))
    sentences = (*before, *labelled, *tail)
    if reason:
        return FindingsSplit(sentences, None, reason)
    background = " ".join(s.text for s in sentences if s.kept)
    return FindingsSplit(sentences, background, "")


def split_many(texts: Sequence[str], n_jobs: int | None = None) -> list[FindingsSplit]:
    """:func:`split_findings` of every text, in order, in parallel for large inputs.

    Args:
        texts: raw ``Findings`` values.
        n_jobs: worker processes (joblib/loky; ``-1`` = every core, ``1`` = this process);
            None: 1 below :data:`PARALLEL_MIN_ROWS` texts, else -1.

    Returns:
        One :class:`FindingsSplit` per text, in input order.
    """
    if n_jobs is None:
        n_jobs = 1 if len(texts) < PARALLEL_MIN_ROWS else -1
    if n_jobs == 1:
        return [split_findings(text) for text in texts]
    parallel = joblib.Parallel(n_jobs=n_jobs, batch_size=256, return_as="list")
    splits: list[FindingsSplit] = parallel(joblib.delayed(split_findings)(t) for t in texts)
    return splits

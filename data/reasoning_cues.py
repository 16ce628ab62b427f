"""The reviewer-reasoning cue list for DMHC ``Findings`` sentences (one place, one list).

A DMHC IMR ``Findings`` text mixes pre-decision background (the request, this patient's
history and records) with the physician reviewer's analysis (guideline and literature
statements, judgements, the verdict). Both the sentence splitter
(:mod:`imr_outcome.data.dmhc_findings`) and the DMHC leakage audit
(:func:`imr_outcome.data.audit.audit_dmhc_reasoning`) classify a sentence with
:func:`find_cues` over :data:`CUES`, so a sentence the splitter keeps can never fail the
audit unless the two drift apart, which the tests check.

Why rules and not a learned classifier: there are no labelled DMHC sentences to train
on (the 20 real portal rows are for design, all Upheld, and must not be committed), and a
classifier trained on labels we invented would learn our invention. The cue words are
the fixed boilerplate of the DMHC reviewer contractors ("However,", "Based on the
available documentation", "there is a lack of", "Final Result:", "Credentials/
Qualifications:"), so a short reviewed list, tested sentence by sentence on invented
sentences of every shape, is both auditable and conservative: a false cue only shortens
a background, a missed cue is caught by nothing, so the list errs towards cueing.

Cue kinds, and what the splitter does with a sentence that has one:

- ``"section"``: verdict, reviewer count, credentials ("Final Result", "two of the three
  physician reviewers", "board certified"). Dropped; the background ends.
- ``"connective"``: evaluative connectives ("however", "therefore", "based on",
  "consistent with", "lack of", ...). Dropped; the background ends.
- ``"judgement"``: necessity, benefit, criteria-met and missing-documentation
  judgements ("medically necessary", "would not benefit", "does not meet", "no
  documented"). Dropped; the background ends when the sentence is about this patient
  or the request, otherwise it is a general statement and is dropped.
- ``"literature"``: guideline, literature and criteria statements ("Per ASAM criteria",
  "current guidelines recommend", "Researchers explain"). Dropped.

The request sentence, and a sentence that reports a party's own position (the health
plan's denial, the treating physician's statement; :data:`PARTY_POSITION_RE`), may hold
judgement and literature words: the dispute itself is pre-filing information. Section
and connective cues count everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

CueKind = Literal["section", "connective", "judgement", "literature"]


@dataclass(frozen=True)
class Cue:
    """One reasoning cue.

    Attributes:
        name: short name used in reports and audit findings, e.g. ``"however"``.
        kind: see the module docstring.
        pattern: case-insensitive regex; it never spans a sentence end.
    """

    name: str
    kind: CueKind
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class CueHit:
    """A cue found in a sentence.

    Attributes:
        name / kind: of the :class:`Cue`.
        start / end: character offsets of the match in the sentence.
    """

    name: str
    kind: CueKind
    start: int
    end: int


def _cue(name: str, kind: CueKind, pattern: str) -> Cue:
    return Cue(name, kind, re.compile(pattern, re.I))


#: Up to 60 characters inside one sentence (no sentence-ending punctuation).
_GAP: Final = r"[^.!?]{0,60}?"

#: The cue list. Order matters only for reporting (first hit names the reason).
CUES: Final[tuple[Cue, ...]] = (
    # --- section: verdict, reviewer counts, credentials --------------------------
    _cue("final result", "section", r"\bfinal\s+result\b"),
    _cue("credentials", "section", r"\bcredentials\b|\bqualifications\s*:"),
    _cue("board certified", "section", r"\bboard[-\s\u2011]certified\b"),
    _cue("actively practicing", "section", r"\bactively\s+practicing\b"),
    _cue(
        "reviewer finding",
        "section",
        r"\breviewers?\b" + _GAP + r"\b(?:found|find|finds|determined|concluded|noted|agreed)\b",
    ),
    _cue(
        "reviewer count",
        "section",
        r"\b(?:one|two|three|all|both|each|majority)\s+(?:of\s+the\s+)?(?:\w+\s+)?"
        r"(?:physician\s+)?reviewers?\b|\breviewer\s*#?\s*\d",
    ),
    _cue("reviewer", "section", r"\breviewers?\b"),
    _cue("decision word", "section", r"\b(?:upheld|uphold|overturn(?:ed|s|ing)?)\b"),
    _cue("health plan's denial should", "section", r"\bdenial\s+(?:should|must|is|was)\b"),
    # --- connective: evaluative connectives -------------------------------------
    _cue(
        "therefore",
        "connective",
        r"\b(?:therefore|thus|hence|accordingly|consequently|as\s+such|for\s+these\s+reasons"
        r"|in\s+conclusion|all\s+told|in\s+summary|to\s+summarize)\b",
    ),
    _cue("however", "connective", r"\b(?:however|nevertheless|nonetheless|moreover)\b"),
    _cue("although", "connective", r"\b(?:although|though|whereas)\b|^\s*while\b"),
    _cue("overall / given", "connective", r"^\s*(?:overall|given|with\s+that|if|since|because)\b"),
    _cue("based on", "connective", r"\bbased\s+(?:up)?on\b"),
    _cue("consistent with", "connective", r"\b(?:in)?consistent\s+with\b"),
    _cue("lack of", "connective", r"\b(?:lack|lacks|lacking|absence|devoid)\s+(?:of\b|any\b)"),
    _cue("in this case, ... not", "connective", r"^\s*in\s+this\s+case\b" + _GAP + r"\bnot\b"),
    # --- judgement: necessity, benefit, criteria met, missing documentation ------
    _cue(
        "medical necessity",
        "judgement",
        r"\bmedically\s+(?:necessary|indicated|appropriate|reasonable)\b|\bnecessity\b",
    ),
    _cue(
        "indicated / appropriate",
        "judgement",
        r"\b(?:not\s+)?(?:indicated|appropriate|inappropriate|warranted|justified|reasonable"
        r"|unnecessary|necessary)\b",
    ),
    _cue(
        "benefit / likelihood",
        "judgement",
        r"\b(?:benefit(?:s|ed|ial)?|unlikely|likely|expected\s+to|effective(?:ness)?|efficacy"
        r"|superior|safer|safe\s+and\s+effective)\b",
    ),
    _cue(
        "would / should",
        "judgement",
        r"\b(?:should|would|could|must|might)\b(?:\s+not)?\s+(?:be|have|help|improve|benefit"
        r"|require|provide|result|allow|need|reduce|serve|address)\b",
    ),
    _cue(
        "criteria met",
        "judgement",
        r"\b(?:meets?|met|meeting|satisf(?:y|ies|ied)|fulfil(?:l|ls|led)?|align(?:s|ed)?)\b"
        + _GAP
        + r"\b(?:criteria|criterion|requirements?|indications?|guidelines?|standards?|needs)\b",
    ),
    _cue(
        "does not require",
        "judgement",
        r"\b(?:does|do|did)\s*(?:not|n['\u2019]t)\s+(?:require|need|support|establish"
        r"|demonstrate|document|show|include|reflect|meet|align|warrant)\b|\bnot\s+required\b",
    ),
    _cue(
        "missing documentation",
        "judgement",
        r"\bno\s+(?:documented|documentation|evidence|record|indication|compelling|clear"
        r"|objective)\b|\b(?:not|never)\s+(?:been\s+)?(?:documented|established|demonstrated"
        r"|supported|substantiated)\b|\bwithout\s+(?:an?\s+|any\s+)?(?:\w+\s+)?(?:assessment"
        r"|trial|evidence|documentation|evaluation|attempt|failure)\b",
    ),
    _cue(
        "supports / rationale",
        "judgement",
        r"\bsupport(?:s|ed|ing)?\s+(?:the\s+|a\s+|an\s+)?(?:use|need|request|indication"
        r"|diagnosis|medical)\b|\b(?:rationale|compelling|extenuating|considered)\b",
    ),
    _cue("candidate", "judgement", r"\bcandidates?\b"),
    # --- literature: guideline, literature and criteria statements --------------
    _cue(
        "guideline / criteria",
        "literature",
        r"\b(?:guidelines?|criteria|criterion|consensus|position\s+statement|standards?\s+of"
        r"\s+care|recommend(?:s|ed|ation|ations)?|per\s+(?:the\s+)?(?-i:[A-Z]{3,}))\b",
    ),
    _cue(
        "literature",
        "literature",
        r"\b(?:literature|researchers?|studies|evidence[-\s]based|peer[-\s]reviewed"
        r"|meta[-\s]analys[ie]s|randomi[sz]ed|clinical\s+trials?|experts?|authors?"
        r"|published|references?|systematic\s+review)\b"
        r"|\b(?:a|one|this|the)\s+study\s+(?:noted|showed|found|indicated|reported|concluded"
        r"|demonstrated|suggests?)\b",
    ),
    _cue(
        "approved / indicated for",
        "literature",
        r"\b(?:FDA|food\s+and\s+drug\s+administration|federal\s+agency)\b"
        r"|\b(?:approved|indicated)\s+(?:only\s+)?for\b",
    ),
    _cue(
        "shown / line of therapy",
        "literature",
        r"\b(?:been|was|were|is|are)\s+shown\s+to\b|\bsupported\s+by\b"
        r"|\b(?:first|second|third)[-\s]line\b",
    ),
    _cue("quotation", "literature", r"[\"\u201c\u201d]"),
)

#: Reference to this patient (or the records about them); plural "patients" is general.
PATIENT_RE: Final = re.compile(
    r"\b(?:patient|enrollee|member|insured|child|infant|son|daughter)(?!s\b)(?:['\u2019]s)?\b"
    r"|\b(?:he|she|his|her|him|hers|himself|herself)\b"
    r"|\b(?:records?|notes?|documentation|chart|the\s+provider|requested|in\s+this\s+case)\b",
    re.I,
)
#: A sentence that reports a party's own position (the plan's denial, the treating
#: physician's statement): pre-filing information, so judgement words are allowed there.
PARTY_POSITION_RE: Final = re.compile(
    r"\b(?:(?:the\s+)?(?:health\s+)?plan(?:['\u2019]s)?|denied|denies|denial"
    r"|(?:his|her|their|the\s+(?:patient|enrollee|member)['\u2019]s|treating)\s+(?:\w+\s+)?"
    r"(?:physician|doctor|provider|dentist|surgeon|oncologist|psychiatrist|therapist"
    r"|urologist|gastroenterologist|cardiologist|neurologist|pediatrician))\b"
    + _GAP
    + r"\b(?:denied|denies|states?|stated|believes?|contends?|asserts?|argues?|maintains?"
    r"|called|considers?|reports?|requested|recommends?|recommended|indicated|explained)\b",
    re.I,
)


#: Cue kinds allowed in a sentence that states a party's position.
_POSITION_EXEMPT: Final[frozenset[CueKind]] = frozenset({"judgement", "literature"})


def find_cues(sentence: str, *, position: bool = False) -> list[CueHit]:
    """Every reasoning cue in one sentence.

    A sentence that states a party's position (the request sentence, ``position=True``,
    or one matching :data:`PARTY_POSITION_RE`, e.g. "The health plan denied the request
    as not medically necessary.") may hold judgement and literature words: the dispute
    is pre-filing information. Section and connective cues are reported in every
    sentence.

    Args:
        sentence: one sentence, mojibake repaired and quotes straightened.
        position: the sentence is the request sentence.

    Returns:
        The hits in :data:`CUES` order then by position; empty for a clean sentence.
    """
    position = position or states_position(sentence)
    hits: list[CueHit] = []
    for cue in CUES:
        if position and cue.kind in _POSITION_EXEMPT:
            continue
        hits.extend(
            CueHit(cue.name, cue.kind, m.start(), m.end()) for m in cue.pattern.finditer(sentence)
        )
    return hits


def states_position(sentence: str) -> bool:
    """True when the sentence reports a party's position (:data:`PARTY_POSITION_RE`)."""
    return PARTY_POSITION_RE.search(sentence) is not None


def is_about_patient(sentence: str) -> bool:
    """True when the sentence refers to this patient, their records, the request, or
    reports a party's position in this dispute."""
    return PATIENT_RE.search(sentence) is not None or states_position(sentence)

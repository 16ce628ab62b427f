"""Leakage audit: outcome language in model inputs, and near-duplicates across folds.

Two ways a model can learn the answer instead of the case:

1. Outcome text in its input: the decision words, the section labels of the decision
   part of a letter, or a concluding medical-necessity sentence of a rationale. The
   case summary legitimately reports the utilization-review (UR) denial ("UR determined
   the MRI was not medically necessary"), which is the dispute itself, so only present-
   tense conclusions ("Therefore, the request is not medically necessary") count.
2. The same case on both sides of a split: near-duplicate items (the same summary in
   two letters of one patient) must share a fold. :func:`near_duplicate_groups` finds
   them with MinHash LSH (Broder 1997, "On the resemblance and containment of
   documents"; ``datasketch``) so the dataset builder can merge their groups first.

3. Display-only outcome text in its input: a row's own rationale excerpt
   (:data:`~imr_outcome.data.schema.DISPLAY_ONLY_FIELDS`) is stored for people to read
   beside similar past decisions; :func:`audit_display_only` checks that no model input
   reads its column (and the tests poison it to prove it).

DMHC summaries are also checked sentence by sentence for the reviewer's reasoning
(:func:`audit_dmhc_reasoning`), with the same cue list the DMHC splitter uses
(:data:`imr_outcome.data.reasoning_cues.CUES`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

from imr_outcome.data.dmhc_findings import split_sentences
from imr_outcome.data.model_input import record_model_input
from imr_outcome.data.reasoning_cues import find_cues
from imr_outcome.data.schema import DISPLAY_ONLY_FIELDS, MODEL_INPUT_FIELDS, ItemRecord

#: Outcome language that must never appear in model input (name, pattern).
OUTCOME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("decision word 'Upheld'", re.compile(r"\bupheld\b", re.I)),
    ("decision word 'Overturned'", re.compile(r"\boverturned\b", re.I)),
    ("section label 'Decision rationale'", re.compile(r"decision\s+rationale", re.I)),
    ("section label 'MAXIMUS guideline'", re.compile(r"maximus\s+guideline", re.I)),
    (
        "section label 'Claims Administrator guideline'",
        re.compile(r"claims\s+administrator\s+guideline", re.I),
    ),
    (
        "medical-necessity conclusion",
        re.compile(
            r"\b(?:therefore|thus|hence|as such|accordingly|in conclusion|given the above|"
            r"based on the above)\b[^.]{0,200}?\b(?:is|are)\s+(?:not\s+)?"
            r"(?:deemed\s+|determined\s+to\s+be\s+(?:not\s+)?|considered\s+)?"
            r"medically\s+(?:necessary|appropriate)\b",
            re.I,
        ),
    ),
)

#: Items with fewer summary words than this are not compared for near-duplication
#: (table rows without text would all look alike).
MIN_WORDS_FOR_NEAR_DUPLICATE = 50


@dataclass(frozen=True)
class LeakageFinding:
    """Outcome language found in a model input.

    Attributes:
        item_id: the dataset row id.
        segment: ``"text"`` (metadata + request) or ``"text_pair"`` (summary).
        pattern: the name of the matched pattern from :data:`OUTCOME_PATTERNS`.
        start / end: character offsets of the match in that segment.
    """

    item_id: str
    segment: str
    pattern: str
    start: int
    end: int


def audit_dmhc_reasoning(records: Sequence[ItemRecord]) -> list[LeakageFinding]:
    """Scan the summary of every DMHC row for reviewer-reasoning cues, sentence by sentence.

    The summary is split with the splitter's own sentence splitter; its first sentence is
    the request sentence, which (like a sentence stating a party's position) may hold
    judgement and literature words but no section or connective cue (see
    :func:`imr_outcome.data.reasoning_cues.find_cues`). Rows of other sources are skipped.

    Args:
        records: dataset rows.

    Returns:
        One finding per cue hit, pattern ``"DMHC reasoning cue '<name>'"``, segment
        ``"text_pair"``, offsets in the summary; empty when the summaries are clean.
    """
    findings: list[LeakageFinding] = []
    for record in records:
        if record.source != "dmhc" or not record.summary:
            continue
        cursor = 0
        for i, sentence in enumerate(split_sentences(record.summary)):
            offset = record.summary.find(sentence, cursor)
            offset = cursor if offset < 0 else offset
            cursor = offset + len(sentence)
            for hit in find_cues(sentence, position=i == 0):
                findings.append(
                    LeakageFinding(
                        record.id,
                        "text_pair",
                        f"DMHC reasoning cue '{hit.name}'",
                        offset + hit.start,
                        offset + hit.end,
                    )
                )
    return findings


def audit_outcome_language(records: Sequence[ItemRecord]) -> list[LeakageFinding]:
    """Scan every model input for outcome language, and DMHC summaries for reasoning.

    Args:
        records: dataset rows; each is rendered with ``record_model_input``.

    Returns:
        One finding per match of :data:`OUTCOME_PATTERNS`, in row order, then the
        findings of :func:`audit_dmhc_reasoning`; empty when the inputs are clean.
    """
    findings: list[LeakageFinding] = []
    for record in records:
        model_input = record_model_input(record)
        for segment, text in (("text", model_input.text), ("text_pair", model_input.text_pair)):
            for name, pattern in OUTCOME_PATTERNS:
                for m in pattern.finditer(text):
                    findings.append(LeakageFinding(record.id, segment, name, m.start(), m.end()))
    return findings + audit_dmhc_reasoning(records)


def audit_display_only(model_fields: Sequence[str] = MODEL_INPUT_FIELDS) -> list[str]:
    """Display-only dataset columns that a model input would read (should be none).

    :func:`~imr_outcome.data.model_input.record_model_input` reads exactly
    :data:`~imr_outcome.data.schema.MODEL_INPUT_FIELDS`; the rationale excerpt and the
    decision date (:data:`~imr_outcome.data.schema.DISPLAY_ONLY_FIELDS`) must not be among
    them. (The excerpt's text is not searched for in the summary: a reviewer's rationale
    often restates the case summary word for word, which is the rationale copying the
    input, not the input holding the outcome; the tests poison the column instead.)

    Args:
        model_fields: the columns a model input is built from.

    Returns:
        The display-only names among ``model_fields``, sorted; empty when clean.
    """
    return sorted(set(model_fields) & set(DISPLAY_ONLY_FIELDS))


def _shingles(text: str, k: int = 5) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + k]).encode() for i in range(max(1, len(words) - k + 1))}


def near_duplicate_groups(
    records: Sequence[ItemRecord], *, threshold: float = 0.8, num_perm: int = 128, seed: int = 1
) -> dict[str, str]:
    """Merge groups whose summaries are near-duplicates.

    Summaries are compared by the Jaccard similarity of word 5-shingles, estimated with
    MinHash LSH; items with fewer than :data:`MIN_WORDS_FOR_NEAR_DUPLICATE` summary words
    are skipped.

    Args:
        records: dataset rows.
        threshold: Jaccard similarity in (0, 1] above which two summaries are the same
            case.
        num_perm: MinHash permutations (more is more precise and slower).
        seed: MinHash seed, for reproducible builds.

    Returns:
        A map from every ``group_id`` in ``records`` to its merged group id (the
        smallest group id of its connected component); unmerged groups map to
        themselves.
    """
    parent = {record.group_id: record.group_id for record in records}

    def find(group: str) -> str:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    seen_summaries: set[str] = set()
    for record in records:
        if len(record.summary.split()) < MIN_WORDS_FOR_NEAR_DUPLICATE:
            continue
        key = f"{record.group_id}\x00{record.summary}"
        if key in seen_summaries:
            continue
        seen_summaries.add(key)
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch(list(_shingles(record.summary)))
        for other in lsh.query(minhash):
            a, b = find(record.group_id), find(other.split("\x00", 1)[0])
            if a != b:
                parent[max(a, b)] = min(a, b)
        lsh.insert(f"{record.group_id}\x00{len(seen_summaries)}", minhash)
    return {group: find(group) for group in parent}


def folds_straddled(records: Sequence[ItemRecord], folds: Sequence[int]) -> list[str]:
    """Merged groups whose items sit in more than one fold (should be none).

    Args:
        records: dataset rows.
        folds: the fold of each row, aligned with ``records``.

    Returns:
        The merged group ids (see :func:`near_duplicate_groups`) that straddle folds.
    """
    merged = near_duplicate_groups(records)
    seen: dict[str, int] = {}
    straddling: set[str] = set()
    for record, fold in zip(records, folds, strict=True):
        group = merged[record.group_id]
        if seen.setdefault(group, fold) != fold:
            straddling.add(group)
    return sorted(straddling)

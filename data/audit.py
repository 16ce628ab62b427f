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

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
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

#: Jaccard similarity above which two summaries are the same case, unless a build says
#: otherwise; :func:`folds_straddled` always checks at this one.
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.8
#: The highest threshold MinHash LSH can band with 128 permutations (datasketch needs at
#: least 2 bands; at 0.99 it finds 1 and refuses).
MAX_NEAR_DUPLICATE_THRESHOLD = 0.98


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


def dmhc_reasoning_findings(record: ItemRecord) -> list[LeakageFinding]:
    """Reviewer-reasoning cues in one row's summary, sentence by sentence (DMHC rows only).

    The summary is split with the splitter's own sentence splitter; its first sentence is
    the request sentence, which (like a sentence stating a party's position) may hold
    judgement and literature words but no section or connective cue (see
    :func:`imr_outcome.data.reasoning_cues.find_cues`).

    Args:
        record: a dataset row; rows of other sources, and empty summaries, have none.

    Returns:
        One finding per cue hit, pattern ``"DMHC reasoning cue '<name>'"``, segment
        ``"text_pair"``, offsets in the summary; empty when the summary is clean.
    """
    findings: list[LeakageFinding] = []
    if record.source != "dmhc" or not record.summary:
        return findings
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


def audit_dmhc_reasoning(records: Sequence[ItemRecord]) -> list[LeakageFinding]:
    """:func:`dmhc_reasoning_findings` of every row, in row order.

    Args:
        records: dataset rows; rows of other sources are skipped.

    Returns:
        The findings; empty when the DMHC summaries are clean.
    """
    return [finding for record in records for finding in dmhc_reasoning_findings(record)]


def outcome_language_findings(record: ItemRecord) -> list[LeakageFinding]:
    """Matches of :data:`OUTCOME_PATTERNS` in one row's model input.

    Args:
        record: a dataset row, rendered with ``record_model_input``.

    Returns:
        One finding per match, segment ``"text"`` then ``"text_pair"``, pattern by
        pattern; empty when the input is clean.
    """
    findings: list[LeakageFinding] = []
    model_input = record_model_input(record)
    for segment, text in (("text", model_input.text), ("text_pair", model_input.text_pair)):
        for name, pattern in OUTCOME_PATTERNS:
            for m in pattern.finditer(text):
                findings.append(LeakageFinding(record.id, segment, name, m.start(), m.end()))
    return findings


def audit_outcome_language(records: Sequence[ItemRecord]) -> list[LeakageFinding]:
    """Scan every model input for outcome language, and DMHC summaries for reasoning.

    Args:
        records: dataset rows; each is rendered with ``record_model_input``.

    Returns:
        The :func:`outcome_language_findings` of every row, in row order, then the
        findings of :func:`audit_dmhc_reasoning`; empty when the inputs are clean.
    """
    findings = [finding for record in records for finding in outcome_language_findings(record)]
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


class NearDuplicateGroups:
    """Groups merged when their summaries are near-duplicates, fed one row at a time.

    Summaries are compared by the Jaccard similarity of word 5-shingles, estimated with
    MinHash LSH; summaries with fewer than :data:`MIN_WORDS_FOR_NEAR_DUPLICATE` words are
    skipped, and a group's repeated summary (its items share one) is hashed once. Holds
    one LSH entry and a 16-byte digest per distinct (group, summary), never the text, so
    rows can stream past it.

    Args:
        threshold: Jaccard similarity in (0, :data:`MAX_NEAR_DUPLICATE_THRESHOLD`] above
            which two summaries are the same case.
        num_perm: MinHash permutations (more is more precise and slower).
        seed: MinHash seed, for reproducible builds.
    """

    def __init__(
        self,
        *,
        threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
        num_perm: int = 128,
        seed: int = 1,
    ) -> None:
        self._num_perm = num_perm
        self._seed = seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._parent: dict[str, str] = {}
        self._seen: set[bytes] = set()

    def _find(self, group: str) -> str:
        parent = self._parent
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    def add(self, group_id: str, summary: str) -> None:
        """Add one row: its group, merged with every earlier group of a similar summary.

        Args:
            group_id: the row's group (letter or case).
            summary: the row's summary text.
        """
        self._parent.setdefault(group_id, group_id)
        if len(summary.split()) < MIN_WORDS_FOR_NEAR_DUPLICATE:
            return
        key = hashlib.blake2b(f"{group_id}\x00{summary}".encode(), digest_size=16).digest()
        if key in self._seen:
            return
        self._seen.add(key)
        minhash = MinHash(num_perm=self._num_perm, seed=self._seed)
        minhash.update_batch(list(_shingles(summary)))
        for other in self._lsh.query(minhash):
            a, b = self._find(group_id), self._find(other.split("\x00", 1)[0])
            if a != b:
                self._parent[max(a, b)] = min(a, b)
        self._lsh.insert(f"{group_id}\x00{len(self._seen)}", minhash)

    def merged(self) -> dict[str, str]:
        """A map from every group added, in order of first appearance, to its merged
        group id (the smallest group id of its connected component); unmerged groups map
        to themselves."""
        return {group: self._find(group) for group in self._parent}


def near_duplicate_groups(
    records: Sequence[ItemRecord],
    *,
    threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    num_perm: int = 128,
    seed: int = 1,
) -> dict[str, str]:
    """Merge groups whose summaries are near-duplicates (see :class:`NearDuplicateGroups`).

    Args:
        records: dataset rows.
        threshold: Jaccard similarity in (0, :data:`MAX_NEAR_DUPLICATE_THRESHOLD`] above
            which two summaries are the same case.
        num_perm: MinHash permutations (more is more precise and slower).
        seed: MinHash seed, for reproducible builds.

    Returns:
        A map from every ``group_id`` in ``records`` to its merged group id (the
        smallest group id of its connected component); unmerged groups map to
        themselves.
    """
    groups = NearDuplicateGroups(threshold=threshold, num_perm=num_perm, seed=seed)
    for record in records:
        groups.add(record.group_id, record.summary)
    return groups.merged()


def straddling_groups(
    group_ids: Iterable[str], merged: Mapping[str, str], folds: Iterable[int]
) -> list[str]:
    """Merged groups whose rows sit in more than one fold (should be none).

    Args:
        group_ids: the group of each row.
        merged: every group's merged group (:meth:`NearDuplicateGroups.merged`).
        folds: the fold of each row, aligned with ``group_ids``.

    Returns:
        The merged group ids that straddle folds, sorted.
    """
    seen: dict[str, int] = {}
    straddling: set[str] = set()
    for group_id, fold in zip(group_ids, folds, strict=True):
        group = merged[group_id]
        if seen.setdefault(group, fold) != fold:
            straddling.add(group)
    return sorted(straddling)


def folds_straddled(records: Sequence[ItemRecord], folds: Sequence[int]) -> list[str]:
    """Merged groups whose items sit in more than one fold (should be none).

    Args:
        records: dataset rows.
        folds: the fold of each row, aligned with ``records``.

    Returns:
        The merged group ids (see :func:`near_duplicate_groups`, default settings) that
        straddle folds.
    """
    merged = near_duplicate_groups(records)
    return straddling_groups((record.group_id for record in records), merged, folds)

"""Does the estimate read the request? Ranking and spread inside letters.

One IMR letter decides several requested items on one case summary. A model that reads
only the summary gives every item of a letter the same score, yet 12 of the 194 DWC
letters have mixed outcomes and hold half the Overturned items (issue 22). Two figures
measure whether the request moves the estimate where the record says it should:

* **within-letter concordance**: over the (Overturned, Upheld) pairs of items from the
  same letter, the share the model orders correctly (ties count one half). It is AUROC
  restricted to pairs that share a summary (the C-index of Harrell et al. 1982 computed
  within clusters); 0.5 is a coin, and a summary-only model scores 0.5 exactly.
* **within-letter spread**: per letter with several items, max - min of P(Overturned);
  and the share of the variance of P that lies within letters (one-way ANOVA
  decomposition: within-letter sum of squares over total).

The 95% interval resamples mixed letters with replacement (cluster bootstrap), as the
other metrics do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]
#: The value of a figure with nothing to measure.
NAN = float("nan")


@dataclass(frozen=True)
class LetterPairs:
    """The (Overturned, Upheld) pairs of one mixed letter.

    Attributes:
        correct: pairs ordered correctly, ties counted as one half.
        pairs: all (Overturned, Upheld) pairs in the letter, >= 1.
    """

    correct: float
    pairs: int


def letter_pairs(
    groups: Sequence[str], labels: npt.ArrayLike, p_overturned: npt.ArrayLike
) -> list[LetterPairs]:
    """The pair counts of each letter holding both outcomes, in first-seen order.

    Args:
        groups: the letter (group id) of each item, length n.
        labels: 0 (Upheld) / 1 (Overturned), shape ``(n,)``.
        p_overturned: P(Overturned), shape ``(n,)``, in [0, 1].

    Raises:
        InvalidInputError: the three lengths differ.
    """
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(p_overturned, dtype=np.float64)
    if not len(groups) == len(y) == len(p):
        raise InvalidInputError(
            "groups",
            f"groups, labels and scores differ in length: {len(groups)}, {len(y)}, {len(p)}",
        )
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    result = []
    for indices in members.values():
        chosen = np.asarray(indices)
        positive, negative = p[chosen][y[chosen] == 1], p[chosen][y[chosen] == 0]
        if len(positive) == 0 or len(negative) == 0:
            continue
        gap = positive[:, None] - negative[None, :]
        result.append(LetterPairs(float((gap > 0).sum() + 0.5 * (gap == 0).sum()), gap.size))
    return result


def within_letter_concordance(
    groups: Sequence[str],
    labels: npt.ArrayLike,
    p_overturned: npt.ArrayLike,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float, int, int]:
    """Pooled within-letter concordance with a letter-bootstrap 95% interval.

    Args:
        groups / labels / p_overturned: as :func:`letter_pairs`.
        n_bootstrap: resamples of the mixed letters (>= 1).
        seed: seed of the resampling.

    Returns:
        ``(concordance, ci_low, ci_high, n_pairs, n_letters)``; concordance in [0, 1],
        NaN (and NaN bounds) when no letter holds both outcomes.
    """
    letters = letter_pairs(groups, labels, p_overturned)
    if not letters:
        return NAN, NAN, NAN, 0, 0
    correct = np.array([letter.correct for letter in letters])
    pairs = np.array([letter.pairs for letter in letters], dtype=np.float64)
    point = float(correct.sum() / pairs.sum())
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(letters), size=(n_bootstrap, len(letters)))
    resampled = correct[draws].sum(axis=1) / pairs[draws].sum(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return point, float(low), float(high), int(pairs.sum()), len(letters)


def within_letter_spread(groups: Sequence[str], p_overturned: npt.ArrayLike) -> dict[str, float]:
    """How much P(Overturned) moves inside letters with several items.

    Args:
        groups: the letter of each item, length n.
        p_overturned: P(Overturned), shape ``(n,)``.

    Returns:
        ``{"median_spread", "max_spread", "within_variance_share", "letters"}``: the
        median and largest max - min of P over letters with >= 2 items, the within-letter
        share of the total sum of squares of P (0 when every letter scores alike, 1 when
        letters share one mean), and how many letters had >= 2 items. NaN figures when
        none did.
    """
    p = np.asarray(p_overturned, dtype=np.float64)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    spreads, within = [], 0.0
    for indices in members.values():
        values = p[np.asarray(indices)]
        within += float(((values - values.mean()) ** 2).sum())
        if len(values) >= 2:
            spreads.append(float(values.max() - values.min()))
    total = float(((p - p.mean()) ** 2).sum())
    if not spreads:
        return {
            "median_spread": NAN,
            "max_spread": NAN,
            "within_variance_share": NAN,
            "letters": 0.0,
        }
    return {
        "median_spread": float(np.median(spreads)),
        "max_spread": float(np.max(spreads)),
        "within_variance_share": within / total if total > 0 else 0.0,
        "letters": float(len(spreads)),
    }

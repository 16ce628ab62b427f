"""The champion/challenger comparison and the promotion rule (no I/O).

Both models' probabilities are for the same held-out items, so the comparison is paired:
the AUROC difference is tested with a paired cluster bootstrap over letters
(:func:`imr_outcome.train.metrics.paired_bootstrap_auroc`; Efron & Tibshirani 1993,
ch. 16), and calibration is compared with the expected calibration error
(:func:`imr_outcome.train.metrics.expected_calibration_error`; Naeini et al. 2015).
The rule itself lives in config (:class:`imr_outcome.train.config.PromotionConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from imr_outcome.train.bootstrap import paired_bootstrap_auroc
from imr_outcome.train.config import PromotionConfig
from imr_outcome.train.metrics import expected_calibration_error

Outcome = Literal["promote", "keep", "force"]
"""``promote``: the rule passed; ``keep``: it failed; ``force``: promoted by hand."""


@dataclass(frozen=True)
class Comparison:
    """Champion vs challenger on the same held-out items.

    Attributes:
        n_items / n_letters / n_overturned: size of the comparison set.
        champion_auroc / challenger_auroc: AUROC in [0, 1] on all items.
        auroc_delta: ``challenger_auroc - champion_auroc``, in [-1, 1].
        p_value: one-sided paired-bootstrap p-value of "the challenger is not better",
            in [0, 1]; 0 reads as ``< 1 / bootstrap``. NaN when one class only.
        champion_ece / challenger_ece: expected calibration error, in [0, 1].
        ece_delta: ``challenger_ece - champion_ece`` (positive: the challenger is worse).
        bootstrap: the number of paired resamples.
    """

    n_items: int
    n_letters: int
    n_overturned: int
    champion_auroc: float
    challenger_auroc: float
    auroc_delta: float
    p_value: float
    champion_ece: float
    challenger_ece: float
    ece_delta: float
    bootstrap: int

    def as_dict(self) -> dict[str, float | int]:
        """The figures as a flat dict (for MLflow metrics, tags and JSON)."""
        return asdict(self)


def compare(
    labels: npt.NDArray[np.int64],
    p_champion: npt.NDArray[np.float64],
    p_challenger: npt.NDArray[np.float64],
    groups: Sequence[Hashable],
    rule: PromotionConfig,
    *,
    seed: int,
) -> Comparison:
    """Score both models on the same items.

    Args:
        labels: shape (n,), 0 = Upheld, 1 = Overturned.
        p_champion: shape (n,), the champion's calibrated P(Overturned).
        p_challenger: shape (n,), the challenger's calibrated P(Overturned).
        groups: shape (n,), the letter group of each item (resampled together).
        rule: the promotion rule (``bootstrap`` resamples).
        seed: seeds the bootstrap.

    Returns:
        The :class:`Comparison`.

    Raises:
        InvalidInputError: bad labels, probabilities or groups (see ``metrics``).
    """
    from sklearn.metrics import roc_auc_score

    delta, p_value = paired_bootstrap_auroc(
        labels, p_champion, p_challenger, groups, n_boot=rule.bootstrap, seed=seed
    )
    both = 0 < int(labels.sum()) < labels.size
    champion_auroc = float(roc_auc_score(labels, p_champion)) if both else math.nan
    challenger_auroc = float(roc_auc_score(labels, p_challenger)) if both else math.nan
    champion_ece = expected_calibration_error(labels, p_champion)
    challenger_ece = expected_calibration_error(labels, p_challenger)
    return Comparison(
        n_items=int(labels.size),
        n_letters=len(set(groups)),
        n_overturned=int(labels.sum()),
        champion_auroc=champion_auroc,
        challenger_auroc=challenger_auroc,
        auroc_delta=delta,
        p_value=p_value,
        champion_ece=champion_ece,
        challenger_ece=challenger_ece,
        ece_delta=challenger_ece - champion_ece,
        bootstrap=rule.bootstrap,
    )


@dataclass(frozen=True)
class Decision:
    """What the rule (and ``--force``) decided.

    Attributes:
        outcome: ``promote``, ``keep`` or ``force`` (see :data:`Outcome`).
        passed: whether the rule passed, whatever was forced.
        reason: one sentence with the figures that decided it.
    """

    outcome: Outcome
    passed: bool
    reason: str

    @property
    def moves_champion(self) -> bool:
        """True when the challenger becomes ``@champion``."""
        return self.outcome in ("promote", "force")


def describe_rule(rule: PromotionConfig) -> str:
    """The rule in words, e.g. ``"AUROC better with paired bootstrap p < 0.05 and ECE not
    worse by more than 0.01"``."""
    return (
        f"{rule.metric.upper()} better with paired bootstrap p < {rule.max_p_value:g} "
        f"and ECE not worse by more than {rule.max_ece_increase:g}"
    )


def decide(
    comparison: Comparison,
    rule: PromotionConfig,
    *,
    force: bool = False,
    force_reason: str | None = None,
) -> Decision:
    """Apply the promotion rule.

    The challenger passes when ``auroc_delta > 0``, ``p_value < rule.max_p_value`` and
    ``ece_delta <= rule.max_ece_increase``. A NaN figure (one class in the comparison
    set) fails the rule.

    Args:
        comparison: the figures.
        rule: the thresholds.
        force: promote even when the rule fails (the reason says so).
        force_reason: the engineer's reason for forcing, recorded verbatim.

    Returns:
        The :class:`Decision`.
    """
    c = comparison
    auroc_ok = c.auroc_delta > 0 and c.p_value < rule.max_p_value
    ece_ok = c.ece_delta <= rule.max_ece_increase
    figures = (
        f"AUROC {c.challenger_auroc:.3f} vs {c.champion_auroc:.3f} "
        f"(delta {c.auroc_delta:+.3f}, p = {c.p_value:.3f}), "
        f"ECE {c.challenger_ece:.3f} vs {c.champion_ece:.3f} (delta {c.ece_delta:+.3f}) "
        f"on {c.n_items} items from {c.n_letters} held-out letters"
    )
    passed = bool(auroc_ok and ece_ok)
    if passed:
        return Decision("promote", True, f"passed: {figures}")
    failures = []
    if not auroc_ok:
        failures.append(f"AUROC not better at p < {rule.max_p_value:g}")
    if not ece_ok:
        failures.append(f"ECE worse by more than {rule.max_ece_increase:g}")
    failed = f"failed ({'; '.join(failures)}): {figures}"
    if force:
        why = f"; reason given: {force_reason}" if force_reason else ""
        return Decision("force", False, f"forced with --force although the rule {failed}{why}")
    return Decision("keep", False, failed)

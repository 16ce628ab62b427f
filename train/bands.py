"""Fitting the decision bands of :class:`~imr_outcome.model.decision.DecisionRule`.

**Rule for the edges** (:func:`fit_decision_rule`, on out-of-fold calibrated
scores of the training rows, never on test rows): ``overturned_edge`` is the lowest score
``t`` such that the items with ``p >= t`` number at least ``min_band_items`` and at least
``overturned_precision`` of them were Overturned; ``upheld_edge`` is the highest ``t`` such
that the items with ``p <= t`` number at least ``min_band_items`` and at least
``upheld_precision`` of them were Upheld. An edge no ``t`` satisfies is None: that band is
never given (honest when the model cannot reach the target). This is a
precision-targeted rule (as in selective classification, Geifman & El-Yaniv 2017); a
user-chosen cost ratio sets the machine ``label`` instead (``threshold.objective=bayes``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels, as_probabilities
from imr_outcome.model.decision import BANDS, BandRecord, DecisionRule
from imr_outcome.train.config import DecisionConfig


def fit_decision_rule(
    y_true: npt.ArrayLike,
    p_overturned: npt.ArrayLike,
    config: DecisionConfig,
    *,
    source: str,
) -> DecisionRule:
    """Fit the band edges on out-of-fold calibrated scores (rule in the module docstring).

    Args:
        y_true: shape (n,), 0 (Upheld) / 1 (Overturned); training rows only.
        p_overturned: shape (n,), out-of-fold calibrated P(Overturned) of those rows.
        config: the targets and abstention thresholds.
        source: the training source, e.g. ``"dwc"``.

    Returns:
        The :class:`DecisionRule`; ``base_rate`` is the share of Overturned in ``y_true``
        (clipped to [1e-3, 1 - 1e-3] so the relative risk stays finite).

    Raises:
        InvalidInputError: bad labels or probabilities.
    """
    y = as_labels(y_true)
    p = as_probabilities(p_overturned, y.size, "p_overturned")
    if y.size == 0:
        raise InvalidInputError("y_true", "is empty; need out-of-fold scores to set bands")
    base_rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    order = np.argsort(p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    overturned_edge: float | None = None
    # items with p >= p_sorted[i]: suffix from the first index of that value
    for t in np.unique(p_sorted):
        members = y_sorted[np.searchsorted(p_sorted, t, side="left") :]
        if members.size < config.min_band_items:
            break
        if members.mean() >= config.overturned_precision:
            overturned_edge = float(t)
            break
    upheld_edge: float | None = None
    for t in np.unique(p_sorted)[::-1]:
        members = y_sorted[: np.searchsorted(p_sorted, t, side="right")]
        if members.size < config.min_band_items:
            break
        if 1.0 - members.mean() >= config.upheld_precision:
            upheld_edge = float(t)
            break
    if upheld_edge is not None and overturned_edge is not None and upheld_edge >= overturned_edge:
        upheld_edge = None  # targets this loose cannot both hold; keep the stricter band
    rule = DecisionRule(
        source=source,
        base_rate=base_rate,
        upheld_edge=upheld_edge,
        overturned_edge=overturned_edge,
        min_summary_words=config.min_summary_words,
        min_clinical_terms=config.min_clinical_terms,
    )
    return DecisionRule(**{**asdict(rule), "records": band_records(rule, y, p)})


def band_records(
    rule: DecisionRule, y_true: npt.ArrayLike, p_overturned: npt.ArrayLike
) -> dict[str, BandRecord]:
    """Per band: items, Overturned share and accuracy of ``rule`` on labelled scores.

    Args:
        rule: the band edges.
        y_true: shape (n,), 0/1 labels.
        p_overturned: shape (n,), calibrated P(Overturned).

    Returns:
        A :class:`BandRecord` for the three score bands.
    """
    y = as_labels(y_true)
    p = as_probabilities(p_overturned, y.size, "p_overturned")
    bands = np.asarray([rule.band(float(x)) for x in p], dtype=object)
    records: dict[str, BandRecord] = {}
    for name in BANDS[:3]:
        members = y[bands == name]
        rate = float(members.mean()) if members.size else None
        accuracy: float | None = None
        if rate is not None and name == "likely upheld":
            accuracy = 1.0 - rate
        elif rate is not None and name == "likely overturned":
            accuracy = rate
        records[name] = BandRecord(n=int(members.size), overturned_rate=rate, accuracy=accuracy)
    return records

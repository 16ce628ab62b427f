"""The decision a person reads: a band, the base rate, the relative risk, or an abstention.

A calibrated P(Overturned) of 0.08 is easy to misread at a base rate of 11%. The model
therefore also says which **band** an item falls in and how often that band was right on
letters the model had not seen:

- ``"likely upheld"``: ``p <= upheld_edge``;
- ``"likely overturned"``: ``p >= overturned_edge``;
- ``"uncertain"``: in between;
- ``"insufficient information"``: the input is too thin to rank (no case summary, too
  short a summary, or no clinical term at all); the probability is still shown. Text
  that merely reads unlike the training letters gets a warning and a band, not an
  abstention (:mod:`imr_outcome.model.warnings`).

The edges are fitted on out-of-fold calibrated scores of the training rows, never on test
rows (:func:`imr_outcome.train.bands.fit_decision_rule`, which states the rule). A
user-chosen cost ratio sets the machine ``label`` instead (``threshold.objective=bayes``).

The rule is plain data (:meth:`DecisionRule.to_dict`), saved in the model artifact, so the
predictor, the pyfunc and Spark scoring read the same edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.defaults import MIN_REQUEST_CLINICAL_TERMS, MIN_SUMMARY_WORDS

Band = Literal["likely upheld", "uncertain", "likely overturned", "insufficient information"]

#: The bands, in display order.
BANDS: tuple[Band, ...] = (
    "likely upheld",
    "uncertain",
    "likely overturned",
    "insufficient information",
)


#: Relative risks below / above these read "less / more likely than usual"; between them,
#: "about as likely as usual" (a 20% / 25% change either way, symmetric on the log scale).
LESS_LIKELY_BELOW = 0.8
MORE_LIKELY_ABOVE = 1.25

_COMPARED = {
    "less likely than usual": "below",
    "more likely than usual": "above",
    "about as likely as usual": "close to",
}


def compared_with_usual(relative_risk: float) -> str:
    """``relative_risk`` (>= 0; 1.0 is the usual rate) in words: "less likely than usual",
    "more likely than usual" or "about as likely as usual" (see :data:`LESS_LIKELY_BELOW`)."""
    if relative_risk < LESS_LIKELY_BELOW:
        return "less likely than usual"
    if relative_risk > MORE_LIKELY_ABOVE:
        return "more likely than usual"
    return "about as likely as usual"


def headline_without_rule(label: str, p_label: float) -> str:
    """The first sentence for a model saved without a decision rule: the label and its
    probability, e.g. "Likely upheld: 89%." ("Leaning" below 0.5)."""
    strength = "Likely" if p_label >= 0.5 else "Leaning"
    return f"{strength} {label.lower()}: {p_label:.0%}."


@dataclass(frozen=True)
class BandRecord:
    """How a band did on out-of-fold items of the training rows.

    Attributes:
        n: items in the band.
        overturned_rate: share of them that were Overturned (0-1; None when ``n == 0``).
        accuracy: share for which the band was right (Upheld for "likely upheld",
            Overturned for "likely overturned"; None for "uncertain" or ``n == 0``).
    """

    n: int
    overturned_rate: float | None
    accuracy: float | None


@dataclass(frozen=True)
class DecisionRule:
    """Band edges, the base rate and the abstention thresholds of one model.

    Attributes:
        source: the data source the model was trained on (``"dwc"`` / ``"dmhc"``).
        base_rate: the training prior of Overturned for that source, in (0, 1).
        upheld_edge: ``p <= upheld_edge`` is "likely upheld"; None: never.
        overturned_edge: ``p >= overturned_edge`` is "likely overturned"; None: never.
        records: band name -> :class:`BandRecord` on out-of-fold items.
        min_summary_words / min_clinical_terms: the one "too little input" rule (set from
            :class:`~imr_outcome.train.config.DecisionConfig`; defaults in
            :mod:`imr_outcome.model.defaults`). The short-summary warning uses the same
            number.
    """

    source: str
    base_rate: float
    upheld_edge: float | None
    overturned_edge: float | None
    records: dict[str, BandRecord] = field(default_factory=dict)
    min_summary_words: int = MIN_SUMMARY_WORDS
    min_clinical_terms: int = MIN_REQUEST_CLINICAL_TERMS

    def band(self, p_overturned: float) -> Band:
        """The band of a calibrated P(Overturned) in [0, 1] (no abstention check)."""
        if self.overturned_edge is not None and p_overturned >= self.overturned_edge:
            return "likely overturned"
        if self.upheld_edge is not None and p_overturned <= self.upheld_edge:
            return "likely upheld"
        return "uncertain"

    def relative_risk(self, p_overturned: float) -> float:
        """``p_overturned / base_rate``: 2.0 means twice the usual rate."""
        return p_overturned / self.base_rate

    def insufficient(self, *, summary_words: int | None, clinical_terms: int) -> str | None:
        """Why the input is too thin to band, or None when it is not.

        Args:
            summary_words: words in the case summary; None when the model does not read
                a summary (metadata-only kinds), which skips the summary check.
            clinical_terms: clinical terms found in the request and summary together.

        Returns:
            A short reason for a person, or None.
        """
        if summary_words is not None and summary_words < self.min_summary_words:
            if summary_words == 0:
                return "there is no case summary, only the request"
            return (
                f"the case summary has {summary_words} words; at least "
                f"{self.min_summary_words} are needed"
            )
        if clinical_terms < self.min_clinical_terms:
            return "the request and summary use no clinical vocabulary"
        return None

    def decide(
        self, p_overturned: float, *, summary_words: int | None, clinical_terms: int
    ) -> tuple[Band, str]:
        """The band of one item and its reason (see :meth:`insufficient` for the args).

        The reason is a plain sentence that compares the estimate with the usual rate.
        """
        reason = self.insufficient(summary_words=summary_words, clinical_terms=clinical_terms)
        if reason is not None:
            return "insufficient information", reason
        band = self.band(p_overturned)
        usual = f"the usual {self.base_rate:.0%}"
        if band == "likely overturned":
            return band, f"{p_overturned:.0%} is well above {usual}"
        if band == "likely upheld":
            return band, f"{p_overturned:.0%} is well below {usual}"
        where = _COMPARED[compared_with_usual(self.relative_risk(p_overturned))]
        return band, f"{p_overturned:.0%} is {where} {usual}, not far enough to call either way"

    def headline(self, p_overturned: float, band: Band, reason: str) -> str:
        """The sentence a person reads first, for the band and reason :meth:`decide` gave.

        Examples: "Uncertain: less likely than usual to be overturned, 7% (usual: 11%)."
        and "Not enough information to estimate: there is no case summary, only the
        request." The words "less / more / about as likely as usual" come from
        :func:`compared_with_usual`, the same words as the band reason's.
        """
        if band == "insufficient information":
            return f"Not enough information to estimate: {reason}."
        lean = compared_with_usual(self.relative_risk(p_overturned))
        return (
            f"{band.capitalize()}: {lean} to be overturned, {p_overturned:.0%} "
            f"(usual: {self.base_rate:.0%})."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (see :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> DecisionRule:
        """Rebuild a rule from :meth:`to_dict`.

        Raises:
            InvalidInputError: a missing key or a base rate outside (0, 1).
        """
        try:
            records = {
                name: BandRecord(**record) for name, record in dict(state["records"]).items()
            }
            known = {k: v for k, v in dict(state).items() if k != "abstain_on_ood"}  # older models
            rule = cls(**{**known, "records": records})
        except (KeyError, TypeError) as exc:
            raise InvalidInputError("decision", f"unreadable decision rule ({exc})") from exc
        if not 0.0 < rule.base_rate < 1.0:
            raise InvalidInputError("decision.base_rate", f"{rule.base_rate} is outside (0, 1)")
        return rule

"""The decision a person reads: a band, the base rate, the relative risk, or an abstention.

A calibrated P(Overturned) of 0.08 is easy to misread at a base rate of 11%. The model
therefore also says which **band** an item falls in and how often that band was right on
letters the model had not seen:

- ``"likely upheld"``: ``p <= upheld_edge``;
- ``"likely overturned"``: ``p >= overturned_edge``;
- ``"uncertain"``: in between;
- ``"insufficient information"``: the input is too thin to rank (too short a summary, no
  clinical vocabulary, or out of distribution); the probability is still shown.

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

Band = Literal["likely upheld", "uncertain", "likely overturned", "insufficient information"]

#: The bands, in display order.
BANDS: tuple[Band, ...] = (
    "likely upheld",
    "uncertain",
    "likely overturned",
    "insufficient information",
)


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
        min_summary_words / min_clinical_terms / abstain_on_ood: the abstention
            thresholds (set from :class:`~imr_outcome.train.config.DecisionConfig`).
    """

    source: str
    base_rate: float
    upheld_edge: float | None
    overturned_edge: float | None
    records: dict[str, BandRecord] = field(default_factory=dict)
    min_summary_words: int = 20
    min_clinical_terms: int = 1
    abstain_on_ood: bool = True

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

    def insufficient(
        self,
        *,
        summary_words: int | None,
        clinical_terms: int,
        out_of_distribution: bool = False,
    ) -> str | None:
        """Why the input is too thin to band, or None when it is not.

        Args:
            summary_words: words in the case summary; None when the model does not read
                a summary (metadata-only kinds), which skips the summary check.
            clinical_terms: clinical terms found in the request and summary together.
            out_of_distribution: the encoder distance is beyond the model's OOD threshold.

        Returns:
            A short reason for a person, or None.
        """
        if self.abstain_on_ood and out_of_distribution:
            return "the text is unlike the letters the model was trained on"
        if summary_words is not None and summary_words < self.min_summary_words:
            if summary_words == 0:
                return "there is no case summary"
            return (
                f"the case summary has {summary_words} words; at least "
                f"{self.min_summary_words} are needed"
            )
        if clinical_terms < self.min_clinical_terms:
            return "the request and summary use no clinical vocabulary"
        return None

    def decide(
        self,
        p_overturned: float,
        *,
        summary_words: int | None,
        clinical_terms: int,
        out_of_distribution: bool = False,
    ) -> tuple[Band, str]:
        """The band of one item and its reason (see :meth:`insufficient` for the args)."""
        reason = self.insufficient(
            summary_words=summary_words,
            clinical_terms=clinical_terms,
            out_of_distribution=out_of_distribution,
        )
        if reason is not None:
            return "insufficient information", reason
        band = self.band(p_overturned)
        if band == "likely overturned":
            assert self.overturned_edge is not None
            return (
                band,
                f"P(Overturned) {p_overturned:.0%} is at or above {self.overturned_edge:.0%}",
            )
        if band == "likely upheld":
            assert self.upheld_edge is not None
            return band, f"P(Overturned) {p_overturned:.0%} is at or below {self.upheld_edge:.0%}"
        return band, "the score is between the band edges"

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
            rule = cls(**{**dict(state), "records": records})
        except (KeyError, TypeError) as exc:
            raise InvalidInputError("decision", f"unreadable decision rule ({exc})") from exc
        if not 0.0 < rule.base_rate < 1.0:
            raise InvalidInputError("decision.base_rate", f"{rule.base_rate} is outside (0, 1)")
        return rule

"""How past requests of the same kind fared: Overturned rates with n, CI and shrinkage.

For a request, the historical share of Overturned decisions (a) of its request category,
(b) of the finer requested item where at least :data:`MIN_ITEM_CASES` training items share
it (:func:`~imr_outcome.data.request_terms.request_item` for DWC letters: "Hydrocodone",
"lumbar MRI", "acupuncture"; the treatment subcategory for the DMHC table), and, for
DMHC, (c) of its treatment category with the same diagnosis category. Each rate carries:

* ``n`` and the Overturned count, the raw rate and its **Wilson score 95% interval**
  (Wilson 1927, "Probable inference, the law of succession, and statistical inference",
  JASA 22: 209-212; ``statsmodels.stats.proportion.proportion_confint(method="wilson")``
  where statsmodels is installed, else the closed form below with scipy's normal
  quantile);
* an **empirical-Bayes** rate: the group's count shrunk toward its parent's rate (an item
  or diagnosis toward its category, a category toward the whole source) under a
  beta-binomial model, ``(overturned + M * parent_rate) / (n + M)``. The prior strength
  ``M = (1 - rho) / rho`` comes from the intra-class correlation ``rho`` estimated by the
  method of moments over all groups of one level (Kleinman 1973, "Proportions with
  extraneous variance: single and independent samples", JASA 68: 46-54; the beta-binomial
  prior as in Efron & Morris 1975), clipped to [:data:`MIN_PRIOR`, :data:`MAX_PRIOR`];
* ``small_sample`` when ``n`` < :data:`SMALL_SAMPLE` (the shrunk rate is then the one to
  read), the years of the decisions and the source.

The table is fitted at registration from the model's own training rows and saved as one
JSON file in the model directory (:data:`RATES_FILE`); serving reads only that file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from imr_outcome.data.categories import request_category
from imr_outcome.data.request_terms import request_item
from imr_outcome.errors import IncompatibleModelError, InvalidInputError

#: The file in a model (record) directory.
RATES_FILE = "outcome_rates.json"
#: Bump when the file layout changes incompatibly.
FORMAT_VERSION = 1
#: Groups with fewer cases are flagged ``small_sample``.
SMALL_SAMPLE = 10
#: A finer item (or a DMHC diagnosis) is reported only from this many training cases on;
#: below it only its category is.
MIN_ITEM_CASES = 3
#: Bounds of the empirical-Bayes prior strength (pseudo-cases of the parent's rate).
MIN_PRIOR = 1.0
MAX_PRIOR = 1000.0
#: z of a two-sided 95% interval.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class RateRow:
    """One decided training item, as the rates count it.

    Attributes:
        request: the request text (DMHC: ``"TreatmentCategory: TreatmentSubCategory"``).
        label: 0 Upheld, 1 Overturned.
        category: the request category of the dataset (None: derived from ``request``).
        year: the decision's year, when known.
        diagnosis: the DMHC diagnosis category, when known.
    """

    request: str
    label: int
    category: str | None = None
    year: int | None = None
    diagnosis: str | None = None


@dataclass(frozen=True)
class Rate:
    """The Overturned rate of one group of past decisions.

    Attributes:
        level: ``"source"`` (all training items), ``"category"``, ``"item"`` or
            ``"diagnosis"`` (DMHC: category and diagnosis category).
        key: the group, e.g. ``"pharmaceuticals"``, ``"Hydrocodone"``,
            ``"Pharmacy | Mental Disorder"``.
        n: decided items in the group, >= 1.
        overturned: how many were Overturned, 0..n.
        rate: ``overturned / n``.
        ci_low / ci_high: Wilson score 95% interval of ``rate``, within [0, 1].
        shrunk_rate: the empirical-Bayes rate (equal to ``rate`` for the source level).
        parent: the key of the group it is shrunk toward (None for the source level).
        prior_strength: ``M``, pseudo-cases of the parent's rate added (0 for the source).
        small_sample: ``n`` < :data:`SMALL_SAMPLE`.
        year_min / year_max: years of the decisions (None when unknown).
        source: where the counts come from (the training data of the model).
    """

    level: str
    key: str
    n: int
    overturned: int
    rate: float
    ci_low: float
    ci_high: float
    shrunk_rate: float
    parent: str | None
    prior_strength: float
    small_sample: bool
    year_min: int | None
    year_max: int | None
    source: str


@dataclass(frozen=True)
class RateLookup:
    """The rates that apply to one request.

    Attributes:
        source: the whole training set's rate (always present).
        category: the request category's rate; None when no training item had it.
        item: the finer item's rate; None without an item or with fewer than
            :data:`MIN_ITEM_CASES` training cases.
        diagnosis: DMHC only: the category with the given diagnosis category, likewise.
    """

    source: Rate
    category: Rate | None = None
    item: Rate | None = None
    diagnosis: Rate | None = None

    def rates(self) -> list[Rate]:
        """The present rates, finest first (item, diagnosis, category, source)."""
        found = (self.item, self.diagnosis, self.category, self.source)
        return [rate for rate in found if rate is not None]


def wilson_interval(overturned: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927).

    Args:
        overturned: successes, 0..n.
        n: trials, >= 1.
        z: the normal quantile (1.96 for 95%).

    Returns:
        ``(low, high)`` within [0, 1].

    Raises:
        InvalidInputError: ``n`` < 1 or ``overturned`` outside 0..n.
    """
    if n < 1 or not 0 <= overturned <= n:
        raise InvalidInputError("n", f"need n >= 1 and 0 <= overturned <= n, got {overturned}/{n}")
    try:
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        p = overturned / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return max(0.0, centre - half), min(1.0, centre + half)
    low, high = proportion_confint(overturned, n, alpha=2 * (1 - _normal_cdf(z)), method="wilson")
    return float(low), float(high)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def prior_strength(groups: Sequence[tuple[str, int, int, float]]) -> float:
    """The beta-binomial prior strength ``M`` of one level, by the method of moments.

    Kleinman's (1973) moment estimator of the intra-class correlation ``rho``, pooled over
    parents: with group sizes ``n_i``, counts ``x_i`` and the parent rate ``p_j`` of each
    group, ``S = sum_i n_i (x_i / n_i - p_j)^2 / (p_j (1 - p_j))`` has expectation
    ``sum_j (k_j - 1) + rho * sum_j (N_j - sum n_i^2 / N_j - (k_j - 1))``, solved for
    ``rho``; ``M = (1 - rho) / rho``.

    Args:
        groups: ``(parent key, n, overturned, parent rate)`` per group; the groups of one
            parent must partition it (their ``n`` sum to the parent's) for the moments
            to hold.

    Returns:
        ``M`` in [:data:`MIN_PRIOR`, :data:`MAX_PRIOR`]; :data:`MAX_PRIOR` (pool fully)
        when the groups vary no more than binomial noise or there is nothing to estimate.
    """
    by_parent: dict[str, list[tuple[int, int]]] = {}
    parent_rates: dict[str, float] = {}
    for key, n, overturned, rate in groups:
        if n > 0 and 0.0 < rate < 1.0:
            by_parent.setdefault(key, []).append((n, overturned))
            parent_rates[key] = rate
    statistic = 0.0
    expected_null = 0.0
    slope = 0.0
    for key, members in by_parent.items():
        parent = parent_rates[key]
        if len(members) < 2:
            continue
        total = sum(n for n, _ in members)
        statistic += sum(n * (x / n - parent) ** 2 for n, x in members) / (parent * (1 - parent))
        expected_null += len(members) - 1
        slope += total - sum(n * n for n, _ in members) / total - (len(members) - 1)
    if slope <= 0:
        return MAX_PRIOR
    rho = (statistic - expected_null) / slope
    if rho <= 1 / (1 + MAX_PRIOR):
        return MAX_PRIOR
    return float(min(MAX_PRIOR, max(MIN_PRIOR, (1 - rho) / rho)))


@dataclass
class _Group:
    n: int = 0
    overturned: int = 0
    years: list[int] = field(default_factory=list)

    def add(self, row: RateRow) -> None:
        self.n += 1
        self.overturned += int(row.label)
        if row.year is not None:
            self.years.append(int(row.year))


class RequestKind(NamedTuple):
    """What kind of request this is: its category and, where one is known, the finer item.

    Attributes:
        category: the request category (DWC) or treatment category (DMHC).
        item: :func:`~imr_outcome.data.request_terms.request_item` (DWC: "Hydrocodone",
            "lumbar MRI") or the treatment subcategory (DMHC); None when none is known.
    """

    category: str
    item: str | None


def request_kind(request: str, category: str | None, source: str) -> RequestKind:
    """The :class:`RequestKind` of ``request`` the way the rates group it.

    Args:
        request: the request text (DMHC: ``"TreatmentCategory: TreatmentSubCategory"``).
        category: the dataset's request category when known, else derived from
            ``request`` as ``data build`` derives it.
        source: ``"dwc"`` or ``"dmhc"``.
    """
    return RequestKind(_category(request, category, source), _item(request, source))


def _category(row_request: str, category: str | None, source: str) -> str:
    if category:
        return category
    if source == "dmhc":
        return row_request.split(":", 1)[0].strip() or "other"
    return request_category(row_request)


def _item(request: str, source: str) -> str | None:
    if source == "dmhc":
        parts = request.split(":", 1)
        return parts[1].strip() or None if len(parts) == 2 else None
    return request_item(request)


class OutcomeRates:
    """Overturned rates by request category, item (and DMHC diagnosis), fitted on the
    training rows of one source. Build with :meth:`fit`; read with :meth:`lookup`.

    Attributes:
        source_name: ``"dwc"`` or ``"dmhc"``: how categories and items are read.
        source_label: the human-readable source put in every :class:`Rate`.
        rates: level -> key -> :class:`Rate`; levels ``source`` (key ``"all"``),
            ``category``, ``item``, ``diagnosis``.
    """

    def __init__(self, source_name: str, source_label: str, rates: dict[str, dict[str, Rate]]):
        self.source_name = source_name
        self.source_label = source_label
        self.rates = rates

    @classmethod
    def fit(cls, rows: Sequence[RateRow], *, source_name: str, source_label: str) -> OutcomeRates:
        """Count, interval and shrink the rates of ``rows``.

        Args:
            rows: the model's training items (never test items).
            source_name: ``"dwc"`` (letters) or ``"dmhc"`` (the health-plan table).
            source_label: e.g. ``"DWC IMR letters, training folds of dataset 1a2b3c4d"``.

        Returns:
            The fitted table.

        Raises:
            InvalidInputError: no rows, a label outside {0, 1}, or an unknown source.
        """
        if source_name not in ("dwc", "dmhc"):
            raise InvalidInputError("source", f"expected 'dwc' or 'dmhc', got {source_name!r}")
        if not rows:
            raise InvalidInputError("rows", "no training rows to count; the rates need some")
        if any(row.label not in (0, 1) for row in rows):
            raise InvalidInputError("label", "expected 0 (Upheld) or 1 (Overturned)")
        levels: dict[str, dict[str, _Group]] = {"source": {}, "category": {}, "item": {}}
        levels["diagnosis"] = {}
        parent_of: dict[str, dict[str, str]] = {"category": {}, "item": {}, "diagnosis": {}}
        for row in rows:
            category, item = request_kind(row.request, row.category, source_name)
            levels["source"].setdefault("all", _Group()).add(row)
            levels["category"].setdefault(category, _Group()).add(row)
            parent_of["category"][category] = "all"
            # An unkeyed item joins its category's remainder, so items partition it.
            item_key = f"{category}\x00{item or ''}"
            levels["item"].setdefault(item_key, _Group()).add(row)
            parent_of["item"][item_key] = category
            if source_name == "dmhc":
                diagnosis_key = f"{category}\x00{row.diagnosis or ''}"
                levels["diagnosis"].setdefault(diagnosis_key, _Group()).add(row)
                parent_of["diagnosis"][diagnosis_key] = category
        total = levels["source"]["all"]
        table: dict[str, dict[str, Rate]] = {
            "source": {"all": cls._rate("source", "all", total, total, None, 0.0, source_label)}
        }
        for level, parent_level in (("category", "source"), ("item", "category")):
            table[level] = cls._level(
                level, levels[level], levels[parent_level], parent_of[level], source_label
            )
        table["diagnosis"] = cls._level(
            "diagnosis",
            levels["diagnosis"],
            levels["category"],
            parent_of["diagnosis"],
            source_label,
        )
        return cls(source_name, source_label, table)

    @staticmethod
    def _level(
        level: str,
        groups: Mapping[str, _Group],
        parents: Mapping[str, _Group],
        parent_of: Mapping[str, str],
        source_label: str,
    ) -> dict[str, Rate]:
        def parent_rate(key: str) -> float:
            parent = parents[parent_of[key]]
            return parent.overturned / parent.n

        strength = prior_strength(
            [
                (parent_of[key], group.n, group.overturned, parent_rate(key))
                for key, group in groups.items()
            ]
        )
        rates: dict[str, Rate] = {}
        for key, group in groups.items():
            shown = key.split("\x00", 1)[1] if "\x00" in key else key
            if level != "category" and (not shown or group.n < MIN_ITEM_CASES):
                continue
            name = f"{parent_of[key]} | {shown}" if level == "diagnosis" else shown
            rates[key] = OutcomeRates._rate(
                level, name, group, parents[parent_of[key]], parent_of[key], strength, source_label
            )
        return rates

    @staticmethod
    def _rate(
        level: str,
        key: str,
        group: _Group,
        parent: _Group,
        parent_key: str | None,
        strength: float,
        source_label: str,
    ) -> Rate:
        low, high = wilson_interval(group.overturned, group.n)
        parent_rate = parent.overturned / parent.n
        return Rate(
            level=level,
            key=key,
            n=group.n,
            overturned=group.overturned,
            rate=group.overturned / group.n,
            ci_low=low,
            ci_high=high,
            shrunk_rate=(group.overturned + strength * parent_rate) / (group.n + strength),
            parent=parent_key,
            prior_strength=strength,
            small_sample=group.n < SMALL_SAMPLE,
            year_min=min(group.years) if group.years else None,
            year_max=max(group.years) if group.years else None,
            source=source_label,
        )

    def request_kind(self, request: str, *, category: str | None = None) -> RequestKind:
        """:func:`request_kind` under this table's source."""
        return request_kind(request, category, self.source_name)

    def lookup(
        self, request: str, *, category: str | None = None, diagnosis: str | None = None
    ) -> RateLookup:
        """The rates that apply to ``request``.

        Args:
            request: the request as the caller wrote it (DMHC:
                ``"TreatmentCategory: TreatmentSubCategory"``).
            category: its request category when known (else derived from ``request``
                the way the dataset derives it).
            diagnosis: DMHC diagnosis category (metadata ``diagnosis_category``).

        Returns:
            The :class:`RateLookup`.
        """
        found, item = self.request_kind(request, category=category)
        return RateLookup(
            source=self.rates["source"]["all"],
            category=self.rates["category"].get(found),
            item=self.rates["item"].get(f"{found}\x00{item}") if item else None,
            diagnosis=(
                self.rates["diagnosis"].get(f"{found}\x00{diagnosis}") if diagnosis else None
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (counts and figures only, no case text)."""
        return {
            "format_version": FORMAT_VERSION,
            "source_name": self.source_name,
            "source_label": self.source_label,
            "rates": {
                level: [{"id": key, **asdict(rate)} for key, rate in rates.items()]
                for level, rates in self.rates.items()
            },
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> OutcomeRates:
        """Read :meth:`to_json`'s dict.

        Raises:
            IncompatibleModelError: another format version.
        """
        if payload.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"outcome rates of format {payload.get('format_version')!r}, expected "
                f"{FORMAT_VERSION}; re-register the model to rebuild them"
            )
        rates = {
            level: {entry.pop("id"): Rate(**entry) for entry in map(dict, entries)}
            for level, entries in payload["rates"].items()
        }
        return cls(str(payload["source_name"]), str(payload["source_label"]), rates)

    def save(self, directory: Path) -> Path:
        """Write :data:`RATES_FILE` into ``directory`` (created); returns the file."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / RATES_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> OutcomeRates:
        """Read the table :meth:`save` wrote into ``directory``.

        Raises:
            IncompatibleModelError: no such file, or another format version.
        """
        path = directory / RATES_FILE
        if not path.is_file():
            raise IncompatibleModelError(f"{path} is missing; re-register the model")
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def describe_rate(rate: Rate) -> str:
    """One plain sentence about ``rate`` for a person, with its n, CI, years and source.

    Example: "Of 34 past decisions on surgery (DWC IMR letters, 2014-2016), 8 were
    overturned (24%; 95% CI 12-40%)." Groups of fewer than :data:`SMALL_SAMPLE` add that
    the figure rests on few cases, with the empirical-Bayes rate beside it.
    """
    what = "all past decisions" if rate.level == "source" else f"past decisions on {rate.key}"
    years = ""
    if rate.year_min is not None and rate.year_max is not None:
        span = (
            str(rate.year_min)
            if rate.year_min == rate.year_max
            else (f"{rate.year_min}\u2013{rate.year_max}")
        )
        years = f", {span}"
    text = (
        f"Of {rate.n} {what} ({rate.source}{years}), {rate.overturned} "
        f"{'was' if rate.overturned == 1 else 'were'} overturned ({rate.rate:.0%}; 95% CI "
        f"{rate.ci_low:.0%}\u2013{rate.ci_high:.0%})."
    )
    if rate.small_sample:
        text += (
            f" That is only {rate.n} cases; allowing for decisions of the wider group "
            f"({rate.parent}), the rate is about {rate.shrunk_rate:.0%}."
        )
    return text

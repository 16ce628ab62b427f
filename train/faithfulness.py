"""Faithfulness of evidence: does the model's prediction hinge on the words its explainer picks?

ERASER's comprehensiveness and sufficiency (DeYoung et al. 2020, "ERASER: A Benchmark to
Evaluate Rationalized NLP Models", ACL, section 4), with the rationale taken as the top
k% of words by the explainer's score toward the predicted class, averaged over the bins
k in {1, 5, 10, 20, 50}% (the area over the perturbation curve, AOPC):

- comprehensiveness = p(pred | x) - p(pred | x without the top-k% words): high when the
  picked words are needed;
- sufficiency = p(pred | x) - p(pred | only the top-k% words): low when they suffice.

Both are compared with the same numbers for k% words drawn at random (seeded), so a
reader can see whether the explainer beats chance. Probabilities are the model's
calibrated ``predict_proba``; the prediction is the label at the model's threshold.

The unit is a word of the caller's request or summary (a maximal run of non-whitespace
characters, :func:`imr_outcome.model.attribution_spans.words`); the metadata prefix is never
removed. Removing a word deletes its characters (whitespace around it stays) and the
model input is rebuilt from the edited strings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import (
    MetadataValue,
    ModelInput,
    build_model_input,
    metadata_prefix,
)
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.attribution import word_attributions
from imr_outcome.model.attribution_spans import WordAttribution
from imr_outcome.model.defaults import IG_STEPS
from imr_outcome.model.model import OutcomeModel
from imr_outcome.train.pipeline import Rows

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Rationale sizes as fractions of an item's words (DeYoung et al. 2020, section 4).
BINS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)

#: One item: (request, summary, pre-filing metadata or None).
Item = tuple[str, str, Mapping[str, MetadataValue] | None]

#: Perturbations per item and bin, in this order along axis 1 of the score array.
_VARIANTS = ("comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency")


@dataclass(frozen=True)
class FaithfulnessReport:
    """AOPC faithfulness of a model's explainer over a set of items.

    Attributes:
        comprehensiveness: mean over items and bins of ``p(pred) - p(pred | top words
            removed)``, in [-1, 1]; higher is more faithful.
        sufficiency: mean of ``p(pred) - p(pred | only top words kept)``, in [-1, 1];
            lower is more faithful.
        random_comprehensiveness: the same as ``comprehensiveness`` for random words.
        random_sufficiency: the same as ``sufficiency`` for random words.
        n_items: number of items scored.
        bins: the rationale sizes, as fractions of an item's words.
        item_comprehensiveness: per item, the mean over bins of the comprehensiveness
            drop (n values; empty for pooled reports), for intervals over items.
        item_random_comprehensiveness: the same for random words.
    """

    comprehensiveness: float
    sufficiency: float
    random_comprehensiveness: float
    random_sufficiency: float
    n_items: int
    bins: tuple[float, ...] = BINS
    item_comprehensiveness: tuple[float, ...] = ()
    item_random_comprehensiveness: tuple[float, ...] = ()

    @property
    def excess(self) -> float:
        """``comprehensiveness - random_comprehensiveness`` in [-2, 2]; > 0 beats chance.

        Defined whatever the sign of the random baseline, unlike :attr:`ratio` (removing
        random words can raise the predicted class's probability a little, making the
        ratio's denominator negative).
        """
        return self.comprehensiveness - self.random_comprehensiveness

    @property
    def ratio(self) -> float:
        """``comprehensiveness / random_comprehensiveness``; > 1 beats chance.

        ``nan`` when the random baseline is exactly 0.
        """
        if self.random_comprehensiveness == 0:
            return math.nan
        return self.comprehensiveness / self.random_comprehensiveness


def rationale_sizes(n_words: int, bins: Sequence[float] = BINS) -> list[int]:
    """Words in each bin's rationale: ``ceil(k * n_words)``, at least 1, at most n_words.

    Args:
        n_words: words in the item, >= 1.
        bins: fractions in (0, 1].

    Returns:
        One size per bin.
    """
    return [min(n_words, max(1, math.ceil(fraction * n_words - 1e-9))) for fraction in bins]


def erase(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the characters of ``spans`` deleted.

    Args:
        text: a request or summary.
        spans: non-overlapping ``(start, end)`` character spans, any order.

    Returns:
        The remaining characters, in order.
    """
    pieces: list[str] = []
    position = 0
    for start, end in sorted(spans):
        pieces.append(text[position:start])
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _edited_input(
    words: Sequence[WordAttribution],
    removed: npt.NDArray[np.bool_],
    request: str,
    summary: str,
    metadata: Mapping[str, MetadataValue] | None,
) -> ModelInput:
    """The model input with the ``removed`` words deleted from request and summary.

    An edit that leaves no request text cannot go through ``build_model_input`` (which
    rejects an empty request); it is built from the same metadata prefix directly.
    """
    edited = {
        field: erase(
            text,
            [
                (word.start, word.end)
                for word, gone in zip(words, removed, strict=True)
                if gone and word.field == field
            ],
        )
        for field, text in (("request", request), ("summary", summary))
    }
    if edited["request"].strip():
        return build_model_input(edited["request"], edited["summary"], metadata)
    prefix = metadata_prefix(metadata)
    return ModelInput(prefix + edited["request"], edited["summary"], len(prefix))


def faithfulness(
    model: OutcomeModel,
    items: Sequence[Item],
    *,
    seed: int = 0,
    n_steps: int = IG_STEPS,
) -> FaithfulnessReport:
    """ERASER comprehensiveness and sufficiency (AOPC) of the model's explainer.

    For each item: predict; score every word with the model's explainer
    (:func:`imr_outcome.model.attribution.word_attributions`); rank words by their score
    toward the predicted class (signed: a word pushing the other way ranks last); for each
    bin k remove the top k% words (comprehensiveness) or keep only them (sufficiency), and
    do the same with k% words drawn at random without replacement (one
    ``numpy.random.default_rng(seed)`` over the items in order). All edited inputs are
    scored in one ``predict_proba`` call (identical edits once). Each metric is the mean
    over bins (AOPC), then over items.

    Args:
        model: a model whose explainer scores words (not ``"none"``).
        items: ``(request, summary, metadata)`` triples, at least one; request non-empty.
        seed: seed of the random baseline.
        n_steps: integrated-gradients quadrature points (transformer models).

    Returns:
        The :class:`FaithfulnessReport`; every value in [-1, 1].

    Raises:
        InvalidInputError: no items, or an item ``build_model_input`` rejects.
        IncompatibleModelError: an explainer that scores nothing or does not fit the model
            (see :func:`imr_outcome.model.attribution.explainer_for`).
    """
    if not items:
        raise InvalidInputError("items", "expected at least one (request, summary, metadata)")
    inputs = [build_model_input(request, summary, metadata) for request, summary, metadata in items]
    metadata_rows = [dict(metadata or {}) for _, _, metadata in items]
    full = model.predict_proba(inputs, metadata_rows)[:, 1]
    predicted = (full >= model.threshold).astype(np.int64)  # (n,)
    rng = np.random.default_rng(seed)

    unique: dict[tuple[str, str, int], int] = {}
    edits: list[ModelInput] = []
    edit_metadata: list[dict[str, MetadataValue]] = []
    index = np.zeros((len(items), len(_VARIANTS), len(BINS)), dtype=np.int64)
    for row, ((request, summary, metadata), model_input) in enumerate(
        zip(items, inputs, strict=True)
    ):
        scored = word_attributions(model, model_input, request, summary, n_steps=n_steps)
        scores = np.array([word.score for word in scored], dtype=np.float64)
        toward = scores if predicted[row] == 1 else -scores
        order = np.argsort(-toward, kind="stable")
        for column, size in enumerate(rationale_sizes(len(scored))):
            top = np.zeros(len(scored), dtype=bool)
            top[order[:size]] = True
            drawn = np.zeros(len(scored), dtype=bool)
            drawn[rng.choice(len(scored), size=size, replace=False)] = True
            for variant, removed in enumerate((top, ~top, drawn, ~drawn)):
                edited = _edited_input(scored, removed, request, summary, metadata)
                key = (edited.text, edited.text_pair, edited.request_offset)
                if key not in unique:
                    unique[key] = len(edits)
                    edits.append(edited)
                    edit_metadata.append(dict(metadata or {}))
                index[row, variant, column] = unique[key]

    probabilities = model.predict_proba(edits, edit_metadata)  # (m, 2)
    edited_p = probabilities[index, predicted[:, None, None]]  # (n, variants, bins)
    p_pred = np.where(predicted == 1, full, 1.0 - full)  # (n,)
    drops: FloatArray = p_pred[:, None, None] - edited_p
    aopc = drops.mean(axis=(0, 2))  # (variants,)
    report = FaithfulnessReport(
        comprehensiveness=float(aopc[0]),
        sufficiency=float(aopc[1]),
        random_comprehensiveness=float(aopc[2]),
        random_sufficiency=float(aopc[3]),
        n_items=len(items),
        item_comprehensiveness=tuple(float(x) for x in drops[:, 0].mean(axis=1)),
        item_random_comprehensiveness=tuple(float(x) for x in drops[:, 2].mean(axis=1)),
    )
    logger.info(
        "faithfulness of %s over %d items (%d edited inputs): comprehensiveness %.3f "
        "(random %.3f), sufficiency %.3f (random %.3f); predicted %s for %d",
        model.info.explainer,
        report.n_items,
        len(edits),
        report.comprehensiveness,
        report.random_comprehensiveness,
        report.sufficiency,
        report.random_sufficiency,
        LABELS[1],
        int(predicted.sum()),
    )
    return report


def items_of(rows: Rows, n: int, seed: int) -> list[Item]:
    """Up to ``n`` items of ``rows`` as ``(request, summary, metadata)``, drawn at random.

    The request and summary are recovered from each row's model input (the request follows
    the metadata prefix of ``text``; the summary is ``text_pair``), so the words scored are
    exactly the ones the model read.

    Args:
        rows: held-out rows.
        n: how many, >= 1; all rows (in order) when there are no more than ``n``.
        seed: seed of ``numpy.random.default_rng`` for the draw (without replacement).

    Returns:
        ``min(n, len(rows))`` items, in row order.
    """
    if n < 1:
        raise InvalidInputError("n", f"expected at least 1 item, got {n}")
    chosen: Sequence[int] = range(len(rows))
    if len(rows) > n:
        drawn = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
        chosen = sorted(int(i) for i in drawn)
    return [
        (
            rows.inputs[i].caller_request,
            rows.inputs[i].caller_summary,
            rows.metadata[i],
        )
        for i in chosen
    ]


def pooled(reports: Sequence[FaithfulnessReport]) -> FaithfulnessReport:
    """One report for several item sets (e.g. CV folds): means weighted by ``n_items``.

    Raises:
        InvalidInputError: no reports.
    """
    if not reports:
        raise InvalidInputError("reports", "expected at least one faithfulness report")
    weights = np.array([report.n_items for report in reports], dtype=np.float64)

    def mean(name: str) -> float:
        values = np.array([getattr(report, name) for report in reports], dtype=np.float64)
        return float(np.average(values, weights=weights))

    return FaithfulnessReport(
        comprehensiveness=mean("comprehensiveness"),
        sufficiency=mean("sufficiency"),
        random_comprehensiveness=mean("random_comprehensiveness"),
        random_sufficiency=mean("random_sufficiency"),
        n_items=int(weights.sum()),
        bins=reports[0].bins,
    )


__all__ = [
    "BINS",
    "FaithfulnessReport",
    "erase",
    "faithfulness",
    "items_of",
    "pooled",
    "rationale_sizes",
]
